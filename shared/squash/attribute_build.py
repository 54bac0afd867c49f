"""Build side of the attribute model: an Arrow table -> schema, codes, raw values, dictionaries.

Each column is validated before anything is written (an InputError names it): supported
types are integers, floats, booleans, strings, timestamps and dates, and lists of strings,
integers, floats or booleans. Nulls are allowed everywhere (a float NaN counts as null);
infinities and null list *elements* are not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .attributes import (
    LIST_BUCKETS,
    LIST_WORD_BITS,
    MAX_ATTR_CELLS,
    AttributeColumns,
    AttributeSpec,
    ListColumn,
)
from .dictionaries import Dictionary, encode, sorted_unique
from .errors import InputError
from .osq.cells import fit_edges
from .timestamps import to_ticks


def _kind_of(name: str, typ: pa.DataType) -> str:
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_floating(typ):
        return "float"
    if _is_string(typ):
        return "category"
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return "timestamp"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        element = typ.value_type
        if (
            _is_string(element)
            or pa.types.is_boolean(element)
            or pa.types.is_integer(element)
            or (pa.types.is_floating(element))
        ):
            return "list"
    raise InputError(
        f"attribute column {name!r} has unsupported type {typ}; use integer, float, boolean, "
        "string, timestamp or date columns, or lists of strings, integers, floats or booleans",
        field=name,
    )


def _is_string(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _quantize_numeric(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    raw_codes = np.searchsorted(edges[1:MAX_ATTR_CELLS], as_float, side="right")
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
    out = AttributeColumns([], {}, {}, {})
    if table is None:
        return out
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
        col = table.column(name).combine_chunks()
        kind = _kind_of(name, col.type)
        if kind == "list":
            _add_list(out, name, col)
        else:
            _add_scalar(out, name, kind, col)
    return out


def _scalar_values(name: str, kind: str, col: pa.Array) -> tuple[object, np.ndarray, str]:
    """(values, valid mask, timestamp unit) of a scalar column: a string array (nulls kept)
    for categories, uint8 for bools, int64/float64 with 0 for nulls otherwise."""
    if kind == "float":
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)  # NaN counts as null
    valid = ~col.is_null().to_numpy(zero_copy_only=False)
    if kind == "category":
        return (col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col), valid, ""
    if kind == "bool":
        return col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8), valid, ""
    unit = ""
    if kind == "timestamp":
        if pa.types.is_date64(col.type):
            col = col.cast(pa.timestamp("ms"))
        unit = "D" if pa.types.is_date32(col.type) else col.type.unit
        col = col.cast(pa.int32() if unit == "D" else pa.int64())
    values = (
        col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64 if kind == "float" else np.int64)
    )
    if kind == "float" and not np.all(np.isfinite(values)):
        raise InputError(f"attribute column {name!r} has infinite values", field=name)
    return values, valid, unit


def _list_values(name: str, col: pa.Array) -> tuple[pa.Array, str, np.ndarray, np.ndarray]:
    """(flattened elements, element kind, sizes, valid mask) of a list column."""
    element_type = col.type.value_type
    valid = ~col.is_null().to_numpy(zero_copy_only=False)
    sizes = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    elements = pc.list_flatten(col)
    if pa.types.is_dictionary(element_type):
        elements = elements.cast(pa.string())
    if elements.null_count:
        raise InputError(
            f"list column {name!r} holds {elements.null_count} null elements; drop them from the lists",
            field=name,
        )
    if pa.types.is_floating(element_type):
        if not np.all(np.isfinite(elements.to_numpy(zero_copy_only=False))):
            raise InputError(f"list column {name!r} holds NaN or infinite elements", field=name)
        return elements.cast(pa.float64()), "float", sizes, valid
    if pa.types.is_integer(element_type):
        return elements.cast(pa.int64()), "int", sizes, valid
    if pa.types.is_boolean(element_type):
        return elements, "bool", sizes, valid
    return elements.cast(pa.string()), "category", sizes, valid


def _list_words(spec: AttributeSpec, codes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ListColumn]:
    """Each row's L0 word and the rows' element codes."""
    offsets = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    word = np.zeros(sizes.shape[0], dtype=np.uint64)
    filled = sizes > 0
    if filled.any():
        bits = np.left_shift(np.uint64(1), spec.element_bits(codes))
        word[filled] = np.bitwise_or.reduceat(bits, offsets[:-1][filled])
    return word, ListColumn(offsets, codes.astype(np.int32))


def _add_scalar(out: AttributeColumns, name: str, kind: str, col: pa.Array) -> None:
    values, valid, unit = _scalar_values(name, kind, col)
    nullable = not bool(valid.all())
    if kind == "category":
        dictionary = sorted_unique(values)
        spec = AttributeSpec(name, "category", values=len(dictionary), nullable=nullable)
        codes = encode(values, dictionary)
        codes[codes < 0] = 0  # nulls: the mask says so
        out.dictionaries[name] = Dictionary(dictionary)
        out.raw[name] = out.codes[name] = codes.astype(spec.code_dtype)
    elif kind == "bool":
        spec = AttributeSpec(name, "bool", nullable=nullable)
        out.raw[name] = out.codes[name] = values
    else:
        present = values[valid]
        if present.size == 0:
            raise InputError(f"attribute column {name!r} holds only nulls; drop it", field=name)
        cells, lo, hi = _quantize_numeric(present)
        spec = AttributeSpec(name, kind, lo=lo, hi=hi, nullable=nullable, unit=unit)
        codes = np.zeros(values.shape[0], dtype=np.uint8)
        codes[valid] = cells
        out.raw[name] = values
        out.codes[name] = codes
    if nullable:
        out.valid[name] = valid
    out.specs.append(spec)


def _add_list(out: AttributeColumns, name: str, col: pa.Array) -> None:
    elements, element, sizes, valid = _list_values(name, col)
    dictionary = sorted_unique(elements)
    codes = encode(elements, dictionary)
    counts = np.bincount(codes, minlength=len(dictionary))
    nullable = not bool(valid.all())
    frequent: tuple[int, ...] = ()
    if len(dictionary) > LIST_WORD_BITS:
        by_count = np.lexsort((np.arange(counts.shape[0]), -counts))  # most frequent first
        frequent = tuple(int(c) for c in by_count[: LIST_WORD_BITS - LIST_BUCKETS])
    spec = AttributeSpec(
        name, "list", values=len(dictionary), nullable=nullable, element=element, frequent=frequent
    )
    out.codes[name], out.raw[name] = _list_words(spec, codes, sizes)
    out.dictionaries[name] = Dictionary(dictionary)
    if nullable:
        out.valid[name] = valid
    out.specs.append(spec)


# -- new rows of an existing index (writes) ------------------------------------------------


def encode_like(
    table: pa.Table | None, n: int, specs: list[AttributeSpec], dictionaries: dict[str, Dictionary]
) -> AttributeColumns:
    """Code ``n`` new rows with an index's schema. Its cells and dictionaries are kept:
    a number outside every cell widens the nearest one (base rows stay inside their cells,
    so L0 stays a superset); a string or list element never seen is appended to the
    dictionary. A column the table lacks is null for these rows; one the index lacks, or of
    another type, is an InputError naming it. The returned columns carry the updated schema
    and dictionaries."""
    names = [] if table is None else [c for c in table.column_names if c != "id"]
    known = {s.name for s in specs}
    unknown = [c for c in names if c not in known]
    if unknown:
        raise InputError(
            f"attribute column {unknown[0]!r} is not in the index "
            f"(it has: {', '.join(sorted(known)) or 'none'})",
            field=unknown[0],
        )
    if table is not None and table.num_rows != n:
        raise InputError(f"attributes have {table.num_rows} rows for {n} vectors", field="attributes")
    out = AttributeColumns([], {}, {}, dict(dictionaries))
    for spec in specs:
        col = (
            table.column(spec.name).combine_chunks() if spec.name in names else pa.nulls(n, _null_type(spec))
        )
        if _untyped(col.type):  # e.g. [] or None in every row of a list of dicts
            col = col.cast(_null_type(spec))
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if spec.kind == "timestamp" and (_is_string(col.type) or numeric):  # JSON: ISO text, epoch s
            col = _parse_instants(spec, col)
        kind = _kind_of(spec.name, col.type) if col.null_count < n else spec.kind
        if kind != spec.kind and not (kind == "int" and spec.kind == "float"):
            raise InputError(
                f"attribute column {spec.name!r} is {kind} here but {spec.kind} in the index", field=spec.name
            )
        _encode_column(out, spec, col.cast(_null_type(spec)) if col.null_count == n else col, dictionaries)
    return out


def _parse_instants(spec: AttributeSpec, col: pa.Array) -> pa.Array:
    """ISO-8601 strings or epoch seconds (what JSON bodies carry) as the column's Arrow type,
    converted exactly as filter operands are (:func:`squash.timestamps.to_ticks`); a value
    finer than the column's unit (a time of day for a date) is an error, never truncated."""
    ticks, valid = [], []
    for v in col.to_pylist():
        if v is None:
            ticks.append(0)
            valid.append(False)
            continue
        try:
            t = to_ticks(v, spec.unit)
        except (ValueError, TypeError, OverflowError):
            raise InputError(
                f"attribute column {spec.name!r} is a timestamp; {v!r} is not an ISO-8601 date or "
                "date-time, nor epoch seconds",
                field=spec.name,
            ) from None
        if t.denominator != 1:
            raise InputError(
                f"attribute column {spec.name!r}: {v!r} is finer than the column's unit ({spec.unit})",
                field=spec.name,
            )
        ticks.append(int(t))
        valid.append(True)
    arr = pa.array(ticks, pa.int64(), mask=~np.array(valid, dtype=bool))
    return arr.cast(pa.int32()).cast(pa.date32()) if spec.unit == "D" else arr.cast(pa.timestamp(spec.unit))


