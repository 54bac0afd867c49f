"""Streaming-build scale: `squash build` on synthetic ``.npy`` files larger than a sample.

For each size the input is written to disk a block at a time (a mixture of Gaussian
clusters), then built by the CLI in a child process (``--workers 2``), as a user would.
Reported: wall time; peak memory as the sampled sum of PSS over the build and its workers
(what the build holds in physical memory: a page shared after fork counts once), the build
process's own sampled RSS and the largest RSS of any one of them (``ru_maxrss`` is not
used: a child's counts whatever the bench process held when it forked, before the exec);
the memory formula's prediction
(:func:`squash.build.memory_estimate`) beside them, and recall@10 of 200 queries against
exact ground truth over the whole input. Targets (issue #14): 2M x 64 in <= 3 min with
peak RSS <= 3x the input; 10M x 128 in <= 30 min with peak RSS <= 4 GiB.

    python bench/build_scale.py --out bench/results            # 2M x 64 and 10M x 128
    python bench/build_scale.py --sizes 200000x32 --out /tmp   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO / "tests" / "helpers"))  # build_files: equal-index comparison
sys.path.insert(0, str(REPO))  # bench.stack_latency

import squash  # noqa: E402
from squash.build import memory_estimate  # noqa: E402

TARGETS = {(2_000_000, 64): (180.0, None), (10_000_000, 128): (1800.0, 4.0)}  # (s, GiB); None: 3x input
WORKERS = 2


def write_input(path: Path, n: int, d: int, seed: int = 0) -> np.ndarray:
    """A clustered float32 .npy of n x d, written a block at a time; returns 200 queries
    (held-out perturbations of random rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(64, n // 20_000), d)).astype(np.float32) * 3
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 1 << 18):
        m = min(1 << 18, n - start)
        out[start : start + m] = centres[rng.integers(0, centres.shape[0], m)] + rng.normal(size=(m, d))
    out.flush()
    rows = rng.integers(0, n, 200)
    queries = np.asarray(out[np.sort(rows)]) + 0.3 * rng.normal(size=(200, d)).astype(np.float32)
    del out
    return queries.astype(np.float32)


def exact_top(path: Path, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k over the whole file, a block at a time."""
    data = np.load(path, mmap_mode="r")
    q_sq = np.einsum("ij,ij->i", queries, queries)
    best_d = np.full((queries.shape[0], 0), np.inf, np.float32)
    best_i = np.full((queries.shape[0], 0), -1, np.int64)
    for start in range(0, data.shape[0], 1 << 18):
        block = np.asarray(data[start : start + (1 << 18)])
        dist = q_sq[:, None] - 2 * queries @ block.T + np.einsum("ij,ij->i", block, block)[None, :]
        cat_d = np.concatenate([best_d, dist], axis=1)
        rows = np.broadcast_to(np.arange(start, start + block.shape[0]), dist.shape)
        cat_i = np.concatenate([best_i, rows], 1)
        keep = np.argpartition(cat_d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cat_d, keep, 1), np.take_along_axis(cat_i, keep, 1)
    return best_i


def _tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS of ``pid`` alone, sum of PSS over ``pid`` and every descendant, largest RSS of
    any of them) in bytes, from /proc. PSS shares a page among the processes that map it,
    so the sum is the physical memory the build holds (a forked worker's RSS also counts
    the parent's pages it maps)."""
    own = total = largest = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            rss = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            pss = next(
                int(line.split()[1]) * 1024
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
                if line.startswith("Pss:")
            )
            for task in Path(f"/proc/{p}/task").iterdir():  # children of every thread
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, StopIteration):
            continue
        own = rss if p == pid else own
        total += pss
        largest = max(largest, rss)
    return own, total, largest


def build(path: Path, uri: str, scratch: Path) -> dict[str, Any]:
    """The CLI build in a child process: wall time, largest process RSS, sampled tree RSS."""
    argv = [sys.executable, "-m", "squash.cli", "build", "--vectors", str(path), "--index-uri", uri]
    argv += ["--workers", str(WORKERS), "--scratch", str(scratch), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "shared"), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak[:] = [max(a, b) for a, b in zip(peak, _tree_memory(proc.pid), strict=True)]

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    stop.set()
    watcher.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}):\n{err[-4000:]}")
    return {
        "wall_seconds": round(wall, 1),
        "build_process_rss_gib": round(peak[0] / 2**30, 3),  # sampled every 0.25 s
        "peak_rss_gib": round(peak[1] / 2**30, 3),  # sampled sum of PSS: physical memory held
        "largest_rss_sampled_gib": round(peak[2] / 2**30, 3),
        "summary": out.strip().splitlines(),
    }


