"""What the LangChain and LlamaIndex stores share: string ids on int64 ids, the row layout
(text, metadata, declared columns), the first build, get-by-ids and filter checks.

Row layout (every index a framework store writes):

======================  ======================================================================
column                  holds
======================  ======================================================================
``id`` (squash's own)   :func:`squash_id` of the framework's string id (63-bit BLAKE2b)
``_id``                 the framework's string id (what comes back, and a collision check)
``_text``               the text (page content / node text)
``_meta``               the whole metadata as JSON text: the round trip of any JSON-able value
``_ref_doc_id``         LlamaIndex's source-document id (null for LangChain rows)
declared fields         a copy of the metadata keys named at construction, typed, filterable
======================  ======================================================================

squash attributes are a typed schema fixed at build, and upserts naming a column the index
lacks are refused; so only the *declared* metadata keys (``metadata_fields={"year": "int"}``)
become columns, and filters may only name those. Everything else still round-trips, through
``_meta``. A store opened on an existing index takes its declared fields from the index.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..params import MAX_K
from .backends import Backend, IndexBackend, IndexShape

ID_COL, TEXT_COL, META_COL, DOC_COL = "_id", "_text", "_meta", "_ref_doc_id"
INTERNAL_COLUMNS = {ID_COL: "str", TEXT_COL: "str", META_COL: "str", DOC_COL: "str"}
#: Never a declared field: squash's own ``id`` and the internal columns.
RESERVED = frozenset({"id", *INTERNAL_COLUMNS})
#: The id of the row every first build carries and deletes at once (squash_id never makes it):
#: it gives every declared column a non-null value, since a build refuses all-null columns.
SCHEMA_ROW_ID = 2**63 - 1

FIELD_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "list[str]": pa.list_(pa.string()),
    "list[int]": pa.list_(pa.int64()),
    "list[float]": pa.list_(pa.float64()),
    "list[bool]": pa.list_(pa.bool_()),
}
_ALIASES = {str: "str", int: "int", float: "float", bool: "bool", datetime: "datetime", "string": "str"}
_PLACEHOLDER = {
    "str": "",
    "int": 0,
    "float": 0.0,
    "bool": False,
    "datetime": datetime(1970, 1, 1, tzinfo=UTC),
}


class UnsupportedFilterError(ValueError):
    """A framework filter squash cannot express (an operator it lacks, an undeclared field)."""


def squash_id(key: str) -> int:
    """A stable non-negative int64 id for a string id: BLAKE2b-64 mod 2^63 − 1 (stable across
    processes and machines, unlike ``hash``). Two keys collide with probability ~n²/2^64;
    a collision is detected on read (``_id`` differs) rather than silently returned."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SCHEMA_ROW_ID


