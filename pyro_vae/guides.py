"""Guides q(z | x): amortized (an encoder) and mean-field (free parameters per data point).

Every guide is an ``nn.Module`` whose ``forward(x, idx=None)`` is the Pyro guide
program (same arguments, site ``"z"`` and plate ``"data"`` as :meth:`VAE.model`), and
whose ``posterior(x, idx)`` returns q(z | x) with batch shape ``(B,)``, event ``(z_dim,)``.
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from pyro.distributions import constraints
from torch.distributions import transform_to

from .config import ConfigError
from .vae import VAE, data_plate


class Guide(nn.Module):
    """Base class: subclasses define ``posterior(x, idx) -> q(z | x)``."""

    name = "guide"

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data

    def posterior(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> dist.Distribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        """The Pyro guide: z ~ q(z | x) inside the ``data`` plate."""
        pyro.module(self.name, self)
        with data_plate(x, idx, self.num_data):
            pyro.sample("z", self.posterior(x, idx))


class AmortizedNormal(Guide):
    """q(z | x) = N(loc(x), diag(exp(log_var(x)))), two linear heads on an encoder body."""

    def __init__(self, encoder: nn.Module, z_dim: int, num_data: int):
        super().__init__(num_data)
        self.encoder = encoder
        self.loc_head = nn.Linear(encoder.out_features, z_dim)
        self.log_var_head = nn.Linear(encoder.out_features, z_dim)

    def posterior(self, x, idx=None):
        h = self.encoder(x)  # (B, features)
        loc, scale = self.loc_head(h), (0.5 * self.log_var_head(h)).exp()  # (B, z_dim)
        return dist.Normal(loc, scale).to_event(1)


class AmortizedFullNormal(Guide):
    """q(z | x) = N(loc(x), L(x) L(x)^T), L = softplus_lower_cholesky(raw(x)): a full-covariance posterior.

    ``L = tril(raw, -1) + diag(softplus(diag(raw)))``, so L is always a valid factor (softplus,
    not exp, keeps early steps from blowing the scales up).
    """

    def __init__(self, encoder: nn.Module, z_dim: int, num_data: int):
        super().__init__(num_data)
        self.encoder = encoder
        self.z_dim = z_dim
        self.loc_head = nn.Linear(encoder.out_features, z_dim)
        self.tril_head = nn.Linear(encoder.out_features, z_dim * (z_dim + 1) // 2)
        self.register_buffer("_tril_rows", torch.tril_indices(z_dim, z_dim)[0], persistent=False)
        self.register_buffer("_tril_cols", torch.tril_indices(z_dim, z_dim)[1], persistent=False)

    def posterior(self, x, idx=None):
        h = self.encoder(x)
        raw = h.new_zeros(h.shape[0], self.z_dim, self.z_dim)  # (B, z_dim, z_dim)
        raw[:, self._tril_rows, self._tril_cols] = self.tril_head(h)
        scale_tril = transform_to(constraints.softplus_lower_cholesky)(raw)
        return dist.MultivariateNormal(self.loc_head(h), scale_tril=scale_tril)


class MeanField(Guide):
    """q(z_n) = N(loc_n, diag(scale_n^2)) with free (loc_n, log scale_n) for each of N points.

    Rows are read with ``F.embedding(idx, table, sparse=True)``: the gradient touches only
    the minibatch rows and :func:`pyro_vae.optim.adam` updates only those (O(batch) per
    step; other rows stay bit-identical). Memory: 2 x N x z_dim numbers (plus Adam's two
    moments of the same size).

    :param init_loc: ``(N, z_dim)`` initial means (zeros when omitted).
    :param init_scale: initial standard deviation, a number or an ``(N, z_dim)`` tensor.
    :param sparse: row-sparse gradients (for minibatch training); dense for full-batch fits.
    """

    def __init__(
        self,
        num_data: int,
        z_dim: int,
        init_loc: torch.Tensor | None = None,
        init_scale: float | torch.Tensor = 0.1,
        sparse: bool = True,
    ):
        super().__init__(num_data)
        if init_loc is None:
            init_loc = torch.zeros(num_data, z_dim)
        log_scale = torch.log(torch.as_tensor(init_scale, dtype=init_loc.dtype)).expand(num_data, z_dim)
        self.loc = nn.Parameter(init_loc.detach().clone())  # (N, z_dim)
        self.log_scale = nn.Parameter(log_scale.detach().clone().to(init_loc.device))  # (N, z_dim)
        self.sparse = sparse

    def posterior(self, x, idx=None):
        if idx is None:
            if x.shape[0] != self.num_data:
                raise ValueError(
                    f"the mean_field guide holds parameters for {self.num_data} points but got "
                    f"{x.shape[0]} images without indices; pass idx, or fit new images with "
                    "pyro_vae.fit_local"
                )
            idx = torch.arange(self.num_data, device=x.device)
        loc = F.embedding(idx, self.loc, sparse=self.sparse)  # (B, z_dim)
        scale = F.embedding(idx, self.log_scale, sparse=self.sparse).exp()
        return dist.Normal(loc, scale).to_event(1)


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """Hold a module's parameters fixed (no gradients; Pyro then leaves them out of SVI)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    training = module.training
    module.train(False)
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(training)


