"""The gap decomposition on linear-Gaussian models, where every term is known in closed form."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae.infer.gaps import amortization_gap, is_converged
from pyro_vae.infer.local_fit import fit_local, mean_elbo
from pyro_vae.models.guides import AmortizedFlow, Guide
from pyro_vae.models.nets import MLPEncoder
from pyro_vae.workflow.build import FLOWS
from pyro_vae.workflow.config import GuideConfig

from ..helpers import linear_gaussian
from .test_local_fit import exact_elbo

FIT = GuideConfig().local_fit_options()  # the shipped [guide] settings of the local fit


@pytest.mark.slow
def test_gap_decomposition_matches_the_exact_values():
    """Orthogonal decoder columns: the exact posterior is a diagonal Gaussian, so L[q*] = log p(x)
    (approximation gap 0) and the amortization gap is E_n[log p(x_n) - L[q](x_n)] in closed form."""
    vae, W, b, s, x, exact = linear_gaussian(n=60)

    class OffEncoder(Guide):  # a linear encoder that is a little off: the amortization gap
        amortized, family = True, "diagonal"

        def posterior(self, x, idx=None):
            loc = 0.8 * (x - b) @ W / (1 + (W**2).sum(0))
            return dist.Normal(loc, torch.full_like(loc, 0.3)).to_event(1)

    guide = OffEncoder(60)
    gap = amortization_gap(vae, guide, x, FIT, num_samples=2000, elbo_samples=2000, check_images=10)
    q = guide.posterior(x)
    elbo_q = exact_elbo(W, b, s, x, q.mean, torch.diag_embed(q.variance)).mean().item()
    assert gap["log_likelihood"]["value"] == pytest.approx(exact.mean().item(), abs=0.02)
    assert gap["elbo_optimal"] == pytest.approx(exact.mean().item(), abs=0.02)
    assert abs(gap["approximation_gap"]) < 0.02
    assert gap["amortization_gap"] == pytest.approx(exact.mean().item() - elbo_q, abs=0.05)
    assert gap["amortization_gap"] > 0.5  # the test means something: the encoder is visibly off
    assert gap["convergence"]["steps"] == 1000  # the shipped cap (5,000) allows the check's full length


def test_the_convergence_check_takes_no_more_steps_than_the_fit_may():
    """A quick setting caps the fit at 30 steps; its check then takes 30 further steps, not 1,000."""
    vae, W, b, s, x, exact = linear_gaussian(n=10)

    class Encoder(Guide):
        amortized, family = True, "diagonal"

        def posterior(self, x, idx=None):
            loc = (x - b) @ W / (1 + (W**2).sum(0))
            return dist.Normal(loc, torch.full_like(loc, 0.3)).to_event(1)

    gap = amortization_gap(vae, Encoder(10), x, {**FIT, "max_steps": 30}, num_samples=50, elbo_samples=20,
                           check_images=4)
    assert gap["convergence"]["steps"] == 30 and not gap["convergence"]["converged"]  # too short to show it


@pytest.mark.slow
def test_full_covariance_gap_decomposition_matches_the_exact_values():
    """A correlated posterior and a full-covariance encoder: q* is fitted in the full family (the
    exact posterior), so the approximation gap is 0 and the amortization gap positive and exact."""
    vae, W, b, s, x, exact = linear_gaussian(n=40, orthogonal=False, seed=3)
    precision = torch.eye(3) + W.T @ W / s**2
    cov = torch.linalg.inv(precision)

    class OffFullEncoder(Guide):
        family = "full"

        def posterior(self, x, idx=None):
            loc = 0.9 * (x - b) @ W @ cov / s**2
            return dist.MultivariateNormal(loc, covariance_matrix=1.5 * cov)

    guide = OffFullEncoder(40)
    gap = amortization_gap(vae, guide, x, {**FIT, "num_particles": 4}, num_samples=2000, elbo_samples=2000,
                           check_images=0)
    q = guide.posterior(x)
    elbo_q = exact_elbo(W, b, s, x, q.mean, q.covariance_matrix).mean().item()
    assert gap["family"] == "full"
    assert abs(gap["approximation_gap"]) < 0.03 and gap["amortization_gap"] > 0.3
    assert gap["amortization_gap"] == pytest.approx(exact.mean().item() - elbo_q, abs=0.05)


@pytest.mark.slow
def test_the_mixture_estimate_stays_close_with_a_diagonal_family_on_a_correlated_posterior():
    """Where the diagonal q* misses the correlation, log p(x) from (q + q*) / 2 is a lower bound that
    stays within 0.1 nat of the exact value at K = 2000 (the proposal's bias, stated in the README)."""
    vae, W, b, s, x, exact = linear_gaussian(n=40, orthogonal=False, seed=4, s=0.3)

    class DiagonalEncoder(Guide):
        family = "diagonal"

        def posterior(self, x, idx=None):
            loc = (x - b) @ W / (1 + (W**2).sum(0))
            return dist.Normal(loc, torch.full_like(loc, 0.2)).to_event(1)

    gap = amortization_gap(vae, DiagonalEncoder(40), x, FIT, num_samples=2000, elbo_samples=500, check_images=0)
    bias = exact.mean().item() - gap["log_likelihood"]["value"]
    print(f"mixture estimate bias {bias:.4f} nat, approximation gap {gap['approximation_gap']:.3f}")
    assert -0.02 < bias < 0.1
    assert gap["approximation_gap"] > 0.1  # the diagonal family does cost something here


def _identity_flow_guide(kind: str, z_dim: int = 3, features: int = 16) -> AmortizedFlow:
    """A flow guide on an 8-pixel linear-Gaussian model whose flows are the identity for every context:
    the last layer of each flow's network outputs constants (weights zero), shift 0 and log-scale 0
    for the IAF; for the planar flow u = log(e - 1) e_1, w = e_1, which Pyro's invertibility
    correction maps to u_hat = 0. Its family is then the diagonal Gaussians its heads reach."""
    torch.manual_seed(0)
    encoder = MLPEncoder([features], in_features=8)
    flows = [FLOWS[kind](z_dim, features, [20]) for _ in range(2)]
    for flow in flows:
        last = [m for m in flow.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
        if kind == "planar":  # outputs (bias, u, w)
            with torch.no_grad():
                last.bias[1], last.bias[1 + z_dim] = math.log(math.e - 1), 1.0
    return AmortizedFlow(encoder, z_dim, 30, flows, reverse_between=kind == "iaf")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_a_flow_guides_q_star_is_fitted_in_its_own_family_and_reaches_the_exact_log_likelihood(kind):
    """q* of a flow guide: its flows with each image's own features. With identity flows the family
    holds the exact (diagonal) posterior of an orthogonal linear-Gaussian model, so L[q*] = log p(x);
    the encoder's random features are far from it (a large amortization gap). The planar flow has no
    inverse: its samples are scored from the flows' cache, never by inverting."""
    vae, W, b, s, x, exact = linear_gaussian(n=30)
    guide = _identity_flow_guide(kind)
    before = [p.detach().clone() for p in guide.parameters()]
    gap = amortization_gap(vae, guide, x, FIT, num_samples=500, elbo_samples=200, check_images=5)
    assert gap["family"] == "flow" and gap["log_likelihood"]["proposal"].startswith("q*")
    assert gap["elbo_optimal"] == pytest.approx(exact.mean().item(), abs=0.02)
    assert gap["log_likelihood"]["value"] == pytest.approx(exact.mean().item(), abs=0.02)
    assert abs(gap["approximation_gap"]) < 0.02 and gap["amortization_gap"] > 1.0
    assert gap["convergence"]["converged"]
    assert all(torch.equal(p, q) for p, q in zip(before, guide.parameters()))  # the family is held fixed


def test_a_local_fit_in_the_flow_family_needs_the_flow_guide_to_start_from():
    vae, *_, x, _ = linear_gaussian(n=4)
    with pytest.raises(ValueError, match="starts from a flow guide's features: pass init"):
        fit_local(vae, x, family="flow")  # (a Gaussian family starts from a flow guide's sample moments: see below)


def test_a_guide_without_a_family_is_refused():
    vae, *_ = linear_gaussian(n=4)

    class Flow(Guide):
        amortized = True

    with pytest.raises(ValueError, match="has no family for a local fit"):
        amortization_gap(vae, Flow(4), torch.zeros(4, 8), FIT)


def test_convergence_verdict_counts_two_standard_errors():
    assert is_converged({"gain": 0.05, "gain_stderr": 0.02})
    assert not is_converged({"gain": 0.05, "gain_stderr": 0.03})
    assert not is_converged({"gain": 0.2, "gain_stderr": 0.0})
    assert not is_converged({"gain": 0.05, "gain_stderr": 0.02, "steps": 30})  # a check too short to show it


def test_the_convergence_check_takes_a_tenth_of_the_images_from_10_to_100():
    from pyro_vae.infer.gaps import default_check_images

    assert [default_check_images(n) for n in (5, 60, 300, 1000, 10_000)] == [5, 10, 30, 100, 100]


@pytest.mark.slow
def test_a_flow_family_fit_moves_each_images_features_and_uses_no_encoder():
    """Context-dependent flows (as initialised): the fit starts at the encoder's features, moves them, and
    raises the ELBO; q*_n then depends on h_n alone (the same for any image passed in)."""
    vae, W, b, s, x, exact = linear_gaussian(n=30)
    torch.manual_seed(0)
    guide = AmortizedFlow(MLPEncoder([16], in_features=8), 3, 30, [FLOWS["iaf"](3, 16, [20]) for _ in range(2)],
                          reverse_between=True)
    fit = fit_local(vae, x, init=guide, family="flow", max_steps=150)
    with torch.no_grad():
        start = guide.encoder(x)
    assert fit.num_particles == 8 and (fit.guide.features - start).abs().max() > 0.1
    torch.manual_seed(1)
    before = mean_elbo(vae, guide, x, 200)["elbo"]
    after = mean_elbo(vae, fit.guide, x, 200)["elbo"]
    assert after > before + 1.0
    idx, other_images = torch.arange(30), torch.rand(30, 8)
    torch.manual_seed(2)
    z = fit.guide.posterior(x, idx).sample()
    torch.manual_seed(2)
    assert torch.equal(z, fit.guide.posterior(other_images, idx).sample())


def test_a_cross_family_q_star_gives_its_familys_approximation_gap_and_no_amortization_gap():
    """Cremer et al.'s cross cells: a diagonal q* for a decoder whose guide is a flow (started from the moments
    of the flow's samples), and a flow q* (another guide's flows, free features) for a diagonal guide. On an
    orthogonal linear-Gaussian model both families hold the exact posterior, so each L[q*] = log p(x)."""
    vae, W, b, s, x, exact = linear_gaussian(n=30)
    flow_guide = _identity_flow_guide("iaf")
    diagonal = amortization_gap(vae, flow_guide, x, FIT, num_samples=500, elbo_samples=2000, check_images=0,
                                family="diagonal")
    assert diagonal["family"] == "diagonal" and diagonal["cross_family"]
    assert diagonal["amortization_gap"] is None and diagonal["log_likelihood"]["proposal"].startswith("q* alone")
    assert diagonal["elbo_optimal"] == pytest.approx(exact.mean().item(), abs=0.02)
    assert abs(diagonal["approximation_gap"]) < 0.03

    class Encoder(Guide):
        amortized, family = True, "diagonal"

        def posterior(self, x, idx=None):
            loc = 0.5 * (x - b) @ W / (1 + (W**2).sum(0))
            return dist.Normal(loc, torch.full_like(loc, 0.5)).to_event(1)

    flows = amortization_gap(vae, Encoder(30), x, FIT, num_samples=500, elbo_samples=200, check_images=0,
                             family_guide=_identity_flow_guide("planar"))
    assert flows["family"] == "flow" and flows["cross_family"] and flows["amortization_gap"] is None
    assert flows["elbo_optimal"] == pytest.approx(exact.mean().item(), abs=0.02)
    with pytest.raises(ValueError, match="family_guide gives q\\* a flow family, not 'diagonal'"):
        amortization_gap(vae, Encoder(30), x, FIT, family="diagonal", family_guide=flow_guide)
    own = amortization_gap(vae, Encoder(30), x, FIT, num_samples=500, elbo_samples=200, check_images=0)
    assert not own["cross_family"] and own["amortization_gap"] > 0.5  # its own family: the gap is formed


def test_every_local_fit_family_has_a_description_and_a_table_name():
    from pyro_vae.infer.gaps import FAMILY_LABELS, FAMILY_NAMES
    from pyro_vae.infer.local_fit import FAMILIES

    assert set(FAMILY_LABELS) == set(FAMILY_NAMES) == set(FAMILIES)