def normalise_fields(fields: Mapping[str, Any] | None) -> dict[str, str]:
    """Declared metadata fields as ``{name: type name}`` (types: :data:`FIELD_TYPES` keys or
    Python's str/int/float/bool/datetime)."""
    out: dict[str, str] = {}
    for name, typ in (fields or {}).items():
        kind = _ALIASES.get(typ, typ)
        if kind not in FIELD_TYPES:
            raise ValueError(f"metadata field {name!r}: type {typ!r} is not one of {sorted(FIELD_TYPES)}")
        if not isinstance(name, str) or not name or name.startswith("$") or name in RESERVED:
            raise ValueError(
                f"metadata field {name!r} cannot be a squash column (reserved: {sorted(RESERVED)}; "
                "names are non-empty and do not start with '$'); it still round-trips in the metadata"
            )
        out[name] = kind
    return out


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def coerce(name: str, kind: str, value: Any) -> Any:
    """A metadata value as the declared column takes it (None for null; an empty list is
    stored as null, so ``IS_EMPTY`` / ``$exists: false`` finds it)."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind.startswith("list["):
        if not isinstance(value, list | tuple):
            raise ValueError(f"metadata field {name!r} is declared {kind}; got {value!r}")
        items = [coerce(name, kind[5:-1], v) for v in value]
        if any(v is None for v in items):
            raise ValueError(f"metadata field {name!r}: a list may not hold nulls")
        return items or None
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "datetime": isinstance(value, str | date),
    }[kind]
    if not ok:
        raise ValueError(f"metadata field {name!r} is declared {kind}; got {value!r}")
    if kind == "float":
        return float(value)
    if kind == "datetime" and isinstance(value, date):
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return _plain(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"metadata value {value!r} ({type(value).__name__}) is not JSON-serialisable")


def dump_metadata(metadata: Mapping[str, Any]) -> str:
    """Metadata as JSON text (datetimes come back as ISO strings)."""
    return json.dumps(dict(metadata), ensure_ascii=False, default=_json_default)


@dataclass
class Hit:
    """One stored row as a store returns it."""

    key: str
    text: str
    metadata: dict[str, Any]
    ref_doc_id: str | None
    distance: float
    score: float


@dataclass
class Row:
    """One row to write."""

    key: str
    vector: Sequence[float]
    text: str
    metadata: Mapping[str, Any]
    meta_json: str | None = None  # the stored metadata text, when not dump_metadata(metadata)
    ref_doc_id: str | None = None


def new_key() -> str:
    return str(uuid.uuid4())


class StoreCore:
    """A framework-neutral store over a :class:`Backend`: add, search, get, delete."""

    def __init__(
        self, backend: Backend, metric: str = "cosine", metadata_fields: Mapping[str, Any] | None = None
    ):
        self.backend = backend
        self._metric = metric
        self._declared = normalise_fields(metadata_fields)
        self._shape: IndexShape | None = None
        self._checked = False

    # -- the index --------------------------------------------------------------------------

    def shape(self) -> IndexShape | None:
        """The backend's index (checked once to be a store's), or None before the first build."""
        if self._shape is None:
            shape = self.backend.shape()
            if shape is None:
                return None
            missing = [c for c in INTERNAL_COLUMNS if shape.columns.get(c) != "str"]
            if missing:
                raise ValueError(
                    f"the index lacks the string columns {missing}: it was not made by a squash "
                    "framework store (make one with the store, from_texts or create_index)"
                )
            for name, kind in self._declared.items():
                if shape.columns.get(name) != kind:
                    raise ValueError(
                        f"metadata field {name!r} ({kind}) is not a column of the existing index "
                        f"(its columns: {self.fields_of(shape)}); declared fields are fixed at build"
                    )
            self._shape = shape
        return self._shape

    @staticmethod
    def fields_of(shape: IndexShape) -> dict[str, str]:
        return {n: k for n, k in shape.columns.items() if n not in INTERNAL_COLUMNS}

    @property
    def fields(self) -> dict[str, str]:
        """The filterable metadata fields: the index's, or the declared ones before a build."""
        shape = self.shape()
        return self._declared if shape is None else self.fields_of(shape)

    @property
    def metric(self) -> str:
        shape = self.shape()
        return self._metric if shape is None else shape.metric

    # -- writes -----------------------------------------------------------------------------

    def attributes(self, row: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            ID_COL: row.key,
            TEXT_COL: row.text,
            META_COL: row.meta_json if row.meta_json is not None else dump_metadata(row.metadata),
            DOC_COL: row.ref_doc_id,
        }
        for name, kind in self.fields.items():
            out[name] = coerce(name, kind, row.metadata.get(name))
        return out

    def add(self, rows: Sequence[Row]) -> list[str]:
        """Upsert rows by key (a key given twice: the last row wins); the first add builds."""
        if not rows:
            return []
        last = {r.key: i for i, r in enumerate(rows)}
        unique = [rows[i] for i in sorted(last.values())]
        ids = np.array([squash_id(r.key) for r in unique], dtype=np.int64)
        vectors = np.asarray([list(r.vector) for r in unique], dtype=np.float32)
        attrs = [self.attributes(r) for r in unique]
        if self.shape() is None:
            self._build(ids, vectors, attrs)
        else:
            for start in range(0, len(unique), 10_000):  # the HTTP API's rows per request
                end = start + 10_000
                self.backend.upsert(ids[start:end], vectors[start:end], attrs[start:end])
        return [r.key for r in rows]

    def _build(self, ids: np.ndarray, vectors: np.ndarray, attrs: list[dict[str, Any]]) -> None:
        """Build the index from the first rows plus the schema row (deleted right after)."""
        columns = INTERNAL_COLUMNS | self._declared
        schema_row = {name: _placeholder(kind) for name, kind in columns.items()}
        table = pa.table(
            {
                name: pa.array([_for_build(kind, a[name]) for a in [*attrs, schema_row]], FIELD_TYPES[kind])
                for name, kind in columns.items()
            }
        )
        all_ids = np.concatenate([ids, [SCHEMA_ROW_ID]]).astype(np.int64)
        self.backend.build(all_ids, np.concatenate([vectors, vectors[:1]]), table, self._metric)
        self.backend.delete(ids=[SCHEMA_ROW_ID])
        self._shape = None

    def delete(self, keys: Iterable[str] | None = None, filter: dict[str, Any] | None = None) -> None:
        """Delete by keys (missing ones ignored) or by a squash filter (matching none: no-op)."""
        shape = self.shape()
        if shape is None:
            return
        if keys is not None:
            ids = sorted({squash_id(k) for k in keys})
            for start in range(0, len(ids), 100_000):
                if ids[start : start + 100_000]:
                    self.backend.delete(ids=ids[start : start + 100_000])
            return
        if filter is None:
            raise ValueError("delete needs ids or a filter")
        if self._probe(filter, 1):  # a squash delete by a filter that matches nothing is an error
            self.backend.delete(filter=filter)

    def delete_all(self) -> None:
        self.delete(filter={"id": {"$gte": 0}})

    # -- reads ------------------------------------------------------------------------------

    def search(self, vector: Sequence[float], k: int, filter: dict[str, Any] | None = None) -> list[Hit]:
        """The k nearest rows (fewer when fewer match), nearest first."""
        if self.shape() is None:
            return []
        res = self.backend.search(np.asarray([vector], dtype=np.float32), int(k), filter)
        return self._hits(res)

    def get(self, keys: Sequence[str], filter: dict[str, Any] | None = None) -> list[Hit]:
        """Rows by key, in the order given, missing ones left out: a filtered query on squash's
        ``id`` (which returns every match when fewer than k match), so it works over HTTP too."""
        if self.shape() is None or not keys:
            return []
        found: dict[str, Hit] = {}
        wanted = sorted({squash_id(k) for k in keys})
        for start in range(0, len(wanted), MAX_K):
            chunk = wanted[start : start + MAX_K]
            cond: dict[str, Any] = {"id": {"$in": chunk}}
            found |= {
                h.key: h
                for h in self._probe(cond if filter is None else {"$and": [cond, filter]}, len(chunk))
            }
        return [found[k] for k in dict.fromkeys(keys) if k in found]

    def _probe(self, filter: dict[str, Any], k: int) -> list[Hit]:
        """Hits of a filter, for any query vector (one the metric accepts: not all-zero)."""
        shape = self.shape()
        if shape is None:
            return []
        res = self.backend.search(np.ones((1, shape.dims), np.float32), k, filter)
        return self._hits(res)

    def _hits(self, res: Any) -> list[Hit]:
        attrs = (res.attributes or [[]])[0]
        ids = res.ids[0]
        live = ids >= 0
        out = []
        for sid, dist, score, attr in zip(
            ids[live].tolist(),
            res.distances[0][live].tolist(),
            res.scores[0][live].tolist(),
            attrs,
            strict=False,
        ):
            key = attr.get(ID_COL)
            if key is None or squash_id(key) != sid:
                raise InputError(f"row {sid} holds string id {key!r}, which does not hash to it (collision?)")
            out.append(
                Hit(
                    key,
                    attr.get(TEXT_COL) or "",
                    json.loads(attr.get(META_COL) or "{}"),
                    attr.get(DOC_COL),
                    dist,
                    score,
                )
            )
        return out


