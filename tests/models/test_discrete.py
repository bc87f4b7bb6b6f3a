import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.kl import kl_divergence
from torch import nn

from pyro_vae.infer.evaluate import importance_log_likelihood, log_weights
from pyro_vae.models.discrete import (CategoricalPrior, Codebook, CodebookCategorical, CodebookPrior, NearestCode,
                                      OneHotCodes, RelaxedCategoricalGuide, RelaxedOneHotCodes, code_indices)
from pyro_vae.models.guides import point
from pyro_vae.models.likelihoods import BernoulliLikelihood
from pyro_vae.models.vae import VAE


def test_quantization_picks_the_nearest_code_and_passes_the_gradient_straight_through():
    codebook = Codebook(7, 3)
    z_e = torch.randn(5, 4, 3, requires_grad=True)  # (B, M, D)
    q = NearestCode(z_e, codebook)
    distances = (z_e.detach().unsqueeze(-2) - codebook.weight.detach()).norm(dim=-1)  # (B, M, K), by brute force
    assert torch.equal(q.codes, distances.argmin(-1))
    z_q = q.rsample()
    assert torch.equal(z_q.detach(), codebook.weight.detach()[q.codes].flatten(-2))  # the codes' vectors, exactly
    upstream = torch.randn(5, 12)
    z_q.backward(upstream)
    assert torch.equal(z_e.grad, upstream.unflatten(-1, (4, 3)))  # d z_q / d z_e = I
    assert codebook.weight.grad is None  # the codes learn from their own loss, not through z_q


def test_a_point_mass_posterior_has_log_q_zero_and_kl_minus_log_prior():
    codebook = Codebook(8, 2)
    logits = torch.randn(3, 8)  # a learned prior over 3 positions
    q = NearestCode(torch.randn(6, 3, 2), codebook)
    p = CodebookCategorical(codebook, logits).expand((6,))
    z = q.rsample()
    log_pi = logits.log_softmax(-1)
    by_hand = torch.stack([log_pi[torch.arange(3), c].sum() for c in q.codes])
    assert torch.allclose(p.log_prob(z), by_hand)
    assert torch.equal(q.log_prob(z), torch.zeros(6))
    assert torch.allclose(kl_divergence(q, p), -by_hand)
    uniform = CodebookCategorical(codebook, torch.zeros(3, 8)).expand((6,))
    assert torch.allclose(kl_divergence(q, uniform), torch.full((6,), 3 * math.log(8)))  # M log K


def test_codebook_and_commitment_losses_move_what_they_should():
    codebook = Codebook(4, 2)
    z_e = torch.randn(3, 2, 2, requires_grad=True)
    q = NearestCode(z_e, codebook)
    q.codebook_loss().sum().backward()
    assert z_e.grad is None and codebook.weight.grad.abs().sum() > 0
    codebook.weight.grad = None
    q.commitment_loss().sum().backward()
    assert codebook.weight.grad is None
    assert torch.allclose(z_e.grad, 2 * (z_e - codebook.weight[q.codes]).detach())


def test_moving_average_codebook_follows_the_formula_and_spares_unused_codes():
    codebook = Codebook(3, 2, ema_decay=0.9)
    start = codebook.weight.clone()
    z_e = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    indices = torch.tensor([0, 0, 1])
    codebook.ema_update(z_e, indices)
    counts = 0.9 * torch.ones(3) + 0.1 * torch.tensor([2.0, 1.0, 0.0])
    sums = 0.9 * start + 0.1 * torch.stack([z_e[0] + z_e[1], z_e[2], torch.zeros(2)])
    assert torch.allclose(codebook.weight, sums / counts.unsqueeze(1))
    assert torch.allclose(codebook.weight[2], start[2], atol=1e-4)  # no output chose it: it stays near its start
    assert not any(p.requires_grad for p in codebook.parameters())
    for _ in range(3000):  # gamma^3000 ~ 1e-137: the unused code's count and sum have long decayed below eps
        codebook.ema_update(z_e, indices)
    assert torch.allclose(codebook.weight[2], start[2], atol=1e-4) and codebook.ema_count[2] < codebook.eps
    assert torch.allclose(codebook.weight[:2], torch.stack([(z_e[0] + z_e[1]) / 2, z_e[2]]), atol=1e-3)


def test_one_hot_codes_sample_score_and_kl_as_m_independent_categoricals():
    logits = torch.randn(2, 3, 4)  # (B, M, K)
    q, p = OneHotCodes(logits), OneHotCodes(torch.randn(3, 4)).expand((2,))
    c = q.sample()
    assert c.shape == (2, 12) and torch.equal(c.unflatten(-1, (3, 4)).sum(-1), torch.ones(2, 3))
    by_hand = sum(dist.Categorical(logits=logits[:, m]).log_prob(c.unflatten(-1, (3, 4))[:, m].argmax(-1))
                  for m in range(3))
    assert torch.allclose(q.log_prob(c), by_hand)
    kl = sum(kl_divergence(dist.Categorical(logits=logits[:, m]), dist.Categorical(logits=p.logits[:, m]))
             for m in range(3))
    assert torch.allclose(kl_divergence(q, p), kl)
    assert torch.equal(code_indices(q), logits.argmax(-1)) and torch.equal(point(q), q.mode)


