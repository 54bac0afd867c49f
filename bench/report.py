"""Markdown report and PNG plots from one results dict (``latest.json``).

Pure rendering: nothing here measures. Missing sections (``--only``, ``--skip-scale``, no
stack.json) are reported as "not run" rather than dropped, so a reader sees what is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import cost as cost_model
from .targets import RECALL_TARGET

PLOTS = {
    "recall_qps": "recall_qps.png",
    "selectivity": "recall_selectivity.png",
    "levels": "levels.png",
    "latency": "latency.png",
    "cost": "cost.png",
}
LEVEL_STATS = ("l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored")
TIME_PARTS = ("plan", "filter", "l2", "l3", "l4", "merge")
ANCHOR_NPROBE = 8  # the setting FAISS IVF256,SQ8 is tuned to unfiltered (recall ~0.98)


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _at_nprobe(points: list[dict[str, Any]], nprobe: int) -> dict[str, Any] | None:
    return next((p for p in points if p["nprobe"] == nprobe), None)


def targets_markdown(results: dict[str, Any]) -> str:
    t = results.get("targets", {})
    rows = [
        [r["target"], r["measured"], {True: "yes", False: "**no**", None: "n/a"}[r["met"]], r["by"] or ""]
        for r in t.get("rows", [])
    ]
    return "\n".join(_table(["target", "measured", "met", "by how much (when not met)"], rows))


# ----------------------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


MISS_FLOOR = 1e-4  # recall 1.0 is drawn at 1 - MISS_FLOOR on the log(1 - recall) axis


def _miss(recall: float) -> float:
    """1 - recall, floored, so recalls near 1 spread out on a log axis (where the choices are)."""
    return max(1.0 - recall, MISS_FLOOR)


def _recall_axis(ax: Any) -> None:
    ax.set_xscale("log")
    ax.set_xlim(1.0, MISS_FLOOR * 0.7)  # inverted: better recall to the right
    ticks = [1.0, 0.5, 0.1, 0.01, 0.001, MISS_FLOOR]
    ax.set_xticks(ticks, ["0", "0.5", "0.9", "0.99", "0.999", "1"])
    ax.minorticks_off()


def plot_recall_qps(ds: dict[str, Any], path: Path) -> None:
    """Recall@10 vs QPS per selectivity: squash sweeps vs FAISS IVF sweeps vs exact."""
    plt = _plt()
    sels = ds["selectivities"]
    cols = 3
    rows = int(np.ceil((len(sels) + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    handles = {}
    for ax, (name, s) in zip(axes.flat, sels.items(), strict=False):
        sq = s["squash"]
        series = [
            ("squash ladder (levels=auto)", sq["ladder"], "C0", "o-"),
            (
                "squash levels=all",
                [sq["default_all"], *sq.get("ladder_all", []), *sq.get("knobs", [])],
                "C9",
                "s",
            ),
            ("FAISS IVF-Flat", s["peers"]["ivf_flat"], "C1", "^--"),
            ("FAISS IVF-SQ8", s["peers"]["ivf_sq8"], "C3", "v--"),
        ]
        for label, pts, color, style in series:
            pts = sorted(pts, key=lambda p: p["recall"]) if "-" in style else pts
            (h,) = ax.plot(
                [_miss(p["recall"]) for p in pts],
                [p["qps"] for p in pts],
                style,
                color=color,
                ms=4,
                lw=1.2,
                label=label,
            )
            handles[label] = h
        d = sq["default"]
        handles["squash defaults"] = ax.plot(
            _miss(d["recall"]), d["qps"], "*", color="C0", ms=13, mec="k", label="squash defaults"
        )[0]
        for key, label, marker, color in (
            ("exact", "exact numpy", "D", "k"),
            ("faiss_flat", "FAISS Flat", "X", "C2"),
        ):
            p = s["peers"][key]
            handles[label] = ax.plot(_miss(p["recall"]), p["qps"], marker, color=color, ms=7, label=label)[0]
        ax.axvline(1 - RECALL_TARGET, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        _recall_axis(ax)
        ax.set_title(f"filter {name} ({s['selectivity']:.2%} match)")
        ax.set_xlabel("recall@10 (axis: log of 1 - recall)")
        ax.set_ylabel("QPS (batch of all queries, 1 core)")
    for ax in list(axes.flat)[len(sels) :]:
        ax.axis("off")
    list(axes.flat)[-1].legend(handles.values(), handles.keys(), loc="center", fontsize=9)
    name = ds["dataset"]["name"] + (" (SYNTHETIC)" if ds["dataset"]["synthetic"] else "")
    fig.suptitle(f"{name}: recall@10 vs QPS, higher and further right is better")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_selectivity(ds: dict[str, Any], cmp: dict[str, Any], path: Path) -> None:
    """Recall at fixed knobs vs selectivity (FAISS at its unfiltered tuning collapses) and QPS."""
    plt = _plt()
    sels = ds["selectivities"]
    names = list(sels)
    x = np.array([sels[n]["selectivity"] for n in names])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(x, [sels[n]["squash"]["default"]["recall"] for n in names], "o-", label="squash defaults")
    for key, label, color in (("ivf_sq8", "FAISS IVF-SQ8", "C3"), ("ivf_flat", "FAISS IVF-Flat", "C1")):
        pts = [_at_nprobe(sels[n]["peers"][key], ANCHOR_NPROBE) for n in names]
        ok = [i for i, p in enumerate(pts) if p]
        a.plot(
            x[ok], [pts[i]["recall"] for i in ok], "v--", color=color, label=f"{label} nprobe={ANCHOR_NPROBE}"
        )
    a.axhline(RECALL_TARGET, color="grey", ls=":", lw=1)
    a.set_xscale("log")
    a.invert_xaxis()
    a.set_xlabel("filter selectivity (fraction of vectors matching)")
    a.set_ylabel("recall@10")
    a.set_title("recall at fixed knobs")
    a.legend(fontsize=8)
    series = (
        ("squash defaults", [sels[n]["squash"]["default"]["qps"] for n in names], "o-", "C0"),
        ("squash at recall 0.95", [cmp[n]["squash_qps_at_095"] for n in names], "o:", "C0"),
        ("FAISS IVF-SQ8 at recall 0.95", [cmp[n]["faiss_sq8_qps_at_095"] for n in names], "v--", "C3"),
        ("exact numpy", [sels[n]["peers"]["exact"]["qps"] for n in names], "D-", "k"),
        ("FAISS Flat", [sels[n]["peers"]["faiss_flat"]["qps"] for n in names], "X-", "C2"),
    )
    for label, ys, style, color in series:
        ok = [i for i, y in enumerate(ys) if y is not None]
        b.plot(x[ok], [ys[i] for i in ok], style, color=color, label=label)
    b.set_xscale("log")
    b.set_yscale("log")
    b.invert_xaxis()
    b.set_xlabel("filter selectivity")
    b.set_ylabel("QPS (batch, 1 core)")
    b.set_title("throughput vs selectivity")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_levels(ds: dict[str, Any], path: Path) -> None:
    """Candidates surviving each level (levels=all) and where the time goes (all vs auto)."""
    plt = _plt()
    sels = ds["selectivities"]
    names = list(sels)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(LEVEL_STATS)
    for i, stat in enumerate(LEVEL_STATS):
        vals = [max(sels[n]["squash"]["default_all"]["mean"].get(stat, 0), 0.5) for n in names]
        a.bar(np.arange(len(names)) + i * width, vals, width, label=stat)
    a.set_yscale("log")
    a.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    a.set_xlabel("filter")
    a.set_ylabel("mean candidates per query (levels=all)")
    a.set_title("candidates per level")
    a.legend(fontsize=8)
    pos = np.arange(len(names))
    for j, lv in enumerate(("all", "auto")):
        parts = np.array([[sels[n]["levels"][lv].get(p, 0.0) for p in TIME_PARTS] for n in names])
        totals = parts.sum(axis=1)
        shares = 100 * parts / np.where(totals == 0, 1, totals)[:, None]
        bottom = np.zeros(len(names))
        for i, part in enumerate(TIME_PARTS):
            b.bar(
                pos + j * 0.4,
                shares[:, i],
                0.38,
                bottom=bottom,
                color=f"C{i}",
                label=part if j == 0 else None,
                hatch="//" if lv == "auto" else None,
                edgecolor="white",
            )
            bottom += shares[:, i]
        for x, tot in zip(pos + j * 0.4, totals, strict=True):
            b.text(x, 101, f"{tot:.2g}", ha="center", va="bottom", fontsize=6.5)
    b.set_ylim(0, 112)
    b.set_xticks(pos + 0.2, [f"{n}\nall | auto" for n in names])
    b.set_ylabel("% of time per query (total ms on top)")
    b.set_title("where the time goes: levels=all (plain) vs auto (hatched)")
    b.legend(fontsize=7, ncols=6, loc="lower center", bbox_to_anchor=(0.5, -0.32))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(ds: dict[str, Any] | None, stack: dict[str, Any], path: Path) -> None:
    """Single-query p50 (warm) per selectivity, in-process cold first query, local stack if run."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    if ds:
        sels = ds["selectivities"]
        names = list(sels)
        for j, (key, label) in enumerate(
            (("squash", "squash"), ("faiss_sq8", "FAISS IVF-SQ8 (0.95 nprobe)"), ("exact", "exact numpy"))
        ):
            a.bar(
                np.arange(len(names)) + j * 0.27,
                [sels[n]["latency"][key]["p50_ms"] for n in names],
                0.26,
                label=label,
            )
        a.set_xticks(np.arange(len(names)) + 0.27, names)
        a.set_yscale("log")
        a.set_ylabel("single-query p50 ms (warm, in-process)")
        a.set_title("warm single-query latency")
        a.legend(fontsize=8)
        cw = [(n, s["cold_warm"]) for n, s in sels.items() if "cold_warm" in s]
        labels, vals = [], []
        for n, c in cw:
            labels += [f"{n} cold 1st", f"{n} warm p50"]
            vals += [c["first_query_ms"], c["warm_p50_ms"]]
    else:
        labels, vals = [], []
    shapes = stack.get("data", {}).get("tree_shapes", []) if stack.get("status") == "present" else []
    for sh in shapes:
        tag = f"stack {sh.get('nodes', '?')}n"
        for key, lab in (("cold_first_ms", "cold"), ("warm_p50_ms", "p50"), ("warm_p95_ms", "p95")):
            if sh.get(key) is not None:
                labels.append(f"{tag} {lab}")
                vals.append(sh[key])
    if vals:
        b.bar(range(len(vals)), vals, color=["C3" if "cold" in lab else "C0" for lab in labels])
        b.set_xticks(range(len(vals)), labels, rotation=30, ha="right")
        b.set_yscale("log")
    b.set_ylabel("ms")
    b.set_title("cold vs warm (in-process" + (", local stack" if shapes else "; local stack not run") + ")")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_cost(costs: dict[str, Any], path: Path) -> None:
    """$ per million queries per batch size (headline tree), against the quoted references."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    groups = [(key, costs[key]) for key in ("sift1m_size", "dataset") if key in costs]
    batches = sorted({r["batch"] for _, c in groups for r in c["headline"]})
    for j, (_, c) in enumerate(groups):
        vals = {r["batch"]: r["warm_per_million"]["total"] for r in c["headline"]}
        bars = ax.bar(
            np.arange(len(batches)) + j * 0.38,
            [vals.get(b, 0) for b in batches],
            0.36,
            label=f"squash {c['dataset']} ({c['tree']}), warm",
        )
        ax.bar_label(bars, labels=[f"${v:.2f}" for v in bars.datavalues], fontsize=7)
    ref = cost_model.REFERENCES
    ax.axhspan(
        ref["squash_paper_sift1m"]["low"],
        ref["squash_paper_sift1m"]["high"],
        color="C2",
        alpha=0.15,
        label="SQUASH paper, SIFT1M ($9.6–43)",
    )
    ax.axhline(
        ref["paper_serverless_competitor"]["value"], color="C3", ls="--", label="paper's competitor (~$90)"
    )
    ax.axhline(
        ref["s3_vectors"]["value"], color="C4", ls=":", label="S3 Vectors $2.5 + data processed (quoted)"
    )
    ax.axhline(10, color="k", lw=0.8, label="target $10")
    ax.set_xticks(np.arange(len(batches)) + 0.19, [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("$ per million queries")
    ax.set_title("modelled AWS cost (published rates, verify before use)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -------------------------------------------------------------------------------------- markdown


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _header(r: dict[str, Any]) -> list[str]:
    m, v = r["machine"], r["versions"]
    cpu = m["cpu"]
    return [
        "# squash benchmark report",
        "",
        f"Mode **{r['mode']}**, started {r['started']}, finished {r.get('finished', '?')}, total "
        f"{_duration(r.get('total_seconds', 0))}. Generated by `bench/run.py` (`make bench`).",
        "",
        f"Machine: {cpu.get('model')} ({', '.join(cpu.get('simd', []))}), {m['logical_cpus']} logical "
        f"CPUs, {m['ram_gib']} GiB RAM, {m['platform']}; load average at start "
        f"{m.get('load_average_at_start')}. Python {m['python']}, squash {v['squash']}, numpy {v['numpy']} "
        f"({m['blas']}), pyarrow {v['pyarrow']}, faiss-cpu {v['faiss-cpu']}, matplotlib {v['matplotlib']}. "
        f"Git commit {m.get('git_commit')} (the working tree may have uncommitted changes).",
        "",
        f"One thread everywhere ({', '.join(f'{k}={val}' for k, val in m['threads'].items())}, "
        f"`faiss.omp_set_num_threads(1)`). Every QPS is the median of {r['parameters']['repeats']} timed "
        "runs of one batch of all queries after a warm-up (squash: every segment preloaded, plus one "
        f"untimed run per point except `levels=all` points, which are slow); k = {r['parameters']['k']}. "
        "The machine is shared: compare ratios within this run, not absolute numbers across runs.",
        "",
    ]


def _dataset_md(ds: dict[str, Any], cmp: dict[str, Any]) -> list[str]:
    d, b, sels = ds["dataset"], ds["build"], ds["selectivities"]
    kind = "**SYNTHETIC**" if d["synthetic"] else "real"
    out = [
        f"## {d['name']} ({kind}): {d['n']:,} × {d['dims']}, {d['queries']:,} queries",
        "",
        f"squash build {b['seconds']:.1f} s, P = {b['partitions']}, {b['bits_per_dim']:g} bits/dim → "
        f"{b['code_bytes_per_vector']:.0f} B/vector of codes vs {b['float32_bytes_per_vector']} B float32; "
        f"stored index {b['index_bytes'] / 2**20:.0f} MiB (also holds the full-precision vectors for "
        f"re-ranking); loading every segment took {b['preload_seconds']:.2f} s. FAISS "
        f"IVF{ds['faiss']['nlist']} builds: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in ds["faiss"]["build_seconds"].items())
        + ".",
        "",
        "Filters are exact masks for ground truth (`squash.evaluation.exact_knn`, float64) and an "
        '`IDSelectorBitmap` for FAISS. "short" = queries returning fewer than min(k, matches) results.',
        "",
    ]
    rows = []
    for name, s in sels.items():
        dft, c = s["squash"]["default"], cmp.get(name, {})
        sq8 = c.get("faiss_sq8_qps_at_095")
        rows.append(
            [
                name,
                f"{s['selectivity']:.2%}",
                f"{s['matches']:,}",
                f"{dft['recall']:.4f}",
                dft["short_queries"],
                _n(dft["qps"]),
                _n(c.get("squash_qps_at_095")),
                _n(sq8),
                f"{c['squash_qps_at_095'] / sq8:.2f}×" if sq8 and c.get("squash_qps_at_095") else "–",
                _n(s["peers"]["exact"]["qps"]),
                f"{dft['qps'] / s['peers']['exact']['qps']:.2f}×",
                _n(s["peers"]["faiss_flat"]["qps"]),
                f"{dft['mean']['partitions']:.1f}",
            ]
        )
    out += _table(
        [
            "filter",
            "selectivity",
            "matches",
            "squash recall (defaults)",
            "short",
            "squash QPS (defaults)",
            "squash QPS @0.95",
            "FAISS IVF-SQ8 QPS @0.95",
            "squash / SQ8 @0.95",
            "exact numpy QPS",
            "squash / exact",
            "FAISS Flat QPS",
            "partitions/query",
        ],
        rows,
    )
    out += [f"![recall vs QPS]({PLOTS['recall_qps']})", ""]
    # FAISS at its unfiltered tuning, per selectivity.
    rows = []
    for name, s in sels.items():
        row = [name, f"{s['squash']['default']['recall']:.4f}"]
        for key in ("ivf_sq8", "ivf_flat"):
            p = _at_nprobe(s["peers"][key], ANCHOR_NPROBE)
            row.append(f"{p['recall']:.4f} ({p['short_queries']} short)" if p else "–")
            best = next((q for q in s["peers"][key] if q["recall"] >= RECALL_TARGET), None)
            row.append(
                f"{best['nprobe']} ({best['recall']:.4f}, {best['qps']:,.0f} QPS)" if best else "never"
            )
        rows.append(row)
    out += [
        f"### Filtered recall at fixed knobs (FAISS at nprobe {ANCHOR_NPROBE}, its unfiltered tuning)",
        "",
        *_table(
            [
                "filter",
                "squash defaults",
                f"IVF-SQ8 nprobe {ANCHOR_NPROBE}",
                "IVF-SQ8 nprobe for 0.95",
                f"IVF-Flat nprobe {ANCHOR_NPROBE}",
                "IVF-Flat nprobe for 0.95",
            ],
            rows,
        ),
        f"![recall vs selectivity]({PLOTS['selectivity']})",
        "",
    ]
    out += _sweeps_md(ds)
    out += _levels_md(ds)
    out += _latency_md(ds)
    return out


def _sweeps_md(ds: dict[str, Any]) -> list[str]:
    sels = ds["selectivities"]
    names = list(sels)
    out = [
        "### squash knob sweeps",
        "",
        "Ladder (levels=auto): routing_factor and min_candidates raised together. Cells: recall / QPS / "
        "partitions per query.",
        "",
    ]
    rungs = [
        (p["params"]["routing_factor"], p["params"]["min_candidates"])
        for p in sels[names[0]]["squash"]["ladder"]
    ]
    rows = []
    for i, (rf, mc) in enumerate(rungs):
        row = [f"{rf:g}", f"{mc:,}"]
        for n in names:
            p = sels[n]["squash"]["ladder"][i]
            row.append(f"{p['recall']:.4f} / {p['qps']:,.0f} / {p['mean']['partitions']:.1f}")
        rows.append(row)
    out += _table(["routing_factor", "min_candidates", *names], rows)
    rows = []
    for n in names:
        sq = sels[n]["squash"]
        rows.append(
            [n]
            + [
                f"{sq[k]['recall']:.4f} / {sq[k]['qps']:,.0f}"
                for k in ("default", "default_all", "default_exact")
            ]
        )
    out += [
        "Levels at default knobs (recall / QPS): `auto` re-ranks a partition exactly in one BLAS product "
        "when its cost model says that is cheaper; `all` always runs L2 → L3 → L4; `exact` never runs "
        "them.",
        "",
        *_table(["filter", "auto", "all", "exact"], rows),
    ]
    rows = []
    for n in names:
        for p in sels[n]["squash"].get("knobs", []) + sels[n]["squash"].get("ladder_all", []):
            knob = p.get("knob", "ladder")
            val = (
                p["params"][knob]
                if knob != "ladder"
                else f"rf {p['params']['routing_factor']:g}, mc {p['params']['min_candidates']:,}"
            )
            rows.append(
                [
                    n,
                    knob,
                    val,
                    f"{p['recall']:.4f}",
                    _n(p["qps"]),
                    f"{p['mean'].get('l2_kept', 0):,.0f}",
                    f"{p['mean'].get('l4_scored', 0):,.0f}",
                ]
            )
    if rows:
        out += [
            "One knob at a time with levels=all (sketch_keep and rerank_factor only act when the levels "
            "run):",
            "",
            *_table(["filter", "knob", "value", "recall", "QPS", "L2 kept", "L4 scored"], rows),
        ]
    rows = []
    for entry in ds.get("bits", []):
        for n, pts in entry["points"].items():
            rows.append(
                [
                    f"{entry['bits_per_dim']:g}",
                    f"{entry['build_seconds']:.1f}",
                    f"{entry['code_bytes_per_vector']:.0f}",
                    f"{entry['index_bytes'] / 2**20:.0f}",
                    n,
                    f"{pts['auto']['recall']:.4f} / {pts['auto']['qps']:,.0f}",
                    f"{pts['all']['recall']:.4f} / {pts['all']['qps']:,.0f}",
                ]
            )
    for n in (n for n in names if ds.get("bits") and n in ds["bits"][0]["points"]):
        sq = sels[n]["squash"]
        b = ds["build"]
        rows.append(
            [
                f"{b['bits_per_dim']:g} (main)",
                f"{b['seconds']:.1f}",
                f"{b['code_bytes_per_vector']:.0f}",
                f"{b['index_bytes'] / 2**20:.0f}",
                n,
                f"{sq['default']['recall']:.4f} / {sq['default']['qps']:,.0f}",
                f"{sq['default_all']['recall']:.4f} / {sq['default_all']['qps']:,.0f}",
            ]
        )
    if rows:
        out += [
            "bits_per_dim as separate builds, default knobs (recall / QPS):",
            "",
            *_table(
                ["bits/dim", "build s", "code B/vector", "index MiB", "filter", "levels=auto", "levels=all"],
                sorted(rows, key=lambda r: (r[4], r[0])),
            ),
        ]
    return out


def _levels_md(ds: dict[str, Any]) -> list[str]:
    sels = ds["selectivities"]
    rows = []
    for n, s in sels.items():
        m = s["squash"]["default_all"]["mean"]
        t = s["levels"]
        rows.append(
            [
                n,
                f"{m.get('partitions', 0):.1f}",
                *(f"{m.get(k, 0):,.0f}" for k in LEVEL_STATS),
                " / ".join(f"{t['all'].get(p, 0):.3f}" for p in TIME_PARTS),
                " / ".join(f"{t['auto'].get(p, 0):.3f}" for p in TIME_PARTS),
            ]
        )
    return [
        "### Per-level candidates and time (default knobs)",
        "",
        "Mean per query with levels=all; time in ms per query as plan (L0+L1) / exact filter / L2 / L3 / "
        "L4 / merge, from one batch run with the engine's level functions wrapped by timers (bench-only "
        "instrumentation, small overhead; with auto, L4 includes the one-GEMM exact path).",
        "",
        *_table(
            [
                "filter",
                "partitions",
                "L0 candidates",
                "exact matches",
                "L2 kept",
                "L3 kept",
                "L4 scored",
                "ms levels=all",
                "ms levels=auto",
            ],
            rows,
        ),
        f"![levels]({PLOTS['levels']})",
        "",
    ]


def _latency_md(ds: dict[str, Any]) -> list[str]:
    sels = ds["selectivities"]
    rows = []
    for n, s in sels.items():
        lat = s["latency"]
        rows.append(
            [
                n,
                f"{lat['squash']['p50_ms']:.2f} / {lat['squash']['p95_ms']:.2f}",
                f"{lat['faiss_sq8']['p50_ms']:.2f} / {lat['faiss_sq8']['p95_ms']:.2f} (nprobe "
                f"{lat['faiss_sq8']['nprobe']})",
                f"{lat['exact']['p50_ms']:.2f} / {lat['exact']['p95_ms']:.2f}",
            ]
        )
    cold = [
        [
            n,
            f"{c['open_ms']:.1f}",
            f"{c['first_query_ms']:.1f}",
            f"{c['first_query_bytes_read'] / 2**20:.1f}",
            f"{c['warm_p50_ms']:.2f}",
            f"{c['warm_p95_ms']:.2f}",
        ]
        for n, s in sels.items()
        if (c := s.get("cold_warm"))
    ]
    n_lat = next(iter(sels.values()))["latency"]["squash"]["n"]
    return [
        "### Single-query latency (in-process, one query per call)",
        "",
        f"p50 / p95 ms over {n_lat} single queries after a warm-up: squash at default knobs, FAISS IVF-SQ8 "
        "at its cheapest nprobe reaching recall 0.95 at that filter, exact numpy.",
        "",
        *_table(["filter", "squash", "FAISS IVF-SQ8", "exact numpy"], rows),
        "In-process cold vs warm: a fresh `open_index` with an empty segment cache (manifest + router "
        "read), then the first query loads its segments from local disk (OS page cache likely warm, so "
        "this is not an S3 cold start); warm = the following single queries.",
        "",
        *_table(
            ["filter", "open ms", "first query ms", "first query MiB read", "warm p50 ms", "warm p95 ms"],
            cold,
        ),
        f"![latency]({PLOTS['latency']})",
        "",
    ]


def _scale_md(sc: dict[str, Any] | None) -> list[str]:
    if not sc:
        return ["## Scale", "", "Not run (`--skip-scale` or `--only`).", ""]
    d, b, ld = sc["dataset"], sc["build"], sc["loaded"]
    out = [
        f"## Scale: {d['n']:,} × {d['dims']} **SYNTHETIC** Gaussian mixture ({d['clusters']} clusters), "
        f"{d['queries']:,} queries",
        "",
        "Built by `squash.build_index` unchanged (default options) in a child process: build "
        f"{b['build_seconds']:.1f} s (child wall {b['child_process_seconds']:.1f} s incl. loading the "
        f"{b['input_bytes'] / 2**20:.0f} MiB input), peak RSS {b['peak_rss_gib']:.2f} GiB (child's "
        f"RUSAGE_SELF; parent's RUSAGE_CHILDREN says {b['rusage_children_peak_gib']:.2f} GiB), P = "
        f"{b['partitions']}, index {b['index_bytes'] / 2**20:.0f} MiB "
        + (
            f"({b['index_bytes'] / b['input_bytes']:.3f}× the float32 input; hot tier "
            f"{b['hot_bytes_per_vector']:.0f} B/vector = "
            f"{b['hot_bytes_per_vector'] / (4 * d['dims']):.1%} of float32, "
            f"{b['attribute_bytes_per_vector']:.0f} of them attributes)"
            if "hot_bytes_per_vector" in b
            else ""
        )
        + ". Limits: "
        f"{b['limit_seconds'] / 60:.0f} min, {b['limit_peak_gib']:.0f} GiB → "
        f"{'met' if b['met'] else '**not met**'}.",
        "",
        f"Loading every segment: {ld['seconds']:.2f} s, {ld['segment_mib']:.0f} MiB of segments (process "
        f"RSS +{ld['rss_increase_mib']:.0f} MiB).",
        "",
    ]
    rows = []
    for n, s in sc["search"].items():
        p = s["default"]
        rows.append(
            [
                n,
                f"{s['selectivity']:.2%}",
                f"{p['recall']:.4f}",
                p["short_queries"],
                _n(p["qps"]),
                f"{p['mean']['partitions']:.1f}",
                f"{s['ms_per_partition_visit']:.3f}",
            ]
        )
    out += [
        "Defaults (ground truth: float32 brute force):",
        "",
        *_table(
            [
                "filter (price <)",
                "selectivity",
                "recall@10",
                "short",
                "QPS (batch)",
                "partitions/query",
                "ms per partition visit (batch)",
            ],
            rows,
        ),
    ]
    rows = [
        [
            f"{p['params']['routing_factor']:g}",
            f"{p['params']['min_candidates']:,}",
            f"{p['recall']:.4f}",
            _n(p["qps"]),
            f"{p['mean']['partitions']:.1f}",
        ]
        for p in sc["search"]["none"].get("ladder", [])
    ]
    out += [
        "Unfiltered ladder (levels=auto):",
        "",
        *_table(["routing_factor", "min_candidates", "recall@10", "QPS", "partitions/query"], rows),
    ]
    rows = [
        [
            f"b={w['branching']}, l={w['depth']}",
            w["nodes"],
            f"{w['partitions_per_node']:.1f}",
            f"{w['mean_mib']:.1f}",
            f"{w['max_mib']:.1f}",
        ]
        for w in sc["worker_memory"]
    ]
    out += [
        "Loaded-segment memory per worker (affinity: partition % nodes):",
        "",
        *_table(["tree", "nodes", "partitions/node", "mean MiB", "max MiB"], rows),
    ]
    rows = [
        [
            w["batch"],
            w["batches"],
            f"{w['plan_ms_per_query']:.3f}",
            f"{w['search_ms_per_query']:.3f}",
            f"{w['partition_visits_per_query']:.2f}",
            f"{w['ms_per_partition_visit']:.3f}",
        ]
        for w in sc["tree_work"]
    ]
    out += [
        f"Per-partition work for the cost model at {sc['cost_params']} ({sc['cost_params_rule']}):",
        "",
        *_table(
            [
                "batch",
                "batches",
                "plan ms/query",
                "search ms/query",
                "partition visits/query",
                "ms per partition visit",
            ],
            rows,
        ),
    ]
    return out


def _cost_md(costs: dict[str, Any]) -> list[str]:
    par = costs["parameters"]
    pr, a = par["prices"], par["assumptions"]
    out = [
        "## Cost per million queries (modelled)",
        "",
        f"Prices ({pr['date']}, {par['prices_note']}): Lambda x86 ${pr['lambda_gb_second']} per GB-second "
        f"and ${pr['lambda_per_million_requests']:.2f} per million requests; API Gateway HTTP API "
        f"${pr['apigw_http_per_million']:.2f} per million requests (first 300 M, metered per 512 KB); S3 "
        f"GET ${pr['s3_get_per_thousand']} per 1,000. Sources: {', '.join(pr['sources'])}.",
        "",
        "Model (`bench/cost.py`): each tree node is billed handler + max(own search, slowest child + "
        "invoke); the coordinator handler + plan + invoke + root. Own search = the measured in-process "
        "single-core time of the partitions the node owns (partition % nodes) for each real batch; plan = "
        "measured L0/L1 time. Requests: 1 + nodes Lambda invocations and one HTTP API request per batch. "
        "Warm: no S3 reads.",
        "",
        "Assumptions: " + "; ".join(f"{k} = {v}" for k, v in a.items()) + ".",
        "",
    ]
    for key, title in (
        ("sift1m_size", "SIFT1M-sized config (the scale index)"),
        ("dataset", "benchmark dataset"),
    ):
        c = costs.get(key)
        if not c:
            out += [f"### {title}", "", "Not run.", ""]
            continue
        rows = []
        for r in c["by_tree"]:
            w, cold = r["warm_per_million"], r["cold_tree"]
            rows.append(
                [
                    f"b={r['tree']['branching']}, l={r['tree']['depth']} ({r['tree']['nodes']})",
                    r["batch"],
                    f"{w['total']:.2f}",
                    f"{w['compute']:.2f}",
                    f"{w['requests']:.2f}",
                    f"{w['api_gateway']:.2f}",
                    f"{r['mean_latency_ms']:.1f}",
                    f"{cold['dollars']:.4f}",
                    f"{cold['max_worker_segment_mib']:.0f}{'' if cold['fits_cache'] else ' (does not fit)'}",
                    f"{r['with_cold_per_million']:.2f}",
                ]
            )
        out += [
            f"### {title}: {c['dataset']}, knobs {c['params']}",
            "",
            *_table(
                [
                    "tree (nodes)",
                    "batch",
                    "$/M warm",
                    "compute",
                    "Lambda requests",
                    "API GW",
                    "modelled latency ms",
                    "$ per cold tree",
                    "max MiB/worker",
                    "$/M with cold",
                ],
                rows,
            ),
        ]
        if c.get("headline_sized"):
            srows = [
                [
                    r["batch"],
                    r["worker_mb"],
                    f"{r['warm_per_million']['total']:.2f}",
                    f"{r['mean_latency_ms']:.1f}",
                    f"{r['cold_tree']['dollars']:.4f}",
                    f"{r['cold_tree']['max_worker_segment_mib']:.0f}",
                    f"{r['with_cold_per_million']:.2f}",
                ]
                for r in c["headline_sized"]
            ]
            out += [
                "",
                f"Worker memory sized from the measured hot tier ({c['tree']}; runtime 256 MB + 1.25 × the "
                "largest node's hot tier over the 60 % cache share; below 1,769 MB a Lambda gets a vCPU "
                "share, so its own search time is scaled up by 1769 / MB). Warm queries at default knobs "
                "read no float32 (0 range GETs).",
                "",
                *_table(
                    [
                        "batch",
                        "worker MB",
                        "$/M warm",
                        "modelled latency ms",
                        "$ per cold tree",
                        "max MiB/worker",
                        "$/M with cold",
                    ],
                    srows,
                ),
                "",
            ]
    ref = par["references"]
    out += [
        "References (quoted, not measured here): SQUASH paper "
        f"${ref['squash_paper_sift1m']['low']}–{ref['squash_paper_sift1m']['high']} per million on SIFT1M "
        f"(10–258 nodes), its serverless competitor ≈ ${ref['paper_serverless_competitor']['value']:.0f}; "
        f"{ref['s3_vectors']['source']}.",
        "",
    ]
    if costs.get("stack"):
        rows = [
            [s["nodes"], s["batch"], f"{s['ms']:.1f}", f"{s['per_million_upper_bound']:.2f}"]
            for s in costs["stack"]
        ]
        out += [
            "From the local stack's measured latencies (batch 1: warm single-query p50; larger batches: "
            "median batch time), an upper bound: every function billed for the whole request:",
            "",
            *_table(["nodes", "batch", "measured ms", "$/M"], rows),
        ]
    return [*out, f"![cost]({PLOTS['cost']})", ""]


def _stack_md(stack: dict[str, Any]) -> list[str]:
    out = ["## Local stack (serverless path)", ""]
    if stack.get("status") == "unreadable":
        return [*out, f"`{stack['path']}` could not be read: {stack['error']}", ""]
    if stack.get("status") != "present":
        return [*out, "not run (no `bench/results/stack.json`; `bench/stack_latency.py` writes it).", ""]
    data = stack["data"]
    rows = []
    for s in data.get("tree_shapes", []):
        qps = s.get("batch_qps") or {}
        rows.append(
            [
                f"b={s.get('branching')}, l={s.get('depth')}",
                s.get("nodes"),
                _n(s.get("cold_first_ms"), ",.0f"),
                _n(s.get("warm_p50_ms"), ".1f"),
                _n(s.get("warm_p95_ms"), ".1f"),
                ", ".join(f"B={b}: {_n(v)}" for b, v in qps.items()) or "–",
            ]
        )
    kind = "SYNTHETIC" if data.get("synthetic") else "real"
    return [
        *out,
        f"From `{stack['path']}` ({data.get('date', 'undated')}, {data.get('dataset', '?')} ({kind})): "
        "HTTP API emulator → coordinator → worker tree → S3 emulator, all on this machine.",
        "",
        *_table(["tree", "nodes", "cold first query ms", "warm p50 ms", "warm p95 ms", "batch QPS"], rows),
    ]


def _findings_md(results: dict[str, Any]) -> list[str]:
    """Observations computed from this run's numbers (so they stay true when the numbers move)."""
    out: list[str] = []
    ds = results.get("dataset_section")
    if ds:
        sels = ds["selectivities"]
        at8 = {n: _at_nprobe(s["peers"]["ivf_sq8"], ANCHOR_NPROBE) for n, s in sels.items()}
        collapse = ", ".join(f"{n} {p['recall']:.2f}" for n, p in at8.items() if p and n != "none")
        low = min(s["squash"]["default"]["recall"] for s in sels.values())
        if collapse:
            out.append(
                f"FAISS IVF-SQ8 at nprobe {ANCHOR_NPROBE} (its unfiltered tuning) loses recall under "
                f"filters ({collapse}); squash's defaults stay at >= {low:.4f} because L1 plans on match "
                "counts."
            )
        slower = [n for n, s in sels.items() if s["squash"]["default"]["qps"] < s["peers"]["exact"]["qps"]]
        if slower:
            out.append(
                f"Exact numpy beats squash in batch at {', '.join(slower)}: at this size one GEMM over the "
                "few matching rows costs less than squash's planning and per-partition work."
            )
        none = sels.get("none") or next(iter(sels.values()))
        lv_all, lv_auto = none["levels"]["all"], none["levels"]["auto"]
        if lv_auto["total"] > 0 and lv_all["total"] > 0:
            out.append(
                f"In-process, levels=all is {lv_all['total'] / lv_auto['total']:.0f}x slower than auto "
                "unfiltered; L3 (OSQ bounds by table gathers) takes "
                f"{100 * lv_all['l3'] / lv_all['total']:.0f}% of it, while auto re-ranks the segment's "
                "full-precision vectors exactly with one BLAS product."
            )
        d_all, d_auto = none["squash"]["default_all"], none["squash"]["default"]
        keep1 = next(
            (p for p in none["squash"].get("knobs", []) if p["params"].get("sketch_keep") == 1.0), None
        )
        if d_all["recall"] < d_auto["recall"] and keep1:
            out.append(
                f"levels=all loses recall unfiltered ({d_all['recall']:.4f} vs {d_auto['recall']:.4f}); "
                f"with sketch_keep=1.0 it is {keep1['recall']:.4f}, so the L2 sign sketch is where it is "
                "lost."
            )
        lat = [
            (n, s["latency"]["squash"]["p50_ms"] / s["latency"]["faiss_sq8"]["p50_ms"])
            for n, s in sels.items()
        ]
        out.append(
            "Single-query latency in-process: squash p50 is "
            + ", ".join(f"{n} {r:.0f}x" for n, r in lat)
            + " FAISS IVF-SQ8's (fixed per-partition overhead in Python/numpy; batching amortises it)."
        )
    sc = results.get("scale")
    if sc:
        d = sc["search"]["none"]["default"]
        if d["recall"] < RECALL_TARGET:
            ok = [p for p in sc["search"]["none"].get("ladder", []) if p["recall"] >= RECALL_TARGET]
            first = min(ok, key=lambda p: p["mean"]["partitions"]) if ok else None
            extra = (
                f"; the cheapest ladder rung reaching {RECALL_TARGET} is routing_factor "
                f"{first['params']['routing_factor']:g}, min_candidates "
                f"{first['params']['min_candidates']:,} ({first['recall']:.4f}, {first['qps']:,.0f} QPS)"
                if first
                else ""
            )
            out.append(
                f"At {sc['dataset']['n']:,} x {sc['dataset']['dims']} (synthetic) the default knobs give "
                f"recall {d['recall']:.4f} unfiltered, below {RECALL_TARGET}: min_candidates is an "
                f"absolute count, so with {sc['dataset']['n'] // sc['build']['partitions']:,} vectors per "
                f"partition L1 visits only {d['mean']['partitions']:.1f} partitions{extra}. The cost "
                "figures use that rung."
            )
    head = results.get("cost", {}).get("sift1m_size", {}).get("headline", [])
    b1 = next((r for r in head if r["batch"] == 1), None)
    if b1:
        w = b1["warm_per_million"]
        fees = w["requests"] + w["api_gateway"]
        out.append(
            f"At batch 1 the per-request fees are {100 * fees / w['total']:.0f}% of the modelled "
            f"${w['total']:.2f}/M and compute is mostly nodes waiting on invokes (assumed "
            f"{results['cost']['parameters']['assumptions']['invoke_ms']:g} ms each); batching divides "
            "both."
        )
    if not out:
        return []
    return ["## Findings", "", *(f"- {line}" for line in out), ""]


