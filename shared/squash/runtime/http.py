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
)


def status_of(exc: SquashError) -> int:
    """400 bad input, 404 unknown index, 413 too large, 502/503 worker trouble, 500 otherwise."""
    if isinstance(exc, UpstreamError):
        return exc.status
    for kind, status in ((InputError, 400), (IndexNotFoundError, 404), (PayloadTooLargeError, 413)):
        if isinstance(exc, kind):
            return status
    return 500 if isinstance(exc, IndexFormatError) else 503


def error_body(exc: SquashError) -> dict[str, Any]:
    """``{"error": {"code", "message", "field"?}}``"""
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        err["field"] = exc.field
    return {"error": err}
