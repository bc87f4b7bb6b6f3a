"""Timing helpers: repeats, median and spread, and the table printer."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def repeat(fn: Callable[[], object], repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times; median, min and max seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def interleaved(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Time several callables alternately (A B C A B C ...), so drift hits all sides alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in times.items()}


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
