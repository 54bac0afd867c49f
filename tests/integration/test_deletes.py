"""Deletes without a rebuild: never returned afterwards (plain, filtered, exact and routed
plans), planned on live rows only, committed by a conditional manifest write (concurrent
writers both land; a crash before the commit changes nothing), bad deletes write nothing."""

from __future__ import annotations

import json

import datamodel
import numpy as np
import pytest
from writers import run_together

import squash
from squash.build import BuildOptions, build_index
from squash.cli import main
from squash.errors import IndexFormatError, InputError
from squash.manifest import MANIFEST_KEY
from squash.params import SearchParams
from squash.storage import open_storage

K = 10


@pytest.fixture(scope="module")
def data():
    base, queries, table = datamodel.dataset()
    return base, queries, table, datamodel.rows(table)


def _build(data, path) -> str:
    base, _, table, _ = data
    uri = path.as_uri()
    build_index(base, uri, table, BuildOptions(partitions=24, seed=2))
    return uri


@pytest.fixture
def uri(data, tmp_path):
    return _build(data, tmp_path / "index")


def _truth(data, live: np.ndarray, filt=None) -> list[list[int]]:
    base, queries, _, table_rows = data
    mask = live & (datamodel.matches(filt, table_rows) if filt else True)
    ids = np.array([r["id"] for r in table_rows])
    return [ids[t].tolist() for t in datamodel.exact_topk(base, queries, mask, K)]


def test_deleted_ids_are_never_returned_and_exact_search_equals_the_live_set(data, uri):
    _, queries, _, table_rows = data
    ids = np.array([r["id"] for r in table_rows])
    index = squash.open_index(uri)
    before = index.search(queries, k=K)
    victims = np.unique(before.ids[:, :3])  # every query's 3 nearest: deletes that matter
    result = index.delete(ids=victims.tolist())
    assert (result.deleted, result.not_found, result.version) == (victims.size, 0, 1)
    live = ~np.isin(ids, victims)
    for params in (SearchParams(), SearchParams(target_recall=1.0), SearchParams(plan="routed")):
        got = index.search(queries, k=K, params=params)
        assert not np.isin(got.ids, victims).any(), params
    exact = index.search(queries, k=K, params=SearchParams(target_recall=1.0))
    assert [[i for i in row if i >= 0] for row in exact.ids.tolist()] == _truth(data, live)
    fresh = squash.open_index(uri)  # another reader sees the committed version
    assert fresh.manifest.version == 1 and fresh.info()["deleted"] == victims.size
    assert not np.isin(fresh.search(queries, k=K).ids, victims).any()


def test_filtered_search_counts_only_live_matches(data, uri):
    """Delete most of a rare filter's matches: every query still gets min(k, live matches)."""
    _, queries, table, table_rows = data
    filt = datamodel.filters(table)["list-in-rare"]
    ids = np.array([r["id"] for r in table_rows])
    hit = datamodel.matches(filt, table_rows)
    victims = ids[hit][: int(hit.sum()) - 4]  # leave 4 live matches
    index = squash.open_index(uri)
    index.delete(ids=victims.tolist())
    res = index.search(queries, k=K, filter=filt)
    assert ((res.ids >= 0).sum(axis=1) == 4).all()
    assert set(res.ids[res.ids >= 0].tolist()) == set(ids[hit][-4:].tolist())


def test_delete_by_filter(data, uri):
    _, queries, _, table_rows = data
    filt = {"label": "a"}
    index = squash.open_index(uri)
    want = int(datamodel.matches(filt, table_rows).sum())
    assert index.delete(filter=filt).deleted == want
    res = index.search(queries, k=K, filter={"$or": [filt, {"label": "b"}]}, include=["attributes"])
    assert all(h["label"] == "b" for row in res.attributes for h in row)
    ids = np.array([r["id"] for r in table_rows])
    live = ~datamodel.matches(filt, table_rows)
    exact = index.search(queries, k=K, params=SearchParams(target_recall=1.0))
    assert [[i for i in row if i >= 0] for row in exact.ids.tolist()] == _truth(data, live)
    assert np.isin(exact.ids[exact.ids >= 0], ids[live]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter": {"label": "never"}}, "the filter matches no vector"),
        ({"ids": [7, 7]}, "id 7 is given twice"),
        ({"ids": [-1]}, "must be non-negative"),
        ({"ids": []}, "non-empty list of integers"),
        ({"ids": [1.5]}, "list of integers"),
        ({}, "exactly one"),
        ({"ids": [7], "filter": {"label": "a"}}, "exactly one"),
        ({"filter": {"nope": 1}}, "unknown field 'nope'"),
    ],
)
def test_bad_deletes_write_nothing(uri, kwargs, message):
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    with pytest.raises(InputError, match=message):
        squash.delete(uri, **kwargs)
    assert storage.read(MANIFEST_KEY) == before