def run_size(n: int, d: int, tmp: Path) -> dict[str, Any]:
    path = tmp / f"base-{n}x{d}.npy"
    t = time.perf_counter()
    queries = write_input(path, n, d)
    written = time.perf_counter() - t
    uri = (tmp / f"idx-{n}x{d}").as_uri()
    figures = build(path, uri, tmp / "scratch")
    index = squash.open_index(uri)
    truth = exact_top(path, queries)
    found = index.search(queries, k=10).ids
    recall = float(np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(found, truth, strict=True)]))
    input_gib = n * d * 4 / 2**30
    limit_s, limit_gib = TARGETS.get((n, d), (None, None))
    limit_gib = 3 * input_gib if limit_gib is None and (n, d) in TARGETS else limit_gib
    predicted = memory_estimate(n, d, workers=WORKERS)["total"] / 2**30
    path.unlink()
    return {
        "n": n,
        "d": d,
        "input_gib": round(input_gib, 3),
        "write_input_seconds": round(written, 1),
        **figures,
        "predicted_peak_gib": round(predicted, 3),
        "partitions": index.manifest.partitions,
        "recall_at_10": round(recall, 4),
        "target_seconds": limit_s,
        "target_peak_gib": None if limit_gib is None else round(limit_gib, 3),
        "meets_time": None if limit_s is None else figures["wall_seconds"] <= limit_s,
        "meets_memory": None if limit_gib is None else figures["peak_rss_gib"] <= limit_gib,
    }


def fanout_run(n: int, d: int, tmp: Path, concurrency: int = 4) -> dict[str, Any]:
    """The same build on this machine (one process) and fanned out over the local stack's
    worker functions (``--on lambda``): wall times, invocations, bytes moved, equal files."""
    from build_files import assert_same_index, local_files, s3_files

    from bench.stack_latency import running_stack
    from squash.build import BuildOptions, build_index
    from squash.runtime.build_driver import LambdaBuilder
    from squash.sources import NpySource

    path = tmp / f"fanout-{n}x{d}.npy"
    write_input(path, n, d, seed=1)
    opts = BuildOptions(seed=1)
    t = time.perf_counter()
    build_index(NpySource(path), str(tmp / "fanout-local"), options=opts)
    local_s = time.perf_counter() - t
    with running_stack(tmp / "fanout-stack", 1, 0, tmp / "fanout-local") as endpoints:
        env = {
            "AWS_ENDPOINT_URL_S3": endpoints["s3_endpoint"],
            "AWS_ENDPOINT_URL_LAMBDA": endpoints["lambda_endpoint"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": endpoints.get("region", "us-east-1"),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            builder = LambdaBuilder("squash", concurrency=concurrency)
            t = time.perf_counter()
            build_index(
                NpySource(path), f"s3://{endpoints['bucket']}/indexes/fanout", options=opts, builder=builder
            )
            lambda_s = time.perf_counter() - t
            assert_same_index(
                local_files(tmp / "fanout-local"), s3_files(endpoints["bucket"], "indexes/fanout/")
            )
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    path.unlink()
    return {
        "n": n,
        "d": d,
        "local_one_process_seconds": round(local_s, 1),
        "lambda_seconds": round(lambda_s, 1),
        "files_equal": True,
        **builder.stats,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000000x64,10000000x128", help="comma-separated NxD")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--tmp", type=Path, default=None, help="where inputs and indexes go (default: temp)")
    ap.add_argument(
        "--fanout", default="300000x64", help="NxD of the fanned-out build on the local stack ('' skips)"
    )
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n, d in sizes:
            print(f"build_scale: {n:,} x {d} ...", flush=True)
            rows.append(run_size(n, d, Path(tmp)))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "summary"}), flush=True)
        fanout = None
        if args.fanout:
            n, d = (int(v) for v in args.fanout.split("x"))
            print(f"build_scale: fanned out over the local stack, {n:,} x {d} ...", flush=True)
            fanout = fanout_run(n, d, Path(tmp))
            print(json.dumps(fanout), flush=True)
    doc = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, one BLAS thread, --workers {WORKERS}",
        "builds": rows,
        "fanout": fanout,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "build_scale.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
