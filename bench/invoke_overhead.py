"""Per-invoke overhead on the local stack: a bare invoke, and one tree hop with real payloads.

Label: **local stack (RIE on this VM)** — AWS's Lambda Runtime Interface Emulator behind our
router on 127.0.0.1, boto3 Lambda clients, both sides on the same 2 shared cores. It is *not*
AWS's figure; the cost model keeps that as a separate, stated parameter
(``tree_sim.AWS_INVOKE``).

Three measurements, all through the router's Lambda Invoke API with a plain boto3 client (the
handlers' own ``LambdaInvoker``), one request in flight:

1. **bare**: a worker's ``warm`` action with no segments (decode, answer ``{"warmed": ...}``,
   no storage): wall ms per invoke, and the caller's CPU ms per invoke (``thread_time``:
   what a parent spends launching one child, serially, before the next one starts);
2. **padded**: the same with a ``pad`` string of 16 KB to 4 MB: ms per KB of request;
3. **hop**: the coordinator (in this process, the runtime's own ``Coordinator``) plans a batch
   of Q queries on a tree of one worker (b=1, l=0) and sends the worker its real event
   (queries, pairs, segment refs) through the router; hop overhead = wall ms of the invoke −
   the worker's own ``max_node_ms`` (decode + search), against request and response bytes.

A least-squares fit over (2) and (3) gives ``ms = fixed + a * request_KB + b * response_KB``.

    python bench/invoke_overhead.py --out bench/results [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
from signed import local_lambda_client  # the stack's key and client, as the tests use them

LABEL = "local stack (RIE on this VM)"
ROOT = Path(__file__).resolve().parents[1]


def _timed(invoke, fn: str, payload: dict) -> tuple[dict, float, float]:
    """(answer, wall ms, caller thread CPU ms) of one invoke."""
    cpu0, t0 = time.thread_time(), time.perf_counter()
    out = invoke(fn, payload)
    return out, (time.perf_counter() - t0) * 1e3, (time.thread_time() - cpu0) * 1e3


def bare(invoke, n: int, pads_kb: list[int], n_pad: int) -> dict:
    fn = "squash-worker-0"
    event = {"action": "warm", "index": "s3://unused/none", "segments": {}}
    for _ in range(5):
        invoke(fn, event)
    wall, cpu = [], []
    for _ in range(n):
        _, w, c = _timed(invoke, fn, event)
        wall.append(w)
        cpu.append(c)
    padded = []
    for kb in pads_kb:
        ev = event | {"pad": "x" * (kb * 1024)}
        times = [_timed(invoke, fn, ev) for _ in range(n_pad)]
        padded.append(
            {
                "request_kb": (len(json.dumps(ev)) / 1024),
                "wall_ms_p50": float(np.median([t[1] for t in times])),
                "caller_cpu_ms_p50": float(np.median([t[2] for t in times])),
                "n": n_pad,
            }
        )
    return {
        "wall_ms": {"p50": float(np.median(wall)), "p95": float(np.percentile(wall, 95)), "n": n},
        "caller_cpu_ms": {"p50": float(np.median(cpu)), "p95": float(np.percentile(cpu, 95)), "n": n},
        "padded": padded,
    }


def hops(endpoints: dict, queries: np.ndarray, batches: dict[int, int]) -> list[dict]:
    """One tree hop per batch size, with the coordinator's real event for that batch."""
    from bench.stack_latency import INDEX
    from squash.runtime.codec import encoded_size
    from squash.runtime.config import RuntimeConfig
    from squash.runtime.coordinator import Coordinator
    from squash.runtime.invoke import LambdaInvoker
    from squash.runtime.requests import parse_query
    from squash.runtime.tree import TreeLayout

    client = local_lambda_client(endpoints["lambda_endpoint"], read_timeout=120)
    inner = LambdaInvoker(retries=0, client=client)
    records: list[dict] = []

    def recording(fn: str, payload: dict) -> dict:
        out, wall, cpu = _timed(inner, fn, payload)
        node = float(out["stats"]["max_node_ms"])
        records.append(
            {
                "request_bytes": encoded_size(payload),
                "response_bytes": encoded_size(out),
                "wall_ms": wall,
                "caller_cpu_ms": cpu,
                "node_ms": node,
                "overhead_ms": wall - node,
            }
        )
        return out

    cfg = RuntimeConfig(bucket=endpoints["bucket"], tree=TreeLayout(1, 0), local_max_bytes=0)
    coord = Coordinator(cfg, recording)
    out = []
    for q, reps in batches.items():
        body = {"vectors": queries[:q].tolist(), "k": 10}
        req = parse_query(body)
        coord.query(INDEX, req)  # warm: the worker loads its segments
        records.clear()
        for _ in range(reps):
            coord.query(INDEX, parse_query(body))
        rec = records
        out.append(
            {
                "queries": q,
                "request_kb": float(np.median([r["request_bytes"] for r in rec]) / 1024),
                "response_kb": float(np.median([r["response_bytes"] for r in rec]) / 1024),
                "wall_ms_p50": float(np.median([r["wall_ms"] for r in rec])),
                "node_ms_p50": float(np.median([r["node_ms"] for r in rec])),
                "overhead_ms_p50": float(np.median([r["overhead_ms"] for r in rec])),
                "caller_cpu_ms_p50": float(np.median([r["caller_cpu_ms"] for r in rec])),
                "n": len(rec),
            }
        )
    return out