def test_deleting_ids_the_index_does_not_hold_writes_nothing_and_succeeds(uri):
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    result = squash.delete(uri, ids=[10**9, 10**9 + 1])
    assert (result.version, result.deleted, result.not_found) == (0, 0, 2)
    assert storage.read(MANIFEST_KEY) == before
    squash.delete(uri, ids=[7])
    assert squash.delete(uri, ids=[7]).to_dict() == {
        "version": 1,
        "deleted": 0,
        "not_found": 1,
        "attempts": 1,
    }


def test_partly_unknown_ids_are_counted(uri):
    result = squash.delete(uri, ids=[7, 17, 10**9])
    assert (result.deleted, result.not_found) == (2, 1)
    again = squash.delete(uri, ids=[7, 27])  # 7 is gone already
    assert (again.deleted, again.not_found, again.version) == (1, 1, 2)


def test_a_crash_before_the_commit_changes_nothing(data, uri, monkeypatch):
    _, queries, _, _ = data
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    expected = squash.open_index(uri).search(queries, k=K)

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the data file and the manifest")

    monkeypatch.setattr(type(storage), "write_if", crash)
    with pytest.raises(RuntimeError):
        squash.delete(storage, ids=expected.ids[:, 0].tolist())
    monkeypatch.undo()
    assert storage.read(MANIFEST_KEY) == before
    after = squash.open_index(uri).search(queries, k=K)
    np.testing.assert_array_equal(after.ids, expected.ids)


def _concurrent_deletes(uri: str, groups: list[list[int]]) -> list:
    return run_together(lambda ids: squash.delete(uri, ids=ids), groups)


def test_concurrent_writers_on_file_storage_both_land(uri):
    # the third overlaps the others and adds an id of its own, so it commits whatever the order
    # (a delete whose ids are all gone already commits nothing)
    groups = [[7 + 10 * i for i in range(0, 40, 2)], [7 + 10 * i for i in range(1, 40, 2)], [7, 17, 407]]
    results = _concurrent_deletes(uri, groups)
    index = squash.open_index(uri)
    assert index.manifest.version == 3 and sorted(r.version for r in results) == [1, 2, 3]
    rows, _ = index.rows_of_ids(np.array(sorted({i for g in groups for i in g})))
    assert index.deleted[rows].all() and index.deleted.sum() == 41
    assert sum(r.deleted for r in results) == 41  # overlapping ids counted once


def test_concurrent_writers_on_s3_both_land(data, moto_s3):
    import boto3

    boto3.client("s3").create_bucket(Bucket="deletes")
    base, _, table, _ = data
    uri = "s3://deletes/idx"
    build_index(base[:2000], uri, table.slice(0, 2000), BuildOptions(partitions=8, seed=1))
    groups = [[7 + 10 * i for i in range(0, 30, 2)], [7 + 10 * i for i in range(1, 30, 2)]]
    results = _concurrent_deletes(uri, groups)
    index = squash.open_index(uri)
    assert index.manifest.version == 2 and sum(r.deleted for r in results) == 30
    assert index.deleted.sum() == 30 and sorted(r.version for r in results) == [1, 2]


def test_a_manifest_with_an_unknown_feature_is_refused(uri):
    storage = open_storage(uri)
    doc = json.loads(storage.read(MANIFEST_KEY))
    doc["features"] = ["upserts-v9"]
    storage.write(MANIFEST_KEY, json.dumps(doc).encode())
    with pytest.raises(IndexFormatError, match="newer squash"):
        squash.open_index(uri)


def test_cli_delete(uri, capsys, tmp_path):
    assert main(["delete", "--index-uri", uri, "--ids", "7,17,999999999"]) == 0
    assert "deleted      2 vectors, 1 ids not in the index; index version 1" in capsys.readouterr().out
    np.save(tmp_path / "ids.npy", np.array([27, 37], dtype=np.int64))
    assert main(["delete", "--index-uri", uri, "--ids-file", str(tmp_path / "ids.npy")]) == 0
    assert main(["delete", "--index-uri", uri, "--filter", '{"label": "c"}']) == 0
    assert main(["delete", "--index-uri", uri, "--filter", '{"label": "c"}']) == 2
    assert "matches no vector" in capsys.readouterr().err
    assert main(["delete", "--index-uri", uri, "--ids", "x"]) == 2
    assert main(["delete", "--index-uri", uri]) == 2
    assert squash.open_index(uri).manifest.version == 3
