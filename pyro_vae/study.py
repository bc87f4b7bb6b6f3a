"""Evaluating a trained run: log-likelihood report and the amortization gap.

``evaluate_run`` writes ``evaluation.json`` in a run directory: the ELBO and its terms,
the importance-sampled log p(x) with K samples and its standard error, IWAE bounds for
smaller K, and the active units. With ``gap=True`` it also measures, after Cremer, Li
and Duvenaud (2018), on the same images:

    approximation gap = log p(x) - L[q*],   amortization gap = L[q*] - L[q_amortized],

where q* are per-datapoint Gaussians fitted by SVI with the decoder frozen, started at
the encoder's output, and log p(x) is estimated with q* as the proposal.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .checkpoint import write_json
from .config import ConfigError
from .data import ImageData, load_data
from .evaluate import active_units, elbo_terms, importance_log_likelihood
from .guides import Guide, fit_local, is_amortized
from .runs import Run, load_run
from .train import eval_generator, seeded

EVALUATION_FILE = "evaluation.json"
SPLITS = ("test", "train")
NOT_A_DENSITY = (
    "grey-value pixels under a Bernoulli: -BCE is not a normalised log-density, so no "
    "log-likelihood is reported; train with data.pixels = 'dynamic' or 'threshold', or "
    "model.likelihood = 'continuous_bernoulli'"
)


def _split(run: Run, split: str, data_dir) -> ImageData:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    c = run.config.data
    train, test = load_data(c.dataset, c.pixels, data_dir, c.train_size, c.test_size)
    return test if split == "test" else train


def _observed(data: ImageData, seed: int) -> ImageData:
    """Fix the pixels once (one binarization in dynamic mode), so every estimate sees the same x."""
    x = data.pixels_at(torch.arange(len(data)), eval_generator(seed))
    return ImageData(x, data.labels, "grayscale")  # "grayscale": hand the fixed pixels on as they are


def _local_guide(run: Run, x: torch.Tensor, init: Guide | None) -> tuple[Guide, float]:
    g = run.config.guide
    start = time.perf_counter()
    local = fit_local(run.vae, x, init=init, steps=g.local_steps, lr=g.local_lr, init_scale=g.init_scale,
                      batch_size=run.config.train.eval_batch_size)
    return local, time.perf_counter() - start


def evaluate_run(
    run_dir: str | Path,
    num_samples: int = 5000,
    split: str = "test",
    data_dir=None,
    iwae_samples: tuple[int, ...] = (1, 10, 100),
    gap: bool = False,
    limit: int = 0,
) -> dict:
    """Evaluate a run on ``split`` and write ``evaluation.json``; see the module docstring.

    :param limit: evaluate the first ``limit`` images only (0 = all).
    """
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    run = load_run(run_dir)
    seed = run.config.train.seed
    data = _split(run, split, data_dir).subset(limit)
    observed = _observed(data, seed)
    x = observed.images
    report: dict = {"split": split, "images": len(data), "num_samples": num_samples,
                    "convention": run.vae.likelihood.convention, "epochs": len(run.history)}
    proper = run.vae.likelihood.convention == "log_likelihood"
    with seeded(seed + 3):
        guide, fit_seconds = run.guide, None
        if not is_amortized(guide) and split == "test":  # on "train" it has its own rows
            guide, fit_seconds = _local_guide(run, x, init=None)
            report["local_fit"] = {"steps": run.config.guide.local_steps, "seconds": fit_seconds}
        report["elbo"] = elbo_terms(run.vae, guide, observed, run.config.train.eval_batch_size)
        report["active_units"] = active_units(guide, observed)["active_units"]
        if proper:
            start = time.perf_counter()
            ll = importance_log_likelihood(run.vae, guide, observed, num_samples)
            report["log_likelihood"] = {"value": ll["log_likelihood"], "stderr": ll["stderr"],
                                        "seconds": time.perf_counter() - start}
            report["iwae"] = {
                str(k): importance_log_likelihood(run.vae, guide, observed, k)["log_likelihood"]
                for k in iwae_samples if k < num_samples
            }
        else:
            report["log_likelihood"] = None
            report["note"] = NOT_A_DENSITY
        if gap:
            report["gap"] = amortization_gap(run, observed, num_samples)
    write_json(Path(run_dir) / EVALUATION_FILE, report)
    return report


def amortization_gap(run: Run, data: ImageData, num_samples: int = 5000) -> dict:
    """Cremer et al. (2018) decomposition of log p(x) - L[q_amortized] on ``data`` (nats per image)."""
    if not is_amortized(run.guide):
        raise ConfigError("the amortization gap needs an amortized guide; this run's guide is mean_field")
    if run.vae.likelihood.convention != "log_likelihood":
        raise ConfigError(f"the amortization gap needs a proper likelihood: {NOT_A_DENSITY}")
    batch = run.config.train.eval_batch_size
    amortized = elbo_terms(run.vae, run.guide, data, batch)["elbo"]
    optimal_guide, seconds = _local_guide(run, data.images, init=run.guide)
    optimal = elbo_terms(run.vae, optimal_guide, data, batch)["elbo"]
    ll = importance_log_likelihood(run.vae, optimal_guide, data, num_samples)
    return {
        "log_likelihood": ll["log_likelihood"],
        "log_likelihood_stderr": ll["stderr"],
        "elbo_amortized": amortized,
        "elbo_optimal": optimal,
        "approximation_gap": ll["log_likelihood"] - optimal,
        "amortization_gap": optimal - amortized,
        "local_fit_steps": run.config.guide.local_steps,
        "local_fit_seconds": seconds,
    }


def format_report(report: dict) -> str:
    """A plain-text table of an evaluation report."""
    e = report["elbo"]
    rows = [
        ("images", f"{report['images']} ({report['split']})"),
        ("-ELBO per image", f"{-e['elbo']:.2f}  (recon {-e['recon']:.2f} + KL {e['kl']:.2f}, KL {e['kl_estimator']})"),
        ("active units", str(report["active_units"])),
    ]
    if report["log_likelihood"] is None:
        rows.append(("log p(x)", "not reported: " + report["note"]))
    else:
        ll = report["log_likelihood"]
        rows.append((f"log p(x), K={report['num_samples']}", f"{ll['value']:.2f} +- {ll['stderr']:.2f}"))
        for k, value in report["iwae"].items():
            rows.append((f"IWAE bound, K={k}", f"{value:.2f}"))
    if "gap" in report:
        g = report["gap"]
        rows += [
            ("L[q amortized]", f"{g['elbo_amortized']:.2f}"),
            ("L[q*] (local fit)", f"{g['elbo_optimal']:.2f}  ({g['local_fit_steps']} steps, {g['local_fit_seconds']:.0f} s)"),
            ("log p(x) (q* proposal)", f"{g['log_likelihood']:.2f} +- {g['log_likelihood_stderr']:.2f}"),
            ("approximation gap", f"{g['approximation_gap']:.2f}"),
            ("amortization gap", f"{g['amortization_gap']:.2f}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
