import pytest
import torch
from torch.distributions import kl_divergence as torch_kl

import pyro.distributions as dist
from pyro.distributions.kl import kl_divergence

from pyro_vae.models.priors import (CorrelatedPrior, DiagonalNormalMixture, FlowPrior, LearnedPrior, VampPrior,
                                    check_covariance, mixture)
from pyro_vae.workflow.build import PRIORS
from pyro_vae.workflow.config import Config


def build_prior(kind: str, z_dim: int, covariance=(), components: int = 10):
    """The prior the config registry builds for ``kind`` (what a run gets); a VampPrior gets a toy
    posterior q(z | u) = N(u[:z_dim] - 0.5, 0.5^2 I) to mix (build_model attaches the guide's)."""
    config = Config()
    config.model.z_dim, config.prior.covariance, config.prior.components = z_dim, list(covariance), components
    prior = PRIORS[kind](config)
    if isinstance(prior, VampPrior):
        prior.attach(lambda u: dist.Normal(u[:, :z_dim] - 0.5, 0.5).to_event(1))
    return prior


@pytest.mark.parametrize("kind", PRIORS)
@pytest.mark.parametrize("z_dim", [2, 3])
def test_every_prior_is_a_distribution_over_one_z(kind, z_dim):
    covariance = [] if z_dim == 2 else torch.eye(3).tolist()
    prior = build_prior(kind, z_dim, covariance=covariance)()
    width = z_dim * Config().prior.codes if "categorical" in kind else z_dim  # z_dim one-hot codes of K classes
    assert prior.batch_shape == () and prior.event_shape == (width,)
    z = prior.sample((7,))
    assert z.shape == (7, width)
    assert torch.isfinite(prior.log_prob(z)).all() and prior.log_prob(z).shape == (7,)


def test_correlated_prior_uses_the_cholesky_factor_of_sigma():
    prior = build_prior("correlated", 2)
    sigma = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    assert torch.allclose(prior.scale_tril @ prior.scale_tril.T, sigma, atol=1e-6)
    assert torch.equal(prior.scale_tril, prior.scale_tril.tril())
    p = prior()
    assert isinstance(p, dist.MultivariateNormal)
    z = p.sample((200000,))
    assert torch.allclose(torch.cov(z.T), sigma, atol=0.02)


def test_correlated_prior_with_a_loc():
    prior = CorrelatedPrior([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, 1.0]], loc=[1.0, -1.0, 0.0])
    assert torch.equal(prior().mean, torch.tensor([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="loc has 2 entries but the covariance is 3 x 3"):
        CorrelatedPrior(torch.eye(3).tolist(), loc=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"loc = \['a', 'b'\] is not a list of numbers"):
        CorrelatedPrior(torch.eye(2).tolist(), loc=["a", "b"])


@pytest.mark.parametrize("loc", [[1e20, 0.0], [1e39, 0.0]])
def test_a_loc_too_far_for_float32_is_refused(loc):
    """Finite in float64, but the ELBO's KL term would start at inf (or nan) in float32."""
    too_far = r"loc = .* lies so far from N\(0, I\) that KL\(N\(0, I\) \|\| p\(z\)\) is (inf|nan) in float32"
    with pytest.raises(ValueError, match=too_far):
        CorrelatedPrior(torch.eye(2).tolist(), loc=loc)
    assert torch.isfinite(CorrelatedPrior(torch.eye(2).tolist(), loc=[1e5, 0.0])().log_prob(torch.zeros(2)))


@pytest.mark.parametrize(
    "covariance, message",
    [
        ([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0]], r"is not square \(shape \(2, 3\)\)"),
        ([[1.0, 0.5], [0.2, 1.0]], r"is not symmetric"),
        ([[1.0, 2.0], [2.0, 1.0]], r"is not positive-definite \(smallest eigenvalue -1\)"),
        ([[1.0, 0.0], [0.0, 0.0]], r"is not positive-definite"),
        (torch.eye(3).tolist(), r"is 3 x 3 but z_dim = 2"),
        ([[1.0, "a"], ["a", 1.0]], r"is not a matrix of numbers"),
        ([1.0, 2.0], r"is not square"),
        ([[float("nan"), 0.0], [0.0, 1.0]], r"non-finite"),
        ([[10**400, 0], [0, 1]], r"is not a matrix of numbers"),
        ([[1e80, 0.0], [0.0, 1.0]], r"does not fit in float32"),  # positive-definite in float64 only
        ([[1e-80, 0.0], [0.0, 1.0]], r"does not fit in float32"),
        ([[1.0, 1 - 1e-12], [1 - 1e-12, 1.0]], r"does not fit in float32.*too near singular"),
    ],
)
def test_bad_covariances_name_the_matrix_and_the_reason(covariance, message):
    with pytest.raises(ValueError, match=r"^covariance = .*" + message):
        check_covariance(covariance, 2)


@pytest.mark.parametrize("z_dim", [2, 3, 50])
def test_correlated_prior_defaults_to_equicorrelation_in_any_dimension(z_dim):
    """An empty prior.covariance means unit variances and correlation 0.8 between every pair."""
    sigma = build_prior("correlated", z_dim).covariance
    expected = torch.full((z_dim, z_dim), 0.8) + 0.2 * torch.eye(z_dim)
    assert torch.allclose(sigma, expected, atol=1e-5)
    if z_dim == 2:
        assert torch.allclose(sigma, torch.tensor([[1.0, 0.8], [0.8, 1.0]]))


def test_learned_prior_keeps_a_valid_cholesky_factor():
    prior = LearnedPrior(3)
    with torch.no_grad():
        prior.raw_scale_tril.copy_(torch.randn(3, 3) * 3)
    L = prior.scale_tril
    assert torch.equal(L, L.tril()) and (L.diagonal() > 0).all()
    assert prior().event_shape == (3,)
    assert sum(p.numel() for p in prior.parameters()) == 3 + 9


def test_mixture_prior_parameters_are_learned():
    prior = build_prior("mixture", 2, components=5)
    names = {name for name, _ in prior.named_parameters()}
    assert names == {"logits", "locs", "log_scales"}
    assert isinstance(prior(), DiagonalNormalMixture)


def _reference_mixture(logits, loc, scale):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))


