"""Anomaly scores against a linear-Gaussian model on 784 pixels, whose log p(x) and posterior are exact."""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from pyro_vae.infer.evaluate import importance_log_likelihood
from pyro_vae.infer.scores import COMPRESSORS, compressed_bits, image_scores, likelihood_ratio
from pyro_vae.models.guides import AmortizedNormal

from ..helpers import linear_gaussian


@pytest.mark.parametrize("compressor", list(COMPRESSORS))
def test_a_black_image_is_simpler_to_a_compressor_than_a_digit_and_a_digit_than_noise(compressor):
    torch.manual_seed(0)
    black = torch.zeros(784)
    digit = torch.zeros(28, 28)
    digit[6:22, 12:16] = 1.0  # a stroke
    noise = torch.bernoulli(torch.full((784,), 0.5))
    bits = compressed_bits(torch.stack([black, digit.flatten(), noise]), compressor)
    assert bits[0] < bits[1] < bits[2]


def test_each_compressor_is_lossless_and_its_length_is_the_file_s():
    """The bits are 8 x the bytes of a file that decodes to the very pixels."""
    from PIL import Image

    torch.manual_seed(1)
    image = torch.rand(1, 784)
    pixels = (image * 255).round().to(torch.uint8).reshape(28, 28).numpy()
    for suffix, (fmt, options) in COMPRESSORS.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, fmt, **options)
        assert compressed_bits(image, suffix).item() == 8 * len(buffer.getvalue())
        decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("L")))
        assert torch.equal(decoded, torch.from_numpy(pixels))


def _exact_guide(vae, W, b, s):
    """q(z | x) = the exact posterior N(A (x - b), S) of the linear-Gaussian model, as an amortized guide."""

    class Identity(nn.Identity):
        out_features = 784

    cov = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)
    a = cov @ W.T / s**2
    guide = AmortizedNormal(Identity(), W.shape[1], num_data=10)
    with torch.no_grad():
        guide.loc_head.weight.copy_(a), guide.loc_head.bias.copy_(-a @ b)
        guide.log_var_head.weight.zero_(), guide.log_var_head.bias.copy_(cov.diagonal().log())
    return guide, a


def test_the_scores_are_what_they_say_on_an_exact_model():
    vae, W, b, s, x, exact = linear_gaussian(n=200, d=784, k=3)
    guide, a = _exact_guide(vae, W, b, s)
    scores = image_scores(vae, guide, x, num_samples=4, batch_size=64)
    assert torch.allclose(scores["neg_log_likelihood"], -exact, atol=1e-2)  # every weight is p(x): exact
    mean = (x - b) @ a.T  # E_q[z | x]
    by_hand = -torch.distributions.Normal(mean @ W.T + b, s).log_prob(x).sum(-1)
    assert torch.allclose(scores["reconstruction_error"], by_hand, rtol=1e-4)
    for suffix in COMPRESSORS:
        assert torch.allclose(scores[f"complexity_corrected{suffix}"],
                              -exact.double() / math.log(2) - compressed_bits(x, suffix), atol=0.02)
    # -ELBO = -log p(x) + KL(q || posterior) = -log p(x) here, up to the one-sample noise of its recon term
    gap = scores["neg_elbo"] - scores["neg_log_likelihood"]
    assert gap.std() > 0.1 and abs(gap.mean()) < 4 * gap.std() / math.sqrt(len(gap))


def test_the_likelihood_ratio_is_minus_log_p_plus_log_p_background_on_exact_models():
    """Two exact linear-Gaussian models (the second a 'background' with another offset): the ratio score is
    -log p(x) + log p_0(x) in closed form; image_scores alone does not make it."""
    vae, W, b, s, x, exact = linear_gaussian(n=100, d=784, k=3)
    guide, _ = _exact_guide(vae, W, b, s)
    background, W0, b0, s0, _, _ = linear_gaussian(n=100, d=784, k=3, seed=1)
    guide0, _ = _exact_guide(background, W0, b0, s0)
    scores = image_scores(vae, guide, x, num_samples=4, batch_size=64)
    log_p0 = importance_log_likelihood(background, guide0, x, 4, batch_size=64)["per_datapoint"]
    exact0 = torch.distributions.MultivariateNormal(b0, W0 @ W0.T + s0**2 * torch.eye(784)).log_prob(x)
    assert torch.allclose(likelihood_ratio(scores["neg_log_likelihood"], log_p0), -exact + exact0, atol=2e-2)
    assert (exact0 - exact).abs().mean() > 1.0  # the two models differ: the test means something
    assert "likelihood_ratio" not in scores


def test_a_point_mass_guide_s_likelihood_score_is_its_bound_drawn_once(tiny_data, monkeypatch):
    """A VQ-VAE's q is its nearest codes: every importance sample is the same, so -log p(x) is -ELBO, and one
    sample is drawn where K are asked for."""
    from pyro_vae.infer import evaluate as module
    from pyro_vae.workflow.build import build_model

    from ..helpers import tiny_config

    drawn, weights = [], module.log_weights
    monkeypatch.setattr(module, "log_weights",
                        lambda *args, **kwargs: drawn.append(args[3]) or weights(*args, **kwargs))
    vae, guide = build_model(tiny_config(prior={"type": "categorical", "codes": 8}, guide={"type": "vq"}), 64)
    scores = image_scores(vae, guide, tiny_data.images[:10], num_samples=50)
    assert drawn == [1] and torch.allclose(scores["neg_log_likelihood"], scores["neg_elbo"].float(), atol=1e-3)
