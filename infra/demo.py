"""`make demo`: the whole serverless path on this machine, then everything stopped again.

1. start the local stack (moto S3, Lambda router running the real handlers under AWS's
   Runtime Interface Emulator, HTTP API emulator) unless one is already up;
2. `squash build` Fashion-MNIST (or a synthetic set when the Debian package is absent,
   said so) straight into the local S3 bucket;
3. query over HTTP with ``squash.Client`` (SigV4-signed, as against a deployed API): plain and
   filtered batches, then single queries cold and warm;
4. print results, recall against exact (brute-force) search and per-level statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq

from squash import Client, SearchResult, SquashError
from squash.datasets import demo_dataset
from squash.evaluation import exact_knn, recall_at_k

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
WORK = LOCAL / "demo"
STACK = ROOT / "infra" / "local" / "stack.py"
K = 10


def client_for(endpoints: dict) -> Client:
    """A client signing with the local stack's key (its HTTP API runs with IAM auth)."""
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints["region"]
    )
    return Client(endpoints["api_url"], session=session, timeout=120)


def start_stack() -> tuple[dict, bool]:
    """Endpoints of a running local stack, and whether this demo started it."""
    endpoints = LOCAL / "endpoints.json"
    if endpoints.exists():
        doc = json.loads(endpoints.read_text())
        try:
            client_for(doc).health()
            print(f"stack        reusing the running local stack ({endpoints})")
            return doc, False
        except (OSError, KeyError, SquashError):
            pass
    print("stack        starting the local stack (make local-up) ...")
    subprocess.run([sys.executable, str(STACK), "up", "--dir", str(LOCAL)], check=True)
    return json.loads(endpoints.read_text()), True


def build(ds, endpoints: dict, name: str) -> str:
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(WORK / "vectors.npy", ds.base)
    pq.write_table(ds.attributes, WORK / "attributes.parquet")
    uri = f"s3://{endpoints['bucket']}/indexes/{name}"
    env = os.environ | {
        "AWS_ENDPOINT_URL_S3": endpoints["s3_endpoint"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": endpoints.get("region", "us-east-1"),
    }
    # --replace: a reused local stack still holds the previous run's index, rebuilt on purpose
    s3 = endpoints["s3_endpoint"]
    print(f"\n$ AWS_ENDPOINT_URL_S3={s3} squash build --vectors ... --index-uri {uri} --replace")
    subprocess.run(
        [sys.executable, "-m", "squash.cli", "build", "--vectors", str(WORK / "vectors.npy"),
         "--attributes", str(WORK / "attributes.parquet"), "--index-uri", uri, "--replace"],
        check=True, env=env,
    )  # fmt: skip
    return uri


def filters(ds) -> dict[str, tuple[dict | None, np.ndarray]]:
    label = np.asarray(ds.attributes.column("label").to_pylist())
    some = str(np.unique(label)[1])
    numeric = "brightness" if "brightness" in ds.attributes.column_names else "price"
    values = ds.attributes.column(numeric).to_numpy()
    cut = float(np.quantile(values[label == some], 0.1))
    return {
        "plain": (None, np.ones(len(label), bool)),
        f"label = {some}": ({"label": some}, label == some),
        f"label = {some} and {numeric} < {cut:.3f}": (
            {"label": some, numeric: {"$lt": cut}},
            (label == some) & (values < cut),
        ),
    }


def show_batch(title: str, out: SearchResult, seconds: float, truth: np.ndarray, selectivity: float) -> None:
    ids = out.ids
    s = out.stats
    lv, nodes, s3 = s["levels"], s["nodes"], s["s3"]
    print(
        f"\n[{title}]  selectivity {selectivity:.2%}  recall@{K} {recall_at_k(ids, truth):.4f}  "
        f"{s['queries']} queries in {seconds * 1e3:,.0f} ms over HTTP"
    )
    print(
        f"  plan: {s['plan']} ({s['rule']} rule), final ranking on "
        f"{'the hot tier code' if s['rerank'] == 'none' else 'float32 (' + s['rerank'] + ')'}, "
        f"expected recall {s['expected_recall']}"
    )
    per_q = s["queries"]
    print(
        f"  levels (mean per query): partitions {s['partitions_per_query']:.1f}, "
        + ", ".join(
            f"{k} {lv[k] / per_q:,.0f}"
            for k in ("l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored")
        )
    )
    print(
        f"  tree: {nodes['invoked']} nodes ({nodes['cold']} cold, {nodes['warm']} warm), "
        f"S3 {s3['bytes_read'] / 2**20:.1f} MiB hot tier read, {s3['segments_loaded']} segments loaded, "
        f"{s3['cache_hits']} cache hits, {s3.get('refine_bytes_read', 0) / 2**20:.1f} MiB float32 in "
        f"{s3.get('refine_gets', 0)} range GETs; {s3.get('hot_bytes_resident', 0) / 2**20:.1f} MiB resident; "
        f"timings {s['timings_ms']}"
    )
    first = [(int(i), round(float(d), 4)) for i, d in zip(ids[0, :3], out.distances[0, :3], strict=True)]
    print(f"  query 0 -> (id, distance) {first}")


def main() -> int:
    ds = demo_dataset(n_queries=200)
    kind = (
        "synthetic Gaussian mixture (Fashion-MNIST not installed)" if ds.synthetic else "Fashion-MNIST (real)"
    )
    print(f"dataset      {ds.name}: {kind}, {ds.base.shape[0]:,} x {ds.base.shape[1]}")
    endpoints, started = start_stack()
    try:
        name = "synthetic" if ds.synthetic else "fashion-mnist"
        build(ds, endpoints, name)
        client = client_for(endpoints)
        info = client.info(name)
        print(f"\nclient.info({name!r}) via {endpoints['api_url']} (SigV4-signed)")
        print(f"  {info['n']:,} vectors, {info['dims']} dims, {info['partitions']} partitions")
        for title, (filt, mask) in filters(ds).items():
            started_at = time.perf_counter()
            out = client.query(name, ds.queries, k=K, filter=filt)
            seconds = time.perf_counter() - started_at
            show_batch(title, out, seconds, exact_knn(ds.base, ds.queries, mask, K), mask.mean())
        times = []
        for q in ds.queries[:21]:
            started_at = time.perf_counter()
            client.query(name, q, k=K)
            times.append((time.perf_counter() - started_at) * 1e3)
        warm = np.asarray(times[1:])
        print(
            f"\nsingle queries through the client (warm containers): p50 {np.median(warm):.1f} ms, "
            f"p95 {np.percentile(warm, 95):.1f} ms over {warm.size} queries"
        )
    finally:
        if started:
            print("\nstack        stopping the local stack (make local-down)")
            subprocess.run([sys.executable, str(STACK), "down", "--dir", str(LOCAL)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
