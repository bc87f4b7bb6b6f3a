"""The SVI training loop and a whole training run (data -> parts -> SVI -> files), resumable.

Each step is ``svi.step(x, idx)`` on a minibatch; the returned loss estimates the
full-data -ELBO (the ``data`` plate scales the batch by N / B), so per-image numbers
divide by N. Epoch e's order (and dynamic binarization) comes from a generator seeded
by ``(seed, e)``; a checkpoint holds that generator's state, torch's global RNG state,
the parameters and the optimizer moments, so a run stopped anywhere and resumed from
its last checkpoint ends bit-for-bit where an uninterrupted run ends (on the CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from tqdm import tqdm

from . import plots
from .build import build_model, check_config, resolve_device
from .checkpoint import CheckpointError, check_entries, check_weights, load_checkpoint, save_checkpoint, write_json
from .config import Config, ConfigError, from_dict, load_config
from .data import ImageData, load_data
from .evaluate import elbo_terms, posterior_means
from .guides import Guide, MeanField, is_amortized
from .local_fit import fit_local
from .objectives import KLWeight, build_objective, kl_weighted
from .optim import adam
from .runs import (
    CHECKPOINT_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    HISTORY_FILE,
    LOCAL_FIT_FILE,
    METRICS_FILE,
    load_run,
    prepare_run_dir,
)
from .vae import VAE

CHECKPOINT_FORMAT = 2  # 2: the optimizer state of pyro_vae.optim's per-row Adam; 1 cannot be resumed


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a failed save); the message says where and why."""


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint of the last finished step was written first."""


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that draws epoch ``epoch``'s batch order and dynamic binarizations."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def eval_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for evaluation, the same every epoch (same test binarization each time)."""
    return epoch_generator(seed, -1, device)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Run a block on torch's global RNG seeded with ``seed``, then restore the previous state.

    Evaluation runs inside it, so its Monte-Carlo draws are a fixed function of the
    parameters and never move the training run's random stream.
    """
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


class _StopRequest:
    """While active, Ctrl-C only sets ``requested``; the loop stops at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train_epoch(
    svi: SVI,
    data: ImageData,
    batch_size: int,
    generator: torch.Generator,
    epoch: int,
    progress: bool = True,
    position: dict | None = None,
    stop: _StopRequest | None = None,
    on_step=None,
) -> tuple[float, dict | None]:
    """One pass of SVI steps over ``data``.

    :param position: where a previous, interrupted pass of this epoch stopped
        (``step``, ``generator`` state, ``loss_sum``, ``seen``); the pass goes on from there.
    :param on_step: called with the step number (1-based, within the epoch) before each step.
    :returns: ``(mean training loss per image, None)``, or ``(nan, position)`` when a
        stop was requested: ``position`` then says where to go on from.
    """
    n = len(data)
    order = data.order(generator)
    done, total, seen = 0, 0.0, 0
    if position is not None:
        done, total, seen = position["step"], position["loss_sum"], position["seen"]
        generator.set_state(position["generator"])
    bar = tqdm(total=n, initial=seen, desc=f"epoch {epoch}", unit="img", leave=False,
               disable=None if progress else True, file=sys.stderr)
    for step, (idx, x) in enumerate(data.batches_in(order, batch_size, generator, start=done), start=done + 1):
        if on_step is not None:
            on_step(step)
        loss = svi.step(x, idx) / n  # per-image -ELBO estimate from this batch
        if not math.isfinite(loss):
            bar.close()
            raise TrainingError(
                f"loss became {loss} at epoch {epoch}, step {step}; lower train.lr or check for "
                "a variance collapsing to zero (the last good checkpoint is kept)"
            )
        total += loss * len(idx)
        seen += len(idx)
        bar.update(len(idx))
        bar.set_postfix(loss=f"{total / seen:.2f}")
        if stop is not None and stop.requested and seen < n:
            bar.close()
            return math.nan, {"step": step, "generator": generator.get_state(), "loss_sum": total, "seen": seen}
    bar.close()
    return total / seen, None


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fingerprint(*tensors: torch.Tensor, extra: object = None) -> str:
    """A hash of tensors' bytes (and ``repr(extra)``): what a cached result was computed from."""
    digest = hashlib.sha256(repr(extra).encode())
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fit_test_images(vae: VAE, x: torch.Tensor, config: Config, cache: Path | None = None) -> tuple[Guide, dict]:
    """Per-image Gaussians for new images ``x`` (a mean-field run's test set), decoder frozen.

    The fit (:func:`pyro_vae.local_fit.fit_local` with the [guide] settings) runs on its own
    seeded stream and is kept in ``cache`` with a fingerprint of the decoder's weights, the
    images and the settings; a later call with the same three reads it back instead of refitting.
    """
    options = config.guide.local_fit_options()
    key = _fingerprint(*vae.state_dict().values(), x, extra=(options, config.train.seed,
                                                             config.train.eval_batch_size))
    if cache is not None and cache.is_file():
        try:
            saved = load_checkpoint(cache, map_location=x.device)
        except CheckpointError:
            saved = None
        if saved is not None and saved.get("key") == key:
            return MeanField(x.shape[0], vae.z_dim, saved["loc"], saved["scale"], sparse=False), saved["summary"]
    with seeded(config.train.seed + 1, x.device):
        fit = fit_local(vae, x, batch_size=config.train.eval_batch_size, **options)
    q = fit.guide.posterior(x)
    summary = fit.summary()
    if cache is not None:
        save_checkpoint(cache, {"key": key, "loc": q.mean.detach(), "scale": q.stddev.detach(), "summary": summary})
    return fit.guide, summary