def _placeholder(kind: str) -> Any:
    return [_PLACEHOLDER[kind[5:-1]]] if kind.startswith("list[") else _PLACEHOLDER[kind]


def _for_build(kind: str, value: Any) -> Any:
    """A coerced value as a typed Arrow builder takes it (ISO text -> datetime)."""
    if kind == "datetime" and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def create_index(
    uri: str,
    dims: int,
    metric: str = "cosine",
    metadata_fields: Mapping[str, Any] | None = None,
) -> None:
    """Make an empty store index at ``uri`` (``file://`` or ``s3://``): what an index served
    over HTTP needs before a store can write to it through the API. One schema row (a unit
    vector) is built and deleted; the code it fits is poor, but the index is uncalibrated, so
    searches re-rank on float32 — compact it once it holds real data."""
    core = StoreCore(IndexBackend(uri), metric, metadata_fields)
    vector = np.zeros(dims, np.float32)
    vector[0] = 1.0
    columns = INTERNAL_COLUMNS | core._declared
    table = pa.table(
        {name: pa.array([_for_build(k, _placeholder(k))], FIELD_TYPES[k]) for name, k in columns.items()}
    )
    core.backend.build(np.array([SCHEMA_ROW_ID], np.int64), vector[None, :], table, metric)
    core.backend.delete(ids=[SCHEMA_ROW_ID])
