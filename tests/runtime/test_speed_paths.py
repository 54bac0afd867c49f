"""What the speed work of issue #13 relies on, tested so that undoing it fails:

- a worker decodes an index's attribute specs once per build (keyed on the index and build
  id, checked against the event's own member, so no rebuild or altered event is served
  stale specs), and answers the same with the cached specs as with fresh ones;
- the HTTP body models never format query arrays by value (Powertools logs every route's
  arguments with an eager f-string);
- a packed-array body skips the regex depth scan, and deep bodies are still refused;
- the coordinator's default serves Fashion-MNIST-sized indexes (38 MiB hot tier) alone, and
  template.yaml says the same.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

import squash
from squash import attributes as attributes_module
from squash import jsontext
from squash.datasets import sample_dataset
from squash.errors import InputError
from squash.filters import node_to_json
from squash.runtime import worker as worker_module
from squash.runtime.codec import pack_array
from squash.runtime.config import DEFAULT_LOCAL_MAX_MB, RuntimeConfig
from squash.runtime.requests import QueryBody, parse_body, parse_query
from squash.runtime.wire import encode_array
from squash.runtime.worker import NodeRequest, WorkerNode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    ds = sample_dataset()
    uri = (tmp_path_factory.mktemp("speed") / "sample").as_uri()
    squash.build_index(ds.base, uri, ds.attributes)
    return squash.open_index(uri), ds


def _event(index: squash.Index, queries: np.ndarray, filt: dict | None = None) -> dict:
    parts = np.arange(index.manifest.partitions, dtype=np.int32)
    rows = np.arange(queries.shape[0], dtype=np.int32)
    pairs = np.stack([np.repeat(parts, rows.size), np.tile(rows, parts.size)], axis=1).astype(np.int32)
    return {
        "index": index.storage.uri,
        "build_id": index.manifest.build_id,
        "position": 0,
        "tree": {"branching": 2, "depth": 0, "prefix": "squash"},
        "k": 5,
        "params": {},
        "predicate": node_to_json(index.parse_filter(filt)) if filt else None,
        "attributes": [a.to_json() for a in index.manifest.attributes],
        "segments": {str(p): index.manifest.segments[p].__dict__ for p in parts.tolist()},
        "queries": pack_array(index.prepare_queries(queries)),
        "query_ids": pack_array(rows),
        "pairs": pack_array(pairs),
        "include_attributes": True,
    }


@pytest.fixture()
def decodes(monkeypatch):
    """How many attribute specs were decoded from JSON (the worker's cache emptied first)."""
    monkeypatch.setattr(worker_module, "_SPECS", {})
    calls = []
    real = attributes_module.AttributeSpec.from_json.__func__

    def counting(cls, obj):
        calls.append(obj["name"])
        return real(cls, obj)

    monkeypatch.setattr(attributes_module.AttributeSpec, "from_json", classmethod(counting))
    return calls


def test_worker_decodes_specs_once_per_build(index, decodes):
    idx, ds = index
    event = _event(idx, ds.queries[:2])
    n = len(event["attributes"])
    assert n > 0
    first = NodeRequest.from_event(copy.deepcopy(event))
    second = NodeRequest.from_event(copy.deepcopy(event))  # an equal member, another object
    assert len(decodes) == n, "the second event of the same build decoded its specs again"
    assert second.specs is first.specs


def test_worker_spec_cache_is_never_stale(index, decodes):
    idx, ds = index
    event = _event(idx, ds.queries[:2])
    n = len(event["attributes"])
    NodeRequest.from_event(copy.deepcopy(event))
    rebuilt = copy.deepcopy(event) | {"build_id": "another-build"}
    NodeRequest.from_event(rebuilt)
    assert len(decodes) == 2 * n, "a new build id must be decoded afresh"
    # The same build id with other specs (a foreign or hand-made event): decoded, not reused.
    changed = copy.deepcopy(event)
    numeric = next(a for a in changed["attributes"] if a.get("cells", {}).get("hi"))
    numeric["cells"]["hi"][-1] = numeric["cells"]["hi"][-1] + 1000
    got = NodeRequest.from_event(changed)
    assert len(decodes) == 3 * n
    spec = next(s for s in got.specs if s.name == numeric["name"])
    assert float(spec.hi[-1]) == float(numeric["cells"]["hi"][-1])
    # A malformed member is still an error, cache or not.
    broken = copy.deepcopy(event)
    broken["attributes"][0] = {"name": "x"}
    with pytest.raises((InputError, KeyError)):
        NodeRequest.from_event(broken)


def test_worker_answers_the_same_with_cached_specs(index, monkeypatch):
    idx, ds = index
    filt = {"price": {"$lt": 50}} if "price" in ds.attributes.column_names else None
    event = _event(idx, ds.queries[:3], filt)
    node = WorkerNode(lambda *_: pytest.fail("a depth-0 tree invokes no child"), 1 << 26)
    monkeypatch.setattr(worker_module, "_SPECS", {})
    fresh = node.handle(copy.deepcopy(event))
    cached = node.handle(copy.deepcopy(event))
    assert len(worker_module._SPECS) == 1
    assert "error" not in fresh, fresh
    for key in ("ids", "distances", "stats_per_query"):
        assert cached[key] == fresh[key]
    assert cached["attributes"] == fresh["attributes"]
    assert (worker_module.unpack_array(fresh["ids"], "ids") >= 0).all()


def test_query_body_repr_never_formats_the_vectors():
    q = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    body = QueryBody.model_validate({"vector": encode_array(q[0]), "k": 10})
    text = repr(body)
    assert "array of shape [1, 784]" in text
    assert len(text) < 400, text
    assert not re.search(r"\d\.\d{4}", text), "numbers of the query leaked into the repr"
    batch = QueryBody.model_validate({"vectors": q.tolist() * 3})
    assert "array of shape [3, 784]" in repr(batch) and len(repr(batch)) < 400


def test_packed_body_skips_the_depth_scan_but_deep_bodies_fail(monkeypatch):
    scans = []
    real = jsontext.nesting_depth
    monkeypatch.setattr(jsontext, "nesting_depth", lambda text: scans.append(1) or real(text))
    q = np.random.default_rng(1).random((50, 16), dtype=np.float32)
    text = json.dumps({"vectors": encode_array(q), "k": 3})
    req = parse_query(parse_body(text))
    assert np.array_equal(req.vectors, q)
    assert scans == [], "a body with a handful of brackets needs no depth scan"
    with pytest.raises(InputError, match="nested deeper than"):
        parse_body("[" * (jsontext.MAX_JSON_DEPTH + 1) + "]" * (jsontext.MAX_JSON_DEPTH + 1))
    assert scans == [1]
    # Many brackets inside a string: the exact scan runs, and the body is shallow enough.
    assert parse_body(json.dumps({"s": "[" * 500}))["s"] == "[" * 500


def test_default_serves_fashion_mnist_sized_indexes_alone():
    assert DEFAULT_LOCAL_MAX_MB == 64
    config = RuntimeConfig.from_env({})
    assert config.local_max_bytes == 64 << 20
    fashion_mnist_hot = 38 << 20  # 60,000 x 784 at the default 6 bits per dimension
    assert fashion_mnist_hot <= config.local_max_bytes
    assert RuntimeConfig.from_env({"SQUASH_LOCAL_MAX_MB": "0"}).local_max_bytes == 0
    template = (ROOT / "template.yaml").read_text()
    block = template[template.index("  CoordinatorServesUpToMB:") :]
    assert re.search(r"Default: (\d+)", block).group(1) == str(DEFAULT_LOCAL_MAX_MB)
