"""squash over a sweep of its knobs, on one opened (warm) index.

Every point is the median of timed batch runs of all queries, with recall against the exact
ground truth, whether every query got a full k, and the mean per-level candidate counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import squash
from squash.cache import SegmentCache

from .peers import score
from .timing import Timing, latencies_ms, timed

STATS = ("partitions", "l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored")
PLAN_STATS = ("plan", "rule", "expected_recall", "cost_ms")  # what the planner says it chose

# (routing_factor, min_candidates): from cheaper than the defaults to far more thorough; the
# default (1.12, 2000) is in the middle, so the curve shows what each step buys.
LADDER = ((1.0, 250), (1.0, 500), (1.05, 1000), (1.12, 2000), (1.2, 4000), (1.35, 8000), (1.6, 16000))


def preload(index: squash.Index) -> float:
    """Load every segment into the index's cache (the 'warm container'); returns seconds."""
    start = time.perf_counter()
    for part in range(index.manifest.partitions):
        index.segment(part)
    return time.perf_counter() - start


def point(
    index: squash.Index,
    queries: np.ndarray,
    k: int,
    filt: Any,
    truth: np.ndarray,
    matches: int,
    params: squash.SearchParams,
    repeats: int,
    warmup: bool = True,
) -> dict[str, Any]:
    """One sweep point: batch QPS (median of ``repeats``), recall, full-k check, level counts."""
    t = timed(searcher(index, queries, k, filt, params), repeats, warmup)
    return point_of(t, params, len(queries), k, truth, matches)


def searcher(
    index: squash.Index, queries: np.ndarray, k: int, filt: Any, params: squash.SearchParams
) -> Callable[[], squash.SearchResult]:
    """The batch search a point times."""
    return lambda: index.search(queries, k, filter=filt, params=params)


def point_of(
    t: Timing, params: squash.SearchParams, n_queries: int, k: int, truth: np.ndarray, matches: int
) -> dict[str, Any]:
    """A sweep point from a timing whose result is the last run's SearchResult."""
    res = t.result
    return (
        {
            "params": params.to_dict(),
            "qps": t.qps(n_queries),
            "seconds": t.seconds,
            "runs": t.runs,
            "cpu_seconds": t.cpu_seconds,
        }
        | score(res.ids, truth, k, matches)
        | {
            "mean": {s: float(np.mean(res.stats[s])) for s in STATS if s in res.stats},
            "plan_ms": res.stats.get("plan_ms"),
            "search_ms": res.stats.get("search_ms"),
            "plan_stats": plan_stats(res.stats),
        }
    )


def plan_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The batch's plan as the result reports it (keys the engine does not report are left out)."""
    return {key: stats[key] for key in PLAN_STATS if key in stats}


def ladder(
    index: squash.Index,
    queries: np.ndarray,
    k: int,
    filt: Any,
    truth: np.ndarray,
    matches: int,
    repeats: int,
    levels: str = "auto",
    rungs: tuple[tuple[float, int], ...] = LADDER,
    warmup: bool = True,
) -> list[dict[str, Any]]:
    """The recall/QPS curve: routing_factor and min_candidates raised together (min_partitions
    off, so each rung alone sets L1's coverage and the curve reaches its cheap end)."""
    return [
        point(
            index,
            queries,
            k,
            filt,
            truth,
            matches,
            squash.SearchParams(routing_factor=rf, min_candidates=mc, min_partitions=0, levels=levels),
            repeats,
            warmup,
        )
        for rf, mc in rungs
    ]


def knob_sweep(
    index: squash.Index,
    queries: np.ndarray,
    k: int,
    filt: Any,
    truth: np.ndarray,
    matches: int,
    repeats: int,
    knob: str,
    values: tuple[float, ...],
    levels: str = "all",
    warmup: bool = False,
) -> list[dict[str, Any]]:
    """One knob at a time around the defaults (sketch_keep, rerank_factor act only when the
    levels run, hence levels='all')."""
    out = []
    for val in values:
        params = squash.SearchParams(**{knob: val, "levels": levels})
        out.append(point(index, queries, k, filt, truth, matches, params, repeats, warmup) | {"knob": knob})
    return out


