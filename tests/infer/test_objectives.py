import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.workflow.build import build_model, check_config
from pyro_vae.workflow.config import ConfigError
from pyro_vae.infer.optim import adam
from pyro_vae.workflow.build import GUIDES, OBJECTIVES, PRIORS, build_objective, latent_width
from pyro_vae.workflow.rules import DISCRETE_GUIDES, DISCRETE_PRIORS

from ..helpers import tiny_config


def _pairwise() -> list:
    """(prior, guide, objective) triples holding every pair of the three: every prior with every guide
    under trace_mean_field (where analytic and Monte-Carlo KLs meet), every guide with every objective
    under the standard prior, every prior with every objective under the amortized guide."""
    triples = [(p, g, "trace_mean_field") for p in PRIORS for g in GUIDES]
    triples += [("standard", g, o) for g in GUIDES for o in OBJECTIVES]
    triples += [(p, "amortized", o) for p in PRIORS for o in OBJECTIVES]
    triples += [("correlated", "amortized_full", "jit_trace_mean_field")]  # the pair torch's KL cannot trace
    triples += [(p, g, o) for p in DISCRETE_PRIORS for g in DISCRETE_GUIDES for o in OBJECTIVES]  # discrete codes
    unique = list(dict.fromkeys(triples))
    return [pytest.param(*t, marks=pytest.mark.slow) if t[2].startswith("jit_") else t for t in unique]


@pytest.mark.parametrize("prior_kind, guide_kind, objective", _pairwise())
def test_every_prior_guide_objective_trains(tiny_data, prior_kind, guide_kind, objective):
    config = tiny_config(prior={"type": prior_kind}, guide={"type": guide_kind})
    config.train.objective = objective
    config.train.num_particles = 3 if objective.startswith("iwae") else 1
    if objective == "iwae_dreg" and (guide_kind in ("iaf", "planar") or prior_kind == "vamp"):
        with pytest.raises(ConfigError, match="'iwae_dreg' holds the guide's Gaussian parameters fixed"):
            check_config(config)
        return
    full_mvn_kl = guide_kind == "amortized_full" and prior_kind in ("correlated", "learned")
    if objective == "jit_trace_mean_field" and full_mvn_kl:
        with pytest.raises(ConfigError, match="cannot trace torch's KL between two"):
            check_config(config)
        return
    if prior_kind == "vamp" and guide_kind not in ("amortized", "amortized_full"):
        with pytest.raises(ConfigError, match="prior.type = 'vamp' mixes the guide's Gaussian posteriors"):
            check_config(config)
        return
    if (prior_kind in DISCRETE_PRIORS) != (guide_kind in DISCRETE_GUIDES):
        with pytest.raises(ConfigError, match="are over different latents"):
            check_config(config)
        return
    if guide_kind in DISCRETE_GUIDES and objective not in ("trace", "trace_mean_field"):
        with pytest.raises(ConfigError, match=f"guide.type = '{guide_kind}'"):
            check_config(config)
        return
    check_config(config)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # the same weights whichever tests ran before in this process
    vae, guide = build_model(config, len(tiny_data))
    svi = SVI(vae.model, guide, adam(5e-3), build_objective(config))
    generator = torch.Generator().manual_seed(0)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pyro warnings (shape, plate or mean-field misuse)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.trace")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        while len(losses) < 100:
            for idx, x in tiny_data.batches(16, generator):
                losses.append(svi.step(x, idx) / len(tiny_data))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 20
    idx = torch.arange(4)
    trace = poutine.trace(guide).get_trace(tiny_data.pixels_at(idx), idx)
    assert trace.nodes["z"]["value"].shape == (4, latent_width(config))  # (discrete codes: M K or M D wide)


def _loss_draws(objective, vae, guide, x, draws):
    return torch.tensor([objective.loss(vae.model, guide, x) for _ in range(draws)])


