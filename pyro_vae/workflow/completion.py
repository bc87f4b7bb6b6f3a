"""Image completion runs (``model.completion``): the baseline fitted before the CVAE trains, and its loss.

The baseline's program has no latent, so SVI with ``Trace_ELBO`` and its empty guide minimises
-log p(x_h | x_g) exactly (Pyro's CVAE tutorial's masked BCE). Its epochs are the loop's
:func:`~pyro_vae.workflow.loop.run_epoch` (with Ctrl-C, without progress bars or checkpoints of their own);
the run checkpoints the fitted baseline before its first epoch, and it stays frozen inside the CVAE (its
weights travel in the run's checkpoint; its fitting time is reported apart from ``train_seconds``).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Sequence

import torch
from pyro.infer import SVI, Trace_ELBO

from ..infer.evaluate import batches
from ..infer.optim import adam
from ..models.completion import CompletionBaseline
from .config import Config
from .data import ImageData
from .loop import EpochState, FiniteLoss, Hook, TrainingError, run_epoch
from .streams import eval_generator, seeded

BASELINE_STREAM = 7  # the baseline's batches come from the streams of seed + this (the CVAE's from seed)


@torch.no_grad()
def baseline_loss(baseline: CompletionBaseline, x: torch.Tensor, batch_size: int = 1000) -> float:
    """-log p(x_h | x_g) per image of images ``x`` ``(N, D)`` (grey pixels: the hidden pixels' BCE)."""
    total = sum(-baseline.log_likelihood(xb).sum().item() for _, xb in batches(x, batch_size))
    return total / x.shape[0]


def fit_baseline(baseline: CompletionBaseline, train: ImageData, validation: ImageData, config: Config,
                 patience: float, log=print, hooks: Sequence[Hook] = ()) -> dict:
    """Fit ``baseline`` in place: SVI steps on its program (Adam at ``train.lr``, batches of ``train.batch_size``,
    pixels drawn as in training) for up to ``train.baseline_epochs`` passes (not ``train.epochs``, which a
    resumed run may raise), stopped after ``patience`` passes without
    a lower validation loss; the weights of the lowest one are kept; ``hooks`` run around its steps (Ctrl-C).
    Returns its record: ``epochs``,
    ``best_epoch``, ``valid_loss`` (per image), ``seconds``, ``history`` (per pass: train and validation loss)."""
    t = config.train
    seed = t.seed + BASELINE_STREAM
    x_valid = validation.observed(eval_generator(seed, validation.device)).images
    svi = SVI(baseline.model, baseline.guide, adam(t.lr), Trace_ELBO())
    best, history, started = (math.inf, 0, None), [], time.perf_counter()
    with seeded(seed, train.device):
        for number in range(1, t.baseline_epochs + 1):
            epoch = EpochState.begin(train, number, seed)
            train_loss = run_epoch(svi, train, t.batch_size, epoch, [FiniteLoss(), *hooks])
            valid_loss = baseline_loss(baseline, x_valid, t.eval_batch_size)
            history.append({"epoch": number, "train_loss": train_loss, "valid_loss": valid_loss})
            log(f"baseline epoch {number:3d}  train loss {train_loss:8.2f}  valid loss {valid_loss:8.2f}")
            if valid_loss < best[0]:
                best = (valid_loss, number, copy.deepcopy(baseline.state_dict()))
            if number - best[1] >= patience:
                break
    if best[2] is None:
        raise TrainingError(f"the completion baseline's validation loss was never finite in {len(history)} epochs; "
                            "lower train.lr")
    baseline.load_state_dict(best[2])
    record = {"epochs": len(history), "best_epoch": best[1], "valid_loss": best[0],
              "seconds": time.perf_counter() - started, "history": history}
    log(f"baseline fitted: {record['epochs']} epochs, validation loss {best[0]:.2f} per image at epoch {best[1]} "
        f"({record['seconds']:.0f} s)")
    return record


def baseline_metrics(baseline: CompletionBaseline, fit: dict | None, test: ImageData, config: Config) -> dict:
    """The baseline's test loss -log p(x_h | x_g) per image (the evaluation's pixels) beside its fit's record."""
    x = test.observed(eval_generator(config.train.seed, test.device)).images
    summary = {key: value for key, value in (fit or {}).items() if key != "history"}
    return {"test_loss": baseline_loss(baseline, x, config.train.eval_batch_size), **summary}
