"""M2's bound by enumeration, checked against the sum over classes written out by hand."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

from pyro_vae.models.semisupervised import SemiSupervisedVAE

C, D, Z, B = 3, 6, 2, 4


@pytest.fixture
def m2():
    pyro.clear_param_store()
    torch.manual_seed(0)
    return SemiSupervisedVAE(z_dim=Z, num_classes=C, hidden=[8], num_labelled=B, num_unlabelled=B, num_pixels=D)


def _elbo_given(m2, x, y, z):
    """log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y) for one draw z per image, from the nets."""
    log_px = dist.Bernoulli(logits=m2.decoder(torch.cat([z, y], -1))).log_prob(x).sum(-1)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    loc, log_scale = m2.encoder(torch.cat([x, y], -1)).chunk(2, -1)
    log_qz = dist.Normal(loc, log_scale.exp()).log_prob(z).sum(-1)
    return log_px + math.log(1.0 / C) + log_pz - log_qz


def test_the_enumerated_bound_of_unlabelled_images_is_the_sum_over_classes_by_hand(m2):
    """L(x) = sum_y q(y | x) [ELBO(x, y) - log q(y | x)], with the z the enumerated guide drew for each y."""
    x = (torch.rand(B, D) < 0.5).float()
    guide = config_enumerate(m2.guide, "parallel")
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m2.model, guide, x)
    pyro.set_rng_seed(1)
    trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x)
    z = trace.nodes["z"]["value"]  # (C, B, Z): one draw per class and image
    assert z.shape == (C, B, Z)
    log_q_y = F.log_softmax(m2.classifier(x), -1)  # (B, C)
    by_hand = torch.zeros(B)
    for c in range(C):
        y = F.one_hot(torch.full((B,), c), C).float()
        by_hand += log_q_y[:, c].exp() * (_elbo_given(m2, x, y, z[c]) - log_q_y[:, c])
    assert loss.item() == pytest.approx(-by_hand.sum().item(), rel=1e-5)


def test_a_labelled_image_observes_y_and_its_bound_is_the_elbo_given_y(m2):
    x = (torch.rand(B, D) < 0.5).float()
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    pyro.set_rng_seed(2)
    loss = Trace_ELBO().differentiable_loss(m2.model, m2.guide, x, y)
    pyro.set_rng_seed(2)
    z = poutine.trace(m2.guide).get_trace(x, y).nodes["z"]["value"]
    assert "y" not in poutine.trace(m2.guide).get_trace(x, y).nodes  # observed: no guide site
    assert loss.item() == pytest.approx(-_elbo_given(m2, x, y, z).sum().item(), rel=1e-5)


def test_the_auxiliary_loss_is_the_classifiers_cross_entropy_and_y_changes_what_is_drawn(m2):
    x = (torch.rand(B, D) < 0.5).float()
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    expected = -(F.log_softmax(m2.classifier(x), -1) * y).sum() / B
    assert m2.classifier_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    z = torch.zeros(C, Z)
    images = m2.generate(torch.eye(C), z)  # the same style, each class
    assert images.shape == (C, D) and not torch.allclose(images[0], images[1])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        SemiSupervisedVAE(z_dim=2, num_classes=1)


def test_labelled_and_unlabelled_minibatches_are_scaled_to_their_own_sets():
    m2 = SemiSupervisedVAE(z_dim=Z, num_classes=C, hidden=[8], num_labelled=100, num_unlabelled=5000, num_pixels=D)
    x, idx = (torch.rand(B, D) < 0.5).float(), torch.arange(B)
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), C).float()
    labelled = poutine.trace(m2.model).get_trace(x, y, idx)
    unlabelled = poutine.trace(poutine.replay(m2.model, poutine.trace(m2.guide).get_trace(x, None, idx))).get_trace(
        x, None, idx)
    assert labelled.nodes["x"]["scale"] == pytest.approx(100 / B)
    assert unlabelled.nodes["x"]["scale"] == pytest.approx(5000 / B)
