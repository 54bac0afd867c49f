"""The filter language: Mongo-style JSON predicates over attributes.

``{"label": {"$in": ["Bag", "Coat"]}, "brightness": {"$gte": 0.2, "$lt": 0.4}}`` — field
equality, ``$eq $ne $gt $gte $lt $lte $in $nin`` on a field, ``$and`` / ``$or`` over lists,
implicit AND across keys. A parsed filter is evaluated three ways:

* ``maybe`` on quantized codes: a superset of the matches (L0 pruning);
* ``sure`` on quantized codes: a subset of the matches (to guarantee k results);
* ``exact`` on raw values (L4, the final word).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .attributes import AttributeSpec
from .errors import FilterError

FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
Mode = Literal["maybe", "sure", "exact"]


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Any  # number, bool, category code, or a tuple of them for $in/$nin


@dataclass(frozen=True)
class Logical:
    op: Literal["$and", "$or"]
    children: tuple[Compare | Logical, ...]


Node = Compare | Logical


def parse_filter(filt: Any, specs: list[AttributeSpec]) -> Node | None:
    """Parse a filter (dict, or JSON text) against the schema; None means "no filter"."""
    if isinstance(filt, str | bytes):
        try:
            filt = json.loads(filt)
        except json.JSONDecodeError as exc:
            raise FilterError(f"filter is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    if filt is None:
        return None
    schema = {s.name: s for s in specs}
    node = _parse_doc(filt, schema, "filter")
    return node


def _parse_doc(doc: Any, schema: dict[str, AttributeSpec], where: str) -> Node:
    if not isinstance(doc, dict):
        raise FilterError(f"{where} must be a JSON object, got {type(doc).__name__}")
    if not doc:
        return Logical("$and", ())
    parts: list[Node] = []
    for key, val in doc.items():
        if key in ("$and", "$or"):
            if not isinstance(val, list) or not val:
                raise FilterError(f"{key} takes a non-empty list of filters")
            kids = tuple(_parse_doc(v, schema, f"{key}[{i}]") for i, v in enumerate(val))
            parts.append(Logical(key, kids))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top of {where}; use $and or $or")
        else:
            parts.extend(_parse_field(key, val, schema))
    return parts[0] if len(parts) == 1 else Logical("$and", tuple(parts))


def _parse_field(name: str, val: Any, schema: dict[str, AttributeSpec]) -> list[Node]:
    spec = schema.get(name)
    if spec is None:
        known = ", ".join(sorted(schema)) or "none"
        raise FilterError(f"unknown field {name!r} in filter (attributes: {known})")
    if not isinstance(val, dict):
        return [Compare(name, "$eq", _operand(spec, "$eq", val))]
    if not val:
        raise FilterError(f"field {name!r} has an empty operator object")
    out: list[Node] = []
    for op, operand in val.items():
        if op not in FIELD_OPS:
            raise FilterError(
                f"unknown operator {op!r} on field {name!r} (supported: {', '.join(FIELD_OPS)})"
            )
        if op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise FilterError(f"{op} on field {name!r} takes a list")
            value: Any = tuple(_operand(spec, op, v) for v in operand)
        else:
            value = _operand(spec, op, operand)
        out.append(Compare(name, op, value))
    return out


def _operand(spec: AttributeSpec, op: str, v: Any) -> Any:
    """Check an operand's type against the field; categories become their codes (-1: absent)."""
    if spec.numeric:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise FilterError(f"field {spec.name!r} is numeric; {op} needs a finite number, got {v!r}")
        return v
    if op in ORDER_OPS:
        raise FilterError(f"operator {op} is not supported on {spec.kind} field {spec.name!r}")
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise FilterError(f"field {spec.name!r} is boolean; {op} needs true or false, got {v!r}")
        return int(v)
    if not isinstance(v, str):
        raise FilterError(f"field {spec.name!r} is categorical; {op} needs a string, got {v!r}")
    try:
        return spec.categories.index(v)
    except ValueError:
        return -1  # a category the index has never seen matches nothing


def fields_of(node: Node | None) -> set[str]:
    """Names of the attributes a filter reads."""
    if node is None:
        return set()
    if isinstance(node, Compare):
        return {node.field}
    return set().union(*(fields_of(c) for c in node.children))


def evaluate(
    node: Node | None,
    columns: Mapping[str, np.ndarray],
    specs: list[AttributeSpec],
    mode: Mode,
    n: int,
) -> np.ndarray:
    """Boolean mask over ``n`` rows. ``columns`` holds codes (maybe/sure) or raw values (exact)."""
    if node is None:
        return np.ones(n, dtype=bool)
    if isinstance(node, Logical):
        if not node.children:
            return np.ones(n, dtype=bool)
        masks = (evaluate(c, columns, specs, mode, n) for c in node.children)
        combine = np.logical_and if node.op == "$and" else np.logical_or
        out = next(masks).copy()
        for m in masks:
            combine(out, m, out=out)
        return out
    spec = next(s for s in specs if s.name == node.field)
    col = columns[node.field]
    if mode == "exact":
        return _compare(col, node.op, node.value)
    lo, hi = spec.cell_ranges()
    cell_mask = (_maybe if mode == "maybe" else _sure)(lo, hi, node.op, node.value)
    return cell_mask[col]


def _compare(x: np.ndarray, op: str, v: Any) -> np.ndarray:
    if op == "$eq":
        return x == v
    if op == "$ne":
        return x != v
    if op == "$gt":
        return x > v
    if op == "$gte":
        return x >= v
    if op == "$lt":
        return x < v
    if op == "$lte":
        return x <= v
    found = np.isin(x, np.asarray(v if v else (), dtype=np.float64))
    return found if op == "$in" else ~found


def _maybe(lo: np.ndarray, hi: np.ndarray, op: str, v: Any) -> np.ndarray:
    """Cells that may hold a matching value."""
    if op == "$eq":
        return (lo <= v) & (v <= hi)
    if op == "$ne":
        return ~((lo == v) & (hi == v))
    if op == "$gt":
        return hi > v
    if op == "$gte":
        return hi >= v
    if op == "$lt":
        return lo < v
    if op == "$lte":
        return lo <= v
    vals = np.asarray(v if v else (), dtype=np.float64)
    if op == "$in":
        return ((lo[:, None] <= vals) & (vals <= hi[:, None])).any(axis=1)
    return ~((lo == hi) & np.isin(lo, vals))  # $nin


def _sure(lo: np.ndarray, hi: np.ndarray, op: str, v: Any) -> np.ndarray:
    """Cells whose every value matches."""
    if op == "$eq":
        return (lo == v) & (hi == v)
    if op == "$ne":
        return (v < lo) | (v > hi)
    if op == "$gt":
        return lo > v
    if op == "$gte":
        return lo >= v
    if op == "$lt":
        return hi < v
    if op == "$lte":
        return hi <= v
    vals = np.asarray(v if v else (), dtype=np.float64)
    if op == "$in":
        return (lo == hi) & np.isin(lo, vals)
    return ~((lo[:, None] <= vals) & (vals <= hi[:, None])).any(axis=1)  # $nin
