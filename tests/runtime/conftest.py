"""The coordinator and worker handlers over moto S3, with in-process worker invocations.

Shared by the hardening tests: they drive ``functions/coordinator/app.py``'s ``handler``
with HTTP API (payload 2.0) events and direct invocations, as Lambda would.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from local_tree import LocalTree

from squash.build import BuildOptions, build_index
from squash.datasets import sample_dataset

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "hardening-bucket"
#: Values of the int64 attribute "big" of the "ints" index: around 2^62 and the int64 edges.
BIG_VALUES = [
    2**62 - 1,
    2**62,
    2**62 + 1,
    2**62 + 2,
    2**62 + 3,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63 - 2,
    -(2**63),
    -(2**63) + 1,
    0,
    -1,
    1,
]


def load_function(function: str):
    spec = importlib.util.spec_from_file_location(f"{function}_app", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    function_name = "squash-coordinator"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:squash-coordinator"
    aws_request_id = "test-request"


def ints_table(n: int, seed: int = 3) -> pa.Table:
    """An int64 column drawn from BIG_VALUES (every value present) plus a small int column."""
    rng = np.random.default_rng(seed)
    big = np.array(BIG_VALUES, dtype=np.int64)
    values = np.concatenate([big, rng.choice(big, n - big.size)])
    return pa.table({"big": pa.array(values, pa.int64()), "small": pa.array(rng.integers(0, 5, n))})


@pytest.fixture(scope="session")
def runtime_indexes(moto_s3):
    """Four indexes in one bucket: "sample" (the events' index), "ints" (int64 near 2^62),
    "cos" (cosine metric), "dot" (inner product)."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    ds = sample_dataset()
    build_index(ds.base, f"s3://{BUCKET}/indexes/sample", ds.attributes)
    build_index(
        ds.base, f"s3://{BUCKET}/indexes/ints", ints_table(ds.base.shape[0]), BuildOptions(partitions=8)
    )
    build_index(ds.base, f"s3://{BUCKET}/indexes/cos", None, BuildOptions(metric="cosine", partitions=8))
    build_index(
        ds.base, f"s3://{BUCKET}/indexes/dot", ds.attributes, BuildOptions(metric="dot", partitions=8)
    )
    return ds


@contextlib.contextmanager
def lambda_modules(bucket: str, service: str, *functions: str) -> Iterator[list]:
    """The handler modules of ``functions`` loaded under the environment a deployed stack gives
    them (bucket, a b=2, l=1 tree, Powertools without tracing), restored afterwards."""
    env = {
        "SQUASH_INDEX_BUCKET": bucket,
        "SQUASH_TREE_BRANCHING": "2",
        "SQUASH_TREE_DEPTH": "1",
        "SQUASH_LOCAL_MAX_MB": "0",  # the test indexes are tiny: exercise the tree
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "squash",
        "POWERTOOLS_SERVICE_NAME": service,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, val in env.items():
            mp.setenv(key, val)
        yield [load_function(f) for f in functions]


@pytest.fixture(scope="module")
def coordinator_app(runtime_indexes):
    """The coordinator Lambda module, its tree of in-process workers."""
    with lambda_modules(BUCKET, "squash-coordinator", "coordinator") as (coordinator,):
        coordinator.COORDINATOR.invoke = LocalTree("squash", 3)
        yield coordinator


def http_event(method: str, path: str, body: str | bytes | None = None, *, b64: bool = False) -> dict:
    """A minimal but complete HTTP API payload-2.0 event."""
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if b64 else body.decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def post(app, index: str, body: Any, *, raw: bool = False, b64: bool = False) -> tuple[int, dict]:
    """POST /indexes/{index}/query; ``body`` is JSON-encoded unless ``raw``."""
    text = body if raw else json.dumps(body)
    resp = app.handler(http_event("POST", f"/indexes/{index}/query", text, b64=b64), Context())
    return resp["statusCode"], json.loads(resp["body"])


def assert_error(status: int, body: dict, want_status: int, field: str | None = None) -> dict:
    """The documented error shape: {"error": {"code", "message", "field"?}}."""
    assert status == want_status, body
    err = body["error"]
    assert set(err) <= {"code", "message", "field"} and err["code"] and err["message"], body
    if field is not None:
        assert err.get("field") == field, body
    return err
