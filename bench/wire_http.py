"""JSON vs the binary wire through HTTP on the local stack: queries per second for batches
of 100 and 1,000 (b=4, l=1, Fashion-MNIST when installed), counting what a client pays too:
encoding the body, sending it, decoding the answer. ``outside_search_ms`` is that time less
the coordinator's search (``stats.timings_ms.total``), which is what the encoding changes.
The stack runs with its defaults (``served_by`` says whether the coordinator searched the
index alone, as it does for hot tiers within CoordinatorServesUpToMB), then once more with
``--local-max-mb 0`` (``tree``: every query through the worker tree), in the same run.
Writes ``wire_http.json``.

    python bench/wire_http.py --out bench/results [--quick]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.stack_latency import INDEX, running_stack, signed

RUNS = 7


def _packed(q: np.ndarray) -> dict:
    raw = np.ascontiguousarray(q, dtype="<f4").tobytes()
    return {"dtype": "float32", "shape": list(q.shape), "data": base64.b64encode(raw).decode()}


def _unpacked(obj: dict) -> np.ndarray:
    dtype = {"int64": "<i8", "float32": "<f4"}[obj["dtype"]]
    return np.frombuffer(base64.b64decode(obj["data"]), dtype).reshape(obj["shape"])


def _query(url: str, q: np.ndarray, binary: bool) -> tuple[np.ndarray, float, dict]:
    """One request as a client makes it: (ids, seconds end to end, sizes and server time)."""
    started = time.perf_counter()
    if binary:  # base64 is JSON-safe: spliced in, as squash.Client does, not escaped by json.dumps
        packed = _packed(q)
        head = json.dumps({"vectors": {k: v for k, v in packed.items() if k != "data"}})[:-2]
        data = f'{head},"data":"{packed["data"]}"}},"k":10,"encoding":"binary"}}'.encode()
    else:
        data = json.dumps({"vectors": q.tolist(), "k": 10}).encode()
    headers = signed("POST", url, data, {"content-type": "application/json"})
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=300) as resp:
        raw = resp.read()
    out = json.loads(raw)
    if binary:
        ids, _dist = _unpacked(out["ids"]), _unpacked(out["distances"])
    else:
        ids = np.array([[h["id"] for h in row] for row in out["results"]])
    seconds = time.perf_counter() - started
    return (
        ids,
        seconds,
        {
            "request_bytes": len(data),
            "response_bytes": len(raw),
            "server_ms": out["stats"]["timings_ms"]["total"],
        },
    )


def _coordinator_peak_rss_mb(endpoints: dict) -> float | None:
    """Peak resident memory (VmHWM) of the coordinator's runtime process(es), MB."""
    with urllib.request.urlopen(f"{endpoints['lambda_endpoint']}/_local/functions", timeout=10) as resp:
        info = json.loads(resp.read())
    peaks = []
    for proc in info.get(endpoints.get("coordinator", "squash-coordinator"), {}).get("processes", []):
        try:
            status = Path(f"/proc/{proc['runtime_pid']}/status").read_text()
        except (OSError, TypeError):
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM")]
    return round(max(peaks), 1) if peaks else None


def measure(
    index_dir: Path,
    queries: np.ndarray,
    batches: list[int],
    branching: int,
    depth: int,
    extra: tuple[str, ...] = (),
) -> dict:
    """HTTP JSON, HTTP binary and squash.Client against in-process ``Index.search`` on the
    same index, their runs interleaved (a drifting machine load hits all of them alike)."""
    import squash

    index = squash.open_index(index_dir.as_uri())
    index.search(queries[: max(batches)], k=10)  # every segment loaded once
    folder = Path(tempfile.mkdtemp(prefix="squash-wire-"))
    with running_stack(folder, branching, depth, index_dir, extra) as endpoints:
        url = f"{endpoints['api_url']}/indexes/{INDEX}/query"
        _query(url, queries[: max(batches)], binary=True)  # every segment loaded once
        rows, local, same = {}, {}, True
        for b in batches:
            q = queries[:b]
            ids_json = _query(url, q, binary=False)[0]
            ids_bin = _query(url, q, binary=True)[0]
            assert np.array_equal(ids_json, ids_bin), "binary and JSON answers differ"
            same = same and bool(np.array_equal(ids_bin, index.search(q, k=10).ids))
            runs: dict[bool, list] = {False: [], True: []}
            here = []
            for _ in range(RUNS):
                for binary in (False, True):
                    runs[binary].append(_query(url, q, binary))
                started = time.perf_counter()
                index.search(q, k=10)
                here.append(time.perf_counter() - started)
            local[f"batch_{b}_qps"] = round(b / float(np.median(here)), 1)
            for binary, got in runs.items():
                seconds = float(np.median([r[1] for r in got]))
                server = float(np.median([r[2]["server_ms"] for r in got]))
                overhead = float(np.median([r[1] * 1e3 - r[2]["server_ms"] for r in got]))
                rows[f"{b}/{'binary' if binary else 'json'}"] = {
                    "batch": b,
                    "encoding": "binary" if binary else "json",
                    "seconds": round(seconds, 4),
                    "qps": round(b / seconds, 1),
                    "server_ms": round(server, 1),  # the coordinator's search, after parsing
                    "outside_search_ms": round(overhead, 1),  # encode, send, parse, answer, decode
                } | {k: got[0][2][k] for k in ("request_bytes", "response_bytes")}
        client, served_by, single = _client_rows(endpoints["api_url"], queries, batches, index)
        return {
            "branching": branching,
            "depth": depth,
            "stack_options": list(extra),
            "served_by": served_by,
            "runs": RUNS,
            "results": rows,
            "client": client,
            "in_process": local | {"single_p50_ms": single},
            "answers_equal_in_process": same,  # ids of every batch above, HTTP vs Index.search
            "coordinator_peak_rss_mb": _coordinator_peak_rss_mb(endpoints),
        }