def test_diagonal_mixture_density_and_gradients_match_mixture_same_family():
    torch.manual_seed(0)
    logits = torch.randn(7, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    log_scale = (torch.randn(7, 4, dtype=torch.float64) - 3).requires_grad_()  # scales down to ~0.005
    z = (loc.detach()[torch.randint(7, (3, 5))] + 0.01 * torch.randn(3, 5, 4, dtype=torch.float64)).requires_grad_()
    fast = DiagonalNormalMixture(logits, loc, log_scale.exp()).log_prob(z)
    slow = _reference_mixture(logits, loc, log_scale.exp()).log_prob(z)
    assert fast.shape == slow.shape == (3, 5)
    assert torch.allclose(fast, slow, atol=1e-9, rtol=0)
    fast_grads = torch.autograd.grad(fast.sum(), (logits, loc, log_scale, z))
    slow_grads = torch.autograd.grad(slow.sum(), (logits, loc, log_scale, z))
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)


def test_diagonal_mixture_keeps_float32_inputs_accurate():
    torch.manual_seed(1)
    loc, scale = torch.randn(50, 20), torch.full((50, 20), 0.01)
    z = loc[:8] + 0.01 * torch.randn(8, 20)
    fast = DiagonalNormalMixture(torch.zeros(50), loc, scale).log_prob(z)
    exact = _reference_mixture(torch.zeros(50).double(), loc.double(), scale.double()).log_prob(z.double())
    assert fast.dtype == torch.float32
    assert (fast.double() - exact).abs().max() < 1e-3  # the expanded square in float32 is off by ~0.03 here


def test_diagonal_mixture_expands_under_a_plate_and_draws_from_its_components():
    torch.manual_seed(2)
    mix = DiagonalNormalMixture(torch.tensor([0.0, 2.0]), torch.tensor([[-5.0, 0.0], [5.0, 1.0]]),
                                torch.tensor([[0.5, 0.5], [1.0, 2.0]]))
    plated = mix.expand((6,))
    assert plated.batch_shape == (6,) and plated.event_shape == (2,)
    assert plated.log_prob(torch.zeros(6, 2)).shape == (6,)
    assert plated.sample((3,)).shape == (3, 6, 2)
    assert plated.log_prob(torch.zeros(4, 6, 2)).shape == (4, 6)  # importance samples on the left of the batch
    reference = _reference_mixture(torch.tensor([0.0, 2.0]), mix.loc, mix.scale)
    assert torch.allclose(mix.mean, reference.mean) and torch.allclose(mix.variance, reference.variance)
    draws = mix.sample((40000,))
    weight = torch.softmax(torch.tensor([0.0, 2.0]), 0)[1]
    assert abs((draws[:, 0] > 0).float().mean() - weight) < 0.01
    assert torch.allclose(draws[draws[:, 0] > 0].std(0), torch.tensor([1.0, 2.0]), atol=0.05)


