"""PLANNER.md from planner.json: the planner section's figures and its pass/fail per target.

    python bench/planner_report.py [--out bench/results]   # re-render from <out>/planner.json

Pure rendering: nothing here measures. A dataset that was not available is listed with the
reason, not dropped.
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
from typing import Any

from bench.planner import ROLE_LABEL

CHECK_NAMES = {
    "recall": "recall@10 >= target",
    "full_k": "exactly min(k, matches) results per query",
    "vs_exact": "squash QPS >= exact numpy QPS",
    "vs_faiss_sq8": "squash QPS >= FAISS IVF-SQ8 QPS at squash's recall",
    "p50_vs_faiss": "single-query p50 <= 2 x FAISS IVF-SQ8's at squash's recall",
    "calibration_share": "calibration adds <= 20 % to build time",
}
ROLE_ORDER = ("tuning", "held-out", "smoke")


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def _ok(met: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "–"}[met]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _sel(x: float) -> str:
    return f"{x:.1%}" if x >= 0.01 else f"{x:.2%}"


def _plan(p: dict[str, Any]) -> str:
    ps = p.get("plan_stats", {})
    plan = ps.get("plan", "?")
    if ps.get("rerank") not in (None, "none"):
        plan = f"{plan}+{ps['rerank']}"  # scored on float32 from the cold tier
    exp = ps.get("expected_recall")
    return f"{plan} ({_n(exp, '.3f')})" if exp is not None else str(plan)


def _peer_at(qps: float | None, best: float | None, at_target: float | None = None, target: str = "") -> str:
    """A peer's QPS at squash's recall, or why there is none (and its QPS at the target)."""
    if qps is not None:
        return _n(qps)
    why = "never" if best is None else f"never (max {best:.4f}"
    if at_target is not None:
        why += f"; {_n(at_target)} at {target}"
    return why + (")" if best is not None else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _header(r: dict[str, Any]) -> list[str]:
    m, v, p = r.get("machine", {}), r.get("versions", {}), r.get("parameters", {})
    cpu = m.get("cpu", {})
    threads = ", ".join(f"{k}={val}" for k, val in (m.get("threads") or {}).items())
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    load = m.get("load_average_at_start")
    return [
        "# Planner benchmark (issue #8)",
        "",
        "Does squash, at the knobs it ships with, hold its recall target on data it has never seen, "
        "and is it then the cheapest plan? Regenerate with `bench/run.py --only planner` "
        "(`make bench` runs it too); re-render with `bench/planner_report.py`.",
        "",
        f"- run: {r.get('started')} → {r.get('finished')} ({_duration(r.get('seconds'))}), mode "
        f"{r.get('mode')}",
        f"- machine: {cpu.get('model', '?')}, {m.get('logical_cpus')} logical CPUs, {m.get('ram_gib')} GiB, "
        f"load average at start {', '.join(f'{x:.1f}' for x in load) if load else '–'} (shared machine)",
        f"- threads: {threads}; FAISS omp_set_num_threads(1); BLAS {m.get('blas', '?')}",
        f"- versions: {vers}; git {str(m.get('git_commit') or '?')[:12]} (working tree may be dirty)",
        f"- batch = {p.get('queries')} queries (or all the dataset has), k = {p.get('k')}; squash and "
        f"numpy QPS: median of {p.get('repeats')} runs after a warm-up; FAISS / LanceDB sweep points: "
        f"median of {p.get('sweep_repeats')} / {p.get('lance_repeats')}; single-query p50 over "
        f"{p.get('latency_queries')} queries",
        "- squash is built at default options (`BuildOptions(metric=...)` only: cosine for the text sets), "
        "so it calibrates on its own hard synthetic sample — the real queries are never shown to it; "
        "searched with `SearchParams()` (target_recall 0.95) and `SearchParams(target_recall=0.99)`",
        "- ground truth: exact filtered k-NN (`squash.evaluation.exact_knn`); cosine sets on unit-normalised "
        "vectors, which FAISS, LanceDB and numpy search too",
        "- exact numpy (`bench/peers.exact_point`) and FAISS (an `IDSelectorBitmap`) get the filter as a "
        "precomputed mask outside the timing; squash and LanceDB evaluate the filter inside it",
        "- single plans: how many of the single queries squash planned `exact` / `routed`; FAISS p50 at the "
        "cheapest nprobe reaching squash's recall (marked max where none does: its most accurate nprobe "
        "is timed)",
        f"- equal recall: {r.get('equal_recall_rule', '')} Here r is squash's measured recall at each "
        "target; a peer that never reaches r counts as slower there ('never (max …)').",
        "",
    ]


def _summary_md(r: dict[str, Any]) -> list[str]:
    out = ["## Targets", ""]
    summary = r.get("summary", {})
    if not summary:
        return [*out, "No dataset ran.", ""]
    rows = []
    for role in ROLE_ORDER:
        s = summary.get(role)
        if not s:
            continue
        label = ROLE_LABEL[role]
        for key, c in s["checks"].items():
            target, _, name = key.rpartition(":")
            what = CHECK_NAMES.get(name, name)
            if target:
                what = f"target {target}: {what}"
            rows.append([f"{label}: {', '.join(s['datasets'])}", what, f"{c['met']} / {c['of']}",
                         _ok(c["met"] == c["of"])])  # fmt: skip
    out += _table(["datasets", "target", "met (filters or datasets)", "all met"], rows)
    out.append(
        "The issue's QPS and latency targets are judged at default knobs (target 0.95); the 0.99 QPS "
        "rows are shown for information."
    )
    return [*out, ""]


def _build_md(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, d in r.get("datasets", {}).items():
        if d.get("status") != "ran":
            status = "FAILED" if d.get("status") == "failed" else "not available"
            rows.append([name, ROLE_LABEL.get(d.get("role", ""), "?"), status, "–", "–", "–", "–",
                         "–", d.get("reason", "")])  # fmt: skip
            continue
        b = d["build"]
        share = b.get("calibration_share")
        rows.append(
            [
                name,
                ROLE_LABEL[d["role"]],
                f"{d['n']:,} × {d['dims']}, {d['queries']:,} queries",
                d["metric"],
                b["partitions"],
                f"{b['seconds']:.1f}",
                f"{_n(b.get('calibration_seconds'), '.2f')} ({b.get('calibration_source') or '–'}, "
                f"{b.get('calibration_queries') or 0} queries)",
                "–"
                if share is None
                else f"{share:.1%}"
                + ("" if b.get("calibration_added") is None else f" (adds {b['calibration_added']:.1%})"),
                _ok(b.get("met")),
            ]
        )
    return [
        "## Datasets and builds",
        "",
        *_table(
            [
                "dataset",
                "role",
                "size",
                "metric",
                "partitions",
                "build s",
                "calibration s",
                "share of build (adds to uncalibrated)",
                "adds ≤ 20 %",
            ],
            rows,
        ),
    ]


def _memory_md(r: dict[str, Any], targets: list[str]) -> list[str]:
    """Issue #10: what a warm worker holds, what is stored, and QPS per resident MiB."""
    rows = []
    for name, d in r.get("datasets", {}).items():
        if d.get("status") != "ran" or "hot_bytes_per_vector" not in d["build"]:
            continue
        b, n, dims = d["build"], d["n"], d["dims"]
        none = d["filters"].get("none") or next(iter(d["filters"].values()))
        sq = none["squash"][targets[0]]
        f_qps = none["equal_recall"][targets[0]]["faiss_sq8_qps"]
        hot_mib = b["hot_bytes"] / 2**20
        faiss_bpv = d["faiss"].get("bytes_per_vector", dims + 8)
        faiss_mib = n * faiss_bpv / 2**20
        rows.append(
            [
                name,
                f"{b['hot_bytes_per_vector']:.0f} ({b['hot_bytes_per_vector'] / (4 * dims):.1%})",
                f"{b.get('attribute_bytes_per_vector', 0):.0f}",
                f"{b['hot_bytes_per_vector'] - b.get('attribute_bytes_per_vector', 0):.0f}",
                _ok(b["hot_bytes_per_vector"] <= dims),
                faiss_bpv,
                f"{b['stored_ratio']:.3f}×",
                _ok(b["stored_ratio"] <= 1.25),
                " / ".join(f"{v:.4f}" for v in (b.get("ranking_recall") or {}).values()) or "–",
                f"{sq['qps'] / hot_mib:,.1f}",
                "–" if f_qps is None else f"{f_qps / faiss_mib:,.1f}",
            ]
        )
    if not rows:
        return []
    return [
        "## Memory (issue #10): hot tier, stored index, QPS per resident MiB",
        "",
        "Hot tier = what a warm worker keeps (codes, ids, sketch, residual norms, per-partition cells, "
        "and the user's attribute columns, shown apart: FAISS holds none); "
        "the float32 rows are the cold tier, read only to re-rank. FAISS IVF-SQ8 holds d + 8 bytes "
        "per vector. QPS per MiB: unfiltered batch QPS at target 0.95 (FAISS: at squash's recall) "
        "over the resident MiB.",
        "",
        *_table(
            [
                "dataset",
                "hot B/vector (of float32)",
                "of which attributes",
                "without attributes",
                "≤ ¼ (with attributes)",
                "FAISS-SQ8 B/vector",
                "stored / float32",
                "≤ 1.25×",
                "code ranking recall@10 / @100",
                "squash QPS per hot MiB",
                "FAISS QPS per MiB",
            ],
            rows,
        ),
        "",
    ]


