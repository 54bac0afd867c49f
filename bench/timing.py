"""Timing helpers shared by every section: a warm-up, then the median of timed runs.

The machine is shared and noisy, so each figure is a median and ratios are computed within
one run (never against figures from another day).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Timing:
    """Result of the last run, median wall seconds and every run's seconds (wall, and this
    process's CPU seconds: on a shared machine CPU time is what contention does not inflate)."""

    result: Any
    seconds: float
    runs: list[float]
    cpu_runs: list[float] = field(default_factory=list)

    def qps(self, n_queries: int) -> float:
        return n_queries / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_seconds(self) -> float | None:
        return float(np.median(self.cpu_runs)) if self.cpu_runs else None


def _run(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: bool = True) -> Timing:
    """Median of ``repeats`` runs of ``fn`` (after one untimed warm-up run unless told not to)."""
    return timed_interleaved({"fn": fn}, repeats, warmup)["fn"]


def timed_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int = 3, warmup: bool = True
) -> dict[str, Timing]:
    """:func:`timed` for several functions run round-robin (A B C, A B C, ...), so a change in
    the machine's load hits each of them alike and their ratios stay fair."""
    if warmup:
        for fn in fns.values():
            fn()
    runs: dict[str, list[tuple[Any, float, float]]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            runs[name].append(_run(fn))
    out = {}
    for name, rs in runs.items():
        walls = [w for _, w, _ in rs]
        out[name] = Timing(
            rs[-1][0], float(np.median(walls)), [round(w, 6) for w in walls], [round(c, 6) for _, _, c in rs]
        )
    return out


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