def test_mixture_uses_the_matrix_form_for_diagonal_components_only():
    loc, scale = torch.randn(3, 2), torch.ones(3, 2)
    assert isinstance(mixture(torch.zeros(3), dist.Normal(loc, scale).to_event(1)), DiagonalNormalMixture)
    full = dist.MultivariateNormal(loc, scale_tril=torch.eye(2).expand(3, 2, 2))
    assert isinstance(mixture(torch.zeros(3), full), dist.MixtureSameFamily)


def _mc_kl(q, p, n=200000):
    z = q.sample((n,))
    terms = q.log_prob(z) - p.log_prob(z)
    return terms.mean(), terms.std() / n**0.5


def test_kl_diag_normal_vs_mvn_matches_torch_and_monte_carlo():
    torch.manual_seed(1)
    q = dist.Normal(torch.tensor([0.5, -1.0]), torch.tensor([0.3, 0.7])).to_event(1)
    p = build_prior("correlated", 2)()
    analytic = kl_divergence(q, p)
    as_mvn = torch.distributions.MultivariateNormal(q.mean, covariance_matrix=torch.diag(q.variance))
    assert torch.allclose(analytic, torch_kl(as_mvn, p), atol=1e-5)
    mean, se = _mc_kl(q, p)
    assert abs(analytic - mean) < 4 * se


def test_kl_mvn_vs_mvn_matches_monte_carlo():
    torch.manual_seed(2)
    L = torch.tensor([[0.5, 0.0], [0.3, 0.4]])
    q = dist.MultivariateNormal(torch.tensor([0.2, 0.1]), scale_tril=L)
    p = build_prior("correlated", 2)()
    analytic = kl_divergence(q, p)
    mean, se = _mc_kl(q, p)
    assert abs(analytic - mean) < 4 * se


def test_kl_diag_normal_vs_standard_normal_closed_form():
    loc, scale = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 0.7, 1.5])
    q = dist.Normal(loc, scale).to_event(1)
    closed = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
    assert torch.allclose(kl_divergence(q, build_prior("standard", 3)()), closed, atol=1e-6)


def test_vamp_prior_is_the_mean_of_the_posteriors_at_its_pseudo_inputs():
    prior = build_prior("vamp", 3, components=5)
    u = prior.pseudo_inputs
    assert u.shape == (5, 784) and 0 < u.min() and u.max() < 1
    z = torch.randn(4, 3)
    per_input = dist.Normal(u[:, :3] - 0.5, 0.5).to_event(1).log_prob(z.unsqueeze(1))  # (4, 5)
    expected = torch.logsumexp(per_input, 1) - torch.log(torch.tensor(5.0))
    assert torch.allclose(prior().log_prob(z), expected, atol=1e-5)
    assert prior().log_prob(z).requires_grad  # the pseudo-inputs are learned through it
    with pytest.raises(RuntimeError, match="attach a guide's posterior"):
        VampPrior(3, 5)()


def test_flow_prior_is_a_normalised_density_and_draws_from_it():
    """z = 2: exp(log p) sums to 1 on a grid, and the draws (which invert the flows) see the density the
    grid sees: their mean log p(z) equals the grid's integral of p log p (minus the entropy)."""
    torch.manual_seed(1)
    prior = FlowPrior(2, flows=3, hidden=[16, 16])
    with torch.no_grad():
        for flow in prior.flows:  # a visibly non-Gaussian density
            flow.arn.layers[-1].weight.mul_(2.0)
        axis = torch.linspace(-16, 16, 801)
        grid = torch.cartesian_prod(axis, axis)
        log_p = prior().log_prob(grid)
        area = (axis[1] - axis[0]) ** 2
        p = log_p.exp()
        assert (p.sum() * area).item() == pytest.approx(1.0, abs=1e-3)
        draws = prior().sample((20000,))
        drawn = prior().log_prob(draws)
        assert drawn.mean().item() == pytest.approx((p * log_p).sum().item() * area.item(), abs=4 * drawn.std().item()
                                                    / 20000**0.5 + 5e-3)
        assert (p * log_p).sum().item() * area.item() != pytest.approx(-2.8379, abs=0.05)  # not N(0, I)'s -entropy


def test_flow_prior_needs_widths_of_at_least_z_dim():
    with pytest.raises(ValueError, match="hidden widths >= z_dim = 8"):
        FlowPrior(8, hidden=[4])
