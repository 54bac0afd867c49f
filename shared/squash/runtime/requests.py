"""The query body of the HTTP API and of direct invocations, checked field by field.

Every problem becomes an :class:`InputError` whose ``field`` names the offending key, so
the handler can answer 400 with a message a user can act on. Checks that need the index
(dimension, filter fields) happen later, against its manifest.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..index import validate_k
from ..inputs import check_magnitude
from ..jsontext import MAX_JSON_DEPTH, loads
from ..params import SearchParams

INCLUDE_CHOICES = ("distance", "score", "attributes")
MAX_QUERIES = 10_000
_KEYS = {"vector", "vectors", "k", "filter", "include", "params"}


@dataclass(frozen=True)
class QueryRequest:
    vectors: np.ndarray  # (Q, d) float32, finite, not yet checked against the index's d
    k: int
    filter: Any
    include: frozenset[str]
    params: SearchParams
    vector_field: str = "vector"  # the body key the queries came in ("vector" or "vectors")


def parse_body(body: str | bytes | None) -> Any:
    """JSON text of an HTTP body; an empty or malformed body is a 400, not a crash."""
    if body is None or (isinstance(body, str | bytes) and not body.strip()):
        raise InputError("request body is empty: send a JSON object", field="body")
    return loads(body, "request body", field="body")


def check_numbers(doc: dict[str, Any]) -> None:
    """Every number of a body (outside the query vectors, which numpy checks in bulk) must be
    finite and within float64: JSON's NaN/Infinity and overflowing literals like 1e400 or a
    400-digit integer are a 400 naming where they are, not a 500 further down.

    Iterative and depth-bounded (MAX_JSON_DEPTH), so a direct invocation's event — parsed
    by the Lambda runtime, not by :func:`parse_body` — cannot exhaust the stack either.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [
        ((key,), val) for key, val in reversed(doc.items()) if key not in ("vector", "vectors")
    ]
    while stack:
        path, val = stack.pop()
        if len(path) > MAX_JSON_DEPTH and isinstance(val, dict | list):
            raise InputError(
                f"{_dotted(path[:3])}... is nested deeper than {MAX_JSON_DEPTH} levels",
                field=_field_of(path),
            )
        if isinstance(val, dict):
            stack.extend(((*path, k), v) for k, v in reversed(val.items()))
        elif isinstance(val, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(val))))
        elif isinstance(val, float) and not math.isfinite(val):
            raise InputError(
                f"{_dotted(path)} is {val!r}: numbers must be finite (no NaN, Infinity or 1e400)",
                field=_field_of(path),
            )
        elif isinstance(val, int) and not isinstance(val, bool) and abs(val) > sys.float_info.max:
            raise InputError(
                f"{_dotted(path)} is too large (an integer of {len(str(abs(val)))} digits); "
                "numbers must fit a float64",
                field=_field_of(path),
            )


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


def _field_of(path: tuple[str | int, ...]) -> str:
    """The error's field: the knob for params (as SearchParams names it), else the body key."""
    if path[0] == "params" and len(path) > 1 and isinstance(path[1], str):
        return path[1]
    return str(path[0])


def parse_query(doc: Any) -> QueryRequest:
    """Validate a decoded query body (see README, "HTTP API")."""
    if not isinstance(doc, dict):
        raise InputError("request body must be a JSON object", field="body")
    check_numbers(doc)
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}", field=unknown[0]
        )
    if ("vector" in doc) == ("vectors" in doc):
        raise InputError('give exactly one of "vector" (one query) or "vectors" (a batch)', field="vector")
    field = "vector" if "vector" in doc else "vectors"
    vectors = _vectors(doc[field], field, single=field == "vector")
    include = doc.get("include", ["distance"])
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise InputError(f"include must be a list drawn from {list(INCLUDE_CHOICES)}", field="include")
    bad = sorted(set(include) - set(INCLUDE_CHOICES))
    if bad:
        raise InputError(
            f"include: unknown value(s) {bad}; choose from {list(INCLUDE_CHOICES)}", field="include"
        )
    return QueryRequest(
        vectors=vectors,
        k=validate_k(doc.get("k", 10)),
        filter=doc.get("filter"),
        include=frozenset(include),
        params=SearchParams.from_dict(doc.get("params")),
        vector_field=field,
    )


