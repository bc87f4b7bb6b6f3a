"""Records of finished runs: the small files of a trained and evaluated run (its config, history, metrics and
evaluation; no weights), kept beside the experiment file so that a sweep longer than one machine's life can be
finished on another.

``pyro-vae report`` keeps the record of each sweep member whose run in ``runs/NAME/<member>`` finished and was
evaluated under the experiment file as it is, in ``experiments/results/NAME/<member>/``
(:func:`keep_records`). ``pyro-vae run NAME`` puts a member's record back into a run directory that holds no run
(:func:`restore_records`) in place of training the member again, where the record is what the sweep would make
of that member (:func:`finished_record`): its config, its training at its end, the evaluation the sweep makes.
A restored member has no weights: its numbers enter the sweep; its own figures are not drawn again (a member whose
figures the experiment publishes is never restored, nor are records put back for a notebook, which shows the runs'
figures), another K or a longer run of it is refused in one line, and a command that needs its weights says that
it holds a record. Records are kept only where ``pyro-vae report`` runs: run it, and commit
``experiments/results/NAME/``, before the machine is given up.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .build import proper_density
from .checkpoint import atomic_write_bytes, read_json
from .config import Config, ConfigError, load_config
from .evaluation import finished_evaluation, run_settings
from .runs import RunDir
from .training import finished_by

RESULTS_DIR = "results"  # beside the experiment files: each experiment's numbers, as the report reads them
RECORD_FILES = ("config", "history", "evaluation", "metrics")  # the RunDir files a record holds, metrics.json last


def results_dir(experiments_dir: str | Path) -> Path:
    return Path(experiments_dir) / RESULTS_DIR


def record_dir(experiment_path: str | Path, name: str, member: str) -> Path:
    """Where the record of sweep member ``member`` of experiment ``name`` (its file at ``experiment_path``) is kept."""
    return results_dir(Path(experiment_path).parent) / name / member


def needs_evaluation(config: Config) -> bool:
    """Whether a sweep evaluates this member on the test set: a proper density (its log p(x)), M2 (its classifier's
    accuracy) or image completion (its -BCE). (The sweep's rule, here so that a record is judged by it too.)"""
    return proper_density(config) or config.model.labels == "latent" or bool(config.model.completion)


def finished_record(run_dir: str | Path, config: Config, num_samples: int) -> bool:
    """Whether ``run_dir`` holds what a sweep makes of ``config``, weights or not: that config (keys added since
    at their defaults), its training at its end and, where the member is evaluated (:func:`needs_evaluation`,
    K = ``num_samples`` > 0), the test-set evaluation made with exactly those settings."""
    run = RunDir(run_dir)
    metrics = read_json(run.metrics)
    if not isinstance(metrics, dict) or not run.config.is_file():
        return False
    try:
        saved = load_config(run.config)
    except ConfigError:
        return False
    if saved.differences(config) or not finished_by(config, metrics):
        return False
    if num_samples <= 0 or not needs_evaluation(config):
        return True
    settings = run_settings(config, run.epochs_done(), "test", num_samples, metrics["test_images"])
    return finished_evaluation(run_dir, settings) is not None


def recorded_evaluation(run_dir: str | Path, config: Config, num_samples: int) -> dict | None:
    """The evaluation a :func:`finished_record` in ``run_dir`` holds for the sweep: its ``evaluation.json``, or
    None where the sweep evaluates nothing of it."""
    return read_json(RunDir(run_dir).evaluation) if needs_evaluation(config) and num_samples > 0 else None


def copy_record(source: str | Path, target: str | Path) -> None:
    """Copy :data:`RECORD_FILES` of the run in ``source`` to ``target``, replacing what it held: written into a
    folder beside it and renamed, so that a copy cut short leaves the old record or none, never a mix of two."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name in RECORD_FILES:
            path = getattr(RunDir(source), name)
            if path.is_file():
                atomic_write_bytes(getattr(RunDir(staging), name), path.read_bytes())
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def keep_records(experiment_path: str | Path, name: str, members: list[tuple[object, str, Config]],
                 runs_dir: str | Path, num_samples: int) -> list[str]:
    """Keep the record of each member ``(value, subfolder, config)`` whose run in ``runs_dir/name/<subfolder>`` is
    :func:`finished_record` (:func:`record_dir`); returns the subfolders kept."""
    kept = []
    for _, sub, config in members:
        run_dir = Path(runs_dir) / name / sub
        if finished_record(run_dir, config, num_samples):
            copy_record(run_dir, record_dir(experiment_path, name, sub))
            kept.append(sub)
    return kept


def restore_records(experiment_path: str | Path, name: str, members: list[tuple[object, str, Config]], out: Path,
                    num_samples: int, published: list[str] = (), log=print) -> None:
    """Put back into ``out/<subfolder>`` the kept record of each member whose folder there holds no run, where the
    record is :func:`finished_record` of that member's config and none of the ``published`` figures (paths in
    ``out``) lies in the member's folder (a record has no figures)."""
    for _, sub, config in members:
        run_dir, kept = out / sub, record_dir(experiment_path, name, sub)
        if any(Path(figure).parts[0] == sub for figure in published):
            continue
        if RunDir(run_dir).holds_run() or not finished_record(kept, config, num_samples):
            continue
        copy_record(kept, run_dir)
        log(f"{run_dir}: restored the record kept in {kept} (numbers without weights: its figures are not drawn)")
