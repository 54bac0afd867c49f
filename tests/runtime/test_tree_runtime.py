"""Coordinator and worker code over moto S3, with invocations as in-process calls.

The same code runs behind the Lambda Invoke API in tests/integration/test_serverless.py;
here the invoker is a function call, so failures point at the runtime logic itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from local_tree import LocalTree
from positions import working_positions

import squash
from squash.build import BuildOptions, build_index
from squash.errors import InputError, PayloadTooLargeError, UpstreamError
from squash.runtime.config import RuntimeConfig
from squash.runtime.coordinator import Coordinator
from squash.runtime.requests import parse_query
from squash.runtime.tree import TreeLayout


@pytest.fixture(scope="module")
def s3_index(moto_s3, small_data):
    import boto3

    boto3.client("s3").create_bucket(Bucket="rt-bucket")
    uri = "s3://rt-bucket/indexes/small"
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(partitions=16, seed=2))
    return uri


def _ids(found: np.ndarray) -> list[list[int]]:
    """In-process result ids per query without the -1 padding (the HTTP shape)."""
    return [[i for i in row if i >= 0] for row in found.tolist()]


def _hits(out: dict) -> list[list[int]]:
    return [[h["id"] for h in row] for row in out["results"]]


def _working_positions(uri: str, q: np.ndarray, filt, tree: TreeLayout) -> list[int]:
    return working_positions(uri, q, filt, tree)


def _coordinator(b: int, depth: int) -> tuple[Coordinator, LocalTree]:
    cfg = RuntimeConfig(bucket="rt-bucket", tree=TreeLayout(b, depth), manifest_check_s=0)
    tree = LocalTree(cfg.worker_prefix, cfg.tree.size)
    return Coordinator(cfg, tree), tree


@pytest.mark.parametrize(("b", "depth"), [(2, 2), (4, 1)])
@pytest.mark.parametrize(
    "filt", [None, {"price": {"$lt": 60}}, {"label": {"$in": ["c01", "c03"]}, "in_stock": True}]
)
def test_tree_equals_in_process(s3_index, small_data, b, depth, filt):
    coord, tree = _coordinator(b, depth)
    q = small_data.queries[:20]
    body = {"vectors": q.tolist(), "k": 10, "include": ["distance", "attributes"]}
    if filt:
        body["filter"] = filt
    out = coord.query("small", parse_query(body))
    expected = squash.open_index(s3_index).search(q, k=10, filter=filt)
    assert _hits(out) == _ids(expected.ids)
    np.testing.assert_allclose(
        [h["distance"] for row in out["results"] for h in row],
        expected.distances[expected.ids >= 0],
        rtol=1e-6,
    )
    # only the nodes whose subtree owns a visited partition are invoked (and the root)
    assert out["stats"]["nodes"]["positions"] == _working_positions(s3_index, q, filt, coord.config.tree)
    assert len(tree.calls) == out["stats"]["nodes"]["invoked"] == len(out["stats"]["nodes"]["positions"])
    assert out["stats"]["levels"]["l4_scored"] == sum(expected.stats["l4_scored"])
    hit = out["results"][0][0]
    assert set(hit["attributes"]) == {s.name for s in squash.open_index(s3_index).manifest.attributes}


def test_warm_second_query_reads_nothing(s3_index, small_data):
    coord, _ = _coordinator(2, 2)
    req = parse_query({"vector": small_data.queries[0].tolist(), "k": 5})
    first = coord.query("small", req)
    second = coord.query("small", req)
    assert first["stats"]["s3"]["bytes_read"] > 0
    working = _working_positions(s3_index, small_data.queries[:1], None, TreeLayout(2, 2))
    assert first["stats"]["nodes"]["cold"] == len(working)
    assert second["stats"]["s3"]["bytes_read"] == 0
    assert second["stats"]["s3"]["segments_loaded"] == 0
    assert second["stats"]["nodes"] == {
        "invoked": len(working),
        "cold": 0,
        "warm": len(working),
        "positions": working,
    }
    assert first["results"] == second["results"]


def test_chunking_keeps_payloads_small(s3_index, small_data, monkeypatch):
    import squash.runtime.coordinator as mod

    monkeypatch.setattr(mod, "PAYLOAD_BUDGET", 40_000)
    coord, _ = _coordinator(4, 1)
    q = np.repeat(small_data.queries, 4, axis=0)  # 200 queries
    out = coord.query("small", parse_query({"vectors": q.tolist(), "k": 10}))
    assert out["stats"]["chunks"] > 1
    expected = squash.open_index(s3_index).search(q, k=10)
    assert _hits(out) == _ids(expected.ids)


def test_failed_worker_is_an_error_not_fewer_results(s3_index, small_data):
    coord, tree = _coordinator(2, 2)
    tree.fail["squash-worker-4"] = 1
    with pytest.raises(UpstreamError) as err:
        coord.query("small", parse_query({"vector": small_data.queries[0].tolist()}))
    assert err.value.status == 502 and "squash-worker-4" in err.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "vector"),
        ({"vector": [1.0, 2.0], "vectors": [[1.0]]}, "vector"),
        ({"vector": ["a", "b"]}, "vector"),
        ({"vector": [[1.0]]}, "vector"),
        ({"vectors": [[1.0, 2.0], [1.0]]}, "vectors"),
        ({"vector": [float("nan")]}, "vector"),
        ({"vector": [1.0], "k": 0}, "k"),
        ({"vector": [1.0], "k": 1001}, "k"),
        ({"vector": [1.0], "k": "5"}, "k"),
        ({"vector": [1.0], "include": ["ids"]}, "include"),
        ({"vector": [1.0], "bogus": 1}, "bogus"),
        ({"vector": [1.0], "params": {"sketch_keep": 2}}, "sketch_keep"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_name_the_field(body, field):
    with pytest.raises(InputError) as err:
        parse_query(body)
    assert err.value.field == field


def test_bad_queries_against_the_index(s3_index, small_data):
    coord, _ = _coordinator(4, 1)
    with pytest.raises(InputError, match="dimension"):
        coord.query("small", parse_query({"vector": [1.0, 2.0]}))
    with pytest.raises(InputError) as err:
        coord.query("small", parse_query({"vector": small_data.queries[0].tolist(), "filter": {"nope": 1}}))
    assert "nope" in err.value.message
    with pytest.raises(squash.errors.IndexNotFoundError):
        coord.query("missing", parse_query({"vector": [1.0]}))
    with pytest.raises(InputError):
        coord.query("../etc", parse_query({"vector": [1.0]}))


def test_answer_too_large_is_413(s3_index, small_data, monkeypatch):
    import squash.runtime.coordinator as mod

    monkeypatch.setattr(mod, "MAX_PAYLOAD_BYTES", 10_000)
    coord, _ = _coordinator(4, 1)
    with pytest.raises(PayloadTooLargeError):
        coord.query("small", parse_query({"vectors": small_data.queries.tolist(), "k": 100}))


def test_coordinator_reloads_when_a_new_build_is_published(moto_s3, small_data):
    import boto3

    boto3.client("s3").create_bucket(Bucket="reload-bucket")
    uri = "s3://reload-bucket/indexes/moving"
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(partitions=8, seed=1))
    cfg = RuntimeConfig(bucket="reload-bucket", tree=TreeLayout(2, 1), manifest_check_s=0)
    coord = Coordinator(cfg, LocalTree(cfg.worker_prefix, cfg.tree.size))
    req = parse_query({"vector": small_data.queries[0].tolist(), "k": 3})
    first = coord.query("moving", req)
    assert coord.query("moving", req)["stats"]["coordinator"]["bytes_read"] == 0  # unchanged: HEAD only
    shifted = small_data.base + 1000.0  # a different index under the same name
    build_index(shifted, uri, small_data.attributes, BuildOptions(partitions=8, seed=1), replace=True)
    second = coord.query("moving", req)
    assert second["stats"]["coordinator"]["bytes_read"] > 0
    assert coord.info("moving")["build_id"] == squash.open_index(uri).manifest.build_id
    assert second["results"][0][0]["distance"] > first["results"][0][0]["distance"]


def test_cosine_index_through_the_tree(moto_s3, small_data):
    import boto3

    boto3.client("s3").create_bucket(Bucket="cosine-bucket")
    uri = "s3://cosine-bucket/indexes/cos"
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(partitions=8, metric="cosine"))
    cfg = RuntimeConfig(bucket="cosine-bucket", tree=TreeLayout(2, 1), manifest_check_s=0)
    coord = Coordinator(cfg, LocalTree(cfg.worker_prefix, cfg.tree.size))
    q = small_data.queries[:5] * 3.0  # scale must not matter for cosine
    out = coord.query("cos", parse_query({"vectors": q.tolist(), "k": 5}))
    expected = squash.open_index(uri).search(q, k=5)
    assert _hits(out) == _ids(expected.ids)
    got = [[h["distance"] for h in r] for r in out["results"]]
    np.testing.assert_allclose(got, expected.distances, rtol=1e-6)
    assert min(min(r) for r in got) >= 0.0 and max(max(r) for r in got) <= 2.0  # 1 - cos


def test_answer_that_cannot_fit_is_413_before_any_worker_runs(s3_index, small_data):
    """1,000 queries x k=1,000 over 3,000 rows: at least 10^6 hits, over 6 MB whatever the
    ids and distances — refused from the request's shape, not after searching."""
    coord, tree = _coordinator(4, 1)
    q = np.repeat(small_data.queries[:1], 1000, axis=0)
    with pytest.raises(PayloadTooLargeError, match="at least") as err:
        coord.query("small", parse_query({"vectors": q.tolist(), "k": 1000}))
    assert tree.calls == [] and err.value.field == "vectors"
    # Without distances each hit is smaller, but 10^6 of them still cannot fit.
    with pytest.raises(PayloadTooLargeError):
        coord.query("small", parse_query({"vectors": q.tolist(), "k": 1000, "include": []}))
    assert tree.calls == []
    # A filter that surely matches few rows bounds the answer: it is searched, not refused.
    out = coord.query(
        "small", parse_query({"vectors": q[:50].tolist(), "k": 1000, "filter": {"price": {"$lt": 1}}})
    )
    assert tree.calls and len(out["results"]) == 50


