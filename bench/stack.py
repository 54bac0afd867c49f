"""Local-stack section (optional): figures measured through the serverless path.

``bench/stack_latency.py`` runs the coordinator and worker tree on the Docker-free local
stack and writes ``stack.json``; this module only reads it, so the report can include target
(4) when it exists and say "not run" otherwise. Two shapes are understood and normalised to
``tree_shapes`` records: stack_latency.py's own (``shapes`` with ``cold_first_query.seconds``,
``warm_single_ms.p50/p95`` and ``batch_throughput[B].qps/seconds``), and a flat one::

    {"tree_shapes": [{"branching": 4, "depth": 1, "nodes": 5, "warm_p50_ms": 41.0,
                      "warm_p95_ms": 60.0, "cold_first_ms": 2300.0,
                      "batch_qps": {"100": 850.0}, "batch_seconds": {"100": 0.118}}],
     "targets": [{"target": "(4) ...", "measured": "...", "met": true, "by": "..."}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILENAME = "stack.json"


def _shape(raw: dict[str, Any]) -> dict[str, Any]:
    """One tree shape in the flat form, from either schema."""
    if "warm_single_ms" not in raw and "cold_first_query" not in raw:
        return raw
    warm = raw.get("warm_single_ms") or {}
    cold = raw.get("cold_first_query") or {}
    tput = raw.get("batch_throughput") or {}
    return {
        "branching": raw.get("branching"),
        "depth": raw.get("depth"),
        "nodes": raw.get("nodes"),
        "warm_p50_ms": warm.get("p50"),
        "warm_p95_ms": warm.get("p95"),
        "warm_n": warm.get("n"),
        "cold_first_ms": cold["seconds"] * 1e3 if cold.get("seconds") is not None else None,
        "batch_qps": {str(b): v.get("qps") for b, v in tput.items()},
        "batch_seconds": {str(b): v.get("seconds") for b, v in tput.items()},
        "warm_invoked": ((raw.get("warm_stats_example") or {}).get("nodes") or {}).get("invoked"),
    }


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a ``tree_shapes`` list in the flat form (the original keys are kept)."""
    shapes = data.get("tree_shapes") or data.get("shapes") or []
    return data | {"tree_shapes": [_shape(s) for s in shapes]}


def load(results_dir: Path) -> dict[str, Any]:
    """The stack figures if ``stack.json`` exists in ``results_dir`` (or next to this module)."""
    for candidate in (results_dir / FILENAME, Path(__file__).resolve().parent / "results" / FILENAME):
        if candidate.exists():
            try:
                data = normalise(json.loads(candidate.read_text()))
            except (OSError, json.JSONDecodeError, AttributeError, TypeError) as exc:
                return {"status": "unreadable", "path": str(candidate), "error": str(exc)}
            return {"status": "present", "path": str(candidate), "data": data}
    return {"status": "not run"}
