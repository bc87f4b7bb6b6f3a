"""The conditional VAE against a linear-Gaussian model whose log p(x | y) and posterior are exact
(:func:`tests.helpers.linear_gaussian_conditional`): with the exact posterior every importance weight
equals p(x | y)."""


import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_vae.infer.evaluate import elbo_terms, importance_log_likelihood, posterior_means
from pyro_vae.models.conditional import ConditionalNormal, ConditionalVAE, one_hot
from pyro_vae.models.likelihoods import NormalLikelihood
from pyro_vae.models.nets import MLPDecoder, MLPEncoder
from pyro_vae.models.priors import StandardNormalPrior
from pyro_vae.models.vae import VAE

from ..helpers import linear_gaussian_conditional

D, Z, C = 6, 2, 3


def test_with_the_exact_posterior_every_importance_weight_is_the_exact_log_p_x_given_y():
    vae, guide, x, y, exact, _ = linear_gaussian_conditional()
    got = importance_log_likelihood(vae, guide, x, num_samples=7, chunk_size=3, y=y)["per_datapoint"]
    assert torch.allclose(got, exact, atol=1e-4)
    wrong = importance_log_likelihood(vae, guide, x, num_samples=7, y=y.roll(1, 0))["per_datapoint"]
    assert (wrong - exact).abs().max() > 0.5  # the labels reach both the proposal and the decoder


def test_the_pyro_programs_elbo_is_exact_for_the_exact_posterior():
    """log p(x, z | y) - log q(z | x, y) = log p(x | y) for every z: the Trace_ELBO of one draw is exact."""
    vae, guide, x, y, exact, _ = linear_gaussian_conditional()
    pyro.clear_param_store()
    loss = Trace_ELBO().loss(vae.model, guide, x, None, y)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-3)
    copies, labels = x.repeat(500, 1), y.repeat(500, 1)  # one-sample recon, analytic KL: averaged over copies
    terms = elbo_terms(vae, guide, copies, batch_size=1000, y=labels)
    assert terms["kl_estimator"] == "analytic" and terms["elbo"] == pytest.approx(exact.mean().item(), abs=0.05)
    assert elbo_terms(vae, guide, copies, batch_size=1000, y=labels.roll(1, 1))["elbo"] < terms["elbo"] - 0.5
    means = posterior_means(guide, x, batch_size=3, y=y)
    assert torch.allclose(means, guide.posterior(x, None, y).mean)


def test_the_label_changes_the_decoded_image_and_the_code():
    torch.manual_seed(1)
    decoder, encoder = MLPDecoder(Z + C, [16]), MLPEncoder([16], in_features=D + C)
    decoder.net[-1] = nn.Linear(16, D)
    vae = ConditionalVAE(StandardNormalPrior(Z), decoder, NormalLikelihood(), num_data=4, num_classes=C)
    guide = ConditionalNormal(encoder, Z, num_data=4)
    z, x = torch.randn(4, Z), torch.randn(4, D)
    ys = [one_hot(torch.full((4,), k), C) for k in range(C)]
    decoded = [vae.decode_mean(z, y) for y in ys]
    codes = [guide.posterior(x, None, y).mean for y in ys]
    for k in range(1, C):
        assert (decoded[k] - decoded[0]).abs().min() > 0 and (codes[k] - codes[0]).abs().min() > 0
    # K particles of z (K, B, z_dim) against one label per image (B, C): broadcast, not an error
    assert vae.logits(torch.randn(5, 4, Z), ys[1]).shape == (5, 4, D)


def test_labels_are_required_where_they_are_inputs_and_refused_where_they_are_not():
    vae, guide, x, y, _, _ = linear_gaussian_conditional()
    with pytest.raises(ValueError, match="pass y"):
        vae.logits(torch.zeros(2, Z))
    with pytest.raises(ValueError, match="pass y"):
        guide.posterior(x)
    plain = VAE(StandardNormalPrior(Z), nn.Linear(Z, D), NormalLikelihood(), num_data=8)
    with pytest.raises(ValueError, match="not conditional"):
        plain.logits(torch.zeros(2, Z), y[:2])


def test_one_hot_refuses_a_label_outside_the_classes():
    assert one_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=f"label {bad} is outside 0..2"):
            one_hot(torch.tensor([0, bad]), 3)
