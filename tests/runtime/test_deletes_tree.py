"""Deletes through HTTP -> coordinator -> worker tree (moto S3): the tree gets each visited
partition's deleted rows in its event and never returns a deleted id; answers equal the
in-process search of the same version."""

from __future__ import annotations

import dataclasses
import json

import datamodel
import numpy as np
import pytest
from conftest import BUCKET, Context, assert_error, http_event, post

import squash
from squash.build import BuildOptions, build_index
from squash.params import SearchParams


@pytest.fixture(scope="module")
def deleted_index(runtime_indexes):
    base, queries, table = datamodel.dataset()
    uri = f"s3://{BUCKET}/indexes/del"
    build_index(base, uri, table, BuildOptions(partitions=24, seed=2))
    index = squash.open_index(uri)
    victims = np.unique(index.search(queries[:12], k=10).ids[:, :4])
    index.delete(ids=victims.tolist())
    index.delete(filter={"label": "a"})
    return index, queries[:12], victims


@pytest.mark.parametrize("filt", [None, {"label": {"$in": ["a", "b"]}}, {"tags": {"$in": ["t090", "t095"]}}])
@pytest.mark.parametrize("params", [{}, {"target_recall": 1.0}])
def test_tree_never_returns_deleted_ids(coordinator_app, deleted_index, filt, params):
    index, q, victims = deleted_index
    body = {"vectors": q.tolist(), "k": 10, "params": params, "include": ["attributes"]}
    if filt:
        body["filter"] = filt
    status, out = post(coordinator_app, "del", body)
    assert status == 200, out
    got = [[h["id"] for h in row] for row in out["results"]]
    assert not set(victims.tolist()) & {i for row in got for i in row}
    assert all(h["attributes"]["label"] != "a" for row in out["results"] for h in row)
    expected = index.search(q, k=10, filter=filt, params=SearchParams.from_dict(params))
    assert got == [[i for i in row if i >= 0] for row in expected.ids.tolist()]


def test_index_info_shows_the_version_and_deleted_count(coordinator_app, deleted_index):
    index, _, _ = deleted_index
    resp = coordinator_app.handler(http_event("GET", "/indexes/del"), Context())
    info = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and info["version"] == 2
    assert info["deleted"] == int(index.deleted.sum()) > 0


def _delete(app, index: str, body) -> tuple[int, dict]:
    resp = app.handler(http_event("POST", f"/indexes/{index}/delete", json.dumps(body)), Context())
    return resp["statusCode"], json.loads(resp["body"])


@pytest.fixture
def writable(coordinator_app, monkeypatch):
    coordinator = coordinator_app.COORDINATOR
    monkeypatch.setattr(coordinator, "config", dataclasses.replace(coordinator.config, writes_enabled=True))
    return coordinator_app


def test_http_delete_is_403_unless_writes_are_enabled(coordinator_app, deleted_index):
    status, out = _delete(coordinator_app, "del", {"ids": [7]})
    err = assert_error(status, out, 403)
    assert err["code"] == "writes_disabled" and "EnableWrites" in err["message"]


def test_http_delete_then_query_reads_the_write(writable, runtime_indexes):
    base, queries, table = datamodel.dataset()
    build_index(base, f"s3://{BUCKET}/indexes/del2", table, BuildOptions(partitions=12, seed=1))
    q = queries[:5].tolist()
    status, out = post(writable, "del2", {"vectors": q, "k": 5})
    assert status == 200, out
    first = sorted({h["id"] for row in out["results"] for h in row})
    status, out = _delete(writable, "del2", {"ids": first})
    assert status == 200 and out == {
        "index": "del2", "version": 1, "deleted": len(first), "not_found": 0, "attempts": 1,
    }  # fmt: skip
    status, out = post(writable, "del2", {"vectors": q, "k": 5})  # the same container: no staleness
    assert status == 200 and not set(first) & {h["id"] for row in out["results"] for h in row}
    status, out = _delete(writable, "del2", {"filter": {"label": "a"}})
    assert status == 200 and out["version"] == 2 and out["deleted"] > 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"ids": [7], "filter": {"label": "a"}}, 400, "ids"),
        ({"ids": "7"}, 400, "ids"),
        ({"idz": [7]}, 400, "idz"),
        ({"filter": {"label": "never"}}, 400, "filter"),
        ({"filter": {"nope": 1}}, 400, "filter"),
    ],
)
def test_bad_http_deletes_are_4xx_and_write_nothing(writable, deleted_index, body, status, field):
    index, _, _ = deleted_index
    before = index.storage.read("manifest.json")
    got, out = _delete(writable, "del", body)
    assert_error(got, out, status, field)
    assert index.storage.read("manifest.json") == before