def _vectors(value: Any, field: str, single: bool) -> np.ndarray:
    shape = "a list of numbers" if single else "a non-empty list of equal-length lists of numbers"
    try:
        arr = np.asarray(value)
        if arr.dtype == object:  # integers past int64/uint64, e.g. 2**64: float64 or too large
            arr = arr.astype(np.float64)
    except OverflowError as exc:
        raise InputError(f"{field} holds a number too large for float32", field=field) from exc
    except (TypeError, ValueError) as exc:  # ragged nesting, strings, null
        raise InputError(f"{field} must be {shape}", field=field) from exc
    if arr.dtype.kind not in "iuf" or arr.ndim != (1 if single else 2) or arr.size == 0:
        raise InputError(f"{field} must be {shape}", field=field)
    if not single and arr.shape[0] > MAX_QUERIES:
        raise InputError(
            f"{field} holds {arr.shape[0]} queries; at most {MAX_QUERIES} per request", field=field
        )
    arr = np.atleast_2d(arr)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        where = "" if single else f" (query {int(np.flatnonzero(bad)[0])})"
        raise InputError(f"{field} contains NaN or infinite values{where}", field=field)
    check_magnitude(arr, field, field=field, row="query")  # the build's rule, before the cast
    return arr.astype(np.float32)


_DELETE_KEYS = {"ids", "filter"}


def parse_delete(doc: Any) -> dict[str, Any]:
    """A delete body: ``{"ids": [...]}`` or ``{"filter": {...}}`` (exactly one), checked
    before anything is read or written."""
    if not isinstance(doc, dict):
        raise InputError("the delete body must be a JSON object", field="body")
    extra = sorted(set(doc) - _DELETE_KEYS)
    if extra:
        raise InputError(f"unknown field(s) {extra}; a delete takes ids or filter", field=extra[0])
    if len(doc) != 1:
        raise InputError('give exactly one of "ids" and "filter"', field="ids")
    check_numbers(doc)
    if "ids" in doc:
        ids = doc["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputError("ids must be a list of integers", field="ids")
        if len(ids) > MAX_DELETE_IDS:
            raise InputError(f"ids: at most {MAX_DELETE_IDS:,} per request, got {len(ids):,}", field="ids")
    return doc


MAX_DELETE_IDS = 100_000


_UPSERT_KEYS = {"ids", "vectors", "attributes"}
MAX_UPSERT_ROWS = 10_000


def parse_upsert(doc: Any) -> dict[str, Any]:
    """An upsert body: ``{"ids": [...], "vectors": [[...], ...], "attributes"?: [{...}, ...]}``,
    checked for shape before anything is read or written (values are checked by the write)."""
    if not isinstance(doc, dict):
        raise InputError("the upsert body must be a JSON object", field="body")
    extra = sorted(set(doc) - _UPSERT_KEYS)
    if extra:
        raise InputError(
            f"unknown field(s) {extra}; an upsert takes ids, vectors, attributes", field=extra[0]
        )
    for key in ("ids", "vectors"):
        if key not in doc:
            raise InputError(f"an upsert needs {key!r}", field=key)
    ids, vectors, attrs = doc["ids"], doc["vectors"], doc.get("attributes")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InputError("ids must be a list of integers", field="ids")
    if len(ids) > MAX_UPSERT_ROWS:
        raise InputError(f"ids: at most {MAX_UPSERT_ROWS:,} per request, got {len(ids):,}", field="ids")
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise InputError("vectors must be a list of lists of numbers", field="vectors")
    if attrs is not None and (not isinstance(attrs, list) or not all(isinstance(a, dict) for a in attrs)):
        raise InputError("attributes must be a list of objects, one per vector", field="attributes")
    check_numbers({k: v for k, v in doc.items() if k != "vectors"})
    return doc
