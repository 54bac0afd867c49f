"""Property tests over the coordinator handler (in-process worker tree, moto S3).

For arbitrary bodies, params, filters and direct-invocation events, the handler answers
a 2xx whose results match the in-process engine, or a 4xx with the documented error body
— never a 5xx, never an exception. Bounded (examples and deadline) so CI stays fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BUCKET, Context, http_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squash
from squash.filters import FIELD_OPS

SETTINGS = settings(
    max_examples=200,
    deadline=None,  # a property, not a timing: a loaded CI machine must not fail it (perf lives in bench)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KNOBS = ["routing_factor", "min_candidates", "min_partitions", "max_partitions", "sketch_keep"]
KNOBS += ["rerank_factor", "levels"]
DIMS = 16  # the sample index

# --- strategies -------------------------------------------------------------------------------

edge_ints = st.sampled_from([0, 1, -1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400])
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    edge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["c01", "c02", "distance", "attributes", "auto", "exact"]),
)
json_any = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=16,
)
field_names = st.sampled_from(["label", "price", "in_stock", "nope", "", "$and", "$nor"])
operators = st.sampled_from([*FIELD_OPS, "$between", "$and", "$exists"])
operand = st.one_of(
    leaf,
    st.floats(0, 100),
    st.lists(st.one_of(leaf, st.floats(0, 100), st.sampled_from(["c01", "c03"])), max_size=6),
)
comparison = st.dictionaries(
    field_names, st.one_of(operand, st.dictionaries(operators, operand, max_size=3)), max_size=3
)
filters = st.recursive(
    comparison,
    lambda kids: (
        st.dictionaries(st.sampled_from(["$and", "$or"]), st.lists(kids, max_size=3), max_size=2)
        | st.lists(kids, max_size=2)
    ),
    max_leaves=8,
)
# Well-typed filters on the sample index's fields (label: category, price: float, in_stock: bool).
label_value = st.one_of(st.sampled_from([f"c{i:02d}" for i in range(8)]), st.text(max_size=3))
price_value = st.one_of(st.floats(-10, 110), st.integers(-10, 110), edge_ints)
label_ops = {"$eq": label_value, "$ne": label_value}
label_ops |= {"$in": st.lists(label_value, max_size=4), "$nin": st.lists(label_value, max_size=4)}
price_ops = {op: price_value for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")}
price_ops |= {"$in": st.lists(price_value, max_size=4), "$nin": st.lists(price_value, max_size=4)}
stock_ops = {"$eq": st.booleans(), "$ne": st.booleans(), "$in": st.lists(st.booleans(), max_size=2)}
typed_comparison = st.one_of(
    st.fixed_dictionaries({"label": st.one_of(label_value, st.fixed_dictionaries({}, optional=label_ops))}),
    st.fixed_dictionaries({"price": st.one_of(price_value, st.fixed_dictionaries({}, optional=price_ops))}),
    st.fixed_dictionaries(
        {"in_stock": st.one_of(st.booleans(), st.fixed_dictionaries({}, optional=stock_ops))}
    ),
)
typed_filters = st.recursive(
    typed_comparison,
    lambda kids: st.dictionaries(
        st.sampled_from(["$and", "$or"]), st.lists(kids, min_size=1, max_size=3), max_size=2
    ),
    max_leaves=6,
)
params = st.one_of(
    st.dictionaries(st.sampled_from([*KNOBS, "nprobe"]), st.one_of(leaf, st.floats(0.5, 20)), max_size=4),
    json_any,
)
good_params = st.fixed_dictionaries(
    {},
    optional={
        "levels": st.sampled_from(["auto", "all", "exact"]),
        "min_candidates": st.integers(0, 3000),
        "sketch_keep": st.floats(0.1, 1.0),
        "rerank_factor": st.integers(1, 8),
        "rerank": st.sampled_from(["auto", "none", "fine", "float32"]),
    },
)


@st.composite
def vectors(draw, single: bool):
    """Mostly well-formed query vectors (sometimes huge, ragged or odd), sometimes anything."""
    row = st.lists(st.floats(-100, 100), min_size=DIMS, max_size=DIMS)
    odd_row = st.one_of(
        st.lists(
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), edge_ints), min_size=DIMS, max_size=DIMS
        ),
        st.lists(st.floats(-1, 1), max_size=DIMS + 2),
        st.just([0.0] * DIMS),
        st.just([1e19] * DIMS),
    )
    kind = draw(st.sampled_from(["row", "row", "row", "row", "mixed", "odd", "any"]))
    if kind == "any":
        return draw(json_any)
    if single:
        return draw(odd_row if kind == "odd" else row)
    if kind == "mixed":  # good rows with one odd row somewhere: the batch must fail as a whole
        return draw(st.lists(st.one_of(row, odd_row), min_size=1, max_size=4))
    return draw(st.lists(odd_row if kind == "odd" else row, min_size=0, max_size=4))


@st.composite
def bodies(draw):
    doc = {}
    if draw(st.booleans()):
        doc["vector"] = draw(vectors(single=True))
    else:
        doc["vectors"] = draw(vectors(single=False))
    optional = {  # key: (strategy, one body in how many has it)
        "k": (
            st.one_of(
                st.integers(1, 50), st.integers(1, 50), st.integers(1, 50), st.integers(-3, 1100), leaf
            ),
            2,
        ),
        "filter": (st.one_of(typed_filters, typed_filters, typed_filters, filters, json_any), 1),
        "include": (
            st.one_of(st.lists(st.sampled_from(["distance", "attributes"]), max_size=2), json_any),
            3,
        ),
        "params": (st.one_of(good_params, good_params, params), 3),
        "extra": (json_any, 12),
    }
    for key, (strat, one_in) in optional.items():
        # sampled_from favours its first elements: put the rare outcome last
        present = draw(st.sampled_from([False] * (one_in - 1) + [True])) if one_in > 1 else True
        if present and (key != "filter" or draw(st.integers(0, 4))):
            doc[key] = draw(strat)
    return doc


HOSTILE_NUMBERS = [1e19, 1e20, 1e39, -1e39, 2**64, 10**400, 2**63, 2**62 + 1, -(2**63) - 1]
HOSTILE_NUMBERS += [float("nan"), float("inf"), float("-inf"), 1e308, 5e-324, -0.0]
hostile = st.sampled_from(HOSTILE_NUMBERS)


@st.composite
def valid_bodies(draw):
    """A request that must succeed: good vectors, k, filter, include and params."""
    row = st.lists(st.floats(-50, 50), min_size=DIMS, max_size=DIMS)
    doc = (
        {"vector": draw(row)}
        if draw(st.booleans())
        else {"vectors": draw(st.lists(row, min_size=1, max_size=3))}
    )
    doc["k"] = draw(st.integers(1, 30))
    if draw(st.booleans()):
        doc["filter"] = draw(typed_filters)
    if draw(st.booleans()):
        doc["params"] = draw(good_params)
    if draw(st.booleans()):
        doc["include"] = draw(st.lists(st.sampled_from(["distance", "attributes"]), max_size=2, unique=True))
    return doc


@st.composite
def mutated_bodies(draw):
    """A valid request with exactly one hostile change: the request must now be a 4xx, or
    (where the change is still meaningful, e.g. a huge filter operand) a correct 2xx."""
    doc = draw(valid_bodies())
    how = draw(st.sampled_from(["vector", "batch-row", "zero", "param", "operand", "in", "deep", "k"]))
    rows = [doc["vector"]] if "vector" in doc else doc["vectors"]
    if how == "vector":
        rows[0][draw(st.integers(0, DIMS - 1))] = draw(hostile)
    elif how == "batch-row":
        doc.pop("vector", None)
        doc["vectors"] = [*rows, [draw(hostile)] * DIMS]
    elif how == "zero":
        rows[-1][:] = [0.0] * DIMS  # fine for l2; cosine would refuse it
    elif how == "param":
        doc["params"] = {draw(st.sampled_from(KNOBS[:-1])): draw(hostile)}
    elif how == "operand":
        doc["filter"] = {
            "price": {draw(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])): draw(hostile)}
        }
    elif how == "in":
        doc["filter"] = {"price": {draw(st.sampled_from(["$in", "$nin"])): [1.5, draw(hostile)]}}
    elif how == "deep":
        inner = {"price": {"$lt": 50}}
        for _ in range(draw(st.sampled_from([31, 32, 33, 200]))):
            inner = {"$and": [inner]}
        doc["filter"] = inner
    else:
        doc["k"] = draw(st.one_of(hostile, st.sampled_from([0, 1001, -1, True, "10", None])))
    return doc


# --- checks -----------------------------------------------------------------------------------


def _check_error(body: dict, status: int) -> None:
    assert 400 <= status < 500, f"{status}: {body}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) <= {"code", "message", "field"}, body
    assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str) and err["message"]


def _check_results(index, data, doc: dict, out: dict) -> None:
    """A 200 is a correct answer, checked against brute force (not against squash itself):
    each hit matches the filter, its distance is the exact squared L2 distance (within the
    code's error when ``stats.distances`` says "estimated"), hits are nearest first, and a
    query gets min(k, matching rows) hits (README: a filter matching at least k vectors
    returns k). The in-process engine must agree on the distances."""
    queries = np.atleast_2d(np.asarray(doc.get("vector", doc.get("vectors")), dtype=np.float64))
    k = doc.get("k", 10)
    base, attrs = data
    match = np.array([_matches(doc.get("filter"), row) for row in attrs])
    assert len(out["results"]) == queries.shape[0]
    want = index.search(
        queries, k=k, filter=doc.get("filter"), params=squash.SearchParams.from_dict(doc.get("params"))
    )
    with_dist = "distance" in doc.get("include", ["distance"])
    for q, hits, ref in zip(queries, out["results"], want.distances, strict=True):
        assert len(hits) == min(k, int(match.sum())), (len(hits), k, int(match.sum()))
        ids = [h["id"] for h in hits]
        assert all(isinstance(i, int) and 0 <= i < len(attrs) and match[i] for i in ids)
        assert len(set(ids)) == len(ids)
        if with_dist:
            got = np.array([h["distance"] for h in hits], dtype=np.float64)
            exact = ((base[ids].astype(np.float64) - q) ** 2).sum(axis=1)
            if out["stats"]["distances"] == "exact":
                np.testing.assert_allclose(got, exact, rtol=1e-3, atol=1e-2)
            else:  # the hot tier's estimate: 6 bits per dimension keep it within a few %
                np.testing.assert_allclose(
                    got, exact, rtol=0.1, atol=0.05 * (float(np.median(exact)) if exact.size else 0.0) + 1e-2
                )
            assert np.all(np.diff(got) >= -1e-3 * np.maximum(1, np.abs(got[1:])))
            np.testing.assert_allclose(got, ref[: len(hits)], rtol=1e-5, atol=1e-3)


def _matches(filt, row: dict) -> bool:
    """The filter language on one row, in plain Python (exact int/float comparisons)."""
    if filt is None:
        return True
    ops = {"$eq": lambda x, v: x == v, "$ne": lambda x, v: x != v, "$gt": lambda x, v: x > v}
    ops |= {"$gte": lambda x, v: x >= v, "$lt": lambda x, v: x < v, "$lte": lambda x, v: x <= v}
    ops |= {"$in": lambda x, v: any(x == w for w in v), "$nin": lambda x, v: all(x != w for w in v)}
    for key, val in filt.items():
        if key == "$and" and not all(_matches(f, row) for f in val):
            return False
        if key == "$or" and not any(_matches(f, row) for f in val):
            return False
        if key not in ("$and", "$or"):
            conds = val if isinstance(val, dict) else {"$eq": val}
            if not all(ops[op](row[key], v) for op, v in conds.items()):
                return False
    return True


@pytest.fixture(scope="module")
def sample_data(runtime_indexes):
    attrs = runtime_indexes.attributes.to_pylist()  # label (str), price (float), in_stock (bool)
    return runtime_indexes.base, attrs


@pytest.fixture(scope="module")
def sample_index(runtime_indexes):
    return squash.open_index(f"s3://{BUCKET}/indexes/sample")


@SETTINGS
@given(
    doc=st.one_of(bodies(), valid_bodies(), mutated_bodies(), mutated_bodies()), nan_literals=st.booleans()
)
def test_http_query_is_2xx_or_documented_4xx(coordinator_app, sample_index, sample_data, doc, nan_literals):
    text = json.dumps(doc, allow_nan=True) if nan_literals else _json_or_none(doc)
    if text is None:
        return
    resp = coordinator_app.handler(http_event("POST", "/indexes/sample/query", text), Context())
    body = json.loads(resp["body"])
    if resp["statusCode"] == 200:
        _check_results(sample_index, sample_data, doc, body)
    else:
        _check_error(body, resp["statusCode"])


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)), b64=st.booleans())
def test_arbitrary_body_bytes_are_2xx_or_documented_4xx(coordinator_app, raw, b64):
    text = raw if b64 else raw.decode("utf-8", errors="replace")
    resp = coordinator_app.handler(http_event("POST", "/indexes/sample/query", text, b64=b64), Context())
    assert resp["statusCode"] != 200 or raw.strip().startswith(b"{")
    if resp["statusCode"] != 200:
        _check_error(json.loads(resp["body"]), resp["statusCode"])


@SETTINGS
@given(
    doc=st.one_of(bodies(), valid_bodies(), mutated_bodies()),
    index=st.one_of(st.sampled_from(["sample", "sample", "nope", "", "../x", "a" * 200]), leaf),
    action=st.one_of(st.none(), st.sampled_from(["query", "info", "drop", ""]), leaf),
)
def test_direct_invocation_is_an_answer_or_a_documented_4xx(
    coordinator_app, sample_index, sample_data, doc, index, action
):
    event = dict(doc, index=index)
    if action is not None:
        event["action"] = action
    out = coordinator_app.handler(event, Context())
    if "error" in out:
        _check_error(out, out["status"])
    elif action == "info":
        assert out["n"] == 2000
    else:
        _check_results(sample_index, sample_data, doc, out)


@SETTINGS
@given(
    event=st.one_of(
        json_any,
        st.fixed_dictionaries({"requestContext": json_any}, optional={"rawPath": json_any, "body": json_any}),
        st.fixed_dictionaries(
            {"requestContext": st.fixed_dictionaries({"http": json_any}, optional={"stage": json_any})},
            optional={"rawPath": st.sampled_from(["/health", "/indexes/sample", "/x"]), "headers": json_any},
        ),
    )
)
def test_any_event_is_an_answer_never_an_exception(coordinator_app, event):
    out = coordinator_app.handler(event, Context())
    if "statusCode" in out:
        assert out["statusCode"] < 500, out
    elif "error" in out:
        _check_error(out, out["status"])


def _json_or_none(doc: dict) -> str | None:
    try:
        return json.dumps(doc, allow_nan=False)
    except ValueError:
        return None
