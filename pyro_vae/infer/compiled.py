"""A model's log p(x | z) compiled, for the importance sampler's long estimates.

Eager PyTorch runs every elementwise operation as a pass of its own over the K x B x D decoded values:
``addmm`` first copies the bias into its output, then each activation, then the Bernoulli log-density's sign,
|s|, exp, log, min, subtraction and sum. Compiled (``torch.compile``, inductor), the matrix products stay
library calls and the rest fuses into a few passes: each layer's product without its bias, then one pass
adding the bias and applying the activation (``addmm`` decomposed into ``mm`` + add, inductor's pattern matcher
off so it does not fold them back), and the log-density with the last bias, whose logs are taken once per block
of pixels (:func:`~pyro_vae.models.likelihoods.blocked_log_sigmoid_sum`).

:func:`log_weight_for` hands the sampler the importance log-weight log p(x | z) + log p(z) - log q(z | x) with
the compiled ``vae.log_likelihood`` (:func:`log_likelihood_for`); where q(z | x) and p(z) are both diagonal
Gaussians, their log-densities join the same graph (:func:`diagonal_log_ratio`: one pass over the K x B x z_dim
codes in place of eager ``log_prob``'s dozen). Compiling costs seconds to
tens of seconds, once per process for each architecture, dtype and thread count (dynamic shapes: every chunk
size of at least 2 codes and 2 images shares a graph; smaller chunks run eagerly; torch's caches keep the
kernels for later processes; past torch's recompile limit, 8 graphs of one method, torch runs it eagerly).
The sampler compiles for estimates of at least :data:`COMPILE_MIN_ROWS` decoded codes (:func:`worth_compiling`).
Where compiling fails (no C compiler, a device inductor does not serve) the eager method runs instead, after
one warning; ``PYRO_VAE_COMPILE=0`` in the environment keeps every estimate eager.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Callable

import pyro.distributions as dist
import torch

from ..models.likelihoods import BernoulliLikelihood, check_binary, pixels_checked

COMPILE_MIN_ROWS = 4_000_000  # decoded codes (samples x images) an estimate needs before compiling pays
ENVIRONMENT = "PYRO_VAE_COMPILE"  # "0" (or "false", "off", "no"): never compile
TOOLCHAIN_LOGGER = "torch.utils.cpp_extension"  # warns, on a CPU machine with CUDA tools, that it found no GPU


def compiling_allowed() -> bool:
    """False where ``PYRO_VAE_COMPILE`` is 0, false, off or no."""
    return os.environ.get(ENVIRONMENT, "1").strip().lower() not in ("0", "false", "off", "no")


def worth_compiling(rows: int) -> bool:
    """Whether an estimate decoding ``rows`` codes in all should compile: allowed and ``rows >= COMPILE_MIN_ROWS``."""
    return compiling_allowed() and rows >= COMPILE_MIN_ROWS


def _mm_then_bias(bias, mat1, mat2, *, beta=1, alpha=1):
    """``addmm`` as ``mm`` + bias, so the bias joins the next elementwise pass instead of a copy of its own."""
    if beta != 1 or alpha != 1:
        return NotImplemented
    return torch.ops.aten.mm(mat1, mat2) + bias


def _inductor_with_bias_in_the_epilogue(graph, example_inputs):
    """Inductor, with ``addmm`` decomposed by :func:`_mm_then_bias` and the pattern matcher (which would fold
    ``mm`` + add back into ``addmm``) off."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    table = {**select_decomp_table(), torch.ops.aten.addmm.default: _mm_then_bias}
    return compile_fx(graph, example_inputs, decompositions=table, config_patches={"pattern_matcher": False})


@contextlib.contextmanager
def _quiet(name: str):
    """Logger ``name`` shows errors only inside the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _compiler_error(error: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException  # (imported here: `import pyro_vae` stays without dynamo)

    return isinstance(error, TorchDynamoException)  # inductor's errors derive from it


class CompiledKernel:
    """``function`` compiled (dynamic shapes) at its first call. Where the compiled call raises a compiler
    error, the function runs eagerly: if that raises too, the error was the call's own (a wrong shape) and
    propagates; if not, compiling failed, and after one warning the function runs eagerly from then on."""

    def __init__(self, function: Callable):
        self.function = function
        self.compiled = None
        self.failure: str | None = None  # why compiling failed, once it has

    def __call__(self, *args, **kwargs):
        if self.failure is not None:
            return self.function(*args, **kwargs)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.function, dynamic=True, backend=_inductor_with_bias_in_the_epilogue)
                with _quiet(TOOLCHAIN_LOGGER):  # the first call compiles
                    return self.compiled(*args, **kwargs)
            return self.compiled(*args, **kwargs)
        except Exception as error:
            if not _compiler_error(error):
                raise
            value = self.function(*args, **kwargs)  # raises here if the error was the call's own
            self.failure = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            warnings.warn(f"torch.compile of {self.function.__qualname__} failed ({self.failure}); the eager form "
                          f"runs instead (set {ENVIRONMENT}=0 to skip compiling)", RuntimeWarning, stacklevel=2)
            return value


# one per log_likelihood function (model classes may share one), and one per function's fused log-weight
KERNELS: dict[object, CompiledKernel] = {}


def diagonal_normal(distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of a diagonal Gaussian over the last dimension, ``Normal(loc, scale).to_event(1)``;
    None for any other distribution (a full covariance, a flow, a mixture)."""
    if (type(distribution) in (torch.distributions.Independent, dist.Independent)
            and distribution.reinterpreted_batch_ndims == 1
            and type(distribution.base_dist) in (torch.distributions.Normal, dist.Normal)):
        return distribution.base_dist.loc, distribution.base_dist.scale
    return None