def test_http_delete_of_a_missing_index_is_404(writable):
    status, out = _delete(writable, "no-such-index", {"ids": [1]})
    assert_error(status, out, 404, "index")


def test_tree_serves_upserted_rows_like_in_process(coordinator_app, runtime_indexes):
    """Delta partitions travel the tree like partitions: new and replaced rows are found,
    replaced ones only in their new form, with their new attributes."""
    base, queries, table = datamodel.dataset()
    uri = f"s3://{BUCKET}/indexes/ups"
    build_index(base, uri, table, BuildOptions(partitions=12, seed=1))
    index = squash.open_index(uri)
    q = queries[:8]
    replaced = index.search(q, k=1).ids[:, 0]
    index.upsert(replaced, q + 0.5, {"label": ["moved"] * replaced.size, "tags": [["fresh"]] * replaced.size})
    index.upsert(np.arange(90_000, 90_008), q + 0.01, {"label": ["new"] * 8})
    for filt in (None, {"label": {"$in": ["moved", "new"]}}, {"tags": "fresh"}):
        body = {"vectors": q.tolist(), "k": 5, "include": ["attributes"]} | ({"filter": filt} if filt else {})
        status, out = post(coordinator_app, "ups", body)
        assert status == 200, out
        expected = index.search(q, k=5, filter=filt)
        assert [[h["id"] for h in row] for row in out["results"]] == [
            [i for i in row if i >= 0] for row in expected.ids.tolist()
        ]
        for hit in (h for row in out["results"] for h in row):
            if hit["id"] in replaced:
                assert hit["attributes"]["label"] == "moved" and hit["attributes"]["tags"] == ["fresh"]
    assert [row[0]["id"] for row in out["results"]] == replaced.tolist()  # tags=fresh: the moved rows


def _upsert(app, index: str, body) -> tuple[int, dict]:
    resp = app.handler(http_event("POST", f"/indexes/{index}/upsert", json.dumps(body)), Context())
    return resp["statusCode"], json.loads(resp["body"])


def test_http_upsert_then_query_reads_the_write(writable, runtime_indexes):
    base, queries, table = datamodel.dataset()
    build_index(base, f"s3://{BUCKET}/indexes/ups2", table, BuildOptions(partitions=12, seed=1))
    q = (queries[:3] + 0.01).tolist()
    attrs = [{"label": "http", "ts": "2025-06-01T12:00:00Z", "tags": ["t000"]}, {"label": None}, {}]
    status, out = _upsert(writable, "ups2", {"ids": [70_000, 70_001, 7], "vectors": q, "attributes": attrs})
    assert status == 200 and out == {
        "index": "ups2",
        "version": 1,
        "upserted": 3,
        "replaced": 1,
        "attempts": 1,
    }
    body = {"vectors": q[:1], "k": 1, "filter": {"ts": {"$gt": "2025-01-01"}}, "include": ["attributes"]}
    status, out = post(writable, "ups2", body)
    assert status == 200 and out["results"][0][0]["id"] == 70_000, out
    assert out["results"][0][0]["attributes"]["ts"].startswith("2025-06-01T12:00:00")
    status, out = post(writable, "ups2", {"vectors": q[2:3], "k": 1})
    assert out["results"][0][0]["id"] == 7  # replaced in place: its new vector


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [1], "vectors": [[0.0] * 3]}, "vector"),
        ({"ids": [1, 1], "vectors": [[0.0] * 32] * 2}, "ids"),
        ({"ids": [1], "vectors": [[0.0] * 32], "attributes": [{"colour": "red"}]}, "colour"),
        ({"ids": [1], "vectors": [[0.0] * 32], "attributes": [{"ts": "soon"}]}, "ts"),
        ({"ids": [1], "vectors": [[0.0] * 32], "extra": 1}, "extra"),
        ({"vectors": [[0.0] * 32]}, "ids"),
    ],
)
def test_bad_http_upserts_are_400_and_write_nothing(writable, deleted_index, body, field):
    index, _, _ = deleted_index
    before = index.storage.read("manifest.json")
    status, out = _upsert(writable, "del", body)
    err = assert_error(status, out, 400)
    assert field in (err.get("field") or ""), err
    assert index.storage.read("manifest.json") == before
