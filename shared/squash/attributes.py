"""The attribute data model: schema, codes for L0, raw values for the exact check.

Kinds: ``int``, ``float``, ``timestamp`` (int64 ticks of a unit, see
:mod:`squash.timestamps`) are quantized to at most 256 cells (exact when they hold that few
distinct values, else quantile + Lloyd); each cell records the [lo, hi] of the raw values it
holds, so the planner can tell for any predicate which cells *may* match (a superset, for
L0) and which *surely* match (a subset, to guarantee k results in one pass). ``category``
(strings) and ``bool`` codes are the values themselves (category codes index the column's
sorted dictionary, :mod:`squash.dictionaries`). ``list`` columns hold sets of element codes;
their L0 code is a 64-bit word per row: one bit per frequent element value, a few hashed
buckets for the rest, and a null bit.

Any column may hold nulls: a nullable column carries a validity mask beside its codes
(``v.NAME``, packed bits in the files), so no code value is reserved for null and a
dictionary can grow by appending (writes). Raw values (numbers, or list elements as codes)
stay in the segments for the exact check; a null row's code and raw value are 0 and never
consulted without the mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import IndexFormatError
from .timestamps import iso_strings

Kind = Literal["int", "float", "bool", "category", "timestamp", "list"]
KINDS: tuple[str, ...] = ("int", "float", "bool", "category", "timestamp", "list")
ELEMENT_KINDS: tuple[str, ...] = ("category", "int", "float", "bool")
MAX_ATTR_CELLS = 256
I64_MIN, I64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_EXACT_FLOAT_INT = 2**53  # every integer of smaller magnitude is exact in float64
LIST_WORD_BITS = 64  # a list row's L0 word: bits for element values
LIST_BUCKETS = 8  # hashed buckets for the elements without a bit of their own


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its kind, whether it has nulls, and what its codes mean."""

    name: str
    kind: Kind
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (cells,) int64 (int, timestamp) or float64
    hi: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: int = 0  # distinct values in the dictionary (category; list: element values)
    nullable: bool = False
    unit: str = ""  # timestamp: s, ms, us, ns or D (a date)
    element: str = ""  # list: the element kind (category, int, float or bool)
    frequent: tuple[int, ...] = ()  # list: element codes with a bit each, in bit order

    @property
    def numeric(self) -> bool:
        """Whether codes are cells over an ordered domain (int, float, timestamp)."""
        return self.kind in ("int", "float", "timestamp")

    @property
    def domain(self) -> np.dtype:
        """The type filters compare in: float64 for float columns (and float list elements),
        int64 for every other kind, so int64 comparisons are exact."""
        kind = self.element if self.kind == "list" else self.kind
        return np.dtype(np.float64 if kind == "float" else np.int64)

    @property
    def n_cells(self) -> int:
        if self.kind == "category":
            return self.values
        if self.kind == "bool":
            return 2
        if self.kind == "list":
            return 0
        return int(self.lo.shape[0])

    @property
    def code_dtype(self) -> np.dtype:
        """Codes fit in a byte except for large dictionaries; a list's code is a 64-bit word."""
        if self.kind == "list":
            return np.dtype(np.uint64)
        return np.dtype(np.uint8 if self.n_cells <= 256 else np.int32)

    @property
    def list_buckets(self) -> int:
        return 0 if self.values <= LIST_WORD_BITS else LIST_BUCKETS

    def element_bits(self, codes: np.ndarray) -> np.ndarray:
        """The bit (0..63) of each element code in a list row's L0 word: its own bit when
        it is one of the ``frequent`` values, else bucket ``F + code % LIST_BUCKETS``."""
        codes = np.asarray(codes, dtype=np.int64)
        if self.list_buckets == 0:
            return codes.astype(np.uint64)
        own = np.asarray(self.frequent, dtype=np.int64)
        position = np.full(self.values, -1, dtype=np.int64)
        position[own] = np.arange(own.shape[0])
        bits = position[codes]
        bits = np.where(bits >= 0, bits, own.shape[0] + codes % self.list_buckets)
        return bits.astype(np.uint64)

    def has_own_bit(self, codes: np.ndarray) -> np.ndarray:
        """Whether each element code has its own bit (else it shares a hashed bucket)."""
        if self.list_buckets == 0:
            return np.ones(np.shape(codes), dtype=bool)
        return np.isin(codes, np.asarray(self.frequent, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.numeric:
            out["cells"] = {"lo": self.lo.tolist(), "hi": self.hi.tolist()}
        if self.kind in ("category", "list"):
            out["values"] = self.values
        if self.kind == "timestamp":
            out["unit"] = self.unit
        if self.kind == "list":
            out["element"] = self.element
            if self.list_buckets:
                out["frequent"] = list(self.frequent)
        if self.nullable:
            out["nullable"] = True
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AttributeSpec:
        cells = obj.get("cells") or {"lo": [], "hi": []}
        kind = obj["type"]
        if kind in ("int", "timestamp"):
            lo, hi = _int_bounds(cells["lo"], -1), _int_bounds(cells["hi"], +1)
        else:
            lo = np.asarray(cells["lo"], dtype=np.float64)
            hi = np.asarray(cells["hi"], dtype=np.float64)
        return cls(
            name=obj["name"],
            kind=kind,
            lo=lo,
            hi=hi,
            values=int(obj.get("values", 0)),
            nullable=bool(obj.get("nullable", False)),
            unit=str(obj.get("unit", "")),
            element=str(obj.get("element", "")),
            frequent=tuple(int(v) for v in obj.get("frequent", ())),
        )

    def summary(self) -> dict[str, Any]:
        """What ``info`` shows of the attribute."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "nullable": self.nullable}
        if self.kind == "timestamp":
            out["unit"] = self.unit
        if self.kind == "list":
            out["element"] = self.element
        if self.kind in ("category", "list"):
            out["distinct_values"] = self.values
        return out

    def cell_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of every non-null cell, in raw units (numeric kinds)."""
        return self.lo, self.hi


#: ``id`` is a filter field of every index: the vectors' integer ids, exact at every level.
ID_SPEC = AttributeSpec("id", "int")


def _int_bounds(values: list[Any], direction: int) -> np.ndarray:
    """Cell bounds of an int column as exact int64.

    Manifests store them as JSON integers. Float values above 2^53 may be off by
    rounding: those are widened outwards (``direction`` -1 for lower bounds, +1 for upper)
    to the next float and rounded outwards, so a cell's range still contains every value it
    holds (maybe stays a superset, sure a subset).
    """
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"cell bound {v!r} is not a number")
        if isinstance(v, float):
            if not math.isfinite(v):
                v = I64_MIN if v < 0 else I64_MAX
            elif abs(v) < _EXACT_FLOAT_INT and v.is_integer():
                v = int(v)
            else:
                wide = float(np.nextafter(v, direction * math.inf))
                v = math.floor(wide) if direction < 0 else math.ceil(wide)
        out.append(min(max(v, I64_MIN), I64_MAX))
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class ListColumn:
    """List values of n rows: row i's element codes are ``values[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # (n + 1,) int64
    values: np.ndarray  # (total,) int32 element codes

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> ListColumn:
        rows = np.asarray(rows, dtype=np.int64)
        sizes = self.sizes[rows]
        offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        shift = np.repeat(self.offsets[rows] - offsets[:-1], sizes)
        return ListColumn(offsets, self.values[np.arange(offsets[-1]) + shift])

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @staticmethod
    def concat(parts: list[ListColumn]) -> ListColumn:
        shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
        return ListColumn(np.concatenate(offsets).astype(np.int64), np.concatenate([p.values for p in parts]))


Raw = np.ndarray | ListColumn


@dataclass
class AttrTable:
    """What a filter is evaluated on, for ``n`` rows: codes (L0), raw values (the exact
    check; None where only codes are at hand, as in the router) and the ids."""

    n: int
    codes: Mapping[str, np.ndarray]
    raw: Mapping[str, Raw] | None
    ids: np.ndarray | None
    valid: Mapping[str, np.ndarray] = field(default_factory=dict)  # bool masks of nullable columns

    def only(self, fields: set[str]) -> AttrTable:
        """The same rows with just the columns ``fields`` names (what a filter reads)."""
        codes = {k: v for k, v in self.codes.items() if k in fields}
        raw = None if self.raw is None else {k: v for k, v in self.raw.items() if k in fields}
        valid = {k: v for k, v in self.valid.items() if k in fields}
        return AttrTable(self.n, codes, raw, self.ids, valid)

    def take(self, rows: np.ndarray) -> AttrTable:
        return AttrTable(
            int(rows.shape[0]),
            {k: v[rows] for k, v in self.codes.items()},
            None if self.raw is None else {k: take(v, rows) for k, v in self.raw.items()},
            None if self.ids is None else self.ids[rows],
            {k: v[rows] for k, v in self.valid.items()},
        )


def take(col: Raw, rows: np.ndarray) -> Raw:
    return col.take(rows) if isinstance(col, ListColumn) else col[rows]


def concat(cols: list[Raw]) -> Raw:
    return ListColumn.concat(cols) if isinstance(cols[0], ListColumn) else np.concatenate(cols)


@dataclass
class AttributeColumns:
    """Attributes of N vectors at build time: schema, raw values, codes and dictionaries."""

    specs: list[AttributeSpec]
    raw: dict[str, Raw]
    codes: dict[str, np.ndarray]
    dictionaries: dict[str, Any] = field(default_factory=dict)  # name -> dictionaries.Dictionary
    valid: dict[str, np.ndarray] = field(default_factory=dict)  # nullable columns: bool masks

    def table(self, ids: np.ndarray | None = None) -> AttrTable:
        """The rows as a filter sees them (ids: row numbers unless given)."""
        n = next(iter(self.codes.values())).shape[0] if self.codes else 0 if ids is None else ids.shape[0]
        ids = np.arange(n, dtype=np.int64) if ids is None else ids
        return AttrTable(n, self.codes, self.raw, ids, self.valid)

    def stored_valid(self) -> dict[str, np.ndarray]:
        """Validity masks a file stores, packed 8 rows per byte (``v.NAME``)."""
        return {f"v.{k}": np.packbits(v) for k, v in self.valid.items()}

    def stored_raw(self) -> dict[str, np.ndarray]:
        """Raw arrays a segment stores, by array name: numeric values (``raw.NAME``), list
        elements and offsets (``raw.NAME``, ``off.NAME``). A category's or bool's code is its
        value, so they store none."""
        out: dict[str, np.ndarray] = {}
        for spec in self.specs:
            col = self.raw[spec.name]
            if isinstance(col, ListColumn):
                out[f"raw.{spec.name}"] = col.values
                out[f"off.{spec.name}"] = col.offsets
            elif spec.numeric:
                out[f"raw.{spec.name}"] = col
        return out

    def segment_arrays(self) -> dict[str, np.ndarray]:
        """Every array a segment stores for these rows, in file order: codes (``q.NAME``),
        raw values and list offsets, validity."""
        return {f"q.{k}": v for k, v in self.codes.items()} | self.stored_raw() | self.stored_valid()

    def take(self, rows: np.ndarray) -> AttributeColumns:
        return AttributeColumns(
            self.specs,
            {k: take(v, rows) for k, v in self.raw.items()},
            {k: v[rows] for k, v in self.codes.items()},
            self.dictionaries,
            {k: v[rows] for k, v in self.valid.items()},
        )


@dataclass
class StoredAttributes:
    """Some rows' attribute arrays exactly as a segment stores them (what a build worker
    receives from the build's driver in place of :class:`AttributeColumns`)."""

    arrays: dict[str, np.ndarray]

    def segment_arrays(self) -> dict[str, np.ndarray]:
        return self.arrays


def unpack_valid(packed: np.ndarray, n: int) -> np.ndarray:
    """A stored validity mask (:meth:`AttributeColumns.stored_valid`) as n bools."""
    return np.unpackbits(packed, count=n).astype(bool)


def validity_arrays(arrays: dict[str, np.ndarray], columns, n: int, name: str) -> dict[str, np.ndarray]:
    """The unpacked validity masks (``v.NAME``) of a segment's or router's columns."""
    out = {}
    for key, packed in arrays.items():
        if key.startswith("v."):
            if key[2:] not in columns or packed.shape != (-(-n // 8),) or packed.dtype != np.uint8:
                raise IndexFormatError(f"{name}: validity of {key[2:]!r} is malformed (corrupt file)")
            out[key[2:]] = unpack_valid(packed, n)
    return out


def encoded_values(spec: AttributeSpec, raw: Raw, valid: np.ndarray | None) -> list[Any]:
    """JSON-ready stored values of some rows, before dictionaries (what a worker returns):
    numbers, bools, category codes, lists of element codes; None for nulls."""
    if isinstance(raw, ListColumn):
        out: list[Any] = [raw.row(i).tolist() for i in range(raw.offsets.shape[0] - 1)]
    elif spec.kind == "bool":
        out = [bool(v) for v in raw]
    else:
        out = raw.tolist()
    if valid is not None:
        out = [v if ok else None for v, ok in zip(out, valid.tolist(), strict=True)]
    return out


def decoded_values(spec: AttributeSpec, values: list[Any], dictionary: Any | None) -> list[Any]:
    """Encoded values (:func:`encoded_values`) as the user sees them: category names, list
    element values, ISO-8601 timestamps."""
    present = [i for i, v in enumerate(values) if v is not None]
    if not present:
        return list(values)
    out = list(values)
    if spec.kind == "category":
        names = dictionary.decode(np.array([values[i] for i in present], dtype=np.int64))
        for i, name in zip(present, names, strict=True):
            out[i] = name
    elif spec.kind == "timestamp":
        text = iso_strings(np.array([values[i] for i in present], dtype=np.int64), spec.unit)
        for i, t in zip(present, text, strict=True):
            out[i] = t
    elif spec.kind == "list":
        flat = [c for i in present for c in values[i]]
        decoded = dictionary.decode(np.array(flat, dtype=np.int64)) if flat else []
        at = 0
        for i in present:
            size = len(values[i])
            out[i] = decoded[at : at + size]
            at += size
    return out


def encoded_rows(specs: list[AttributeSpec], table: AttrTable, rows: np.ndarray) -> dict[str, dict[str, Any]]:
    """``{id: {name: encoded value}}`` of some rows of ``table`` (see :func:`encoded_values`)."""
    sub = table.take(rows)
    cols = {s.name: encoded_values(s, sub.raw[s.name], sub.valid.get(s.name)) for s in specs}  # type: ignore[index]
    ids = [] if sub.ids is None else sub.ids.tolist()
    return {str(i): {name: vals[j] for name, vals in cols.items()} for j, i in enumerate(ids)}


def decoded_rows(
    specs: list[AttributeSpec], dictionaries: Mapping[str, Any], rows: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """:func:`encoded_rows` output as the user sees it (one dictionary lookup per column)."""
    keys = list(rows)
    out: dict[str, dict[str, Any]] = {k: {} for k in keys}
    for spec in specs:
        values = decoded_values(spec, [rows[k].get(spec.name) for k in keys], dictionaries.get(spec.name))
        for k, v in zip(keys, values, strict=True):
            out[k][spec.name] = v
    return out
