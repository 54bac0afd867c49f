"""Deletes through HTTP -> coordinator -> worker tree (moto S3): the tree gets each visited
partition's deleted rows in its event and never returns a deleted id; answers equal the
in-process search of the same version."""

from __future__ import annotations

import json

import datamodel
import numpy as np
import pytest
from conftest import BUCKET, Context, http_event, post

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
