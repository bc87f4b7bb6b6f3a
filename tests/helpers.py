"""Small builders shared by the tests."""

import pyro.distributions as dist
import torch

from pyro_vae.workflow.config import Config
from pyro_vae.workflow.data import ImageData
from pyro_vae.models.likelihoods import NormalLikelihood
from pyro_vae.models.priors import StandardNormalPrior
from pyro_vae.models.vae import VAE


def make_tiny_data(n: int = 64, dim: int = 784, classes: int = 4, seed: int = 0) -> ImageData:
    """``n`` binary images: noisy copies of ``classes`` random prototypes (labels = prototype)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(classes, dim, generator=g) < 0.3).float()
    labels = torch.arange(n) % classes
    flips = (torch.rand(n, dim, generator=g) < 0.05).float()
    images = (prototypes[labels] + flips) % 2
    return ImageData(images, labels, pixels="threshold")


def tiny_config(**sections) -> Config:
    """A small MLP config for fast tests; ``sections`` maps section -> {key: value}."""
    config = Config()
    config.model.hidden = [32]
    config.train.batch_size = 16
    config.data.pixels = "threshold"  # tiny data are binary
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    return config


def linear_gaussian(n=40, d=8, k=3, s=0.5, orthogonal=True, seed=0):
    """x = W z + b + s eps, z ~ N(0, I): log p(x) = log N(x; b, W W^T + s^2 I) exactly.

    With orthogonal columns of W the posterior precision I + W^T W / s^2 is diagonal, so the
    best diagonal Gaussian is the exact posterior and its ELBO equals log p(x).
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=g)
    if orthogonal:
        W = torch.linalg.qr(W)[0] * torch.tensor([2.0, 1.0, 0.5])[:k]
    b = torch.randn(d, generator=g)
    decoder = torch.nn.Linear(k, d)
    with torch.no_grad():
        decoder.weight.copy_(W), decoder.bias.copy_(b)
    vae = VAE(StandardNormalPrior(k), decoder, NormalLikelihood(s), num_data=n)
    marginal = dist.MultivariateNormal(b, covariance_matrix=W @ W.T + s**2 * torch.eye(d))
    x = marginal.sample((n,))
    return vae, W, b, s, x, marginal.log_prob(x)