def evaluate_test_set(vae: VAE, guide: Guide, test: ImageData, config: Config, device,
                      cache: Path | None = None) -> tuple[dict, Guide]:
    """Test-set ELBO terms and the guide they used (mean-field: :func:`fit_test_images`, cached in ``cache``).

    Runs under :func:`seeded`, so the same parameters always give the same numbers.
    """
    with seeded(config.train.seed + 1, device):
        observed = test.observed(eval_generator(config.train.seed, device))
        local = {}
        if not is_amortized(guide):
            guide, summary = fit_test_images(vae, observed.images, config, cache)
            local = {"local_fit": summary}
        terms = elbo_terms(vae, guide, observed, config.train.eval_batch_size)
    return {**terms, **local}, guide


def evaluation_codes(guide: Guide, test: ImageData, config: Config, device) -> torch.Tensor:
    """Posterior means E_q[z | x] of the test images (the evaluation's fixed binarization)."""
    observed = test.observed(eval_generator(config.train.seed, device))
    return posterior_means(guide, observed, config.train.eval_batch_size)


def snapshot_data(guide: Guide, train: ImageData, test: ImageData) -> ImageData:
    """The images the figures over training follow: the test set, or for a guide without an
    encoder (mean-field) as many training images, the rows its Gaussians belong to."""
    return test if is_amortized(guide) else train.subset(len(test))


def take_snapshot(vae: VAE, guide: Guide, data: ImageData, config: Config, device) -> dict:
    """What the figures over training need from one moment: reconstructions of the example
    digits (:func:`plots.example_indices`) and, for z_dim <= 3, every posterior mean of ``data``
    (see :func:`snapshot_data`; ``split`` says which)."""
    codes = evaluation_codes(guide, data, config, device)
    with torch.no_grad():
        snapshot = {"reconstructions": vae.decode_mean(codes[plots.example_indices(data.labels)]).cpu(),
                    "split": "test" if is_amortized(guide) else "train"}
    if vae.z_dim <= 3:
        snapshot["codes"] = codes.cpu()
    return snapshot


def draw_run_figures(
    out: Path, vae: VAE, test_guide: Guide, test: ImageData, history: list[dict], config: Config, device,
    snapshots: dict | None = None, snapshot_images: ImageData | None = None,
) -> list[Path]:
    """A run's figures in ``out/figures``, from the test posterior means; prior samples on a seeded stream.

    :param snapshot_images: the images the snapshots follow (:func:`snapshot_data`; default ``test``).
    """
    codes = evaluation_codes(test_guide, test, config, device)
    with seeded(config.train.seed + 2, device):
        return plots.draw_figures(out / FIGURES_DIR, vae, test, codes, history, snapshots=snapshots,
                                  snapshot_images=snapshot_images)


