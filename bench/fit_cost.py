"""Measure the planner's cost-model constants on this machine (one BLAS thread).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/fit_cost.py

Each constant of ``squash.costmodel`` is timed with the primitive it stands for (medians of
repeated runs) and printed beside the value the planner ships with. Only ratios matter to the
plan choice; a constant far off its shipped value on this machine kind is a reason to update
``costmodel.py`` (and the README's table).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import squash
import squash.datasets
from squash import costmodel
from squash.build import BuildOptions, build_index
from squash.osq.scalar import reconstruct
from squash.partition_search import filter_rows, search_partition
from squash.planner import plan_queries
from squash.search import _direct_distances, exact_scan


def median_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure() -> dict[str, float]:
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    d = 256
    q = rng.normal(size=(1000, d)).astype(np.float32)
    x = rng.normal(size=(65536, d)).astype(np.float32)
    out["C_MAC"] = median_seconds(lambda: q @ x[:4096].T) / (1000 * 4096 * d)
    gemv = median_seconds(lambda: q[:1] @ x.T) / (65536 * d)
    out["C_STREAM"] = max(gemv - out["C_MAC"], 0.0)
    rows = np.sort(rng.choice(65536, 8192, replace=False))
    out["C_GATHER"] = median_seconds(lambda: x[rows]) / (8192 * d)
    dist = rng.random((1000, 512)).astype(np.float32)
    out["C_SELECT"] = median_seconds(lambda: np.argpartition(dist, 9, axis=1)) / dist.size

    # Per partition and per (query, partition) overheads, on a real small index.
    data = squash.datasets.synthetic_mixture(n=8000, d=16, n_queries=400, clusters=16, seed=3)
    uri = Path(tempfile.mkdtemp()).as_uri()
    build_index(data.base, uri, data.attributes, BuildOptions(partitions=125, calibration_queries=0))
    index = squash.open_index(uri)
    seg = index.segment(0)[0]
    params = squash.SearchParams(plan="routed")
    _, all_rows = filter_rows(seg, None, [])

    def one(m: int) -> float:
        qs = data.queries[:m]
        return median_seconds(lambda: search_partition(seg, qs, 10, all_rows, seg.size, params), 21)

    t1, t201 = one(1), one(201)
    pair = (t201 - t1) / 200 - seg.size * (16 * costmodel.C_MAC + costmodel.C_SELECT)
    out["C_PAIR"] = max(pair, 0.0)
    out["C_PART"] = t1 - out["C_PAIR"]
    node = index.parse_filter({"price": {"$lt": 60}})  # most rows candidates: scored in place
    parts = list(range(index.manifest.partitions))
    specs = index.manifest.attributes

    def rows_of(seg: squash.segment.Segment) -> tuple[int, np.ndarray]:
        return filter_rows(seg, node, specs)

    scan = median_seconds(
        lambda: exact_scan(lambda p: index.segment(p)[0], parts, data.queries[:1], 10, rows_of, None, "code")
    )
    out["C_PART_EXACT"] = scan / len(parts)

    # The pooled scan's rebuild of rows from the code and the final direct re-scoring, at a
    # width where per-call overheads do not count.
    wide = squash.datasets.synthetic_mixture(n=4000, d=256, n_queries=1000, clusters=4, seed=5)
    uri = Path(tempfile.mkdtemp()).as_uri()
    build_index(wide.base, uri, wide.attributes, BuildOptions(partitions=4, calibration_queries=0))
    big = squash.open_index(uri).segment(0)[0]
    rebuild = median_seconds(lambda: reconstruct(big.code, big.codes8, big.codes4, big.centroid))
    out["C_REBUILD"] = max(rebuild / (big.size * big.dims) - out["C_STREAM"], 0.0)
    vectors = reconstruct(big.code, big.codes8, big.codes4, big.centroid)
    blocks = [(vectors, big.residual_sq)]
    cand = rng.integers(0, big.size, size=(1000, 12))
    which = np.zeros_like(cand)
    direct = median_seconds(lambda: _direct_distances(wide.queries, blocks, which, cand))
    out["C_DIRECT"] = direct / (cand.size * big.dims)
    qs = rng.normal(size=(1000, 16)).astype(np.float32)
    plan = median_seconds(lambda: plan_queries(index.router, qs, 10, None, params, None))
    out["C_PLAN"] = plan / (1000 * len(parts)) - 16 * out["C_MAC"]
    return out


def main() -> int:
    measured = measure()
    print(f"{'constant':<14} {'measured':>12} {'shipped':>12}  ratio")
    for name, value in measured.items():
        shipped = getattr(costmodel, name)
        print(f"{name:<14} {value:12.3e} {shipped:12.3e}  {value / shipped:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