@pytest.mark.parametrize("guide_kind", ["amortized", "amortized_full"])
def test_analytic_kl_and_monte_carlo_elbos_agree(tiny_data, guide_kind):
    """TraceMeanField_ELBO (analytic KL) and Trace_ELBO estimate the same ELBO."""
    config = tiny_config(prior={"type": "correlated"}, guide={"type": guide_kind})
    vae, guide = build_model(config, len(tiny_data))
    with torch.no_grad():  # a guide far from the prior, so the KL term matters
        guide.loc_head.bias.fill_(1.5)
    x = tiny_data.images[:4]
    pyro.set_rng_seed(0)
    mc = _loss_draws(Trace_ELBO(), vae, guide, x, 600)
    analytic = _loss_draws(TraceMeanField_ELBO(), vae, guide, x, 600)
    se = (mc.var() / len(mc) + analytic.var() / len(analytic)).sqrt()
    assert abs(mc.mean() - analytic.mean()) < 4 * se
    assert analytic.std() < mc.std()  # the analytic KL removes that term's variance


# --- the new objectives against hand computations ------------------------------------------
from pyro_vae.infer.objectives import IWAE, DReGIWAE, FreeBitsELBO, KLWeight, kl_weighted  # noqa: E402

import pyro.distributions as dist  # noqa: E402

from pyro_vae.models.guides import Guide  # noqa: E402

from ..helpers import linear_gaussian  # noqa: E402
from .test_evaluate import _ExactPosterior, _GaussianProposal, _linear_gaussian  # noqa: E402


def test_iwae_with_one_particle_is_the_elbo(tiny_data):
    vae, guide = build_model(tiny_config(prior={"type": "correlated"}), len(tiny_data))
    idx = torch.arange(12)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(3)
    iwae = IWAE(num_particles=1).loss(vae.model, guide, x, idx)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().loss(vae.model, guide, x, idx)
    assert iwae == pytest.approx(elbo, rel=1e-5)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_iwae_is_exact_with_the_exact_posterior(k):
    vae, W, b, s, x, exact = _linear_gaussian(n=30, seed=4)
    loss = IWAE(num_particles=k).loss(vae.model, _ExactPosterior(W, b, s, 1.0), x)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-2)


def test_iwae_bound_tightens_with_k():
    vae, W, b, s, x, exact = _linear_gaussian(n=200, seed=5)
    guide = _GaussianProposal(W, b, s, widen=1.6)
    losses = [IWAE(num_particles=k).loss(vae.model, guide, x) / 200 for k in (1, 10, 200)]
    assert losses[0] > losses[1] > losses[2] > -exact.mean().item() - 0.05


class _LinearGuide(Guide):
    """q(z | x) = N(A x + c, diag(exp(2 log_scale))): a learnable encoder that can be the exact posterior of a
    linear-Gaussian model with orthogonal W."""

    def __init__(self, d, k):
        super().__init__(num_data=1)
        self.linear = torch.nn.Linear(d, k)
        self.log_scale = torch.nn.Parameter(torch.zeros(k))

    def posterior(self, x, idx=None):
        return dist.Normal(self.linear(x), self.log_scale.exp().expand(x.shape[0], -1)).to_event(1)

    def set_exact(self, W, b, s, widen=1.0):
        """q = p(z | x): mean cov W^T (x - b) / s^2, covariance cov = (I + W^T W / s^2)^-1 (diagonal here)."""
        cov = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)
        with torch.no_grad():
            self.linear.weight.copy_(cov @ W.T / s**2)
            self.linear.bias.copy_(-(cov @ W.T @ b) / s**2)
            self.log_scale.copy_(cov.diagonal().sqrt().log() + math.log(widen))
        return self


def _gradients(objective, vae, guide, x, seed):
    """(loss, model gradients, guide gradients) of one ``loss_and_grads`` with the rng at ``seed``."""
    for p in [*vae.parameters(), *guide.parameters()]:
        p.grad = None
    pyro.set_rng_seed(seed)
    with pyro.get_param_store().scope():
        loss = objective.loss_and_grads(vae.model, guide, x)
    def grads(module):
        return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                          for p in module.parameters()])

    return loss, grads(vae), grads(guide)


