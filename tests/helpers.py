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


def linear_gaussian_conditional(model_class=None, guide_factory=None):
    """``(vae, guide, x, y, exact log p(x | y) per image, (w, b, s))`` for x | z, y ~ N(W z + B y, s^2 I),
    z ~ N(0, I): p(x | y) = N(B y, W W^T + s^2 I). W's columns are orthogonal, so the posterior
    N(A (x - B y), S), S = (I + W^T W / s^2)^-1, A = S W^T / s^2, is diagonal, and the guide (a linear head
    on [x, y]) holds it exactly. ``model_class(prior, decoder, likelihood)`` and ``guide_factory(encoder,
    z_dim)`` build other models of the same nets (default: ConditionalVAE, ConditionalNormal); D = 6,
    z = 2, C = 3 classes, 8 images."""
    from torch import nn

    from pyro_vae.models.conditional import ConditionalNormal, ConditionalVAE, one_hot
    from pyro_vae.models.likelihoods import NormalLikelihood
    from pyro_vae.models.priors import StandardNormalPrior

    d, z_dim, classes, s = 6, 2, 3, 0.5

    class Identity(nn.Identity):
        out_features = d + classes

    torch.manual_seed(0)
    w = torch.linalg.qr(torch.randn(d, z_dim))[0] * torch.tensor([2.0, 0.7])  # orthogonal columns, two lengths
    b = torch.randn(d, classes)
    decoder = nn.Linear(z_dim + classes, d, bias=False)
    decoder.weight.data = torch.cat([w, b], 1)
    parts = (StandardNormalPrior(z_dim), decoder, NormalLikelihood(s))
    vae = model_class(*parts) if model_class else ConditionalVAE(*parts, num_data=8, num_classes=classes)
    cov_post = torch.linalg.inv(torch.eye(z_dim) + w.T @ w / s**2)
    assert torch.allclose(cov_post, torch.diag(cov_post.diagonal()), atol=1e-6)  # the exact posterior is diagonal
    a = cov_post @ w.T / s**2
    guide = guide_factory(Identity(), z_dim) if guide_factory else ConditionalNormal(Identity(), z_dim, num_data=8)
    guide.loc_head.weight.data = torch.cat([a, -a @ b], 1)  # A (x - B y) from [x, y]
    guide.loc_head.bias.data.zero_()
    guide.log_var_head.weight.data.zero_()
    guide.log_var_head.bias.data = cov_post.diagonal().log()
    y = one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 2, 1]), classes)
    x = torch.randn(8, d) * 2
    marginal = dist.MultivariateNormal(y @ b.T, covariance_matrix=w @ w.T + s**2 * torch.eye(d))
    return vae, guide, x, y, marginal.log_prob(x), (w, b, s)
