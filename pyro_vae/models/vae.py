"""The generative model p(x, z) = p(z) p(x | z) as a Pyro program."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from .likelihoods import log_density


def data_plate(x: torch.Tensor, idx: torch.Tensor | None, num_data: int) -> pyro.plate:
    """The ``data`` plate: rows ``idx`` subsampled from ``num_data`` points, or all of ``x``.

    With ``idx`` the log-likelihood of the minibatch is scaled by ``num_data / len(idx)``,
    so the loss estimates the full-data -ELBO; without it the plate is ``x`` itself.
    """
    if idx is None:
        return pyro.plate("data", x.shape[0])
    return pyro.plate("data", size=num_data, subsample=idx)


class VAE(nn.Module):
    """p(x, z) = p(z) p(x | z):  z ~ prior(),  x ~ likelihood(decoder(z)).

    :param prior: a module whose ``forward()`` returns p(z) (event_dim 1).
    :param decoder: any ``nn.Module`` mapping z ``(B, z_dim)`` to logits ``(B, D)``.
    :param likelihood: a module mapping logits to p(x|z) (event_dim 1).
    :param num_data: N, the training-set size that minibatches are scaled to.
    """

    labels = "none"  # the role of a label y: "input" (a conditional VAE), "latent" (M2); none here
    task = "generation"  # what x is to the model: all of it generated ("completion": the hidden pixels given the rest)

    @property
    def conditional(self) -> bool:
        """Whether the decoder takes a label y beside z (``logits(z, y)``)."""
        return self.labels != "none"

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: nn.Module, num_data: int):
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.num_data = num_data

    @property
    def z_dim(self) -> int:
        return self.prior.z_dim

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """The Pyro model; ``x`` is ``(B, D)``, ``idx`` the rows' indices in the training set, ``y`` the
        one-hot labels ``(B, C)`` a conditional VAE's decoder takes (none here)."""
        pyro.module("vae", self)
        with data_plate(x, idx, self.num_data):
            z = pyro.sample("z", self.prior())  # (B, z_dim)
            pyro.sample("x", self.likelihood(self.logits(z, y)), obs=x)

    forward = model

    def prior_for(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """p(z) for the rows ``x`` (``(B, D)``): the evaluators score codes under it. Here the one prior of
        every image; a model whose prior reads x (image completion: p(z | x_g)) returns it per row."""
        return self.prior()

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z) (log p(x | z, y)) summed over the pixels for codes ``z`` ``(..., z_dim)``, shape
        ``z.shape[:-1]``; ``x`` and ``y`` broadcast against z's leading shape (the codes are decoded as one
        batch of rows)."""
        lead = z.shape[:-1]
        rows = None if y is None else y.expand(*lead, y.shape[-1]).reshape(-1, y.shape[-1])
        logits = self.logits(z.reshape(-1, z.shape[-1]), rows).reshape(*lead, -1)
        return log_density(self.likelihood, logits, x, overwrite=True)  # the logits are ours alone

    def logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's output for codes ``z`` ``(..., z_dim)``: the parameters of p(x | z).

        :param y: labels, for a conditional VAE only (this one refuses them)."""
        if y is not None:
            raise ValueError("this VAE is not conditional: it takes no labels y (build a ConditionalVAE)")
        return self.decoder(z)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] (E[x | z, y] for a conditional VAE) for codes ``(..., z_dim)``: the images the decoder draws."""
        return self.likelihood.mean(self.logits(z, y))

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """What the figures show beside images ``x`` for their codes ``z``: E[x | z] (E[x | z, y])."""
        return self.decode_mean(z, y)

    @torch.no_grad()
    def sample_prior(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` codes z ~ p(z), shape ``(num_samples, z_dim)``."""
        return self.prior().sample((num_samples,))
