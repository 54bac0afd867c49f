"""The HTTP API's answers as pydantic models: for the OpenAPI document only.

The coordinator builds its answers as plain dicts (numpy straight to JSON); validating a
10,000-hit answer through pydantic would cost more than the search. These models say what
those dicts hold, and tests check real answers against the generated document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    """Answers may gain members: clients must ignore the ones they do not know."""

    model_config = ConfigDict(extra="allow")


class PackedOut(BaseModel):
    """A packed array: standard base64 of the little-endian values, row-major, uncompressed."""

    dtype: Literal["int64", "float32"]
    shape: list[int] = Field(description="[Q, k]")
    data: str = Field(json_schema_extra={"format": "byte"})


class ErrorDetail(BaseModel):
    code: str = Field(description="invalid_input, invalid_filter, not_found, index_not_found, ...")
    message: str
    field: str | None = Field(None, description="The offending key (a search knob: the knob).")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx the coordinator answers."""

    error: ErrorDetail


class Hit(_Open):
    id: int
    distance: float | None = Field(None, description='With include "distance" (smaller is better).')
    score: float | None = Field(None, description='With include "score" (larger is better).')
    attributes: dict[str, Any] | None = Field(None, description='With include "attributes".')


class QueryAnswer(BaseModel):
    """``encoding: "json"`` (default): one list of hits per query, nearest first."""

    results: list[list[Hit]]
    stats: dict[str, Any] = Field(description="Plan, candidate counts, nodes, storage bytes, timings.")


class BinaryQueryAnswer(BaseModel):
    """``encoding: "binary"``: ids (Q, k) int64 padded with -1, distances/scores (Q, k)
    float32 padded with +inf (each only when asked for, as with JSON)."""

    ids: PackedOut
    distances: PackedOut | None = None
    scores: PackedOut | None = None
    attributes: list[list[dict[str, Any]]] | None = Field(
        None, description="Per query, per hit in ids order; padding left out."
    )
    stats: dict[str, Any]


class AttributeInfo(_Open):
    name: str
    type: str


class IndexInfo(_Open):
    """``GET /indexes/{index}``: the manifest summary."""

    index: str
    n: int
    dims: int
    metric: str
    build_id: str
    attributes: list[AttributeInfo]


class IndexEntry(_Open):
    name: str
    warm: bool = Field(description="This coordinator has the index open (then n, dims, metric, build_id).")
    n: int | None = None
    dims: int | None = None
    metric: str | None = None
    build_id: str | None = None


class IndexList(BaseModel):
    """``GET /indexes``: the index names under the deployment's prefix."""

    indexes: list[IndexEntry]


class Tree(BaseModel):
    branching: int
    depth: int
    nodes: int


class Health(BaseModel):
    status: Literal["ok"]
    tree: Tree


class UpsertAnswer(BaseModel):
    index: str
    version: int
    upserted: int
    replaced: int
    attempts: int


class DeleteAnswer(BaseModel):
    index: str
    version: int
    deleted: int
    not_found: int
    attempts: int


#: What each error status means, for the OpenAPI document.
ERRORS = {
    400: "Bad input; error.field names the offending key",
    403: "Writes are disabled on this deployment (writes_disabled)",
    404: "No index under that name (index_not_found)",
    409: "Other writers committed first on every retry (write_conflict): retry",
    413: "Request or answer over Lambda's 6 MB limit (payload_too_large)",
    500: "The stored index is corrupt (index_corrupt)",
    502: "A worker kept failing (worker_failed)",
    503: "Workers or storage unavailable: retry later",
    504: "Not answered within the request's deadline (deadline_exceeded)",
}


def responses(answer: Any, description: str, *errors: int) -> dict[int, dict[str, Any]]:
    """A route's documented responses: ``answer`` for 200, ErrorBody for each error status."""
    out: dict[int, dict[str, Any]] = {
        200: {"description": description, "content": {"application/json": {"model": answer}}}
    }
    for status in errors:
        out[status] = {"description": ERRORS[status], "content": {"application/json": {"model": ErrorBody}}}
    return out
