"""Events that are not what the coordinator expects: partial HTTP envelopes, unknown
actions, odd index names — a 400 with the documented error body, never an exception."""

from __future__ import annotations

import pytest
from conftest import Context, http_event


def _full() -> dict:
    return http_event("GET", "/health")


def _without(event: dict, *path: str) -> dict:
    out = {
        **event,
        "requestContext": {**event["requestContext"], "http": dict(event["requestContext"]["http"])},
    }
    node = out
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1])
    return out


PARTIAL = {
    "http-empty": {"requestContext": {"http": {}}},
    "http-not-object": {"requestContext": {"http": "GET /health"}},
    "context-string": {"requestContext": "http"},
    "context-number": {"requestContext": 5},
    "context-list": {"requestContext": ["http"]},
    "method-only": {"requestContext": {"http": {"method": "GET"}}},
    "method-and-path": {"requestContext": {"http": {"method": "GET", "path": "/health"}}},
    "no-rawPath": _without(_full(), "rawPath"),
    "no-method": _without(_full(), "requestContext", "http", "method"),
    "no-stage": _without(_full(), "requestContext", "stage"),
    "method-number": {
        **_full(),
        "requestContext": {**_full()["requestContext"], "http": {"method": 3, "path": "/"}},
    },
    "headers-list": {**_full(), "headers": [1]},
    "header-value-number": {**_full(), "headers": {"content-type": 3}},
    "body-number": {**http_event("POST", "/indexes/sample/query", "{}"), "body": 5},
    "query-string-list": {**_full(), "queryStringParameters": [1]},
    "cookies-string": {**_full(), "cookies": "a=b"},
    "base64-flag-string": {**http_event("POST", "/indexes/sample/query", "{}"), "isBase64Encoded": "yes"},
}


@pytest.mark.parametrize("name", list(PARTIAL))
def test_partial_http_envelope_is_a_clear_400(coordinator_app, name):
    out = coordinator_app.handler(PARTIAL[name], Context())
    assert out["status"] == 400, out
    err = out["error"]
    assert err["code"] == "invalid_input" and err["message"], out
    assert "HTTP" in err["message"] or "event" in err["message"], out


def test_full_envelope_still_routes(coordinator_app):
    import json

    resp = coordinator_app.handler(_full(), Context())
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["status"] == "ok"
    no_headers = {k: v for k, v in _full().items() if k != "headers"}  # API Gateway may omit them
    assert coordinator_app.handler(no_headers, Context())["statusCode"] == 200


@pytest.mark.parametrize("action", ["drop", "INFO", "", ["info"], 3, None])
def test_unknown_action_is_a_400_listing_the_allowed_ones(coordinator_app, action):
    out = coordinator_app.handler({"index": "sample", "action": action}, Context())
    assert out["status"] == 400 and out["error"]["field"] == "action", out
    assert "query" in out["error"]["message"] and "info" in out["error"]["message"]


@pytest.mark.parametrize("index", [3, [], {}, None, "", "../x", "a" * 200])
def test_bad_index_names_in_direct_invocation_are_a_400(coordinator_app, index):
    out = coordinator_app.handler({"index": index, "vector": [1.0]}, Context())
    assert out["status"] == 400 and out["error"]["field"] == "index", out


def test_known_actions_work(coordinator_app, runtime_indexes):
    out = coordinator_app.handler({"index": "sample", "action": "info"}, Context())
    assert out["n"] == 2000
    q = runtime_indexes.queries[0].tolist()
    out = coordinator_app.handler({"index": "sample", "action": "query", "vector": q, "k": 2}, Context())
    assert len(out["results"][0]) == 2
    out = coordinator_app.handler({"index": "sample", "vector": q, "k": 2}, Context())
    assert len(out["results"][0]) == 2


@pytest.mark.parametrize("event", [[1, 2], "query", 3, None])
def test_event_that_is_not_an_object_is_a_400(coordinator_app, event):
    out = coordinator_app.handler(event, Context())
    assert out["status"] == 400 and out["error"]["field"] == "body"
