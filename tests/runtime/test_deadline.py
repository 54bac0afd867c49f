"""Deadlines travel down the tree: a node whose storage or children stall answers a structured
504 ``deadline_exceeded`` before its function timeout, never hangs (#9 item 9).

Storage here is a fake that sleeps (until released) in front of the moto S3 index; the local
stack version (moto frozen with SIGSTOP) is tests/integration/test_faults.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import BUCKET, Context, http_event
from local_tree import LocalTree

from squash.errors import DeadlineExceededError, UpstreamError
from squash.runtime import deadline
from squash.runtime.invoke import LambdaInvoker
from squash.runtime.worker import WorkerNode
from squash.storage import open_storage, s3_timeouts

URI = f"s3://{BUCKET}/indexes/sample"


class SleepyStorage:
    """A storage whose reads block until ``release`` is set (at most 20 s)."""

    def __init__(self, inner, release: threading.Event) -> None:
        self.inner, self.release, self.uri = inner, release, inner.uri

    def read(self, key: str) -> bytes:
        self.release.wait(20)
        return self.inner.read(key)

    def version(self, key: str) -> str:
        self.release.wait(20)
        return self.inner.version(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)


class LambdaContext(Context):
    def __init__(self, remaining_ms: int) -> None:
        self.until = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # let abandoned reads finish


@pytest.fixture
def stalled_tree(coordinator_app, release):
    """The coordinator's tree replaced by cold workers whose segment reads stall."""
    tree = LocalTree("squash", 3)
    for node in tree.nodes.values():
        node._storages[URI] = SleepyStorage(open_storage(URI), release)
    saved = coordinator_app.COORDINATOR.invoke
    coordinator_app.COORDINATOR.invoke = tree
    yield tree
    coordinator_app.COORDINATOR.invoke = saved


def _body(runtime_indexes) -> dict:
    return {"vector": runtime_indexes.queries[0].tolist(), "k": 5}


def test_stalled_worker_storage_is_a_504_before_the_function_timeout(
    coordinator_app, runtime_indexes, stalled_tree
):
    coordinator_app.handler({"index": "sample", "action": "info"}, Context())  # coordinator warm
    started = time.monotonic()
    event = http_event("POST", "/indexes/sample/query", json.dumps(_body(runtime_indexes)))
    resp = coordinator_app.handler(event, LambdaContext(2500))
    took = time.monotonic() - started
    assert resp["statusCode"] == 504, resp
    err = json.loads(resp["body"])["error"]
    assert err["code"] == "deadline_exceeded" and "deadline" in err["message"], err
    assert took < 2.5, took  # answered inside the invocation's time, margin kept
    assert took > 1.0, took  # ... and not before the deadline


def test_http_deadline_counts_from_api_gateways_receive_time(coordinator_app, runtime_indexes, stalled_tree):
    coordinator_app.handler({"index": "sample", "action": "info"}, Context())
    event = http_event("POST", "/indexes/sample/query", json.dumps(_body(runtime_indexes)))
    event["requestContext"]["timeEpoch"] = int((time.time() - 27.5) * 1000)  # 27.5 s of the 30 gone
    started = time.monotonic()
    resp = coordinator_app.handler(event, LambdaContext(30_000))  # the function itself has 30 s
    assert resp["statusCode"] == 504, resp
    assert time.monotonic() - started < 2.0


def test_direct_invocation_gets_the_same_error_document(coordinator_app, runtime_indexes, stalled_tree):
    coordinator_app.handler({"index": "sample", "action": "info"}, Context())
    out = coordinator_app.handler({"index": "sample"} | _body(runtime_indexes), LambdaContext(1500))
    assert out["status"] == 504 and out["error"]["code"] == "deadline_exceeded", out