def diagonal_log_ratio(z, p_loc, p_scale, q_loc, q_scale) -> torch.Tensor:
    """log N(z; p_loc, diag p_scale^2) - log N(z; q_loc, diag q_scale^2), summed over the last dimension:
    sum_d [((z - q_loc) / q_scale)^2 / 2 - ((z - p_loc) / p_scale)^2 / 2 + log q_scale - log p_scale]
    (the log 2 pi terms cancel)."""
    return (0.5 * (((z - q_loc) / q_scale) ** 2 - ((z - p_loc) / p_scale) ** 2) + q_scale.log() - p_scale.log()).sum(-1)


def _log_weight_diagonal(vae, z, x, y, p_loc, p_scale, q_loc, q_scale):
    return vae.log_likelihood(z, x, y) + diagonal_log_ratio(z, p_loc, p_scale, q_loc, q_scale)


def _eager_log_weight(log_likelihood: Callable) -> Callable:
    return lambda z, x, y, q, prior: log_likelihood(z, x, y) + prior.log_prob(z) - q.log_prob(z)


def log_weight_for(vae, compiled: bool) -> Callable:
    """``(z, x, y, q, prior) -> log p(x | z[, y]) + log p(z) - log q(z | x)``, the importance log-weights of
    codes ``z`` ``(K, B, z_dim)``: with log p(x | z) from :func:`log_likelihood_for`; compiled, and q and the
    prior both diagonal Gaussians (:func:`diagonal_normal`), the three in one graph (:func:`diagonal_log_ratio`)."""
    decode = log_likelihood_for(vae, compiled)
    eager = _eager_log_weight(decode)
    if not (compiled and compiling_allowed()):
        return eager
    function = type(vae).log_likelihood
    kernel = KERNELS.setdefault((function, "log_weight"), CompiledKernel(_log_weight_diagonal))

    def log_weight(z, x, y, q, prior):
        normals = diagonal_normal(prior), diagonal_normal(q)
        if None in normals or _runs_eagerly(z, x):
            return eager(z, x, y, q, prior)
        _check_pixels(vae, x)
        with pixels_checked():
            return kernel(vae, z, x, y, *normals[0], *normals[1])

    return log_weight


def _runs_eagerly(z, x) -> bool:
    """A chunk with a dimension of 1 runs eagerly (each would be a graph of its own)."""
    return 1 in z.shape[:-1] or 1 in x.shape[:-1]


def _check_pixels(vae, x) -> None:
    """Binary pixels of a Bernoulli likelihood checked before the graph (a check on the values would split it)."""
    likelihood = getattr(vae, "likelihood", None)
    if isinstance(likelihood, BernoulliLikelihood) and not likelihood.grey_values:
        check_binary(x)


def log_likelihood_for(vae, compiled: bool) -> Callable:
    """``(z, x, y=None) -> log p(x | z[, y])``: ``vae.log_likelihood`` compiled (where ``compiled`` and
    :func:`compiling_allowed`), or the eager method itself. The compiled form checks binary pixels of a
    Bernoulli likelihood before the graph (all of ``x``'s pixels; eagerly, a completion model checks only the
    ones it scores) and runs chunks with a dimension of 1 eagerly (each would be a graph of its own)."""
    if not (compiled and compiling_allowed()):
        return vae.log_likelihood
    function = type(vae).log_likelihood
    kernel = KERNELS.setdefault(function, CompiledKernel(function))

    def log_likelihood(z, x, y=None):
        if _runs_eagerly(z, x):
            return vae.log_likelihood(z, x, y)
        _check_pixels(vae, x)
        with pixels_checked():
            return kernel(vae, z, x, y)

    return log_likelihood
