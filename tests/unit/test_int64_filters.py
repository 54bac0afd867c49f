"""Filters on int64 attributes are exact for every int64, at every level.

The exact check (L4) must equal a reference computed with Python's exact int/float
comparisons; the L0 codes must stay a superset ("maybe") and a subset ("sure") of it —
with values near 2^62 and at the int64 edges, where float64 cannot tell neighbours apart.
"""

from __future__ import annotations

import json
import operator

import numpy as np
import pyarrow as pa
import pytest

import squash
from squash.attribute_build import quantize_attributes
from squash.attributes import AttributeSpec
from squash.build import BuildOptions, build_index
from squash.errors import FilterError
from squash.filter_eval import evaluate, schema_of
from squash.filters import parse_filter

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NEAR = [2**62 + d for d in range(-3, 4)] + [2**53 + d for d in range(-1, 3)]
EDGES = [I64_MIN, I64_MIN + 1, I64_MAX - 1, I64_MAX, -1, 0, 1]
OPERANDS = [
    *NEAR,
    *EDGES,
    2**63,  # just above int64
    -(2**63) - 1,  # just below
    2**64,
    float(2**62),  # a float operand on an int column: compared exactly, not rounded
    4.611686018427388e18,
    2.5,
    -0.5,
    9.3e18,  # above int64 max, as a float
]
CMP = {"$eq": operator.eq, "$ne": operator.ne, "$gt": operator.gt, "$gte": operator.ge}
CMP |= {"$lt": operator.lt, "$lte": operator.le}
NP_CMP = CMP  # the same operators applied to an int64 array and an np.int64 operand


def _reference(values: list[int], op: str, v) -> np.ndarray:
    if op in ("$in", "$nin"):
        hit = np.array([any(x == w for w in v) for x in values])
        return hit if op == "$in" else ~hit
    return np.array([CMP[op](x, v) for x in values])


def _columns(many_distinct: bool, seed: int = 0) -> tuple[list[int], pa.Table]:
    rng = np.random.default_rng(seed)
    base = NEAR + EDGES
    if many_distinct:  # > 256 distinct values: quantile cells, several values per cell
        spread = [2**62 + int(d) for d in rng.integers(-5000, 5000, 600)]
        base = base + spread
    values = base + [base[i] for i in rng.integers(0, len(base), 400)]
    return values, pa.table({"big": pa.array(values, pa.int64())})


def _cases():
    for op in CMP:
        for v in OPERANDS:
            yield op, v
    for op in ("$in", "$nin"):
        yield op, [2**62 + 1]
        yield op, [2**62 - 1, 2**62 + 3, I64_MAX]
        yield op, [I64_MIN, 2**63, 2.5, float(2**62)]
        yield op, [2**53 + 1]


@pytest.mark.parametrize("many_distinct", [False, True], ids=["exact-cells", "quantile-cells"])
def test_every_level_against_a_reference(many_distinct):
    values, table = _columns(many_distinct)
    attrs = quantize_attributes(table, len(values))
    # The worker sees the schema only through JSON (manifest, event): use that copy.
    specs = [AttributeSpec.from_json(json.loads(json.dumps(s.to_json()))) for s in attrs.specs]
    raw = attrs.raw["big"]
    assert raw.dtype == np.int64 and raw.tolist() == values
    for op, v in _cases():
        node = parse_filter({"big": {op: v}}, specs)
        want = _reference(values, op, v)
        exact = evaluate(node, attrs.table(), schema_of(specs), "exact")
        maybe = evaluate(node, attrs.table(), schema_of(specs), "maybe")
        sure = evaluate(node, attrs.table(), schema_of(specs), "sure")
        assert np.array_equal(exact, want), (op, v)
        ints = v if isinstance(v, list) else [v]
        if all(isinstance(w, int) and I64_MIN <= w <= I64_MAX for w in ints):  # numpy int64 agrees
            if op in ("$in", "$nin"):
                hit = np.isin(raw, np.array(v, dtype=np.int64))
                assert np.array_equal(hit if op == "$in" else ~hit, want), (op, v)
            else:
                assert np.array_equal(NP_CMP[op](raw, np.int64(v)), want), (op, v)
        assert not (want & ~maybe).any(), f"maybe is not a superset for {op} {v}"
        assert not (sure & ~want).any(), f"sure is not a subset for {op} {v}"


