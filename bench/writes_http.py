"""Writes through HTTP on the local stack (issue #12): upserts per second for batches of 1,
100 and 1,000, and the time from an acknowledged upsert to the first query that sees it.

Starts the local stack (b=2, l=1; writes enabled there), builds a synthetic index into its
S3, then: for each batch size, posts batches of new vectors (their own ids) and records the
latency of each acknowledged write; after each write, queries the written vector (filter on
its id) until it is found and records how long that took — through the same API, so a
query may reach a coordinator container whose view is up to SQUASH_MANIFEST_CHECK_SECONDS
old. Writes ``writes_http.json``.

    python bench/writes_http.py --out bench/results
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

from bench import stack_latency
from bench.machine import describe
from squash.build import BuildOptions, build_index
from squash.datasets import synthetic_mixture

BATCHES = {1: 20, 100: 5, 1000: 3}  # batch size -> number of batches


def run(out_dir: Path) -> dict:
    ds = synthetic_mixture(n=20_000, d=64, n_queries=10, seed=3)
    work = Path(tempfile.mkdtemp(prefix="squash-writes-http-"))
    build_index(ds.base, (work / "index").as_uri(), None, BuildOptions(seed=1))
    folder = work / "stack"
    stack_latency.INDEX = "writes"
    rng = np.random.default_rng(5)
    doc: dict = {"n": 20_000, "dims": 64, "tree": {"branching": 2, "depth": 1}, "batches": {}}
    with stack_latency.running_stack(folder, 2, 1, work / "index") as endpoints:
        api = f"{endpoints['api_url']}/indexes/writes"
        stack_latency._post(f"{api}/query", {"vector": ds.queries[0].tolist(), "k": 1})  # warm
        next_id = 1_000_000
        for size, count in BATCHES.items():
            seconds, visible = [], []
            for _ in range(count):
                ids = list(range(next_id, next_id + size))
                next_id += size
                x = (rng.normal(size=(size, 64)) * 3).astype(np.float32)
                answer, took = stack_latency._post(f"{api}/upsert", {"ids": ids, "vectors": x.tolist()})
                assert answer["upserted"] == size, answer
                acked = time.perf_counter()
                seconds.append(took)
                body = {"vector": x[0].tolist(), "k": 1, "filter": {"id": ids[0]}}
                while True:
                    found, _ = stack_latency._post(f"{api}/query", body)
                    if found["results"][0] and found["results"][0][0]["id"] == ids[0]:
                        break
                    if time.perf_counter() - acked > 30:
                        raise RuntimeError("an acknowledged upsert was not visible within 30 s")
                visible.append(time.perf_counter() - acked)
            doc["batches"][str(size)] = {
                "writes": count,
                "upserts_per_s": round(size * count / sum(seconds), 1),
                "write_ms_median": round(float(np.median(seconds)) * 1e3, 1),
                "visible_ms_median": round(float(np.median(visible)) * 1e3, 1),
                "visible_ms_max": round(float(np.max(visible)) * 1e3, 1),
            }
            print(size, doc["batches"][str(size)])
    doc["machine"] = describe()
    (out_dir / "writes_http.json").write_text(json.dumps(doc, indent=1))
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    run(ap.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
