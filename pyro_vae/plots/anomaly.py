"""Figures of an anomaly experiment: ROC curves of every score, each score's histograms on the
in-distribution test images and on the anomalies, and (a sweep) each score's AUROC for every member."""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure


def plot_roc_curves(curves: dict[str, tuple], title: str) -> Figure:
    """``curves``: score name -> (false-positive rates, true-positive rates, AUROC); the anomalies are the positives."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, (fpr, tpr, auroc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")
    ax.set_xlabel("false-positive rate (in-distribution images flagged)")
    ax.set_ylabel("true-positive rate (anomalies flagged)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_score_histograms(inliers: dict[str, torch.Tensor], outliers: dict[str, torch.Tensor],
                          names: tuple[str, str]) -> Figure:
    """One panel per score: its values on the in-distribution images (``names[0]``) and the anomalies (``names[1]``)."""
    scores = list(inliers)
    cols = min(3, len(scores))
    rows = math.ceil(len(scores) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, score in zip(axes, scores):
        both = torch.cat([inliers[score], outliers[score]]).double()
        bins = torch.linspace(both.min().item(), both.max().item(), 41).tolist()
        ax.hist(inliers[score].double().numpy(), bins=bins, alpha=0.6, label=names[0])
        ax.hist(outliers[score].double().numpy(), bins=bins, alpha=0.6, label=names[1])
        ax.set_title(score, fontsize=10)
        ax.set_ylabel("images")
    for ax in axes[len(scores):]:
        ax.axis("off")
    axes[0].legend(fontsize=8)
    fig.suptitle("Anomaly scores (higher: more anomalous)")
    fig.tight_layout()
    return fig


def plot_auroc_by_member(result: dict, scores: list[str]) -> Figure:
    """A sweep's ``anomaly.json``: each score's AUROC (y) for every member (x, e.g. the held-out digit);
    chance at 0.5."""
    rows = result["rows"]
    fig = Figure(figsize=(max(6.0, 0.6 * len(rows) + 3), 4.5))
    ax = fig.subplots()
    x = list(range(len(rows)))
    for name in scores:
        ax.plot(x, [row["scores"][name]["auroc"] for row in rows], marker="o", label=name)
    ax.axhline(0.5, color="0.6", linestyle=":", label="chance")
    ax.set_xticks(x, [f"{row['value']}" for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(result["key"])
    ax.set_ylabel("AUROC (the anomalies as positives)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
