"""Hostile but fair input to the coordinator handler: 400 with the documented error body,
naming the field — never a 5xx, a traceback or a wrong answer returned as success."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_error, post


def test_huge_query_in_a_batch_is_a_400_for_the_whole_batch(coordinator_app, runtime_indexes):
    good = runtime_indexes.queries[0].tolist()
    huge = [1e19] * len(good)
    status, body = post(coordinator_app, "sample", {"vectors": [good, huge], "k": 3})
    err = assert_error(status, body, 400, "vectors")
    assert "query 1" in err["message"] and "too large" in err["message"]
    one = [0.0] * len(good)
    one[3] = 1e20
    status, body = post(coordinator_app, "sample", {"vector": one, "k": 3})
    assert_error(status, body, 400, "vector")


def test_good_batch_still_answers(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[:2]
    status, body = post(coordinator_app, "sample", {"vectors": q.tolist(), "k": 3})
    assert status == 200 and [len(r) for r in body["results"]] == [3, 3]
    assert np.isfinite([h["distance"] for r in body["results"] for h in r]).all()


def test_int64_filters_through_the_tree_are_exact(coordinator_app, runtime_indexes):
    """$in/$gt/$nin/... on int64 values near 2^62 and at the int64 edges, over HTTP."""
    from conftest import ints_table

    values = ints_table(runtime_indexes.base.shape[0]).column("big").to_pylist()
    q = runtime_indexes.queries[0].tolist()
    cases = {
        "in": ({"$in": [2**62 + 1, 2**63 - 1]}, lambda v: v in (2**62 + 1, 2**63 - 1)),
        "gt": ({"$gt": 2**62 + 1}, lambda v: v > 2**62 + 1),
        "gte": ({"$gte": 2**62 + 2}, lambda v: v >= 2**62 + 2),
        "lt": ({"$lt": -(2**63) + 1}, lambda v: v < -(2**63) + 1),
        "lte": ({"$lte": 2**62 - 1}, lambda v: v <= 2**62 - 1),
        "ne": ({"$ne": 2**62}, lambda v: v != 2**62),
        "nin": ({"$nin": [2**62, 2**62 + 1, 2**62 + 2]}, lambda v: v not in (2**62, 2**62 + 1, 2**62 + 2)),
        "eq": ({"$eq": 2**62 + 3}, lambda v: v == 2**62 + 3),
        "eq-2^63": ({"$eq": 2**63}, lambda v: False),
        "lt-2^63": ({"$lt": 2**63}, lambda v: True),
    }
    for name, (cond, pred) in cases.items():
        want = {i for i, v in enumerate(values) if pred(v)}
        body = {"vector": q, "k": 1000, "filter": {"big": cond}, "include": ["attributes"]}
        body["params"] = {"min_candidates": len(values)}
        status, out = post(coordinator_app, "ints", body)
        assert status == 200, (name, out)
        hits = out["results"][0]
        assert {h["id"] for h in hits} <= want, name
        assert len(hits) == min(1000, len(want)), name
        assert all(pred(h["attributes"]["big"]) for h in hits), name


def test_cosine_zero_query_is_a_400(coordinator_app, runtime_indexes):
    d = runtime_indexes.base.shape[1]
    status, body = post(coordinator_app, "cos", {"vector": [0.0] * d, "k": 3})
    assert_error(status, body, 400, "vector")
    good = runtime_indexes.queries[0].tolist()
    status, body = post(coordinator_app, "cos", {"vectors": [good, [0] * d], "k": 3})
    err = assert_error(status, body, 400, "vectors")
    assert "query 1" in err["message"]
    status, body = post(coordinator_app, "cos", {"vectors": [good], "k": 3})
    assert status == 200 and len(body["results"][0]) == 3


def _raw_query(runtime_indexes, extra: str) -> str:
    """A query body as JSON text, with ``extra`` (raw JSON members) appended."""
    q = json.dumps(runtime_indexes.queries[0].tolist())
    k = "" if extra.startswith('"k"') else ', "k": 3'
    return '{"vector": ' + q + k + (", " + extra if extra else "") + "}"


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400", "1" + "0" * 400])
@pytest.mark.parametrize("key", ["routing_factor", "min_candidates", "sketch_keep", "rerank_factor"])
def test_non_finite_or_huge_params_are_a_400_naming_the_key(coordinator_app, runtime_indexes, literal, key):
    body = _raw_query(runtime_indexes, f'"params": {{"{key}": {literal}}}')
    status, out = post(coordinator_app, "sample", body, raw=True)
    err = assert_error(status, out, 400, key)
    assert key in err["message"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"filter": {"price": {"$lt": Infinity}}', "filter"),
        ('"filter": {"price": {"$in": [1, NaN]}}', "filter"),
        ('"filter": {"price": 1e400}', "filter"),
        ('"k": NaN', "k"),
        ('"include": [Infinity]', "include"),
    ],
)
def test_non_finite_numbers_anywhere_in_the_body_are_a_400(coordinator_app, runtime_indexes, extra, field):
    status, out = post(coordinator_app, "sample", _raw_query(runtime_indexes, extra), raw=True)
    assert_error(status, out, 400, field)


def test_direct_invocation_with_non_finite_params_is_a_400(coordinator_app, runtime_indexes):
    from conftest import Context

    event = {"index": "sample", "vector": runtime_indexes.queries[0].tolist(), "k": 3}
    for value in (float("inf"), float("nan"), 10**400):
        out = coordinator_app.handler(event | {"params": {"routing_factor": value}}, Context())
        assert out["status"] == 400 and out["error"]["field"] == "routing_factor", out


@pytest.mark.parametrize(
    "extra",
    [
        '"filter": {"price": 1' + "0" * 400 + "}",
        '"filter": {"price": {"$in": [3, 1' + "0" * 400 + "]}}",
        '"filter": {"$or": [{"price": {"$gt": -1' + "0" * 400 + "}}]}",
        '"filter": {"price": 1' + "0" * 5000 + "}",
    ],
)
def test_filter_integers_beyond_float64_are_a_400(coordinator_app, runtime_indexes, extra):
    status, out = post(coordinator_app, "sample", _raw_query(runtime_indexes, extra), raw=True)
    assert status == 400 and out["error"]["field"] in ("filter", "body"), out


def test_filter_integers_beyond_float64_direct_invocation(coordinator_app, runtime_indexes):
    from conftest import Context

    event = {"index": "sample", "vector": runtime_indexes.queries[0].tolist(), "k": 3}
    out = coordinator_app.handler(event | {"filter": {"price": {"$in": [10**400]}}}, Context())
    assert out["status"] == 400 and out["error"]["field"] == "filter", out


def _deep_filter(depth: int) -> dict:
    doc: dict = {"price": {"$lt": 50}}
    for _ in range(depth):
        doc = {"$and": [doc]}
    return doc


@pytest.mark.parametrize("text", ["[" * 100_000, '{"vector": ' + "[" * 100_000, "{" * 50_000])
def test_deeply_nested_bodies_are_a_400(coordinator_app, text):
    status, out = post(coordinator_app, "sample", text, raw=True)
    err = assert_error(status, out, 400, "body")
    assert "nested deeper than" in err["message"]


@pytest.mark.parametrize("depth", [33, 1_000, 10_000])
def test_deeply_nested_filters_are_a_400(coordinator_app, runtime_indexes, depth):
    body = {"vector": runtime_indexes.queries[0].tolist(), "k": 3}
    text = json.dumps(body)[:-1] + ', "filter": ' + '{"$and": [' * depth + '{"price": 1}' + "]}" * depth + "}"
    status, out = post(coordinator_app, "sample", text, raw=True)
    err = assert_error(status, out, 400)
    assert err["field"] in ("filter", "body") and "nested" in err["message"]


def test_filter_at_the_depth_limit_answers(coordinator_app, runtime_indexes):
    body = {"vector": runtime_indexes.queries[0].tolist(), "k": 3, "filter": _deep_filter(32)}
    status, out = post(coordinator_app, "sample", body)
    assert status == 200 and len(out["results"][0]) == 3


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_filter_by_direct_invocation_is_a_400(coordinator_app, runtime_indexes, depth):
    from conftest import Context

    event = {"index": "sample", "vector": runtime_indexes.queries[0].tolist(), "filter": _deep_filter(depth)}
    out = coordinator_app.handler(event, Context())
    assert out["status"] == 400 and out["error"]["field"] == "filter", out


def test_too_many_terms_and_in_values_are_a_400(coordinator_app, runtime_indexes):
    base = {"vector": runtime_indexes.queries[0].tolist(), "k": 3}
    status, out = post(
        coordinator_app, "sample", base | {"filter": {"$or": [{"price": i} for i in range(1025)]}}
    )
    assert_error(status, out, 400, "filter")
    status, out = post(coordinator_app, "sample", base | {"filter": {"price": {"$in": list(range(10_001))}}})
    assert_error(status, out, 400, "filter")
    status, out = post(coordinator_app, "sample", base | {"filter": {"price": {"$nin": list(range(10_000))}}})
    assert status == 200


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/json", "text/plain"])
@pytest.mark.parametrize("raw", [b"\xff\xfe{", b'{"vector": [1, 2], "filter": {"label": "\xe9"}}', b"\x80"])
def test_non_utf8_body_is_a_400(coordinator_app, raw, content_type):
    """API Gateway hands a body that is not UTF-8 text over base64-encoded."""
    from conftest import Context, http_event

    event = http_event("POST", "/indexes/sample/query", raw, b64=True)
    event["headers"]["content-type"] = content_type
    resp = coordinator_app.handler(event, Context())
    err = assert_error(resp["statusCode"], json.loads(resp["body"]), 400, "body")
    assert "UTF-8" in err["message"]


def test_utf8_body_sent_base64_answers(coordinator_app, runtime_indexes):
    body = json.dumps({"vector": runtime_indexes.queries[0].tolist(), "k": 2}).encode()
    status, out = post(coordinator_app, "sample", body, raw=True, b64=True)
    assert status == 200 and len(out["results"][0]) == 2


def test_bad_base64_body_is_a_400(coordinator_app):
    from conftest import Context, http_event

    event = http_event("POST", "/indexes/sample/query", None)
    event["body"], event["isBase64Encoded"] = "%%%not base64", True
    resp = coordinator_app.handler(event, Context())
    assert_error(resp["statusCode"], json.loads(resp["body"]), 400, "body")


@pytest.mark.parametrize(
    "text",
    [
        '{"vector": [1], "vector": [2]}',
        '{"vector": [1], "k": 3, "k": 4}',
        '{"vector": [1], "filter": {"price": {"$lt": 3, "$lt": 5}}}',
        '{"vector": [1], "params": {"sketch_keep": 0.5, "sketch_keep": 0.6}}',
    ],
)
def test_duplicate_json_keys_are_a_400(coordinator_app, text):
    status, out = post(coordinator_app, "sample", text, raw=True)
    err = assert_error(status, out, 400, "body")
    assert "twice" in err["message"]


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ("1e39", "vector", "too large for float32"),
        (str(2**64), "vector", "too large"),
        ("1" + "0" * 400, "vector", "too large"),
        ("-1e39", "vectors", "too large for float32"),
    ],
)
def test_query_values_beyond_float32_say_too_large(coordinator_app, runtime_indexes, value, field, words):
    d = runtime_indexes.base.shape[1]
    row = "[" + ", ".join(["0.5"] * (d - 1) + [value]) + "]"
    text = f'{{"{field}": {row if field == "vector" else "[" + row + "]"}, "k": 2}}'
    status, out = post(coordinator_app, "sample", text, raw=True)
    err = assert_error(status, out, 400, field)
    assert words in err["message"] and "NaN" not in err["message"], err
