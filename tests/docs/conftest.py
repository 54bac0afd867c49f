"""The setups README blocks can ask for (``<!-- readme-test: setup=... -->``), built once per session.

Each block still gets a working directory of its own: files and the ``file://`` index are
copied in, so a block that writes cannot change what the next one sees. The local stack is
shared (it takes seconds to start) and stopped at the end of the session.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import readme_blocks

import squash

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"
STACK_INDEX = "fashion-mnist"  # the name the HTTP API section queries
FASHION_LABELS = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat"]
FASHION_LABELS += ["Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def sample_attributes(n: int, rng: np.random.Generator) -> pa.Table:
    """The attribute columns README examples filter on, of every kind the engine takes."""
    tags = [["news", "tech"], ["news"], ["sports"], ["tech", "science"], []]
    return pa.table(
        {
            "label": pa.array(rng.choice(FASHION_LABELS, n)),
            "brightness": pa.array(rng.random(n)),
            "price": pa.array(np.round(rng.uniform(1, 100, n), 2)),
            "tags": pa.array([tags[i % len(tags)] for i in range(n)], pa.list_(pa.string())),
            "published": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(hours=7 * i) for i in range(n)],
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )


def clustered(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian clusters: random data without structure plans poorly, which no README shows."""
    centres = rng.normal(0, 4, (16, d))
    return (centres[rng.integers(0, 16, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


@pytest.fixture(scope="session")
def readme_sample_dir(tmp_path_factory) -> Path:
    """v.npy (4,000 x 32 float32), q.npy (10 queries), a.parquet (one row of attributes per vector)."""
    rng = np.random.default_rng(13)
    folder = tmp_path_factory.mktemp("readme-sample")
    vectors = clustered(4010, 32, rng)
    np.save(folder / "v.npy", vectors[:4000])
    np.save(folder / "q.npy", vectors[4000:])
    pq.write_table(sample_attributes(4000, rng), folder / "a.parquet")
    return folder


@pytest.fixture(scope="session")
def readme_sample_index(readme_sample_dir, tmp_path_factory) -> Path:
    """A file:// index of the sample data (16 partitions: small and quick to copy)."""
    folder = tmp_path_factory.mktemp("readme-index") / "index"
    squash.build_index(
        np.load(readme_sample_dir / "v.npy"),
        folder.as_uri(),
        pq.read_table(readme_sample_dir / "a.parquet"),
        squash.BuildOptions(partitions=16, seed=0),
    )
    return folder


@pytest.fixture(scope="session")
def readme_stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A local stack (b=2, l=1) on 127.0.0.1 with index fashion-mnist: 1,000 x 784 synthetic
    vectors and the sample attributes. Yields the environment a block gets."""
    folder = tmp_path_factory.mktemp("readme-stack")
    up = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", "2", "--depth", "1"]
    proc = subprocess.run(up, timeout=120, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"local stack did not start: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    endpoints = json.loads((folder / "endpoints.json").read_text())
    env = {
        "API": endpoints["api_url"],
        "AWS_ENDPOINT_URL_S3": endpoints["s3_endpoint"],
        "AWS_ENDPOINT_URL_LAMBDA": endpoints["lambda_endpoint"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": endpoints["region"],
        "BUCKET": endpoints["bucket"],
    }
    try:
        rng = np.random.default_rng(7)
        mp = pytest.MonkeyPatch()
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            squash.build_index(
                clustered(1000, 784, rng),
                f"{endpoints['index_uri_prefix']}{STACK_INDEX}",
                sample_attributes(1000, rng),
                squash.BuildOptions(partitions=8, seed=0),
            )
        finally:
            mp.undo()
        yield env
    finally:
        _stop_stack(folder)


def _stop_stack(folder: Path) -> None:
    """stack.py down, then check that every process it recorded is gone."""
    pids = [int(p.read_text()) for p in (folder / "pids").glob("*.pid")]
    subprocess.run([sys.executable, str(STACK), "down", "--dir", str(folder)], check=True, timeout=60)
    deadline = time.monotonic() + 10
    while [p for p in pids if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "stack.py down left processes behind"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say how many README blocks ran and which were skipped and why, even on a quiet run."""
    stats = terminalreporter.stats
    mine = [r for key in ("passed", "failed", "skipped") for r in stats.get(key, [])]
    mine = [r for r in mine if "test_readme_block" in getattr(r, "nodeid", "")]
    if not mine:
        return
    blocks, _ = readme_blocks.runnable_blocks(readme_blocks.README)
    skipped = [b for b in blocks if b.skip_reason]
    ran = {r.outcome for r in mine}
    terminalreporter.write_line(
        f"README code blocks: {len(blocks)} runnable, {len(blocks) - len(skipped)} run, "
        f"{len(skipped)} skipped by marker (outcomes: {', '.join(sorted(ran))})"
    )
    for b in skipped:
        terminalreporter.write_line(f"  skipped {b.test_id} (README.md:{b.line}): {b.skip_reason}")
