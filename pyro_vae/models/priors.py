"""Priors p(z): small modules whose ``forward()`` returns a distribution over one z.

Every prior's distribution has ``batch_shape == ()`` and ``event_shape == (z_dim,)``;
the model's ``data`` plate broadcasts it over the minibatch. Fixed tensors are buffers
and learned ones parameters, so ``.to(device)`` moves them and ``pyro.module`` trains them.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.kl import kl_divergence
from torch import nn
from pyro.nn import AutoRegressiveNN
from torch.distributions import constraints, transform_to


DEFAULT_CORRELATION = 0.8  # covariance left empty: Sigma = (1 - rho) I + rho 1 1^T


def equicorrelation(z_dim: int, rho: float = DEFAULT_CORRELATION) -> list[list[float]]:
    """Sigma_ij = 1 if i = j else rho: unit variances, every pair correlated by rho (z = 2: [[1, .8], [.8, 1]]).

    Positive-definite for -1 / (z_dim - 1) < rho < 1 (eigenvalues 1 - rho and 1 + (z_dim - 1) rho).
    """
    return [[1.0 if i == j else rho for j in range(z_dim)] for i in range(z_dim)]


def check_covariance(covariance, z_dim: int, name: str = "covariance") -> torch.Tensor:
    """Return ``covariance`` as a float tensor after checking it is a valid z_dim x z_dim covariance.

    Raises :class:`ValueError` naming the matrix and the reason: not a matrix, not
    square, wrong size, not symmetric, or not positive-definite.
    """
    try:
        sigma = torch.as_tensor(covariance, dtype=torch.float64)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise ValueError(
            f"{name} = {covariance!r} is not a matrix of numbers; "
            "give a list of rows, for example [[1.0, 0.8], [0.8, 1.0]]"
        ) from None
    if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(
            f"{name} = {covariance!r} is not square (shape {tuple(sigma.shape)}); "
            f"give a {z_dim} x {z_dim} matrix"
        )
    if sigma.shape[0] != z_dim:
        raise ValueError(
            f"{name} = {covariance!r} is {sigma.shape[0]} x {sigma.shape[0]} but z_dim = {z_dim}; "
            f"give a {z_dim} x {z_dim} matrix or change z_dim"
        )
    if not torch.isfinite(sigma).all():
        raise ValueError(f"{name} = {covariance!r} has non-finite entries")
    if not torch.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-8):
        raise ValueError(f"{name} = {covariance!r} is not symmetric; make entry [i][j] equal [j][i]")
    _, info = torch.linalg.cholesky_ex(sigma)
    if info.item() != 0:
        smallest = torch.linalg.eigvalsh(sigma).min().item()
        raise ValueError(
            f"{name} = {covariance!r} is not positive-definite (smallest eigenvalue "
            f"{smallest:.4g}); use a symmetric matrix with positive eigenvalues, "
            "for example [[1.0, 0.8], [0.8, 1.0]]"
        )
    factor, info = torch.linalg.cholesky_ex(sigma.to(torch.float32))  # the precision training uses
    if info.item() != 0 or not torch.isfinite(factor).all():
        raise ValueError(
            f"{name} = {covariance!r} does not fit in float32, the precision of training (an entry or "
            "its Cholesky factor overflows or vanishes, or it is too near singular); rescale it to "
            "entries of moderate size, for example [[1.0, 0.8], [0.8, 1.0]]"
        )
    return sigma


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class CorrelatedPrior(nn.Module):
    """p(z) = N(loc, Sigma), as ``MultivariateNormal(loc, scale_tril=L)`` with L = cholesky(Sigma).

    :param covariance: the z_dim x z_dim matrix Sigma (checked by :func:`check_covariance`).
    :param loc: the mean; zeros when omitted.
    """

    def __init__(self, covariance, loc: Sequence[float] | None = None):
        super().__init__()
        sigma = torch.as_tensor(covariance, dtype=torch.float64)
        z_dim = sigma.shape[-1] if sigma.dim() == 2 else 0
        sigma = check_covariance(covariance, z_dim)
        try:
            loc_t = torch.zeros(z_dim) if loc is None or len(loc) == 0 else torch.as_tensor(loc, dtype=torch.float32)
        except (TypeError, ValueError, OverflowError, RuntimeError):
            raise ValueError(
                f"loc = {loc!r} is not a list of numbers; give {z_dim} numbers, or [] for zeros"
            ) from None
        if loc_t.shape != (z_dim,):
            raise ValueError(
                f"loc has {loc_t.numel()} entries but the covariance is {z_dim} x {z_dim}; "
                f"give {z_dim} numbers or leave loc empty for zeros"
            )
        self.z_dim = z_dim
        self.register_buffer("loc", loc_t)
        self.register_buffer("scale_tril", torch.linalg.cholesky(sigma).to(torch.float32))
        # the ELBO's KL term starts near KL(N(0, I) || p(z)): it must be finite in float32
        kl = kl_divergence(dist.Normal(torch.zeros(z_dim), torch.ones(z_dim)).to_event(1), self())
        if not torch.isfinite(kl):
            raise ValueError(
                f"loc = {loc!r} with covariance = {covariance!r} lies so far from N(0, I) that "
                f"KL(N(0, I) || p(z)) is {kl.item()} in float32; use a loc and covariance of moderate size"
            )

    @property
    def covariance(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.T

    def forward(self) -> dist.Distribution:
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)


class LearnedPrior(nn.Module):
    """p(z) = N(loc, L L^T) with loc and L learned; L = lower_cholesky(raw) keeps it a valid factor.

    ``lower_cholesky(raw) = tril(raw, -1) + diag(exp(diag(raw)))``; it starts at N(0, I).
    """

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.raw_scale_tril = nn.Parameter(torch.zeros(z_dim, z_dim))

    @property
    def scale_tril(self) -> torch.Tensor:
        return transform_to(constraints.lower_cholesky)(self.raw_scale_tril)

    def forward(self) -> dist.Distribution:
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)


class DiagonalNormalMixture(dist.TorchDistribution):
    """sum_k pi_k N(z; loc_k, diag(scale_k^2)) whose density is two matrix products over the K components:

    ``-2 log N(z; m_k, s_k) = z^2 . s_k^-2 - 2 z . (m_k s_k^-2) + m_k^2 . s_k^-2 + 2 sum log s_k + D log 2 pi``,

    the square computed in float64 (it cancels: float32 loses up to ~0.1 nat with scales near 0.01).
    It equals ``MixtureSameFamily(Categorical(logits), Normal(loc, scale).to_event(1))`` without the
    ``(N, K, D)`` tensor the latter broadcasts, which makes a 500-component prior's density cost
    about what the decoder does inside importance sampling.

    :param logits: mixture weights' logits ``(K,)``.
    :param loc, scale: components ``(K, D)``.
    :param batch_shape: copies of the one mixture (a plate's), sharing its parameters.
    """

    arg_constraints = {"logits": constraints.real_vector, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real_vector

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, batch_shape=(),
                 validate_args=None):
        if logits.dim() != 1 or loc.shape != scale.shape or loc.shape[:1] != logits.shape:
            raise ValueError(f"DiagonalNormalMixture needs logits (K,) and loc, scale (K, D), got "
                             f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}")
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=validate_args)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(z)
        wide = torch.float64
        loc, scale = self.loc.to(wide), self.scale.to(wide)
        precision = scale.pow(-2)  # (K, D)
        flat = z.reshape(-1, z.shape[-1]).to(wide)  # (N, D)
        offset = (torch.log_softmax(self.logits.to(wide), -1) - scale.log().sum(-1)
                  - 0.5 * (z.shape[-1] * math.log(2 * math.pi) + (loc.pow(2) * precision).sum(-1)))  # (K,)
        log_joint = torch.addmm(offset, flat.pow(2), precision.T, alpha=-0.5)
        out = torch.promote_types(z.dtype, self.loc.dtype)
        log_joint = torch.addmm(log_joint, flat, (loc * precision).T).to(out)  # (N, K), past the cancellation
        shape = torch.broadcast_shapes(z.shape[:-1], self.batch_shape)
        return torch.logsumexp(log_joint, dim=-1).reshape(z.shape[:-1]).expand(shape)

    @property
    def mean(self) -> torch.Tensor:
        """sum_k pi_k m_k."""
        return self._moments()[0].expand(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> torch.Tensor:
        """sum_k pi_k (s_k^2 + m_k^2) - mean^2, per coordinate."""
        mean, second = self._moments()
        return (second - mean.pow(2)).expand(self.batch_shape + self.event_shape)

    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's first and second moments per coordinate, ``(D,)`` each."""
        weights = torch.softmax(self.logits, -1)
        return weights @ self.loc, weights @ (self.scale.pow(2) + self.loc.pow(2))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits).sample(torch.Size(sample_shape) + self.batch_shape)
            return torch.normal(self.loc[k], self.scale[k])

    def expand(self, batch_shape, _instance=None):
        """The same mixture for every index of ``batch_shape`` (the components stay shared)."""
        return DiagonalNormalMixture(self.logits, self.loc, self.scale, batch_shape, self._validate_args)