def test_dreg_has_iwae_value_and_model_gradients_and_no_guide_noise_at_the_exact_posterior():
    vae, W, b, s, x, exact = linear_gaussian(n=20, d=8, k=3, seed=3)
    guide = _LinearGuide(8, 3).set_exact(W, b, s)
    iwae, dreg = IWAE(num_particles=5), DReGIWAE(num_particles=5)
    loss, model_grad, guide_grad = _gradients(dreg, vae, guide, x, seed=7)
    loss_iwae, model_grad_iwae, guide_grad_iwae = _gradients(iwae, vae, guide, x, seed=7)
    assert loss == pytest.approx(loss_iwae, rel=1e-6)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-3)  # exact posterior: every log w_k = log p(x)
    assert torch.allclose(model_grad, model_grad_iwae, atol=1e-5) and model_grad.abs().max() > 1e-2
    assert guide_grad.abs().max() < 1e-4  # d log w / dz = 0 at the exact posterior: no noise
    assert guide_grad_iwae.abs().max() > 1e-2  # IWAE's guide gradient there is pure noise


def test_dreg_guide_gradient_is_unbiased_and_less_noisy_than_iwae():
    """Away from the posterior the two estimators have the same mean (DReG drops a zero-mean score term)."""
    vae, W, b, s, x, exact = linear_gaussian(n=20, d=8, k=3, seed=3)
    guide = _LinearGuide(8, 3).set_exact(W, b, s, widen=1.7)
    with torch.no_grad():
        guide.linear.bias.add_(0.3)
    draws = {name: torch.stack([_gradients(objective, vae, guide, x, seed)[2] for seed in range(300)])
             for name, objective in (("iwae", IWAE(5)), ("dreg", DReGIWAE(5)))}
    mean_diff = draws["dreg"].mean(0) - draws["iwae"].mean(0)
    se = (draws["dreg"].var(0) / 300 + draws["iwae"].var(0) / 300).sqrt()
    assert (mean_diff.abs() < 4 * se + 1e-4).all()
    assert draws["iwae"].mean(0).abs().max() > 10 * se.max()  # the mean is far from 0: the test can tell
    assert (draws["dreg"].var(0).sum() < 0.5 * draws["iwae"].var(0).sum())


def test_dreg_refuses_a_guide_it_cannot_hold_fixed_and_shared_parameters(tiny_data):
    vae, guide = build_model(tiny_config(guide={"type": "planar"}), len(tiny_data))
    idx = torch.arange(8)
    with pytest.raises(ValueError, match="needs a Normal or MultivariateNormal q, got TransformedDistribution"):
        DReGIWAE(3).loss_and_grads(vae.model, guide, tiny_data.pixels_at(idx), idx)
    pyro.clear_param_store()  # the planar guide's parameters have the same names
    vae, guide = build_model(tiny_config(prior={"type": "vamp"}), len(tiny_data))
    with pytest.raises(ValueError, match="a model whose densities do not depend on the guide"):
        DReGIWAE(3).loss_and_grads(vae.model, guide, tiny_data.pixels_at(idx), idx)


def test_kl_weight_scales_only_the_latent_terms(tiny_data):
    vae, guide = build_model(tiny_config(), len(tiny_data))
    x = tiny_data.images[:10]
    weight = KLWeight(beta=0.0)
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().loss(kl_weighted(vae.model, weight), kl_weighted(guide, weight), x)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        z = guide.posterior(x).rsample()
        recon = vae.likelihood(vae.decoder(z)).log_prob(x).sum()
    assert loss == pytest.approx(-recon.item(), rel=1e-5)  # beta = 0: reconstruction only
    weight = KLWeight(beta=2.0)
    analytic = TraceMeanField_ELBO()
    pyro.set_rng_seed(1)
    weighted = analytic.loss(kl_weighted(vae.model, weight), kl_weighted(guide, weight), x)
    pyro.set_rng_seed(1)
    plain = analytic.loss(vae.model, guide, x)
    kl = torch.distributions.kl_divergence(guide.posterior(x), vae.prior().expand((10,))).sum().item()
    assert weighted - plain == pytest.approx(kl, rel=1e-4)  # one more KL


def test_kl_annealing_schedule():
    weight = KLWeight(beta=2.0, anneal_steps=10)
    assert [weight.at(t) for t in (1, 5, 10, 50)] == [0.2, 1.0, 2.0, 2.0]
    assert KLWeight().at(1) == 1.0 and not KLWeight().active and KLWeight(1.0, 5).active


