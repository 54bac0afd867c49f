"""`make bench`: squash against exact numpy search and FAISS on one core, plus scale and cost.

    python bench/run.py                  # full run (Fashion-MNIST, 1M x 128 synthetic scale, cost)
    python bench/run.py --quick          # seconds-long smoke on a tiny synthetic set (CI)
    python bench/run.py --skip-scale     # everything but the 1M build
    python bench/run.py --only planner   # the planner section alone (issue #8) -> planner.json, PLANNER.md
    python bench/run.py --only report    # re-render REPORT.md and plots from latest.json (and PLANNER.md)

Writes ``<out>/<timestamp>.json``, ``<out>/latest.json``, ``<out>/REPORT.md`` and PNG plots
(default out: bench/results; --quick defaults to a temporary directory); the planner section
writes ``<out>/planner.json`` and ``<out>/PLANNER.md`` (``--only planner`` leaves latest.json
alone). Every QPS is the
median of timed batch runs of all queries after a warm-up; ratios are computed within the run
because absolute timings on a shared machine drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package, not its modules
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

import squash
from bench import (
    cost,
    levels,
    machine,
    peers,
    planner,
    planner_report,
    report,
    scale,
    stack,
    sweep,
    targets,
    treework,
)
from bench.timing import Stopwatch
from squash.datasets import (
    Dataset,
    fashion_filters,
    fashion_mnist_available,
    load_fashion_mnist,
    synthetic_mixture,
)
from squash.evaluation import exact_knn
from squash.runtime.tree import TreeLayout

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    """Everything a run sweeps, recorded in the results file."""

    mode: str = "full"
    k: int = 10
    repeats: int = 3
    latency_queries: int = 200
    nlist: int = 256
    nprobes: tuple[int, ...] = peers.NPROBES
    ladder: tuple[tuple[float, int], ...] = sweep.LADDER
    ladder_all: tuple[tuple[float, int], ...] = ((1.0, 500), (1.05, 1000))
    ladder_all_filters: tuple[str, ...] = ("none", "1%")
    knob_filters: tuple[str, ...] = ("none", "1%")
    sketch_keep: tuple[float, ...] = (0.4, 1.0)
    rerank_factor: tuple[int, ...] = (3, 12)
    bits: tuple[float, ...] = (1.0, 4.0)
    bits_filters: tuple[str, ...] = ("none", "1%")
    cold_filters: tuple[str, ...] = ("none", "1%")
    batch_sizes: tuple[tuple[int, int], ...] = ((1, 200), (10, 50), (100, 10))
    trees: tuple[tuple[int, int], ...] = scale.TREES
    cost_tree: tuple[int, int] = (4, 1)
    scale_n: int = 1_000_000
    scale_d: int = 128
    scale_queries: int = 1000
    dataset_queries: int = 1000

    @classmethod
    def quick(cls) -> Config:
        return cls(
            mode="quick",
            latency_queries=20,
            nlist=16,
            nprobes=(1, 2, 4, 8, 16),
            ladder=((1.0, 250), (1.12, 2000), (1.6, 16000)),
            ladder_all=((1.0, 500),),
            ladder_all_filters=("none",),
            knob_filters=("none",),
            sketch_keep=(0.5,),
            rerank_factor=(3,),
            bits=(1.0,),
            bits_filters=("none",),
            cold_filters=("none",),
            batch_sizes=((1, 10), (10, 5)),
            trees=((1, 0), (4, 1)),
            scale_n=3000,
            scale_d=16,
            scale_queries=50,
            dataset_queries=50,
        )


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def load_dataset(cfg: Config, which: str) -> tuple[Dataset, dict[str, tuple[dict | None, np.ndarray]]]:
    """Fashion-MNIST (real) when installed and asked for, else a synthetic mixture (labelled)."""
    if cfg.mode == "quick":
        ds = synthetic_mixture(n=2000, d=32, n_queries=cfg.dataset_queries, clusters=8, seed=3)
        return ds, scale.price_filters(ds.attributes)
    if which in ("auto", "fashion") and fashion_mnist_available():
        ds = load_fashion_mnist(n_queries=cfg.dataset_queries)
        return ds, fashion_filters(ds.attributes)
    if which == "fashion":
        log("Fashion-MNIST is not installed: using a SYNTHETIC mixture instead")
    ds = synthetic_mixture(n=60000, d=128, n_queries=cfg.dataset_queries, seed=0)
    return ds, scale.price_filters(ds.attributes)


def _matched_nprobe(points: list[dict[str, Any]]) -> int:
    """FAISS's cheapest nprobe reaching recall 0.95 (its most accurate one if none does)."""
    ok = [p for p in points if p["recall"] >= targets.RECALL_TARGET]
    return (min(ok, key=lambda p: p["nprobe"]) if ok else max(points, key=lambda p: p["recall"]))["nprobe"]


