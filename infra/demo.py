"""`make demo`: the whole serverless path on this machine, then everything stopped again.

1. start the local stack (moto S3, Lambda router running the real handlers under AWS's
   Runtime Interface Emulator, HTTP API emulator) unless one is already up;
2. `squash build` Fashion-MNIST (or a synthetic set when the Debian package is absent,
   said so) straight into the local S3 bucket;
3. query over HTTP: plain and filtered batches, then single queries cold and warm;
4. print results, recall against exact (brute-force) search and per-level statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from squash.datasets import demo_dataset
from squash.evaluation import exact_knn, recall_at_k

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
WORK = LOCAL / "demo"
STACK = ROOT / "infra" / "local" / "stack.py"
K = 10


def post(url: str, doc: dict) -> tuple[dict, float]:
    """POST JSON; returns (body, seconds). Errors are printed with their JSON body."""
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"content-type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read()), time.perf_counter() - started
    except urllib.error.HTTPError as err:
        raise SystemExit(f"demo: {url} answered {err.code}: {err.read().decode()}") from err


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def start_stack() -> tuple[dict, bool]:
    """Endpoints of a running local stack, and whether this demo started it."""
    endpoints = LOCAL / "endpoints.json"
    if endpoints.exists():
        doc = json.loads(endpoints.read_text())
        try:
            get(f"{doc['api_url']}/health")
            print(f"stack        reusing the running local stack ({endpoints})")
            return doc, False
        except OSError:
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


def show_batch(title: str, out: dict, seconds: float, truth: np.ndarray, selectivity: float) -> None:
    ids = np.full((len(out["results"]), K), -1, dtype=np.int64)
    for row, hits in enumerate(out["results"]):
        ids[row, : len(hits)] = [h["id"] for h in hits]
    s = out["stats"]
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
    first = out["results"][0][:3]
    print(f"  query 0 -> {first}")


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
        url = f"{endpoints['api_url']}/indexes/{name}"
        info = get(url)
        print(f"\nGET {url}\n  {info['n']:,} vectors, {info['dims']} dims, {info['partitions']} partitions")
        queries = ds.queries.tolist()
        for title, (filt, mask) in filters(ds).items():
            body = {"vectors": queries, "k": K} | ({"filter": filt} if filt else {})
            out, seconds = post(f"{url}/query", body)
            show_batch(title, out, seconds, exact_knn(ds.base, ds.queries, mask, K), mask.mean())
        times = []
        for q in queries[:21]:
            out, seconds = post(f"{url}/query", {"vector": q, "k": K})
            times.append(seconds * 1e3)
        warm = np.asarray(times[1:])
        print(
            f"\nsingle queries over HTTP (warm containers): p50 {np.median(warm):.1f} ms, "
            f"p95 {np.percentile(warm, 95):.1f} ms over {warm.size} queries"
        )
    finally:
        if started:
            print("\nstack        stopping the local stack (make local-down)")
            subprocess.run([sys.executable, str(STACK), "down", "--dir", str(LOCAL)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
