"""The optimizer: one fused Adam for the dense parameters of a step, per-row Adam for per-datapoint tables.

Pyro's :class:`~pyro.optim.PyroOptim` builds one torch optimizer per parameter, so a step
runs one small Adam update per tensor. :class:`GroupedAdam` keeps Pyro's interface and
``pyro.optim.Adam``'s semantics (SVI calls it with the parameters of the step; only those
move and only their state advances; ``get_state``/``set_state`` are keyed by parameter name)
but steps the dense parameters of the step with a single ``torch.optim.Adam(fused=True)``
(one pass over parameters, gradients and moments). A parameter whose gradient is row-sparse
(the mean-field guide's ``F.embedding(..., sparse=True)`` tables) gets per-row Adam with its
own learning rate: every row is an Adam of its own, with its own step count, and a step
touches only the minibatch rows (O(batch); every other row and its moments stay bit-identical).

State (:meth:`GroupedAdam.get_state`): ``{param_name: entry}`` with tensors and plain values
only (loadable with ``torch.load(weights_only=True)``); every entry carries
``"format": STATE_FORMAT`` and one of

- ``"adam"``: torch Adam's per-parameter state ``{"step", "exp_avg", "exp_avg_sq"}``;
- ``"row_adam"``: ``{"step": (N,) int64, "exp_avg": (N, ...), "exp_avg_sq": (N, ...)}``.

:func:`migrate_state` checks a state, migrates the previous format (dense ``{"adam": ...}``
entries exactly) and refuses what cannot be continued with a one-line ``ValueError``.
"""

from __future__ import annotations

import pyro
import torch
from pyro.optim import PyroOptim

__all__ = ["STATE_FORMAT", "GroupedAdam", "adam", "migrate_state"]

STATE_FORMAT = "pyro_vae.adam/2"
"""The format marker in every entry of :meth:`GroupedAdam.get_state` (the previous format had none)."""

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ROW_KEYS = ("step", "exp_avg", "exp_avg_sq")


def _copy(obj):
    """A copy of nested dicts of tensors (tensors cloned)."""
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    return obj.clone() if torch.is_tensor(obj) else obj


def _check_entry(name, entry) -> dict:
    """``entry`` in the current format, or a one-line ValueError naming ``name`` and the fix."""
    if not isinstance(entry, dict):
        raise ValueError(
            f"optimizer state for {name!r} is a {type(entry).__name__}, not a dict; "
            "pass a state returned by GroupedAdam.get_state()"
        )
    found = entry.get("format")
    if found is None and set(entry) == {"adam"} and isinstance(entry["adam"], dict):
        return {"format": STATE_FORMAT, "adam": entry["adam"]}  # previous format: same torch Adam state
    if found is None and "sparse_adam" in entry:
        raise ValueError(
            f"optimizer state for {name!r} is an old SparseAdam table state without per-row step counts, "
            "so per-row Adam cannot continue it; start a new run, or finish this one with the pyro_vae "
            "version that wrote it"
        )
    kinds = [kind for kind in ("adam", "row_adam") if isinstance(entry.get(kind), dict)]
    if found != STATE_FORMAT or set(entry) != {"format", *kinds} or len(kinds) != 1:
        raise ValueError(
            f"optimizer state for {name!r} has format {found!r} and keys {sorted(entry)}; expected "
            f"format {STATE_FORMAT!r} with one of 'adam', 'row_adam': pass a state from GroupedAdam.get_state()"
        )
    if kinds == ["row_adam"] and not all(torch.is_tensor(entry["row_adam"].get(k)) for k in _ROW_KEYS):
        raise ValueError(
            f"optimizer state for {name!r} has row_adam keys {sorted(entry['row_adam'])}, expected "
            f"{list(_ROW_KEYS)} (tensors); pass a state from GroupedAdam.get_state()"
        )
    return entry


def migrate_state(state) -> dict:
    """``state`` (from :meth:`GroupedAdam.get_state`, any format) in the current format.

    Entries of the previous format ``{"adam": {...}}`` migrate exactly (the same torch Adam
    state); previous ``{"sparse_adam": ...}`` table states have no per-row step counts and are
    refused. Raises a one-line ``ValueError`` naming the parameter, the problem and the fix
    for any state that cannot be used; a checkpoint loader can call it to check a state early.
    """
    if not isinstance(state, dict):
        raise ValueError(
            f"optimizer state is a {type(state).__name__}, expected a dict keyed by parameter name "
            "from GroupedAdam.get_state()"
        )
    return {name: _check_entry(name, entry) for name, entry in state.items()}


