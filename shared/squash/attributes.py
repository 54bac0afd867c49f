"""Attribute schema and quantization.

Numeric columns are quantized to at most 256 cells (exact when they hold ≤ 256 distinct
values, else quantile + Lloyd); categorical (string) and boolean columns are dictionary
codes. Each cell records the [lo, hi] of the raw values it holds, so the planner can tell
for any predicate which cells *may* match (a superset, used for L0) and which *surely*
match (a subset, used to guarantee k results in one pass). Raw values stay in the
partition segments for the exact check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from .errors import InputError
from .osq.cells import fit_edges

Kind = Literal["int", "float", "bool", "category"]
MAX_ATTR_CELLS = 256
I64_MIN, I64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_EXACT_FLOAT_INT = 2**53  # every integer of smaller magnitude is exact in float64


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its kind and, for numeric kinds, its cells' value ranges."""

    name: str
    kind: Kind
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (cells,) int64 (int) or float64
    hi: np.ndarray = field(default_factory=lambda: np.zeros(0))
    categories: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def domain(self) -> np.dtype:
        """The type filters compare in: float64 for float columns, int64 for every other kind
        (int values, bool 0/1, category codes), so int64 comparisons are exact."""
        return np.dtype(np.float64 if self.kind == "float" else np.int64)

    @property
    def code_dtype(self) -> np.dtype:
        """Quantized codes fit in a byte except for large dictionaries."""
        return np.dtype(np.uint8 if self.n_cells <= 256 else np.int32)

    @property
    def n_cells(self) -> int:
        if self.kind == "category":
            return len(self.categories)
        if self.kind == "bool":
            return 2
        return int(self.lo.shape[0])

    def decode(self, raw: np.ndarray) -> list[Any]:
        """Stored raw values as JSON-ready Python values (category names, bools, numbers)."""
        if self.kind == "category":
            return [self.categories[int(c)] for c in raw]
        if self.kind == "bool":
            return [bool(v) for v in raw]
        return raw.tolist()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.numeric:
            out["cells"] = {"lo": self.lo.tolist(), "hi": self.hi.tolist()}
        if self.kind == "category":
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AttributeSpec:
        cells = obj.get("cells") or {"lo": [], "hi": []}
        kind = obj["type"]
        if kind == "int":
            lo, hi = _int_bounds(cells["lo"], -1), _int_bounds(cells["hi"], +1)
        else:
            lo = np.asarray(cells["lo"], dtype=np.float64)
            hi = np.asarray(cells["hi"], dtype=np.float64)
        return cls(
            name=obj["name"],
            kind=kind,
            lo=lo,
            hi=hi,
            categories=tuple(obj.get("categories", ())),
        )

    def cell_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of every code, in raw units and in :attr:`domain` (bool: 0/1; category:
        its own code)."""
        if self.numeric:
            return self.lo, self.hi
        codes = np.arange(self.n_cells, dtype=np.int64)
        return codes, codes


def _int_bounds(values: list[Any], direction: int) -> np.ndarray:
    """Cell bounds of an int column as exact int64.

    Manifests store them as JSON integers. Older manifests stored float64 values, which
    above 2^53 may be off by rounding: those are widened outwards (``direction`` -1 for
    lower bounds, +1 for upper) to the next float and rounded outwards, so a cell's range
    still contains every value it holds (maybe stays a superset, sure a subset).
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


@dataclass
class AttributeColumns:
    """Attributes of N vectors: schema, raw values (numpy) and quantized codes."""

    specs: list[AttributeSpec]
    raw: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]

    def stored_raw(self) -> dict[str, np.ndarray]:
        """Raw columns a segment stores: numeric ones (a category's or bool's code is its value)."""
        kinds = {s.name: s.kind for s in self.specs}
        return {k: v for k, v in self.raw.items() if kinds.get(k) in ("int", "float")}

    def take(self, rows: np.ndarray) -> AttributeColumns:
        return AttributeColumns(
            self.specs,
            {k: v[rows] for k, v in self.raw.items()},
            {k: v[rows] for k, v in self.codes.items()},
        )


def _kind_of(name: str, typ: pa.DataType) -> Kind:
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_floating(typ):
        return "float"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "category"
    if pa.types.is_dictionary(typ) and (
        pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type)
    ):
        return "category"
    raise InputError(
        f"attribute column {name!r} has unsupported type {typ}; "
        "use integer, float, boolean or string columns",
        field=name,
    )


