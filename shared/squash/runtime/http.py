"""How squash errors look over HTTP: one status mapping and one JSON error shape."""

from __future__ import annotations

from typing import Any

from ..errors import (
    IndexFormatError,
    IndexNotFoundError,
    InputError,
    PayloadTooLargeError,
    SquashError,
    UpstreamError,
    WriteConflictError,
    WritesDisabledError,
)


def status_of(exc: SquashError) -> int:
    """400 bad input, 404 unknown index, 413 too large, 502/503 worker trouble, 500 otherwise."""
    if isinstance(exc, UpstreamError):
        return exc.status
    if isinstance(exc, WriteConflictError):
        return 409
    if isinstance(exc, WritesDisabledError):
        return 403
    for kind, status in ((InputError, 400), (IndexNotFoundError, 404), (PayloadTooLargeError, 413)):
        if isinstance(exc, kind):
            return status
    return 500 if isinstance(exc, IndexFormatError) else 503


#: Members of an HTTP API payload-2.0 event the coordinator reads: (path, type, required).
_ENVELOPE: tuple[tuple[tuple[str, ...], type | tuple[type, ...], bool], ...] = (
    (("rawPath",), str, True),
    (("requestContext", "http", "method"), str, True),
    (("requestContext", "http", "path"), str, True),
    (("requestContext", "stage"), str, True),
    (("headers",), dict, False),
    (("queryStringParameters",), dict, False),
    (("pathParameters",), dict, False),
    (("cookies",), list, False),
    (("body",), (str, type(None)), False),
    (("isBase64Encoded",), bool, False),
)
ALLOWED_ACTIONS = ("query", "info", "delete", "upsert", "warm")


def is_http_event(event: Any) -> bool:
    """Whether an event claims to be an API Gateway HTTP API event (has ``requestContext``)."""
    return isinstance(event, dict) and "requestContext" in event


def check_http_event(event: dict[str, Any]) -> None:
    """Raise InputError naming the first member of a payload-2.0 event that is missing or of
    the wrong type, so a partial envelope (a hand-written direct invocation) is a 400
    instead of a KeyError inside the event handler."""
    for path, kind, required in _ENVELOPE:
        node: Any = event
        for depth, key in enumerate(path):
            if not isinstance(node, dict):
                where = ".".join(path[:depth])
                raise InputError(_envelope_message(f"{where} is not an object"), field="requestContext")
            if key not in node:
                if not required:
                    break
                raise InputError(_envelope_message(f"{'.'.join(path)} is missing"), field=path[0])
            node = node[key]
        else:
            if not isinstance(node, kind):
                raise InputError(_envelope_message(f"{'.'.join(path)} has the wrong type"), field=path[0])
    for name in ("headers", "queryStringParameters", "pathParameters"):
        values = event.get(name) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise InputError(_envelope_message(f"{name} must map strings to strings"), field=name)
    if not all(isinstance(c, str) for c in event.get("cookies") or []):
        raise InputError(_envelope_message("cookies must be a list of strings"), field="cookies")


def _envelope_message(problem: str) -> str:
    return (
        f"malformed HTTP API event: {problem}. Send a complete API Gateway payload-2.0 event, "
        'or invoke directly with the query body plus "index" (and "action": "query" or "info")'
    )


def error_body(exc: SquashError) -> dict[str, Any]:
    """``{"error": {"code", "message", "field"?}}``"""
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        err["field"] = exc.field
    return {"error": err}
