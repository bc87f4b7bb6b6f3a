"""Evaluation: the ELBO per image split into reconstruction and KL terms.

``ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))``; ``loss = -ELBO`` (for grey-value
pixels under a Bernoulli, ``loss = BCE + KL``, the reference experiments' number).
"""

from __future__ import annotations

import torch
from pyro.distributions.kl import kl_divergence

from .data import ImageData
from .guides import Guide
from .vae import VAE


def kl_term(q, p, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """KL(q || p) per batch element: analytic where registered, else ``log q(z) - log p(z)``.

    :param z: a sample from ``q`` (used only for the Monte-Carlo fallback).
    :returns: ``(kl, is_analytic)`` with ``kl`` of shape ``q.batch_shape``.
    """
    try:
        return kl_divergence(q, p.expand(q.batch_shape)), True
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z), False


@torch.no_grad()
def elbo_terms(
    vae: VAE,
    guide: Guide,
    data: ImageData,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict:
    """Mean per-image ``elbo``, ``recon`` (E_q log p(x|z), one sample), ``kl`` and ``loss`` on ``data``.

    The guide is asked for q(z | x_n) with the rows' indices, so a mean-field guide
    fitted to ``data`` works too. ``kl_estimator`` says whether the KL is analytic or a
    one-sample Monte-Carlo estimate; ``convention`` says whether ``recon`` is a true
    log-likelihood or minus a binary cross-entropy (grey-value pixels).
    """
    totals = {"recon": 0.0, "kl": 0.0}
    analytic = True
    prior = vae.prior()
    for idx, x in data.batches(batch_size, generator, shuffle=False):
        q = guide.posterior(x, idx)
        z = q.rsample()  # (B, z_dim)
        recon = vae.likelihood(vae.decoder(z)).log_prob(x)  # (B,)
        kl, is_analytic = kl_term(q, prior, z)
        analytic &= is_analytic
        totals["recon"] += recon.sum().item()
        totals["kl"] += kl.sum().item()
    n = len(data)
    recon, kl = totals["recon"] / n, totals["kl"] / n
    return {
        "elbo": recon - kl,
        "loss": kl - recon,
        "recon": recon,
        "kl": kl,
        "kl_estimator": "analytic" if analytic else "monte_carlo",
        "convention": vae.likelihood.convention,
    }


@torch.no_grad()
def posterior_means(guide: Guide, data: ImageData, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z | x_n] for every row of ``data``, shape ``(N, z_dim)``."""
    means = [guide.posterior(x, idx).mean for idx, x in data.batches(batch_size, shuffle=False)]
    return torch.cat(means)