def _tiers_md(ds: dict[str, Any]) -> list[str]:
    """Issue #10: the hot tier's size and the code scan's cost against a float32 scan."""
    b, lv = ds["build"], ds.get("levels")
    if "hot_bytes_per_vector" not in b:
        return []
    d = ds["dataset"]["dims"]
    hot, cold = b["hot_bytes_per_vector"], b["cold_bytes"] / 2**20
    stored, resident = b["index_bytes"] / (4 * d * ds["dataset"]["n"]), b["resident_bytes"] / 2**20
    out = [
        "## Tiers and level costs",
        "",
        f"Hot tier {hot:.0f} bytes/vector ({hot / (4 * d):.1%} of float32's {4 * d}); cold tier "
        f"(float32) {cold:.0f} MiB; stored {stored:.3f}× the float32 data; resident after "
        f"preloading every partition {resident:.1f} MiB.",
        "",
    ]
    if lv:
        out += [
            f"Scoring one partition's rows ({lv['partitions']} partitions, {lv['rows']:,} rows, "
            f"d = {lv['dims']}) for m queries routed there, ns per (query, row), median of repeats, "
            "one thread:",
            "",
            *_table(
                [
                    "m queries",
                    "code scan (L3: decode + BLAS)",
                    "float32 BLAS (resident, previous format)",
                    "code / float32",
                ],
                [
                    [
                        r["queries"],
                        f"{r['code_ns_per_pair']:.2f}",
                        f"{r['float32_ns_per_pair']:.2f}",
                        f"{r['code_over_float32']:.2f}×",
                    ]
                    for r in lv["by_batch"]
                ],
            ),
            "",
        ]
    return out