SINGLES = 60


def _client_rows(api_url: str, queries: np.ndarray, batches: list[int], index) -> tuple[dict, str, float]:
    """squash.Client (SigV4, binary wire, keep-alive): batch QPS and warm single-query p50;
    who searched ("coordinator" alone or the "tree", from the answers' node counts); and the
    in-process single-query p50 of ``index``, its queries interleaved with the client's."""
    import boto3

    from squash import Client

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    out: dict = {}
    with Client(api_url, session=session, region="us-east-1", timeout=300) as client:
        client.query(INDEX, queries[:1])  # the index's metric, fetched once
        for b in batches:
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                client.query(INDEX, queries[:b], k=10)
                times.append(time.perf_counter() - started)
            out[f"batch_{b}_qps"] = round(b / float(np.median(times)), 1)
        times, here, invoked = [], [], 0
        for i in range(SINGLES):
            started = time.perf_counter()
            got = client.query(INDEX, queries[i % len(queries)], k=10)
            times.append((time.perf_counter() - started) * 1e3)
            invoked += got.stats["nodes"]["invoked"]
            started = time.perf_counter()
            index.search(queries[i % len(queries)], k=10)
            here.append((time.perf_counter() - started) * 1e3)
    warm = np.asarray(times[5:])
    out["single_p50_ms"] = round(float(np.median(warm)), 2)
    out["single_p95_ms"] = round(float(np.percentile(warm, 95)), 2)
    return out, "tree" if invoked else "coordinator", round(float(np.median(here[5:])), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic index")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import squash
    from squash.datasets import demo_dataset, synthetic_mixture

    if args.quick:
        ds, batches = synthetic_mixture(n=3000, d=32, n_queries=100, seed=4), [10, 100]
    else:
        ds, batches = demo_dataset(n_queries=1000), [100, 1000]
    index_dir = Path(tempfile.mkdtemp(prefix="squash-wire-index-"))
    squash.build_index(ds.base, index_dir.as_uri(), ds.attributes, squash.BuildOptions(seed=0))
    from bench.machine import describe

    machine = describe()  # the load average before the run
    doc = {"date": time.strftime("%Y-%m-%d"), "dataset": ds.name, "n": int(ds.base.shape[0])}
    manifest = squash.open_index(index_dir.as_uri()).manifest
    hot = sum(r.size for r in manifest.segments)
    doc |= {"dims": int(ds.base.shape[1]), "hot_tier_mib": round(hot / 2**20, 1)}
    doc |= measure(index_dir, ds.queries, batches, 4, 1)
    doc["tree"] = measure(index_dir, ds.queries, batches, 4, 1, ("--local-max-mb", "0"))
    top = max(batches)
    doc["machine"] = machine
    doc["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for part in (doc, doc["tree"]):  # each against the in-process runs interleaved with it
        inproc = part["in_process"][f"batch_{top}_qps"]
        part["http_binary_vs_in_process"] = round(part["results"][f"{top}/binary"]["qps"] / inproc, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wire_http.json").write_text(json.dumps(doc, indent=1) + "\n")
    for name, part in (("defaults", doc), ("tree", doc["tree"])):
        rss = part["coordinator_peak_rss_mb"]
        print(f"--- {name}: served by {part['served_by']}, coordinator peak RSS {rss} MB")
        print(f"client:     {part['client']}")
        print(f"in-process: {part['in_process']} (answers equal: {part['answers_equal_in_process']})")
        print(f"HTTP binary / in-process at batch {top}: {part['http_binary_vs_in_process']:.0%}")
        _print_rows(part)
    return 0


def _print_rows(doc: dict) -> None:
    for row in doc["results"].values():
        print(
            f"B={row['batch']:>5} {row['encoding']:>6}: {row['qps']:>8,.0f} QPS, "
            f"{row['seconds'] * 1e3:7.0f} ms "
            f"(search {row['server_ms']:.0f} ms, outside it {row['outside_search_ms']:.0f} ms), "
            f"request {row['request_bytes'] / 1e6:.2f} MB, "
            f"answer {row['response_bytes'] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    sys.exit(main())