def _dataset_md(name: str, d: dict[str, Any], targets: list[str]) -> list[str]:
    out = [f"## {name} — {ROLE_LABEL[d['role']]}", "", d["description"], ""]
    lance = d.get("lancedb")
    f = d["faiss"]
    out.append(
        f"FAISS `{f['index']}` (build {f['build_seconds']:.1f} s)"
        + (
            f"; LanceDB {lance['index_type']} with {lance['num_partitions']} partitions (build "
            f"{lance['load_seconds'] + lance['index_seconds']:.1f} s)"
            if lance
            else "; LanceDB not run"
        )
        + f"; section time for this dataset {_duration(d.get('seconds'))}."
    )
    out.append("")
    default = targets[0]
    rows = []
    for fname, s in d["filters"].items():
        p, e, eq, lat, ch = (s["squash"][default], s["exact"], s["equal_recall"][default], s["latency"],
                             s["checks"][default])  # fmt: skip
        fl = lat["faiss_sq8"]
        fl_txt = f"{fl['p50_ms']:.2f} (nprobe {fl['nprobe']}{'' if fl['reaches_squash_recall'] else ', max'})"
        lance_txt = _peer_at(eq.get("lancedb_qps"), eq.get("lancedb_best_recall")) if "lancedb" in s else "–"
        plans = lat["squash"].get("plans", {})
        single = "/".join(f"{k}:{v}" for k, v in sorted(plans.items()))
        rows.append(
            [
                fname,
                _sel(s["selectivity"]),
                f"{p['recall']:.4f}",
                p["short_queries"],
                _plan(p),
                _n(p["qps"]),
                _n(e["qps"]),
                f"{p['qps'] / e['qps']:.2f}×",
                _peer_at(
                    eq["faiss_sq8_qps"],
                    eq["faiss_sq8_best_recall"],
                    eq.get("faiss_sq8_qps_at_target"),
                    default,
                ),
                lance_txt,
                f"{lat['squash']['p50_ms']:.2f} ({single})",
                fl_txt,
                _ok(ch["recall"]),
                _ok(ch["full_k"]),
                _ok(ch["vs_exact"]),
                _ok(ch["vs_faiss_sq8"]),
                _ok(ch.get("p50_vs_faiss")),
            ]
        )
    out += [f"**Default knobs (target_recall {default})**", ""]
    out += _table(
        ["filter", "selectivity", "recall@10", "short", "plan (expected recall)", "squash QPS",
         "exact QPS", "squash/exact", "FAISS-SQ8 QPS @ r", "LanceDB QPS @ r", "squash p50 ms (single plans)",
         "FAISS p50 ms", "recall ≥ 0.95", "full k", "≥ exact", "≥ FAISS", "p50 ≤ 2×"],
        rows,
    )  # fmt: skip
    for t in targets[1:]:
        rows = []
        for fname, s in d["filters"].items():
            p, e, eq, ch = s["squash"][t], s["exact"], s["equal_recall"][t], s["checks"][t]
            lance_txt = (
                _peer_at(eq.get("lancedb_qps"), eq.get("lancedb_best_recall")) if "lancedb" in s else "–"
            )
            rows.append(
                [
                    fname,
                    f"{p['recall']:.4f}",
                    p["short_queries"],
                    _plan(p),
                    _n(p["qps"]),
                    _n(e["qps"]),
                    f"{p['qps'] / e['qps']:.2f}×",
                    _peer_at(
                        eq["faiss_sq8_qps"], eq["faiss_sq8_best_recall"], eq.get("faiss_sq8_qps_at_target"), t
                    ),
                    lance_txt,
                    _ok(ch["recall"]),
                    _ok(ch["full_k"]),
                    _ok(ch["vs_exact"]),
                    _ok(ch["vs_faiss_sq8"]),
                ]
            )
        out += [f"**target_recall {t}**", ""]
        out += _table(
            ["filter", "recall@10", "short", "plan (expected recall)", "squash QPS", "exact QPS",
             "squash/exact", "FAISS-SQ8 QPS @ r", "LanceDB QPS @ r", f"recall ≥ {t}", "full k", "≥ exact",
             "≥ FAISS"],
            rows,
        )  # fmt: skip
    return out


