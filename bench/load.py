"""A bounded load test of the serverless path on the Docker-free local stack (loopback only).

    python bench/load.py [--clients 24] [--seconds 40] [--concurrency 4] [--out bench/results]

Starts its own local stack (b=2, l=1; at most ``--concurrency`` processes per function and a
0.2 s wait at that cap before a 429, so the clients outnumber the containers and throttles
happen), builds the faults index into it, then ``--clients`` threads send single queries and
batches of 10 (half each) for ``--seconds``. Every 200 is compared with the in-process search:
``wrong`` must be 0. Reports throughput (answers and queries per second), p50/p95/p99 of the
200s and every status. Writes ``<out>/load.json`` and ``<out>/load.md``. Not part of the test
suite: `make bench` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.faults import RESULTS, Stack, Suite, classify


def run_load(
    clients: int = 24, seconds: float = 40, concurrency: int = 4, timeout_s: int = 10, say=print
) -> dict:
    with tempfile.TemporaryDirectory(prefix="squash-load-") as tmp:
        stack = Stack(Path(tmp) / "stack", timeout_s, concurrency=concurrency, throttle_wait=0.2)
        saved = {k: os.environ.get(k) for k in stack.env}
        os.environ.update(stack.env)
        try:
            suite = Suite(stack, second_build=False)
            refs = suite.refs_a["batch"]  # all 40 queries, k=10
            queries = suite.data.queries
            for _ in range(3):
                suite.warm()
            lock = threading.Lock()
            rows: list[tuple[str, str, float, int, str]] = []
            stop_at = time.monotonic() + seconds

            def client(seed: int) -> None:
                rng = np.random.default_rng(seed)
                while time.monotonic() < stop_at:
                    if rng.random() < 0.5:
                        i = int(rng.integers(0, len(queries)))
                        lo, hi, shape = i, i + 1, "single"
                    else:
                        lo = int(rng.integers(0, len(queries) - 10))
                        hi, shape = lo + 10, "batch"
                    code, doc, took = stack.query({"vectors": queries[lo:hi].tolist(), "k": 10})
                    kind, detail = classify(code, doc, [refs[lo:hi]])
                    with lock:
                        rows.append((kind, detail, took, hi - lo, shape))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
            throttles = {
                name: fn.get("throttles", 0) for name, fn in stack.functions().items() if fn.get("throttles")
            }
        finally:
            stack.down()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def pct(values: list[float]) -> dict:
        if not values:
            return {}
        arr = np.array(values) * 1e3
        return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)} | {"n": len(values)}

    ok = [r for r in rows if r[0] == "right"]
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - wall)),
        "clients": clients,
        "seconds": round(wall, 1),
        "stack": {"branching": 2, "depth": 1, "concurrency": concurrency, "throttle_wait_s": 0.2},
        "function_timeout_s": timeout_s,
        "answers": len(rows),
        "answers_per_s": round(len(rows) / wall, 1),
        "queries_per_s": round(sum(r[3] for r in ok) / wall, 1),
        "kinds": dict(Counter(r[0] for r in rows)),
        "statuses": dict(Counter(r[1] for r in rows)),
        "wrong": sum(r[0] == "wrong" for r in rows),
        "latency_ms_200": {
            "single": pct([r[2] for r in ok if r[4] == "single"]),
            "batch10": pct([r[2] for r in ok if r[4] == "batch"]),
        },
        "latency_ms_all": pct([r[2] for r in rows]),
        "router_throttles": throttles,
    }
    say(json.dumps(doc, indent=2))
    return doc


def markdown(doc: dict) -> str:
    lat = doc["latency_ms_200"]
    lines = [
        f"# Load test on the local stack ({doc['started']})",
        "",
        f"{doc['clients']} clients for {doc['seconds']} s, b=2 l=1, cap {doc['stack']['concurrency']} "
        f"processes per function (throttle wait {doc['stack']['throttle_wait_s']} s), half single queries, "
        "half batches of 10, k=10. 2-core shared VM: absolute numbers are the machine's, not Lambda's.",
        "",
        "| answers/s | queries/s (200s) | wrong | statuses |",
        "|---|---|---|---|",
        f"| {doc['answers_per_s']} | {doc['queries_per_s']} | {doc['wrong']} | "
        + ", ".join(f"{k}: {v}" for k, v in sorted(doc["statuses"].items()))
        + " |",
        "",
        "| 200 latency (ms) | p50 | p95 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    for name, p in lat.items():
        lines.append(f"| {name} | {p.get('p50')} | {p.get('p95')} | {p.get('p99')} | {p.get('n', 0)} |")
    lines.append("")
    lines.append(
        "Router throttles (429s inside the stack, retried by the tree or passed on): "
        f"{doc['router_throttles']}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    doc = run_load(args.clients, args.seconds, args.concurrency)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "load.md").write_text(markdown(doc))
    print(markdown(doc))
    return 1 if doc["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
