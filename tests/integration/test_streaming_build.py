"""The streaming build: files read a block at a time give the in-memory build's bytes.

The data spans two input blocks (``CHUNK_ROWS`` + a few thousand rows) and the Parquet
folder's files and row groups end off the block boundaries, so re-cutting is exercised.
A build killed (SIGKILL) at each stage leaves the existing index readable and unchanged,
and the rerun completes.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from build_files import assert_same_index, local_files

import squash
from squash.build import BuildOptions, build_index
from squash.cli import main
from squash.errors import InputError
from squash.sources import CHUNK_ROWS, open_source

N = CHUNK_ROWS + 4_500
D = 12
OPTS = BuildOptions(partitions=24, calibration_queries=60, seed=3)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(16, D)) * 4
    x = (centres[rng.integers(0, 16, N)] + rng.normal(size=(N, D))).astype(np.float32)
    attrs = pa.table({"id": np.arange(N, dtype=np.int64) * 7 + 1, "kind": rng.integers(0, 5, N)})
    return x, attrs


@pytest.fixture(scope="module")
def in_memory(data, tmp_path_factory):
    x, attrs = data
    root = tmp_path_factory.mktemp("mem") / "idx"
    build_index(x, str(root), attrs, OPTS)
    return local_files(root)


def test_npy_file_equals_in_memory_build(data, in_memory, tmp_path):
    x, attrs = data
    np.save(tmp_path / "v.npy", x)
    source, none = open_source(tmp_path / "v.npy")
    assert none is None and (source.n, source.d) == (N, D)
    build_index(source, str(tmp_path / "idx"), attrs, OPTS)
    assert_same_index(in_memory, local_files(tmp_path / "idx"))


def test_parquet_folder_equals_in_memory_build(data, in_memory, tmp_path):
    x, attrs = data
    folder = tmp_path / "parts"
    folder.mkdir()
    cuts = [0, 20_001, 51_234, N]  # files end off the 65,536-row blocks
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        table = attrs.slice(a, b - a).append_column("emb", pa.array(list(x[a:b]), pa.list_(pa.float32(), D)))
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=7_000)
    source, file_attrs = open_source(folder)
    assert source.n == N and file_attrs.column_names == ["id", "kind"]
    build_index(source, str(tmp_path / "idx"), file_attrs, OPTS)
    assert_same_index(in_memory, local_files(tmp_path / "idx"))
    glob_source, _ = open_source(str(folder / "part-*.parquet"))
    assert glob_source.n == N


def test_parallel_workers_and_s3_input_equal_in_memory_build(data, in_memory, tmp_path, s3_bucket):
    import boto3

    x, attrs = data
    np.save(tmp_path / "v.npy", x)
    pq.write_table(attrs, tmp_path / "a.parquet")
    boto3.client("s3").upload_file(str(tmp_path / "v.npy"), s3_bucket, "in/v.npy")
    argv = [
        *("build", "--vectors", f"s3://{s3_bucket}/in/v.npy", "--attributes", str(tmp_path / "a.parquet")),
        *("--index-uri", str(tmp_path / "idx"), "--partitions", "24", "--calibration-size", "60"),
        *("--seed", "3", "--workers", "2", "--scratch", str(tmp_path / "scratch"), "--quiet"),
    ]
    assert main(argv) == 0
    assert_same_index(in_memory, local_files(tmp_path / "idx"))
    assert list((tmp_path / "scratch").iterdir()) == []  # the scratch folder is cleaned up


def test_block_errors_name_the_global_row(tmp_path):
    x = np.ones((CHUNK_ROWS + 10, 4), np.float32)
    x[CHUNK_ROWS + 3, 1] = np.nan
    folder = tmp_path / "f"
    folder.mkdir()
    half = CHUNK_ROWS // 2
    for i, (a, b) in enumerate([(0, half), (half, x.shape[0])]):
        pq.write_table(
            pa.table({"v": pa.array(list(x[a:b]), pa.list_(pa.float32(), 4))}), folder / f"{i}.parquet"
        )
    with pytest.raises(InputError, match=f"row {CHUNK_ROWS + 3} contains NaN"):
        build_index(open_source(folder)[0], str(tmp_path / "idx"))
    assert not (tmp_path / "idx" / "manifest.json").exists()
    pq.write_table(pa.table({"w": pa.array([[1.0] * 4], pa.list_(pa.float32(), 4))}), folder / "2.parquet")
    with pytest.raises(InputError, match="differ from"):
        open_source(folder)
    (folder / "2.parquet").unlink()
    np.save(folder / "3.npy", x[:5])
    with pytest.raises(InputError, match="mixes file kinds"):
        open_source(folder)
    with pytest.raises(InputError, match="no files match"):
        open_source(str(tmp_path / "none-*.parquet"))


def _cli_build(vectors: Path, root: Path, scratch: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("SQUASH_BUILD_FAULT", None)
    if fault:
        env["SQUASH_BUILD_FAULT"] = fault
    argv = [sys.executable, "-m", "squash.cli", "build", "--vectors", str(vectors), "--index-uri", str(root)]
    argv += [
        "--partitions",
        "24",
        "--calibration-size",
        "60",
        "--replace",
        "--quiet",
        "--scratch",
        str(scratch),
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fault", ["scanned", "assigned", "spilled", "partitions", "router"])
def test_killed_build_leaves_the_index_readable_and_a_rerun_completes(data, tmp_path, fault):
    x, _ = data
    rng = np.random.default_rng(1)
    old = rng.normal(size=(3_000, D)).astype(np.float32)
    root, scratch = tmp_path / "idx", tmp_path / "scratch"
    build_index(old, str(root), options=BuildOptions(partitions=8, calibration_queries=0))
    q = old[:5] + 0.01
    before = squash.open_index(str(root)).search(q, k=5)
    manifest = (root / "manifest.json").read_bytes()
    new = x[:12_000]
    np.save(tmp_path / "new.npy", new)

    crashed = _cli_build(tmp_path / "new.npy", root, scratch, fault)
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL, as a lost machine
    assert (root / "manifest.json").read_bytes() == manifest
    after = squash.open_index(str(root)).search(q, k=5)
    np.testing.assert_array_equal(after.ids, before.ids)
    assert len(list(scratch.iterdir())) == 1  # the dead build's scratch is left behind ...

    rerun = _cli_build(tmp_path / "new.npy", root, scratch, None)
    assert rerun.returncode == 0, rerun.stderr
    assert list(scratch.iterdir()) == []  # ... and the next build removes it
    index = squash.open_index(str(root))
    assert index.manifest.n == new.shape[0]
    hits = index.search(new[:20], k=1).ids[:, 0]
    assert (hits == np.arange(20)).mean() >= 0.9
