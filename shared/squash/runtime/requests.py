"""The bodies of the HTTP API and of direct invocations: pydantic models, checked field by field.

Every problem becomes an :class:`InputError` whose ``field`` names the offending key, so
the handler can answer 400 with a message a user can act on. Checks that need the index
(dimension, filter fields) happen later, against its manifest.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ..errors import InputError
from ..index import validate_k
from ..inputs import check_magnitude
from ..jsontext import MAX_JSON_DEPTH, loads
from ..params import DEFAULT_TARGET_RECALL, MAX_INT_PARAM, MAX_K, SearchParams
from .wire import decode_array, is_packed

INCLUDE_CHOICES = ("distance", "score", "attributes")
MAX_QUERIES = 10_000
_KEYS = {"vector", "vectors", "k", "filter", "include", "params", "encoding"}
_M = TypeVar("_M", bound="BaseModel")


@dataclass(frozen=True)
class QueryRequest:
    vectors: np.ndarray  # (Q, d) float32, finite, not yet checked against the index's d
    k: int
    filter: Any
    include: frozenset[str]
    params: SearchParams
    vector_field: str = "vector"  # the body key the queries came in ("vector" or "vectors")
    encoding: str = "json"  # of the answer: "json" (lists of hits) or "binary" (packed arrays)


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


def _vectors(value: Any, field: str, single: bool) -> np.ndarray:
    """Query vectors from nested JSON lists or a packed array (:mod:`.wire`), converted by
    numpy in bulk (never number by number) and checked the same way either way."""
    shape = "a list of numbers" if single else "a non-empty list of equal-length lists of numbers"
    if is_packed(value):
        arr = decode_array(value, field, (1, 2) if single else (2,))
        if single and arr.ndim == 2 and arr.shape[0] != 1:
            raise InputError(
                f"{field}: a packed vector has shape [d] or [1, d], got {list(arr.shape)}", field=field
            )
        shape = "a packed array of shape [d]" if single else "a packed array of shape [Q, d], Q and d > 0"
    else:
        try:
            arr = np.asarray(value)
            if arr.dtype == object:  # integers past int64/uint64, e.g. 2**64: float64 or too large
                arr = arr.astype(np.float64)
        except OverflowError as exc:
            raise InputError(f"{field} holds a number too large for float32", field=field) from exc
        except (TypeError, ValueError) as exc:  # ragged nesting, strings, null
            raise InputError(f"{field} must be {shape}", field=field) from exc
        if arr.dtype.kind not in "iuf" or arr.ndim != (1 if single else 2):
            raise InputError(f"{field} must be {shape}", field=field)
    if arr.size == 0:
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
    return arr.astype(np.float32, copy=False)


# --- the bodies as pydantic models ------------------------------------------------------------
#
# The models are what Powertools validates HTTP bodies with and what the OpenAPI document is
# generated from; direct invocations go through the same models (:func:`validate`). Rules that
# span fields or need numpy (vectors, non-finite numbers anywhere, the exact-one rule) live in
# validators that raise InputError themselves: pydantic lets any exception but ValueError and
# AssertionError through, so those keep their messages and the field they name. Type errors
# pydantic finds itself come out as a ValidationError, which :func:`input_error` turns into the
# same InputError shape (field: the offending key; for a search knob, the knob).

PACKED_VECTORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "PackedArray",
    "description": "Little-endian float32 values, row-major, as standard base64 (no compression).",
    "required": ["dtype", "shape", "data"],
    "additionalProperties": False,
    "properties": {
        "dtype": {"type": "string", "enum": ["float32"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
        "data": {"type": "string", "format": "byte"},
    },
}
_NUMBERS = {"type": "array", "items": {"type": "number"}, "minItems": 1}
VectorField = Annotated[
    Any,
    WithJsonSchema(
        {
            "description": "One query: a list of numbers or a packed array of shape [d].",
            "oneOf": [_NUMBERS, PACKED_VECTORS_SCHEMA],
        }
    ),
]
VectorsField = Annotated[
    Any,
    WithJsonSchema(
        {
            "description": f"A batch (at most {MAX_QUERIES:,}): lists of numbers or a packed array [Q, d].",
            "oneOf": [{"type": "array", "items": _NUMBERS, "minItems": 1}, PACKED_VECTORS_SCHEMA],
        }
    ),
]
FilterField = Annotated[
    Any, WithJsonSchema({"type": "object", "description": "The filter language (README, Filter language)."})
]


class _Body(BaseModel):
    """Common configuration: unknown keys are an error, nothing is coerced silently."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def __repr_args__(self) -> Any:
        """Arrays by shape, never by value: Powertools logs every route's arguments with an
        f-string (``logger.debug(f"Calling API Route Handler: {route_args}")``), evaluated
        at every level, and numpy's repr of one 784-d query costs ~8 ms per request."""
        for name, value in super().__repr_args__():
            if isinstance(value, np.ndarray):
                value = _ArrayRepr(value)
            yield name, value


