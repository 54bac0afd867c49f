"""Property tests over the worker handler (functions/worker/app.py), driven as Lambda would.

Arbitrary events, and events one mutation away from a valid one (a member deleted or
replaced by arbitrary JSON, a packed array of another dtype/shape/content, out-of-range
partitions, rows, positions or tree shapes), always get a structured answer: the results, or
``{"error": {"status", "code", "message"}}`` — never an exception out of the handler.
Bounded: 150 examples each, a few seconds.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import BUCKET, Context, lambda_modules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_tree import LocalTree
from test_properties import json_any

import squash
from squash.filters import node_to_json
from squash.runtime.codec import pack_array

URI = f"s3://{BUCKET}/indexes/sample"
SETTINGS = settings(
    max_examples=150,
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def worker_app(runtime_indexes):
    with lambda_modules(BUCKET, "squash-worker", "worker") as (worker,):
        worker.NODE.invoke = LocalTree("squash", 3)
        yield worker


@pytest.fixture(scope="module")
def valid_event(runtime_indexes):
    index = squash.open_index(URI)
    parts = np.arange(index.manifest.partitions, dtype=np.int32)
    pairs = np.stack([np.repeat(parts, 2), np.tile([0, 1], parts.size)], axis=1).astype(np.int32)
    return {
        "index": URI,
        "position": 0,
        "tree": {"branching": 2, "depth": 1, "prefix": "squash"},
        "k": 5,
        "params": {},
        "predicate": node_to_json(index.parse_filter({"price": {"$lt": 50}})),
        "attributes": [a.to_json() for a in index.manifest.attributes],
        "segments": {str(p): index.manifest.segments[p].__dict__ for p in parts.tolist()},
        "queries": pack_array(runtime_indexes.queries[:2].astype(np.float32)),
        "query_ids": pack_array(np.arange(2, dtype=np.int32)),
        "pairs": pack_array(pairs),
        "include_attributes": True,
    }


def check(out) -> None:
    assert isinstance(out, dict), out
    if "error" in out:
        err = out["error"]
        assert set(err) == {"status", "code", "message"}, err
        assert err["status"] in (500, 502, 503, 504) and isinstance(err["message"], str) and err["code"], err
    else:
        assert {"ids", "distances", "query_ids", "stats"} <= set(out), out


def test_the_valid_event_answers(worker_app, valid_event):
    out = worker_app.handler(copy.deepcopy(valid_event), Context())
    check(out)
    assert "error" not in out, out


@SETTINGS
@given(event=json_any)
def test_arbitrary_events(worker_app, event):
    check(worker_app.handler(event, Context()))


MEMBERS = ["index", "position", "tree", "k", "params", "predicate", "attributes", "segments", "queries"]
MEMBERS += ["query_ids", "pairs", "include_attributes", "deadline", "name", "build_id", "deleted"]
dtypes = st.sampled_from(["float32", "int64", "int32", "uint8"])


@st.composite
def packed(draw):
    """A well-formed packed array of any allowed dtype and a small shape, or a broken one."""
    dtype = draw(dtypes)
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    n = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n))
    arr = np.array(values, dtype=np.int64).astype(dtype).reshape(shape)
    doc = pack_array(arr)
    broken = draw(st.sampled_from([None, "shape", "data", "dtype"]))
    if broken:
        doc[broken] = draw(json_any)
    return doc


@st.composite
def mutated(draw, valid):
    event = copy.deepcopy(valid)
    how = draw(
        st.sampled_from(["delete", "replace", "packed", "pairs", "tree", "segment", "position", "predicate"])
    )
    member = draw(st.sampled_from(MEMBERS))
    if how == "delete":
        event.pop(member, None)
    elif how == "replace":
        event[member] = draw(json_any)
    elif how == "packed":
        event[draw(st.sampled_from(["queries", "query_ids", "pairs"]))] = draw(packed())
    elif how == "pairs":  # partitions / rows that may be out of range or not in "segments"
        rows = draw(st.lists(st.tuples(st.integers(-3, 40), st.integers(-3, 4)), max_size=6))
        event["pairs"] = pack_array(np.array(rows, dtype=np.int32).reshape(-1, 2))
    elif how == "tree":
        event["tree"] = {
            "branching": draw(st.one_of(st.integers(-2, 5), json_any)),
            "depth": draw(st.one_of(st.integers(-2, 4), json_any)),
            "prefix": draw(st.one_of(st.just("squash"), json_any)),
        }
    elif how == "segment":
        part = draw(st.sampled_from(sorted(event["segments"])))
        field = draw(st.sampled_from(["key", "size", "sha256", "extra"]))
        event["segments"][part] = event["segments"][part] | {field: draw(json_any)}
    elif how == "predicate":  # a parsed filter with any field, operator and operand
        ops = st.sampled_from(
            ["$eq", "$ne", "$gte", "$lte", "$in", "$nin", "$exists", "$any", "$all", "$and"]
        )
        leaf = st.fixed_dictionaries(
            {"field": st.sampled_from(["price", "label", "id", "nope"]), "op": ops, "value": json_any}
        )
        event["predicate"] = draw(st.one_of(leaf, st.fixed_dictionaries({"op": ops, "of": st.lists(leaf)})))
    else:
        event["position"] = draw(st.one_of(st.integers(-3, 10), st.floats(), st.text(max_size=3)))
    return event


@SETTINGS
@given(data=st.data())
def test_events_one_mutation_from_valid(worker_app, valid_event, data):
    event = data.draw(mutated(valid_event))
    check(worker_app.handler(event, Context()))


def test_packed_arrays_floats_raw_integers_zlib_and_old_events_still_read():
    import base64
    import zlib

    from squash.errors import InputError
    from squash.runtime.codec import pack_array, unpack_array

    q = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    ids = np.arange(40, dtype=np.int64)
    assert pack_array(q)["codec"] == "raw" and pack_array(ids)["codec"] == "zlib"
    np.testing.assert_array_equal(unpack_array(pack_array(q), "q"), q)
    np.testing.assert_array_equal(unpack_array(pack_array(ids), "ids"), ids)
    old = {"dtype": "float32", "shape": [3, 5], "data": base64.b64encode(zlib.compress(q.tobytes())).decode()}
    np.testing.assert_array_equal(unpack_array(old, "q"), q)  # an event from before "codec"
    with pytest.raises(InputError):
        unpack_array(pack_array(q) | {"codec": "lz4"}, "q")
    with pytest.raises(InputError):
        unpack_array(pack_array(q) | {"codec": "zlib"}, "q")  # raw bytes claimed compressed