def _diagonal_of(q: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and marginal standard deviations of a guide's q(z|x), shapes ``(B, z_dim)``."""
    return q.mean, q.variance.sqrt()


def fit_local(
    vae: VAE,
    x: torch.Tensor,
    init: Guide | None = None,
    steps: int = 300,
    lr: float = 0.05,
    init_scale: float = 0.1,
    num_particles: int = 1,
    batch_size: int = 1000,
) -> MeanField:
    """Fit per-datapoint Gaussians q(z_n) = N(loc_n, diag scale_n^2) to new images, decoder frozen.

    max over (loc_n, scale_n) of ELBO(x_n) = E_q[log p(x_n | z) + log p(z) - log q(z)] by SVI
    (Adam, ``steps`` full-batch steps per chunk of ``batch_size`` images), with the model's
    parameters held fixed. With ``init`` an amortized guide, each q starts at the
    encoder's mean and marginal scales (the q* of Cremer et al. 2018); otherwise at
    N(0, init_scale^2 I).

    :returns: a :class:`MeanField` guide over the rows of ``x`` (use it with ``idx=None``).
    """
    locs, scales = [], []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        if init is not None:
            with torch.no_grad():
                loc0, scale0 = _diagonal_of(init.posterior(chunk))
        else:
            loc0 = chunk.new_zeros(chunk.shape[0], vae.z_dim)
            scale0 = torch.full_like(loc0, init_scale)
        local = MeanField(chunk.shape[0], vae.z_dim, loc0, scale0, sparse=False)
        local.name = "local_guide"
        with pyro.get_param_store().scope(), _frozen(vae):
            svi = SVI(
                vae.model,
                local,
                pyro.optim.Adam({"lr": lr}),
                Trace_ELBO(num_particles=num_particles),
            )
            for _ in range(steps):
                svi.step(chunk)
        locs.append(local.loc.detach())
        scales.append(local.log_scale.detach().exp())
    return MeanField(x.shape[0], vae.z_dim, torch.cat(locs), torch.cat(scales), sparse=False)


GUIDES = ("amortized", "amortized_full", "mean_field")


def build_guide(
    kind: str, encoder: nn.Module, z_dim: int, num_data: int, init_scale: float = 0.1
) -> Guide:
    """The guide named ``kind`` (one of :data:`GUIDES`); ``mean_field`` ignores the encoder."""
    if kind == "amortized":
        return AmortizedNormal(encoder, z_dim, num_data)
    if kind == "amortized_full":
        return AmortizedFullNormal(encoder, z_dim, num_data)
    if kind == "mean_field":
        return MeanField(num_data, z_dim, init_scale=init_scale)
    raise ConfigError(f"unknown guide.type {kind!r}; valid guides: {', '.join(GUIDES)}")


def is_amortized(guide: Guide) -> bool:
    """Whether the guide can encode new images directly (no local fitting needed)."""
    return not isinstance(guide, MeanField)

