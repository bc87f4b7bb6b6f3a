"""Local fits q*: converged on a linear-Gaussian model whose exact posterior is in the family."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.infer.evaluate import DefensiveMixture
from pyro_vae.models.guides import AmortizedNormal
from pyro_vae.infer.local_fit import (COMMON_DRAWS, FLOW_LR, FLOW_WINDOW, LocalFullNormal, LocalPlanar,
                                      _elbo_on_common_draws, fit_local, guide_family, mean_elbo, own_family,
                                      refinement_gain)

from ..helpers import linear_gaussian


def exact_elbo(W, b, s, x, loc, cov):
    """ELBO of q = N(loc, cov) in closed form: E_q log N(x; Wz + b, s^2 I) - KL(q || N(0, I))."""
    d, k = W.shape
    mean = loc @ W.T + b
    expected = (-0.5 * ((x - mean) ** 2).sum(-1) / s**2 - 0.5 * torch.einsum("ij,njk,ik->n", W, cov, W) / s**2
                - d * math.log(s) - 0.5 * d * math.log(2 * math.pi))
    kl = 0.5 * (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + (loc**2).sum(-1) - k - torch.logdet(cov))
    return expected - kl


def fitted_cov(guide, x):
    q = guide.posterior(x)
    if isinstance(q, dist.MultivariateNormal):
        return q.mean, q.covariance_matrix
    return q.mean, torch.diag_embed(q.variance)


def test_diagonal_fit_reaches_the_exact_log_likelihood():
    """Converged q* = the exact posterior: L[q*] = log p(x) within 0.01 nat for every point."""
    vae, W, b, s, x, exact = linear_gaussian()
    fit = fit_local(vae, x)
    gap = exact - exact_elbo(W, b, s, x, *fitted_cov(fit.guide, x))
    print(f"per-point gap: mean {gap.mean():.5f}, max {gap.max():.5f}, steps {fit.steps}")
    assert gap.min() > -1e-4  # an ELBO never exceeds log p(x)
    assert gap.max() < 0.01, f"per-point gap up to {gap.max():.4f} nats"
    assert fit.stopped_on == ["tolerance"] and 0 < fit.steps[0] < 5000


def test_the_shipped_settings_come_close():
    """The config's settings (one sample a step, for speed on MNIST) end within 0.01 nat on average and
    0.03 nat for every point; fit_local's own defaults (4 samples) are the ones within 0.01 everywhere."""
    from pyro_vae.workflow.config import Config

    vae, W, b, s, x, exact = linear_gaussian(seed=1)
    fit = fit_local(vae, x, **Config().guide.local_fit_options())
    gap = exact - exact_elbo(W, b, s, x, *fitted_cov(fit.guide, x))
    assert gap.mean() < 0.01 and gap.max() < 0.03 and fit.stopped_on == ["tolerance"]


def test_a_fixed_budget_of_constant_rate_steps_does_not_converge():
    """A fixed recipe (300 constant-rate Adam steps at lr 0.05, one sample) stays 0.1 nat short on average."""
    vae, W, b, s, x, exact = linear_gaussian()
    fit = fit_local(vae, x, max_steps=300, num_particles=1, lr=0.05, min_lr=0.05, tolerance=-math.inf)
    gap = exact - exact_elbo(W, b, s, x, *fitted_cov(fit.guide, x))
    assert fit.stopped_on == ["cap"] and gap.mean() > 0.1 and gap.max() > 0.3


@pytest.mark.slow
def test_full_family_fit_matches_a_correlated_posterior():
    """Without orthogonal columns the posterior is correlated: the full family still reaches log p(x),
    the diagonal one stops at a positive approximation gap."""
    vae, W, b, s, x, exact = linear_gaussian(orthogonal=False, seed=1)
    full = fit_local(vae, x, family="full")
    diag = fit_local(vae, x, family="diagonal")
    full_gap = exact - exact_elbo(W, b, s, x, *fitted_cov(full.guide, x))
    diag_gap = exact - exact_elbo(W, b, s, x, *fitted_cov(diag.guide, x))
    assert isinstance(full.guide, LocalFullNormal)
    assert full_gap.max() < 0.02 and full_gap.mean() < 0.01 and diag_gap.mean() > 0.05


