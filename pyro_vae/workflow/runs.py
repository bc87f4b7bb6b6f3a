"""Run directories: :class:`RunDir` names every file a run writes; :func:`load_run` gets a run back.

A run directory holds ``config.toml`` (the resolved config), ``history.json`` (one
record per epoch), ``metrics.json`` (final test metrics), ``checkpoint.pt`` (model,
guide, optimizer and random states) and ``figures/``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.guides import Guide
from ..models.vae import VAE
from .build import build_model
from .checkpoint import CheckpointError, check_entries, check_weights, load_checkpoint, read_json
from .config import Config, ConfigError, load_config


class RunDir:
    """A results directory and the name of every file in it; nothing else spells them.

    A training run writes ``config``, ``history``, ``metrics``, ``checkpoint`` (and
    ``previous_checkpoint``), ``figures/`` and, for a mean-field guide, the ``local_fit`` cache;
    ``pyro-vae evaluate`` adds ``evaluation``; an experiment's folder holds ``experiment`` and,
    for a comparison or a sweep, its table and figure (the runs in subfolders).
    """

    COMPARED = ("amortized", "mean_field")  # a comparison's two runs, in subfolders named by their guide.type

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config = property(lambda self: self.path / "config.toml")
    history = property(lambda self: self.path / "history.json")
    metrics = property(lambda self: self.path / "metrics.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    previous_checkpoint = property(lambda self: self.path / "checkpoint.prev.pt")
    figures = property(lambda self: self.path / "figures")
    local_fit = property(lambda self: self.path / "test_local_fit.pt")  # a mean-field run's test-image fit (a cache)
    evaluation = property(lambda self: self.path / "evaluation.json")

    def cross_evaluation(self, family: str) -> Path:
        """Where ``pyro-vae evaluate --gap`` with q* of another family writes: ``family`` is the ``--q-family``, or
        ``flow_<run>`` for the flows of ``--flows-from <run>``."""
        return self.path / f"evaluation_q_{family}.json"

    def cross_evaluations(self) -> list[Path]:
        """The cross-family evaluations written so far (:meth:`cross_evaluation`)."""
        return sorted(self.path.glob(self.cross_evaluation("*").name))
    experiment = property(lambda self: self.path / "experiment.json")
    comparison = property(lambda self: self.path / "comparison.json")
    comparison_table = property(lambda self: self.path / "comparison.md")
    gap_figure = property(lambda self: self.path / "amortization_gap.png")
    sweep = property(lambda self: self.path / "sweep.json")
    gaps = property(lambda self: self.path / "gaps.json")  # a gap experiment's cells, each with its report
    anomaly = property(lambda self: self.path / "anomaly.json")  # an anomaly experiment's AUROC per score
    roc_figure = property(lambda self: self.path / "roc.png")
    auroc_figure = property(lambda self: self.path / "auroc.png")  # an anomaly sweep's AUROC per member and score
    score_histograms = property(lambda self: self.path / "score_histograms.png")
    sweep_figure = property(lambda self: self.path / "sweep.png")
    accuracy_figure = property(lambda self: self.path / "accuracy.png")  # an M2 sweep's accuracy by labelled size

    def earlier_copy_fix(self, damaged: Path | None = None) -> str:
        """What to do about a damaged checkpoint (``damaged``, default the latest) of this run: use the
        previous copy where there is one other than the damaged file, else start anew."""
        damaged = self.checkpoint if damaged is None else Path(damaged)
        previous = self.previous_checkpoint
        if previous.exists() and previous.resolve() != damaged.resolve():
            return f"use the earlier copy {previous} or start a new run"
        return "start a new run (no earlier copy to fall back on)"

    def run_files(self) -> tuple[Path, ...]:
        """The files a training run (and its evaluation) writes, ``figures/`` aside."""
        return (self.config, self.history, self.metrics, self.checkpoint, self.previous_checkpoint, self.local_fit,
                self.evaluation, *self.cross_evaluations())

    def holds_run(self) -> bool:
        return any(path.exists() for path in self.run_files())

    def saved_config(self) -> Config:
        if not self.config.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no {self.config.name}); pass the --out of "
                              "a training run")
        return load_config(self.config)

    def epochs_done(self) -> int:
        """How many epochs ``history.json`` records (0 without one): what a saved evaluation's ``epochs`` is."""
        history = read_json(self.history)
        return len(history) if isinstance(history, list) else 0

    def holds_record(self) -> bool:
        """Whether the folder holds a finished run's numbers without its weights (a record,
        :mod:`pyro_vae.workflow.records`): ``metrics.json`` and no checkpoint."""
        return self.metrics.is_file() and self.latest_checkpoint() is None

    def refuse_record(self) -> None:
        """Raise :class:`CheckpointError` where the folder holds a record (:meth:`holds_record`): nothing to load
        or resume."""
        if self.holds_record():
            raise CheckpointError(f"{self.path} holds a finished run's numbers without its weights (a record kept "
                                  "by pyro-vae report); train the run again into another --out to get its weights")

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint to resume from: the latest, or the previous one when a save stopped
        between its two renames; None when there is neither."""
        for path in (self.checkpoint, self.previous_checkpoint):
            if path.exists():
                return path
        return None

    def check_writable(self, overwrite: bool = False) -> "RunDir":
        """Raise :class:`ConfigError`, writing nothing, when the directory already holds a run and
        ``overwrite`` is false, or cannot be a folder (under a regular file, a name too long, no
        permission); what :meth:`prepare` checks first, for callers that load data in between."""
        path = self.path
        try:
            if path.exists() and not path.is_dir():
                raise ConfigError(f"--out {path} is a file, not a directory; choose another --out")
            existing = path
            while not existing.exists() and existing != existing.parent:  # the nearest folder that exists
                existing = existing.parent
            if not existing.is_dir():
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            if not os.access(existing, os.W_OK | os.X_OK):
                raise OSError(errno.EACCES, os.strerror(errno.EACCES))
            if self.holds_run() and not overwrite:
                raise ConfigError(
                    f"run directory {path} already holds a run; pass --out NEW_DIR for a new run "
                    "or --overwrite to replace it"
                )
        except OSError as err:
            raise _out_error(path, err) from None
        return self

    def prepare(self, config: Config, overwrite: bool = False) -> "RunDir":
        """Create the directory and write ``config.toml`` after :meth:`check_writable` (refusing to clobber
        another run); a failed write leaves no empty folders behind."""
        path = self.check_writable(overwrite).path
        created = [folder for folder in (self.figures, path, *path.parents) if not folder.exists()]
        doing = "create the folder"
        try:
            if self.holds_run():
                for file in self.run_files():
                    file.unlink(missing_ok=True)
                shutil.rmtree(self.figures, ignore_errors=True)
            self.figures.mkdir(parents=True, exist_ok=True)
            doing = f"write {self.config.name}"
            config.save(self.config)
        except OSError as err:
            for folder in created:  # deepest first: leave no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise _out_error(path, err, doing) from None
        return self


def _out_error(path: Path, err: OSError, doing: str = "create the folder") -> ConfigError:
    return ConfigError(f"--out {path}: cannot {doing} ({err.strerror or err}): choose another --out")


def best_epoch(history: list[dict]) -> int | None:
    """The epoch of the lowest ``valid_loss`` in a run's ``history`` (the first such; a loss that is not
    finite counts as infinite), None if none was recorded (no validation split)."""
    scored = [(loss if math.isfinite(loss) else math.inf, record["epoch"])
              for record in history if (loss := record.get("valid_loss")) is not None]
    return min(scored)[1] if scored else None


def best_accuracy_epoch(history: list[dict]) -> dict | None:
    """Pyro's semi-supervised tutorial's pick for M2: the first epoch of the highest ``valid_accuracy`` (q(y | x) on
    the validation images, whose labels it uses) in ``history``, as ``{"epoch", "valid_accuracy",
    "test_accuracy"}`` (that epoch's test accuracy, also recorded each epoch); None without a validation accuracy."""
    scored = [record for record in history if record.get("valid_accuracy") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda record: (record["valid_accuracy"], -record["epoch"]))
    return {"epoch": best["epoch"], "valid_accuracy": best["valid_accuracy"],
            "test_accuracy": best.get("test_accuracy")}


@dataclass
class Run:
    """A finished (or interrupted) run loaded back: parts ready for evaluation and plots."""

    dir: RunDir
    config: Config
    vae: VAE
    guide: Guide
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # str(epoch) -> reconstructions (and codes) then

    @property
    def path(self) -> Path:
        return self.dir.path


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run directory: ``load_run("runs/vae_2d").vae.sample_prior(16)``.

    Needs only the checkpoint's weights (``vae``, ``guide``, ``num_data``) and ``config.toml``,
    so checkpoints of every format load, including those too old to resume training from. A run
    with a validation split gets the weights of its best epoch (the checkpoint's ``best`` entry),
    those its metrics were made with.
    """
    run_dir = RunDir(path)
    config = run_dir.saved_config()
    run_dir.refuse_record()
    checkpoint = run_dir.checkpoint
    state = load_checkpoint(checkpoint, map_location=device)
    check_entries(state, checkpoint, ("num_data", "vae", "guide"), fix=run_dir.earlier_copy_fix(checkpoint))
    num_data = state["num_data"]
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise CheckpointError(f"checkpoint {checkpoint}: num_data is {num_data!r}, not a number of images; retrain")
    vae, guide = build_model(config, num_data)
    weights = state.get("best", state)  # the best epoch's, where a validation split chose one
    if not isinstance(weights, dict) or not {"vae", "guide"} <= weights.keys():
        raise CheckpointError(f"checkpoint {checkpoint}: its entry 'best' is not the weights train writes; "
                              f"{run_dir.earlier_copy_fix(checkpoint)}")
    for module, entry in ((vae, "vae"), (guide, "guide")):
        check_weights(module, weights[entry], checkpoint, entry, config_file=run_dir.config.name)
        module.load_state_dict(weights[entry])
    vae.to(device).eval()
    guide.to(device).eval()
    metrics = read_json(run_dir.metrics) or {}
    history, snapshots = state.get("history"), state.get("snapshots")
    return Run(run_dir, config, vae, guide, history if isinstance(history, list) else [], metrics,
               snapshots if isinstance(snapshots, dict) else {})
