"""Nulls, lists, timestamps, dates and ids: every operator against an independent reference
evaluator, at every level (L0 maybe/sure, exact), and end to end through in-process search
(recall against exact filtered ground truth, min(k, matches) results, nothing failing the
predicate, attributes returned as stored)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datamodel
import numpy as np
import pyarrow as pa
import pytest

import squash
from squash.attribute_build import quantize_attributes
from squash.build import BuildOptions, build_index
from squash.errors import FilterError, InputError
from squash.filter_eval import evaluate, schema_of
from squash.filters import node_from_json, node_to_json, parse_filter

ROOT = Path(__file__).resolve().parents[2]
K = 10


@pytest.fixture(scope="module")
def data():
    base, queries, table = datamodel.dataset()
    return base, queries, table, datamodel.rows(table)


@pytest.fixture(scope="module")
def index(data, tmp_path_factory):
    base, _, table, _ = data
    uri = (tmp_path_factory.mktemp("dm") / "index").as_uri()
    build_index(base, uri, table, BuildOptions(partitions=24, seed=2))
    return squash.open_index(uri)


@pytest.fixture(scope="module")
def columns(data):
    _, _, table, _ = data
    return quantize_attributes(table, table.num_rows), table.column("id").to_numpy()


FILTERS = datamodel.filters(datamodel.dataset()[2])


@pytest.mark.parametrize("name", list(FILTERS))
def test_levels_bracket_the_reference(data, columns, name):
    """maybe ⊇ exact ⊇ sure, and exact equals the reference — also after the worker's JSON
    form of the parsed filter."""
    _, _, _, table_rows = data
    cols, ids = columns
    filt = FILTERS[name]
    want = datamodel.matches(filt, table_rows)
    node = parse_filter(filt, cols.specs, cols.dictionaries)
    shipped = node_from_json(json.loads(json.dumps(node_to_json(node))), cols.specs)
    for n in (node, shipped):
        rows = cols.table(ids)
        maybe, sure = (evaluate(n, rows, schema_of(cols.specs), mode) for mode in ("maybe", "sure"))
        exact = evaluate(n, rows, schema_of(cols.specs), "exact")
        np.testing.assert_array_equal(exact, want)
        assert not (want & ~maybe).any(), "maybe is not a superset"
        assert not (sure & ~want).any(), "sure is not a subset"


@pytest.mark.parametrize("name", list(FILTERS))
def test_search_recall_and_exactness(data, index, name):
    base, queries, _, table_rows = data
    filt = FILTERS[name]
    want = datamodel.matches(filt, table_rows)
    ids = np.array([r["id"] for r in table_rows])
    truth = datamodel.exact_topk(base, queries, want, K)
    res = index.search(queries, k=K, filter=filt, include=["attributes"])
    found = (res.ids >= 0).sum(axis=1)
    assert (found == min(K, int(want.sum()))).all(), f"results per query {found.min()}..{found.max()}"
    allowed = set(ids[want].tolist())
    assert set(res.ids[res.ids >= 0].tolist()) <= allowed, "a result fails the predicate"
    if want.sum():
        pairs = zip(truth, res.ids.tolist(), strict=True)
        recall = np.mean([len(set(ids[t]) & set(r)) / len(t) for t, r in pairs])
        assert recall >= 0.95, recall
    by_id = {r["id"]: r for r in table_rows}
    for row_ids, row_attrs in zip(res.ids.tolist(), res.attributes, strict=True):
        for i, got in zip([i for i in row_ids if i >= 0], row_attrs, strict=True):
            want_row = by_id[i]
            for key, value in got.items():
                assert datamodel.same_value(value, want_row[key]), (i, key, value, want_row[key])


def test_info_lists_types_and_nullability(index):
    attrs = {a["name"]: a for a in index.info()["attributes"]}
    assert attrs["tags"] == {
        "name": "tags", "type": "list", "nullable": True, "element": "category", "distinct_values": 100,
    }  # fmt: skip
    assert attrs["ts"]["unit"] == "ms" and attrs["day"]["unit"] == "D" and not attrs["day"]["nullable"]
    assert attrs["label"]["categories"] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("filt", "message"),
    [
        ({"label": {"$all": ["a"]}}, "$all applies to list fields; 'label' is a category field"),
        ({"price": {"$exists": 1}}, "$exists on field 'price' takes true or false"),
        ({"ts": {"$gt": "yesterday"}}, "'yesterday' is not an ISO-8601 date"),
        ({"ts": {"$gt": True}}, "field 'ts' is a timestamp"),
        ({"tags": {"$gt": "t001"}}, "operator $gt is not supported on list field 'tags'"),
        ({"tags": {"$all": []}}, "$all on field 'tags' takes a non-empty list"),
        ({"tags": 3}, "list field 'tags' holds strings"),
        ({"nums": "x"}, "field 'nums' is a list of numbers"),
        ({"id": "seven"}, "field 'id' is numeric"),
        ({"$not": []}, "$not takes one non-empty filter object"),
    ],
)
def test_bad_filters_name_the_field(index, filt, message):
    with pytest.raises(FilterError) as err:
        index.search(np.zeros(datamodel.D), k=1, filter=filt)
    assert message in str(err.value)


def test_bad_attribute_files_write_nothing(tmp_path, data):
    base = data[0][:50]
    out = tmp_path / "index"
    cases = {
        "mixed list": pa.table({"tags": pa.array(['["a", 1]'] + ['["b"]'] * 49)}),
        "null element": pa.table({"tags": pa.array([["a", None]] + [["b"]] * 49)}),
        "infinite": pa.table({"p": pa.array([float("inf")] + [1.0] * 49)}),
    }
    (tmp_path / "mixed.csv").write_text('tags\n"[""a"", 1]"\n' + '"[""b""]"\n' * 49)
    from squash.inputs import read_table

    with pytest.raises(InputError, match="list column 'tags' mixes element types"):
        read_table(tmp_path / "mixed.csv")
    for name, table in list(cases.items())[1:]:
        with pytest.raises(InputError) as err:
            build_index(base, out.as_uri(), table)
        assert err.value.field in ("tags", "p"), name
        assert not out.exists() or not any(out.rglob("*")), name


def test_csv_json_lists_build_list_columns(tmp_path):
    (tmp_path / "a.csv").write_text('tags,n\n"[""x"", ""y""]",1\n"[]",2\n,3\n"[""y""]",4\n')
    from squash.inputs import read_table

    table = read_table(tmp_path / "a.csv")
    assert table.column("tags").to_pylist() == [["x", "y"], [], None, ["y"]]
    cols = quantize_attributes(table, 4)
    node = parse_filter({"tags": "y"}, cols.specs, cols.dictionaries)
    assert evaluate(node, cols.table(), schema_of(cols.specs), "exact").tolist() == [True, False, False, True]


def readme_examples() -> list[tuple[str, dict]]:
    """The filter examples of the README's filter-language section, as (text, filter)."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"<!-- filter-example -->\s*```json\n(.*?)```", text, flags=re.S)
    return [(block.strip(), json.loads(block)) for block in found]