def fit(doc: dict) -> dict:
    """``overhead_ms = fixed + a * request_KB + b * response_KB`` over bare, padded and hops."""
    rows = [(0.1, 0.05, doc["bare"]["wall_ms"]["p50"])]
    rows += [(p["request_kb"], 0.05, p["wall_ms_p50"]) for p in doc["bare"]["padded"]]
    rows += [(h["request_kb"], h["response_kb"], h["overhead_ms_p50"]) for h in doc["hops"]]
    x = np.array([[1.0, r[0], r[1]] for r in rows])
    y = np.array([r[2] for r in rows])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    cpu = [(p["request_kb"], p["caller_cpu_ms_p50"]) for p in doc["bare"]["padded"]]
    cpu_slope = float(np.polyfit([c[0] for c in cpu], [c[1] for c in cpu], 1)[0]) if len(cpu) > 1 else 0.0
    return {
        "fixed_ms": float(coef[0]),
        "ms_per_request_kb": float(coef[1]),
        "ms_per_response_kb": float(coef[2]),
        "caller_cpu_ms": doc["bare"]["caller_cpu_ms"]["p50"],
        "caller_cpu_ms_per_request_kb": cpu_slope,
        "residual_ms_rms": float(np.sqrt(np.mean((x @ coef - y) ** 2))),
        "points": len(rows),
    }


def run(quick: bool) -> dict:
    import squash
    from bench.stack_latency import running_stack
    from squash.datasets import synthetic_mixture

    ds = synthetic_mixture(n=3000 if quick else 20000, d=128, n_queries=1000, seed=5)
    index_dir = Path(tempfile.mkdtemp(prefix="squash-invoke-index-"))
    squash.build_index(ds.base, index_dir.as_uri(), ds.attributes, squash.BuildOptions(seed=0))
    folder = Path(tempfile.mkdtemp(prefix="squash-invoke-stack-"))
    with running_stack(folder, 1, 0, index_dir, ("--local-max-mb", "0")) as endpoints:
        os.environ |= {
            "AWS_ENDPOINT_URL_S3": endpoints["s3_endpoint"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": endpoints.get("region", "us-east-1"),
        }
        from squash.runtime.invoke import LambdaInvoker

        client = local_lambda_client(endpoints["lambda_endpoint"], read_timeout=120)
        invoke = LambdaInvoker(retries=0, client=client)
        if quick:
            b = bare(invoke, 20, [64, 1024], 3)
            h = hops(endpoints, ds.queries, {1: 5, 100: 2})
        else:
            b = bare(invoke, 200, [16, 64, 256, 1024, 4096], 20)
            h = hops(endpoints, ds.queries, {1: 60, 10: 40, 100: 20, 1000: 8})
    doc = {
        "label": LABEL,
        "date": time.strftime("%Y-%m-%d"),
        "index": {"n": int(ds.base.shape[0]), "dims": 128, "synthetic": True},
        "tree": "b=1, l=0 (coordinator in the bench process -> router -> RIE worker-0)",
        "bare": b,
        "hops": h,
    }
    doc["fit"] = fit(doc)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    doc = run(args.quick)
    from bench import machine

    doc["machine"] = machine.describe()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "invoke_overhead.json").write_text(json.dumps(doc, indent=1))
    f = doc["fit"]
    print(
        f"{LABEL}: bare invoke p50 {doc['bare']['wall_ms']['p50']:.2f} ms (caller CPU "
        f"{f['caller_cpu_ms']:.2f} ms); fit {f['fixed_ms']:.2f} ms + {f['ms_per_request_kb']:.4f} ms/KB "
        f"request + {f['ms_per_response_kb']:.4f} ms/KB response (rms {f['residual_ms_rms']:.2f} ms)"
    )
    for h in doc["hops"]:
        print(
            f"  hop Q={h['queries']}: {h['request_kb']:.1f} KB in, {h['response_kb']:.1f} KB out, "
            f"wall {h['wall_ms_p50']:.1f} ms, node {h['node_ms_p50']:.1f} ms, "
            f"overhead {h['overhead_ms_p50']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
