"""Documented limits on filters and JSON text: at the limit it works, past it a clear
FilterError/InputError — never a RecursionError, however deep the input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from squash.attribute_build import quantize_attributes
from squash.errors import FilterError, InputError
from squash.filter_eval import evaluate, schema_of
from squash.filters import MAX_FILTER_DEPTH, MAX_FILTER_TERMS, MAX_IN_VALUES, parse_filter
from squash.jsontext import MAX_JSON_DEPTH, loads


@pytest.fixture(scope="module")
def specs():
    table = pa.table({"a": pa.array(np.arange(100, dtype=np.int64)), "s": pa.array(["x", "y"] * 50)})
    return quantize_attributes(table, 100)


def nested(depth: int, op: str = "$and") -> dict:
    """``depth`` nested $and/$or levels around one comparison, built without recursion."""
    doc: dict = {"a": {"$gte": 3}}
    for _ in range(depth):
        doc = {op: [doc]}
    return doc


def test_limits_are_the_documented_values():
    assert (MAX_FILTER_DEPTH, MAX_FILTER_TERMS, MAX_IN_VALUES) == (32, 1024, 10_000)
    assert MAX_JSON_DEPTH >= 2 * MAX_FILTER_DEPTH + 4  # a filter at its limit fits a body


def test_filter_depth(specs):
    node = parse_filter(nested(MAX_FILTER_DEPTH), specs.specs, specs.dictionaries)
    assert evaluate(node, specs.table(), schema_of(specs.specs), "exact").sum() == 97
    for depth in (MAX_FILTER_DEPTH + 1, 1000, 10_000, 100_000):
        with pytest.raises(FilterError, match="nested more than 32"):
            parse_filter(nested(depth, "$or"), specs.specs, specs.dictionaries)


def test_filter_depth_as_json_text(specs):
    text = json.dumps(nested(MAX_FILTER_DEPTH))
    assert parse_filter(text, specs.specs, specs.dictionaries) is not None
    deep = '{"$and": [' * 10_000 + '{"a": 1}' + "]}" * 10_000
    with pytest.raises(FilterError, match="nested") as err:
        parse_filter(deep, specs.specs, specs.dictionaries)
    assert err.value.field == "filter"


def test_filter_terms(specs):
    ok = {"$or": [{"a": i} for i in range(MAX_FILTER_TERMS)]}
    assert evaluate(
        parse_filter(ok, specs.specs, specs.dictionaries), specs.table(), schema_of(specs.specs), "exact"
    ).all()
    with pytest.raises(FilterError, match=r"more than 1024 field comparisons \(1025 so far\)"):
        parse_filter(
            {"$or": [{"a": i} for i in range(MAX_FILTER_TERMS + 1)]}, specs.specs, specs.dictionaries
        )
    many_ops = {"$and": [{"a": {"$gte": 0, "$lte": 99}} for _ in range(MAX_FILTER_TERMS // 2 + 1)]}
    with pytest.raises(FilterError, match="more than 1024"):
        parse_filter(many_ops, specs.specs, specs.dictionaries)


@pytest.mark.parametrize("op", ["$in", "$nin"])
def test_in_size(specs, op):
    parse_filter({"a": {op: list(range(MAX_IN_VALUES))}}, specs.specs, specs.dictionaries)
    parse_filter({"s": {op: ["x"] * MAX_IN_VALUES}}, specs.specs, specs.dictionaries)
    with pytest.raises(FilterError, match="10001 values"):
        parse_filter({"a": {op: list(range(MAX_IN_VALUES + 1))}}, specs.specs, specs.dictionaries)


@pytest.mark.parametrize("text", ["[" * 100_000, "{" + '"a":[' * 100_000, "[" * 100_000 + "]" * 100_000])
def test_json_text_nesting_is_bounded(text):
    with pytest.raises(InputError, match="nested deeper than") as err:
        loads(text, "request body", field="body")
    assert err.value.field == "body"


def test_json_depth_limit_is_exact_and_ignores_brackets_in_strings():
    at = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads(at, "x", field="body") is not None
    with pytest.raises(InputError):
        loads("[" + at + "]", "x", field="body")
    inside = json.dumps({"s": "[" * 10_000 + '\\"{' * 100})
    assert loads(inside, "x", field="body")["s"].startswith("[[[")


def test_duplicate_keys_are_rejected_at_any_depth():
    for text in ('{"a": 1, "a": 1}', '[{"x": {"b": 1, "c": 2, "b": 3}}]'):
        with pytest.raises(InputError, match="twice"):
            loads(text, "body", field="body")
    assert loads('{"a": {"a": 1}}', "body", field="body") == {"a": {"a": 1}}


def test_non_utf8_bytes_are_rejected():
    with pytest.raises(InputError, match="not UTF-8") as err:
        loads(b'{"a": "\xff"}', "request body", field="body")
    assert err.value.field == "body"
    assert loads('{"a": "é"}'.encode(), "x", field="body") == {"a": "é"}