def test_stalled_coordinator_storage_is_a_504(coordinator_app, runtime_indexes, release, monkeypatch):
    from squash.runtime import coordinator as coord

    monkeypatch.setattr(coord, "open_storage", lambda uri: SleepyStorage(open_storage(uri), release))
    monkeypatch.setattr(coordinator_app.COORDINATOR, "_indexes", {})
    started = time.monotonic()
    resp = coordinator_app.handler(http_event("GET", "/indexes/sample"), LambdaContext(1500))
    assert resp["statusCode"] == 504, resp
    assert json.loads(resp["body"])["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 1.5


def test_worker_passes_a_smaller_deadline_to_its_children(runtime_indexes):
    seen: list[float] = []

    class Recorder(LocalTree):
        def __call__(self, function, payload):
            seen.append(payload["deadline"])
            return super().__call__(function, payload)

    tree = Recorder("squash", 3)
    root = tree.nodes["squash-worker-0"]
    until = time.time() + 20
    event = _worker_event(runtime_indexes) | {"deadline": until}
    out = root.handle(event)
    assert "error" not in out, out
    assert len(seen) == 2 and all(until - 0.6 < d < until for d in seen), (until, seen)


def test_worker_past_its_deadline_answers_at_once(runtime_indexes):
    """At once: before any work, so no child is invoked and no segment is read (asserted
    on what it did, not on a wall-clock bound a busy machine can break)."""
    tree = LocalTree("squash", 3)
    node = WorkerNode(tree, 1 << 20)
    out = node.handle(_worker_event(runtime_indexes) | {"deadline": time.time() - 1})
    assert out["error"]["code"] == "deadline_exceeded" and out["error"]["status"] == 504, out
    assert tree.calls == [] and node.cache.nbytes == 0 and len(node.cache) == 0


@pytest.mark.parametrize("bad", ["soon", float("nan"), True, [1]])
def test_malformed_deadline_is_a_structured_error(runtime_indexes, bad):
    node = WorkerNode(LocalTree("squash", 3), 1 << 20)
    out = node.handle(_worker_event(runtime_indexes) | {"deadline": bad})
    assert out["error"]["status"] == 502 and "deadline" in out["error"]["message"], out


def test_invoker_stops_retrying_at_the_deadline():
    class Throttled:
        calls = 0

        def invoke(self, **_kwargs):
            from botocore.exceptions import ClientError

            Throttled.calls += 1
            raise ClientError(
                {"Error": {"Code": "TooManyRequestsException", "Message": "slow down"}}, "Invoke"
            )

    invoker = LambdaInvoker(retries=5, backoff_s=0.2, client=Throttled())
    with pytest.raises(DeadlineExceededError):
        invoker("squash-worker-1", {"deadline": time.time() + 0.3})
    assert Throttled.calls <= 2
    with pytest.raises(UpstreamError) as err:  # no deadline: every retry, then 503
        LambdaInvoker(retries=1, backoff_s=0.01, client=Throttled())("squash-worker-1", {})
    assert err.value.status == 503


def test_remaining_time_comes_from_the_context_else_the_configured_timeout():
    assert 1.4 < deadline.remaining_s(LambdaContext(1500), 30) <= 1.5
    assert deadline.remaining_s(Context(), 30) == 30
    until = deadline.from_remaining(10, 1.0)
    assert 8.9 < until - time.time() <= 9.0
    assert deadline.from_remaining(1, 1.0) - time.time() == pytest.approx(0.8, abs=0.05)


def test_http_deadline_counts_from_when_api_gateway_received_the_request():
    received = time.time() - 12  # e.g. a slow cold start before the handler ran
    until = deadline.api_gateway(received * 1000, 1.0)
    assert until == pytest.approx(received + 29, abs=0.01)
    for implausible in (None, "x", True, (time.time() + 60) * 1000, 1795262400000 - 10**9):
        assert deadline.api_gateway(implausible, 1.0) - time.time() == pytest.approx(29, abs=0.05)


def test_s3_calls_are_bounded_inside_the_function_timeout(monkeypatch):
    connect, read, attempts = s3_timeouts()
    assert attempts * (connect + read) < 25
    monkeypatch.setenv("SQUASH_S3_READ_TIMEOUT", "1.5")
    monkeypatch.setenv("SQUASH_S3_MAX_ATTEMPTS", "2")
    assert s3_timeouts()[1:] == (1.5, 2)
    client = open_storage(URI).client
    assert client.meta.config.read_timeout == 1.5 and client.meta.config.connect_timeout == connect
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}


def _worker_event(ds) -> dict:
    """The root worker's event for one query over every partition (what the coordinator sends)."""
    import squash
    from squash.runtime.codec import pack_array

    index = squash.open_index(URI)
    import numpy as np

    parts = np.arange(index.manifest.partitions, dtype=np.int32)
    pairs = np.stack([parts, np.zeros_like(parts)], axis=1)
    return {
        "index": URI,
        "position": 0,
        "tree": {"branching": 2, "depth": 1, "prefix": "squash"},
        "k": 5,
        "params": {},
        "filter": None,
        "attributes": [a.to_json() for a in index.manifest.attributes],
        "segments": {str(p): index.manifest.segments[p].__dict__ for p in parts.tolist()},
        "queries": pack_array(ds.queries[:1].astype(np.float32)),
        "query_ids": pack_array(np.zeros(1, dtype=np.int32)),
        "pairs": pack_array(pairs),
        "include_attributes": False,
    }
