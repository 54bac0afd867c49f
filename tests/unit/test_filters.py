import numpy as np
import pyarrow as pa
import pytest

from squash.attribute_build import quantize_attributes
from squash.errors import FilterError
from squash.filter_eval import evaluate, schema_of
from squash.filters import parse_filter


@pytest.fixture(scope="module")
def attrs():
    rng = np.random.default_rng(0)
    n = 5000
    table = pa.table(
        {
            "label": pa.array(rng.choice(["a", "b", "c", "d"], n)),
            "price": pa.array(rng.uniform(0, 100, n)),  # > 256 distinct: Lloyd cells
            "year": pa.array(rng.integers(1990, 2030, n)),  # <= 256 distinct: exact cells
            "ok": pa.array(rng.random(n) < 0.5),
        }
    )
    return quantize_attributes(table, n), table


FILTERS = [
    {"label": "a"},
    {"label": {"$in": ["a", "c"]}, "price": {"$gte": 20.5, "$lt": 40.25}},
    {"$or": [{"price": {"$lte": 3.3}}, {"year": {"$gt": 2025}}]},
    {"$and": [{"ok": True}, {"label": {"$ne": "b"}}, {"price": {"$ne": 50.0}}]},
    {"year": {"$nin": [1995, 2000, 2005]}, "price": {"$gt": 99.0}},
    {"label": {"$nin": ["a", "zzz"]}, "year": 2001},
    {"label": "never-seen"},
]


@pytest.mark.parametrize("filt", FILTERS)
def test_maybe_contains_exact_contains_sure(attrs, filt):
    cols, table = attrs
    node = parse_filter(filt, cols.specs, cols.dictionaries)
    maybe = evaluate(node, cols.table(), schema_of(cols.specs), "maybe")
    sure = evaluate(node, cols.table(), schema_of(cols.specs), "sure")
    exact = evaluate(node, cols.table(), schema_of(cols.specs), "exact")
    assert np.all(exact <= maybe) and np.all(sure <= exact)
    # Exact semantics checked against a plain reimplementation on the raw table.
    df = {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}
    assert exact.sum() == _reference(filt, df).sum()
    np.testing.assert_array_equal(exact, _reference(filt, df))


def _reference(filt, df):
    ops = {
        "$eq": lambda c, v: c == v, "$ne": lambda c, v: c != v, "$gt": lambda c, v: c > v,
        "$gte": lambda c, v: c >= v, "$lt": lambda c, v: c < v, "$lte": lambda c, v: c <= v,
        "$in": lambda c, v: np.isin(c, v), "$nin": lambda c, v: ~np.isin(c, v),
    }  # fmt: skip
    n = len(next(iter(df.values())))
    mask = np.ones(n, bool)
    for key, val in filt.items():
        if key == "$and":
            for f in val:
                mask &= _reference(f, df)
        elif key == "$or":
            mask &= np.logical_or.reduce([_reference(f, df) for f in val])
        elif isinstance(val, dict):
            for op, v in val.items():
                mask &= ops[op](df[key], v)
        else:
            mask &= df[key] == val
    return mask


@pytest.mark.parametrize(
    ("filt", "message"),
    [
        ('{"label": ', "not valid JSON"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"price": {"$between": [1, 2]}}, "unknown operator '$between'"),
        ({"price": "cheap"}, "field 'price' is numeric"),
        ({"price": {"$gt": True}}, "field 'price' is numeric"),
        ({"label": {"$gt": "a"}}, "not supported on category field 'label'"),
        ({"label": 3}, "field 'label' is categorical"),
        ({"ok": "yes"}, "field 'ok' is boolean"),
        ({"label": {"$in": "a"}}, "$in on field 'label' takes a list"),
        ({"$or": []}, "$or takes a non-empty list"),
        ({"$nor": [{"label": "a"}]}, "unknown operator '$nor'"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_filters_are_named(attrs, filt, message):
    with pytest.raises(FilterError) as err:
        parse_filter(filt, attrs[0].specs, attrs[0].dictionaries)
    assert message in str(err.value)
