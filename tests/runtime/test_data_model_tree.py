"""Nulls, lists, timestamps and ids through HTTP -> coordinator -> worker tree -> S3 (moto),
and high-cardinality strings: a worker event carries codes, never dictionaries, so its size
does not grow with the number of distinct values."""

from __future__ import annotations

import datamodel
import numpy as np
import pyarrow as pa
import pytest
from conftest import BUCKET, post

import squash
from squash.build import BuildOptions, build_index

K = 10
TREE_FILTERS = [
    "exists-false",
    "ne-or-null",
    "not-range-keeps-nulls",
    "list-in-rare",
    "list-all",
    "list-nin",
    "ts-iso-range",
    "date-gt",
    "id-nin",
    "bool-null",
]


@pytest.fixture(scope="module")
def dm(runtime_indexes):
    base, queries, table = datamodel.dataset()
    uri = f"s3://{BUCKET}/indexes/dm"
    build_index(base, uri, table, BuildOptions(partitions=24, seed=2))
    return base, queries, table, datamodel.rows(table), squash.open_index(uri)


@pytest.mark.parametrize("name", TREE_FILTERS)
def test_tree_answers_equal_in_process_and_attributes_are_the_stored_values(coordinator_app, dm, name):
    _, queries, table, table_rows, index = dm
    filt = datamodel.filters(table)[name]
    q = queries[:12]
    body = {"vectors": q.tolist(), "k": K, "filter": filt, "include": ["distance", "attributes"]}
    status, out = post(coordinator_app, "dm", body)
    assert status == 200, out
    expected = index.search(q, k=K, filter=filt)
    assert [[h["id"] for h in row] for row in out["results"]] == [
        [i for i in row if i >= 0] for row in expected.ids.tolist()
    ]
    want = datamodel.matches(filt, table_rows)
    by_id = {r["id"]: r for r in table_rows}
    for row in out["results"]:
        assert len(row) == min(K, int(want.sum()))
        for hit in row:
            stored = by_id[hit["id"]]
            assert datamodel.matches(filt, [stored])[0], "a hit fails the predicate"
            for key, value in hit["attributes"].items():
                assert datamodel.same_value(value, stored[key]), (hit["id"], key, value)
    assert out["stats"]["event_bytes"] > 0


def _strings_index(name: str, distinct: int, n: int = 20_000) -> tuple[str, list[str]]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    urls = [f"https://example.com/docs/{i:07d}/page" for i in range(distinct)]
    column = [urls[i] for i in np.arange(n) % distinct]
    build_index(x, f"s3://{BUCKET}/indexes/{name}", pa.table({"url": column}), BuildOptions(partitions=16))
    return name, urls


@pytest.fixture(scope="module")
def string_indexes(runtime_indexes):
    return {distinct: _strings_index(f"urls{distinct}", distinct) for distinct in (20, 20_000)}


def test_event_size_does_not_grow_with_distinct_values(coordinator_app, string_indexes):
    q = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32).tolist()
    sizes = {}
    for distinct, (name, urls) in string_indexes.items():
        filt = {"url": {"$nin": urls[:5]}}  # matches nearly every row: the same partitions
        status, out = post(coordinator_app, name, {"vectors": q, "k": 5, "filter": filt})
        assert status == 200, out
        sizes[distinct] = out["stats"]["event_bytes"]
        status, out = post(coordinator_app, name, {"vectors": q, "k": 5, "filter": {"url": urls[-1]},
                                                   "include": ["attributes"]})  # fmt: skip
        assert status == 200, out
        hits = [h for row in out["results"] for h in row]
        assert hits and all(h["attributes"]["url"] == urls[-1] for h in hits)
    # 1,000x more distinct values (a 700 KB dictionary): the event differs by a few bytes
    # (the count in the schema), never by the dictionary
    assert abs(sizes[20_000] - sizes[20]) < 64, sizes


@pytest.mark.parametrize(
    ("filt", "says"),
    [
        ({"label": {"$all": ["a"]}}, "'label' is a category field"),
        ({"price": {"$exists": "yes"}}, "$exists on field 'price'"),
        ({"ts": {"$gte": "2024-13-45"}}, "'2024-13-45' is not an ISO-8601"),
        ({"tags": {"$lt": "t1"}}, "list field 'tags'"),
    ],
)
def test_bad_filters_are_400_naming_the_field(coordinator_app, dm, filt, says):
    from conftest import assert_error

    _, queries, *_ = dm
    status, out = post(coordinator_app, "dm", {"vector": queries[0].tolist(), "filter": filt})
    err = assert_error(status, out, 400, "filter")
    assert err["code"] == "invalid_filter" and says in err["message"], err