class Trainer:
    """One training run in one run directory: start fresh or resume, train, finish.

    :param config: the resolved config (checked before anything is loaded or written).
    :param out: the run directory.
    """

    def __init__(self, config: Config, out: Path, data_dir=None, progress: bool = True, log=print):
        check_config(config)
        self.config, self.out, self.progress, self.log = config, Path(out), progress, log
        self.device = resolve_device(config.train.device)
        self.train_data, self.test_data = load_data(
            config.data.dataset, config.data.pixels, data_dir,
            config.data.train_size, config.data.test_size, self.device,
        )
        pyro.clear_param_store()
        pyro.set_rng_seed(config.train.seed)
        pyro.enable_validation(config.train.validate)
        self.vae, self.guide = build_model(config, len(self.train_data))
        self.vae.to(self.device)
        self.guide.to(self.device)
        t = config.train
        self.optimizer = adam(t.lr, config.guide.local_lr)
        self.kl_weight = KLWeight(t.beta, t.kl_anneal_steps)
        model, guide = self.vae.model, self.guide
        if self.kl_weight.active:
            model, guide = kl_weighted(model, self.kl_weight), kl_weighted(guide, self.kl_weight)
        objective = build_objective(t.objective, t.num_particles, t.free_bits, t.beta, t.kl_anneal_steps)
        self.svi = SVI(model, guide, self.optimizer, objective)
        self.steps_per_epoch = math.ceil(len(self.train_data) / t.batch_size)
        self.history: list[dict] = []
        self.epoch = 0  # epochs finished
        self.position: dict | None = None  # inside epoch + 1, if it was interrupted
        self.seconds = 0.0  # training time so far, over all sessions
        self.snapshots: dict[str, dict] = {}  # str(epoch) -> take_snapshot(...), for train.snapshot_epochs

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
        }

    def save(self) -> None:
        """Write the checkpoint; the one it replaces is kept as ``checkpoint.prev.pt``."""
        path = self.out / CHECKPOINT_FILE
        try:
            save_checkpoint(path, self.state(), keep_previous=self.out / PREVIOUS_CHECKPOINT_FILE)
            write_json(self.out / HISTORY_FILE, self.history)
        except OSError as err:
            raise TrainingError(
                f"could not save {path} ({err.strerror or err}); the previous checkpoint is kept: "
                f"free disk space and continue with --resume {self.out}"
            ) from None

    def restore(self, state: dict, path: Path | None = None) -> None:
        """Continue from ``state`` (this run's checkpoint, read from ``path``), every entry checked first.

        Raises :class:`CheckpointError` naming the entry that is missing or wrong (a tensor of
        another shape than the model's, a config that does not parse or is another run's), when
        the data differ, or when the checkpoint's format is not this version's.
        """
        path = Path(path) if path is not None else self.out / CHECKPOINT_FILE
        check_entries(state, path)
        if state["format"] == 1:
            raise CheckpointError(
                f"checkpoint {path} was written by an older pyro_vae (checkpoint format 1) whose optimizer state "
                f"differs, so training cannot continue from it; it can still be evaluated and plotted (pyro-vae "
                f"evaluate --run {self.out}, pyro-vae plot --run {self.out}): to train, start a new run"
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
        }.items() if not ok]
        if wrong:
            found = ", ".join(f"{key} ({type(state[key]).__name__})" for key in wrong)
            raise CheckpointError(
                f"checkpoint {path} has a wrong {found}, not what pyro_vae train writes; use an earlier "
                "copy (checkpoint.prev.pt) or start a new run"
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
                f"checkpoint {path} holds a config that does not parse ({err}); use an earlier copy "
                "(checkpoint.prev.pt) or start a new run"
            ) from None
        if saved.differences(self.config, ignore=["train.epochs"]):
            raise CheckpointError(
                f"{path} belongs to another config than {self.out / CONFIG_FILE}; "
                "restore the run's config.toml or start a new run"
            )
        check_weights(self.vae, state["vae"], path, "vae")
        check_weights(self.guide, state["guide"], path, "guide")
        try:
            self.optimizer.set_state(state["optimizer"])
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from None
        try:
            torch.set_rng_state(state["rng"])
        except RuntimeError:
            raise CheckpointError(
                f"checkpoint {path}: rng is not a torch RNG state; use an earlier copy (checkpoint.prev.pt) "
                "or start a new run"
            ) from None
        self.vae.load_state_dict(state["vae"])
        self.guide.load_state_dict(state["guide"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.history, self.seconds = list(state["history"]), state["seconds"]
        self.snapshots = dict(state.get("snapshots", {}))

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> Path:
        """Train the remaining epochs, checkpointing after each; then metrics and figures."""
        cfg = self.config.train
        if cfg.snapshot_epochs and not is_amortized(self.guide):
            self.log(f"guide.type = {self.config.guide.type}: the figures over training follow the first "
                     f"{len(self.test_data)} training images (the rows its Gaussians belong to), not the test set")
        if self.epoch == 0 and self.position is None:
            self.snapshot()
        with _StopRequest() as stop:
            while self.epoch < cfg.epochs:
                epoch = self.epoch + 1
                start = time.perf_counter()
                self.vae.train(), self.guide.train()
                first_step = (epoch - 1) * self.steps_per_epoch
                loss, self.position = train_epoch(
                    self.svi, self.train_data, cfg.batch_size, epoch_generator(cfg.seed, epoch, self.device),
                    epoch, self.progress, self.position, stop,
                    on_step=lambda step: self.kl_weight.set_step(first_step + step),
                )
                self.seconds += time.perf_counter() - start
                if self.position is not None:
                    self.save()
                    raise Interrupted(
                        f"interrupted in epoch {epoch} after step {self.position['step']}; "
                        f"checkpoint saved: continue with pyro-vae train --resume {self.out}"
                    )
                self.epoch = epoch
                self.vae.eval(), self.guide.eval()
                record = {"epoch": epoch, "train_loss": loss, "seconds": time.perf_counter() - start}
                if is_amortized(self.guide):
                    terms, _ = evaluate_test_set(self.vae, self.guide, self.test_data, self.config, self.device)
                    record.update({f"test_{k}": terms[k] for k in ("loss", "elbo", "recon", "kl")})
                self.history.append(record)
                self.snapshot()
                self.save()
                self.log(_epoch_line(record, cfg.epochs))
                if stop.requested:
                    raise Interrupted(
                        f"interrupted after epoch {epoch}; checkpoint saved: continue with "
                        f"pyro-vae train --resume {self.out}"
                    )
        return self.finish()

    def snapshot(self) -> None:
        """Record :func:`take_snapshot` if the current epoch is one of ``train.snapshot_epochs``."""
        if self.epoch in self.config.train.snapshot_epochs and str(self.epoch) not in self.snapshots:
            self.vae.eval(), self.guide.eval()
            self.snapshots[str(self.epoch)] = take_snapshot(
                self.vae, self.guide, snapshot_data(self.guide, self.train_data, self.test_data), self.config,
                self.device,
            )

    def finish(self) -> Path:
        self.vae.eval(), self.guide.eval()
        terms, test_guide = evaluate_test_set(self.vae, self.guide, self.test_data, self.config, self.device,
                                              cache=self.out / LOCAL_FIT_FILE)
        metrics = {f"test_{k}": v for k, v in terms.items()}
        metrics.update({
            "train_loss": self.history[-1]["train_loss"],
            "epochs": self.epoch,
            "train_images": len(self.train_data),
            "test_images": len(self.test_data),
            "train_seconds": self.seconds,
            "num_parameters": {
                "model": count_parameters(self.vae),
                "guide": count_parameters(self.guide),
                "total": count_parameters(self.vae) + count_parameters(self.guide),
            },
            "device": str(self.device),
        })
        write_json(self.out / METRICS_FILE, metrics)
        draw_run_figures(self.out, self.vae, test_guide, self.test_data, self.history, self.config, self.device,
                         self.snapshots, snapshot_data(self.guide, self.train_data, self.test_data))
        self.log(
            f"test loss {metrics['test_loss']:.2f} per image (recon {-metrics['test_recon']:.2f} + "
            f"KL {metrics['test_kl']:.2f}); run written to {self.out}"
        )
        return self.out


def train(
    config: Config,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Train the VAE ``config`` describes and write the run directory ``out_dir``.

    Writes ``config.toml`` first, then after every epoch ``checkpoint.pt`` and
    ``history.json`` (atomically), and at the end ``metrics.json`` and ``figures/``.
    """
    check_config(config)
    out = Path(out_dir)
    prepare_run_dir(out, config, overwrite, dry_run=True)  # refuse early, write nothing
    trainer = Trainer(config, out, data_dir, progress, log)
    prepare_run_dir(out, config, overwrite)
    return trainer.run()


def _same_run_or_refuse(config: Config, saved: Config, changed: str, shorter: str) -> None:
    """Refuse a config that differs from a run's ``saved`` one in anything but more epochs.

    :param changed: the message when keys differ, ``{}`` standing for their names.
    :param shorter: the message when ``config`` asks for fewer epochs than the run has.
    """
    keys = config.differences(saved, ignore=["train.epochs"])
    if keys:
        raise ConfigError(changed.format(", ".join(keys)))
    if config.train.epochs < saved.train.epochs:
        raise ConfigError(shorter)


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint.

    ``overrides`` may raise ``train.epochs`` (train longer); any other change to the
    saved config is refused, since the run would no longer be one experiment.
    """
    out = Path(run_dir)
    if not (out / CONFIG_FILE).is_file():
        raise ConfigError(f"{out} is not a run directory (no {CONFIG_FILE}); pass the --out of a training run")
    saved = load_config(out / CONFIG_FILE)
    config = load_config(out / CONFIG_FILE, overrides or [])
    _same_run_or_refuse(
        config, saved,
        changed=f"cannot resume {out} with a changed config ({{}}); only train.epochs may change: start a new run "
                "with --out NEW_DIR instead",
        shorter=f"train.epochs = {config.train.epochs} is below the run's {saved.train.epochs}; resume can only "
                "train longer",
    )
    trainer = Trainer(config, out, data_dir, progress, log)
    latest = out / CHECKPOINT_FILE
    if not latest.exists() and (out / PREVIOUS_CHECKPOINT_FILE).exists():
        latest = out / PREVIOUS_CHECKPOINT_FILE  # stopped between the two renames of a save
    if latest.exists():
        try:
            state = load_checkpoint(latest, map_location=trainer.device)
        except CheckpointError as err:
            previous = out / PREVIOUS_CHECKPOINT_FILE
            if latest != previous and previous.exists():
                raise CheckpointError(
                    f"{err}; the previous checkpoint {previous} is intact: rename it to {latest.name} "
                    "to resume from it"
                ) from None
            raise
        trainer.restore(state, latest)  # checks every entry (and the config) before using any
    if config.train.epochs != saved.train.epochs:
        config.save(out / CONFIG_FILE)
    done = f"epoch {trainer.epoch}" + (f", step {trainer.position['step']}" if trainer.position else "")
    log(f"resuming {out} after {done} of {config.train.epochs}")
    return trainer.run()


def redraw_figures(run_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Draw a run's figures again from its directory (the test data are reloaded)."""
    run = load_run(run_dir)
    config = run.config
    train_data, test_data = load_data(
        config.data.dataset, config.data.pixels, data_dir, config.data.train_size, config.data.test_size
    )
    _, test_guide = evaluate_test_set(run.vae, run.guide, test_data, config, "cpu", cache=run.path / LOCAL_FIT_FILE)
    return draw_run_figures(run.path, run.vae, test_guide, test_data, run.history, config, "cpu", run.snapshots,
                            snapshot_data(run.guide, train_data, test_data))


def train_or_resume(config: Config, out: str | Path, data_dir=None, overwrite: bool = False, progress: bool = True,
                    log=print, redraw: bool = True) -> bool:
    """Train ``config`` into ``out``, or finish or reuse the run already there: the one lifecycle of
    ``pyro-vae run``, ``compare`` and sweeps.

    A run in ``out`` is reused only if its whole resolved config equals ``config`` (finished:
    kept, its figures redrawn when ``redraw``), resumed if only ``train.epochs`` grew, and
    refused in one line naming the keys that differ otherwise (``overwrite`` replaces it).
    Returns whether a finished run was reused.
    """
    out = Path(out)
    if (out / CHECKPOINT_FILE).exists() and not overwrite:
        saved = load_config(out / CONFIG_FILE)
        _same_run_or_refuse(
            config, saved,
            changed=f"{out} holds a run with another config ({{}}); pass --overwrite to replace it or --out NEW_DIR",
            shorter=f"{out} holds a run of {saved.train.epochs} epochs, more than train.epochs = "
                    f"{config.train.epochs}; pass --overwrite to replace it or --out NEW_DIR",
        )
        if (out / METRICS_FILE).exists() and saved.train.epochs == config.train.epochs:
            log(f"{out}: finished run found, not trained again" + ("; redrawing its figures" if redraw else ""))
            if redraw:
                redraw_figures(out, data_dir)
            return True
        resume(out, [f"train.epochs={config.train.epochs}"], data_dir, progress, log)
        return False
    train(config, out, data_dir, progress, overwrite=overwrite, log=log)
    return False


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:8.2f}"
    if "test_loss" in record:
        line += (
            f"  test loss {record['test_loss']:8.2f} (recon {-record['test_recon']:.2f}"
            f" + KL {record['test_kl']:.2f})"
        )
    return line + f"  {record['seconds']:.1f} s"