def write(results: dict[str, Any], out: Path) -> Path:
    """Render REPORT.md and the PNGs into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    ds = results.get("dataset_section")
    cmp = results.get("targets", {}).get("comparisons", {})
    lines = _header(results)
    lines += [
        "## Targets",
        "",
        targets_markdown(results),
        f"Rule: {results.get('targets', {}).get('rule', '')}",
        "",
    ]
    lines += _findings_md(results)
    if ds:
        lines += _tiers_md(ds)
        plot_recall_qps(ds, out / PLOTS["recall_qps"])
        plot_selectivity(ds, cmp, out / PLOTS["selectivity"])
        plot_levels(ds, out / PLOTS["levels"])
        lines += _dataset_md(ds, cmp)
    else:
        lines += ["## Dataset section", "", "Not run (`--only`).", ""]
    plot_latency(ds, results.get("stack", {}), out / PLOTS["latency"])
    lines += _scale_md(results.get("scale"))
    costs = results.get("cost", {})
    if any(k in costs for k in ("sift1m_size", "dataset")):
        plot_cost(costs, out / PLOTS["cost"])
    lines += _cost_md(costs)
    lines += _stack_md(results.get("stack", {}))
    secs = results.get("sections_seconds", {})
    rows = [[k, f"{v:.1f}"] for k, v in secs.items()]
    rows.append(
        [
            "**total** (sections overlap: 'dataset section' contains the ones above it)",
            f"{results.get('total_seconds', 0):.1f}",
        ]
    )
    lines += ["## Run time", "", *_table(["section", "seconds"], rows)]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
