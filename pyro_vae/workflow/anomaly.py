"""Anomaly experiments (``kind = "anomaly"``): train on one dataset, then score in-distribution test
images and anomalies with every score of :mod:`pyro_vae.infer.scores`, and measure how well each
score separates them: AUROC and AUPRC (scikit-learn; the anomalies are the positives, a higher
score means more anomalous), ROC curves and histograms.

``experiment.anomalies`` names the anomalies: another dataset's test images (``"fashion_mnist"``,
``"mnist"``), or ``"held_out"``, the test images of the digits that ``data.held_out_labels`` took out
of the run's every split. With a sweep (``{variants = {digit_0 = ["data.held_out_labels=[0]"], ...}}``)
each member is a run of its own in ``out/<variant>``, ``out/anomaly.json`` gathers their AUROCs and
``out/auroc.png`` draws each score's AUROC over the members.

Each run directory gets ``anomaly.json`` (per score: AUROC, AUPRC, the mean score of each set, with
the images, K and config it used), ``roc.png`` and ``score_histograms.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..infer.scores import BACKGROUND_SCORES, SCORES
from .checkpoint import read_json, write_json
from .config import Config, ConfigError
from .data import load_images
from .runs import RunDir, load_run
from .scores import check_scorable, load_background, score_images
from .training import train_or_resume

HELD_OUT = "held_out"
BACKGROUND = "background"  # the background model's run directory, inside the experiment's run


def separation(inliers: dict, outliers: dict) -> tuple[dict, dict]:
    """``({score: {auroc, auprc, mean_inlier, mean_outlier}}, {score: (fpr, tpr, auroc)})``: how well each
    score ranks the ``outliers`` above the ``inliers`` (dicts of score name -> values)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    table, curves = {}, {}
    for name in inliers:
        values = torch.cat([inliers[name], outliers[name]]).double().numpy()
        truth = [0] * len(inliers[name]) + [1] * len(outliers[name])
        auroc = float(roc_auc_score(truth, values))
        fpr, tpr, _ = roc_curve(truth, values)
        table[name] = {"auroc": auroc, "auprc": float(average_precision_score(truth, values)),
                       "mean_inlier": inliers[name].double().mean().item(),
                       "mean_outlier": outliers[name].double().mean().item()}
        curves[name] = (fpr, tpr, auroc)
    return table, curves


def anomaly_sets(config: Config, anomalies: str, images: int, data_dir) -> dict[str, torch.Tensor]:
    """``{name: grey images}`` of the in-distribution test images (first) and the anomalies, ``images`` of each."""
    grey, labels = load_images(config.data.dataset, False, data_dir)
    if anomalies != HELD_OUT:
        return {config.data.dataset: grey[:images], anomalies: load_images(anomalies, False, data_dir,
                                                                           limit=images)[0]}
    held = torch.isin(labels, torch.tensor(config.data.held_out_labels, dtype=labels.dtype))
    digits = "".join(map(str, config.data.held_out_labels))
    return {f"{config.data.dataset} without {digits}": grey[~held][:images],
            f"{config.data.dataset} digits {digits}": grey[held][:images]}


def run_anomaly(experiment, out: Path, data_dir, overrides, num_samples: int, overwrite: bool, progress: bool,
                log, redraw: bool = True) -> bool:
    """Train (or reuse) each run and score it (:func:`score_run_sets`); returns whether everything was
    found finished. Every member's config is checked before the first trains."""
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1 for the scores' -log p(x), got {num_samples}")
    members = ([(value, sub, [*member, *overrides]) for value, sub, member in experiment.sweep_runs()]
               if experiment.sweep else [(None, "", list(overrides))])
    configs = {sub: experiment.config(member) for _, sub, member in members}
    for config in configs.values():
        check_scorable(config)
        if experiment.anomalies == HELD_OUT and not config.data.held_out_labels:
            raise ConfigError("experiment.anomalies = 'held_out' scores the digits data.held_out_labels takes out, "
                              "but it is empty; set data.held_out_labels, e.g. [0]")
    rows, reused = [], True
    for value, sub, member in members:
        if sub:
            log(f"--- variant = {value}")
        background = None
        if experiment.background:  # Ren et al.'s background model: the same config, trained on perturbed images
            background = out / sub / BACKGROUND
            log(f"--- background model ({', '.join(experiment.background)})")
            reused &= train_or_resume(experiment.config([*member, *experiment.background]), background, data_dir,
                                      overwrite, progress, log, redraw)
        result, found = score_run_sets(experiment, out / sub, configs[sub], data_dir, num_samples, overwrite,
                                       progress, log, redraw, background)
        reused &= found
        rows.append({"value": value, "run": sub, **result})
    if experiment.sweep:
        from ..plots.anomaly import plot_auroc_by_member
        from ..plots.base import save_figure

        result = {"key": experiment.sweep_key, "rows": rows}
        write_json(RunDir(out).anomaly, result)
        save_figure(plot_auroc_by_member(result, _scores_of_every(rows)), RunDir(out).auroc_figure)
    return reused


