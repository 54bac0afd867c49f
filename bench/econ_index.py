"""The SIFT1M-sized index of the economics bench: 1M x 128 SYNTHETIC, built once and cached.

The same data as ``bench/scale.py`` (``synthetic_mixture(n, d, clusters=64, seed=1)``), built
with ``squash.build_index`` at its defaults. A build takes ~8 minutes on the bench machine,
so the index is cached under ``~/.cache/squash-bench/`` keyed by the build code (a hash of
``shared/squash`` outside ``runtime/``) and the data parameters: a change to the build
invalidates it.

    python -m bench.econ_index [--n 1000000] [--d 128]     # build (or find) it, print its folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import squash
from squash.datasets import Dataset, synthetic_mixture

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SQUASH_BENCH_CACHE", Path.home() / ".cache" / "squash-bench"))
N, D, QUERIES, CLUSTERS, SEED = 1_000_000, 128, 1000, 64, 1


def build_code_hash() -> str:
    """Hash of the package's non-runtime sources: what decides the bytes of a build."""
    h = hashlib.sha256()
    pkg = REPO / "shared" / "squash"
    for path in sorted(pkg.rglob("*.py")):
        if "runtime" in path.relative_to(pkg).parts:
            continue
        h.update(path.relative_to(pkg).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def dataset(n: int = N, d: int = D, n_queries: int = QUERIES) -> Dataset:
    return synthetic_mixture(n=n, d=d, n_queries=n_queries, clusters=CLUSTERS, seed=SEED)


def folder(n: int = N, d: int = D) -> Path:
    return CACHE / f"econ-{n}x{d}-s{SEED}-{build_code_hash()}"


def ensure(ds: Dataset, n: int = N, d: int = D, log=print) -> tuple[Path, dict]:
    """The cached index folder for ``ds`` (built now if absent) and its build record."""
    out = folder(n, d)
    record = out / "econ-build.json"
    if record.exists() and (out / "manifest.json").exists():
        return out, json.loads(record.read_text())
    out.mkdir(parents=True, exist_ok=True)
    log(f"econ: building {n:,} x {d} (synthetic) into {out} (~8 min)")
    started = time.perf_counter()
    summary = squash.build_index(ds.base, out.as_uri(), ds.attributes)
    info = {
        "n": n,
        "dims": d,
        "partitions": summary.partitions,
        "build_seconds": summary.seconds,
        "wall_seconds": time.perf_counter() - started,
        "hot_bytes": summary.hot_bytes,
        "index_bytes": summary.index_bytes,
        "build_code": build_code_hash(),
        "date": time.strftime("%Y-%m-%d"),
    }
    record.write_text(json.dumps(info, indent=1))
    return out, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--d", type=int, default=D)
    args = ap.parse_args()
    path, info = ensure(dataset(args.n, args.d), args.n, args.d)
    print(path)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