def _untyped(typ: pa.DataType) -> bool:
    """Types Arrow infers from values that say nothing of their type (all nulls, empty lists)."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return pa.types.is_null(typ.value_type)
    return pa.types.is_null(typ)


def _null_type(spec: AttributeSpec) -> pa.DataType:
    element = {"category": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    if spec.kind == "list":
        return pa.list_(element[spec.element])
    if spec.kind == "timestamp":
        return pa.date32() if spec.unit == "D" else pa.timestamp(spec.unit)
    return element.get(spec.kind, pa.float64())


def _encode_column(
    out: AttributeColumns, spec: AttributeSpec, col: pa.Array, dicts: dict[str, Dictionary]
) -> None:
    name = spec.name
    if spec.kind == "list":
        elements, element, sizes, valid = _list_values(name, col)
        if element != spec.element and not (element == "int" and spec.element == "float"):
            raise InputError(
                f"list column {name!r} holds {element} here, {spec.element} in the index", field=name
            )
        dictionary, codes = _grow(dicts[name], elements.cast(dicts[name].values.type))
        frequent = spec.frequent
        if spec.list_buckets == 0 and len(dictionary) > LIST_WORD_BITS:
            # Built with a bit per value (bit = code): keep those bits, hash new values into
            # buckets after them — possible while the old values leave room for the buckets.
            if spec.values > LIST_WORD_BITS - LIST_BUCKETS:
                raise InputError(
                    f"list column {name!r} would pass {LIST_WORD_BITS} distinct values, from "
                    f"{spec.values}; this index cannot add more to it without a rebuild",
                    field=name,
                )
            frequent = tuple(range(spec.values))
        spec = dataclasses.replace(
            spec, values=len(dictionary), frequent=frequent, nullable=spec.nullable or not valid.all()
        )
        out.codes[name], out.raw[name] = _list_words(spec, codes, sizes)
        out.dictionaries[name] = dictionary
    else:
        if spec.kind == "timestamp" and col.null_count != len(col):
            col = _to_unit(name, col, spec.unit)
        if spec.kind == "float":
            try:
                col = col.cast(pa.float64())
            except (pa.ArrowInvalid, OverflowError) as exc:
                raise InputError(
                    f"attribute column {name!r}: {' '.join(str(exc).split())[:200]}", field=name
                ) from exc
        values, valid, _ = _scalar_values(name, spec.kind, col)
        if spec.kind == "category":
            dictionary, codes = _grow(dicts[name], values)
            codes[~valid] = 0
            spec = dataclasses.replace(spec, values=len(dictionary))
            out.dictionaries[name] = dictionary
            out.raw[name] = out.codes[name] = codes.astype(np.uint8 if len(dictionary) <= 256 else np.int32)
        elif spec.kind == "bool":
            out.raw[name] = out.codes[name] = values
        else:
            lo, hi = spec.lo.copy(), spec.hi.copy()
            present = values[valid]
            cell = np.clip(np.searchsorted(lo, present, side="right") - 1, 0, lo.shape[0] - 1)
            np.minimum.at(lo, cell, present.astype(lo.dtype))
            np.maximum.at(hi, cell, present.astype(hi.dtype))
            spec = dataclasses.replace(spec, lo=lo, hi=hi)
            codes = np.zeros(values.shape[0], dtype=np.uint8)
            codes[valid] = cell
            out.raw[name], out.codes[name] = values, codes
        spec = dataclasses.replace(spec, nullable=spec.nullable or not valid.all())
    if not valid.all():
        out.valid[name] = valid
    out.specs.append(spec)


def _to_unit(name: str, col: pa.Array, unit: str) -> pa.Array:
    target = pa.date32() if unit == "D" else pa.timestamp(unit, tz=getattr(col.type, "tz", None))
    try:
        return col.cast(target)  # safe: refuses to drop precision
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(
            f"attribute column {name!r}: cannot store as the index's unit {unit!r} ({exc})", field=name
        ) from exc


def _grow(dictionary: Dictionary, values: pa.Array) -> tuple[Dictionary, np.ndarray]:
    """``dictionary`` with the values it lacks appended (sorted prefix kept), and the codes
    (-1 for nulls)."""
    nulls = values.is_null().to_numpy(zero_copy_only=False)

    def codes_in(d: Dictionary) -> np.ndarray:
        codes = np.full(len(values), -1, dtype=np.int64)
        present = values.filter(pa.array(~nulls)).to_pylist()
        if present:
            codes[~nulls] = d.codes_of(present)
        return codes

    codes = codes_in(dictionary)
    missing = (codes < 0) & ~nulls
    if not missing.any():
        return dictionary, codes
    new = sorted_unique(values.filter(pa.array(missing)))
    values_all = pa.concat_arrays([dictionary.values, new.cast(dictionary.values.type)])
    grown = Dictionary(values_all, dictionary.sorted)
    return grown, codes_in(grown)


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
