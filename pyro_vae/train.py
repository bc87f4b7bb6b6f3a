"""The SVI training loop and a whole training run (data -> parts -> SVI -> files).

Each step is ``svi.step(x, idx)`` on a minibatch; the returned loss estimates the
full-data -ELBO (the ``data`` plate scales the batch by N / B), so per-image numbers
divide by N. Epoch e's order (and dynamic binarization) comes from a generator seeded
by ``(seed, e)``, so a run is repeatable and any epoch can be replayed on its own.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from . import plots
from .build import build_model, check_config, resolve_device
from .checkpoint import save_checkpoint, write_json
from .config import Config
from .data import ImageData, load_data
from .evaluate import elbo_terms, posterior_means
from .guides import Guide, fit_local, is_amortized
from .objectives import build_objective
from .optim import adam
from .runs import CHECKPOINT_FILE, FIGURES_DIR, HISTORY_FILE, METRICS_FILE, load_run, prepare_run_dir
from .vae import VAE


class TrainingError(RuntimeError):
    """Training cannot go on (for example a NaN loss); the message says where and why."""


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


def train_epoch(
    svi: SVI,
    data: ImageData,
    batch_size: int,
    generator: torch.Generator,
    epoch: int,
    progress: bool = True,
) -> float:
    """One pass of SVI steps over ``data``; returns the mean training loss (-ELBO) per image."""
    n = len(data)
    total, seen = 0.0, 0
    bar = tqdm(
        total=n, desc=f"epoch {epoch}", unit="img", leave=False, disable=None if progress else True,
        file=sys.stderr,
    )
    for step, (idx, x) in enumerate(data.batches(batch_size, generator), start=1):
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
    bar.close()
    return total / seen


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_metrics(
    vae: VAE, guide: Guide, test: ImageData, config: Config, device
) -> tuple[dict, Guide]:
    """Test-set ELBO terms and the guide they used (mean-field: fitted locally, decoder frozen).

    Runs under :func:`seeded`, so the same parameters always give the same numbers.
    """
    with seeded(config.train.seed + 1, device):
        return _test_metrics(vae, guide, test, config, device)


def _test_metrics(vae, guide, test, config, device):
    local = {}
    if not is_amortized(guide):
        start = time.perf_counter()
        guide = fit_local(
            vae,
            test.pixels_at(torch.arange(len(test), device=device), eval_generator(config.train.seed, device)),
            steps=config.guide.local_steps,
            lr=config.guide.local_lr,
            init_scale=config.guide.init_scale,
            batch_size=config.train.eval_batch_size,
        ).to(device)
        local = {"local_fit_steps": config.guide.local_steps, "local_fit_seconds": time.perf_counter() - start}
    terms = elbo_terms(
        vae, guide, test, config.train.eval_batch_size, eval_generator(config.train.seed, device)
    )
    return {**terms, **local}, guide


def _record(epoch: int, train_loss: float, seconds: float, terms: dict | None) -> dict:
    record = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds}
    if terms is not None:
        record.update({f"test_{k}": terms[k] for k in ("loss", "elbo", "recon", "kl")})
    return record


def train(
    config: Config,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Train the VAE ``config`` describes and write the run directory ``out_dir``.

    Writes ``config.toml`` first, then after every epoch ``history.json`` and
    ``checkpoint.pt`` (atomically), and at the end ``metrics.json`` and ``figures/``.
    """
    check_config(config)
    device = resolve_device(config.train.device)
    cfg = config.train
    train_data, test_data = load_data(
        config.data.dataset, config.data.pixels, data_dir,
        config.data.train_size, config.data.test_size, device,
    )
    out = prepare_run_dir(out_dir, config, overwrite)

    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    pyro.enable_validation(cfg.validate)
    vae, guide = build_model(config, len(train_data))
    vae.to(device)
    guide.to(device)
    optimizer = adam(cfg.lr)
    svi = SVI(vae.model, guide, optimizer, build_objective(cfg.objective, cfg.num_particles))

    history: list[dict] = []
    run_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        vae.train(), guide.train()
        train_loss = train_epoch(
            svi, train_data, cfg.batch_size, epoch_generator(cfg.seed, epoch, device), epoch, progress
        )
        seconds = time.perf_counter() - start
        vae.eval(), guide.eval()
        terms = None
        if is_amortized(guide):
            terms, _ = test_metrics(vae, guide, test_data, config, device)
        history.append(_record(epoch, train_loss, seconds, terms))
        save_checkpoint(
            out / CHECKPOINT_FILE,
            {
                "format": 1,
                "epoch": epoch,
                "num_data": len(train_data),
                "vae": vae.state_dict(),
                "guide": guide.state_dict(),
                "optimizer": optimizer.get_state(),
                "rng": torch.get_rng_state(),
                "history": history,
                "config": config.to_dict(),
            },
        )
        write_json(out / HISTORY_FILE, history)
        log(_epoch_line(history[-1], cfg.epochs))

    terms, test_guide = test_metrics(vae, guide, test_data, config, device)
    metrics = {f"test_{k}": v for k, v in terms.items()}
    metrics.update(
        {
            "train_loss": history[-1]["train_loss"],
            "epochs": cfg.epochs,
            "train_images": len(train_data),
            "test_images": len(test_data),
            "train_seconds": time.perf_counter() - run_start,
            "num_parameters": {
                "model": count_parameters(vae),
                "guide": count_parameters(guide),
                "total": count_parameters(vae) + count_parameters(guide),
            },
            "device": str(device),
        }
    )
    write_json(out / METRICS_FILE, metrics)
    codes = posterior_means(test_guide, test_data, cfg.eval_batch_size)
    plots.draw_figures(out / FIGURES_DIR, vae, test_data, codes, history)
    log(
        f"test loss {metrics['test_loss']:.2f} per image (recon {-metrics['test_recon']:.2f} + "
        f"KL {metrics['test_kl']:.2f}); run written to {out}"
    )
    return out


def redraw_figures(run_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Draw a run's figures again from its directory (the test data are reloaded)."""
    run = load_run(run_dir)
    config = run.config
    _, test_data = load_data(
        config.data.dataset, config.data.pixels, data_dir, config.data.train_size, config.data.test_size
    )
    pyro.set_rng_seed(config.train.seed)
    _, test_guide = test_metrics(run.vae, run.guide, test_data, config, "cpu")
    codes = posterior_means(test_guide, test_data, config.train.eval_batch_size)
    return plots.draw_figures(run.path / FIGURES_DIR, run.vae, test_data, codes, run.history)


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:8.2f}"
    if "test_loss" in record:
        line += (
            f"  test loss {record['test_loss']:8.2f} (recon {-record['test_recon']:.2f}"
            f" + KL {record['test_kl']:.2f})"
        )
    return line + f"  {record['seconds']:.1f} s"
