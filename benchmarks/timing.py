"""Timing helpers: paired, interleaved segments, the median ratio with its interval, a verdict, tables.

A ratio of two loops is measured in *rounds*: each round runs one short segment of every
side, in order and reversed on alternate rounds (A B, B A, ...; A B C, C B A, ...: the first
two sides always run back to back, each first half of the time), so drift in the machine's
speed (other processes, clocks, caches) hits the sides of a round alike.
The ratio of a round is the quotient of its two segment times; the summary is the median
of those ratios with

- the 25th-75th percentile of the ratios (their spread), and
- a distribution-free 95% confidence interval for the median ratio from order statistics:
  with n ratios and B ~ Binomial(n, 1/2), ``[r_(l), r_(n+1-l)]`` covers the median with
  probability ``1 - 2 P(B <= l - 1)``, l the largest rank keeping that >= 95%.

A target such as ``ratio <= 1.05`` is *met* only when the whole interval lies inside it,
*not met* when the whole interval lies outside, and *unresolved* otherwise.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable, Sequence

CONFIDENCE = 0.95


def summary(times: Sequence[float]) -> dict:
    """Median, min and max of ``times``, and the values themselves."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": list(times)}


def rounds(sides: dict[str, Callable[[], object]], count: int, warmup: int = 1, collect: bool = True) -> dict:
    """Run every side once per round, ``warmup + count`` rounds, the order reversed every other round.

    :param sides: name -> callable running one segment; its wall time is what is measured,
        unless it returns a float: its own measure of the segment (a subprocess's wall time
        without the set-up around it).
    :param count: rounds kept.
    :param warmup: rounds run first and discarded (allocator, optimizer state, caches).
    :param collect: run the garbage collector (untimed) before each segment, so one side's
        garbage is not collected on the other's time.
    :returns: ``{"times": {name: [seconds per kept round]}, "orders": [names in run order],
        "warmup": {name: [seconds per discarded round]}}``.
    """
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    warm: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for r in range(warmup + count):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if collect:
                gc.collect()
            start = time.perf_counter()
            seconds = sides[name]()
            if not isinstance(seconds, float):
                seconds = time.perf_counter() - start
            (warm if r < warmup else times)[name].append(seconds)
        if r >= warmup:
            orders.append(order)
    return {"times": times, "orders": orders, "warmup": warm}


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Order-statistic confidence interval for the median of ``values``: ``(low, high, coverage)``.

    ``coverage`` is the interval's exact coverage for independent draws of a continuous
    distribution (``1 - 2 P(B <= l - 1)``, B ~ Binomial(n, 1/2)). With fewer than 6 values no
    pair of ranks reaches 95%: the interval is then ``(min, max)`` and ``coverage`` says how
    much less it covers.
    """
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval needs at least one value, got none")
    tail, rank, cdf = (1 - confidence) / 2, 0, 0.0
    for j in range(n // 2 + 1):  # rank l = j + 1 keeps P(B <= j) in each tail
        cdf += math.comb(n, j) / 2**n
        if cdf > tail:
            break
        rank = j + 1
    if rank == 0:
        return x[0], x[-1], 1 - 2 / 2**n
    below = sum(math.comb(n, j) for j in range(rank)) / 2**n
    return x[rank - 1], x[n - rank], 1 - 2 * below


def ratio_summary(ratios: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Median of per-round ratios, its 25th-75th percentile spread and its order-statistic interval."""
    low, high, coverage = median_interval(ratios, confidence)
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "median": statistics.median(ratios),
        "quartiles": [q1, q3],
        "interval": [low, high],
        "interval_kind": f"order-statistic {confidence:.0%} confidence interval of the median",
        "coverage": coverage,
        "pairs": len(ratios),
        "ratios": list(ratios),
    }


def verdict(stats: dict, target: float, at_most: bool = True, confidence: float = CONFIDENCE) -> str:
    """``met``, ``not met`` or ``unresolved ...`` for ``ratio <= target`` (``>= target`` if not ``at_most``).

    :param stats: a :func:`ratio_summary` (its ``interval`` and ``coverage`` are used).
    """
    if stats["coverage"] < confidence:
        return f"unresolved (too few pairs: {stats['pairs']} give {stats['coverage']:.0%} coverage)"
    low, high = stats["interval"]
    inside, outside = (high <= target, low > target) if at_most else (low >= target, high < target)
    if inside:
        return "met"
    if outside:
        return "not met"
    return "unresolved (spread too wide)"


def compare(timed: dict, numerator: str, denominator: str, target: float | None = None,
            at_most: bool = True) -> dict:
    """Per-round ratios ``numerator / denominator`` of a :func:`rounds` result, summarised, with a verdict."""
    a, b = timed["times"][numerator], timed["times"][denominator]
    stats = ratio_summary([x / y for x, y in zip(a, b)])
    if target is not None:
        stats["target"] = f"{'<=' if at_most else '>='} {target}"
        stats["verdict"] = verdict(stats, target, at_most)
    return stats


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def seconds_table(timed: dict) -> str:
    """Median and range of each side's segment seconds."""
    return table([[name, f"{statistics.median(t):.3f}", f"{min(t):.3f}-{max(t):.3f}"]
                  for name, t in timed["times"].items()], ["side", "median s", "range s"])


def ratio_table(comparisons: dict[str, dict]) -> str:
    """One row per ratio: median, quartiles, interval (with its coverage), target and verdict."""
    rows = []
    for name, s in comparisons.items():
        rows.append([name, f"{s['median']:.3f}", "{:.3f}-{:.3f}".format(*s["quartiles"]),
                     "{:.3f}-{:.3f}".format(*s["interval"]) + f" ({s['coverage']:.1%})", str(s["pairs"]),
                     s.get("target", "-"), s.get("verdict", "-")])
    return table(rows, ["ratio", "median", "25-75%", "95% CI of median (coverage)", "pairs", "target", "verdict"])
