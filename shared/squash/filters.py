"""The filter language: Mongo-style JSON predicates over attributes.

``{"label": {"$in": ["Bag", "Coat"]}, "brightness": {"$gte": 0.2, "$lt": 0.4}}`` — field
equality, ``$eq $ne $gt $gte $lt $lte $in $nin`` on a field, ``$and`` / ``$or`` over lists,
implicit AND across keys. A parsed filter is evaluated three ways:

* ``maybe`` on quantized codes: a superset of the matches (L0 pruning);
* ``sure`` on quantized codes: a subset of the matches (to guarantee k results);
* ``exact`` on raw values (L4, the final word).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .attributes import I64_MAX, I64_MIN, AttributeSpec
from .errors import FilterError
from .jsontext import loads

FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
#: Limits on one filter (documented in the README, "Limits and guarantees").
MAX_FILTER_DEPTH = 32  # nested $and/$or levels
MAX_FILTER_TERMS = 1024  # field comparisons in total ({"a": {"$gte": 1, "$lt": 5}} is 2)
MAX_IN_VALUES = 10_000  # operands of one $in/$nin
Mode = Literal["maybe", "sure", "exact"]


@dataclass(frozen=True)
class Compare:
    """One field comparison, normalised by :func:`_compare_node`: ``op`` is one of
    ``$eq $ne $gte $lte $in $nin`` (value in the field's domain; a sorted array for
    ``$in/$nin``) or ``$all`` / ``$none`` (constant, value None)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Logical:
    op: Literal["$and", "$or"]
    children: tuple[Compare | Logical, ...]


Node = Compare | Logical


def parse_filter(filt: Any, specs: list[AttributeSpec]) -> Node | None:
    """Parse a filter (dict, or JSON text) against the schema; None means "no filter".

    Limits (README, "Limits and guarantees"): at most MAX_FILTER_DEPTH nested $and/$or
    levels, MAX_FILTER_TERMS field comparisons and MAX_IN_VALUES operands per $in/$nin —
    checked while parsing, so no input can drive the recursion deeper than the limit.
    """
    if isinstance(filt, str | bytes):
        filt = loads(filt, "filter", field="filter", error=FilterError)
    if filt is None:
        return None
    schema = {s.name: s for s in specs}
    return _parse_doc(filt, schema, "filter", 0, [0])


def _parse_doc(doc: Any, schema: dict[str, AttributeSpec], where: str, depth: int, terms: list[int]) -> Node:
    if not isinstance(doc, dict):
        raise FilterError(f"{where} must be a JSON object, got {type(doc).__name__}")
    if not doc:
        return Logical("$and", ())
    parts: list[Node] = []
    for key, val in doc.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if depth >= MAX_FILTER_DEPTH:
                raise FilterError(f"filter is nested more than {MAX_FILTER_DEPTH} levels of $and/$or")
            if not isinstance(val, list) or not val:
                raise FilterError(f"{key} takes a non-empty list of filters")
            kids = tuple(_parse_doc(v, schema, f"{key}[{i}]", depth + 1, terms) for i, v in enumerate(val))
            parts.append(Logical(key, kids))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top of {where}; use $and or $or")
        else:
            parts.extend(_parse_field(key, val, schema, terms))
    return parts[0] if len(parts) == 1 else Logical("$and", tuple(parts))


def _parse_field(name: str, val: Any, schema: dict[str, AttributeSpec], terms: list[int]) -> list[Node]:
    spec = schema.get(name)
    if spec is None:
        known = ", ".join(sorted(schema)) or "none"
        raise FilterError(f"unknown field {name!r} in filter (attributes: {known})")
    ops = val if isinstance(val, dict) else {"$eq": val}
    if not ops:
        raise FilterError(f"field {name!r} has an empty operator object")
    terms[0] += len(ops)
    if terms[0] > MAX_FILTER_TERMS:
        raise FilterError(
            f"filter has more than {MAX_FILTER_TERMS} field comparisons ({terms[0]} so far); "
            "use $in for many values of one field"
        )
    out: list[Node] = []
    for op, operand in ops.items():
        if op not in FIELD_OPS:
            raise FilterError(
                f"unknown operator {op!r} on field {name!r} (supported: {', '.join(FIELD_OPS)})"
            )
        out.append(_compare_node(spec, op, operand))
    return out


def _compare_node(spec: AttributeSpec, op: str, operand: Any) -> Compare:
    """A comparison normalised to the field's domain (int64 or float64), so that every
    level compares exactly in the column's own type:

    * ``$gt/$gte/$lt/$lte`` become ``$gte t`` / ``$lte t`` with ``t`` the nearest value of
      the domain on the matching side (``$gt 2.5`` on an int column is ``$gte 3``);
    * ``$eq/$ne`` keep a domain value, or match nothing/everything when the operand is not
      a value of the domain (``$eq 2.5`` on an int column, ``$eq 2**64`` on int64);
    * ``$in/$nin`` keep the operands that are values of the domain, as one array;
    * a bound beyond the domain makes the comparison constant (``$all`` / ``$none``).
    """
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(f"{op} on field {spec.name!r} takes a list")
        if len(operand) > MAX_IN_VALUES:
            raise FilterError(
                f"{op} on field {spec.name!r} has {len(operand)} values; at most {MAX_IN_VALUES}"
            )
        values = [_operand(spec, op, v) for v in operand]
        exact = [e for e in (_exact_in_domain(spec, v) for v in values) if e is not None]
        return Compare(spec.name, op, np.array(sorted(set(exact)), dtype=spec.domain))
    v = _operand(spec, op, operand)
    if op in ("$eq", "$ne"):
        e = _exact_in_domain(spec, v)
        if e is None:  # no value of the column equals the operand
            return Compare(spec.name, "$none" if op == "$eq" else "$all", None)
        return Compare(spec.name, op, spec.domain.type(e))
    lower = op in ("$gt", "$gte")  # x >= t  (else x <= t)
    t = _bound(spec, v, up=lower, strict=op in ("$gt", "$lt"))
    lo_dom, hi_dom = _domain_range(spec)
    if t is None or (lower and t > hi_dom) or (not lower and t < lo_dom):
        return Compare(spec.name, "$none", None)
    if (lower and t <= lo_dom) or (not lower and t >= hi_dom):
        return Compare(spec.name, "$all", None)
    return Compare(spec.name, "$gte" if lower else "$lte", spec.domain.type(t))


