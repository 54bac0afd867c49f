"""metric="dot" through the coordinator and the worker tree (in-process), and over HTTP:
hits carry ``"score"`` (the inner product, larger is better) where l2/cosine carry
``"distance"``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BUCKET, Context, assert_error, http_event, post
from local_tree import LocalTree

import squash
from squash.build import BuildOptions, build_index
from squash.runtime.config import RuntimeConfig
from squash.runtime.coordinator import Coordinator
from squash.runtime.requests import parse_query
from squash.runtime.tree import TreeLayout


@pytest.fixture(scope="module")
def dot_tree_index(moto_s3, small_data):
    import boto3

    boto3.client("s3").create_bucket(Bucket="dot-bucket")
    uri = "s3://dot-bucket/indexes/dot"
    build_index(
        small_data.base, uri, small_data.attributes, BuildOptions(metric="dot", partitions=16, seed=2)
    )
    return uri


def _coordinator(b: int, depth: int) -> Coordinator:
    cfg = RuntimeConfig(bucket="dot-bucket", tree=TreeLayout(b, depth), manifest_check_s=0)
    return Coordinator(cfg, LocalTree(cfg.worker_prefix, cfg.tree.size))


@pytest.mark.parametrize(("b", "depth"), [(2, 2), (4, 1)])
@pytest.mark.parametrize("filt", [None, {"label": {"$in": ["c01", "c03"]}, "in_stock": True}])
@pytest.mark.parametrize("params", [{}, {"target_recall": 1.0}])
def test_tree_equals_in_process_with_scores(dot_tree_index, small_data, b, depth, filt, params):
    coord = _coordinator(b, depth)
    q = small_data.queries[:20] * 0.5  # a query's length scales its scores, not its ranking
    body = {"vectors": q.tolist(), "k": 10, "params": params} | ({"filter": filt} if filt else {})
    out = coord.query("dot", parse_query(body))
    expected = squash.open_index(dot_tree_index).search(
        q, k=10, filter=filt, params=squash.SearchParams(**params)
    )
    assert [[h["id"] for h in row] for row in out["results"]] == [
        [i for i in r if i >= 0] for r in expected.ids
    ]
    assert all(set(h) == {"id", "score"} for row in out["results"] for h in row)  # no "distance"
    got = [h["score"] for row in out["results"] for h in row]
    np.testing.assert_allclose(got, expected.scores[expected.ids >= 0], rtol=1e-6)
    if params:  # exact: the scores are the inner products
        ids = expected.ids[expected.ids >= 0]
        rows = np.repeat(np.arange(q.shape[0]), (expected.ids >= 0).sum(axis=1))
        ip = np.einsum("ij,ij->i", q[rows].astype(np.float64), small_data.base[ids].astype(np.float64))
        np.testing.assert_allclose(got, ip, rtol=1e-4, atol=1e-2)


def test_http_dot_query_has_scores_sorted_descending(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries
    body = {"vectors": q.tolist(), "k": 7, "params": {"target_recall": 1.0}}
    status, out = post(coordinator_app, "dot", body)
    assert status == 200, out
    base = runtime_indexes.base.astype(np.float64)
    truth = np.argsort(-(q.astype(np.float64) @ base.T), axis=1, kind="stable")[:, :7]
    for qi, hits in enumerate(out["results"]):
        assert len(hits) == 7 and all(set(h) == {"id", "score"} for h in hits)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert [h["id"] for h in hits] == truth[qi].tolist()
        np.testing.assert_allclose(scores, base[truth[qi]] @ q[qi].astype(np.float64), rtol=1e-4, atol=1e-2)
    status, out = post(coordinator_app, "dot", {"vector": [0.0] * q.shape[1], "k": 3})  # fine for dot
    assert status == 200 and len(out["results"][0]) == 3
    status, out = post(
        coordinator_app, "dot", {"vector": q[0].tolist(), "k": 3, "include": ["score", "attributes"]}
    )
    assert status == 200 and all(set(h) == {"id", "score", "attributes"} for h in out["results"][0])
    status, out = post(coordinator_app, "dot", {"vector": q[0].tolist(), "k": 3, "include": []})
    assert status == 200 and all(set(h) == {"id"} for h in out["results"][0])


def test_http_score_for_l2_is_minus_the_distance(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[0].tolist()
    status, out = post(coordinator_app, "sample", {"vector": q, "k": 5, "include": ["distance", "score"]})
    assert status == 200
    for hit in out["results"][0]:
        assert set(hit) == {"id", "distance", "score"} and hit["score"] == -hit["distance"]


def test_http_bad_include_is_a_400_naming_it(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[0].tolist()
    status, out = post(coordinator_app, "dot", {"vector": q, "k": 5, "include": ["inner_product"]})
    err = assert_error(status, out, 400, "include")
    assert "score" in err["message"]


def test_http_info_shows_metric_dot(coordinator_app, runtime_indexes):
    resp = coordinator_app.handler(http_event("GET", "/indexes/dot"), Context())
    body = json.loads(resp["body"])
    assert (
        resp["statusCode"] == 200
        and body["metric"] == "dot"
        and body["dims"] == runtime_indexes.base.shape[1]
    )
    assert squash.open_index(f"s3://{BUCKET}/indexes/dot").manifest.space_dims == body["dims"] + 1
