"""The HTTP API's user side (issue #13): packed-array vectors in, binary answers out, GET
/indexes, the OpenAPI document (committed file = served file, a valid spec), Swagger UI
behind its switch, and pydantic's validation errors in the documented 400 shape."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import BUCKET, Context, assert_error, http_event, lambda_modules, post

from squash.build import BuildOptions, build_index

ROOT = Path(__file__).resolve().parents[2]


def packed(arr: np.ndarray, dtype: str = "float32") -> dict:
    arr = np.ascontiguousarray(arr, dtype=dtype)
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def unpacked(obj: dict) -> np.ndarray:
    """A packed answer array, decoded the way a client would (no squash code)."""
    assert set(obj) == {"dtype", "shape", "data"}, obj
    dtype = {"int64": "<i8", "float32": "<f4"}[obj["dtype"]]
    return np.frombuffer(base64.b64decode(obj["data"], validate=True), dtype).reshape(obj["shape"])


def _get(app, path: str) -> tuple[int, dict | str, dict]:
    resp = app.handler(http_event("GET", path), Context())
    body = resp["body"]
    is_json = resp.get("headers", {}).get("Content-Type", "").startswith("application/json")
    return resp["statusCode"], json.loads(body) if is_json else body, resp.get("headers", {})


# --- packed vectors in ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["vector", "vectors"])
def test_packed_vectors_answer_as_json_lists_do(coordinator_app, runtime_indexes, field):
    q = runtime_indexes.queries[:3] if field == "vectors" else runtime_indexes.queries[0]
    body = {"k": 5, "include": ["distance", "attributes"], "filter": {"price": {"$lt": 60}}}
    status, want = post(coordinator_app, "sample", body | {field: q.tolist()})
    assert status == 200
    status, got = post(coordinator_app, "sample", body | {field: packed(q)})
    assert status == 200 and got["results"] == want["results"]


def test_packed_single_vector_may_be_one_row(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[:1]
    status, out = post(coordinator_app, "sample", {"vector": packed(q), "k": 2})
    assert status == 200 and len(out["results"]) == 1
    status, out = post(coordinator_app, "sample", {"vector": packed(runtime_indexes.queries[:2]), "k": 2})
    assert_error(status, out, 400, "vector")


def _bad_packed(d: int) -> list[tuple[dict, str]]:
    good = packed(np.ones((2, d), np.float32))
    nan = np.ones((2, d), np.float32)
    nan[1, 3] = np.nan
    return [
        (good | {"dtype": "float64"}, "dtype"),
        (good | {"dtype": "<f4"}, "dtype"),
        (good | {"shape": [2, d + 1]}, "bytes"),
        (good | {"shape": [3, d]}, "bytes"),
        (good | {"shape": [2 * d]}, "shape"),
        (good | {"shape": [-2, -d]}, "shape"),
        (good | {"shape": [2.0, d]}, "shape"),
        (good | {"shape": [True, d]}, "shape"),
        (good | {"shape": "2,16"}, "shape"),
        (good | {"data": good["data"][:-4] + "!!!!"}, "base64"),
        (good | {"data": good["data"].replace("A", "-")}, "base64"),
        (good | {"data": 7}, "base64"),
        ({k: v for k, v in good.items() if k != "data"}, "packed array"),
        (good | {"zlib": True}, "packed array"),
        (packed(nan), "NaN"),
        (packed(np.full((1, d), np.inf, np.float32)), "NaN"),
        (packed(np.full((1, d), 1e19, np.float32)), "too large"),
        (packed(np.zeros((0, d), np.float32)), "packed array of shape"),
        (packed(np.zeros((2, 0), np.float32)), "packed array of shape"),
    ]


@pytest.mark.parametrize("case", range(19))
def test_bad_packed_vectors_are_a_400_naming_the_field(coordinator_app, runtime_indexes, case):
    value, says = _bad_packed(runtime_indexes.base.shape[1])[case]
    status, out = post(coordinator_app, "sample", {"vectors": value, "k": 3})
    err = assert_error(status, out, 400, "vectors")
    assert says in err["message"], err


def test_packed_vector_of_the_wrong_dimension_is_a_400(coordinator_app):
    status, out = post(coordinator_app, "sample", {"vector": packed(np.ones(5, np.float32))})
    err = assert_error(status, out, 400, "vector")
    assert "dimension" in err["message"]


def test_direct_invocation_takes_packed_vectors_and_binary(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[:2]
    event = {"index": "sample", "vectors": packed(q), "k": 4, "encoding": "binary"}
    out = coordinator_app.handler(event, Context())
    assert unpacked(out["ids"]).shape == (2, 4)
    out = coordinator_app.handler(event | {"vectors": packed(q) | {"dtype": "int8"}}, Context())
    assert out["status"] == 400 and out["error"]["field"] == "vectors"
    out = coordinator_app.handler(event | {"encoding": "msgpack"}, Context())
    assert out["status"] == 400 and out["error"]["field"] == "encoding"


# --- binary answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("include", [["distance"], ["score"], [], ["distance", "score", "attributes"]])
@pytest.mark.parametrize("index", ["sample", "dot"])
def test_binary_answer_holds_what_the_json_answer_holds(coordinator_app, runtime_indexes, include, index):
    q = runtime_indexes.queries[:4]
    body = {"vectors": packed(q), "k": 7, "include": include}
    status, want = post(coordinator_app, index, body)
    assert status == 200
    status, got = post(coordinator_app, index, body | {"encoding": "binary"})
    assert status == 200 and set(got) <= {"ids", "distances", "scores", "attributes", "stats"}
    ids = unpacked(got["ids"])
    assert ids.dtype == np.int64 and ids.shape == (4, 7)
    assert ids.tolist() == [[h["id"] for h in row] for row in want["results"]]
    for column, plural in (("distance", "distances"), ("score", "scores")):
        if column not in want["results"][0][0]:
            assert plural not in got
            continue
        hits = [[h[column] for h in row] for row in want["results"]]
        values = unpacked(got[plural])
        assert values.dtype == np.float32 and values.shape == (4, 7)
        np.testing.assert_array_equal(values, np.array(hits, np.float32))
    if "attributes" in include:
        assert got["attributes"] == [[h["attributes"] for h in row] for row in want["results"]]
    else:
        assert "attributes" not in got
    assert got["stats"]["queries"] == 4


def test_binary_answer_pads_short_results(coordinator_app, runtime_indexes):
    """A filter matching fewer than k rows: ids -1, distances +inf, attributes left out."""
    q = runtime_indexes.queries[:2]
    body = {
        "vectors": q.tolist(),
        "k": 50,
        "filter": {"price": {"$lt": 1}},
        "include": ["distance", "attributes"],
    }
    status, want = post(coordinator_app, "sample", body)
    assert status == 200
    n = [len(row) for row in want["results"]]
    assert all(0 < m < 50 for m in n), n
    status, got = post(coordinator_app, "sample", body | {"encoding": "binary"})
    ids, dist = unpacked(got["ids"]), unpacked(got["distances"])
    for row, m in enumerate(n):
        assert (ids[row, m:] == -1).all() and (ids[row, :m] >= 0).all()
        assert np.isposinf(dist[row, m:]).all() and np.isfinite(dist[row, :m]).all()
        assert len(got["attributes"][row]) == m


# --- routes, OpenAPI, Swagger ------------------------------------------------------------------


def test_list_indexes_names_every_index_of_the_prefix(coordinator_app, runtime_indexes):
    post(coordinator_app, "sample", {"vector": runtime_indexes.queries[0].tolist()})  # warm "sample"
    status, out, _ = _get(coordinator_app, "/indexes")
    assert status == 200
    names = [e["name"] for e in out["indexes"]]
    assert {"sample", "ints", "cos", "dot"} <= set(names) and names == sorted(names)
    sample = next(e for e in out["indexes"] if e["name"] == "sample")
    assert sample["warm"] and sample["n"] == 2000 and sample["dims"] == 16 and sample["metric"] == "l2"


def test_unknown_route_is_not_found_naming_the_path(coordinator_app):
    for method, path in (("GET", "/nowhere"), ("DELETE", "/indexes/sample"), ("POST", "/indexes")):
        resp = coordinator_app.handler(http_event(method, path, "{}"), Context())
        err = assert_error(resp["statusCode"], json.loads(resp["body"]), 404, "path")
        assert err["code"] == "not_found" and path in err["message"]


def test_served_openapi_equals_the_committed_file_and_is_valid(coordinator_app):
    from openapi_spec_validator import validate

    status, doc, _ = _get(coordinator_app, "/openapi.json")
    assert status == 200
    committed = (ROOT / "functions" / "coordinator" / "openapi.json").read_text()
    assert doc == json.loads(committed), "stale: run make openapi"
    assert coordinator_app.openapi_text() == committed
    validate(doc)
    paths = doc["paths"]
    assert {"/indexes", "/indexes/{index}", "/indexes/{index}/query", "/health"} <= set(paths)
    assert not any("422" in op["responses"] for item in paths.values() for op in item.values())
    query = doc["components"]["schemas"]["QueryBody"]
    assert query["additionalProperties"] is False and "encoding" in query["properties"]


def test_swagger_ui_only_when_enabled(coordinator_app, runtime_indexes, monkeypatch):
    status, out, _ = _get(coordinator_app, "/swagger")
    assert status == 404 and out["error"]["code"] == "not_found"
    monkeypatch.setenv("SQUASH_SWAGGER_UI", "true")
    with lambda_modules(BUCKET, "squash-coordinator", "coordinator") as (app,):
        resp = app.handler(http_event("GET", "/swagger"), Context())
        assert resp["statusCode"] == 200 and "swagger" in resp["body"].lower()
        status, doc, _ = _get(app, "/openapi.json")
        assert status == 200 and "/swagger" not in doc["paths"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"encoding": "xml"}, "encoding"),
        ({"encoding": 1}, "encoding"),
        ({"params": {"plan": 3}}, "plan"),
        ({"params": {"target_recall": 2}}, "target_recall"),
        ({"params": [1]}, "params"),
        ({"k": 3.5}, "k"),
        ({"include": "distance"}, "include"),
    ],
)
def test_validation_errors_name_the_key(coordinator_app, runtime_indexes, body, field):
    status, out = post(coordinator_app, "sample", {"vector": runtime_indexes.queries[0].tolist()} | body)
    err = assert_error(status, out, 400, field)
    assert err["code"] == "invalid_input"


def test_any_content_type_is_read_as_json(coordinator_app, runtime_indexes):
    event = http_event(
        "POST", "/indexes/sample/query", json.dumps({"vector": runtime_indexes.queries[0].tolist()})
    )
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        if content_type is None:
            event["headers"].pop("content-type", None)
        else:
            event["headers"]["content-type"] = content_type
        resp = coordinator_app.handler(event, Context())
        assert resp["statusCode"] == 200, resp["body"]


# --- packed upserts ---------------------------------------------------------------------------


@pytest.fixture
def writable(coordinator_app, runtime_indexes, monkeypatch):
    build_index(
        runtime_indexes.base[:400], f"s3://{BUCKET}/indexes/packed-up", None, BuildOptions(partitions=4)
    )
    coordinator = coordinator_app.COORDINATOR
    monkeypatch.setattr(coordinator, "config", dataclasses.replace(coordinator.config, writes_enabled=True))
    return coordinator_app


def _upsert(app, body: dict) -> tuple[int, dict]:
    resp = app.handler(http_event("POST", "/indexes/packed-up/upsert", json.dumps(body)), Context())
    return resp["statusCode"], json.loads(resp["body"])


def test_upsert_takes_packed_vectors(writable, runtime_indexes):
    rows = runtime_indexes.base[400:403]
    status, out = _upsert(writable, {"ids": [9001, 9002, 9003], "vectors": packed(rows)})
    assert status == 200 and out["upserted"] == 3, out
    status, hits = post(writable, "packed-up", {"vectors": packed(rows), "k": 1})
    assert [row[0]["id"] for row in hits["results"]] == [9001, 9002, 9003]
    status, out = _upsert(writable, {"ids": [1], "vectors": packed(rows[:1]) | {"dtype": "float16"}})
    assert_error(status, out, 400, "vectors")
    nan = rows[:1].copy()
    nan[0, 0] = np.nan
    status, out = _upsert(writable, {"ids": [1], "vectors": packed(nan)})
    assert_error(status, out, 400, "vectors")