def _quantize_numeric(name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes plus per-cell [lo, hi] of the values each cell actually holds, in the values'
    own type (int64 bounds stay exact above 2^53)."""
    uniq = np.unique(values)
    if uniq.shape[0] <= MAX_ATTR_CELLS:
        codes = np.searchsorted(uniq, values).astype(np.uint8)
        return codes, uniq.copy(), uniq.copy()
    as_float = values.astype(np.float64)
    edges = fit_edges(as_float[:, None], np.array([8]))[0].astype(np.float64)
    # Cells are chosen in float64 (monotone in the value, so each cell is a value range);
    # their bounds come from the exact values they hold.
    raw_codes = np.searchsorted(edges[1:256], as_float, side="right")
    used, codes = np.unique(raw_codes, return_inverse=True)  # drop empty cells
    k = used.shape[0]
    if values.dtype.kind == "i":
        info = np.iinfo(values.dtype)
        lo, hi = np.full(k, info.max, values.dtype), np.full(k, info.min, values.dtype)
    else:
        lo, hi = np.full(k, np.inf), np.full(k, -np.inf)
    np.minimum.at(lo, codes, values)
    np.maximum.at(hi, codes, values)
    return codes.astype(np.uint8), lo, hi


def check_attribute_name(name: str, count: int = 1) -> None:
    """Attribute names must be filterable: not empty, not starting with '$' (the filter
    language's operators), and unique."""
    if not name or name.startswith("$"):
        raise InputError(
            f"attribute column {name!r} cannot be filtered on: names must be non-empty and "
            "not start with '$' (rename the column)",
            field="attributes",
        )
    if count > 1:
        raise InputError(f"attribute column {name!r} appears {count} times; names must be unique", field=name)


def quantize_attributes(table: pa.Table | None, n: int) -> AttributeColumns:
    """Validate an attribute table and quantize every column (the ``id`` column excluded)."""
    specs: list[AttributeSpec] = []
    raw: dict[str, np.ndarray] = {}
    codes: dict[str, np.ndarray] = {}
    if table is None:
        return AttributeColumns(specs, raw, codes)
    if table.num_rows != n:
        raise InputError(
            f"attributes have {table.num_rows} rows but there are {n} vectors; "
            "give exactly one attribute row per vector",
            field="attributes",
        )
    for name in table.column_names:
        if name == "id":
            continue
        check_attribute_name(name, table.column_names.count(name))
        col = table.column(name)
        kind = _kind_of(name, col.type)
        if col.null_count:
            raise InputError(
                f"attribute column {name!r} has {col.null_count} null values; fill or drop them",
                field=name,
            )
        if kind == "category":
            col = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
            values = np.asarray(col.to_pylist(), dtype=object)
            cats, inv = np.unique(values.astype(str), return_inverse=True)
            spec = AttributeSpec(name, kind, categories=tuple(str(c) for c in cats))
            raw[name] = inv.astype(np.int32)
            codes[name] = inv.astype(spec.code_dtype)
        elif kind == "bool":
            spec = AttributeSpec(name, kind)
            raw[name] = col.to_numpy(zero_copy_only=False).astype(np.uint8)
            codes[name] = raw[name].copy()
        else:
            values = col.to_numpy(zero_copy_only=False)
            values = values.astype(np.int64 if kind == "int" else np.float64)
            if kind == "float" and not np.all(np.isfinite(values)):
                raise InputError(f"attribute column {name!r} has NaN or infinite values", field=name)
            c, lo, hi = _quantize_numeric(name, values)
            spec = AttributeSpec(name, kind, lo=lo, hi=hi)
            raw[name] = values
            codes[name] = c
        specs.append(spec)
    return AttributeColumns(specs, raw, codes)


def read_ids(table: pa.Table | None, n: int) -> np.ndarray:
    """Row numbers, or the table's ``id`` column (integer, unique, no nulls)."""
    if table is None or "id" not in table.column_names:
        return np.arange(n, dtype=np.int64)
    col = table.column("id")
    if not pa.types.is_integer(col.type) or col.null_count:
        raise InputError("the 'id' column must be integers without nulls", field="id")
    ids = col.to_numpy(zero_copy_only=False).astype(np.int64)
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise InputError("the 'id' column has duplicate values", field="id")
    if ids.min() < 0:
        raise InputError("the 'id' column must be non-negative (-1 pads missing results)", field="id")
    return ids