def test_free_bits_floor_each_dimension(tiny_data):
    vae, guide = build_model(tiny_config(model={"z_dim": 3}), len(tiny_data))
    idx = torch.arange(16)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(2)
    zero = FreeBitsELBO(free_bits=0.0).loss(vae.model, guide, x, idx)
    pyro.set_rng_seed(2)
    assert zero == pytest.approx(TraceMeanField_ELBO().loss(vae.model, guide, x, idx), rel=1e-5)
    pyro.set_rng_seed(2)
    floored = FreeBitsELBO(free_bits=50.0).loss(vae.model, guide, x, idx)
    with torch.no_grad():
        pyro.set_rng_seed(2)
        z = guide.posterior(x).rsample()
        recon = vae.likelihood(vae.decoder(z)).log_prob(x).sum()
    scale = len(tiny_data) / 16
    assert floored == pytest.approx(scale * (16 * 50.0 * 3 - recon.item()), rel=1e-5)


def test_free_bits_follow_the_kl_weight(tiny_data):
    """beta_t multiplies the floored KL: -recon + beta_t sum_j max(lambda, KL_j), annealing included."""
    vae, guide = build_model(tiny_config(model={"z_dim": 3}), len(tiny_data))
    idx = torch.arange(16)
    x = tiny_data.pixels_at(idx)
    with torch.no_grad():
        pyro.set_rng_seed(2)
        z = guide.posterior(x).rsample()
        recon = vae.likelihood(vae.decoder(z)).log_prob(x).sum().item()
    scale = len(tiny_data) / 16
    for beta, anneal, step in ((1.0, 0, 1), (4.0, 0, 1), (4.0, 10, 5)):
        weight = KLWeight(beta, anneal)
        weight.set_step(step)
        pyro.set_rng_seed(2)
        loss = FreeBitsELBO(free_bits=50.0).loss(kl_weighted(vae.model, weight), kl_weighted(guide, weight), x, idx)
        assert loss == pytest.approx(scale * (weight.value * 16 * 50.0 * 3 - recon), rel=1e-5)


def test_iwae_refuses_a_kl_weight(tiny_data):
    """A KL weight inside IWAE used to scale the whole bound by beta_t; now it is refused."""
    vae, guide = build_model(tiny_config(), len(tiny_data))
    idx = torch.arange(16)
    weight = KLWeight(1.0, anneal_steps=10)  # beta_t = 0.1 at step 1
    with pytest.raises(ValueError, match="iwae objective needs every sample site at the data plate's scale"):
        IWAE(3).loss(kl_weighted(vae.model, weight), kl_weighted(guide, weight), tiny_data.pixels_at(idx), idx)


