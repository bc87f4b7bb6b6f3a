"""The optimizer: one fused Adam for the dense parameters, lazy row-wise Adam for per-datapoint tables.

Pyro's :class:`~pyro.optim.PyroOptim` builds one torch optimizer per parameter, so a step
runs one small Adam update per tensor. :class:`GroupedAdam` keeps Pyro's interface (SVI
calls it with the parameters of the step; ``get_state``/``set_state`` are keyed by
parameter name) but steps every dense parameter with a single ``torch.optim.Adam(fused=True)``
(one pass over parameters, gradients and moments), and gives each parameter whose gradient
is sparse (the mean-field guide's ``F.embedding(..., sparse=True)`` tables) a
:class:`torch.optim.SparseAdam` with its own learning rate: it updates only the rows in the
minibatch, and their moments, so a step costs O(batch) and leaves every other row bit-identical.
"""

from __future__ import annotations

import copy

import pyro
import torch
from pyro.optim import PyroOptim

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _clone(state: dict) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


class GroupedAdam(PyroOptim):
    """Adam(``lr``) over all dense parameters at once; SparseAdam(``local_lr``) per sparse table."""

    def __init__(self, lr: float, local_lr: float | None = None, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(torch.optim.Adam, {"lr": lr, "betas": betas, "eps": eps})
        self.lr, self.local_lr = lr, lr if local_lr is None else local_lr
        self.betas, self.eps = betas, eps
        self._dense: torch.optim.Optimizer | None = None
        self._dense_params: list[torch.Tensor] = []

    @staticmethod
    def _name(param: torch.Tensor) -> str:
        return pyro.get_param_store().param_name(param)

    def _regroup(self, dense: list[torch.Tensor]) -> None:
        """(Re)build the dense optimizer over ``dense`` plus the ones it had, keeping their state."""
        old = self._dense
        params = sorted(set(self._dense_params) | set(dense), key=self._name)
        fused = all(p.dtype in _FUSED_DTYPES for p in params) and len({p.device for p in params}) == 1
        self._dense = torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps, fused=fused)
        for p in params:
            if old is not None and p in old.state:
                self._dense.state[p] = old.state[p]
            else:
                waiting = self._state_waiting_to_be_consumed.pop(self._name(p), None)
                if waiting is not None:
                    self._dense.state[p] = _clone(waiting["adam"])
        self._dense_params = params

    def __call__(self, params, *args, **kwargs) -> None:
        params = list(params)
        sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
        dense = [p for p in params if p.grad is None or not p.grad.is_sparse]
        known = set(self._dense_params)
        if any(p not in known for p in dense):
            self._regroup(dense)
        if self._dense is not None:
            self._dense.step()
        for p in sparse:
            if p not in self.optim_objs:
                self.optim_objs[p] = torch.optim.SparseAdam([p], lr=self.local_lr, betas=self.betas, eps=self.eps)
                waiting = self._state_waiting_to_be_consumed.pop(self._name(p), None)
                if waiting is not None:
                    self.optim_objs[p].load_state_dict(waiting["sparse_adam"])
            self.optim_objs[p].step()

    def get_state(self) -> dict:
        state = {self._name(p): {"adam": _clone(self._dense.state[p])}
                 for p in self._dense_params if p in self._dense.state}
        for p, optimizer in self.optim_objs.items():
            state[self._name(p)] = {"sparse_adam": copy.deepcopy(optimizer.state_dict())}
        return state

    def set_state(self, state_dict: dict) -> None:
        self._state_waiting_to_be_consumed.update(state_dict)


def adam(lr: float, local_lr: float | None = None) -> GroupedAdam:
    """Adam with learning rate ``lr`` for dense parameters and ``local_lr`` (default ``lr``) for
    per-datapoint tables, which get one update per epoch each."""
    return GroupedAdam(lr, local_lr)
