"""Amortized against mean-field inference on the same decoder, data, epochs and seed, and the
amortization gap of the amortized run (``pyro-vae compare``, experiment kind ``compare``).
"""

from __future__ import annotations

from pathlib import Path

from ..infer.gaps import CONVERGED_GAIN, FAMILY_LABELS, is_converged
from .checkpoint import write_json
from .build import check_config
from .config import ConfigError, load_config
from .evaluation import (_fit_line, _split, evaluate_run, evaluation_settings, finished_evaluation,
                         inference_seconds)
from .runs import RunDir, load_run
from .streams import eval_generator, seeded
from .training import train_or_resume


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
    :func:`pyro_vae.workflow.training.train_or_resume`), evaluates both on the test set (the first ``limit``
    images; 0 = all) and writes ``out/comparison.json``, ``out/comparison.md`` and
    ``out/amortization_gap.png``. A saved evaluation is reused only with the same
    :func:`evaluation_settings`; the train-set ELBO and the inference timing are measured anew.
    """
    from ..plots.base import save_figure  # matplotlib only where figures are drawn
    from ..plots.study import plot_amortization_gap

    out = RunDir(out)
    rows, reused = {}, True
    configs = {kind: load_config(config_path, [*(overrides or []), f"guide.type={kind}"])
               for kind in RunDir.COMPARED}
    for kind, config in configs.items():  # both checked before the first trains
        try:
            check_config(config)
        except ConfigError as err:
            raise ConfigError(f"the {kind} half of the comparison: {err}") from None
    for kind, config in configs.items():
        run_dir = RunDir(out / kind)
        reused &= train_or_resume(config, run_dir, data_dir, overwrite, progress, log, redraw=False)
        run = load_run(run_dir)
        test = _split(run, "test", data_dir, limit)
        gap = kind == "amortized"
        report = finished_evaluation(run_dir, evaluation_settings(run, "test", num_samples, len(test), gap))
        if report is None:
            reused = False
            report = evaluate_run(run_dir, num_samples, "test", data_dir, iwae_samples=(), gap=gap, limit=limit)
        else:
            log(f"{run_dir.evaluation}: test evaluation with the same settings found, not redone")
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
    write_json(out.comparison, result)
    result["reused"] = reused  # every run and evaluation was found finished
    out.comparison_table.write_text(comparison_table(result))
    save_figure(plot_amortization_gap(rows["amortized"]["gap"]), out.gap_figure)
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
            f"| L[q*] ({FAMILY_LABELS[g['family']]} per image, decoder frozen, from the encoder; "
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