def run_selectivity(
    cfg: Config,
    name: str,
    filt: Any,
    mask: np.ndarray,
    ds: Dataset,
    index: squash.Index,
    uri: str,
    faiss_indexes: dict[str, Any],
    base_sq: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """Every measurement at one filter, back to back so their ratios share the machine's state."""
    k, reps, q = cfg.k, cfg.repeats, ds.queries
    matches = int(mask.sum())
    t0 = time.perf_counter()
    truth = exact_knn(ds.base, q, mask, k)
    out: dict[str, Any] = {
        "selectivity": float(mask.mean()),
        "matches": matches,
        "filter": filt,
        "truth_seconds": time.perf_counter() - t0,
    }
    out["peers"] = {
        "exact": peers.exact_point(ds.base, base_sq, q, k, mask, truth, reps),
        "faiss_flat": peers.flat_point(faiss_indexes["faiss_flat"], q, k, mask, truth, reps),
        "ivf_flat": peers.ivf_sweep(faiss_indexes["ivf_flat"], q, k, mask, truth, reps, cfg.nprobes),
        "ivf_sq8": peers.ivf_sweep(faiss_indexes["ivf_sq8"], q, k, mask, truth, reps, cfg.nprobes),
    }
    P = squash.SearchParams
    sq: dict[str, Any] = {
        "default": sweep.point(index, q, k, filt, truth, matches, P(), reps),
        "default_exact": sweep.point(index, q, k, filt, truth, matches, P(levels="exact"), reps),
        # levels='all' is slow in-process; segments are already loaded, so no per-point warm-up run.
        "default_all": sweep.point(index, q, k, filt, truth, matches, P(levels="all"), reps, warmup=False),
        "ladder": sweep.ladder(index, q, k, filt, truth, matches, reps, rungs=cfg.ladder),
    }
    if name in cfg.ladder_all_filters:
        sq["ladder_all"] = sweep.ladder(
            index, q, k, filt, truth, matches, reps, levels="all", rungs=cfg.ladder_all, warmup=False
        )
    if name in cfg.knob_filters:
        sq["knobs"] = [
            *sweep.knob_sweep(index, q, k, filt, truth, matches, reps, "sketch_keep", cfg.sketch_keep),
            *sweep.knob_sweep(index, q, k, filt, truth, matches, reps, "rerank_factor", cfg.rerank_factor),
        ]
    out["squash"] = sq
    out["levels"] = {lv: sweep.level_times(index, q, k, filt, P(levels=lv)) for lv in ("auto", "all")}
    nprobe = _matched_nprobe(out["peers"]["ivf_sq8"])
    n_lat = cfg.latency_queries
    out["latency"] = {
        "squash": sweep.single_latency(index, q, k, filt, n_lat, P()),
        "faiss_sq8": peers.single_latency(faiss_indexes["ivf_sq8"], q, k, mask, nprobe, n_lat)
        | {"nprobe": nprobe},
        "exact": _exact_latency(ds, base_sq, mask, k, n_lat),
    }
    if name in cfg.cold_filters:
        out["cold_warm"] = sweep.cold_warm(uri, q, k, filt, n_lat)
    return out, truth


def _exact_latency(ds: Dataset, base_sq: np.ndarray, mask: np.ndarray, k: int, n: int) -> dict[str, float]:
    from bench.timing import latencies_ms

    q = ds.queries
    return latencies_ms(lambda i: peers.exact_search(ds.base, base_sq, q[i % len(q)][None, :], mask, k), n)


def run_bits(cfg: Config, ds: Dataset, filters: dict, tmp: Path, truths: dict[str, np.ndarray]) -> list[dict]:
    """bits_per_dim as separate builds, searched at default knobs (levels auto and all)."""
    out = []
    for bits in cfg.bits:
        uri = (tmp / f"bits-{bits:g}").as_uri()
        summary = squash.build_index(ds.base, uri, ds.attributes, squash.BuildOptions(bits_per_dim=bits))
        index = squash.open_index(uri)
        sweep.preload(index)
        entry: dict[str, Any] = {
            "bits_per_dim": bits,
            "build_seconds": summary.seconds,
            "code_bytes_per_vector": summary.code_bytes_per_vector,
            "index_bytes": summary.index_bytes,
            "points": {},
        }
        for name in cfg.bits_filters:
            filt, mask = filters[name]
            m = int(mask.sum())
            entry["points"][name] = {
                lv: sweep.point(
                    index,
                    ds.queries,
                    cfg.k,
                    filt,
                    truths[name],
                    m,
                    squash.SearchParams(levels=lv),
                    cfg.repeats,
                    warmup=lv != "all",
                )
                for lv in ("auto", "all")
            }
        out.append(entry)
        log(f"bits {bits:g}: build {summary.seconds:.1f} s")
    return out


def run_dataset(cfg: Config, which: str, tmp: Path, watch: Stopwatch) -> tuple[dict[str, Any], dict, Any]:
    """The main section: one dataset, every selectivity, squash vs exact vs FAISS."""
    ds, filters = load_dataset(cfg, which)
    log(
        f"dataset {ds.name} ({'SYNTHETIC' if ds.synthetic else 'real'}) {ds.base.shape}, {len(ds.queries)} "
        "queries"
    )
    uri = (tmp / "index").as_uri()
    summary = squash.build_index(ds.base, uri, ds.attributes)
    log(f"squash build {summary.seconds:.1f} s, P={summary.partitions}")
    index = squash.open_index(uri)
    preload_s = sweep.preload(index)
    t = time.perf_counter()
    faiss_indexes, faiss_build = peers.build_faiss(ds.base, min(cfg.nlist, len(ds.base) // 39))
    watch.lap("faiss build", t)
    base_sq = np.einsum("ij,ij->i", ds.base, ds.base)
    sels, truths = {}, {}
    for name, (filt, mask) in filters.items():
        t = time.perf_counter()
        sels[name], truths[name] = run_selectivity(
            cfg, name, filt, mask, ds, index, uri, faiss_indexes, base_sq
        )
        d = sels[name]["squash"]["default"]
        log(
            f"{name:>5}: squash recall {d['recall']:.4f} {d['qps']:,.0f} QPS "
            f"({watch.lap('selectivities', t):.0f} s)"
        )
    t = time.perf_counter()
    level_costs = levels.measure(index, ds.queries, repeats=3 if cfg.mode == "quick" else 5)
    watch.lap("level costs", t)
    t = time.perf_counter()
    bits = run_bits(cfg, ds, filters, tmp, truths)
    watch.lap("bits sweep", t)
    t = time.perf_counter()
    work = {
        b: treework.measure(index, ds.queries, cfg.k, None, squash.SearchParams(), b, nb)
        for b, nb in cfg.batch_sizes
    }
    watch.lap("tree work", t)
    section = {
        "dataset": {
            "name": ds.name,
            "synthetic": ds.synthetic,
            "n": int(ds.base.shape[0]),
            "dims": int(ds.base.shape[1]),
            "queries": int(ds.queries.shape[0]),
        },
        "build": {
            "seconds": summary.seconds,
            "partitions": summary.partitions,
            "bits_per_dim": squash.BuildOptions().bits_per_dim,
            "code_bytes_per_vector": summary.code_bytes_per_vector,
            "float32_bytes_per_vector": summary.float32_bytes_per_vector,
            "index_bytes": summary.index_bytes,
            "hot_bytes": summary.hot_bytes,
            "cold_bytes": summary.cold_bytes,
            "hot_bytes_per_vector": summary.hot_bytes_per_vector,
            "attribute_bytes_per_vector": summary.attribute_bytes / summary.n,
            "resident_bytes": index.cache.nbytes,
            "preload_seconds": preload_s,
        },
        "levels": level_costs,
        "faiss": {"nlist": faiss_indexes["ivf_sq8"].nlist, "build_seconds": faiss_build},
        "selectivities": sels,
        "bits": bits,
        "tree_work": [treework.summary(w) for w in work.values()],
    }
    return section, work, index


def cost_section(cfg: Config, dims: int, work: dict[int, list], index: squash.Index) -> dict[str, Any]:
    """$/M per batch size and tree shape from measured work (headline tree: cfg.cost_tree)."""
    seg = np.array([ref.size for ref in index.manifest.segments], dtype=np.float64)
    router = index.manifest.router.size
    by_tree = []
    for b, depth in cfg.trees:
        tree = TreeLayout(b, depth)
        for w in work.values():
            by_tree.append(cost.per_million(w, tree, dims, seg, router))
    head = [r for r in by_tree if (r["tree"]["branching"], r["tree"]["depth"]) == cfg.cost_tree]
    # Worker memory sized from the measured hot tier (a vCPU share below 1769 MB slows the scan).
    tree = TreeLayout(*cfg.cost_tree)
    sized_mb = cost.sized_worker_mb(seg, tree)
    sized = [
        cost.per_million(w, tree, dims, seg, router, a=cost.Assumptions(worker_mb=sized_mb))
        | {"worker_mb": sized_mb}
        for w in work.values()
    ]
    return {
        "tree": f"b={cfg.cost_tree[0]}, l={cfg.cost_tree[1]}",
        "headline": head,
        "sized_worker_mb": sized_mb,
        "headline_sized": sized,
        "by_tree": by_tree,
    }


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=_json_default)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    return out / "latest.json"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating | np.bool_):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny synthetic smoke run (< 30 s)")
    ap.add_argument("--skip-scale", action="store_true", help="skip the 1M x 128 build")
    ap.add_argument(
        "--skip-planner", action="store_true", help="skip the planner section (keeps <out>/planner.json)"
    )
    ap.add_argument(
        "--only",
        choices=("dataset", "fashion", "scale", "planner", "report"),
        help="run one section (report: re-render from <out>/latest.json)",
    )
    ap.add_argument("--dataset", choices=("auto", "fashion", "synthetic"), default="auto")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results; --quick: a temp dir)")
    return ap.parse_args(argv)


