"""Level costs: scoring a partition's rows on the hot tier's code (L3) against scoring the
same rows on resident float32 (what the previous format served from), per (query, row).

For every batch size m (queries routed to one partition), over the index's partitions: the
median time of ``code_distances`` (decode + one BLAS product + estimate terms) and of a
float32 BLAS product over the same rows, in ns per (query, row) and per row streamed. The
code scan must be the cheaper one for the planner to afford wide coverage (issue #10).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import squash
from squash.partition_search import code_distances, float32_distances
from squash.refine import ColdTier

BATCHES = (1, 10, 100)


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(
    index: squash.Index, queries: np.ndarray, partitions: int = 16, repeats: int = 5
) -> dict[str, Any]:
    """ns per (query, row) of the code scan and of a float32 scan, per batch size."""
    q_rot = index.prepare_queries(queries)
    cold = ColdTier(index.storage)
    step = max(1, index.manifest.partitions // partitions)
    segs = [index.segment(p)[0] for p in range(0, index.manifest.partitions, step)][:partitions]
    vectors = [cold.rows(s, np.arange(s.size)) for s in segs]  # resident float32, as before
    rows = sum(s.size for s in segs)
    out = {"partitions": len(segs), "rows": rows, "dims": index.manifest.space_dims, "by_batch": []}
    every = [np.arange(s.size) for s in segs]

    def code_scan(q: np.ndarray) -> None:
        for s, r in zip(segs, every, strict=True):
            code_distances(s, q, r)

    def float32_scan(q: np.ndarray) -> None:
        for v in vectors:
            float32_distances(q, v)

    for m in BATCHES:
        q = q_rot[:m]
        code = _median_seconds(lambda q=q: code_scan(q), repeats)
        f32 = _median_seconds(lambda q=q: float32_scan(q), repeats)
        pairs = m * rows
        out["by_batch"].append(
            {
                "queries": m,
                "code_ns_per_pair": code / pairs * 1e9,
                "float32_ns_per_pair": f32 / pairs * 1e9,
                "code_over_float32": code / f32,
            }
        )
    return out