def _domain_range(spec: AttributeSpec) -> tuple[float | int, float | int]:
    if spec.domain == np.float64:
        return -math.inf, math.inf
    return I64_MIN, I64_MAX


def _exact_in_domain(spec: AttributeSpec, v: int | float) -> int | float | None:
    """``v`` as a value of the field's domain when it is exactly one, else None."""
    if spec.domain == np.float64:
        f = float(v)  # exact int/float comparison below: Python compares them exactly
        return f if f == v else None
    if isinstance(v, float):
        if not v.is_integer():
            return None
        v = int(v)
    return v if I64_MIN <= v <= I64_MAX else None


def _bound(spec: AttributeSpec, v: int | float, *, up: bool, strict: bool) -> int | float | None:
    """The smallest domain value ``>= v`` (``> v`` when strict) if ``up``, else the largest
    ``<= v`` (``< v``); unbounded ints are clamped later against the domain's range."""
    if spec.domain == np.float64:
        f = float(v)
        if up and (f < v or (strict and f == v)):
            f = float(np.nextafter(f, math.inf))
        elif not up and (f > v or (strict and f == v)):
            f = float(np.nextafter(f, -math.inf))
        return f
    if up:
        return math.floor(v) + 1 if strict else math.ceil(v)
    return math.ceil(v) - 1 if strict else math.floor(v)


def _operand(spec: AttributeSpec, op: str, v: Any) -> int | float:
    """Check an operand's type against the field; categories become their codes (-1: absent)."""
    if spec.numeric:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise FilterError(f"filter field {spec.name!r} is numeric; {op} needs a finite number, got {v!r}")
        if isinstance(v, int):
            try:
                float(v)
            except OverflowError:
                raise FilterError(
                    f"filter field {spec.name!r}: the {op} operand is too large (an integer of "
                    f"{len(str(abs(v)))} digits; numbers must fit a float64)"
                ) from None
        elif not math.isfinite(v):
            raise FilterError(f"filter field {spec.name!r} is numeric; {op} needs a finite number, got {v!r}")
        return v
    if op in ORDER_OPS:
        raise FilterError(f"operator {op} is not supported on {spec.kind} field {spec.name!r}")
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise FilterError(f"filter field {spec.name!r} is boolean; {op} needs true or false, got {v!r}")
        return int(v)
    if not isinstance(v, str):
        raise FilterError(f"filter field {spec.name!r} is categorical; {op} needs a string, got {v!r}")
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
    if node.op in ("$all", "$none"):
        return np.full(n, node.op == "$all")
    spec = next(s for s in specs if s.name == node.field)
    col = columns[node.field]
    if mode == "exact":
        return _compare(col, node.op, node.value)
    lo, hi = spec.cell_ranges()
    cell_mask = (_maybe if mode == "maybe" else _sure)(lo, hi, node.op, node.value)
    return cell_mask[col]


# Operands are already values of the column's domain (see _compare_node): numpy compares
# int64 with int64 and float64 with float64, exactly. $in/$nin operands are sorted arrays.


def _compare(x: np.ndarray, op: str, v: Any) -> np.ndarray:
    if op == "$eq":
        return x == v
    if op == "$ne":
        return x != v
    if op == "$gte":
        return x >= v
    if op == "$lte":
        return x <= v
    found = np.isin(x, v)
    return found if op == "$in" else ~found


def _any_in(lo: np.ndarray, hi: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Whether each cell [lo, hi] holds at least one of the sorted ``vals``."""
    return np.searchsorted(vals, lo, side="left") < np.searchsorted(vals, hi, side="right")


def _maybe(lo: np.ndarray, hi: np.ndarray, op: str, v: Any) -> np.ndarray:
    """Cells that may hold a matching value."""
    if op == "$eq":
        return (lo <= v) & (v <= hi)
    if op == "$ne":
        return ~((lo == v) & (hi == v))
    if op == "$gte":
        return hi >= v
    if op == "$lte":
        return lo <= v
    if op == "$in":
        return _any_in(lo, hi, v)
    return ~((lo == hi) & np.isin(lo, v))  # $nin


def _sure(lo: np.ndarray, hi: np.ndarray, op: str, v: Any) -> np.ndarray:
    """Cells whose every value matches."""
    if op == "$eq":
        return (lo == v) & (hi == v)
    if op == "$ne":
        return (v < lo) | (v > hi)
    if op == "$gte":
        return lo >= v
    if op == "$lte":
        return hi <= v
    if op == "$in":
        return (lo == hi) & np.isin(lo, v)
    return ~_any_in(lo, hi, v)  # $nin