def run_planner(quick: bool, out: Path, tmp: Path) -> dict[str, Any]:
    """The planner section (bench/planner.py): every available real dataset, or for --quick a
    tiny synthetic set; writes <out>/planner.json and <out>/PLANNER.md."""
    cfg = planner.PlannerConfig.quick() if quick else planner.PlannerConfig()
    res = planner.run(cfg, tmp, log)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "planner.json"
    path.write_text(json.dumps(res, indent=1, default=_json_default))
    md = planner_report.write(res, out)
    log(f"planner: wrote {path} and {md} in {res['seconds']:.0f} s")
    return {"file": path.name, "report": md.name, "seconds": res["seconds"], "summary": res["summary"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="squash-bench-")) if args.quick else RESULTS)
    if args.only == "planner":
        with tempfile.TemporaryDirectory(prefix="squash-bench-") as tmpdir:
            run_planner(args.quick, out, Path(tmpdir))
        print((out / "PLANNER.md").read_text())
        return 0
    if args.only == "report":
        if (out / "planner.json").exists():
            print(planner_report.write(json.loads((out / "planner.json").read_text()), out))
        if not (out / "latest.json").exists():
            print(f"no {out / 'latest.json'} to render: run the benchmark first", file=sys.stderr)
            return 2
        results = json.loads((out / "latest.json").read_text())
        results["stack"] = stack.load(out)
        if results["stack"].get("status") == "present":
            results.setdefault("cost", {})["stack"] = cost.stack_cost(results["stack"]["data"])
        results["targets"] = targets.evaluate(results)
        print(report.write(results, out))
        return 0
    cfg = Config.quick() if args.quick else Config()
    watch = Stopwatch()
    results: dict[str, Any] = {
        "schema": 1,
        "mode": cfg.mode,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "versions": machine.versions(),
        "parameters": asdict(replace(cfg))
        | {
            "search_defaults": squash.SearchParams().to_dict(),
            "build_defaults": asdict(squash.BuildOptions()),
        },
    }
    with tempfile.TemporaryDirectory(prefix="squash-bench-") as tmpdir:
        tmp = Path(tmpdir)
        costs: dict[str, Any] = {"parameters": cost.parameters()}
        if args.only in (None, "dataset", "fashion"):
            t = time.perf_counter()
            section, work, index = run_dataset(cfg, args.dataset, tmp, watch)
            results["dataset_section"] = section
            costs["dataset"] = cost_section(cfg, section["dataset"]["dims"], work, index) | {
                "dataset": section["dataset"]["name"],
                "params": "defaults, unfiltered",
            }
            del index
            watch.lap("dataset section", t)
        if args.only is None and not args.skip_planner:
            t = time.perf_counter()
            results["planner"] = run_planner(args.quick, out, tmp)
            watch.lap("planner section", t)
        if args.only in (None, "scale") and not args.skip_scale:
            t = time.perf_counter()
            log(f"scale: building {cfg.scale_n:,} x {cfg.scale_d} (synthetic) in a child process")
            sc, work, index = scale.run(
                tmp,
                cfg.scale_n,
                cfg.scale_d,
                cfg.scale_queries,
                cfg.k,
                cfg.repeats,
                cfg.batch_sizes,
                cfg.ladder,
            )
            results["scale"] = sc
            costs["sift1m_size"] = cost_section(cfg, cfg.scale_d, work, index) | {
                "dataset": f"synthetic {cfg.scale_n:,} x {cfg.scale_d}",
                "params": sc["cost_params"],
            }
            del index
            log(
                f"scale: build {sc['build']['build_seconds']:.0f} s, peak "
                f"{sc['build']['peak_rss_gib']:.2f} GiB"
            )
            watch.lap("scale section", t)
        results["stack"] = stack.load(out)
        if results["stack"].get("status") == "present":
            costs["stack"] = cost.stack_cost(results["stack"]["data"])
        results["cost"] = costs
    results["targets"] = targets.evaluate(results)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["sections_seconds"] = watch.sections
    results["total_seconds"] = watch.total
    path = write(results, out)
    md = report.write(results, out)
    log(f"wrote {path} and {md} in {watch.total:.0f} s")
    print(report.targets_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
