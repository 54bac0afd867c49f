"""The Lambda handlers fed exactly the files in events/, over moto S3.

Worker invocations are in-process calls here (see test_tree_runtime.LocalTree); the real
Invoke API path is covered by tests/integration/test_serverless.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Context, lambda_modules
from local_tree import LocalTree

import squash
from squash.build import build_index
from squash.datasets import sample_dataset
from squash.runtime.codec import pack_array

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


@pytest.fixture(scope="module")
def handlers(moto_s3):
    import boto3

    boto3.client("s3").create_bucket(Bucket="events-bucket")
    ds = sample_dataset()
    build_index(ds.base, "s3://events-bucket/indexes/sample", ds.attributes)
    with lambda_modules("events-bucket", "squash-coordinator", "coordinator", "worker") as modules:
        coordinator, worker = modules
        tree = LocalTree("squash", 3)
        coordinator.COORDINATOR.invoke = tree
        yield coordinator, worker, tree


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _call(handlers, name: str) -> tuple[int, dict]:
    coordinator, _, _ = handlers
    resp = coordinator.handler(_event(name), Context())
    return resp["statusCode"], json.loads(resp["body"])


def test_query_event_matches_in_process(handlers):
    status, body = _call(handlers, "query.json")
    assert status == 200
    req = json.loads(_event("query.json")["body"])
    expected = squash.open_index("s3://events-bucket/indexes/sample").search(req["vector"], k=5)
    assert [h["id"] for h in body["results"][0]] == expected.ids[0].tolist()
    assert body["stats"]["nodes"]["invoked"] == 3


def test_filtered_event_returns_matching_attributes(handlers):
    status, body = _call(handlers, "query-filter.json")
    assert status == 200
    hits = body["results"][0]
    assert hits, "the sample filter matches plenty of rows"
    for hit in hits:
        assert hit["attributes"]["label"] in ("c01", "c02") and hit["attributes"]["price"] < 50


def test_info_and_health_events(handlers):
    status, body = _call(handlers, "index-info.json")
    assert status == 200 and body["n"] == 2000 and body["dims"] == 16
    assert {a["name"] for a in body["attributes"]} == {"label", "price", "in_stock"}
    status, body = _call(handlers, "health.json")
    assert status == 200 and body["status"] == "ok" and body["tree"]["nodes"] == 3


@pytest.mark.parametrize(("name", "field"), [("bad-request.json", "body"), ("bad-dimension.json", "vector")])
def test_bad_events_are_400_naming_the_field(handlers, name, field):
    status, body = _call(handlers, name)
    assert status == 400
    assert body["error"]["field"] == field and body["error"]["message"]


def test_unknown_index_and_route(handlers):
    coordinator, _, _ = handlers
    event = _event("index-info.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/indexes/nope"
    resp = coordinator.handler(event, Context())
    assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"]["code"] == "index_not_found"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/nowhere"
    resp = coordinator.handler(event, Context())
    assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"]["field"] == "path"


def test_direct_invocation(handlers):
    coordinator, _, _ = handlers
    out = coordinator.handler(_event("direct-query.json"), Context())
    assert len(out["results"]) == 2 and all(len(r) == 3 for r in out["results"])
    bad = coordinator.handler({"vectors": [[1.0]]}, Context())
    assert bad["status"] == 400 and bad["error"]["field"] == "index"


def test_worker_handler_reports_a_structured_error(handlers):
    _, worker, _ = handlers
    event = {
        "index": "s3://events-bucket/indexes/sample",
        "position": 0,
        "tree": {"branching": 1, "depth": 0, "prefix": "squash"},
        "k": 1,
        "segments": {"0": {"key": "builds/missing/segment.arrow", "size": 1, "sha256": "0"}},
        "queries": pack_array(np.zeros((1, 16), np.float32)),
        "query_ids": pack_array(np.zeros(1, np.int32)),
        "pairs": pack_array(np.zeros((1, 2), np.int32)),
    }
    out = worker.handler(event, Context())  # a segment that is not there: an error, not a crash
    assert "error" in out and out["error"]["status"] == 500 and out["error"]["code"] == "index_corrupt"


def test_warm_action_through_both_handlers(handlers):
    """The warm schedule's event: the coordinator handler fans it out; the worker handler
    loads the segments it is given and answers (no search, no stats to report)."""
    coordinator, worker, _ = handlers
    out = coordinator.handler({"index": "sample", "action": "warm"}, Context())
    assert out["nodes"] == 3 and out["s3"]["segments_loaded"] + out["s3"]["cache_hits"] > 0
    manifest = squash.open_index("s3://events-bucket/indexes/sample").manifest
    event = {
        "action": "warm",
        "index": "s3://events-bucket/indexes/sample",
        "position": 0,
        "segments": {"0": manifest.segments[0].__dict__},
    }
    answer = worker.handler(event, Context())
    assert answer["warmed"] is True and answer["s3"]["segments_loaded"] == 1
    bad = coordinator.handler({"index": "sample", "action": "warm", "k": 3}, Context())
    assert bad["status"] == 400 and bad["error"]["field"] == "k"