def test_a_filter_no_row_matches_invokes_nothing(s3_index, small_data):
    coord, tree = _coordinator(2, 1)
    body = {"vectors": small_data.queries[:3].tolist(), "k": 5, "filter": {"price": {"$lt": -1e9}}}
    out = coord.query("small", parse_query(body))
    assert out["results"] == [[], [], []]
    assert out["stats"]["nodes"]["invoked"] == 0 and tree.calls == []
    binary = coord.query("small", parse_query(body | {"encoding": "binary"}))
    assert binary["stats"]["nodes"]["invoked"] == 0


def test_warm_loads_every_positions_segments_and_the_next_query_reads_nothing(s3_index, small_data):
    coord, tree = _coordinator(2, 1)
    out = coord.warm("small")
    n_segments = len(squash.open_index(s3_index).manifest.segments)
    assert out["nodes"] == 3 and out["cold"] == 3 and len(tree.calls) == 3
    assert out["s3"]["segments_loaded"] == n_segments and out["s3"]["bytes_read"] > 0
    again = coord.warm("small")
    assert again["cold"] == 0
    assert again["s3"] == {"segments_loaded": 0, "cache_hits": n_segments, "bytes_read": 0}
    first = coord.query("small", parse_query({"vectors": small_data.queries[:5].tolist(), "k": 10}))
    assert first["stats"]["s3"]["bytes_read"] == 0 and first["stats"]["nodes"]["cold"] == 0


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_a_small_index_is_served_by_the_coordinator_alone(s3_index, small_data, encoding):
    """Hot tier within local_max_bytes: no worker invoked, the same answer as in-process
    (ids, distances, attributes), and the second query reads nothing."""
    cfg = RuntimeConfig(
        bucket="rt-bucket", tree=TreeLayout(2, 1), manifest_check_s=0, local_max_bytes=1 << 30
    )
    tree = LocalTree(cfg.worker_prefix, cfg.tree.size)
    coord = Coordinator(cfg, tree)
    q = small_data.queries[:8]
    filt = {"price": {"$lt": 60}}
    body = {"vectors": q.tolist(), "k": 10, "filter": filt, "include": ["distance", "attributes"]}
    body["encoding"] = encoding
    out = coord.query("small", parse_query(body))
    again = coord.query("small", parse_query(body))
    expected = squash.open_index(s3_index).search(q, k=10, filter=filt, include=["attributes"])
    assert tree.calls == [] and out["stats"]["nodes"]["invoked"] == 0
    if encoding == "json":
        assert _hits(out) == _ids(expected.ids)
        got_attrs = [[h["attributes"] for h in row] for row in out["results"]]
    else:
        from squash.client import unpack

        np.testing.assert_array_equal(unpack(out["ids"], "ids"), expected.ids)
        np.testing.assert_allclose(unpack(out["distances"], "d"), expected.distances, rtol=1e-6)
        got_attrs = out["attributes"]
    assert got_attrs == expected.attributes
    assert again["stats"]["s3"]["bytes_read"] == 0 and again["stats"]["coordinator"]["bytes_read"] == 0
