"""`bench/run.py --quick` end to end: sections present, numbers sane, report and plots written.

Runs the benchmark as `make bench` does (a subprocess, one thread) on its tiny synthetic set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[2]
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        env=os.environ | THREADS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), out


def _points(sel: dict) -> list[dict]:
    sq, peers = sel["squash"], sel["peers"]
    return [
        sq["default"], sq["default_all"], sq["default_exact"], *sq["ladder"], *sq.get("knobs", []),
        peers["exact"], peers["faiss_flat"], *peers["ivf_flat"], *peers["ivf_sq8"],
    ]  # fmt: skip


def test_sections_present(results: tuple[dict, Path]) -> None:
    res, _ = results
    for key in ("machine", "versions", "parameters", "dataset_section", "scale", "cost", "stack", "targets"):
        assert key in res, key
    assert res["mode"] == "quick"
    assert res["dataset_section"]["dataset"]["synthetic"] is True
    assert set(res["dataset_section"]["selectivities"]) == {"none", "50%", "10%", "1%", "0.1%"}
    assert res["stack"]["status"] in ("present", "not run", "unreadable")
    assert res["versions"]["numpy"] and res["machine"]["logical_cpus"] >= 1


def test_numbers_sane(results: tuple[dict, Path]) -> None:
    res, _ = results
    for sel in res["dataset_section"]["selectivities"].values():
        for p in _points(sel):
            assert 0.0 <= p["recall"] <= 1.0
            assert p["qps"] > 0
        assert sel["peers"]["exact"]["recall"] == pytest.approx(1.0)
        assert sel["latency"]["squash"]["p50_ms"] > 0
        assert sum(sel["levels"]["all"].values()) > 0
    build = res["scale"]["build"]
    assert build["build_seconds"] > 0 and build["peak_rss_gib"] > 0
    for row in res["cost"]["sift1m_size"]["headline"]:
        assert row["warm_per_million"]["total"] > 0
    assert all(r["met"] in (True, False, None) for r in res["targets"]["rows"])


def test_report_and_plots(results: tuple[dict, Path]) -> None:
    _, out = results
    report = (out / "REPORT.md").read_text()
    assert "## Targets" in report and "SYNTHETIC" in report
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)


def test_planner_section(results: tuple[dict, Path]) -> None:
    """The planner section (bench/planner.py) on its tiny synthetic set: planner.json and
    PLANNER.md written, every filter measured for both targets, the plan reported, full k."""
    res, out = results
    assert res["planner"]["file"] == "planner.json"
    pl = json.loads((out / "planner.json").read_text())
    assert pl["section"] == "planner" and pl["mode"] == "quick"
    assert pl["machine"]["logical_cpus"] >= 1 and pl["versions"]["numpy"]
    ds = pl["datasets"]["synthetic"]
    assert ds["status"] == "ran" and ds["role"] == "smoke" and ds["synthetic"] is True
    assert set(ds["filters"]) == {"none", "50%", "10%", "1%", "0.1%"}
    build = ds["build"]
    assert 0 < build["calibration_seconds"] < build["seconds"]
    assert build["met"] in (True, False)
    for sel in ds["filters"].values():
        assert set(sel["squash"]) == set(sel["checks"]) == {"0.95", "0.99"}
        for p in sel["squash"].values():
            assert 0.0 <= p["recall"] <= 1.0 and p["qps"] > 0
            assert p["plan_stats"]["plan"] in ("routed", "exact")
            assert p["short_queries"] == 0
        assert sel["exact"]["recall"] == pytest.approx(1.0)
        assert sel["faiss_sq8"] and all(0.0 <= p["recall"] <= 1.0 for p in sel["faiss_sq8"])
        assert sel["latency"]["squash"]["p50_ms"] > 0 and sel["latency"]["faiss_sq8"]["p50_ms"] > 0
        if pl["lancedb"]["status"] == "ran":
            assert sel["lancedb"] and all(0.0 <= p["recall"] <= 1.0 for p in sel["lancedb"])
        for checks in sel["checks"].values():
            assert all(v in (True, False) for v in checks.values())
    md = (out / "PLANNER.md").read_text()
    assert "## Targets" in md and "SYNTHETIC" in md and "| filter |" in md