@pytest.mark.slow
def test_chunks_are_fitted_separately_and_reported():
    vae, W, b, s, x, exact = linear_gaussian(n=30)
    fit = fit_local(vae, x, batch_size=12)
    assert len(fit.steps) == 3 and len(fit.stopped_on) == 3
    summary = fit.summary()
    assert summary["chunks"] == 3 and summary["stopped_on_tolerance"] == 3 and summary["stopped_on_cap"] == 0
    assert [len(windows) for windows in summary["windows"]] == [steps // 50 for steps in fit.steps]
    gap = exact - exact_elbo(W, b, s, x, *fitted_cov(fit.guide, x))
    assert gap.max() < 0.01  # the rows land where their own images are


def test_start_from_an_encoder_and_from_a_local_guide():
    vae, W, b, s, x, exact = linear_gaussian(n=10)
    encoder = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    encoder.out_features = 16
    guide = AmortizedNormal(encoder, 3, 10)
    start = fit_local(vae, x, init=guide, max_steps=0)
    q = guide.posterior(x)
    assert torch.allclose(start.guide.posterior(x).mean, q.mean)
    assert torch.allclose(start.guide.posterior(x).stddev, q.stddev)
    again = fit_local(vae, x, init=start.guide, max_steps=0, batch_size=4)  # rows follow their chunk
    assert torch.allclose(again.guide.posterior(x).mean, q.mean)
    assert guide_family(guide) == "diagonal" and guide_family(start.guide) == "diagonal"
    mixture = DefensiveMixture([guide, start.guide])
    mixture.family = "mixture"  # a family name no local fit has
    assert own_family(mixture) is None and own_family(guide) == "diagonal"
    with pytest.raises(ValueError, match="no family for a local fit \\(family 'mixture'\\)"):
        guide_family(mixture)


def test_the_model_and_the_param_store_are_left_alone():
    vae, W, b, s, x, exact = linear_gaussian(n=10)
    before = [p.clone() for p in vae.parameters()]
    pyro.get_param_store().get_param("sentinel", torch.ones(1))
    with torch.no_grad():  # a caller's no_grad must not turn the fit into a no-op
        fit = fit_local(vae, x, max_steps=100)
    assert all(torch.equal(a, b_) for a, b_ in zip(before, vae.parameters()))
    assert all(p.requires_grad for p in vae.parameters())
    assert list(pyro.get_param_store().keys()) == ["sentinel"]
    assert not torch.allclose(fit.guide.posterior(x).mean, torch.zeros(10, 3))


@pytest.mark.slow
def test_refinement_gain_is_small_after_convergence_and_large_before():
    vae, W, b, s, x, exact = linear_gaussian(n=20)
    converged = fit_local(vae, x)
    early = fit_local(vae, x, max_steps=20)
    small = refinement_gain(vae, x, converged, steps=300, num_samples=400)
    large = refinement_gain(vae, x, early, steps=300, num_samples=400)
    assert abs(small["gain"]) < 0.02
    assert large["gain"] > 0.5
    room = (exact - exact_elbo(W, b, s, x, *fitted_cov(early.guide, x))).mean()  # what the optimum would gain
    assert large["gain"] < room.item() + 0.05


def test_mean_elbo_matches_the_closed_form():
    vae, W, b, s, x, exact = linear_gaussian(n=20)
    fit = fit_local(vae, x, max_steps=50)
    estimate = mean_elbo(vae, fit.guide, x, num_samples=2000)
    closed = exact_elbo(W, b, s, x, *fitted_cov(fit.guide, x))
    error = estimate["per_datapoint"] - closed  # Monte-Carlo error of 2000 samples
    assert error.abs().max() < 0.15 and error.mean().abs() < 0.03


def test_bad_settings_are_refused():
    vae, W, b, s, x, exact = linear_gaussian(n=4)
    with pytest.raises(ValueError, match="family must be one of diagonal, full, flow"):
        fit_local(vae, x, family="spline")
    with pytest.raises(ValueError, match="decay > 1"):
        fit_local(vae, x, decay=1.0)


def test_a_local_fit_under_a_vamp_prior_leaves_the_guides_encoder_alone():
    """The VampPrior computes through the guide's encoder: the fit must hold it fixed like the decoder."""
    import pyro

    from pyro_vae.workflow.build import build_model
    from pyro_vae.workflow.config import load_config

    pyro.clear_param_store()
    vae, guide = build_model(load_config(None, ["prior.type='vamp'", "prior.components=3", "model.hidden=[16]",
                                               "data.pixels='threshold'"]), 8)
    x = torch.bernoulli(torch.full((4, 784), 0.2))
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    guide.train()
    fit = fit_local(vae, x, init=guide, max_steps=20)
    assert fit.steps == [20]
    assert all(p.grad is None for p in [*guide.parameters(), *vae.parameters()])
    assert all(torch.equal(before[k], v) for k, v in guide.state_dict().items()) and guide.training


@pytest.mark.parametrize("family", ["diagonal", "full", "planar"])
def test_refinement_gain_scores_both_fits_on_the_same_draws(family):
    """No further step: the same q before and after, so common random numbers give a gain of exactly 0
    (independent draws would give Monte-Carlo noise of about 0.01 nat here), and a step that helps gains."""
    vae, W, b, s, x, exact = linear_gaussian(n=20)
    fit = fit_local(vae, x, family=family, max_steps=50)
    still = refinement_gain(vae, x, fit, steps=0, num_samples=50)
    assert abs(still["gain"]) < 1e-5 and still["gain_stderr"] < 1e-5
    assert refinement_gain(vae, x, fit, steps=100, num_samples=50)["gain"] > 0.05  # 50 steps are short of q*


def test_the_per_image_planar_family_starts_at_the_diagonal_start():
    """K identity flows: the same draws and densities as the diagonal Gaussian the other families start from."""
    vae, W, b, s, x, exact = linear_gaussian(n=6)
    diagonal = fit_local(vae, x, max_steps=0).guide.posterior(x)
    planar = fit_local(vae, x, family="planar", max_steps=0).guide
    assert isinstance(planar, LocalPlanar) and guide_family(planar) == "planar"
    with torch.random.fork_rng():
        z_diagonal = diagonal.sample((5,))
    q = planar.posterior(x)
    z = q.sample((5,))
    assert torch.allclose(z, z_diagonal, atol=1e-5)
    assert torch.allclose(q.log_prob(z), diagonal.log_prob(z_diagonal), atol=1e-4)


def test_a_flow_familys_stopping_rule_scores_every_window_on_the_same_draws():
    """Window means of a Monte-Carlo objective are noisier than the tolerance; the flow families score each
    window's end on common draws, the same at every call, and leave the global stream where it was."""
    vae, W, b, s, x, exact = linear_gaussian(n=6)
    planar = fit_local(vae, x, family="planar", max_steps=100)
    assert planar.summary()["common_draws"] == COMMON_DRAWS and fit_local(vae, x).summary()["common_draws"] == 0
    stopped = fit_local(vae, x, family="planar", window=50, lr=1e-3, min_lr=1e-3, tolerance=100.0)
    assert stopped.steps == [2 * FLOW_WINDOW] and stopped.summary()["window"] == FLOW_WINDOW  # its first comparison
    capped = fit_local(vae, x, family="planar", lr=0.05, min_lr=0.02, max_steps=0).summary()
    assert (capped["lr"], capped["min_lr"]) == (FLOW_LR, FLOW_LR)  # the start capped, the floor not above it
    raised = fit_local(vae, x, family="planar", lr=0.05, min_lr=0.02, flow_lr=0.03, max_steps=0).summary()
    assert (raised["lr"], raised["min_lr"]) == (0.03, 0.02)  # flow_lr moves the cap
    from pyro_vae.workflow.config import GuideConfig
    assert GuideConfig().local_fit_options()["flow_lr"] == FLOW_LR  # the config's default is the module's cap
    state = torch.get_rng_state()
    first = _elbo_on_common_draws(vae, planar.guide, x, 16, seed=3)
    assert _elbo_on_common_draws(vae, planar.guide, x, 16, seed=3) == first
    assert torch.equal(torch.get_rng_state(), state)
    assert _elbo_on_common_draws(vae, planar.guide, x, 16, seed=4) != first


def test_the_window_sets_where_the_rule_compares_and_each_window_is_recorded():
    """With ``window`` = 100 the rule measures at steps 100, 200, ...: a tolerance no window can gain stops a
    fit already at its floor at the second window; the record holds each window's end, rate and measure."""
    vae, W, b, s, x, exact = linear_gaussian(n=6)
    fit = fit_local(vae, x, window=100, lr=1e-3, min_lr=1e-3, tolerance=100.0)
    assert fit.steps == [200] and fit.stopped_on == ["tolerance"] and fit.summary()["window"] == 100
    (windows,) = fit.windows
    assert [w[:2] for w in windows] == [[100, 1e-3], [200, 1e-3]] and all(math.isfinite(w[2]) for w in windows)
    decaying = fit_local(vae, x, window=100, lr=1e-2, min_lr=1e-3, decay=10.0, tolerance=100.0)
    assert decaying.steps == [300] and [w[1] for w in decaying.windows[0]] == [1e-2, 1e-2, 1e-3]


def test_every_window_of_a_flow_fit_is_scored_on_one_stream(monkeypatch):
    from pyro_vae.infer import local_fit

    seeds, score = [], local_fit._elbo_on_common_draws
    monkeypatch.setattr(local_fit, "_elbo_on_common_draws",
                        lambda vae, local, x, n, seed: seeds.append((n, seed)) or score(vae, local, x, n, seed))
    vae, W, b, s, x, exact = linear_gaussian(n=6)
    fit = fit_local(vae, x, family="planar", max_steps=3 * FLOW_WINDOW)
    assert len(seeds) == fit.steps[0] // FLOW_WINDOW >= 2  # one score per window's end
    assert len(set(seeds)) == 1 and seeds[0][0] == COMMON_DRAWS  # the same draws every time


@pytest.mark.slow
def test_the_per_image_planar_family_reaches_the_exact_posterior_and_beats_the_diagonal_one():
    vae, W, b, s, x, exact = linear_gaussian(n=20)  # a diagonal posterior: the family holds it
    fit = fit_local(vae, x, family="planar")
    assert fit.num_particles == 8 and fit.stopped_on == ["tolerance"] and fit.common_draws == COMMON_DRAWS
    assert abs(mean_elbo(vae, fit.guide, x, num_samples=4000)["elbo"] - exact.mean().item()) < 0.05
    assert refinement_gain(vae, x, fit, steps=0, num_samples=50)["gain"] == pytest.approx(0.0, abs=1e-5)
    vae, W, b, s, x, exact = linear_gaussian(n=20, orthogonal=False)  # a correlated posterior
    diagonal, planar = fit_local(vae, x), fit_local(vae, x, family="planar")
    with torch.random.fork_rng():  # the same base draws for both
        diagonal_elbo = mean_elbo(vae, diagonal.guide, x, num_samples=4000)["elbo"]
    planar_elbo = mean_elbo(vae, planar.guide, x, num_samples=4000)["elbo"]
    assert diagonal_elbo + 0.02 < planar_elbo < exact.mean().item() + 0.01


def test_a_per_image_planar_flow_is_the_formula():
    """z = z0 + u_hat tanh(w . z0 + b) with u_hat = u + (softplus(w . u) - 1 - w . u) w / |w|^2, and
    log q(z) = log N(z0) - log|1 + u_hat . (1 - tanh^2) w|, for parameters set by hand (one flow)."""
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(3, 2, generator=g), torch.rand(3, 2, generator=g) + 0.5
    bias, u, w = torch.randn(3, 1, 1, generator=g), torch.randn(3, 1, 2, generator=g), torch.randn(3, 1, 2, generator=g)
    q = LocalPlanar(loc, scale, bias, u, w).posterior(loc)
    z = q.sample((4,))  # (4, 3, 2)
    base = torch.distributions.Normal(loc, scale)
    b_, u_, w_ = bias[:, 0], u[:, 0], w[:, 0]
    wu = (w_ * u_).sum(-1, keepdim=True)
    u_hat = u_ + (torch.nn.functional.softplus(wu) - 1 - wu) * w_ / w_.pow(2).sum(-1, keepdim=True)
    z0 = z.clone()  # invert numerically: z0 = z - u_hat tanh(w . z0 + b), a contraction here
    for _ in range(200):
        z0 = z - u_hat * torch.tanh((w_ * z0).sum(-1, keepdim=True) + b_)
    act = torch.tanh((w_ * z0).sum(-1, keepdim=True) + b_)
    assert torch.allclose(z0 + u_hat * act, z, atol=1e-5)
    log_det = torch.log(torch.abs(1 + ((1 - act ** 2) * w_ * u_hat).sum(-1)))
    assert torch.allclose(q.log_prob(z), base.log_prob(z0).sum(-1) - log_det, atol=1e-4)