def _curves_md(name: str, d: dict[str, Any]) -> list[str]:
    """The peers' sweeps, compactly: nprobe: recall / QPS."""
    rows = []
    for fname, s in d["filters"].items():
        faiss = ", ".join(f"{p['nprobe']}: {p['recall']:.3f}/{p['qps']:,.0f}" for p in s["faiss_sq8"])
        lance = ", ".join(
            f"{p['nprobe']}: {p['recall']:.3f}/{p['qps']:,.0f} (cpu {p.get('cpu_per_wall', 0):.2f})"
            for p in s.get("lancedb", [])
        )
        rows.append([fname, faiss, lance or "–"])
    return [
        f"<details><summary>{name}: peer sweeps (nprobe: recall / QPS)</summary>",
        "",
        *_table(["filter", "FAISS IVF-SQ8", "LanceDB (cpu = process CPU s per wall s)"], rows),
        "</details>",
        "",
    ]


def _lancedb_md(r: dict[str, Any]) -> list[str]:
    lance = r.get("lancedb", {})
    out = ["## LanceDB", ""]
    if lance.get("status") != "ran":
        return [*out, f"Not run: {lance.get('reason') or 'unavailable'}.", ""]
    p = r.get("parameters", {})
    queries = {n: next(iter(d["filters"].values())).get("lancedb_queries") for n, d in r["datasets"].items()
               if d.get("status") == "ran" and d["filters"]}  # fmt: skip
    rows_ok = [
        s.get("lancedb_filter_rows") == s["matches"]
        for d in r["datasets"].values()
        if d.get("status") == "ran"
        for s in d["filters"].values()
        if "lancedb_filter_rows" in s
    ]
    out += [
        f"lancedb {lance.get('version')}, local file storage in a temporary directory; index "
        f"{lance.get('index')} (L2 on the same vectors as FAISS), `where(..., prefilter=True)` with the "
        f"filter translated to SQL, refine_factor {lance.get('refine_factor')}, nprobes sweep "
        f"{tuple(p.get('lance_nprobes', ()))} below the partition count, then every partition (stopping "
        "like the FAISS sweep, whose nprobes end at nlist the same way). A batch is one call with the query "
        f"matrix; its recall is measured on that batch, the first queries of squash's: "
        f"{', '.join(f'{n} {q}' for n, q in queries.items())}.",
        "",
        f"Threads: {lance.get('one_thread')}. Threads env: {lance.get('threads')}.",
        "",
        "Filters translated to SQL select exactly the rows of the numpy masks: "
        f"{'yes' if rows_ok and all(rows_ok) else 'NO' if rows_ok else '–'} "
        f"({sum(rows_ok)} / {len(rows_ok)}).",
        "",
    ]
    return out


