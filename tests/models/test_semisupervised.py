"""M2's bound by enumeration, checked against the sum over classes written out by hand."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import nn

from pyro_vae.models.likelihoods import BernoulliLikelihood
from pyro_vae.models.nets import MLPDecoder, MLPEncoder
from pyro_vae.models.priors import StandardNormalPrior
from pyro_vae.models.semisupervised import SemiSupervisedGuide, SemiSupervisedVAE, SetSizes

C, D, Z, B = 3, 6, 2, 4


def _m2(num_labelled=B, num_unlabelled=B):
    pyro.clear_param_store()
    torch.manual_seed(0)
    decoder = MLPDecoder(Z + C, [8], out_features=D)
    vae = SemiSupervisedVAE(StandardNormalPrior(Z), decoder, BernoulliLikelihood(), num_labelled, num_unlabelled, C)
    classifier = nn.Sequential(MLPEncoder([8], in_features=D), nn.Linear(8, C))
    guide = SemiSupervisedGuide(MLPEncoder([8], in_features=D + C), classifier, Z, vae.sets)
    return vae, guide


def _elbo_given(vae, guide, x, y, z):
    """log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y) for one draw z per image, from the nets."""
    log_px = dist.Bernoulli(logits=vae.decoder(torch.cat([z, y], -1))).log_prob(x).sum(-1)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = guide.posterior(x, None, y).log_prob(z)
    return log_px + math.log(1.0 / C) + log_pz - log_qz


def test_the_enumerated_bound_of_unlabelled_images_is_the_sum_over_classes_by_hand():
    """U(x) = sum_y q(y | x) [L(x, y) - log q(y | x)], with the z the enumerated guide drew for each y."""
    vae, guide = _m2()
    x = (torch.rand(B, D) < 0.5).float()
    enumerated = config_enumerate(guide, "parallel")
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, enumerated, x)
    pyro.set_rng_seed(1)
    trace = poutine.trace(poutine.enum(enumerated, first_available_dim=-2)).get_trace(x)
    z = trace.nodes["z"]["value"]  # (C, B, Z): one draw per class and image
    assert z.shape == (C, B, Z)
    log_q_y = F.log_softmax(guide.classifier(x), -1)  # (B, C)
    by_hand = torch.zeros(B)
    for c in range(C):
        y = F.one_hot(torch.full((B,), c), C).float()
        by_hand += log_q_y[:, c].exp() * (_elbo_given(vae, guide, x, y, z[c]) - log_q_y[:, c])
    assert loss.item() == pytest.approx(-by_hand.sum().item(), rel=1e-5)


def test_a_labelled_image_observes_y_and_its_bound_is_the_elbo_given_y():
    vae, guide = _m2()
    x = (torch.rand(B, D) < 0.5).float()
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    pyro.set_rng_seed(2)
    loss = Trace_ELBO().differentiable_loss(vae.model, guide, x, None, y)
    pyro.set_rng_seed(2)
    trace = poutine.trace(guide).get_trace(x, None, y)
    assert "y" not in trace.nodes  # observed: no guide site
    assert loss.item() == pytest.approx(-_elbo_given(vae, guide, x, y, trace.nodes["z"]["value"]).sum().item(),
                                        rel=1e-5)


def test_the_auxiliary_loss_is_the_classifiers_cross_entropy_and_y_changes_what_is_drawn():
    vae, guide = _m2()
    x = (torch.rand(B, D) < 0.5).float()
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    expected = -(F.log_softmax(guide.classifier(x), -1) * y).sum() / B
    assert guide.classifier_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(guide.predict(x), guide.classifier(x).argmax(-1))
    images = vae.decode_mean(torch.zeros(C, Z), torch.eye(C))  # the same style, each class
    assert images.shape == (C, D) and not torch.allclose(images[0], images[1])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="num_labelled >= 1"):
        SetSizes(0, 10)


def test_labelled_and_unlabelled_minibatches_are_scaled_to_their_own_sets():
    vae, guide = _m2(num_labelled=100, num_unlabelled=5000)
    x, idx = (torch.rand(B, D) < 0.5).float(), torch.arange(B)
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    labelled = poutine.trace(poutine.replay(vae.model, poutine.trace(guide).get_trace(x, idx, y))).get_trace(x, idx, y)
    unlabelled = poutine.trace(poutine.replay(vae.model, poutine.trace(guide).get_trace(x, idx))).get_trace(x, idx)
    assert labelled.nodes["x"]["scale"] == pytest.approx(100 / B)
    assert unlabelled.nodes["x"]["scale"] == pytest.approx(5000 / B)
