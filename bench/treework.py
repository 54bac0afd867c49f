"""What each worker of a tree would do, measured in-process: the input of the cost model.

Queries are cut into batches of B. For each batch the coordinator's plan (L0/L1) is timed,
then each planned partition is searched on its own and timed, so the work of any tree shape
is the sum over the partitions a position owns (``partition % size``, the runtime's affinity
rule). One core, warm segments: what a warm Lambda with one vCPU would spend, before invoke
and serialisation overheads (the cost model adds those as stated assumptions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import squash
from squash.runtime.tree import TreeLayout
from squash.search import search_partitions


@dataclass
class BatchWork:
    """One batch: plan milliseconds and (partition ids, milliseconds, query visits) per partition;
    ``queries`` (when recorded) the batch rows each partition is searched for."""

    size: int
    plan_ms: float
    partitions: np.ndarray
    ms: np.ndarray
    visits: np.ndarray
    queries: list[np.ndarray] | None = None

    def node_ms(self, tree: TreeLayout) -> np.ndarray:
        """Own search milliseconds of every tree position for this batch."""
        return np.bincount(self.partitions % tree.size, weights=self.ms, minlength=tree.size)


def measure(
    index: squash.Index,
    queries: np.ndarray,
    k: int,
    filt: Any,
    params: squash.SearchParams,
    batch: int,
    n_batches: int,
    repeats: int = 1,
) -> list[BatchWork]:
    """Plan and per-partition search time of ``n_batches`` batches of ``batch`` queries
    (with ``repeats`` > 1, the fastest of that many timings of each: on a shared machine
    contention only adds time)."""
    node = index.parse_filter(filt)
    out = []
    for b in range(n_batches):
        idx = (np.arange(batch) + b * batch) % len(queries)
        q = index.prepare_queries(queries[idx])
        start = time.perf_counter()
        plan = index.plan(q, k, node, params)
        plan_ms = (time.perf_counter() - start) * 1e3
        parts = np.asarray(plan.partitions, dtype=np.int64)
        ms = np.empty(parts.size)
        visits = np.empty(parts.size, dtype=np.int64)
        rows = []
        for i, p in enumerate(parts):
            qidx = plan.queries_of(int(p))
            rows.append(np.asarray(qidx, dtype=np.int64))
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                search_partitions(
                    lambda part: index.segment(part)[0],
                    [(int(p), qidx)],
                    q,
                    k,
                    node,
                    index.manifest.attributes,
                    params,
                )
                best = min(best, (time.perf_counter() - start) * 1e3)
            ms[i] = best
            visits[i] = qidx.size
        out.append(BatchWork(batch, plan_ms, parts, ms, visits, rows))
    return out


def summary(work: list[BatchWork]) -> dict[str, float]:
    """Per-query figures of a list of batches (for the results file)."""
    queries = sum(w.size for w in work)
    visits = sum(int(w.visits.sum()) for w in work)
    search_ms = sum(float(w.ms.sum()) for w in work)
    return {
        "batch": work[0].size,
        "batches": len(work),
        "plan_ms_per_query": sum(w.plan_ms for w in work) / queries,
        "search_ms_per_query": search_ms / queries,
        "partition_visits_per_query": visits / queries,
        "ms_per_partition_visit": search_ms / max(visits, 1),
        "distinct_partitions_per_batch": float(np.mean([w.partitions.size for w in work])),
    }
