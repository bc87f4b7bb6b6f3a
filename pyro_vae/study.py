"""Evaluating a trained run: log-likelihood report and the amortization gap.

``evaluate_run`` writes ``evaluation.json`` in a run directory: the ELBO and its terms,
the importance-sampled log p(x) with K samples and its standard error, IWAE bounds for
smaller K, and the active units. With ``gap=True`` it also measures, after Cremer, Li
and Duvenaud (2018), on the same images:

    approximation gap = log p(x) - L[q*],   amortization gap = L[q*] - L[q_amortized],

where q* are per-image Gaussians of the guide's own family (diagonal or full covariance),
fitted with the decoder frozen from the encoder's output until the stopping rule of
:mod:`pyro_vae.local_fit` holds, and checked by :func:`~pyro_vae.local_fit.refinement_gain`
on the first images. log p(x) is importance-sampled with the defensive mixture
(q + q*) / 2 as the proposal: q* is the better proposal where the encoder is off, q where
q* is too narrow, and the mixture's weights are at most twice either one's.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .checkpoint import read_json, write_json
from .config import ConfigError
from .data import ImageData, load_data
from .evaluate import DefensiveMixture, active_units, elbo_terms, importance_log_likelihood, stderr
from .guides import Guide, is_amortized
from .local_fit import LocalFit, fit_local, guide_family, mean_elbo, refinement_gain
from .runs import LOCAL_FIT_FILE, Run, load_run
from .train import eval_generator, fit_test_images, seeded, train_or_resume

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


def _local_fit(run: Run, x: torch.Tensor, init: Guide | None) -> LocalFit:
    """Per-image Gaussians for ``x`` in the run's guide family, decoder frozen (settings from [guide])."""
    family = guide_family(run.guide)
    return fit_local(run.vae, x, init=init, family=family, batch_size=run.config.train.eval_batch_size,
                     **run.config.guide.local_fit_options())


def evaluation_settings(run: Run, split: str, num_samples: int, images: int, gap: bool) -> dict:
    """What an evaluation's numbers depend on: the run's whole config, its epochs, the split, K,
    the number of images and whether the gap was measured. A saved evaluation is reused only
    when these are equal."""
    return {"split": split, "num_samples": num_samples, "images": images, "gap": gap,
            "epochs": len(run.history), "config": run.config.to_dict()}


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
                    "convention": run.vae.likelihood.convention, "epochs": len(run.history),
                    "settings": evaluation_settings(run, split, num_samples, len(data), gap)}
    proper = run.vae.likelihood.convention == "log_likelihood"
    if gap:
        _check_gap(run)
    with seeded(seed + 3):
        guide = run.guide
        if not is_amortized(guide) and split == "test":  # on "train" it has its own rows
            guide, report["local_fit"] = fit_test_images(run.vae, x, run.config, cache=run.path / LOCAL_FIT_FILE)
        report["elbo"] = elbo_terms(run.vae, guide, observed, run.config.train.eval_batch_size)
        report["active_units"] = active_units(guide, observed)["active_units"]
        if not proper:
            report["log_likelihood"] = None
            report["note"] = NOT_A_DENSITY
        elif gap:  # one K-sample estimate, with the better proposal, serves both
            report["gap"] = amortization_gap(run, observed, num_samples)
            report["log_likelihood"] = dict(report["gap"]["log_likelihood"])
        else:
            start = time.perf_counter()
            ll = importance_log_likelihood(run.vae, guide, observed, num_samples)
            report["log_likelihood"] = {"value": ll["log_likelihood"], "stderr": ll["stderr"], "proposal": "q",
                                        "seconds": time.perf_counter() - start}
        if proper:
            report["iwae"] = {
                str(k): importance_log_likelihood(run.vae, guide, observed, k)["log_likelihood"]
                for k in iwae_samples if k < num_samples
            }
    if save:
        write_json(Path(run_dir) / EVALUATION_FILE, report)
    return report


def finished_evaluation(run_dir: str | Path, settings: dict) -> dict | None:
    """The run's saved evaluation if it was made with exactly these :func:`evaluation_settings`, else None."""
    report = read_json(Path(run_dir) / EVALUATION_FILE)
    if report is None or report.get("settings") != settings:
        return None
    return report


