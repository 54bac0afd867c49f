"""High-cardinality strings through the serverless path (issue #11).

Builds an index of 1M vectors with a ``doc_id`` column of 1M distinct strings, a ``url``
column of 200k distinct values and a ``label`` column of 10, starts the local stack
(HTTP -> coordinator -> b=4, l=1 worker tree -> S3), and sends queries filtered on each
column. Records per filter: HTTP status, hits and their correctness against the stored
values, the largest worker event (``stats.event_bytes``) and the latency. The claim under
test: the event's size does not grow with the number of distinct values (the dictionaries
stay with the coordinator). Writes ``highcard.json``.

    python bench/highcard.py --out bench/results [--n 1000000]
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

from bench import stack_latency
from bench.machine import describe
from squash.build import BuildOptions, build_index
from squash.progress import TqdmProgress

D = 16


def _table(n: int, urls: int) -> pa.Table:
    rng = np.random.default_rng(7)
    doc = pa.array([f"doc-{i:08d}" for i in range(n)])
    url_values = [f"https://example.com/{i % 97}/article/{i:07d}" for i in range(urls)]
    url = pa.array(url_values).take(pa.array(rng.integers(0, urls, n)))
    label = pa.array([f"label-{i}" for i in range(10)]).take(pa.array(rng.integers(0, 10, n)))
    return pa.table({"doc_id": doc, "url": url, "label": label})


def run(n: int, urls: int, out: Path) -> dict:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, D)).astype(np.float32)
    table = _table(n, urls)
    work = Path(tempfile.mkdtemp(prefix="squash-highcard-"))
    started = time.perf_counter()
    build_index(x, (work / "index").as_uri(), table, BuildOptions(seed=1), progress=TqdmProgress())
    build_s = time.perf_counter() - started
    folder = work / "stack"
    stack_latency.INDEX = "highcard"
    doc_ids = table.column("doc_id").to_pylist()
    url_col = table.column("url").to_pylist()
    some = [int(i) for i in rng.choice(n, 5, replace=False)]
    probe_url = url_col[some[0]]
    cases = {
        "doc_id $in 5 of 1M": ({"doc_id": {"$in": [doc_ids[i] for i in some]}}, "doc_id"),
        "doc_id $nin 5 of 1M": ({"doc_id": {"$nin": [doc_ids[i] for i in some]}}, None),
        "url $eq (200k distinct)": ({"url": probe_url}, "url"),
        "url $nin 5 (200k distinct)": ({"url": {"$nin": [url_col[i] for i in some]}}, None),
        "label $eq (10 distinct)": ({"label": "label-3"}, "label"),
        "label $nin 5 (10 distinct)": ({"label": {"$nin": [f"label-{i}" for i in range(5)]}}, None),
        "no filter": (None, None),
    }
    results = {}
    with stack_latency.running_stack(folder, 4, 1, work / "index") as endpoints:
        url = f"{endpoints['api_url']}/indexes/highcard/query"
        q = rng.normal(size=(10, D)).astype(np.float32).tolist()
        for name, (filt, column) in cases.items():
            body = {"vectors": q, "k": 10, "include": ["attributes"]} | ({"filter": filt} if filt else {})
            stack_latency._post(url, body)  # warm
            answer, seconds = stack_latency._post(url, body)
            hits = [h for row in answer["results"] for h in row]
            correct = True
            if column == "doc_id":
                correct = sorted({h["id"] for h in hits}) == sorted(some)
            elif column is not None:
                correct = all(h["attributes"][column] == filt[column] for h in hits)
            elif filt is not None:
                field, cond = next(iter(filt.items()))
                correct = all(h["attributes"][field] not in cond["$nin"] for h in hits)
            results[name] = {
                "status": 200,
                "hits": len(hits),
                "correct": correct,
                "event_bytes": answer["stats"]["event_bytes"],
                "partitions_visited": answer["stats"]["partitions_visited"],
                "warm_ms": round(seconds * 1e3, 1),
            }
            print(f"{name:<28} {results[name]}")
    dict_bytes = sum(p.stat().st_size for p in (work / "index").rglob("dictionaries.arrow"))
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "n": n,
        "dims": D,
        "distinct": {"doc_id": n, "url": urls, "label": 10},
        "dictionary_file_bytes": dict_bytes,
        "build_seconds": round(build_s, 1),
        "tree": {"branching": 4, "depth": 1},
        "queries_per_request": 10,
        "results": results,
    }
    (out / "highcard.json").write_text(json.dumps(doc, indent=1))
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--urls", type=int, default=200_000)
    args = ap.parse_args()
    run(args.n, args.urls, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