def test_exact_cells_stay_exact_sure_matches():
    """With <= 256 distinct values every cell holds one value: $eq on it is surely matched."""
    values, table = _columns(False)
    attrs = quantize_attributes(table, len(values))
    specs = [AttributeSpec.from_json(json.loads(json.dumps(s.to_json()))) for s in attrs.specs]
    node = parse_filter({"big": 2**62 + 1}, specs)
    sure = evaluate(node, attrs.table(), schema_of(specs), "sure")
    assert np.array_equal(sure, _reference(values, "$eq", 2**62 + 1))


def test_search_returns_exactly_the_matching_rows(tmp_path):
    values, table = _columns(True, seed=5)
    n = len(values)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    uri = tmp_path.as_uri()
    build_index(x, uri, table, BuildOptions(partitions=4))
    index = squash.open_index(uri)
    ref = {  # each filter with its exact row predicate in Python integers
        "in": ({"big": {"$in": [2**62 + 1, 2**62 + 2]}}, lambda v: v in (2**62 + 1, 2**62 + 2)),
        "gt": ({"big": {"$gt": 2**62 + 2}}, lambda v: v > 2**62 + 2),
        "nin-or": (
            {"big": {"$nin": [2**62 + 1]}, "$or": [{"big": {"$lte": 2**62 - 1}}, {"big": {"$gte": 2**62}}]},
            lambda v: v != 2**62 + 1,
        ),
        "eq-max": ({"big": {"$eq": I64_MAX}}, lambda v: v == I64_MAX),
        "lt-min": ({"big": {"$lt": I64_MIN + 1}}, lambda v: v == I64_MIN),
        "ne": ({"big": {"$ne": 2**62}}, lambda v: v != 2**62),
    }
    for name, (filt, pred) in ref.items():
        want = {i for i, v in enumerate(values) if pred(v)}
        res = index.search(x[0], k=1000, filter=filt, params=squash.SearchParams(min_candidates=n))
        got = [i for i in res.ids[0].tolist() if i >= 0]
        assert set(got) <= want, name
        assert len(got) == min(1000, len(want)), name


def test_manifests_with_float_cell_bounds_stay_correct():
    """Indexes built before int bounds were stored as integers hold float64 bounds (rounded
    above 2^53): reading them widens the cells, so maybe/sure stay a superset/subset."""
    values, table = _columns(True, seed=2)
    attrs = quantize_attributes(table, len(values))
    doc = json.loads(json.dumps(attrs.specs[0].to_json()))
    doc["cells"] = {k: [float(v) for v in vs] for k, vs in doc["cells"].items()}
    specs = [AttributeSpec.from_json(doc)]
    assert specs[0].lo.dtype == np.int64
    for op, v in _cases():
        node = parse_filter({"big": {op: v}}, specs)
        want = _reference(values, op, v)
        assert not (want & ~evaluate(node, attrs.table(), schema_of(specs), "maybe")).any(), (op, v)
        assert not (evaluate(node, attrs.table(), schema_of(specs), "sure") & ~want).any(), (op, v)


@pytest.mark.parametrize(
    "filt", [{"big": 10**400}, {"big": {"$in": [1, -(10**400)]}}, {"big": {"$lt": 10**309}}]
)
def test_operands_beyond_float64_are_a_filter_error(filt):
    values, table = _columns(False)
    specs = quantize_attributes(table, len(values)).specs
    with pytest.raises(FilterError, match="too large"):
        parse_filter(filt, specs)