def score_run_sets(experiment, out: Path, config: Config, data_dir, num_samples: int, overwrite: bool,
                   progress: bool, log, redraw: bool, background: Path | None = None) -> tuple[dict, bool]:
    """One run: train or reuse it, score both sets (kept when done with the same settings; with the
    ``background`` run's likelihood ratio), write ``anomaly.json`` and the figures; returns the result and
    whether it was all found finished."""
    from ..plots.anomaly import plot_roc_curves, plot_score_histograms
    from ..plots.base import save_figure

    run_dir = RunDir(out)
    reused = train_or_resume(config, out, data_dir, overwrite, progress, log, redraw)
    settings = {"anomalies": experiment.anomalies, "images": experiment.images, "num_samples": num_samples,
                "epochs": read_json(run_dir.metrics)["epochs"], "config": config.to_dict()}
    if background is not None:
        settings["background"] = RunDir(background).saved_config().to_dict()
    saved = read_json(run_dir.anomaly)
    if reused and saved and saved.get("settings") == settings:
        log(f"{run_dir.anomaly}: scores with the same settings found, not redone")
        return saved, True
    run = load_run(out)
    background_run = None if background is None else load_background(run, background)
    sets = anomaly_sets(config, experiment.anomalies, experiment.images, data_dir)
    scored = {name: score_images(run, grey, num_samples, progress, f"scoring {name}", background_run)
              for name, grey in sets.items()}
    names = tuple(scored)
    table, curves = separation(scored[names[0]], scored[names[1]])
    result = {"settings": settings, "inliers": names[0], "outliers": names[1], "scores": table}
    write_json(run_dir.anomaly, result)
    log(anomaly_table(result))
    save_figure(plot_roc_curves(curves, f"Trained on {names[0]}: {names[1]} as the anomalies"), run_dir.roc_figure)
    save_figure(plot_score_histograms(scored[names[0]], scored[names[1]], names), run_dir.score_histograms)
    return result, False


def _scores_of_every(rows: list[dict]) -> list[str]:
    """The scores every member of a sweep has, in :data:`SCORES` order (the background's last)."""
    return [s for s in (*SCORES, *BACKGROUND_SCORES) if all(s in row["scores"] for row in rows)]


def anomaly_table(result: dict) -> str:
    """Markdown: each score's AUROC, AUPRC and means on both sets (one run), or each member's AUROC per
    score (a sweep's ``anomaly.json``)."""
    if "rows" in result:
        names = _scores_of_every(result["rows"])
        lines = [f"| {result['key']} (anomalies) | " + " | ".join(f"AUROC {s}" for s in names) + " |",
                 "|---|" + "---|" * len(names)]
        lines += [f"| {row['value']} ({row['outliers']}) | "
                  + " | ".join(f"{row['scores'][s]['auroc']:.3f}" for s in names) + " |" for row in result["rows"]]
        return "\n".join(lines) + "\n"
    lines = [f"| score (trained on {result['inliers']}) | AUROC | AUPRC | mean on {result['inliers']} "
             f"| mean on {result['outliers']} |", "|---|---|---|---|---|"]
    for name in (s for s in (*SCORES, *BACKGROUND_SCORES) if s in result["scores"]):
        s = result["scores"][name]
        lines.append(f"| {name} | {s['auroc']:.3f} | {s['auprc']:.3f} | {s['mean_inlier']:.1f} "
                     f"| {s['mean_outlier']:.1f} |")
    return "\n".join(lines) + "\n"
