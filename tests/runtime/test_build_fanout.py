"""The fanned-out build: workers' ``build`` action over moto S3, invoked in-process.

Same seed, same files as the local build (byte for byte); the functions' inputs are
deleted afterwards; the action is refused unless builds are enabled, and for an index
outside the deployment's bucket and prefix.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from build_files import assert_same_index, s3_files
from local_tree import LocalTree

from squash.build import BuildOptions, build_index
from squash.errors import UpstreamError
from squash.runtime.build_driver import LambdaBuilder
from squash.runtime.worker import WorkerNode

OPTS = BuildOptions(partitions=20, calibration_queries=40, seed=9)


@pytest.fixture
def data():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(12, 16))[rng.integers(0, 12, 5000)] * 3 + rng.normal(size=(5000, 16))).astype(
        np.float32
    )
    tags = pa.array([["a", "b"][: i % 3] for i in range(5000)], pa.list_(pa.string()))
    attrs = pa.table({"price": rng.uniform(0, 100, 5000), "tags": tags})
    return x, attrs


@pytest.fixture
def deployment(monkeypatch, s3_bucket):
    monkeypatch.setenv("SQUASH_INDEX_BUCKET", s3_bucket)
    monkeypatch.setenv("SQUASH_INDEX_PREFIX", "indexes/")
    monkeypatch.setenv("SQUASH_BUILDS_ENABLED", "true")
    return s3_bucket


def test_fanned_out_build_writes_the_local_builds_bytes(data, deployment, tmp_path):
    x, attrs = data
    build_index(x, f"s3://{deployment}/indexes/local", attrs, OPTS)
    tree = LocalTree("stack", 1)
    builder = LambdaBuilder("stack", concurrency=3, per_call=6, invoke=tree)
    build_index(x, f"s3://{deployment}/indexes/fanned", attrs, OPTS, builder=builder)
    fanned = s3_files(deployment, "indexes/fanned/")
    assert not [k for k in fanned if "/inputs/" in k]  # the functions' inputs are deleted
    assert_same_index(s3_files(deployment, "indexes/local/"), fanned)
    assert builder.stats["invocations"] == len(tree.calls) == 4  # 20 partitions, 6 per call
    assert builder.stats["function_bytes_written"] == sum(
        len(v) for k, v in fanned.items() if "/partitions/" in k
    )


def test_build_action_is_refused_when_disabled_or_outside_the_prefix(data, deployment, monkeypatch):
    x, attrs = data
    node = WorkerNode(LocalTree("stack", 1), 1 << 20)
    event = {
        "action": "build",
        "index": f"s3://{deployment}/indexes/x",
        "build_id": "20261201T120000Z-0123abcd",
        "partitions": [0],
        "budget": 96,
        "sketch_bits": 16,
    }
    for bad, field in (
        ({"index": f"s3://{deployment}/elsewhere/x"}, "index"),
        ({"index": f"s3://{deployment}/indexes/a/../b"}, "index"),
        ({"index": "s3://other-bucket/indexes/x"}, "index"),
        ({"build_id": "../../etc"}, "build_id"),
        ({"partitions": []}, "partitions"),
        ({"partitions": [-1]}, "partitions"),
        ({"budget": True}, "budget"),
    ):
        out = node.handle(event | bad)
        assert out["error"]["status"] == 400 and field in out["error"]["message"], (bad, out)
    monkeypatch.setenv("SQUASH_BUILDS_ENABLED", "false")
    out = node.handle(event)
    assert out["error"]["status"] == 403 and out["error"]["code"] == "builds_disabled"
    builder = LambdaBuilder("stack", invoke=LocalTree("stack", 1))
    with pytest.raises(UpstreamError, match="does not build"):
        build_index(x, f"s3://{deployment}/indexes/refused", attrs, OPTS, builder=builder)
    left = s3_files(deployment, "indexes/refused/")
    assert "manifest.json" not in left and not [k for k in left if "/inputs/" in k]