def _misses_md(r: dict[str, Any], targets: list[str]) -> list[str]:
    """Every failed check with its numbers, so a reader sees where squash loses and by how much."""
    lines = []
    for name, d in r.get("datasets", {}).items():
        if d.get("status") != "ran":
            continue
        b = d["build"]
        if not b.get("met"):
            lines.append(
                f"- {name}: calibration {_n(b.get('calibration_seconds'), '.1f')} s on a "
                f"{b.get('uncalibrated_seconds') or 0:.1f} s uncalibrated build "
                f"(adds {(b.get('calibration_added') or 0):.1%} > 20 %)"
            )
        for fname, s in d["filters"].items():
            for t in targets:
                p, ch, eq = s["squash"][t], s["checks"][t], s["equal_recall"][t]
                where = f"- {name} {fname} (target {t}, plan {p.get('plan_stats', {}).get('plan', '?')})"
                if not ch["recall"]:
                    lines.append(f"{where}: recall {p['recall']:.4f} < {t}")
                if not ch["full_k"]:
                    lines.append(f"{where}: {p['short_queries']} queries short of min(k, matches)")
                if not ch["vs_exact"]:
                    e = s["exact"]["qps"]
                    sc, ec = p.get("cpu_seconds"), s["exact"].get("cpu_seconds")
                    cpu = f", CPU-time ratio {ec / sc:.2f}×" if sc and ec else ""
                    lines.append(
                        f"{where}: {p['qps']:,.0f} QPS < exact {e:,.0f} ({p['qps'] / e:.2f}×{cpu}); last "
                        f"batch: squash plans {_n(p.get('plan_ms'), '.1f')} ms + searches "
                        f"{_n(p.get('search_ms'), '.1f')} ms; numpy median "
                        f"{s['exact']['seconds'] * 1e3:.1f} ms"
                    )
                if not ch["vs_faiss_sq8"]:
                    f = eq["faiss_sq8_qps"]
                    lines.append(
                        f"{where}: {p['qps']:,.0f} QPS < FAISS IVF-SQ8 {f:,.0f} at recall {p['recall']:.4f} "
                        f"({p['qps'] / f:.2f}×)"
                    )
                if ch.get("p50_vs_faiss") is False:
                    sq, fa = s["latency"]["squash"]["p50_ms"], s["latency"]["faiss_sq8"]["p50_ms"]
                    lines.append(
                        f"{where}: single-query p50 {sq:.2f} ms > 2 × FAISS {fa:.2f} ms ({sq / fa:.1f}×)"
                    )
    out = ["## Where squash misses a target", ""]
    out += lines or ["Nowhere: every check passed."]
    out.append("")
    out.append(
        "Timings come from a shared 2-core machine (see the load average above): where squash picks its "
        "exact plan it scans the same rows numpy does, so a ratio within a few per cent of 1 there is "
        "within the noise."
    )
    return [*out, ""]


def render(r: dict[str, Any]) -> str:
    targets = [f"{t:g}" for t in r.get("parameters", {}).get("targets", (0.95, 0.99))]
    lines = _header(r) + _summary_md(r) + _build_md(r) + [""] + _memory_md(r, targets)
    ran = {n: d for n, d in r.get("datasets", {}).items() if d.get("status") == "ran"}
    for role in ROLE_ORDER:
        for name, d in ran.items():
            if d["role"] == role:
                lines += _dataset_md(name, d, targets) + _curves_md(name, d)
    lines += _misses_md(r, targets) + _lancedb_md(r)
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "PLANNER.md"
    path.write_text(render(results))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    src = args.out / "planner.json"
    if not src.exists():
        print(f"no {src} to render: run `bench/run.py --only planner` first", file=sys.stderr)
        return 2
    print(write(json.loads(src.read_text()), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
