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

from .checkpoint import read_json, write_json
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
    save: bool = True,
) -> dict:
    """Evaluate a run on ``split`` and write ``evaluation.json`` (unless ``save`` is false);
    see the module docstring.

    :param limit: evaluate the first ``limit`` images only (0 = all).
    """
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    run = load_run(run_dir)
    seed = run.config.train.seed
    data = _split(run, split, data_dir).subset(limit)
    observed = data.observed(eval_generator(seed))
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
            report["gap"] = amortization_gap(run, observed, num_samples, elbo_amortized=report["elbo"]["elbo"])
    if save:
        write_json(Path(run_dir) / EVALUATION_FILE, report)
    return report


def finished_evaluation(run_dir: str | Path, num_samples: int, images: int, epochs: int, gap: bool) -> dict | None:
    """The run's saved test evaluation if it used these settings (K, images, epochs, gap or not), else None."""
    report = read_json(Path(run_dir) / EVALUATION_FILE)
    if report is None:
        return None
    same = (report.get("split"), report.get("num_samples"), report.get("images"), report.get("epochs"))
    if same != ("test", num_samples, images, epochs) or ("gap" in report) != gap:
        return None
    return report


def amortization_gap(
    run: Run, data: ImageData, num_samples: int = 5000, elbo_amortized: float | None = None
) -> dict:
    """Cremer et al. (2018) decomposition of log p(x) - L[q_amortized] on ``data`` (nats per image).

    :param elbo_amortized: L[q_amortized] if already estimated on ``data`` (else estimated here).
    """
    if not is_amortized(run.guide):
        raise ConfigError("the amortization gap needs an amortized guide; this run's guide is mean_field")
    if run.vae.likelihood.convention != "log_likelihood":
        raise ConfigError(f"the amortization gap needs a proper likelihood: {NOT_A_DENSITY}")
    batch = run.config.train.eval_batch_size
    amortized = elbo_terms(run.vae, run.guide, data, batch)["elbo"] if elbo_amortized is None else elbo_amortized
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
            ("L[q*] (local fit)",
             f"{g['elbo_optimal']:.2f}  ({g['local_fit_steps']} steps, {g['local_fit_seconds']:.0f} s)"),
            ("log p(x) (q* proposal)", f"{g['log_likelihood']:.2f} +- {g['log_likelihood_stderr']:.2f}"),
            ("approximation gap", f"{g['approximation_gap']:.2f}"),
            ("amortization gap", f"{g['amortization_gap']:.2f}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _inference_seconds(run: Run, x: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds to infer q(z | x) for one new image: an encoder pass, or a local fit."""
    times = []
    for _ in range(repeats if is_amortized(run.guide) else 1):
        start = time.perf_counter()
        with torch.no_grad():
            if is_amortized(run.guide):
                run.guide.posterior(x[:1]).mean
            else:
                _local_guide(run, x[:1], init=None)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def compare(
    config_path: str | Path,
    out: str | Path,
    data_dir=None,
    num_samples: int = 5000,
    limit: int = 0,
    overrides: list[str] | None = None,
    progress: bool = True,
    log=print,
    overwrite: bool = False,
) -> dict:
    """Amortized vs mean-field on the same decoder, data, epochs and seed; then the amortization gap.

    Trains ``out/amortized`` and ``out/mean_field`` (or resumes them when present),
    evaluates both on the test set (the first ``limit`` images; 0 = all) and writes
    ``out/comparison.json``, ``out/comparison.md`` and ``out/amortization_gap.png``.
    """
    from .config import load_config
    from .plots_study import plot_amortization_gap
    from .runs import CHECKPOINT_FILE, METRICS_FILE
    from .train import resume, train

    out = Path(out)
    rows = {}
    for kind in ("amortized", "mean_field"):
        config = load_config(config_path, [*(overrides or []), f"guide.type={kind}"])
        run_dir = out / kind
        finished = read_json(run_dir / METRICS_FILE)
        if finished and finished["epochs"] == config.train.epochs and not overwrite:
            log(f"{run_dir}: finished run found, not trained again")
        elif (run_dir / CHECKPOINT_FILE).exists() and not overwrite:
            resume(run_dir, [f"train.epochs={config.train.epochs}"], data_dir, progress, log)
        else:
            train(config, run_dir, data_dir, progress, overwrite=overwrite, log=log)
        run = load_run(run_dir)
        test = _split(run, "test", data_dir).subset(limit).observed(eval_generator(run.config.train.seed))
        report = finished_evaluation(run_dir, num_samples, len(test), len(run.history), gap=kind == "amortized")
        if report is None:
            report = evaluate_run(run_dir, num_samples, "test", data_dir, iwae_samples=(), gap=kind == "amortized",
                                  limit=limit)
        else:
            log(f"{run_dir / EVALUATION_FILE}: test evaluation with K = {num_samples} found, not redone")
        train_report = evaluate_run(run_dir, 1, "train", data_dir, iwae_samples=(), limit=limit or 10000, save=False)
        rows[kind] = {
            "train_elbo": train_report["elbo"]["elbo"],
            "test_elbo": report["elbo"]["elbo"],
            "test_log_likelihood": report["log_likelihood"]["value"] if report["log_likelihood"] else None,
            "test_log_likelihood_stderr": report["log_likelihood"]["stderr"] if report["log_likelihood"] else None,
            "seconds_per_epoch": sum(r["seconds"] for r in run.history) / len(run.history),
            "variational_parameters": sum(p.numel() for p in run.guide.parameters()),
            "seconds_to_infer_one_image": _inference_seconds(run, test.images),
            "test_local_fit": report.get("local_fit"),
            "gap": report.get("gap"),
        }
    result = {"num_samples": num_samples, "test_images": report["images"], "epochs": len(run.history), **rows}
    write_json(out / "comparison.json", result)
    (out / "comparison.md").write_text(comparison_table(result))
    plot_amortization_gap(rows["amortized"]["gap"], out / "amortization_gap.png")
    log(comparison_table(result))
    return result


def comparison_table(result: dict) -> str:
    """Markdown: amortized and mean-field side by side, then the gap decomposition (nats per image)."""
    a, m = result["amortized"], result["mean_field"]

    def num(value, fmt="{:.2f}"):
        return "n/a" if value is None else fmt.format(value)

    fit = m["test_local_fit"] or {}
    lines = [
        f"| {result['epochs']} epochs, {result['test_images']:,} test images, K = {result['num_samples']:,} "
        "| amortized | mean-field |",
        "|---|---|---|",
        f"| train ELBO per image | {num(a['train_elbo'])} | {num(m['train_elbo'])} |",
        f"| test ELBO per image | {num(a['test_elbo'])} | {num(m['test_elbo'])} "
        f"(local fit: {fit.get('steps', '?')} steps, {num(fit.get('seconds'), '{:.0f}')} s) |",
        f"| test log p(x) (importance sampled) | {num(a['test_log_likelihood'])} +- "
        f"{num(a['test_log_likelihood_stderr'])} | {num(m['test_log_likelihood'])} +- "
        f"{num(m['test_log_likelihood_stderr'])} |",
        f"| seconds per epoch | {num(a['seconds_per_epoch'], '{:.1f}')} | {num(m['seconds_per_epoch'], '{:.1f}')} |",
        f"| variational parameters | {a['variational_parameters']:,} | {m['variational_parameters']:,} |",
        f"| seconds to infer one new image | {num(a['seconds_to_infer_one_image'], '{:.4f}')} | "
        f"{num(m['seconds_to_infer_one_image'], '{:.2f}')} |",
    ]
    g = a["gap"]
    if g:
        lines += [
            "",
            "| amortization gap (Cremer et al. 2018), nats per image | value |",
            "|---|---|",
            f"| log p(x) (K = {result['num_samples']}, q* proposal) | {g['log_likelihood']:.2f} |",
            f"| L[q*] (per-image Gaussians, decoder frozen, from the encoder) | {g['elbo_optimal']:.2f} |",
            f"| L[q amortized] | {g['elbo_amortized']:.2f} |",
            f"| approximation gap log p(x) - L[q*] | {g['approximation_gap']:.2f} |",
            f"| amortization gap L[q*] - L[q amortized] | {g['amortization_gap']:.2f} |",
        ]
    return "\n".join(lines) + "\n"
