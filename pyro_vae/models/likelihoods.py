"""Likelihoods p(x|z) built from decoder logits; each returns a distribution with event_dim 1.

``bernoulli`` on binary pixels is a true likelihood. On grey values in [0, 1] its
``log_prob`` is minus the binary cross-entropy (the reference experiments' loss), which
is *not* a normalised density: metrics computed that way are labelled ``bce``.
``continuous_bernoulli`` is the normalised density for pixels in [0, 1]; ``normal`` a
Gaussian around the decoder output with a fixed or learned scale.
"""

from __future__ import annotations

import contextlib

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)).

    :param grey_values: the data are grey values, not bits: skip the support check
        (log_prob is then -BCE, a loss rather than a log-density).
    """

    def __init__(self, grey_values: bool = False):
        super().__init__()
        self.grey_values = grey_values

    @property
    def convention(self) -> str:
        return "bce" if self.grey_values else "log_likelihood"

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        validate = False if self.grey_values else None
        return dist.Bernoulli(logits=logits, validate_args=validate).to_event(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def log_density(likelihood: nn.Module, logits: torch.Tensor, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """log p(x | z) summed over pixels, shape ``logits.shape[:-1]`` (``x`` broadcasts against ``logits``).

    Binary pixels under a Bernoulli take one fused pass,
    ``sum_d log sigmoid((2 x_d - 1) logits_d)`` (= x log sigmoid(l) + (1 - x) log sigmoid(-l) for x in {0, 1}),
    (pixels other than 0 and 1 raise ``ValueError``, except in a graph compiled inside :func:`pixels_checked`,
    whose caller checked them); anything else is ``likelihood(logits).log_prob(x)``.
    Without gradients (the evaluators) log sigmoid is :func:`log_sigmoid_`, in place on the signed logits,
    about twice as fast on a CPU as ``F.logsigmoid``; in a compiled graph, :func:`blocked_log_sigmoid_sum`.

    :param overwrite: the logits are the caller's own temporary (a decoder's output): without gradients the
        signed logits are written over them, one buffer and one pass of K x B x D values fewer.
    """
    if isinstance(likelihood, BernoulliLikelihood) and not likelihood.grey_values:
        compiling = torch.compiler.is_compiling()
        if not (compiling and _pixels_checked):  # (a check on values would split a compiled graph)
            check_binary(x)
        sign = 2 * x - 1
        if torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad):
            return F.logsigmoid(sign * logits).sum(-1)
        if compiling and logits.dtype in (torch.float32, torch.float64):
            return blocked_log_sigmoid_sum(sign * logits)
        in_place = (overwrite and torch.broadcast_shapes(logits.shape, x.shape) == logits.shape
                    and torch.result_type(logits, sign) == logits.dtype)  # (float64 pixels keep float64)
        return log_sigmoid_(logits.mul_(sign) if in_place else sign * logits).sum(-1)
    return likelihood(logits).log_prob(x)


_pixels_checked = False  # set by pixels_checked(); a compiled graph guards on its value


@contextlib.contextmanager
def pixels_checked():
    """A graph compiled inside the block leaves out :func:`log_density`'s check of binary pixels, which the
    caller has made (:func:`pyro_vae.infer.compiled.log_likelihood_for`); eager calls still check."""
    global _pixels_checked
    before, _pixels_checked = _pixels_checked, True
    try:
        yield
    finally:
        _pixels_checked = before


def check_binary(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every pixel of ``x`` is 0 or 1."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("a Bernoulli likelihood over binary pixels got values other than 0 and 1; binarize "
                         "the images (data.pixels = 'dynamic' or 'threshold') or use grey values' -BCE")


def pixel_block(d: int, largest: int = 16) -> int:
    """The largest divisor of ``d`` up to ``largest``: the pixels whose terms :func:`blocked_log_sigmoid_sum`
    multiplies before one log."""
    return max(b for b in range(1, min(d, largest) + 1) if d % b == 0)


def blocked_log_sigmoid_sum(s: torch.Tensor) -> torch.Tensor:
    """sum_d log sigmoid(s_d) = sum_d min(s_d, 0) - sum_blocks log prod_{d in block} (1 + exp(-|s_d|)), over the
    last dimension, blocks of :func:`pixel_block` pixels: one log per block instead of one per pixel.

    Each factor is in [1, 2], so a product of at most 16 is at most 2^16 (float32 or float64; float16 would
    overflow). In float32 the factors' and the product's roundings (about 32 of at most 2^-24 relative) move a
    block's log by at most about 2e-6, 1e-4 nats for a 784-pixel image at worst; measured, at most 8e-6, less
    than the float32 sum over the pixels rounds (1e-4 to 3e-4 on images near -543 nats, as eagerly). Written for
    compiled graphs, where the products fuse into the pass; eagerly, torch's ``prod`` over short blocks is slower
    than the logs it saves."""
    factors = torch.exp(-s.abs()) + 1
    block = pixel_block(s.shape[-1])
    logs = factors.reshape(*s.shape[:-1], s.shape[-1] // block, block).prod(-1).log()
    return s.clamp(max=0).sum(-1) - logs.sum(-1)


def log_sigmoid_(s: torch.Tensor) -> torch.Tensor:
    """log sigmoid(s) = min(s, 0) - log(1 + exp(-|s|)), elementwise, written over ``s`` (values only).

    ``torch.log`` of 1 + exp(-|s|) in [1, 2] is within float32's rounding of ``log1p``'s value, at about half
    the cost; where exp(-|s|) < 6e-8 (|s| > 16.6) it rounds to 0 where the value is -exp(-|s|), an error below
    6e-8 per pixel, always upwards (under 5e-5 nats for a 784-pixel image). ``F.logsigmoid`` also fills a
    buffer for its backward pass; at s = 0 this form's autograd derivative would be wrong, so
    :func:`log_density` calls it only where no gradient is asked for."""
    softplus = s.abs().neg_().exp_().add_(1).log_()  # log(1 + exp(-|s|)), on one new buffer
    return s.clamp_(max=0).sub_(softplus)


class ContinuousBernoulliLikelihood(nn.Module):
    """p(x|z) = prod_d CB(x_d; sigmoid(logits_d)), normalised on [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    convention = "log_likelihood"

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=logits).to_event(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=logits).mean


class NormalLikelihood(nn.Module):
    """p(x|z) = prod_d N(x_d; loc_d, scale^2): the decoder output is the mean, one scale for all pixels.

    :param scale: the standard deviation (its starting value when ``learn_scale``).
    :param learn_scale: learn log(scale) with the model.
    """

    convention = "log_likelihood"

    def __init__(self, scale: float = 0.1, learn_scale: bool = False):
        super().__init__()
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, loc: torch.Tensor) -> dist.Distribution:
        return dist.Normal(loc, self.log_scale.exp().expand_as(loc)).to_event(1)

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        return loc
