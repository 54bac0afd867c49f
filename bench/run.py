"""`make bench`: squash vs exact numpy search on Fashion-MNIST, one core, one run.

Prints a Markdown table and writes bench/results/latest.json (machine, versions, figures).
Ratios are what to compare: absolute timings on a shared machine are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import squash
from squash.datasets import demo_dataset, fashion_filters
from squash.evaluation import recall_at_k

K = 10
REPEATS = 3
OUT = Path(__file__).resolve().parent / "results"


def exact_search(base: np.ndarray, base_sq: np.ndarray, queries: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brute-force filtered k-NN (the baseline): one BLAS product over the matching rows."""
    rows = np.flatnonzero(mask)
    sub = base[rows]
    d = base_sq[rows][None, :] - 2.0 * (queries @ sub.T)
    kk = min(K, rows.size)
    part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
    order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1)
    return rows[np.take_along_axis(part, order, axis=1)]


def timed(fn):
    """Median of REPEATS runs, after one warm-up; returns (result, seconds)."""
    fn()
    times, out = [], None
    for _ in range(REPEATS):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def main() -> int:
    ds = demo_dataset(n_queries=1000)
    if ds.synthetic:
        print("note: Fashion-MNIST not installed; benchmarking a SYNTHETIC mixture")
    filters = (
        fashion_filters(ds.attributes) if not ds.synthetic else {"none": (None, np.ones(len(ds.base), bool))}
    )
    with tempfile.TemporaryDirectory() as tmp:
        uri = Path(tmp).as_uri()
        summary = squash.build_index(ds.base, uri, ds.attributes)
        index = squash.open_index(uri)
        base_sq = np.einsum("ij,ij->i", ds.base, ds.base)
        rows = []
        for name, (filt, mask) in filters.items():
            truth, t_exact = timed(lambda m=mask: exact_search(ds.base, base_sq, ds.queries, m))
            res, t_squash = timed(lambda f=filt: index.search(ds.queries, k=K, filter=f))
            nq = ds.queries.shape[0]
            rows.append(
                {
                    "filter": name,
                    "selectivity": float(mask.mean()),
                    "squash_recall": recall_at_k(res.ids, truth),
                    "squash_qps": nq / t_squash,
                    "exact_qps": nq / t_exact,
                    "speedup": t_exact / t_squash,
                    "mean_partitions": float(np.mean(res.stats["partitions"])),
                    "mean_l4_scored": float(np.mean(res.stats["l4_scored"])),
                }
            )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "versions": {"squash": squash.__version__, "numpy": np.__version__},
        "dataset": {"name": ds.name, "synthetic": ds.synthetic, "n": int(ds.base.shape[0]),
                    "dims": int(ds.base.shape[1]), "queries": int(ds.queries.shape[0])},
        "build": {"seconds": summary.seconds, "partitions": summary.partitions,
                  "code_bytes_per_vector": summary.code_bytes_per_vector,
                  "float32_bytes_per_vector": summary.float32_bytes_per_vector,
                  "index_bytes": summary.index_bytes},
        "search": rows,
    }  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(result, indent=2))
    print(
        f"\n{ds.name} ({'synthetic' if ds.synthetic else 'real'}), "
        f"N={ds.base.shape[0]:,}, d={ds.base.shape[1]}, "
        f"{ds.queries.shape[0]} queries, k={K}, threads={result['threads']}, {result['date']}"
    )
    print(
        f"build {summary.seconds:.1f} s, P={summary.partitions}, "
        f"codes {summary.code_bytes_per_vector:.0f} B/vector "
        f"(float32 {summary.float32_bytes_per_vector} B), index {summary.index_bytes / 2**20:.0f} MiB\n"
    )
    print(
        "| filter | selectivity | squash recall@10 | squash QPS | exact QPS | speed-up | partitions/query |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['filter']} | {r['selectivity']:.2%} | {r['squash_recall']:.4f} | {r['squash_qps']:,.0f} | "
            f"{r['exact_qps']:,.0f} | {r['speedup']:.2f}x | {r['mean_partitions']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
