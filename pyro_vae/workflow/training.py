"""A training run: parts from the config, the SVI loop with its hooks, the run directory, resumable.

A checkpoint holds the parameters, the optimizer moments, torch's global RNG state and, inside
an epoch, where the pass stopped (:meth:`~pyro_vae.workflow.loop.EpochState.position`), so a run
stopped anywhere and resumed from its last checkpoint ends bit for bit where an uninterrupted
run ends (on the CPU). :func:`train_or_resume` is the one lifecycle of ``pyro-vae train``,
``run``, ``compare`` and sweeps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI

from ..infer.objectives import KLWeight, kl_weighted
from ..infer.optim import adam, lr_factor
from ..models.guides import is_amortized
from .build import build_model, build_objective, check_config, resolve_device
from .completion import baseline_metrics, fit_baseline
from .checkpoint import (CheckpointError, check_entries, check_weights, load_checkpoint, read_json, save_checkpoint,
                         write_json)
from .config import Config, ConfigError, from_dict, load_config
from .data import ImageData, example_indices, load_run_sets
from .evaluation import EvaluatedSet, evaluate_test_set, evaluation_codes, snapshot_data
from .labels import labels_for, training_inputs
from .loop import CtrlC, EpochState, FiniteLoss, Hook, ProgressBar, StopRequested, TrainingError, run_epoch
from .runs import RunDir, best_epoch
from .rules import unused_keys
from .streams import flushed_subnormals

CHECKPOINT_FORMAT = 2  # 2: the optimizer state of pyro_vae.infer.optim's per-row Adam; 1 cannot be resumed

__all__ = ["CHECKPOINT_FORMAT", "Interrupted", "Trainer", "TrainingError", "resume", "train", "train_or_resume"]


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint of the last finished step was written first."""


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Trainer:
    """One training run into one run directory: fresh or resumed, trained, finished.

    Nothing global happens here until training starts (:meth:`start`: Pyro's param store,
    seed and validation, then the parts); the data come from the caller.

    :param config: the resolved, checked config.
    :param out: the run directory.
    :param validation: the held-out images (``data.validation_size``) whose loss picks the best epoch
        (its weights kept in the checkpoint's ``best`` entry, the final metrics made with them) and stops
        training early.
    """

    def __init__(self, config: Config, out: str | Path, train_data: ImageData, test_data: ImageData,
                 progress: bool = True, log=print, validation: ImageData | None = None, figures: bool = True):
        self.config, self.dir, self.progress, self.log = config, RunDir(out), progress, log
        self.figures = figures  # draw the run's figures at the end (``pyro-vae plot RUN`` draws them later)
        self.device = resolve_device(config.train.device)
        self.train_data, self.test_data = train_data.to(self.device), test_data.to(self.device)
        self.validation_data = None if validation is None else validation.to(self.device)
        self.best: dict | None = None  # {"epoch", "vae", "guide"}: the weights of the lowest validation loss yet
        self.history: list[dict] = []
        self.epoch = 0  # epochs finished
        self.position: dict | None = None  # inside epoch + 1, if it was interrupted
        self.seconds = 0.0  # training time so far, over all sessions
        self.snapshots: dict[str, dict] = {}  # str(epoch) -> take_snapshot(...), for train.snapshot_epochs
        self.evaluated: tuple[int, EvaluatedSet] | None = None  # (epoch, test evaluation) of the current parameters
        self.baseline_fit: dict | None = None  # image completion: the baseline's fit (fit_baseline's record)
        self.svi: SVI | None = None

    @property
    def out(self) -> Path:
        return self.dir.path

    def start(self) -> None:
        """Set Pyro's global state (param store, seed, validation) and build the parts and SVI (once)."""
        if self.svi is not None:
            return
        config, t = self.config, self.config.train
        check_config(config)
        pyro.clear_param_store()
        pyro.set_rng_seed(t.seed)
        pyro.enable_validation(t.validate)
        self.vae, self.guide = build_model(config, len(self.train_data))
        self.vae.to(self.device)
        self.guide.to(self.device)
        self.optimizer = adam(t.lr, config.guide.local_lr)
        self.kl_weight = KLWeight(t.beta, t.kl_anneal_steps)
        model, guide = self.vae.model, self.guide
        if self.kl_weight.active:
            model, guide = kl_weighted(model, self.kl_weight), kl_weighted(guide, self.kl_weight)
        self.svi = SVI(model, guide, self.optimizer, build_objective(config, len(self.train_data)))
        self.epoch_data, self.step_inputs = training_inputs(self.vae, self.train_data, config)
        self.steps_per_epoch = self.epoch_data.steps(t.batch_size)

    # --- checkpoints -------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "position": self.position,
            "num_data": len(self.train_data),
            "vae": self.vae.state_dict(),
            "guide": self.guide.state_dict(),
            "optimizer": self.optimizer.get_state(),
            "rng": torch.get_rng_state(),
            "history": self.history,
            "seconds": self.seconds,
            "snapshots": self.snapshots,
            "config": self.config.to_dict(),
            **({"best": self.best} if self.best is not None else {}),
            **({"baseline": self.baseline_fit} if self.baseline_fit is not None else {}),
        }

    def save(self) -> None:
        """Write the checkpoint; the one it replaces is kept as ``checkpoint.prev.pt``."""
        try:
            save_checkpoint(self.dir.checkpoint, self.state(), keep_previous=self.dir.previous_checkpoint)
            write_json(self.dir.history, self.history)
        except OSError as err:
            raise TrainingError(
                f"could not save {self.dir.checkpoint} ({err.strerror or err}); the previous checkpoint is kept: "
                f"free disk space and continue with --resume {self.out}"
            ) from None

    def restore(self, state: dict, path: Path | None = None) -> None:
        """Continue from ``state`` (this run's checkpoint, read from ``path``), every entry checked first.

        Raises :class:`CheckpointError` naming the entry that is missing or wrong (a tensor of
        another shape than the model's, a config that does not parse or is another run's), when
        the data differ, or when the checkpoint's format is not this version's.
        """
        path = Path(path) if path is not None else self.dir.checkpoint
        self.start()
        self.evaluated = None  # other weights from here on
        check_entries(state, path, fix=self.dir.earlier_copy_fix(path))
        if state["format"] == 1:
            raise CheckpointError(
                f"checkpoint {path} was written by an older pyro_vae (checkpoint format 1) whose optimizer state "
                f"differs, so training cannot continue from it; it can still be evaluated and plotted (pyro-vae "
                f"evaluate --run {self.dir.path}, pyro-vae plot --run {self.dir.path}): to train, start a new run"
            )
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {path} has format {state['format']!r}, but this pyro_vae writes and resumes format "
                f"{CHECKPOINT_FORMAT}; resume it with the pyro_vae that wrote it, or start a new run"
            )
        position = state["position"]
        wrong = [key for key, ok in {
            "epoch": isinstance(state["epoch"], int) and state["epoch"] >= 0,
            "position": position is None or isinstance(position, dict)
            and {"step", "generator", "loss_sum", "seen"} <= position.keys(),
            "num_data": isinstance(state["num_data"], int),
            "history": isinstance(state["history"], list),
            "seconds": isinstance(state["seconds"], (int, float)),
            "rng": torch.is_tensor(state["rng"]) and state["rng"].dtype == torch.uint8,
            "snapshots": isinstance(state.get("snapshots", {}), dict),
            "baseline": isinstance(state.get("baseline", {}), dict),
        }.items() if not ok]
        if wrong:
            found = ", ".join(f"{key} ({type(state[key]).__name__})" for key in wrong)
            raise CheckpointError(
                f"checkpoint {path} has a wrong {found}, not what pyro_vae train writes; "
                f"{self.dir.earlier_copy_fix(path)}"
            )
        if state["num_data"] != len(self.train_data):
            raise CheckpointError(
                f"checkpoint {path} was trained on {state['num_data']} images but the data now have "
                f"{len(self.train_data)}; restore data.train_size or start a new run"
            )
        try:
            if not isinstance(state["config"], dict):
                raise ConfigError(f"it is a {type(state['config']).__name__}, not a table")
            saved = from_dict(state["config"])
        except ConfigError as err:
            raise CheckpointError(
                f"checkpoint {path} holds a config that does not parse ({err}); "
                f"{self.dir.earlier_copy_fix(path)}"
            ) from None
        if saved.differences(self.config, ignore=LENGTH_KEYS):
            raise CheckpointError(
                f"{path} belongs to another config than {self.dir.config}; "
                f"restore the run's {self.dir.config.name} or start a new run"
            )
        for module, entry in ((self.vae, "vae"), (self.guide, "guide")):
            check_weights(module, state[entry], path, entry, config_file=self.dir.config.name)
        best = self._checked_best(state, path)
        try:
            self.optimizer.set_state(state["optimizer"])
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from None
        try:
            torch.set_rng_state(state["rng"])
        except RuntimeError:
            raise CheckpointError(
                f"checkpoint {path}: rng is not a torch RNG state; {self.dir.earlier_copy_fix(path)}"
            ) from None
        self.vae.load_state_dict(state["vae"])
        self.guide.load_state_dict(state["guide"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.history, self.seconds = list(state["history"]), state["seconds"]
        self.snapshots = dict(state.get("snapshots", {}))
        self.best = best
        self.baseline_fit = state.get("baseline")

    def _checked_best(self, state: dict, path: Path) -> dict | None:
        """The checkpoint's ``best`` entry, checked against its history (the epoch of its lowest
        validation loss) and the model's shapes; None when the history holds no validation loss."""
        wanted = best_epoch(state["history"])
        if wanted is None:
            return None
        best = state.get("best")
        if not isinstance(best, dict) or best.get("epoch") != wanted or not {"vae", "guide"} <= best.keys():
            raise CheckpointError(f"checkpoint {path} lacks the weights of its best epoch {wanted} (entry 'best'); "
                                  f"{self.dir.earlier_copy_fix(path)}")
        for module, entry in ((self.vae, "vae"), (self.guide, "guide")):
            check_weights(module, best[entry], path, f"best.{entry}", config_file=self.dir.config.name)
        return best

    # --- the loop ----------------------------------------------------------------------
    def hooks(self, progress: ProgressBar, ctrl_c: CtrlC) -> list[Hook]:
        """What runs around the SVI steps, in order: learning-rate and step schedules (KL weight, temperature),
        finite-loss check, progress, Ctrl-C; at each epoch's end the record, test evaluation, snapshot, checkpoint
        and log line; at the end the figures (after :meth:`finish` wrote the final metrics)."""
        return [_LRSchedule(self), _StepSchedules(self), FiniteLoss(), progress, ctrl_c, _EpochRecord(self),
                _TestEvaluation(self), _Validation(self), _Snapshot(self), _Checkpoint(self), _LogLine(self),
                *([_Figures(self)] if self.figures else [])]

    def run(self) -> Path:
        """Train the remaining epochs, then :meth:`finish` (metrics and figures), subnormal floats
        flushed to zero throughout (:func:`~pyro_vae.workflow.streams.flushed_subnormals`)."""
        with flushed_subnormals():
            return self._run()

    def _run(self) -> Path:
        self.start()
        cfg = self.config.train
        unused = unused_keys(self.config)
        if unused:
            self.log(f"note: {'; '.join(unused)}: set, but nothing in this config reads "
                     f"{'it' if len(unused) == 1 else 'them'}")
        if cfg.snapshot_epochs and not is_amortized(self.guide):
            self.log(f"guide.type = {self.config.guide.type}: the figures over training follow the first "
                     f"{len(self.test_data)} training images (the rows its Gaussians belong to), not the test set")
        if self.validation_data is not None and not is_amortized(self.guide):
            self.log(f"guide.type = {self.config.guide.type} has no encoder to score held-out images: the "
                     f"{len(self.validation_data)} validation images stay out of training but pick no best epoch"
                     + (f", and train.early_stopping = {cfg.early_stopping} is off" if cfg.early_stopping else ""))
            self.validation_data = None
        progress = ProgressBar(self.progress)
        with CtrlC() as ctrl_c:
            if self.vae.task == "completion" and self.baseline_fit is None:
                self.prepare_completion(ctrl_c)
            if self.epoch == 0 and self.position is None:
                self.snapshot()
            hooks = self.hooks(progress, ctrl_c)
            while not training_done(self.config, self.epoch, self.seconds, self.best_epoch):
                epoch = EpochState.begin(self.epoch_data, self.epoch + 1, cfg.seed, self.position)
                try:
                    run_epoch(self.svi, self.epoch_data, cfg.batch_size, epoch, hooks, self.step_inputs)
                except StopRequested:
                    self.seconds += epoch.seconds()
                    self.position = epoch.position()
                    self.save()
                    raise Interrupted(f"interrupted in epoch {epoch.number} after step {epoch.step}; checkpoint "
                                      f"saved: continue with pyro-vae train --resume {self.out}") from None
                finally:
                    progress.close()
                if ctrl_c.requested:
                    raise Interrupted(f"interrupted after epoch {epoch.number}; checkpoint saved: continue with "
                                      f"pyro-vae train --resume {self.out}")
        if self.epoch < cfg.epochs and self.seconds >= time_budget(self.config):
            self.log(f"train.max_minutes = {cfg.max_minutes:g} spent ({self.seconds / 60:.1f} minutes of training) "
                     f"after epoch {self.epoch} of {cfg.epochs}")
        elif self.epoch < cfg.epochs:
            self.log(f"early stop after epoch {self.epoch} of {cfg.epochs}: no lower validation loss for "
                     f"train.early_stopping = {cfg.early_stopping} epochs")
        metrics = self.finish()
        for hook in hooks:
            hook.training_finished()
        write_json(self.dir.metrics, metrics)  # last: a run with its metrics.json is whole, figures included
        self.log(
            f"test loss {metrics['test_loss']:.2f} per image (recon {-metrics['test_recon']:.2f} + "
            f"KL {metrics['test_kl']:.2f}); run written to {self.out}"
        )
        return self.out

    def prepare_completion(self, ctrl_c: CtrlC) -> None:
        """Image completion: fit the baseline the CVAE's prior reads (before epoch 1), then checkpoint it."""
        try:
            self.baseline_fit = fit_baseline(self.vae.baseline, self.epoch_data, self.validation_data, self.config,
                                             patience(self.config), self.log, hooks=[ctrl_c])
        except StopRequested:
            raise Interrupted("interrupted while fitting the completion baseline, before epoch 1: nothing to keep; "
                              f"run the command again (pyro-vae train --resume {self.out} refits it)") from None
        self.save()  # epoch 0 with the fitted baseline: a resumed run starts from here, not from a refit

    def snapshot(self) -> None:
        """Record :func:`take_snapshot` if the current epoch is one of ``train.snapshot_epochs``."""
        if self.epoch in self.config.train.snapshot_epochs and str(self.epoch) not in self.snapshots:
            self.vae.eval(), self.guide.eval()
            evaluated = self.evaluation_now()
            self.snapshots[str(self.epoch)] = take_snapshot(
                self.vae, self.guide, snapshot_data(self.guide, self.train_data, self.test_data), self.config,
                self.device, codes=None if evaluated is None or not is_amortized(self.guide) else evaluated.codes,
            )

    def evaluation_now(self) -> EvaluatedSet | None:
        """The test evaluation of the current parameters, if this epoch's hook made one."""
        if self.evaluated is not None and self.evaluated[0] == self.epoch and self.position is None:
            return self.evaluated[1]
        return None

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the lowest validation loss so far (the first such), None without a validation split."""
        return best_epoch(self.history)

    def keep_best(self) -> None:
        """Keep a copy of the current weights as the best epoch's (saved with the next checkpoint)."""
        self.best = {"epoch": self.epoch, **{entry: {k: v.detach().clone() for k, v in module.state_dict().items()}
                                             for module, entry in ((self.vae, "vae"), (self.guide, "guide"))}}

    def restore_best(self) -> None:
        """Load the best epoch's weights (if they are not the current ones)."""
        if self.best is None or self.best["epoch"] == self.epoch:
            return
        self.vae.load_state_dict(self.best["vae"])
        self.guide.load_state_dict(self.best["guide"])
        self.evaluated = None  # other weights than the last epoch's

    def finish(self) -> dict:
        """The final test metrics (:meth:`run` writes them to ``metrics.json`` after the figures), made
        with the best epoch's weights where a validation split picks one; keeps the test evaluation
        (the last epoch's, for an amortized guide: the same seeded numbers) for the figures."""
        self.restore_best()
        self.vae.eval(), self.guide.eval()
        self.test_evaluation = self.evaluation_now() or evaluate_test_set(
            self.vae, self.guide, self.test_data, self.config, self.device, cache=self.dir.local_fit)
        metrics = {f"test_{k}": v for k, v in self.test_evaluation.terms.items()}
        metrics.update({
            "train_loss": self.history[(self.best_epoch or self.epoch) - 1]["train_loss"],  # of these weights
            "epochs": self.epoch,
            "train_images": len(self.train_data),
            "test_images": len(self.test_data),
            "train_seconds": self.seconds,
            **self.validation_metrics(),
            "num_parameters": {
                "model": count_parameters(self.vae),
                "guide": count_parameters(self.guide),
                "total": count_parameters(self.vae) + count_parameters(self.guide),
            },
            "device": str(self.device),
        })
        if self.vae.task == "completion":  # the frozen baseline apart: its numbers, its parameters
            metrics["baseline"] = baseline_metrics(self.vae.baseline, self.baseline_fit, self.test_data, self.config)
            frozen = count_parameters(self.vae.baseline)
            metrics["num_parameters"].update(model=metrics["num_parameters"]["model"] - frozen, baseline=frozen,
                                             total=metrics["num_parameters"]["total"] - frozen)
        return metrics


    def validation_metrics(self) -> dict:
        """``best_epoch`` and its ``valid_loss``, when a validation split picks the epoch."""
        best = self.best_epoch
        if best is None:
            return {}
        record = self.history[best - 1]
        return {"best_epoch": best, "valid_loss": record["valid_loss"],
                **({"valid_accuracy": record["valid_accuracy"]} if "valid_accuracy" in record else {}),
                "validation_images": len(self.validation_data)}


def take_snapshot(vae, guide, data: ImageData, config: Config, device, codes: torch.Tensor | None = None) -> dict:
    """What the figures over training need from one moment: reconstructions of the example
    digits (:func:`~pyro_vae.workflow.data.example_indices`) and, for z_dim <= 3, every posterior
    mean of ``data`` (see :func:`snapshot_data`; ``split`` says which).

    :param codes: those posterior means if already computed (:attr:`EvaluatedSet.codes` of ``data``)."""
    y = labels_for(vae, data)
    if codes is None:
        codes = evaluation_codes(guide, data, config, device, y)
    shown = example_indices(data.labels)
    with torch.no_grad():
        snapshot = {"reconstructions": vae.reconstruction(codes[shown], data.images[shown],
                                                          None if y is None else y[shown]).cpu(),
                    "split": "test" if is_amortized(guide) else "train"}
    if vae.z_dim <= 3:
        snapshot["codes"] = codes.cpu()
    return snapshot


class _LRSchedule(Hook):
    """Set the epoch's learning rate (:func:`~pyro_vae.infer.optim.lr_factor` of its number) before its first step."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_started(self, epoch):
        t = self.trainer.config.train
        self.trainer.optimizer.set_lr_factor(lr_factor(t.lr_schedule, epoch.number, t.lr_decay, t.lr_milestones))


class _StepSchedules(Hook):
    """Set what changes with the step t (counted over the whole run) before each step: the KL weight beta_t
    and a guide's own schedule (``set_step``: the relaxed categorical's temperature)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_started(self, epoch):
        self.trainer.vae.train(), self.trainer.guide.train()

    def step_started(self, epoch):
        step = (epoch.number - 1) * self.trainer.steps_per_epoch + epoch.step + 1
        self.trainer.kl_weight.set_step(step)
        if hasattr(self.trainer.guide, "set_step"):
            self.trainer.guide.set_step(step)


class _EpochRecord(Hook):
    """The epoch is done: count it, add its record (train loss, seconds) to the history."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        t = self.trainer
        seconds = epoch.seconds()
        t.seconds += seconds
        t.epoch, t.position = epoch.number, None
        t.history.append({"epoch": epoch.number, "train_loss": epoch.loss, "seconds": seconds,
                          "lr": t.optimizer.lr * t.optimizer.lr_factor})
        t.vae.eval(), t.guide.eval()


class _TestEvaluation(Hook):
    """Test-set ELBO terms into the epoch's record (an amortized guide; a mean-field one is fitted at the end)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        t = self.trainer
        if is_amortized(t.guide):
            t.evaluated = (epoch.number, evaluate_test_set(t.vae, t.guide, t.test_data, t.config, t.device))
            terms = t.evaluated[1].terms
            t.history[-1].update({f"test_{k}": terms[k] for k in ("loss", "elbo", "recon", "kl", "accuracy")
                                  if k in terms})  # (accuracy: M2's classifier)


class _Validation(Hook):
    """The validation loss (the one-sample -ELBO of :func:`evaluate_test_set`, whatever the training
    objective) and M2's classifier accuracy into the epoch's record; the weights kept when the loss is the
    lowest yet."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        t = self.trainer
        if t.validation_data is None:
            return
        terms = evaluate_test_set(t.vae, t.guide, t.validation_data, t.config, t.device).terms
        t.history[-1]["valid_loss"] = terms["loss"]
        if "accuracy" in terms:  # M2's classifier q(y | x) on the held-out images
            t.history[-1]["valid_accuracy"] = terms["accuracy"]
        if t.best_epoch == epoch.number:
            t.keep_best()


class _Snapshot(Hook):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        self.trainer.snapshot()


class _Checkpoint(Hook):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        self.trainer.save()


class _Figures(Hook):
    """The run's figures, once training has finished (matplotlib is imported only here)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def training_finished(self):
        from .figures import draw_run_figures

        t = self.trainer
        draw_run_figures(t.dir, t.vae, t.test_evaluation.codes, t.test_data, t.history, t.config, t.device,
                         t.snapshots, snapshot_data(t.guide, t.train_data, t.test_data))


class _LogLine(Hook):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def epoch_finished(self, epoch):
        self.trainer.log(_epoch_line(self.trainer.history[-1], self.trainer.config.train.epochs))


def train(
    config: Config,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log=print,
    figures: bool = True,
) -> Path:
    """Train the VAE ``config`` describes and write the run directory ``out_dir``.

    Writes ``config.toml`` first, then after every epoch ``checkpoint.pt`` and
    ``history.json`` (atomically), and at the end ``metrics.json`` and (unless ``figures`` is false)
    ``figures/``.
    """
    check_config(config)
    run_dir = RunDir(out_dir).check_writable(overwrite)  # refuse before the data are loaded, write nothing
    train_data, test_data, validation = load_run_sets(config, data_dir)
    trainer = Trainer(config, run_dir.path, train_data, test_data, progress=progress, log=log, validation=validation,
                      figures=figures)
    run_dir.prepare(config, overwrite)
    return trainer.run()


def time_budget(config: Config) -> float:
    """Seconds of training ``train.max_minutes`` allows (infinite when it is 0)."""
    return 60.0 * config.train.max_minutes if config.train.max_minutes > 0 else math.inf


def patience(config: Config) -> float:
    """Epochs without a lower validation loss that ``train.early_stopping`` allows (infinite when 0)."""
    return config.train.early_stopping if config.train.early_stopping > 0 else math.inf


def training_done(config: Config, epochs: int, seconds: float, best: int | None = None) -> bool:
    """Whether a run that trained ``epochs`` epochs in ``seconds``, its best validation loss at epoch
    ``best``, is at its end: ``train.epochs`` reached, the time budget spent (checked between
    epochs, so the last epoch may overrun it), or ``train.early_stopping`` epochs without progress."""
    return (epochs >= config.train.epochs or seconds >= time_budget(config)
            or (best is not None and epochs - best >= patience(config)))


def finished_by(config: Config, metrics: dict) -> bool:
    """Whether the run whose ``metrics.json`` holds ``metrics`` is at its end under ``config`` (:func:`training_done`
    of its epochs, its training time and its best epoch)."""
    return training_done(config, metrics["epochs"], metrics.get("train_seconds", 0.0), metrics.get("best_epoch"))


LENGTH_KEYS = ("train.epochs", "train.max_minutes", "train.early_stopping")  # what may grow on resume


def _length_overrides(config: Config) -> list[str]:
    """``config``'s :data:`LENGTH_KEYS` as ``--set`` overrides."""
    return [f"{key}={getattr(config.train, key.partition('.')[2])!r}" for key in LENGTH_KEYS]


def _length(config: Config) -> str:
    """``config``'s :data:`LENGTH_KEYS` as ``key = value, ...`` for messages."""
    return ", ".join(override.replace("=", " = ") for override in _length_overrides(config))


def _same_run_or_refuse(config: Config, saved: Config, changed: str, shorter: str) -> None:
    """Refuse a config that differs from a run's ``saved`` one in anything but a longer run
    (more ``train.epochs``, a larger ``train.max_minutes`` or ``train.early_stopping``).

    :param changed: the message when keys differ, ``{}`` standing for their names.
    :param shorter: the message when ``config`` asks for a shorter run than the saved one, ``{}``
        standing for the keys that shrank.
    """
    keys = config.differences(saved, ignore=LENGTH_KEYS)
    if keys:
        raise ConfigError(changed.format(", ".join(keys)))
    shrunk = [key for key, new, old in (("train.epochs", config.train.epochs, saved.train.epochs),
                                        ("train.max_minutes", time_budget(config), time_budget(saved)),
                                        ("train.early_stopping", patience(config), patience(saved))) if new < old]
    if shrunk:
        raise ConfigError(shorter.format(", ".join(shrunk)))


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    log=print,
    figures: bool = True,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint.

    ``overrides`` may raise the :data:`LENGTH_KEYS` (train longer); any other change to the
    saved config is refused, since the run would no longer be one experiment.
    """
    run_dir = RunDir(run_dir)
    out = run_dir.path
    saved = run_dir.saved_config()
    run_dir.refuse_record()
    config = load_config(run_dir.config, overrides or [])
    _same_run_or_refuse(
        config, saved,
        changed=f"cannot resume {out} with a changed config ({{}}); only {', '.join(LENGTH_KEYS)} may change: "
                "start a new run with --out NEW_DIR instead",
        shorter=f"{{}} below the run's ({_length(config)} against {_length(saved)}; 0: no limit); resume can "
                "only train longer",
    )
    train_data, test_data, validation = load_run_sets(config, data_dir)
    trainer = Trainer(config, out, train_data, test_data, progress=progress, log=log,  # checks config
                      validation=validation, figures=figures)
    latest = run_dir.latest_checkpoint()
    if latest is not None:
        try:
            state = load_checkpoint(latest, map_location=trainer.device)
        except CheckpointError as err:
            previous = run_dir.previous_checkpoint
            if latest != previous and previous.exists():
                raise CheckpointError(
                    f"{err}; the previous checkpoint {previous} is intact: rename it to {latest.name} "
                    "to resume from it"
                ) from None
            raise
        trainer.restore(state, latest)  # checks every entry (and the config) before using any
    if config.differences(saved):  # a longer run
        config.save(run_dir.config)
        for stale in (run_dir.metrics, run_dir.evaluation, *run_dir.cross_evaluations()):  # the shorter run's:
            stale.unlink(missing_ok=True)  # the run is unfinished again
    done = f"epoch {trainer.epoch}" + (f", step {trainer.position['step']}" if trainer.position else "")
    log(f"resuming {out} after {done} of {config.train.epochs}")
    return trainer.run()


def train_or_resume(config: Config, out: str | Path, data_dir=None, overwrite: bool = False, progress: bool = True,
                    log=print, redraw: bool = True, figures: bool = True) -> bool:
    """Train ``config`` into ``out``, or finish or reuse the run already there: the one lifecycle of
    ``pyro-vae train``, ``run``, ``compare`` and sweeps.

    A run in ``out`` is reused only if its whole resolved config equals ``config`` and it finished
    (its ``metrics.json``, written last, is there, for ``train.epochs`` epochs or a spent
    ``train.max_minutes``; its figures redrawn when ``redraw``); it is resumed when it was stopped
    before its end or only its length grew (:data:`LENGTH_KEYS`), and refused in one line naming the
    keys that differ otherwise (``overwrite`` replaces it). ``figures=False`` trains without drawing.
    Returns whether a finished run was reused.
    """
    run_dir = RunDir(out)
    out = run_dir.path
    if run_dir.config.is_file() and not overwrite:  # a run, perhaps killed before its first checkpoint
        check_config(config)  # a bad config is named before the run is compared with it (train() checks its own)
        saved = run_dir.saved_config()
        _same_run_or_refuse(
            config, saved,
            changed=f"{out} holds a run with another config ({{}}); pass --overwrite to replace it or --out NEW_DIR",
            shorter=f"{out} holds a longer run than this config's: {{}} below the run's ({_length(config)} against "
                    f"{_length(saved)}; 0: no limit); pass --overwrite to replace it or --out NEW_DIR",
        )
        metrics = read_json(run_dir.metrics)
        if metrics and not config.differences(saved) and finished_by(config, metrics):
            log(f"{out}: finished run found, not trained again" + ("; redrawing its figures" if redraw else ""))
            if redraw:
                from .figures import redraw_figures  # matplotlib only where figures are drawn

                redraw_figures(out, data_dir)
            return True
        resume(out, _length_overrides(config), data_dir, progress, log, figures=figures)
        return False
    train(config, out, data_dir, progress, overwrite=overwrite, log=log, figures=figures)
    return False


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:8.2f}"
    if "test_loss" in record:
        line += (
            f"  test loss {record['test_loss']:8.2f} (recon {-record['test_recon']:.2f}"
            f" + KL {record['test_kl']:.2f})"
        )
    if "test_accuracy" in record:
        line += f"  accuracy {record['test_accuracy']:.4f}"
    if "valid_loss" in record:
        line += f"  valid loss {record['valid_loss']:8.2f}"
    return line + f"  {record['seconds']:.1f} s"
