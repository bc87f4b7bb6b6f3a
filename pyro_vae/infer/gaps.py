"""Inference gaps (Cremer, Li & Duvenaud 2018): where log p(x) - L[q] comes from.

    log p(x) - L[q] = (log p(x) - L[q*]) + (L[q*] - L[q])
                    =  approximation gap  +  amortization gap

q is the amortized guide, q* per-image posteriors of the guide's own family (diagonal or
full-covariance Gaussians; for a flow guide, its flows with each image's own features; or, as a cross
cell, planar flows whose every parameter is the image's own, a family that holds every diagonal Gaussian) fitted
with the decoder frozen, from the encoder's output, until the stopping rule of
:func:`~pyro_vae.infer.local_fit.fit_local` holds, and checked by
:func:`~pyro_vae.infer.local_fit.refinement_gain`. log p(x) is importance-sampled with the
defensive mixture (q + q*) / 2 as the proposal for the Gaussian families: q* is the better
proposal where the encoder is off, q where q* is too narrow, and the mixture's weights are at
most twice either one's. A mixture of flows would need each flow's density at the other's samples,
which a planar flow cannot give (it has no inverse) and an IAF only by z_dim sequential passes, so a
flow family's proposal is q* alone.
"""

from __future__ import annotations

import time

import torch

from ..models.guides import Guide
from ..models.vae import VAE
from .evaluate import DefensiveMixture, importance_log_likelihood, stderr
from .local_fit import (FLOW_FAMILIES, PLANAR_FLOWS, fit_local, guide_family, mean_elbo, own_family,
                        refinement_gain)

CONVERGED_GAIN = 0.1  # nats/image a further optimisation of q* may still gain for q* to count as converged
CHECK_STEPS = 1000  # further Adam steps of the convergence check


FAMILY_LABELS = {"diagonal": "diagonal Gaussians", "full": "full-covariance Gaussians",  # q*'s family described
                 "flow": "the guide's flows with features of their own",
                 "planar": f"{PLANAR_FLOWS} planar flows on a diagonal Gaussian, every parameter the image's own"}
FAMILY_NAMES = {"diagonal": "diagonal Gaussians", "full": "full-covariance Gaussians",  # ... and in a table's row
                "flow": "the guide's flows, features per image", "planar": "per-image planar flows"}


def is_converged(check: dict) -> bool:
    """Whether a :func:`refinement_gain` result says q* is converged: gain + 2 stderr <= CONVERGED_GAIN after
    at least :data:`CHECK_STEPS` further steps (a shorter check, as a capped quick fit gets, shows nothing)."""
    return check.get("steps", CHECK_STEPS) >= CHECK_STEPS and check["gain"] + 2 * check["gain_stderr"] <= CONVERGED_GAIN


def default_check_images(num_images: int) -> int:
    """Images the convergence check refines (1,000 steps at 16 samples each: the costly part of a
    small evaluation): a tenth of them, at least 10 and at most 100 (never more than there are)."""
    return min(num_images, max(10, min(100, num_images // 10)))


def amortization_gap(vae: VAE, guide: Guide, x: torch.Tensor, fit_options: dict, num_samples: int = 5000,
                     elbo_samples: int = 100, check_images: int | None = None, batch_size: int = 1000,
                     family: str | None = None, family_guide: Guide | None = None,
                     check_steps: int = CHECK_STEPS) -> dict:
    """The decomposition on images ``x`` ``(N, D)``, nats per image.

    L[q] and L[q*] are estimated with ``elbo_samples`` samples per image (analytic KL where
    registered); log p(x) with K = ``num_samples`` from the defensive mixture (q + q*) / 2;
    ``convergence`` is :func:`refinement_gain` on the first ``check_images`` images (default:
    :func:`default_check_images`; 0 skips it) with ``check_steps`` further steps (default :data:`CHECK_STEPS`;
    at most the fit's own cap ``max_steps``), with ``converged`` true when that gain plus two standard errors is at most
    :data:`CONVERGED_GAIN`.

    :param fit_options: keyword arguments of :func:`fit_local` (learning rates, tolerance, cap, particles).
    :param family: fit q* in this family instead of the guide's (a cross cell of Cremer et al.'s table: the
        diagonal q* of a decoder trained with a flow guide); ``family_guide``: the flow guide whose flows, with
        free features per image, make the flow family (default: ``guide``). Either makes q* another family
        than q's: the approximation gap of that family is reported, and no amortization gap (it would
        compare two families), with q* alone as the proposal.
    """
    if family_guide is not None and family not in (None, "flow"):
        raise ValueError(f"family_guide gives q* a flow family, not {family!r}: drop one of them")
    source = guide if family_guide is None else family_guide
    family = family or guide_family(source)
    cross = family_guide is not None or family != own_family(guide)
    fit = fit_local(vae, x, init=source, family=family, batch_size=batch_size, **fit_options)
    amortized = mean_elbo(vae, guide, x, elbo_samples)
    optimal = mean_elbo(vae, fit.guide, x, elbo_samples)
    start = time.perf_counter()
    if cross:
        proposal, proposal_name = fit.guide, f"q* alone ({family}: not the family of q)"
    elif family in FLOW_FAMILIES:
        proposal, proposal_name = fit.guide, "q* (a flow family: no mixture)"
    else:
        proposal, proposal_name = DefensiveMixture([guide, fit.guide]), "defensive mixture (q + q*) / 2"
    ll = importance_log_likelihood(vae, proposal, x, num_samples)
    ll_seconds = time.perf_counter() - start
    if check_images is None:
        check_images = default_check_images(len(x))
    check_steps = min(check_steps, fit_options.get("max_steps", check_steps))  # never more than the fit may take
    convergence = refinement_gain(vae, x[:check_images], fit, check_steps) if check_images else None
    if convergence:
        convergence["converged"] = is_converged(convergence)
    per_amortized, per_optimal = amortized["per_datapoint"], optimal["per_datapoint"]
    return {
        "family": family,
        "cross_family": cross,
        "log_likelihood": {"value": ll["log_likelihood"], "stderr": ll["stderr"],
                           "proposal": proposal_name, "seconds": ll_seconds},
        "elbo_amortized": amortized["elbo"],
        "elbo_optimal": optimal["elbo"],
        "elbo_samples": elbo_samples,
        "approximation_gap": ll["log_likelihood"] - optimal["elbo"],
        "amortization_gap": None if cross else optimal["elbo"] - amortized["elbo"],
        "amortization_gap_stderr": None if cross else stderr(per_optimal - per_amortized),
        "approximation_gap_stderr": stderr(ll["per_datapoint"] - per_optimal),
        "local_fit": {**{k: v for k, v in fit_options.items() if k != "init_scale"}, **fit.summary()},
        "convergence": convergence,
    }
