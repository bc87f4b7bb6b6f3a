"""Run directories: what a training run writes, and :func:`load_run` to get it back.

A run directory holds ``config.toml`` (the resolved config), ``history.json`` (one
record per epoch), ``metrics.json`` (final test metrics), ``checkpoint.pt`` (model,
guide, optimizer and random states) and ``figures/``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .build import build_model
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, load_config
from .guides import Guide
from .vae import VAE

CONFIG_FILE = "config.toml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
FIGURES_DIR = "figures"
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)


def holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def prepare_run_dir(path: str | Path, config: Config, overwrite: bool = False, dry_run: bool = False) -> Path:
    """Create the run directory and write ``config.toml``; refuse to clobber another run.

    Raises :class:`ConfigError` (before writing anything) when ``path`` already holds a
    run and ``overwrite`` is false. With ``dry_run`` only the checks are made.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory; choose another --out")
    if holds_run(path):
        if not overwrite:
            raise ConfigError(
                f"run directory {path} already holds a run; pass --out NEW_DIR for a new run "
                "or --overwrite to replace it, or --resume it"
            )
    if dry_run:
        return path
    if holds_run(path):
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        shutil.rmtree(path / FIGURES_DIR, ignore_errors=True)
    (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    config.save(path / CONFIG_FILE)
    return path


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
    """Load a run directory: ``load_run("runs/vae_2d").vae.sample_prior(16)``."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE}); pass the --out of a training run")
    config = load_config(path / CONFIG_FILE)
    state = load_checkpoint(path / CHECKPOINT_FILE, map_location=device)
    num_data = int(state.get("num_data", 0))
    vae, guide = build_model(config, num_data)
    try:
        vae.load_state_dict(state["vae"])
        guide.load_state_dict(state["guide"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path / CHECKPOINT_FILE} does not match {path / CONFIG_FILE} ({first[:200]}); "
            "the config was edited after training: restore it or retrain"
        ) from None
    vae.to(device).eval()
    guide.to(device).eval()
    metrics_file = path / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return Run(path, config, vae, guide, list(state.get("history", [])), metrics, dict(state.get("snapshots", {})))
