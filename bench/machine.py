"""Where the figures were measured: CPU, cores, RAM, Python and library versions, BLAS, date.

Read from /proc and package metadata (no child processes, so the scale section's
RUSAGE_CHILDREN peak only ever sees the build it measures).
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import THREAD_VARS, THREADS_FROM_ENV

REPO = Path(__file__).resolve().parents[1]


def _cpuinfo() -> dict[str, Any]:
    """CPU model, logical CPUs and the SIMD flags that matter to BLAS and FAISS."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or "unknown"}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        fields.setdefault(key.strip(), val.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name", "unknown"),
        "mhz": fields.get("cpu MHz"),
        "simd": sorted(flags & {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"}),
    }


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _blas() -> str:
    """numpy's BLAS as numpy reports it (name, version and OpenBLAS configuration)."""
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # numpy's config layout is not a stable API
        return "unknown"
    return " ".join(str(cfg.get(k, "")) for k in ("name", "version", "openblas configuration")).strip()


def _git_commit() -> str | None:
    """HEAD's commit, read from .git without running git (the tree may be dirty)."""
    head = REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            target = REPO / ".git" / ref[5:]
            if target.exists():
                return target.read_text().strip()
            for line in (REPO / ".git" / "packed-refs").read_text().splitlines():
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


def describe() -> dict[str, Any]:
    """Everything needed to tell whether two results files are comparable."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpuinfo(),
        "logical_cpus": os.cpu_count(),
        "ram_gib": _mem_gib(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "blas": _blas(),
        "threads": {var: os.environ.get(var) for var in THREAD_VARS},
        "threads_set_by_caller": {k: v is not None for k, v in THREADS_FROM_ENV.items()},
        "git_commit": _git_commit(),
    }


def versions() -> dict[str, str | None]:
    import squash

    out = {"squash": squash.__version__}
    for dist in ("numpy", "pyarrow", "faiss-cpu", "matplotlib"):
        out[dist] = _version(dist)
    return out
