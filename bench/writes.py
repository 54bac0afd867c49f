"""Writes (issue #12): upsert throughput, and query speed and recall with rows in deltas.

On a real held-out set (docstrings, 30k × 384 MiniLM, cosine; falls back to a synthetic
mixture when the cache is missing), in-process, one thread:

* upserts per second for batches of 1, 100 and 1,000 (library, ``file://``: each batch is
  one committed version — files, router rows and a conditional manifest write);
* query QPS and recall@10 (default knobs, against exact ground truth over the live set),
  unfiltered and with a filter, with 0 % (a build of everything), 1 % and 10 % of the rows
  arriving by upsert, and after ``compact``.

Writes ``writes.json``; ``python bench/writes.py --out bench/results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa

import squash
from bench.data import loaders
from bench.machine import describe
from squash.build import BuildOptions, build_index
from squash.evaluation import exact_knn, recall_at_k

K = 10


def _data(name: str, n_queries: int):
    if loaders.available(name):
        ds = loaders.load_cached(name, n_queries)
        options = loaders.filters_for(name, ds.attributes).values()
        filt, mask = next((f, m) for f, m in options if f is not None and 0.01 < m.mean() < 0.5)
        return ds.base, ds.queries, ds.attributes, "cosine", filt, mask, name
    from squash.datasets import synthetic_mixture

    ds = synthetic_mixture(n=30_000, d=64, n_queries=n_queries)
    filt = {"label": {"$in": ["c01", "c02", "c03"]}}
    mask = np.isin(np.asarray(ds.attributes.column("label").to_pylist()), ["c01", "c02", "c03"])
    return ds.base, ds.queries, ds.attributes, "l2", filt, mask, "synthetic"


def _measure(index, queries, truth, filt=None, truth_f=None) -> dict:
    index.search(queries, k=K)  # warm: segments cached
    out = {}
    for label, f, t in (("unfiltered", None, truth), ("filtered", filt, truth_f)):
        times, res = [], None
        for _ in range(3):
            started = time.perf_counter()
            res = index.search(queries, k=K, filter=f)
            times.append(time.perf_counter() - started)
        out[label] = {
            "qps": round(queries.shape[0] / float(np.median(times)), 1),
            "recall": round(recall_at_k(res.ids, t), 4),
        }
    out["partitions"] = index.manifest.partitions
    return out


def run(name: str, n_queries: int, out_dir: Path) -> dict:
    base, queries, attrs, metric, filt, fmask, used = _data(name, n_queries)
    n = base.shape[0]
    x = base / np.linalg.norm(base, axis=1, keepdims=True) if metric == "cosine" else base
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True) if metric == "cosine" else queries
    truth = exact_knn(x, q, np.ones(n, bool), K)
    truth_f = exact_knn(x, q, fmask, K)
    work = Path(tempfile.mkdtemp(prefix="squash-writes-"))
    doc: dict = {
        "dataset": used,
        "n": n,
        "dims": int(base.shape[1]),
        "metric": metric,
        "queries": int(q.shape[0]),
    }
    doc["filter"] = {"filter": filt, "selectivity": round(float(fmask.mean()), 4)}
    opts = BuildOptions(metric=metric, seed=0)
    ids = np.arange(n, dtype=np.int64)
    rows_attrs = attrs.append_column("id", pa.array(ids))

    uri = (work / "all").as_uri()
    build_index(base, uri, rows_attrs, opts)
    doc["deltas_0pct"] = _measure(squash.open_index(uri), queries, truth, filt, truth_f)
    print("0 %", doc["deltas_0pct"])

    for share, batch in ((0.01, 100), (0.10, 1000)):
        keep = int(n * (1 - share))
        uri = (work / f"d{int(share * 100)}").as_uri()
        build_index(base[:keep], uri, rows_attrs.slice(0, keep), opts)
        index = squash.open_index(uri)
        took = []
        for start in range(keep, n, batch):
            end = min(n, start + batch)
            began = time.perf_counter()
            index.upsert(ids[start:end], base[start:end], attrs.slice(start, end - start))
            took.append((end - start, time.perf_counter() - began))
        rows, secs = sum(r for r, _ in took), sum(s for _, s in took)
        key = f"deltas_{int(share * 100)}pct"
        doc[key] = _measure(index, queries, truth, filt, truth_f) | {
            "upsert_batch": batch,
            "upserts_per_s": round(rows / secs, 1),
            "batch_seconds_median": round(float(np.median([s for _, s in took])), 4),
        }
        print(f"{share:.0%}", doc[key])
        if share == 0.10:
            began = time.perf_counter()
            result = index.compact()
            doc["compact"] = {
                "seconds": round(time.perf_counter() - began, 2),
                "partitions_rebuilt": result.partitions_rebuilt,
                "delta_partitions_folded": result.delta_partitions_folded,
            } | _measure(index, queries, truth, filt, truth_f)
            print("compact", doc["compact"])

    uri = (work / "single").as_uri()
    build_index(base[: n - 20], uri, rows_attrs.slice(0, n - 20), opts)
    index = squash.open_index(uri)
    singles = []
    for i in range(n - 20, n):
        began = time.perf_counter()
        index.upsert(ids[i : i + 1], base[i : i + 1], attrs.slice(i, 1))
        singles.append(time.perf_counter() - began)
        seen = index.search(base[i : i + 1], k=1, filter={"id": int(ids[i])})
        assert seen.ids[0, 0] == ids[i], "an acknowledged upsert was not visible to the next query"
    doc["upsert_batch_1"] = {
        "upserts_per_s": round(1 / float(np.median(singles)), 1),
        "seconds_median": round(float(np.median(singles)), 4),
        "visible_to_next_query": True,
    }
    print("batch 1", doc["upsert_batch_1"])
    doc["machine"] = describe()
    (out_dir / "writes.json").write_text(json.dumps(doc, indent=1))
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--dataset", default="docstrings")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    run(args.dataset, args.queries, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
