"""A model's log p(x | z) compiled as one graph, for the importance sampler's long runs.

Eager PyTorch runs every elementwise operation as a pass of its own over the K x B x D decoded values:
``addmm`` first copies the bias into its output, then each activation, then the Bernoulli log-density's sign,
|s|, exp, log, min, subtraction and sum. Compiled (``torch.compile``, inductor), the matrix products stay
library calls and the rest fuses: each layer's product without its bias, then one pass adding the bias and
applying the activation (``addmm`` decomposed into ``mm`` + add, inductor's pattern matcher off so it does not
fold them back), and the log-density, bias included, in one read of the logits with one log per block of
pixels (:func:`~pyro_vae.models.likelihoods.blocked_log_sigmoid_sum`).

:func:`log_likelihood_for` hands the sampler the compiled ``vae.log_likelihood``. Compiling costs tens of
seconds once per process and model class (torch's caches keep the kernels for later processes), so the
sampler compiles for estimates of at least :data:`COMPILE_MIN_ROWS` decoded codes (:func:`worth_compiling`).
Where compiling fails (no C compiler, a device inductor does not serve) the eager method runs instead, after
one warning; ``PYRO_VAE_COMPILE=0`` in the environment keeps every estimate eager.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Callable

import torch
from torch._dynamo.exc import TorchDynamoException

from .likelihoods import BernoulliLikelihood, check_binary

COMPILE_MIN_ROWS = 4_000_000  # decoded codes (samples x images) an estimate needs before compiling pays
ENVIRONMENT = "PYRO_VAE_COMPILE"  # "0": never compile
TOOLCHAIN_LOGGER = "torch.utils.cpp_extension"  # warns, on a CPU machine with CUDA tools, that it found no GPU


def compiling_allowed() -> bool:
    """False where ``PYRO_VAE_COMPILE=0`` is set."""
    return os.environ.get(ENVIRONMENT, "1").strip() != "0"


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


class CompiledKernel:
    """``function`` compiled (dynamic shapes: one graph for every chunk size) at its first call; where compiling
    fails, one warning and ``function`` itself from then on. The function's own errors pass through."""

    def __init__(self, function: Callable):
        self.function = function
        self.compiled = None
        self.failure: str | None = None  # why compiling failed, once it has

    def __call__(self, *args, **kwargs):
        if self.failure is None:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.function, dynamic=True,
                                                  backend=_inductor_with_bias_in_the_epilogue)
                    with _quiet(TOOLCHAIN_LOGGER):  # the first call compiles
                        return self.compiled(*args, **kwargs)
                return self.compiled(*args, **kwargs)
            except TorchDynamoException as error:  # the compiler's own failures (inductor's derive from it)
                self.failure = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
                warnings.warn(f"torch.compile of {self.function.__qualname__} failed ({self.failure}); the eager "
                              f"form runs instead (set {ENVIRONMENT}=0 to skip compiling)", RuntimeWarning,
                              stacklevel=2)
        return self.function(*args, **kwargs)


KERNELS: dict[type, CompiledKernel] = {}  # one per model class: its log_likelihood, the model an argument


def log_likelihood_for(vae, compiled: bool) -> Callable:
    """``(z, x, y=None) -> log p(x | z[, y])``: ``vae.log_likelihood`` compiled (where ``compiled`` and
    :func:`compiling_allowed`), or the eager method itself."""
    if not (compiled and compiling_allowed()):
        return vae.log_likelihood
    kind = type(vae)
    if kind not in KERNELS:
        KERNELS[kind] = CompiledKernel(kind.log_likelihood)
    kernel = KERNELS[kind]
    likelihood = getattr(vae, "likelihood", None)
    binary = isinstance(likelihood, BernoulliLikelihood) and not likelihood.grey_values

    def log_likelihood(z, x, y=None):
        if binary:
            check_binary(x)  # here, not inside the graph: a check on values would split it
        return kernel(vae, z, x, y)

    return log_likelihood