def _check_gap(run: Run) -> None:
    if not is_amortized(run.guide):
        raise ConfigError("the amortization gap needs an amortized guide; this run's guide is mean_field")
    if run.vae.likelihood.convention != "log_likelihood":
        raise ConfigError(f"the amortization gap needs a proper likelihood: {NOT_A_DENSITY}")
    try:
        guide_family(run.guide)
    except ValueError as err:
        raise ConfigError(f"the amortization gap needs q* in the guide's family: {err}") from None


CONVERGED_GAIN = 0.1  # nats/image a further optimisation of q* may still gain for q* to count as converged


def amortization_gap(run: Run, data: ImageData, num_samples: int = 5000, elbo_samples: int = 100,
                     check_images: int = 100, log=print) -> dict:
    """Cremer et al. (2018) decomposition of log p(x) - L[q_amortized] on ``data`` (nats per image).

    L[q] and L[q*] are estimated with ``elbo_samples`` samples per image (analytic KL where
    registered); log p(x) with K = ``num_samples`` from the defensive mixture (q + q*) / 2;
    ``convergence`` is :func:`refinement_gain` on the first ``check_images`` images, with
    ``converged`` true when that gain plus two standard errors is at most :data:`CONVERGED_GAIN`
    (a one-line warning is logged otherwise).
    """
    _check_gap(run)
    x = data.images
    fit = _local_fit(run, x, init=run.guide)
    amortized = mean_elbo(run.vae, run.guide, x, elbo_samples)
    optimal = mean_elbo(run.vae, fit.guide, x, elbo_samples)
    start = time.perf_counter()
    ll = importance_log_likelihood(run.vae, DefensiveMixture([run.guide, fit.guide]), data, num_samples)
    ll_seconds = time.perf_counter() - start
    convergence = refinement_gain(run.vae, x[:check_images], fit) if check_images else None
    if convergence:
        convergence["converged"] = is_converged(convergence)
        if not convergence["converged"]:
            log(f"warning: q* is not converged: a further optimisation gains {convergence['gain']:.3f} +- "
                f"{convergence['gain_stderr']:.3f} nats/image (> {CONVERGED_GAIN}); lower guide.local_tolerance "
                "or guide.local_min_lr, or raise guide.local_particles or guide.local_steps")
    per_amortized, per_optimal = amortized["per_datapoint"], optimal["per_datapoint"]
    return {
        "family": guide_family(run.guide),
        "log_likelihood": {"value": ll["log_likelihood"], "stderr": ll["stderr"],
                           "proposal": "defensive mixture (q + q*) / 2", "seconds": ll_seconds},
        "elbo_amortized": amortized["elbo"],
        "elbo_optimal": optimal["elbo"],
        "elbo_samples": elbo_samples,
        "approximation_gap": ll["log_likelihood"] - optimal["elbo"],
        "amortization_gap": optimal["elbo"] - amortized["elbo"],
        "amortization_gap_stderr": stderr(per_optimal - per_amortized),
        "approximation_gap_stderr": stderr(ll["per_datapoint"] - per_optimal),
        "local_fit": {**fit.summary(), **{k: v for k, v in run.config.guide.local_fit_options().items()
                                           if k != "init_scale"}},
        "convergence": convergence,
    }


def is_converged(check: dict) -> bool:
    """Whether a :func:`refinement_gain` result says q* is converged: gain + 2 stderr <= CONVERGED_GAIN."""
    return check["gain"] + 2 * check["gain_stderr"] <= CONVERGED_GAIN