def test_straight_through_samples_are_exact_one_hots_drawn_with_q_s_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([[[2.0, 0.0, -1.0]]], requires_grad=True)  # one position, three classes
    q = RelaxedOneHotCodes(logits, temperature=0.5)
    draws = q.rsample((20000,))
    assert set(draws.unique().tolist()) == {0.0, 1.0} and torch.equal(draws.sum(-1), torch.ones(20000, 1))
    frequencies = draws.mean(0).squeeze(0)
    assert torch.allclose(frequencies, logits.detach().softmax(-1).flatten(), atol=0.01)


def test_the_straight_through_gradient_is_the_gumbel_softmax_sample_s():
    """The same Gumbel noise (seed) relaxed at tau by torch's RelaxedOneHotCategorical: the hard sample is its
    argmax, and any loss of the hard sample has the gradient the loss would have at the relaxed one."""
    logits = torch.randn(4, 2, 5, requires_grad=True)
    weights = torch.randn(4, 10)
    torch.manual_seed(3)
    hard = RelaxedOneHotCodes(logits, temperature=0.7).rsample()
    (hard * weights).sum().backward()
    straight_through = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(3)
    soft = dist.RelaxedOneHotCategorical(torch.tensor(0.7), logits=logits).rsample()
    assert torch.equal(hard.detach().unflatten(-1, (2, 5)).argmax(-1), soft.detach().argmax(-1))
    (soft.flatten(-2) * weights).sum().backward()
    assert torch.allclose(straight_through, logits.grad, atol=1e-6)


def test_the_temperature_falls_with_the_step_to_its_floor():
    guide = RelaxedCategoricalGuide(nn.Linear(4, 4), 2, 3, 10, temperature=1.0, min_temperature=0.5,
                                    temperature_decay=1e-3)
    guide.encoder.out_features = 4
    for step, expected in ((0, 1.0), (100, math.exp(-0.1)), (10_000, 0.5)):
        guide.set_step(step)
        assert guide.temperature == pytest.approx(expected)
    with pytest.raises(ValueError, match="min_temperature <= temperature"):
        RelaxedCategoricalGuide(nn.Linear(4, 4), 2, 3, 10, temperature=0.5, min_temperature=1.0)


def _enumerable_model(positions=1, classes=5, pixels=6):
    """A discrete-code VAE small enough to sum log p(x) = logsumexp_c [log p(x | c) + log p(c)] over every code."""
    torch.manual_seed(1)
    prior = CategoricalPrior(positions, classes, learned=True)
    with torch.no_grad():
        prior.logits.normal_()
    vae = VAE(prior, nn.Linear(positions * classes, pixels), BernoulliLikelihood(), num_data=8)
    x = (torch.rand(4, pixels) < 0.5).float()
    codes = torch.cartesian_prod(*[torch.arange(classes)] * positions).reshape(-1, positions)
    one_hots = nn.functional.one_hot(codes, classes).float().flatten(-2)  # (K^M, M K)
    with torch.no_grad():
        joint = vae.log_likelihood(one_hots.unsqueeze(1), x) + prior().log_prob(one_hots).unsqueeze(1)  # (K^M, B)
    return vae, x, one_hots, joint


def test_importance_weights_of_the_exact_posterior_are_all_log_p_x():
    vae, x, one_hots, joint = _enumerable_model()
    exact = joint.logsumexp(0)  # log p(x), (B,)
    posterior = OneHotCodes((joint - exact).T.unsqueeze(1))  # q(c | x) = p(c | x), one position
    weights = log_weights(vae, posterior, x, 50)  # (K, B)
    assert torch.allclose(weights, exact.expand(50, -1), atol=1e-5)


def test_importance_sampled_log_p_x_of_a_discrete_model_reaches_the_sum_over_codes():
    vae, x, _, joint = _enumerable_model(positions=2, classes=3)

    class Uniformish(torch.nn.Module):  # q far from the posterior: the estimate still converges to log p(x)
        deterministic = False

        def posterior(self, xb, idx=None):
            return RelaxedOneHotCodes(torch.zeros(xb.shape[0], 2, 3))

    pyro.set_rng_seed(0)
    estimate = importance_log_likelihood(vae, Uniformish(), x, num_samples=4000)["per_datapoint"]
    assert torch.allclose(estimate, joint.logsumexp(0), atol=0.02)


def test_the_priors_are_over_codes_of_the_decoder_s_width():
    prior = CategoricalPrior(3, 5)
    assert prior.z_dim == 15 and prior().sample((4,)).shape == (4, 15)
    codebook_prior = CodebookPrior(3, Codebook(5, 2), learned=True)
    z = codebook_prior().sample((4,))
    assert codebook_prior.z_dim == 6 and z.shape == (4, 6)
    rows = z.unflatten(-1, (3, 2)).reshape(-1, 2)
    assert all((row == codebook_prior.codebook.weight).all(-1).any() for row in rows)  # every vector is a code
    with pytest.raises(ValueError, match="codes >= 2 classes"):
        CategoricalPrior(3, 1)
