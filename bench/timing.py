"""Timing helpers shared by every section: a warm-up, then the median of timed runs.

The machine is shared and noisy, so each figure is a median and ratios are computed within
one run (never against figures from another day).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Timing:
    """Result of the last run, median wall seconds and every run's seconds."""

    result: Any
    seconds: float
    runs: list[float]

    def qps(self, n_queries: int) -> float:
        return n_queries / self.seconds if self.seconds > 0 else float("inf")


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: bool = True) -> Timing:
    """Median of ``repeats`` runs of ``fn`` (after one untimed warm-up run unless told not to)."""
    if warmup:
        fn()
    runs, out = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
    return Timing(out, float(np.median(runs)), [round(r, 6) for r in runs])


def latencies_ms(fn: Callable[[int], Any], n: int) -> dict[str, float]:
    """p50/p95/mean of ``fn(i)`` for i in range(n), one call at a time (single-query latency)."""
    fn(0)  # warm-up
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - start) * 1e3
    return {
        "p50_ms": float(np.percentile(out, 50)),
        "p95_ms": float(np.percentile(out, 95)),
        "mean_ms": float(out.mean()),
        "n": n,
    }


class Stopwatch:
    """Wall time of each named section of the run (reported so slow sections are visible)."""

    def __init__(self) -> None:
        self.sections: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str, since: float) -> float:
        took = time.perf_counter() - since
        self.sections[name] = round(self.sections.get(name, 0.0) + took, 3)
        return took

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start
