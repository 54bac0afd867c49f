"""ECON.md and econ.png from econ.json (``bench/econ.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _money(x: float) -> str:
    return f"${x:.3f}" if x < 10 else f"${x:,.1f}"


def envelope_table(by_batch: dict[str, Any], batch: str) -> list[str]:
    b = by_batch[batch]
    knee = (b["knee"] or {}).get("budget")
    lines = [
        "| node budget | best shape | nodes | invocations / query | p50 ms "
        "| QPS (one batch in flight) | $ / M queries |",
        "|---|---|---|---|---|---|---|",
    ]
    a = b["alone"]
    lines.append(
        f"| 0 (coordinator alone) | – | 0 | {a['invocations_per_query']:.3g} | {a['p50_ms']:.1f} | "
        f"{a['qps']:,.0f} | {_money(a['per_million']['total'])} |"
    )
    for r in b["envelope"]:
        mark = " **← knee**" if r["budget"] == knee else ""
        lines.append(
            f"| {r['budget']} | {r['shape']} | {r['nodes']} | {r['invocations_per_query']:.3g} | "
            f"{r['p50_ms']:.1f} | {r['qps']:,.0f} | {_money(r['per_million']['total'])}{mark} |"
        )
    return lines


def markdown(doc: dict[str, Any]) -> str:
    ix = doc["index"]
    m = doc["machine"]
    out = [
        "# Measured economics (issue #14)",
        "",
        f"Run {doc['date']} ({doc['mode']}), {m.get('cpu', {}).get('model', '?')} VM, "
        f"{m.get('logical_cpus')} logical CPUs, Python {m.get('python')}, one BLAS thread; "
        f"versions {', '.join(f'{k} {v}' for k, v in doc['versions'].items())}.",
        f"Index: {ix['n']:,} x {ix['dims']} SYNTHETIC (Gaussian mixture), {ix['partitions']} partitions, "
        f"hot tier {ix['hot_bytes'] / 2**20:.1f} MiB; search at the defaults ({doc['search_params']}).",
        f"Timing: {doc.get('timing', 'one timing per partition search')}.",
        "",
        "## Invocations counted from the runtime's stats (in-process coordinator and workers, JSON boundary)",
        "",
        "| serving | batch | queries | recall@10 | invocations / request | invocations / query "
        "| stats = invoker count | partitions / request | re-rank | cold-tier GETs / query |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["counted"]:
        out.append(
            f"| {r['shape']} | {r['batch']} | {r['queries']} | {r['recall_at_10']:.4f} | "
            f"{r['invocations_per_request']:.2f} | {r['invocations_per_query']:.3f} | "
            f"{'yes' if r['stats_and_invoker_agree'] else 'NO'} | "
            f"{r['partitions_visited_per_request']:.1f} | "
            f"{', '.join(r.get('rerank', []))} | {r.get('refine_gets_per_query', 0):.2f} |"
        )
    chk = doc["model_vs_counted_invocations"]
    if chk:
        worst = max(abs(c["counted"] - c["simulated"]) for c in chk)
        out += [
            "",
            "The simulator's invocation count against the counted one, same shapes and batches: "
            f"largest gap {worst:.3f} per request.",
        ]
    ov = doc["overheads"]
    meas = ov.get("measurement")
    out += ["", "## Per-invoke overhead", ""]
    if meas:
        f = meas["fit"]
        out += [
            f"**{meas['label']}** ({meas['date']}): bare invoke p50 {meas['bare']['wall_ms']['p50']:.2f} ms "
            f"(p95 {meas['bare']['wall_ms']['p95']:.2f}), caller CPU {f['caller_cpu_ms']:.2f} ms per invoke; "
            f"fit over padded invokes and real hops: {f['fixed_ms']:.2f} ms + "
            f"{f['ms_per_request_kb']:.4f} ms/KB of request + {f['ms_per_response_kb']:.4f} ms/KB "
            f"of response (rms {f['residual_ms_rms']:.2f} ms).",
            "",
            "| hop (b=1 l=0) | request KB | response KB | wall ms | worker ms | overhead ms |",
            "|---|---|---|---|---|---|",
        ]
        for h in meas["hops"]:
            out.append(
                f"| Q = {h['queries']} | {h['request_kb']:.1f} | {h['response_kb']:.1f} | "
                f"{h['wall_ms_p50']:.1f} | "
                f"{h['node_ms_p50']:.1f} | {h['overhead_ms_p50']:.1f} |"
            )
    else:
        out.append("Local stack not measured (run `bench/invoke_overhead.py`): defaults used.")
    out += [
        "",
        f"AWS: **{ov['aws'][0]['label']}**; sensitivity with {ov['aws'][1]['fixed_ms']:g} and "
        f"{ov['aws'][2]['fixed_ms']:g} ms.",
    ]
    out += [
        "",
        "## Targets (SIFT1M-sized, AWS overhead as assumed)",
        "",
        "| target | serving | $ / M | p50 ms | met | by |",
        "|---|---|---|---|---|---|",
    ]
    for t in doc["targets"]:
        out.append(
            f"| {t['target']} | {t['serving']} | {_money(t['measured'])} | {t['p50_ms']:.1f} | "
            f"{'yes' if t['met'] else '**no**'} | {t['by']} |"
        )
    for name, sim in doc["sims"].items():
        out += ["", f"## Simulated trees: {name}", ""]
        out += [f"- {n}" for n in sim["notes"]]
        for overhead in ("aws", "local"):
            s = sim[overhead]
            out += ["", f"### {s['overheads']['label']}", ""]
            for batch in s["by_batch"]:
                k = s["by_batch"][batch]["knee"]
                knee = (
                    f"knee at {k['budget']} nodes ({k['shape']}; "
                    f"next doubling cuts p50 by {k['next_cut']:.1%})"
                    if k
                    else "no knee in range"
                )
                out += [f"Batch {batch}: {knee}.", "", *envelope_table(s["by_batch"], batch), ""]
        sens = sim["aws_sensitivity"]
        out.append(
            "AWS sensitivity: "
            + "; ".join(
                f"{label.split(',')[1].strip()}: knees "
                + ", ".join(f"B={b} -> {v['knee']}" for b, v in d.items())
                for label, d in sens.items()
            )
        )
    p = doc["prices"]
    c = doc["sim_config"]
    out += [
        "",
        "## Prices and assumptions",
        "",
        f"- Lambda ${p['lambda_gb_second']} per GB-s (x86), ${p['lambda_per_million_requests']} per "
        f"million requests; API Gateway HTTP API ${p['apigw_http_per_million']} per million, metered "
        f"per {c['apigw_increment_bytes'] // 1024} KB of body (JSON body, {c['body_bytes_per_float']:g} "
        f"bytes per number); S3 GET ${p['s3_get_per_thousand']} per 1,000 ({p['date']}, published "
        "rates, verify before use).",
        f"- Memory: coordinator {c['coordinator_mb']} MB with a tree, {c['alone_coordinator_mb']} MB "
        f"(or what the hot tier needs) serving alone; workers {c['worker_mb_floor']} MB (one full "
        f"vCPU) or what their hot tier needs (cache {c['cache_fraction']:.0%} of memory). "
        "Below 1,769 MB the scan is slowed by 1,769 / MB. A Lambda vCPU is taken as fast as one core here.",
        f"- {c['handler_ms']:g} ms per invocation of decode/encode/merge beyond the search; "
        "ceil(ms) billing per invocation.",
        f"- Cold starts: every segment read once ({c['s3_mb_per_s']:g} MB/s, one GET each + "
        "manifest + router) per "
        f"{c['cold_every_queries']:,} queries, reported as 'with cold' in econ.json.",
        "- Latency is the coordinator's modelled duration (API Gateway's own latency and the "
        "client's network excluded).",
    ]
    return "\n".join(out) + "\n"


def plot(doc: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = doc["paper"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    names = list(doc["sims"])
    styles = {0: "-", 1: "--"}
    for i, name in enumerate(names):
        short = name.split(" (")[0]
        for batch, colour in (("1", "tab:blue"), ("100", "tab:orange"), ("1000", "tab:green")):
            env = doc["sims"][name]["aws"]["by_batch"].get(batch)
            if env is None:
                continue
            rows = env["envelope"]
            label = f"{short}, B={batch}"
            if batch == "1":  # no tree beats one node: show the stars (l=1) instead of the envelope
                rows = sorted(
                    (
                        r | {"per_million": {"total": r["per_million"]}, "ms_per_query": r["p50_ms"]}
                        for r in env["all"]
                        if r["shape"].endswith("l=1") or r["shape"] == "b=1 l=0"
                    ),
                    key=lambda r: r["nodes"],
                )
                label += " (stars b=1..1023, l=1)"
            xs = [r["nodes"] for r in rows]
            kw = {"color": colour, "ls": styles[i % 2], "marker": "o", "ms": 3}
            axes[0].plot(xs, [r["ms_per_query"] for r in rows], label=label, **kw)
            axes[1].plot(xs, [r["per_million"]["total"] for r in rows], label=label, **kw)
            axes[2].plot(xs, [r["p50_ms"] for r in rows], label=label, **kw)
            k = env["knee"]
            if k:
                for ax, key in ((axes[0], "ms_per_query"), (axes[2], "p50_ms")):
                    ax.plot([k["nodes"]], [k[key]], marker="*", ms=14, color=colour, mec="k")
                axes[1].plot(
                    [k["nodes"]], [k["per_million"]["total"]], marker="*", ms=14, color=colour, mec="k"
                )
    axes[0].plot(paper["allocators"], paper["ms_per_query"], "ks", ms=7, label="SQUASH paper, SIFT1M (1/QPS)")
    axes[1].plot(
        paper["allocators"],
        [10 * x for x in paper["usd_per_100k"]],
        "ks",
        ms=7,
        label="SQUASH paper, SIFT1M ($/100k x 10)",
    )
    axes[0].set_ylabel("ms per query = 1000 / QPS (one batch in flight)")
    axes[1].set_ylabel("$ per million queries (warm)")
    axes[2].set_ylabel("p50 latency of a request, ms")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tree nodes (best shape within a node budget)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"Simulated trees, AWS invoke overhead ASSUMED {doc['overheads']['aws'][0]['fixed_ms']:g} ms; "
        f"stars: knee; measured per-partition work ({doc['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict[str, Any], out: Path) -> Path:
    plot(doc, out / "econ.png")
    md = out / "ECON.md"
    md.write_text(markdown(doc))
    return md