def test_m2s_objective_sums_its_three_parts_and_reports_the_unlabelled_bound():
    """-J^alpha = -U(x_u) - L(x_l, y_l) + alpha * CE: the gradient is the sum's, the value svi.step gets the
    unlabelled part; build_objective's alpha is train.classifier_weight x N."""
    import pyro
    from torch import nn

    from pyro.infer import config_enumerate

    from pyro_vae.infer.objectives import SemiSupervisedELBO
    from pyro_vae.models.likelihoods import BernoulliLikelihood
    from pyro_vae.models.nets import MLPDecoder, MLPEncoder
    from pyro_vae.models.priors import StandardNormalPrior
    from pyro_vae.models.semisupervised import SemiSupervisedGuide, SemiSupervisedVAE
    from pyro_vae.workflow.build import build_objective
    from pyro_vae.workflow.config import load_config

    torch.manual_seed(0)
    vae = SemiSupervisedVAE(StandardNormalPrior(2), MLPDecoder(5, [8], out_features=6), BernoulliLikelihood(),
                            4, 8, 3)
    guide = SemiSupervisedGuide(MLPEncoder([8], in_features=9), nn.Sequential(MLPEncoder([8], in_features=6),
                                                                             nn.Linear(8, 3)), 2, vae.sets)
    x_u, x_l = (torch.rand(4, 6) < 0.5).float(), (torch.rand(2, 6) < 0.5).float()
    y_l = torch.eye(3)[[0, 2]]
    args = (x_u, torch.arange(4), x_l, torch.arange(2), y_l)
    objective = SemiSupervisedELBO(alpha=7.0)
    pyro.set_rng_seed(3)
    unlabelled, labelled, classifier = objective.parts(vae.model, guide, *args)
    assert classifier.item() == pytest.approx(7.0 * guide.classifier_loss(x_l, y_l).item())
    pyro.set_rng_seed(3)
    total = objective.differentiable_loss(vae.model, guide, *args)
    assert total.item() == pytest.approx((unlabelled + labelled + classifier).item(), rel=1e-5)
    pyro.set_rng_seed(3)
    assert objective.loss_and_grads(vae.model, guide, *args) == pytest.approx(unlabelled.item(), rel=1e-5)
    assert guide.classifier[1].weight.grad is not None  # the classifier term's gradient reached q(y | x)
    pyro.set_rng_seed(3)  # a step whose labelled batch is weighted w (train.labelled_every): its two parts times w
    weighted = objective.parts(vae.model, guide, *args, 2.5)
    assert weighted[0].item() == unlabelled.item()
    assert [w.item() for w in weighted[1:]] == pytest.approx([2.5 * labelled.item(), 2.5 * classifier.item()])
    pyro.set_rng_seed(3)  # a step without one: the unlabelled bound alone, its gradient that bound's
    none = objective.parts(vae.model, guide, x_u, torch.arange(4), None, None, None, 0.0)
    assert none[0].item() == unlabelled.item() and none[1].item() == none[2].item() == 0.0
    guide.classifier[1].weight.grad = None
    pyro.set_rng_seed(3)
    objective.loss_and_grads(vae.model, guide, x_u, torch.arange(4), None, None, None, 0.0)
    without = guide.classifier[1].weight.grad.clone()
    guide.classifier[1].weight.grad = None
    pyro.set_rng_seed(3)
    SemiSupervisedELBO(alpha=7.0).enumerated.loss_and_grads(vae.model, config_enumerate(guide, "parallel"), x_u,
                                                           torch.arange(4))
    assert torch.allclose(without, guide.classifier[1].weight.grad)
    config = load_config(None, ["model.labels='latent'", "data.labelled=100", "train.classifier_weight=0.1"])
    assert build_objective(config, 60000).alpha == pytest.approx(6000.0)
    with pytest.raises(ValueError, match="needs the training set's size N"):
        build_objective(config)


@pytest.mark.parametrize("codebook", ["loss", "ema"])
def test_the_vq_objective_is_minus_the_elbo_plus_the_quantization_losses(tiny_data, codebook):
    """Its value is -(log p(x | z_q) + log p(c*)) scaled to the data; the codebook moves by its own loss
    (d/dE of N/B sum ||sg(z_e) - e_c||^2) or, with moving averages, by the update alone."""
    from pyro_vae.infer.objectives import VectorQuantizedELBO

    config = tiny_config(prior={"type": "categorical", "codes": 8, "codebook": codebook}, guide={"type": "vq"},
                         model={"z_dim": 3})
    pyro.clear_param_store()
    vae, guide = build_model(config, len(tiny_data))
    objective = build_objective(config)
    assert isinstance(objective, VectorQuantizedELBO) and objective.commitment == 0.25
    idx = torch.arange(8)
    x = tiny_data.pixels_at(idx)
    q = guide.posterior(x, idx)
    z_q = q.rsample()
    scale = len(tiny_data) / 8
    neg_elbo = -scale * (vae.log_likelihood(z_q, x) - 3 * math.log(8)).sum()  # uniform prior: KL = M log K
    assert objective.loss(vae.model, guide, x, idx) == pytest.approx(neg_elbo.item(), rel=1e-5)
    codebook_module = vae.prior.codebook
    before = codebook_module.weight.detach().clone()
    reported = objective.loss_and_grads(vae.model, guide, x, idx)
    assert reported == pytest.approx(neg_elbo.item(), rel=1e-5)  # the quantization losses are not reported
    if codebook == "loss":
        weight = codebook_module.weight.detach().clone().requires_grad_(True)
        own = scale * (q.z_e.detach() - weight[q.codes]).square().sum()
        expected, = torch.autograd.grad(own, weight)
        assert torch.allclose(codebook_module.weight.grad, expected, atol=1e-5)
        assert torch.equal(codebook_module.weight.detach(), before)  # (the optimizer steps it)
    else:
        assert not codebook_module.weight.requires_grad
        used = q.codes.unique()
        assert not torch.allclose(codebook_module.weight[used], before[used])  # moved by the average
