import pytest
import torch
import torch.nn.functional as F

from pyro_vae.models.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood


def test_bernoulli_on_grey_values_is_minus_bce():
    logits, x = torch.randn(4, 784), torch.rand(4, 784)
    log_prob = BernoulliLikelihood(grey_values=True)(logits).log_prob(x)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert log_prob.shape == (4,)
    assert torch.allclose(log_prob, -bce, atol=1e-4)


def test_bernoulli_on_bits_rejects_grey_values_under_validation():
    with pytest.raises(ValueError):
        BernoulliLikelihood(grey_values=False)(torch.randn(2, 5)).log_prob(torch.full((2, 5), 0.3))


def test_conventions_are_labelled():
    assert BernoulliLikelihood(grey_values=True).convention == "bce"
    assert BernoulliLikelihood(grey_values=False).convention == "log_likelihood"
    assert ContinuousBernoulliLikelihood().convention == "log_likelihood"


def test_continuous_bernoulli_is_normalised_on_the_unit_interval():
    likelihood = ContinuousBernoulliLikelihood()
    logits = torch.tensor([[-2.0], [0.3], [4.0]])
    grid = torch.linspace(1e-4, 1 - 1e-4, 20001)
    density = likelihood(logits.expand(3, 1)).log_prob(grid.reshape(-1, 1, 1).expand(-1, 3, 1)).exp()
    integral = torch.trapezoid(density, grid, dim=0)
    assert torch.allclose(integral, torch.ones(3), atol=2e-3)
    assert likelihood.mean(logits).shape == (3, 1)


def test_fused_bernoulli_log_density_equals_the_distribution():
    import torch

    from pyro_vae.models.likelihoods import BernoulliLikelihood, log_density

    logits = torch.randn(5, 3, 784) * 4  # (K, B, D)
    x = (torch.rand(3, 784) < 0.3).float()
    likelihood = BernoulliLikelihood()
    expected = likelihood(logits).log_prob(x)
    assert torch.allclose(log_density(likelihood, logits, x), expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="got values other than 0 and 1"):
        log_density(likelihood, logits, torch.full((3, 784), 0.5))
    grey = BernoulliLikelihood(grey_values=True)  # -BCE on grey values: no fused path
    values = torch.rand(3, 784)
    assert torch.allclose(log_density(grey, logits, values), grey(logits).log_prob(values))


def test_the_no_grad_log_sigmoid_matches_torch_s_to_float32_rounding_in_place():
    import torch.nn.functional as F

    from pyro_vae.models.likelihoods import log_sigmoid_

    s = torch.cat([torch.linspace(-100, 100, 2001), torch.tensor([0.0, -1e-8, 1e-8, 88.0, -88.0])])
    exact = F.logsigmoid(s.double())
    values = log_sigmoid_(s)
    assert torch.allclose(values.double(), exact, rtol=1e-6, atol=2e-7)
    assert values.data_ptr() == s.data_ptr()  # written over its input


def test_log_density_overwrites_the_logits_only_when_told_and_without_gradients():
    from pyro_vae.models.likelihoods import BernoulliLikelihood, log_density

    logits, x = torch.randn(5, 3, 784) * 4, (torch.rand(3, 784) < 0.3).float()
    kept = logits.clone()
    with torch.no_grad():
        expected = BernoulliLikelihood()(logits).log_prob(x)
        assert torch.allclose(log_density(BernoulliLikelihood(), logits, x), expected, atol=1e-3)
        assert torch.equal(logits, kept)  # not told: left alone
        wide = log_density(BernoulliLikelihood(), logits[0, 0], x, overwrite=True)  # x wider than the logits
        wide_expected = BernoulliLikelihood()(kept[0, 0].expand(3, 784)).log_prob(x)
        assert torch.equal(logits, kept) and torch.allclose(wide, wide_expected, atol=1e-3)
        assert torch.allclose(log_density(BernoulliLikelihood(), logits, x, overwrite=True), expected, atol=1e-3)
        assert not torch.equal(logits, kept)  # told: the signed logits were written over them
        narrow = kept.clone()  # float32 logits of float64 pixels: the result is float64, the logits kept
        wider = log_density(BernoulliLikelihood(), narrow, x.double(), overwrite=True)
        assert wider.dtype == torch.float64 and torch.equal(narrow, kept)
    with_grad = kept.clone().requires_grad_()
    log_density(BernoulliLikelihood(), with_grad, x, overwrite=True).sum().backward()  # a graph keeps its input
    assert torch.equal(with_grad.detach(), kept) and with_grad.grad is not None


def test_log_density_is_the_same_with_and_without_gradients():
    """The evaluators' fast path (no gradient) and the differentiable one give one number."""
    from pyro_vae.models.likelihoods import BernoulliLikelihood, log_density

    logits = torch.randn(7, 784) * 4
    x = (torch.rand(784) < 0.3).float()
    with torch.no_grad():
        fast = log_density(BernoulliLikelihood(), logits, x)
    slow = log_density(BernoulliLikelihood(), logits.requires_grad_(), x)
    assert slow.requires_grad and torch.allclose(fast, slow.detach(), atol=1e-4)
    exact = torch.distributions.Bernoulli(logits=logits.detach().double()).log_prob(x.double()).sum(-1)
    assert torch.allclose(fast.double(), exact, atol=1e-3)