class _ArrayRepr:
    __slots__ = ("text",)

    def __init__(self, arr: np.ndarray) -> None:
        self.text = f"<{arr.dtype} array of shape {list(arr.shape)}>"

    def __repr__(self) -> str:
        return self.text


class SearchParamsBody(_Body):
    """The ``params`` object: :class:`~squash.params.SearchParams` knobs (README, Search knobs)."""

    target_recall: float = Field(DEFAULT_TARGET_RECALL, gt=0, le=1)
    plan: Literal["auto", "routed", "exact"] = "auto"
    routing_factor: float | None = Field(None, ge=1)
    min_candidates: int | None = Field(None, ge=0, le=MAX_INT_PARAM)
    min_partitions: float | None = Field(None, ge=0)
    max_partitions: int = Field(0, ge=0, le=MAX_INT_PARAM)
    rerank: Literal["auto", "none", "fine", "float32", "exact"] = "auto"
    sketch_keep: float = Field(0.9, gt=0, le=1)
    rerank_factor: int = Field(4, ge=1, le=MAX_INT_PARAM)
    levels: Literal["auto", "all", "exact"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _knobs(cls, obj: Any) -> Any:
        """SearchParams' own checks (messages name the knob), then the normalised values."""
        return SearchParams.from_dict(obj).to_dict() if obj is not None else obj

    def to_params(self) -> SearchParams:
        return SearchParams(**self.model_dump(exclude_unset=True))


class QueryBody(_Body):
    """``POST /indexes/{index}/query``: exactly one of ``vector`` and ``vectors``."""

    vector: VectorField = None
    vectors: VectorsField = None
    k: int = Field(10, ge=1, le=MAX_K)
    filter: FilterField = None
    include: list[Literal["distance", "score", "attributes"]] = Field(
        default_factory=lambda: ["distance"], description="Columns per hit."
    )
    params: SearchParamsBody | None = None
    encoding: Literal["json", "binary"] = Field(
        "json", description='"binary": ids, distances and scores come back as packed arrays.'
    )

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise InputError("request body must be a JSON object", field="body")
        check_numbers(doc)
        unknown = sorted(set(map(str, doc)) - _KEYS)
        if unknown:
            raise InputError(
                f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}",
                field=unknown[0],
            )
        if ("vector" in doc) == ("vectors" in doc):
            raise InputError(
                'give exactly one of "vector" (one query) or "vectors" (a batch)', field="vector"
            )
        return doc

    @field_validator("vector", "vectors", mode="before")
    @classmethod
    def _vectors(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else _vectors(value, info.field_name, single=info.field_name == "vector")

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> int:
        return validate_k(value)

    @field_validator("include", mode="before")
    @classmethod
    def _include(cls, include: Any) -> Any:
        if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
            raise InputError(f"include must be a list drawn from {list(INCLUDE_CHOICES)}", field="include")
        bad = sorted(set(include) - set(INCLUDE_CHOICES))
        if bad:
            raise InputError(
                f"include: unknown value(s) {bad}; choose from {list(INCLUDE_CHOICES)}", field="include"
            )
        return include

    def request(self) -> QueryRequest:
        field = "vector" if self.vector is not None else "vectors"
        return QueryRequest(
            vectors=self.vector if self.vector is not None else self.vectors,
            k=self.k,
            filter=self.filter,
            include=frozenset(self.include),
            params=self.params.to_params() if self.params is not None else SearchParams(),
            vector_field=field,
            encoding=self.encoding,
        )


MAX_DELETE_IDS = 100_000
MAX_UPSERT_ROWS = 10_000
IdList = Annotated[list[int], BeforeValidator(lambda ids: _ids(ids))]


def _ids(ids: Any) -> list[int]:
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InputError("ids must be a list of integers", field="ids")
    return ids


class DeleteBody(_Body):
    """``POST /indexes/{index}/delete``: ``{"ids": [...]}`` or ``{"filter": {...}}``."""

    ids: IdList | None = Field(None, max_length=MAX_DELETE_IDS)
    filter: FilterField = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise InputError("the delete body must be a JSON object", field="body")
        extra = sorted(set(map(str, doc)) - {"ids", "filter"})
        if extra:
            raise InputError(f"unknown field(s) {extra}; a delete takes ids or filter", field=extra[0])
        if len(doc) != 1:
            raise InputError('give exactly one of "ids" and "filter"', field="ids")
        check_numbers(doc)
        ids = doc.get("ids")
        if "ids" in doc and len(_ids(ids)) > MAX_DELETE_IDS:
            raise InputError(f"ids: at most {MAX_DELETE_IDS:,} per request, got {len(ids):,}", field="ids")
        return doc


UpsertVectors = Annotated[
    Any,
    WithJsonSchema(
        {
            "description": f"At most {MAX_UPSERT_ROWS:,} rows: lists of numbers or a packed array [n, d].",
            "oneOf": [{"type": "array", "items": _NUMBERS}, PACKED_VECTORS_SCHEMA],
        }
    ),
]


class UpsertBody(_Body):
    """``POST /indexes/{index}/upsert``: ids, vectors and (optionally) attributes per row."""

    ids: IdList = Field(max_length=MAX_UPSERT_ROWS)
    vectors: UpsertVectors
    attributes: list[dict[str, Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise InputError("the upsert body must be a JSON object", field="body")
        extra = sorted(set(map(str, doc)) - {"ids", "vectors", "attributes"})
        if extra:
            raise InputError(
                f"unknown field(s) {extra}; an upsert takes ids, vectors, attributes", field=extra[0]
            )
        for key in ("ids", "vectors"):
            if key not in doc:
                raise InputError(f"an upsert needs {key!r}", field=key)
        ids, vectors, attrs = doc["ids"], doc["vectors"], doc.get("attributes")
        if len(_ids(ids)) > MAX_UPSERT_ROWS:
            raise InputError(f"ids: at most {MAX_UPSERT_ROWS:,} per request, got {len(ids):,}", field="ids")
        if is_packed(vectors):
            doc = doc | {"vectors": decode_array(vectors, "vectors", (2,))}
        elif not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
            raise InputError("vectors must be a list of lists of numbers", field="vectors")
        if attrs is not None and (not isinstance(attrs, list) or not all(isinstance(a, dict) for a in attrs)):
            raise InputError("attributes must be a list of objects, one per vector", field="attributes")
        check_numbers({k: v for k, v in doc.items() if k != "vectors"})
        return doc


def input_error(errors: list[dict[str, Any]]) -> InputError:
    """The first of pydantic's (or Powertools') validation errors as our InputError: the field
    is the offending key (for a search knob, the knob, as SearchParams names it), the
    message says where and what."""
    if not errors:
        return InputError("request body is invalid", field="body")
    err = errors[0]
    loc = tuple(p for p in err.get("loc", ()) if p != "body") or ("body",)
    if err.get("type") == "missing" and len(loc) == 1:
        return InputError(f"{loc[0]} is required", field=str(loc[0]))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return InputError(f"{_dotted(loc)}: {msg}", field=_field_of(loc))


def validate(model: type[_M], doc: Any) -> _M:
    """``model`` from a decoded body (direct invocations: the same rules as over HTTP)."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise input_error(exc.errors(include_url=False)) from None


def parse_query(doc: Any) -> QueryRequest:
    """Validate a decoded query body (see README, "HTTP API")."""
    return validate(QueryBody, doc).request()


def parse_delete(doc: Any) -> dict[str, Any]:
    """A delete body, checked before anything is read or written."""
    return validate(DeleteBody, doc).model_dump(exclude_unset=True)


def parse_upsert(doc: Any) -> dict[str, Any]:
    """An upsert body, checked for shape before anything is read or written (values are
    checked by the write)."""
    return validate(UpsertBody, doc).model_dump(exclude_unset=True)