class GroupedAdam(PyroOptim):
    """``pyro.optim.Adam``: Adam(``lr``) over the dense parameters of each step in one fused call;
    per-row Adam(``local_lr``) for row-sparse tables.

    Row n of a table, at its t_n-th update (t_n counts the steps whose gradient holds row n;
    duplicate indices are summed first)::

        m_n = b1 m_n + (1 - b1) g_n,  v_n = b2 v_n + (1 - b2) g_n^2,
        x_n -= local_lr * (m_n / (1 - b1^t_n)) / (sqrt(v_n / (1 - b2^t_n)) + eps)

    :param lr: learning rate of the dense parameters.
    :param local_lr: learning rate of the tables' rows (default ``lr``).
    """

    def __init__(self, lr: float, local_lr: float | None = None, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(torch.optim.Adam, {"lr": lr, "betas": betas, "eps": eps})
        self.lr, self.local_lr = lr, lr if local_lr is None else local_lr
        self.lr_factor = 1.0  # the schedule's multiple of both rates (set_lr_factor)
        self.betas, self.eps = betas, eps
        self._dense: torch.optim.Adam | None = None  # over the dense params of the last step
        self._dense_key: frozenset = frozenset()
        self._dense_state: dict[torch.Tensor, dict] = {}  # param -> torch Adam state (shared with _dense)
        self._row_state: dict[torch.Tensor, dict] = {}  # table -> {"step", "exp_avg", "exp_avg_sq"}
        self._pending: dict[str, dict] = {}  # name -> entry from set_state, for params not seen yet

    @staticmethod
    def _name(param: torch.Tensor) -> str | None:
        return pyro.get_param_store().param_name(param)

    def _take_pending(self, param: torch.Tensor, kind: str) -> dict | None:
        """The state ``set_state`` left for ``param`` (a copy on its device), or None."""
        name = self._name(param)
        entry = self._pending.pop(name, None)
        if entry is None:
            return None
        if kind not in entry:
            other = next(k for k in ("adam", "row_adam") if k in entry)
            raise ValueError(
                f"optimizer state for {name!r} is {other!r} but the parameter now has a "
                f"{'dense' if kind == 'adam' else 'row-sparse'} gradient; use the guide the state was saved with"
            )
        state = {}
        for key, value in entry[kind].items():
            if key != "step" and torch.is_tensor(value) and value.shape != param.shape:
                raise ValueError(
                    f"optimizer state for {name!r} has {key} of shape {tuple(value.shape)} but the parameter "
                    f"has shape {tuple(param.shape)}; load the state into the model it was saved from"
                )
            if key == "step" and kind == "adam":
                state[key] = value.clone()  # placed by _build_dense
            elif torch.is_tensor(value):
                dtype = torch.int64 if key == "step" else param.dtype
                state[key] = value.to(device=param.device, dtype=dtype, copy=True)
            else:
                state[key] = value
        return state

    def _build_dense(self, params: list[torch.Tensor]) -> None:
        """One torch Adam over ``params`` (sorted by name), sharing each parameter's state dict."""
        params = sorted(params, key=lambda p: self._name(p) or "")
        fused = all(p.dtype in _FUSED_DTYPES for p in params) and len({p.device for p in params}) == 1
        self._dense = torch.optim.Adam(params, lr=self.lr * self.lr_factor, betas=self.betas, eps=self.eps,
                                       fused=fused)
        for p in params:
            state = self._dense_state.get(p)
            if state is None:
                state = self._dense_state[p] = self._take_pending(p, "adam") or {}
            if "step" in state:  # torch's placement: on the parameter's device when fused, else as saved
                step = state["step"]
                state["step"] = step.to(device=p.device, dtype=torch.float32) if fused else step
            self._dense.state[p] = state
        self._dense_key = frozenset(params)

    def _row_step(self, table: torch.Tensor) -> None:
        """Adam on the rows of ``table`` that its sparse gradient holds, each with its own step count."""
        state = self._row_state.get(table)
        if state is None:
            if self._dense_state.get(table):
                raise ValueError(
                    f"parameter {self._name(table)!r} had dense gradients and now has a row-sparse one; "
                    "keep MeanField(sparse=...) fixed while one optimizer trains it"
                )
            state = self._take_pending(table, "row_adam") or {
                "step": torch.zeros(table.shape[0], dtype=torch.int64, device=table.device),
                "exp_avg": torch.zeros_like(table, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(table, memory_format=torch.preserve_format),
            }
            self._row_state[table] = state
        if table.grad is None:
            return
        if not table.grad.is_sparse:
            raise ValueError(
                f"parameter {self._name(table)!r} had row-sparse gradients and now has a dense one; "
                "keep MeanField(sparse=...) fixed while one optimizer trains it"
            )
        grad = table.grad.coalesce()  # duplicate rows summed
        if grad.sparse_dim() != 1:
            raise ValueError(
                f"parameter {self._name(table)!r} has a sparse gradient with {grad.sparse_dim()} sparse dims; "
                "per-row Adam needs row-sparse gradients (F.embedding(..., sparse=True))"
            )
        rows, g = grad.indices()[0], grad.values()  # (k,), (k, ...)
        if rows.numel() == 0:
            return
        beta1, beta2 = self.betas
        t = state["step"].index_select(0, rows) + 1  # (k,)
        state["step"].index_copy_(0, rows, t)
        m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        shape = (-1,) + (1,) * (g.dim() - 1)
        t = t.to(torch.float64)
        step_size = (self.local_lr * self.lr_factor / (1 - beta1**t)).to(table.dtype).view(shape)
        bias_correction2_sqrt = (1 - beta2**t).sqrt().to(table.dtype).view(shape)
        denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
        with torch.no_grad():
            table.index_copy_(0, rows, table.index_select(0, rows) - step_size * m / denom)

    def __call__(self, params, *args, **kwargs) -> None:
        """Step exactly ``params`` (those of this SVI step); parameters without a gradient are skipped.

        Their gradients are then released (``grad = None``, as ``zero_grad(set_to_none=True)`` does):
        Pyro's ``zero_grads`` after the step has nothing to zero, and the next backward pass writes
        the gradients instead of adding them to freshly allocated zeros."""
        dense, sparse = [], []
        for p in params:
            row_sparse = p in self._row_state or (p.grad is not None and p.grad.is_sparse)
            (sparse if row_sparse else dense).append(p)
        if dense:
            if self._dense is None or frozenset(dense) != self._dense_key:
                self._build_dense(dense)
            self._dense.step()
        for p in sparse:
            self._row_step(p)
        for p in dense + sparse:
            p.grad = None

    def set_lr_factor(self, factor: float) -> None:
        """Step with ``factor`` times ``lr`` and ``local_lr`` from now on (a learning-rate schedule)."""
        self.lr_factor = factor
        if self._dense is not None:
            for group in self._dense.param_groups:
                group["lr"] = self.lr * factor

    def get_state(self) -> dict:
        """``{param_name: entry}`` (a copy; see the module docstring), including states set but not yet used."""
        state = _copy(self._pending)
        for kind, live in (("adam", self._dense_state), ("row_adam", self._row_state)):
            for p, s in live.items():
                name = self._name(p)
                if s and name is not None:
                    state[name] = {"format": STATE_FORMAT, kind: _copy(s)}
        return state

    def set_state(self, state_dict: dict) -> None:
        """Use ``state_dict`` (from :meth:`get_state`; see :func:`migrate_state`) for the parameters it names.

        Each named parameter continues from its entry at its next step; others keep their state.
        """
        state = migrate_state(state_dict)
        for live in (self._dense_state, self._row_state):
            for p in [p for p in live if self._name(p) in state]:
                del live[p]
        self._dense, self._dense_key = None, frozenset()  # rebuilt at the next step, taking the new states
        self._pending.update(state)


LR_SCHEDULES = ("constant", "burda", "exponential", "multistep")
BURDA_STAGES = 8  # i = 0..7: 3^i epochs at 10^(-i/7), 3,280 epochs in all (Burda et al. 2015)


def lr_factor(schedule: str, epoch: int, decay: float = 1.0, milestones: tuple[int, ...] | list[int] = ()) -> float:
    """The learning rate of ``epoch`` (1-based) as a multiple of the configured rate; a function of the
    epoch alone, so a resumed run steps with the rates an uninterrupted one did.

    ``constant``: 1. ``exponential``: ``decay^(epoch - 1)``. ``multistep``: ``decay^m``, m the number of
    ``milestones`` (epochs) already ended before ``epoch`` (torch's MultiStepLR). ``burda``: stage i lasts 3^i epochs at
    ``10^(-i/7)`` (epoch 1 at 1, epochs 2-4 at 10^(-1/7), 5-13 at 10^(-2/7), ...); after the last
    stage's 2,187 epochs (epoch 3,280) the rate stays at its 10^(-1).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "exponential":
        return decay ** (epoch - 1)
    if schedule == "multistep":
        return decay ** sum(epoch > milestone for milestone in milestones)
    if schedule == "burda":
        stage, end = 0, 1
        while epoch > end and stage < BURDA_STAGES - 1:
            stage += 1
            end += 3**stage
        return 10 ** (-stage / (BURDA_STAGES - 1))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; valid schedules: {', '.join(LR_SCHEDULES)}")


def adam(lr: float, local_lr: float | None = None) -> GroupedAdam:
    """Adam with learning rate ``lr`` for dense parameters and ``local_lr`` (default ``lr``) for
    per-datapoint tables, whose rows get one update per epoch each."""
    return GroupedAdam(lr, local_lr)
