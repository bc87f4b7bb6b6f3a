"""The optimizer: Adam for dense parameters, lazy row-wise Adam for per-datapoint tables.

Pyro's :class:`~pyro.optim.PyroOptim` builds one torch optimizer per parameter after
that parameter's first backward pass, so the constructor can look at the gradient:
a sparse gradient (from ``F.embedding(..., sparse=True)`` in the mean-field guide)
gets :class:`torch.optim.SparseAdam`, which updates only the rows in the minibatch,
and their moments, so a step costs O(batch) and leaves every other row bit-identical.
"""

from __future__ import annotations

import torch
from pyro.optim import PyroOptim


def _adam_dense_or_sparse(params, lr: float, local_lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
    (param,) = params
    if param.grad is not None and param.grad.is_sparse:
        return torch.optim.SparseAdam(params, lr=local_lr, betas=betas, eps=eps)
    # torch's fused kernel: one pass over param, grad and moments (2x faster on CPU here)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=param.dtype in _FUSED_DTYPES)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(lr: float, local_lr: float | None = None) -> PyroOptim:
    """Adam with learning rate ``lr``; row-wise SparseAdam with ``local_lr`` (default ``lr``) for
    sparse-gradient parameters, the per-datapoint tables, which get one update per epoch each."""
    return PyroOptim(_adam_dense_or_sparse, {"lr": lr, "local_lr": lr if local_lr is None else local_lr})
