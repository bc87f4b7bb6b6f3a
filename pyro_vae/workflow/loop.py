"""The SVI loop, and the hooks that run around it.

An epoch is this, and nothing else::

    for idx, x in epoch.batches(data, batch_size):
        loss = svi.step(x, idx)  # svi.step(x, idx, y[idx]) for a conditional model

``svi.step`` returns the estimate of the full-data -ELBO (the ``data`` plate scales the batch
by N / B), so the per-image loss divides by N, the images the epoch passes over (M2: the
unlabelled ones, whose bound its objective reports). Progress bars, checks, checkpoints, test
evaluation, snapshots and figures are :class:`Hook` s called at the start and end of each
step and epoch and when training ends; a hook stops training by raising.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from pyro.infer import SVI
from tqdm import tqdm

from .data import ImageData
from .streams import epoch_generator


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a failed save); the message says where and why."""


class StopRequested(Exception):
    """Raised by a hook to end the epoch early (Ctrl-C); the epoch's :meth:`EpochState.position` says where."""


@dataclass
class EpochState:
    """One pass over the training data: its number, its generator (order and binarizations) and
    the running loss. Built from the seed, or from the ``position`` a stopped pass left."""

    number: int
    generator: torch.Generator
    order: torch.Tensor  # the pass's permutation of the training rows
    size: int  # images in the pass
    step: int = 0  # steps done
    loss_sum: float = 0.0  # sum over the images seen of their per-image loss
    seen: int = 0
    last_loss: float = math.nan  # per-image loss of the latest step
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(cls, data: ImageData, number: int, seed: int, position: dict | None = None) -> "EpochState":
        generator = epoch_generator(seed, number, data.device)
        epoch = cls(number, generator, data.order(generator), len(data))
        if position is not None:  # go on where a stopped pass of this epoch left off
            epoch.step, epoch.loss_sum, epoch.seen = position["step"], position["loss_sum"], position["seen"]
            generator.set_state(position["generator"])
        return epoch

    def batches(self, data: ImageData, batch_size: int):
        """``(idx, x)`` minibatches along the pass's order, from the first step not yet done."""
        return data.batches_in(self.order, batch_size, self.generator, start=self.step)

    def add(self, loss: float, batch: int) -> None:
        self.step += 1
        self.last_loss = loss
        self.loss_sum += loss * batch
        self.seen += batch

    @property
    def loss(self) -> float:
        """Mean per-image training loss of the pass so far."""
        return self.loss_sum / self.seen if self.seen else math.nan

    @property
    def done(self) -> bool:
        return self.seen >= self.size

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def position(self) -> dict:
        """What a checkpoint keeps of an unfinished pass to continue it bit for bit."""
        return {"step": self.step, "generator": self.generator.get_state(), "loss_sum": self.loss_sum,
                "seen": self.seen}


class Hook:
    """Called around the SVI steps; override what is needed."""

    def epoch_started(self, epoch: EpochState) -> None: ...

    def step_started(self, epoch: EpochState) -> None: ...

    def step_finished(self, epoch: EpochState) -> None: ...

    def epoch_finished(self, epoch: EpochState) -> None: ...

    def training_finished(self) -> None: ...


def run_epoch(svi: SVI, data: ImageData, batch_size: int, epoch: EpochState, hooks: Sequence[Hook] = (),
              inputs: Callable[[torch.Tensor, int, int], tuple] | None = None) -> float:
    """One pass of SVI steps over ``data`` (the rest of it, for a resumed pass); returns the mean
    per-image training loss.

    :param inputs: ``(idx, epoch number, step) -> args``, what each step takes after ``x, idx``
        (:func:`pyro_vae.workflow.labels.training_inputs`: a conditional model's labels, M2's labelled
        batch); None for a model of x alone."""
    for hook in hooks:
        hook.epoch_started(epoch)
    for idx, x in epoch.batches(data, batch_size):
        for hook in hooks:
            hook.step_started(epoch)
        given = () if inputs is None else inputs(idx, epoch.number, epoch.step)
        epoch.add(svi.step(x, idx, *given) / len(data), len(idx))
        for hook in hooks:
            hook.step_finished(epoch)
    for hook in hooks:
        hook.epoch_finished(epoch)
    return epoch.loss


class FiniteLoss(Hook):
    """Stop with a :class:`TrainingError` when a step's loss is not finite."""

    def step_finished(self, epoch):
        if not math.isfinite(epoch.last_loss):
            raise TrainingError(
                f"loss became {epoch.last_loss} at epoch {epoch.number}, step {epoch.step}; lower train.lr or check "
                "for a variance collapsing to zero (the last good checkpoint is kept)"
            )


class ProgressBar(Hook):
    """A progress bar per epoch on stderr, with the running loss (hidden when not a terminal)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def epoch_started(self, epoch):
        self.bar = tqdm(total=epoch.size, initial=epoch.seen, desc=f"epoch {epoch.number}", unit="img", leave=False,
                        disable=None if self.enabled else True, file=sys.stderr)

    def step_finished(self, epoch):
        self.bar.update(epoch.seen - self.bar.n)
        self.bar.set_postfix(loss=f"{epoch.loss:.2f}")

    def epoch_finished(self, epoch):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CtrlC(Hook):
    """While active (a context manager), Ctrl-C only sets ``requested``: the step under way finishes,
    then :class:`StopRequested` ends the pass (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def step_finished(self, epoch):
        if self.requested and not epoch.done:
            raise StopRequested
