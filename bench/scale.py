"""Scale section: build a 1M x 128 SYNTHETIC index with ``squash.build_index`` unchanged.

The build runs in a child process so its wall time and peak RSS are its own (the child
reports its RUSAGE_SELF peak; the parent cross-checks RUSAGE_CHILDREN). The parent then opens
the index and measures search time per partition visit, recall, and the bytes of loaded
segments each worker would hold for several tree sizes.

Run as ``python -m bench.scale --child-build DATA_DIR URI`` it is the child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

import squash
from squash.datasets import Dataset, synthetic_mixture
from squash.runtime.tree import TreeLayout

from . import sweep, treework
from .peers import exact_search

REPO = Path(__file__).resolve().parents[1]
TREES = ((1, 0), (4, 1), (4, 2), (8, 2), (16, 2))
BUILD_LIMIT_S = 600.0
PEAK_LIMIT_GIB = 8.0


def price_filters(attrs: pa.Table) -> dict[str, tuple[dict | None, np.ndarray]]:
    """Uncorrelated range filters on the synthetic uniform 'price' (0-100) attribute."""
    price = attrs.column("price").to_numpy()
    out: dict[str, tuple[dict | None, np.ndarray]] = {"none": (None, np.ones(price.size, dtype=bool))}
    for name, cut in (("50%", 50.0), ("10%", 10.0), ("1%", 1.0), ("0.1%", 0.1)):
        out[name] = ({"price": {"$lt": cut}}, price < cut)
    return out


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def child_build(data_dir: Path, uri: str) -> dict[str, Any]:
    """The child: load the inputs like the CLI would, build, report time and own peak RSS."""
    start = time.perf_counter()
    base = np.load(data_dir / "base.npy")
    attrs = feather.read_table(data_dir / "attributes.arrow")
    loaded = time.perf_counter()
    summary = squash.build_index(base, uri, attrs)
    return {
        "load_seconds": loaded - start,
        "build_seconds": summary.seconds,
        "wall_seconds": time.perf_counter() - start,
        "partitions": summary.partitions,
        "code_bytes_per_vector": summary.code_bytes_per_vector,
        "index_bytes": summary.index_bytes,
        "hot_bytes": summary.hot_bytes,
        "cold_bytes": summary.cold_bytes,
        "hot_bytes_per_vector": summary.hot_bytes_per_vector,
        "attribute_bytes_per_vector": summary.attribute_bytes / summary.n,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def build_in_child(ds: Dataset, tmp: Path, uri: str) -> dict[str, Any]:
    """Write the inputs, run the build in a child process, return its figures."""
    data = tmp / "scale-data"
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / "base.npy", ds.base)
    feather.write_feather(ds.attributes, data / "attributes.arrow", compression="uncompressed")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--child-build", str(data), uri],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"scale build child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out |= {
        "child_process_seconds": wall,
        "peak_rss_gib": out["peak_rss_kib"] / 2**20,
        "rusage_children_peak_gib": children_kib / 2**20,
        "input_bytes": int(ds.base.nbytes),
    }
    return out


def worker_memory(index: squash.Index, trees: tuple[tuple[int, int], ...] = TREES) -> list[dict[str, Any]]:
    """Segment bytes each tree position holds (affinity: partition % size), per tree shape."""
    sizes = np.array([ref.size for ref in index.manifest.segments], dtype=np.float64)
    out = []
    for b, depth in trees:
        tree = TreeLayout(b, depth)
        per = np.bincount(np.arange(sizes.size) % tree.size, weights=sizes, minlength=tree.size)
        out.append(
            {
                "branching": b,
                "depth": depth,
                "nodes": tree.size,
                "max_mib": float(per.max() / 2**20),
                "mean_mib": float(per.mean() / 2**20),
                "partitions_per_node": float(sizes.size / tree.size),
            }
        )
    return out


def run(
    tmp: Path,
    n: int,
    d: int,
    n_queries: int,
    k: int,
    repeats: int,
    batch_sizes: tuple[tuple[int, int], ...],
    ladder: tuple[tuple[float, int], ...] = sweep.LADDER,
    seed: int = 1,
) -> tuple[dict[str, Any], dict[int, list[treework.BatchWork]], squash.Index]:
    """The whole scale section; returns its figures, the tree work for the cost model and the index."""
    started = time.perf_counter()
    ds = synthetic_mixture(n=n, d=d, n_queries=n_queries, clusters=64, seed=seed)
    uri = (tmp / "scale-index").as_uri()
    build = build_in_child(ds, tmp, uri)
    build |= {
        "limit_seconds": BUILD_LIMIT_S,
        "limit_peak_gib": PEAK_LIMIT_GIB,
        "met": build["build_seconds"] <= BUILD_LIMIT_S and build["peak_rss_gib"] <= PEAK_LIMIT_GIB,
    }

    index = squash.open_index(uri)
    rss0 = _rss_mib()
    load_s = sweep.preload(index)
    loaded = {
        "seconds": load_s,
        "segment_mib": index.cache.nbytes / 2**20,
        "rss_increase_mib": _rss_mib() - rss0,
    }

    base_sq = np.einsum("ij,ij->i", ds.base, ds.base)
    filters = price_filters(ds.attributes)
    search: dict[str, Any] = {}
    for name in ("none", "10%", "1%"):
        filt, mask = filters[name]
        t0 = time.perf_counter()
        truth = exact_search(ds.base, base_sq, ds.queries, mask, k)
        truth_s = time.perf_counter() - t0
        matches = int(mask.sum())
        default = sweep.point(index, ds.queries, k, filt, truth, matches, squash.SearchParams(), repeats)
        visits = default["mean"]["partitions"] * n_queries
        entry = {
            "selectivity": float(mask.mean()),
            "truth_seconds": truth_s,
            "default": default,
            "ms_per_partition_visit": default["search_ms"] / max(visits, 1),
        }
        if name == "none":
            entry["ladder"] = sweep.ladder(index, ds.queries, k, filt, truth, matches, repeats, rungs=ladder)
        search[name] = entry

    # The cost model's configuration: the cheapest ladder rung reaching recall 0.95 unfiltered.
    rungs = [p for p in search["none"]["ladder"] if p["recall"] >= 0.95]
    chosen = max(rungs, key=lambda p: p["qps"])["params"] if rungs else squash.SearchParams().to_dict()
    params = squash.SearchParams(**chosen)
    work = {b: treework.measure(index, ds.queries, k, None, params, b, nb) for b, nb in batch_sizes}
    result = {
        "dataset": {
            "name": "synthetic-mixture",
            "synthetic": True,
            "n": n,
            "dims": d,
            "queries": n_queries,
            "clusters": 64,
            "seed": seed,
        },
        "build": build,
        "loaded": loaded,
        "worker_memory": worker_memory(index),
        "search": search,
        "cost_params": chosen,
        "cost_params_rule": "cheapest unfiltered ladder rung with recall >= 0.95 (defaults if none)",
        "tree_work": [treework.summary(w) for w in work.values()],
        "seconds": time.perf_counter() - started,
    }
    return result, work, index


def _main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child-build", nargs=2, metavar=("DATA_DIR", "URI"), required=True)
    args = ap.parse_args()
    out = child_build(Path(args.child_build[0]), args.child_build[1])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