def single_latency(
    index: squash.Index, queries: np.ndarray, k: int, filt: Any, n: int, params: squash.SearchParams
) -> dict[str, float]:
    """p50/p95 of one query per call through the library front door (warm segments)."""
    return latencies_ms(lambda i: index.search(queries[i % len(queries)], k, filter=filt, params=params), n)


def cold_warm(uri: str, queries: np.ndarray, k: int, filt: Any, n: int) -> dict[str, float]:
    """In-process cold vs warm: open with an empty cache, time the first query (segments read
    from local disk, OS page cache likely warm), then warm single queries. Not Lambda."""
    start = time.perf_counter()
    index = squash.open_index(uri, cache=SegmentCache(4 << 30))
    opened = time.perf_counter()
    res = index.search(queries[0], k, filter=filt)
    first = time.perf_counter()
    warm = single_latency(index, queries, k, filt, n, squash.SearchParams())
    return {
        "open_ms": (opened - start) * 1e3,
        "first_query_ms": (first - opened) * 1e3,
        "first_query_bytes_read": int(res.stats.get("bytes_read", 0)),
        "warm_p50_ms": warm["p50_ms"],
        "warm_p95_ms": warm["p95_ms"],
    }


@contextmanager
def _instrumented() -> Iterator[dict[str, float]]:
    """Time the engine's level functions by wrapping them (bench-only; restored afterwards)."""
    import squash.partition_search as ps
    import squash.search as srch

    acc: dict[str, float] = {}
    targets = {
        "filter": (srch, "filter_rows"),
        "partition": (srch, "search_partition"),
        "l2_sketch": (ps, "sign_sketch"),
        "l2_hamming": (ps, "hamming"),
        "l3_bound": (ps, "_smallest_lower_bounds"),
        "exact_path": (ps, "_exact"),
    }
    saved = []
    for name, (mod, attr) in targets.items():
        orig = getattr(mod, attr, None)
        if orig is None:  # the engine changed shape: report what can still be measured
            continue

        def wrap(*args: Any, _orig: Any = orig, _name: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _orig(*args, **kwargs)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - start

        saved.append((mod, attr, orig))
        setattr(mod, attr, wrap)
    try:
        yield acc
    finally:
        for mod, attr, orig in saved:
            setattr(mod, attr, orig)


def level_times(
    index: squash.Index, queries: np.ndarray, k: int, filt: Any, params: squash.SearchParams
) -> dict[str, float]:
    """Milliseconds per query spent in each level, from one instrumented batch run.

    plan = L0 + L1 (coordinator); filter = exact predicate at the worker; L2 = sketch + Hamming;
    L3 = OSQ bounds; L4 = the rest of the partition search (re-rank, top-k; or the one-GEMM exact
    path when levels='auto' picks it); merge = across partitions. Wrapping adds a little overhead.
    """
    index.search(queries, k, filter=filt, params=params)  # warm
    with _instrumented() as acc:
        res = index.search(queries, k, filter=filt, params=params)
    nq = len(queries)
    per_q = {name: secs * 1e3 / nq for name, secs in acc.items()}
    l2 = per_q.get("l2_sketch", 0.0) + per_q.get("l2_hamming", 0.0)
    l3 = per_q.get("l3_bound", 0.0)
    part = per_q.get("partition", 0.0)
    search = res.stats["search_ms"] / nq
    return {
        "plan": res.stats["plan_ms"] / nq,
        "filter": per_q.get("filter", 0.0),
        "l2": l2,
        "l3": l3,
        "l4": max(0.0, part - l2 - l3),
        "exact_path": per_q.get("exact_path", 0.0),
        "merge": max(0.0, search - part - per_q.get("filter", 0.0)),
        "total": res.stats["plan_ms"] / nq + search,
    }