def test_readme_has_filter_examples():
    assert len(readme_examples()) >= 10


@pytest.mark.parametrize(("text", "filt"), readme_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_filter_examples_match_the_reference(data, columns, text, filt):
    """Every example in the README's filter reference runs against this data and agrees with
    the reference evaluator (the README's fields are this fixture's)."""
    _, _, _, table_rows = data
    cols, ids = columns
    node = parse_filter(filt, cols.specs, cols.dictionaries)
    got = evaluate(node, cols.table(ids), schema_of(cols.specs), "exact")
    np.testing.assert_array_equal(got, datamodel.matches(filt, table_rows))
    assert 0 < got.sum() < got.size, "an example should select some rows, not none or all"


def test_cli_parquet_output_carries_attributes(index, data, tmp_path):
    import pyarrow.parquet as pq

    from squash.cli import main

    _, queries, _, table_rows = data
    np.save(tmp_path / "q.npy", queries[:3])
    out = tmp_path / "hits.parquet"
    filt = json.dumps(FILTERS["list-in-rare"])
    argv = ["search", "--index-uri", index.storage.uri, "--queries", str(tmp_path / "q.npy"), "--k", "4"]
    assert main([*argv, "--filter", filt, "--output", str(out)]) == 0
    hits = pq.read_table(out).to_pylist()
    assert len(hits) == 12 and {h["query"] for h in hits} == {0, 1, 2}
    by_id = {r["id"]: r for r in table_rows}
    for h in hits:
        assert h["attr.tags"] == by_id[h["id"]]["tags"] and datamodel.same_value(
            h["attr.ts"], by_id[h["id"]]["ts"]
        )
