"""M2 over labelled sets: Pyro's tutorial's accuracy anchors, the mean over the labelled sets of one size with
its 95% t bound, and its difference from a published mean (Welch), as the report's accuracy table and figure use
them (:func:`pyro_vae.workflow.report.accuracy_table`, :func:`pyro_vae.plots.study.plot_accuracy_by_labelled`)."""

from __future__ import annotations

import math
import statistics


# Pyro's semi-supervised VAE tutorial (its Table 1), test accuracy by labelled-set size: the mean over five random
# labelled sets and its 95% confidence bound, for M2 with enumeration and the auxiliary loss and for its baseline
# classifier: {labelled: ((M2, bound), (baseline, bound))}
TUTORIAL_M2 = {100: ((0.9319, 0.0060), (0.7712, 0.0159)), 600: ((0.9437, 0.0070), (0.8716, 0.0064)),
               1000: ((0.9487, 0.0038), (0.8863, 0.0025)), 3000: ((0.9582, 0.0012), (0.9108, 0.0015))}
TUTORIAL_SETS = 5  # the labelled sets behind each of the tutorial's means


def _t_quantile(confidence: float, dof: float) -> float:
    from scipy.stats import t  # (imported here: the report's other tables do without scipy's import time)

    return float(t.ppf((1 + confidence) / 2, dof))


def mean_bound(values: list[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """``(mean, half-width)`` of the t interval for the mean of ``values``: t_{(1+c)/2, n-1} s / sqrt(n), s the
    sample standard deviation (half-width None for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_bound needs at least one value, got none")
    if n < 2:
        return values[0], None
    return statistics.mean(values), _t_quantile(confidence, n - 1) * statistics.stdev(values) / math.sqrt(n)


def welch_difference(values: list[float], reference: tuple[float, float], reference_n: int = TUTORIAL_SETS,
                     confidence: float = 0.95, reference_confidence: float = 0.95) -> tuple[float, float]:
    """``(d, half-width)``: the mean of ``values`` minus a published mean given as ``(mean, bound)``, the bound
    read as a t interval of confidence c_r over ``reference_n`` values, with Welch's interval
    d +- t_{(1+c)/2, nu} sqrt(s^2 / n + s_r^2 / n_r), where s_r = bound sqrt(n_r) / t_{(1+c_r)/2, n_r - 1} and
    nu = (a + b)^2 / (a^2 / (n - 1) + b^2 / (n_r - 1)), a = s^2 / n, b = s_r^2 / n_r (Welch-Satterthwaite).
    (A bound made as 1.96 s_r / sqrt(n_r) instead would hide an s_r 1.42 times as large; nu moves with it, so the
    interval need not widen.)"""
    n = len(values)
    if n < 2 or reference_n < 2:
        raise ValueError(f"welch_difference needs at least two values on each side, got {n} and {reference_n}")
    mean, bound = reference
    a = statistics.variance(values) / n
    b = (bound * math.sqrt(reference_n) / _t_quantile(reference_confidence, reference_n - 1)) ** 2 / reference_n
    if a + b == 0:
        return statistics.mean(values) - mean, 0.0
    dof = (a + b) ** 2 / (a ** 2 / (n - 1) + b ** 2 / (reference_n - 1))
    return statistics.mean(values) - mean, _t_quantile(confidence, dof) * math.sqrt(a + b)


def labelled_sets(sweep: dict) -> list[tuple[object, list[dict]]]:
    """An M2 sweep's rows as ``[(labelled, [row, ...]), ...]``: where its runs differ only in the labelled set drawn
    (``sweep["labelled_sets"]``, :func:`~pyro_vae.workflow.experiments.only_labelled_sets_differ`), the rows of
    each labelled-set size together, in the order met; otherwise each row alone (a sweep over another setting
    holds different recipes, not draws of one). A row's size is its ``labelled``, from its evaluation's baseline
    (in a sweep over ``data.labelled``, its value)."""
    groups: dict = {}
    for i, s in enumerate(sweep["rows"]):
        labelled = s.get("labelled", s["value"] if sweep["key"] == "data.labelled" else None)
        groups.setdefault(labelled if sweep.get("labelled_sets") else i, (labelled, []))[1].append(s)
    return list(groups.values())


def accuracy_summary(sweep: dict) -> list[dict]:
    """Per labelled-set size of an M2 sweep (:func:`labelled_sets`): ``labelled``, each run's test accuracy of
    q(y | x) (``sets``) and of its baseline (``baseline_sets``), and their means with 95% t bounds (``mean``,
    ``baseline_mean``: :func:`mean_bound`); the figure :func:`pyro_vae.plots.study.plot_accuracy_by_labelled`
    draws."""
    summary = []
    for labelled, group in labelled_sets(sweep):
        sets = [s["accuracy"] for s in group]
        baseline = [s["baseline_accuracy"] for s in group]
        summary.append({"labelled": labelled, "sets": sets, "mean": mean_bound(sets),
                        "baseline_sets": baseline, "baseline_mean": mean_bound(baseline)})
    return summary