def mixture(logits: torch.Tensor, components: dist.Distribution) -> dist.Distribution:
    """sum_k softmax(logits)_k components_k: a :class:`DiagonalNormalMixture` when the components are
    diagonal Gaussians (``Normal(loc, scale).to_event(1)`` of batch ``(K,)``), else ``MixtureSameFamily``."""
    base = components.base_dist if isinstance(components, dist.Independent) else None
    if isinstance(base, dist.Normal) and components.reinterpreted_batch_ndims == 1 and base.loc.dim() == 2:
        return DiagonalNormalMixture(logits, base.loc, base.scale)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; loc_k, diag(scale_k^2)), with pi, loc, scale learned.

    Component means start at random draws from N(0, I) (seeded by the run's seed),
    scales at 1, weights uniform. There is no closed-form KL against this prior: the
    KL reported for it is a Monte-Carlo estimate.
    """

    def __init__(self, z_dim: int, components: int = 10):
        super().__init__()
        self.z_dim = z_dim
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))

    def forward(self) -> dist.Distribution:
        return DiagonalNormalMixture(self.logits, self.locs, self.log_scales.exp())


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's posterior at K learned pseudo-inputs u_k (the
    "variational mixture of posteriors" of Tomczak & Welling 2018).

    ``u_k = sigmoid(raw_k)`` keeps the pseudo-inputs in the pixel range; ``raw`` starts at draws
    from N(logit(0.05), 0.3^2) (dark images, as MNIST's are). The guide's ``posterior`` is held as
    a plain callable, not a submodule: the encoder's parameters belong to the guide, so Pyro
    registers and the checkpoint saves them once, while the prior term's gradient still reaches
    them. :meth:`attach` gives it the posterior (``build_model`` does). No closed-form KL exists
    against it: the ELBO uses one-sample estimates.

    :param num_pixels: the size of one pseudo-input (an image).
    """

    def __init__(self, z_dim: int, components: int = 500, num_pixels: int = 784, posterior=None):
        super().__init__()
        self.z_dim = z_dim
        self.raw_inputs = nn.Parameter(math.log(0.05 / 0.95) + 0.3 * torch.randn(components, num_pixels))
        self.attach(posterior)

    def attach(self, posterior) -> None:
        """Use ``posterior(x) -> q(z | x)`` (batch ``(B,)``, event ``(z_dim,)``) as the mixture's components."""
        object.__setattr__(self, "_posterior", posterior)  # not a submodule: see the class docstring

    @property
    def posterior_owner(self) -> nn.Module | None:
        """The module whose ``posterior`` the mixture uses (the guide), if it is a bound method of one."""
        owner = getattr(self._posterior, "__self__", None)
        return owner if isinstance(owner, nn.Module) else None

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs ``(K, num_pixels)`` in [0, 1]."""
        return torch.sigmoid(self.raw_inputs)

    def forward(self) -> dist.Distribution:
        if self._posterior is None:
            raise RuntimeError("this VampPrior has no posterior to mix: attach a guide's posterior first "
                               "(prior.attach(guide.posterior), as build_model does)")
        components = self._posterior(self.pseudo_inputs)  # batch (K,), event (z_dim,)
        weights = self.raw_inputs.new_zeros(self.raw_inputs.shape[0])  # uniform
        return mixture(weights, components)


class FlowPrior(nn.Module):
    """p(z): N(0, I) through learned masked autoregressive affine flows (MAF, Papamakarios et al. 2017),
    written in the density direction. Each flow maps z to u with
    ``u_i = mu_i(z_<i) + exp(s_i(z_<i)) z_i`` (Pyro's ``AffineAutoregressive``, one network pass),
    so ``log p(z) = log N(f(z); 0, I) + log |det df/dz|`` costs one pass per flow, for any batch of
    codes; drawing z ~ p(z) inverts the flows, z_dim passes each (only figures draw from the prior).
    The coordinate order is reversed from one flow to the next (fixed orders, saved with the weights).
    There is no closed-form KL against it: the ELBO uses one-sample estimates.

    :param hidden: each flow network's hidden widths, each at least ``z_dim`` (a MADE needs them).
    """

    def __init__(self, z_dim: int, flows: int = 2, hidden: Sequence[int] = ()):
        super().__init__()
        hidden = list(hidden) or [10 * z_dim] * 2
        if flows < 1 or any(width < z_dim for width in hidden):
            raise ValueError(f"a flow prior needs flows >= 1 and hidden widths >= z_dim = {z_dim}, got flows = "
                             f"{flows}, hidden = {hidden}")
        self.z_dim = z_dim
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        orders = (torch.arange(z_dim), torch.arange(z_dim - 1, -1, -1))
        self.flows = nn.ModuleList(
            T.AffineAutoregressive(AutoRegressiveNN(z_dim, hidden, permutation=orders[t % 2])) for t in range(flows))

    def forward(self) -> dist.Distribution:
        # TransformedDistribution maps base draws to z: the inverse of z -> u, last flow first
        inverses = [flow.inv for flow in reversed(self.flows)]
        return dist.TransformedDistribution(dist.Normal(self.loc, self.scale).to_event(1), inverses)