def format_report(report: dict) -> str:
    """A plain-text table of an evaluation report."""
    e = report["elbo"]
    rows = [
        ("images", f"{report['images']} ({report['split']})"),
        ("-ELBO per image", f"{-e['elbo']:.2f}  (recon {-e['recon']:.2f} + KL {e['kl']:.2f}, KL {e['kl_estimator']})"),
        ("active units", str(report["active_units"])),
    ]
    if "local_fit" in report:
        rows.append(("local fit (test images)", _fit_line(report["local_fit"])))
    if report["log_likelihood"] is None:
        rows.append(("log p(x)", "not reported: " + report["note"]))
    else:
        ll = report["log_likelihood"]
        rows.append((f"log p(x), K={report['num_samples']}",
                     f"{ll['value']:.2f} +- {ll['stderr']:.2f}  (proposal: {ll.get('proposal', 'q')})"))
        for k, value in report["iwae"].items():
            rows.append((f"IWAE bound, K={k}", f"{value:.2f}"))
    if "gap" in report:
        g = report["gap"]
        rows += [
            ("L[q amortized]", f"{g['elbo_amortized']:.2f}"),
            (f"L[q*] ({g['family']} Gaussians)", f"{g['elbo_optimal']:.2f}  ({_fit_line(g['local_fit'])})"),
            ("approximation gap", f"{g['approximation_gap']:.2f} +- {g['approximation_gap_stderr']:.2f}"),
            ("amortization gap", f"{g['amortization_gap']:.2f} +- {g['amortization_gap_stderr']:.2f}"),
        ]
        if g["convergence"]:
            c = g["convergence"]
            rows.append(("q* convergence check", f"a further {c['steps']} steps ({c['num_particles']} samples each) "
                         f"gain {c['gain']:.3f} +- {c['gain_stderr']:.3f} nats on {c['images']} images: "
                         + ("converged" if is_converged(c) else "NOT converged")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _fit_line(fit: dict) -> str:
    """Steps and stopping of a local fit, in words."""
    steps = (f"{fit['steps_median']} steps" if fit["steps_min"] == fit["steps_max"]
             else f"{fit['steps_min']}-{fit['steps_max']} steps, median {fit['steps_median']}")
    return (f"{steps}; {fit['stopped_on_tolerance']} of {fit['chunks']} chunks stopped on the rule, "
            f"{fit['stopped_on_cap']} on the cap; {fit['seconds']:.0f} s")


def inference_seconds(run: Run, x: torch.Tensor, repeats: int = 5) -> dict:
    """Median seconds to infer q(z | x) for one new image: an encoder pass, or a real local fit
    (gradients on, the run's stopping rule; its steps are returned too)."""
    times, steps = [], []
    for _ in range(repeats if is_amortized(run.guide) else 1):
        start = time.perf_counter()
        if is_amortized(run.guide):
            with torch.no_grad():
                run.guide.posterior(x[:1]).mean
        else:
            steps.append(_local_fit(run, x[:1], init=None).steps[0])
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times)[len(times) // 2], "local_fit_steps": steps[0] if steps else None}


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

    Trains ``out/amortized`` and ``out/mean_field`` (or resumes or reuses them, see
    :func:`pyro_vae.train.train_or_resume`), evaluates both on the test set (the first ``limit``
    images; 0 = all) and writes ``out/comparison.json``, ``out/comparison.md`` and
    ``out/amortization_gap.png``. A saved evaluation is reused only with the same
    :func:`evaluation_settings`; the train-set ELBO and the inference timing are measured anew.
    """
    from .config import load_config
    from .plots_study import plot_amortization_gap

    out = Path(out)
    rows, reused = {}, True
    for kind in ("amortized", "mean_field"):
        config = load_config(config_path, [*(overrides or []), f"guide.type={kind}"])
        run_dir = out / kind
        reused &= train_or_resume(config, run_dir, data_dir, overwrite, progress, log, redraw=False)
        run = load_run(run_dir)
        test = _split(run, "test", data_dir).subset(limit)
        gap = kind == "amortized"
        report = finished_evaluation(run_dir, evaluation_settings(run, "test", num_samples, len(test), gap))
        if report is None:
            reused = False
            report = evaluate_run(run_dir, num_samples, "test", data_dir, iwae_samples=(), gap=gap, limit=limit)
        else:
            log(f"{run_dir / EVALUATION_FILE}: test evaluation with the same settings found, not redone")
        train_report = evaluate_run(run_dir, 1, "train", data_dir, iwae_samples=(), limit=limit or 10000, save=False)
        with seeded(run.config.train.seed + 4):
            infer = inference_seconds(run, test.observed(eval_generator(run.config.train.seed)).images)
        ll = report["log_likelihood"]
        rows[kind] = {
            "train_elbo": train_report["elbo"]["elbo"],
            "test_elbo": report["elbo"]["elbo"],
            "test_log_likelihood": ll["value"] if ll else None,
            "test_log_likelihood_stderr": ll["stderr"] if ll else None,
            "test_log_likelihood_proposal": ll.get("proposal") if ll else None,
            "seconds_per_epoch": sum(r["seconds"] for r in run.history) / len(run.history),
            "variational_parameters": sum(p.numel() for p in run.guide.parameters()),
            "seconds_to_infer_one_image": infer["seconds"],
            "local_fit_steps_for_one_image": infer["local_fit_steps"],
            "test_local_fit": report.get("local_fit"),
            "gap": report.get("gap"),
        }
    result = {"num_samples": num_samples, "test_images": report["images"], "epochs": len(run.history), **rows}
    write_json(out / "comparison.json", result)
    result["reused"] = reused  # every run and evaluation was found finished
    (out / "comparison.md").write_text(comparison_table(result))
    plot_amortization_gap(rows["amortized"]["gap"], out / "amortization_gap.png")
    log(comparison_table(result))
    return result


def comparison_table(result: dict) -> str:
    """Markdown: amortized and mean-field side by side, then the gap decomposition (nats per image)."""
    a, m = result["amortized"], result["mean_field"]

    def num(value, fmt="{:.2f}"):
        return "n/a" if value is None else fmt.format(value)

    fit = m["test_local_fit"]
    one = m["local_fit_steps_for_one_image"]
    lines = [
        f"| {result['epochs']} epochs, {result['test_images']:,} test images, K = {result['num_samples']:,} "
        "| amortized | mean-field |",
        "|---|---|---|",
        f"| train ELBO per image | {num(a['train_elbo'])} | {num(m['train_elbo'])} |",
        f"| test ELBO per image | {num(a['test_elbo'])} | {num(m['test_elbo'])} "
        f"(local fit: {_fit_line(fit) if fit else 'n/a'}) |",
        f"| test log p(x) (importance sampled; proposal) | {num(a['test_log_likelihood'])} +- "
        f"{num(a['test_log_likelihood_stderr'])} ({a['test_log_likelihood_proposal']}) | "
        f"{num(m['test_log_likelihood'])} +- {num(m['test_log_likelihood_stderr'])} "
        f"({m['test_log_likelihood_proposal']}: the fitted Gaussians) |",
        f"| seconds per epoch | {num(a['seconds_per_epoch'], '{:.1f}')} | {num(m['seconds_per_epoch'], '{:.1f}')} |",
        f"| variational parameters | {a['variational_parameters']:,} | {m['variational_parameters']:,} |",
        f"| seconds to infer one new image | {num(a['seconds_to_infer_one_image'], '{:.4f}')} (one encoder pass) | "
        f"{num(m['seconds_to_infer_one_image'], '{:.2f}')} (a local fit, {one} steps) |",
    ]
    g = a["gap"]
    if g:
        c = g["convergence"]
        ll = g["log_likelihood"]
        lines += [
            "",
            "| inference gaps (Cremer et al. 2018), nats per image | value |",
            "|---|---|",
            f"| log p(x) (K = {result['num_samples']:,}, proposal {ll['proposal']}) "
            f"| {ll['value']:.2f} +- {ll['stderr']:.2f} |",
            f"| L[q*] ({g['family']} Gaussians per image, decoder frozen, from the encoder; "
            f"{_fit_line(g['local_fit'])}) | {g['elbo_optimal']:.2f} |",
            f"| L[q amortized] | {g['elbo_amortized']:.2f} |",
            f"| approximation gap log p(x) - L[q*] | {g['approximation_gap']:.2f} +- "
            f"{g['approximation_gap_stderr']:.2f} |",
            f"| amortization gap L[q*] - L[q amortized] | {g['amortization_gap']:.2f} +- "
            f"{g['amortization_gap_stderr']:.2f} |",
        ]
        if c:
            lines.append(f"| q* convergence check: a further {c['steps']} steps ({c['num_particles']} samples each, "
                         f"lr {c['lr'][0]:g} -> {c['lr'][1]:g}) on the first {c['images']} images gain | "
                         f"{c['gain']:.3f} +- {c['gain_stderr']:.3f} "
                         f"({'converged' if is_converged(c) else 'NOT converged'}: <= {CONVERGED_GAIN}) |")
    return "\n".join(lines) + "\n"
