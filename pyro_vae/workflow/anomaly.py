"""Anomaly experiments (``kind = "anomaly"``): train on one dataset, then score test images of it and
of another (``experiment.anomalies``) with every score of :mod:`pyro_vae.infer.scores`, and measure
how well each score separates them: AUROC and AUPRC (scikit-learn; the anomalies are the positives,
a higher score means more anomalous), ROC curves and histograms.

The run is ``out`` itself (trained, resumed or reused like any run); ``anomaly.json`` holds, per score,
the AUROC, the AUPRC and the mean score of each set, with the images and K it used.
"""

from __future__ import annotations

from pathlib import Path

from ..infer.scores import SCORES
from .checkpoint import read_json, write_json
from .config import ConfigError
from .data import load_images
from .runs import RunDir, load_run
from .scores import check_scorable, score_images
from .training import train_or_resume


def separation(inliers: dict, outliers: dict) -> tuple[dict, dict]:
    """``({score: {auroc, auprc, mean_inlier, mean_outlier}}, {score: (fpr, tpr, auroc)})``: how well each
    score ranks the ``outliers`` above the ``inliers`` (dicts of score name -> values)."""
    import torch
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


def run_anomaly(experiment, out: Path, data_dir, overrides, num_samples: int, overwrite: bool, progress: bool,
                log, redraw: bool = True) -> bool:
    """Train (or reuse) the run, score ``experiment.images`` test images of its dataset and of
    ``experiment.anomalies``, write ``anomaly.json`` and the two figures; returns whether the run and its
    scores were found finished."""
    from ..plots.anomaly import plot_roc_curves, plot_score_histograms
    from ..plots.base import save_figure

    config = experiment.config(overrides)
    check_scorable(config)  # before any training
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1 for the scores' -log p(x), got {num_samples}")
    run_dir = RunDir(out)
    reused = train_or_resume(config, out, data_dir, overwrite, progress, log, redraw)
    settings = {"anomalies": experiment.anomalies, "images": experiment.images, "num_samples": num_samples,
                "epochs": read_json(run_dir.metrics)["epochs"], "config": config.to_dict()}
    saved = read_json(run_dir.anomaly)
    if reused and saved and saved.get("settings") == settings:
        log(f"{run_dir.anomaly}: scores with the same settings found, not redone")
        return True
    run = load_run(out)
    names = (config.data.dataset, experiment.anomalies)
    scored = {}
    for name in names:
        grey, _ = load_images(name, False, data_dir, limit=experiment.images)
        scored[name] = score_images(run, grey, num_samples, progress, f"scoring {name}")
    table, curves = separation(scored[names[0]], scored[names[1]])
    write_json(run_dir.anomaly, {"settings": settings, "inliers": names[0], "outliers": names[1], "scores": table})
    log(anomaly_table({"inliers": names[0], "outliers": names[1], "scores": table}))
    title = f"Trained on {names[0]}: {names[1]} test images as anomalies"
    save_figure(plot_roc_curves(curves, title), run_dir.roc_figure)
    save_figure(plot_score_histograms(scored[names[0]], scored[names[1]], names), run_dir.score_histograms)
    return False


def anomaly_table(result: dict) -> str:
    """Markdown: each score's AUROC, AUPRC and means on both sets."""
    lines = [f"| score (trained on {result['inliers']}) | AUROC | AUPRC | mean on {result['inliers']} "
             f"| mean on {result['outliers']} |", "|---|---|---|---|---|"]
    for name in SCORES:
        s = result["scores"][name]
        lines.append(f"| {name} | {s['auroc']:.3f} | {s['auprc']:.3f} | {s['mean_inlier']:.1f} "
                     f"| {s['mean_outlier']:.1f} |")
    return "\n".join(lines) + "\n"
