"""Run directories: what a training run writes, and :func:`load_run` to get it back.

A run directory holds ``config.toml`` (the resolved config), ``history.json`` (one
record per epoch), ``metrics.json`` (final test metrics), ``checkpoint.pt`` (model,
guide, optimizer and random states) and ``figures/``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .build import build_model
from .checkpoint import CheckpointError, check_entries, check_weights, load_checkpoint
from .config import Config, ConfigError, load_config
from .guides import Guide
from .vae import VAE

CONFIG_FILE = "config.toml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
FIGURES_DIR = "figures"
LOCAL_FIT_FILE = "test_local_fit.pt"  # a mean-field run's Gaussians for the test images (a cache)
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, LOCAL_FIT_FILE)


def holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def prepare_run_dir(path: str | Path, config: Config, overwrite: bool = False, dry_run: bool = False) -> Path:
    """Create the run directory and write ``config.toml``; refuse to clobber another run.

    Raises :class:`ConfigError` (before writing anything) when ``path`` already holds a
    run and ``overwrite`` is false, or cannot be a folder (under a regular file, a name too
    long, no permission). With ``dry_run`` only the checks are made.
    """
    path = Path(path)
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
        if holds_run(path) and not overwrite:
            raise ConfigError(
                f"run directory {path} already holds a run; pass --out NEW_DIR for a new run "
                "or --overwrite to replace it, or --resume it"
            )
    except OSError as err:
        raise _out_error(path, err) from None
    if dry_run:
        return path
    created = [folder for folder in (path / FIGURES_DIR, path, *path.parents) if not folder.exists()]
    doing = "create the folder"
    try:
        if holds_run(path):
            for name in RUN_FILES:
                (path / name).unlink(missing_ok=True)
            shutil.rmtree(path / FIGURES_DIR, ignore_errors=True)
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
        doing = f"write {CONFIG_FILE}"
        config.save(path / CONFIG_FILE)
    except OSError as err:
        for folder in created:  # deepest first: leave no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise _out_error(path, err, doing) from None
    return path


def _out_error(path: Path, err: OSError, doing: str = "create the folder") -> ConfigError:
    return ConfigError(f"--out {path}: cannot {doing} ({err.strerror or err}): choose another --out")


@dataclass
class Run:
    """A finished (or interrupted) run loaded back: parts ready for evaluation and plots."""

    path: Path
    config: Config
    vae: VAE
    guide: Guide
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # str(epoch) -> reconstructions (and codes) then


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run directory: ``load_run("runs/vae_2d").vae.sample_prior(16)``.

    Needs only the checkpoint's weights (``vae``, ``guide``, ``num_data``) and ``config.toml``,
    so checkpoints of every format load, including those too old to resume training from.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE}); pass the --out of a training run")
    config = load_config(path / CONFIG_FILE)
    checkpoint = path / CHECKPOINT_FILE
    state = load_checkpoint(checkpoint, map_location=device)
    check_entries(state, checkpoint, ("num_data", "vae", "guide"))
    num_data = state["num_data"]
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise CheckpointError(f"checkpoint {checkpoint}: num_data is {num_data!r}, not a number of images; retrain")
    vae, guide = build_model(config, num_data)
    for module, entry in ((vae, "vae"), (guide, "guide")):
        check_weights(module, state[entry], checkpoint, entry)
    vae.load_state_dict(state["vae"])
    guide.load_state_dict(state["guide"])
    vae.to(device).eval()
    guide.to(device).eval()
    metrics_file = path / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    history, snapshots = state.get("history"), state.get("snapshots")
    return Run(path, config, vae, guide, history if isinstance(history, list) else [], metrics,
               snapshots if isinstance(snapshots, dict) else {})
