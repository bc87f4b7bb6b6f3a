"""Image completion (Sohn, Lee & Yan 2015; Pyro's CVAE tutorial): a digit's hidden quadrants from the
given ones.

The given pixels x_g and the hidden ones x_h split each image by :func:`quadrant_mask`.

Baseline (a deterministic network f):   x_h ~ Bernoulli(sigmoid(f(x_g)))_h
CVAE model:   z ~ p(z | x_g) = N(mu, diag sigma^2)(prior_net(x_g filled with f's guess)),
              x_h ~ Bernoulli(sigmoid(g(z)))_h
CVAE guide:   q(z | x) = N(mu, diag sigma^2)(recognition_net(x)),   x = x_g and x_h together

    log p(x_h | x_g) >= E_q[log p(x_h | z)] - KL(q(z | x) || p(z | x_g)),

the bound the importance sampler tightens with q as proposal. The baseline is fitted first and
frozen: the CVAE's prior sees its guess, no gradient reaches it. The images travel whole,
``model(x, idx)``, ``svi.step(x, idx)``: each program reads x_g and x_h from x by the mask.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .guides import AmortizedNormal
from .likelihoods import log_density
from .vae import VAE, data_plate

HIDDEN_FILL = -1.0  # the value a network sees at the pixels it is not given (Pyro's CVAE tutorial)
QUADRANTS = {1: ("bottom_left",), 2: ("top_left", "bottom_left"), 3: ("top_left", "top_right", "bottom_left")}


def quadrant_mask(given: int, side: int = 28) -> torch.Tensor:
    """The given pixels of a ``side x side`` image, flat ``(side * side,)`` bools: with 1 quadrant the
    bottom-left one, 2 the left half, 3 all but the bottom-right one (the tutorial's choice)."""
    if given not in QUADRANTS:
        raise ValueError(f"given quadrants must be one of {sorted(QUADRANTS)}, got {given!r}")
    if side % 2:
        raise ValueError(f"an image of side {side} has no quadrants of equal size; use an even side")
    half = side // 2
    mask = torch.zeros(side, side, dtype=torch.bool)
    corners = {"top_left": (0, 0), "top_right": (0, half), "bottom_left": (half, 0)}
    for name in QUADRANTS[given]:
        row, col = corners[name]
        mask[row:row + half, col:col + half] = True
    return mask.reshape(-1)


def hide(x: torch.Tensor, given: torch.Tensor, fill: torch.Tensor | float = HIDDEN_FILL) -> torch.Tensor:
    """``x`` at the ``given`` pixels, ``fill`` (a number or images broadcasting against x) elsewhere."""
    return torch.where(given, x, torch.as_tensor(fill, dtype=x.dtype, device=x.device))


class CompletionBaseline(nn.Module):
    """The deterministic baseline: logits of the hidden pixels ``f(x with x_h hidden)``; its Pyro program
    has no latent, so ``Trace_ELBO`` with :meth:`guide` is exactly -log p(x_h | x_g) (scaled to N).

    :param net: maps ``(B, D)`` images (hidden pixels at :data:`HIDDEN_FILL`) to ``(B, D)`` logits.
    :param likelihood: maps logits to p(x | .) (event_dim 1), as the VAE's.
    :param given: the given pixels, :func:`quadrant_mask`.
    """

    def __init__(self, net: nn.Module, likelihood: nn.Module, given: torch.Tensor, num_data: int):
        super().__init__()
        self.net, self.likelihood, self.num_data = net, likelihood, num_data
        self.register_buffer("given", given.clone())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(hide(x, self.given))

    def guess(self, x: torch.Tensor) -> torch.Tensor:
        """x at the given pixels, the baseline's mean at the hidden ones."""
        return hide(x, self.given, self.likelihood.mean(self.logits(x)))

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_h | x_g) per image ``(B,)`` (for grey pixels under a Bernoulli: minus the BCE)."""
        return self.likelihood(self.logits(x)[..., ~self.given]).log_prob(x[..., ~self.given])

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        pyro.module("baseline", self)
        with data_plate(x, idx, self.num_data):
            pyro.sample("x_hidden", self.likelihood(self.logits(x)[..., ~self.given]), obs=x[..., ~self.given])

    def guide(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        """Nothing to infer: the baseline has no latent."""


class CompletionCVAE(VAE):
    """p(x_h, z | x_g) = p(z | x_g) p(x_h | z): the prior net reads x_g and the frozen baseline's guess.

    :param prior_net: an :class:`~pyro_vae.models.guides.AmortizedNormal` whose ``posterior(image)`` is
        p(z | x_g) of the image filled with the baseline's guess (its ``base`` heads give the Gaussian).
    :param decoder: maps z ``(..., z_dim)`` to the logits of every pixel ``(..., D)``; only the hidden
        ones are scored.
    :param baseline: a :class:`CompletionBaseline`, fitted before the CVAE trains (held, never trained here).
    """

    task = "completion"

    def __init__(self, prior_net: AmortizedNormal, decoder: nn.Module, likelihood: nn.Module,
                 baseline: CompletionBaseline, num_data: int):
        super().__init__(prior=None, decoder=decoder, likelihood=likelihood, num_data=num_data)
        self.prior_net, self.baseline = prior_net, baseline

    @property
    def given(self) -> torch.Tensor:
        return self.baseline.given

    @property
    def z_dim(self) -> int:
        return self.prior_net.loc_head.out_features

    def prior_for(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p(z | x_g): the prior net on x_g filled with the baseline's guess."""
        with torch.no_grad():
            filled = self.baseline.guess(x)
        return self.prior_net.posterior(filled)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_h | z), summed over the hidden pixels, shape ``z.shape[:-1]``."""
        hidden = ~self.given
        return log_density(self.likelihood, self.logits(z)[..., hidden], x[..., hidden])

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """The Pyro model of x_h given x_g (the baseline is not registered: nothing trains it here)."""
        pyro.module("prior_net", self.prior_net)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        hidden = ~self.given
        with data_plate(x, idx, self.num_data):
            z = pyro.sample("z", self.prior_for(x))
            pyro.sample("x_hidden", self.likelihood(self.logits(z)[..., hidden]), obs=x[..., hidden])

    forward = model

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x's given pixels, E[x_h | z] at the hidden ones (the decoder is never scored on the given ones)."""
        return hide(x, self.given, self.decode_mean(z))

    def sample_prior(self, num_samples: int) -> torch.Tensor:
        raise ValueError("a completion CVAE has no unconditional prior: draw z from prior_for(x) of given images")

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Completions of images ``x`` ``(B, D)``: x_g kept, x_h the decoder's mean for z ~ p(z | x_g);
        shape ``(num_samples, B, D)``."""
        z = self.prior_for(x).sample((num_samples,))
        return hide(x, self.given, self.decode_mean(z))
