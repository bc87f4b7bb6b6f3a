"""Guides q(z | x): amortized (an encoder) and mean-field (free parameters per data point).

Every guide is an ``nn.Module`` whose ``forward(x, idx=None)`` is the Pyro guide
program (same arguments, site ``"z"`` and plate ``"data"`` as :meth:`VAE.model`), and
whose ``posterior(x, idx)`` returns q(z | x) with batch shape ``(B,)``, event ``(z_dim,)``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import nn
from pyro.distributions import constraints
from torch.distributions import transform_to

from .vae import data_plate


class Guide(nn.Module):
    """Base class: subclasses define ``posterior(x, idx) -> q(z | x)``.

    ``amortized``: q(z | x) is a function of x (an encoder), so new images need no fitting;
    guides with free parameters per data point (mean-field) set it to False.
    ``family``: the family of q (``"diagonal"`` or ``"full"`` Gaussians, ``"flow"``; ``"planar"``, per-image
    planar flows, exists only as a local fit), the family a local fit q* uses when the amortization gap is
    measured; None for other guides.
    """

    name = "guide"
    amortized = True
    family: str | None = None
    deterministic = False  # q(z | x) a point mass (a VQ-VAE's nearest code): one importance sample says all

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

    family = "diagonal"

    def __init__(self, encoder: nn.Module, z_dim: int, num_data: int):
        super().__init__(num_data)
        self.encoder = encoder
        self.loc_head = nn.Linear(encoder.out_features, z_dim)
        self.log_var_head = nn.Linear(encoder.out_features, z_dim)

    def posterior(self, x, idx=None):
        return self.base(self.encoder(x))

    def base(self, h: torch.Tensor) -> dist.Distribution:
        """N(loc(h), diag(exp(log_var(h)))) of encoder features ``h`` ``(B, features)``."""
        loc, scale = self.loc_head(h), (0.5 * self.log_var_head(h)).exp()  # (B, z_dim)
        return dist.Normal(loc, scale).to_event(1)


class AmortizedFlow(AmortizedNormal):
    """q(z | x): a diagonal Gaussian pushed through conditional flows on the encoder's features h(x).

    ``z_0 ~ N(loc(h), diag(exp(log_var(h))))``, ``z = f_T(... f_1(z_0; h) ...; h)``, so
    ``log q(z | x) = log N(z_0) - sum_t log |det df_t / dz_{t-1}|``. Each ``f_t`` is a
    :class:`pyro.distributions.transforms.ConditionalTransformModule` (an inverse autoregressive
    affine flow or a planar flow whose parameters come from h). With ``reverse_between`` (for
    autoregressive flows built in the identity order, as ``build_model`` does) the coordinates are
    reversed between flows, so that with two or more flows each coordinate depends on every other.
    Samples are scored through the transforms' cache of their last input (``rsample`` then
    ``log_prob`` of the same tensor), which is how Pyro's ELBOs and the importance sampler use q.
    There is no closed-form KL or mean: the ELBO uses one-sample KL estimates, and :func:`point`
    gives the flows applied to the base's mean.
    """

    family = "flow"  # a local q* picks its own features h_n: see pyro_vae.infer.local_fit.LocalFeatures

    def __init__(self, encoder: nn.Module, z_dim: int, num_data: int, flows: list, reverse_between: bool = False):
        super().__init__(encoder, z_dim, num_data)
        self.flows = nn.ModuleList(flows)
        self.reverse_between = reverse_between and z_dim > 1
        self.register_buffer("_reversed", torch.arange(z_dim - 1, -1, -1), persistent=False)

    def posterior(self, x, idx=None):
        return self.from_features(self.encoder(x))

    def from_features(self, h: torch.Tensor) -> dist.Distribution:
        """q(z | h): the base N(loc(h), diag(exp(log_var(h)))) through the flows conditioned on ``h``
        ``(B, features)``. The guide's family is this distribution over every h, whichever x gave it."""
        transforms = []
        for t, flow in enumerate(self.flows):
            if t and self.reverse_between:
                transforms.append(T.Permute(self._reversed))
            transforms.append(flow.condition(h))
        return dist.TransformedDistribution(self.base(h), transforms)


def point(q: dist.Distribution) -> torch.Tensor:
    """One code per image: E_q[z] where it has a closed form (the Gaussians); for a flow posterior
    (a ``TransformedDistribution``) the transforms applied to the base's mean, ``f(E[z_0])``; for discrete
    codes (:mod:`pyro_vae.models.discrete`) the most probable one, a code the decoder was trained on.

    Call it after the samples of ``q`` have been scored: it passes a new input through the
    transforms, which replaces the sample their cache holds."""
    if isinstance(q, dist.TransformedDistribution):
        z = q.base_dist.mean
        for transform in q.transforms:
            z = transform(z)
        return z
    return q.mode if getattr(q, "discrete", False) else q.mean


class AmortizedFullNormal(Guide):
    """q(z | x) = N(loc(x), L(x) L(x)^T), L = softplus_lower_cholesky(raw(x)): a full-covariance posterior.

    ``L = tril(raw, -1) + diag(softplus(diag(raw)))``, so L is always a valid factor (softplus,
    not exp, keeps early steps from blowing the scales up).
    """

    family = "full"

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
    the minibatch rows and :func:`pyro_vae.infer.optim.adam` updates only those (O(batch) per
    step; other rows stay bit-identical). Memory: 2 x N x z_dim numbers (plus Adam's two
    moments of the same size).

    :param init_loc: ``(N, z_dim)`` initial means (zeros when omitted).
    :param init_scale: initial standard deviation, a number or an ``(N, z_dim)`` tensor.
    :param sparse: row-sparse gradients (for minibatch training); dense for full-batch fits.
    """

    amortized, family = False, "diagonal"

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


def is_amortized(guide: Guide) -> bool:
    """Whether the guide can encode new images directly (no local fitting needed)."""
    return guide.amortized

