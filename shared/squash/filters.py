"""The filter language: Mongo-style JSON predicates over attributes and ``id``.

``{"label": {"$in": ["Bag", "Coat"]}, "brightness": {"$gte": 0.2, "$lt": 0.4}}``. On a field:
``$eq $ne $gt $gte $lt $lte $in $nin $exists $all $not``; over filters: ``$and`` / ``$or``
(lists) and ``$not`` (one filter); implicit AND across keys. Nulls: a comparison never
matches a null, ``$ne``/``$nin`` included (``$exists: false`` selects them). A list field
matches ``$eq``/``$in`` when it holds any operand, ``$ne``/``$nin`` when it holds none, and
``$all`` when it holds every one. Timestamps take ISO-8601 strings or epoch seconds.

Parsing resolves everything the schema knows — strings to dictionary codes, operands to the
column's domain and unit — into a :data:`Node` tree, which :mod:`squash.filter_eval`
evaluates three ways (``maybe``/``sure`` on codes for L0, ``exact`` on raw values). The tree
has a JSON form (:func:`node_to_json`), which is what a worker receives: codes, never
dictionaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from .attributes import I64_MAX, I64_MIN, ID_SPEC, AttributeSpec
from .errors import FilterError, InputError
from .jsontext import loads
from .timestamps import to_ticks

FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$all", "$not")
ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
#: Limits on one filter (documented in the README, "Limits and guarantees").
MAX_FILTER_DEPTH = 32  # nested $and/$or/$not levels
MAX_FILTER_TERMS = 1024  # field comparisons in total ({"a": {"$gte": 1, "$lt": 5}} is 2)
MAX_IN_VALUES = 10_000  # operands of one $in/$nin/$all
#: Normalised comparison operators a Compare node holds, by field kind.
SCALAR_OPS = ("$eq", "$ne", "$gte", "$lte", "$in", "$nin", "$exists")
LIST_OPS = ("$any", "$none", "$all", "$exists")


@dataclass(frozen=True)
class Compare:
    """One field test, normalised by :func:`_compare_node`. Scalar fields: ``op`` in
    ``$eq $ne $gte $lte $in $nin`` with a value of the field's domain (a category's code; a
    sorted array for ``$in/$nin``). List fields: ``$any $none $all`` with the sorted element
    codes. Any field: ``$exists`` with a bool."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Const:
    """A test the schema decides alone (``{"n": {"$eq": 2.5}}`` on an int column: False)."""

    value: bool


@dataclass(frozen=True)
class Logical:
    op: Literal["$and", "$or", "$not"]
    children: tuple[Node, ...]


Node = Compare | Const | Logical


def parse_filter(
    filt: Any, specs: list[AttributeSpec], dictionaries: Mapping[str, Any] | None = None
) -> Node | None:
    """Parse a filter (dict, or JSON text) against the schema; None means "no filter".

    ``dictionaries`` (name -> :class:`~squash.dictionaries.Dictionary`) resolve string and
    list operands to codes. Limits (README, "Limits and guarantees") are checked while
    parsing, so no input can drive the recursion deeper than MAX_FILTER_DEPTH.
    """
    if isinstance(filt, str | bytes):
        filt = loads(filt, "filter", field="filter", error=FilterError)
    if filt is None:
        return None
    parser = _Parser({s.name: s for s in specs}, dictionaries or {})
    return parser.doc(filt, "filter", 0)


class _Parser:
    def __init__(self, schema: dict[str, AttributeSpec], dictionaries: Mapping[str, Any]) -> None:
        self.schema = schema
        self.dictionaries = dictionaries
        self.terms = 0

    def doc(self, doc: Any, where: str, depth: int) -> Node:
        if not isinstance(doc, dict):
            raise FilterError(f"{where} must be a JSON object, got {type(doc).__name__}")
        parts: list[Node] = []
        for key, val in doc.items():
            if not isinstance(key, str):
                raise FilterError(f"{where}: keys must be strings, got {key!r}")
            if key in ("$and", "$or", "$not") and depth >= MAX_FILTER_DEPTH:
                raise FilterError(f"filter is nested more than {MAX_FILTER_DEPTH} levels of $and/$or/$not")
            if key in ("$and", "$or"):
                if not isinstance(val, list) or not val:
                    raise FilterError(f"{key} takes a non-empty list of filters")
                kids = tuple(self.doc(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(val))
                parts.append(Logical(key, kids))
            elif key == "$not":
                if not isinstance(val, dict) or not val:
                    raise FilterError('$not takes one non-empty filter object, e.g. {"$not": {"a": 1}}')
                parts.append(Logical("$not", (self.doc(val, "$not", depth + 1),)))
            elif key.startswith("$"):
                raise FilterError(f"unknown operator {key!r} at the top of {where}; use $and, $or or $not")
            else:
                parts.extend(self.field(key, val, depth))
        if not parts:
            return Const(True)
        return parts[0] if len(parts) == 1 else Logical("$and", tuple(parts))

    def field(self, name: str, val: Any, depth: int) -> list[Node]:
        spec = ID_SPEC if name == "id" else self.schema.get(name)
        if spec is None:
            known = ", ".join(sorted([*self.schema, "id"]))
            raise FilterError(f"unknown field {name!r} in filter (fields: {known})")
        ops = val if isinstance(val, dict) else {"$eq": val}
        if not ops:
            raise FilterError(f"field {name!r} has an empty operator object")
        out: list[Node] = []
        for op, operand in ops.items():
            if op == "$not":
                if depth >= MAX_FILTER_DEPTH:
                    raise FilterError(
                        f"filter is nested more than {MAX_FILTER_DEPTH} levels of $and/$or/$not"
                    )
                inner = operand if isinstance(operand, dict) and operand else {"$eq": operand}
                out.append(Logical("$not", tuple(self._and(self.field(name, inner, depth + 1)))))
                continue
            self.terms += 1
            if self.terms > MAX_FILTER_TERMS:
                raise FilterError(
                    f"filter has more than {MAX_FILTER_TERMS} field comparisons ({self.terms} so far); "
                    "use $in for many values of one field"
                )
            if op not in FIELD_OPS:
                raise FilterError(
                    f"unknown operator {op!r} on field {name!r} (supported: {', '.join(FIELD_OPS)})"
                )
            out.append(self.compare(spec, op, operand))
        return out

    @staticmethod
    def _and(nodes: list[Node]) -> tuple[Node, ...]:
        return (nodes[0],) if len(nodes) == 1 else (Logical("$and", tuple(nodes)),)

    def compare(self, spec: AttributeSpec, op: str, operand: Any) -> Node:
        if op == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"$exists on field {spec.name!r} takes true or false, got {operand!r}")
            return Compare(spec.name, "$exists", operand)
        if op in ("$in", "$nin", "$all"):
            if not isinstance(operand, list):
                raise FilterError(f"{op} on field {spec.name!r} takes a list")
            if len(operand) > MAX_IN_VALUES:
                raise FilterError(
                    f"{op} on field {spec.name!r} has {len(operand)} values; at most {MAX_IN_VALUES}"
                )
        if spec.kind == "list":
            return self.list_compare(spec, op, operand)
        if op == "$all":
            raise FilterError(
                f"$all applies to list fields; {spec.name!r} is a {spec.kind} field (use $in or $eq)"
            )
        return _compare_node(spec, op, operand, self.value)

    def value(self, spec: AttributeSpec, op: str, v: Any) -> int | float | Fraction:
        """Check an operand's type against the field: a number (int, float), ticks of the
        field's unit (timestamp), 0/1 (bool) or a dictionary code (category; -1: absent)."""
        if spec.kind in ("int", "float"):
            return _number(spec, op, v)
        if spec.kind == "timestamp":
            if isinstance(v, str):
                try:
                    return to_ticks(v, spec.unit)
                except ValueError:
                    raise FilterError(
                        f"filter field {spec.name!r} is a timestamp; the {op} operand {v!r} is not an "
                        'ISO-8601 date or date-time (e.g. "2024-05-01" or "2024-05-01T12:00:00Z")'
                    ) from None
            return to_ticks(_number(spec, op, v, "an ISO-8601 string or epoch seconds"), spec.unit)
        if op in ORDER_OPS:
            raise FilterError(f"operator {op} is not supported on {spec.kind} field {spec.name!r}")
        if spec.kind == "bool":
            if not isinstance(v, bool):
                raise FilterError(
                    f"filter field {spec.name!r} is boolean; {op} needs true or false, got {v!r}"
                )
            return int(v)
        if not isinstance(v, str):
            raise FilterError(f"filter field {spec.name!r} is categorical; {op} needs a string, got {v!r}")
        return int(self._dictionary(spec).codes_of([v])[0])

    def list_compare(self, spec: AttributeSpec, op: str, operand: Any) -> Node:
        if op in ORDER_OPS:
            raise FilterError(
                f"operator {op} is not supported on list field {spec.name!r} (use $eq, $ne, $in, "
                "$nin, $all or $exists)"
            )
        many = operand if op in ("$in", "$nin", "$all") else [operand]
        if op == "$all" and not many:
            raise FilterError(f"$all on field {spec.name!r} takes a non-empty list")
        codes = self.element_codes(spec, op, many)
        if op == "$all":
            if (codes < 0).any():  # a value no row holds: no row holds them all
                return Const(False)
            return Compare(spec.name, "$all", np.unique(codes))
        present = np.unique(codes[codes >= 0])
        if op in ("$eq", "$in"):
            return Compare(spec.name, "$any", present) if present.size else Const(False)
        return Compare(spec.name, "$none", present)  # $ne, $nin: non-null rows holding none

    def element_codes(self, spec: AttributeSpec, op: str, values: list[Any]) -> np.ndarray:
        """Codes of list operands in the field's element dictionary (-1: absent)."""
        checked: list[Any] = []
        for v in values:
            if spec.element == "category":
                if not isinstance(v, str):
                    raise FilterError(
                        f"list field {spec.name!r} holds strings; {op} needs strings, got {v!r}"
                    )
                checked.append(v)
            elif spec.element == "bool":
                if not isinstance(v, bool):
                    raise FilterError(
                        f"list field {spec.name!r} holds booleans; {op} needs true or false, got {v!r}"
                    )
                checked.append(v)
            else:
                num = _number(spec, op, v)
                exact = _exact_in_domain(spec, num)
                checked.append(exact)
        present = [v for v in checked if v is not None]
        codes = np.full(len(checked), -1, dtype=np.int64)
        if present:
            found = self._dictionary(spec).codes_of(present)
            codes[[i for i, v in enumerate(checked) if v is not None]] = found
        return codes

    def _dictionary(self, spec: AttributeSpec) -> Any:
        found = self.dictionaries.get(spec.name)
        if found is None:
            raise InputError(f"no dictionary for field {spec.name!r} (open the index to filter on it)")
        return found


def _compare_node(spec: AttributeSpec, op: str, operand: Any, value) -> Node:
    """A comparison normalised to the field's domain (int64 or float64), so that every
    level compares exactly in the column's own type:

    * ``$gt/$gte/$lt/$lte`` become ``$gte t`` / ``$lte t`` with ``t`` the nearest value of
      the domain on the matching side (``$gt 2.5`` on an int column is ``$gte 3``);
    * ``$eq/$ne`` keep a domain value; an operand that is no value of the domain makes
      ``$eq`` False and ``$ne`` "not null" (``$exists``);
    * ``$in/$nin`` keep the operands that are values of the domain, as one sorted array;
    * a bound beyond the domain makes the comparison False, or "not null" when every value
      passes it.
    """
    if op in ("$in", "$nin"):
        values = [value(spec, op, v) for v in operand]
        exact = [e for e in (_exact_in_domain(spec, v) for v in values) if e is not None]
        return Compare(spec.name, op, np.array(sorted(set(exact)), dtype=spec.domain))
    v = value(spec, op, operand)
    if op in ("$eq", "$ne"):
        e = _exact_in_domain(spec, v)
        if e is None:  # no value of the column equals the operand
            return Const(False) if op == "$eq" else Compare(spec.name, "$exists", True)
        return Compare(spec.name, op, spec.domain.type(e))
    lower = op in ("$gt", "$gte")  # x >= t  (else x <= t)
    t = _bound(spec, v, up=lower, strict=op in ("$gt", "$lt"))
    lo_dom, hi_dom = _domain_range(spec)
    if (lower and t > hi_dom) or (not lower and t < lo_dom):
        return Const(False)
    if (lower and t <= lo_dom) or (not lower and t >= hi_dom):
        return Compare(spec.name, "$exists", True)
    return Compare(spec.name, "$gte" if lower else "$lte", spec.domain.type(t))


def _domain_range(spec: AttributeSpec) -> tuple[float | int, float | int]:
    if spec.domain == np.float64:
        return -math.inf, math.inf
    return I64_MIN, I64_MAX


def _exact_in_domain(spec: AttributeSpec, v: int | float | Fraction) -> int | float | None:
    """``v`` as a value of the field's domain when it is exactly one, else None."""
    if spec.domain == np.float64:
        f = float(v)  # exact int/float comparison below: Python compares them exactly
        return f if f == v else None
    if isinstance(v, Fraction):
        if v.denominator != 1:
            return None
        v = int(v)
    if isinstance(v, float):
        if not v.is_integer():
            return None
        v = int(v)
    return v if I64_MIN <= v <= I64_MAX else None


def _bound(spec: AttributeSpec, v: int | float | Fraction, *, up: bool, strict: bool) -> int | float:
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


def _number(spec: AttributeSpec, op: str, v: Any, what: str = "a finite number") -> int | float:
    kind = {"timestamp": "a timestamp", "list": "a list of numbers"}.get(spec.kind, "numeric")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FilterError(f"filter field {spec.name!r} is {kind}; {op} needs {what}, got {v!r}")
    if isinstance(v, int):
        try:
            float(v)
        except OverflowError:
            raise FilterError(
                f"filter field {spec.name!r}: the {op} operand is too large (an integer of "
                f"{len(str(abs(v)))} digits; numbers must fit a float64)"
            ) from None
    elif not math.isfinite(v):
        raise FilterError(f"filter field {spec.name!r} is {kind}; {op} needs {what}, got {v!r}")
    return v


def fields_of(node: Node | None) -> set[str]:
    """Names of the fields a filter reads."""
    if node is None or isinstance(node, Const):
        return set()
    if isinstance(node, Compare):
        return {node.field}
    return set().union(*(fields_of(c) for c in node.children))


# -- the JSON form a worker receives -------------------------------------------------------


def node_to_json(node: Node | None) -> Any:
    """The parsed filter as JSON: resolved codes and domain values (exact: floats as
    ``repr``-exact JSON numbers, int64 as JSON integers)."""
    if node is None:
        return None
    if isinstance(node, Const):
        return {"const": node.value}
    if isinstance(node, Logical):
        return {"op": node.op, "of": [node_to_json(c) for c in node.children]}
    value = node.value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    return {"field": node.field, "op": node.op, "value": value}


def node_from_json(doc: Any, specs: list[AttributeSpec]) -> Node | None:
    """Inverse of :func:`node_to_json`, checked against the schema (an event from outside
    squash is an InputError here, not a crash in the search)."""
    if doc is None:
        return None
    schema = {s.name: s for s in specs} | {"id": ID_SPEC}
    return _node_from_json(doc, schema, 0)


def _node_from_json(doc: Any, schema: dict[str, AttributeSpec], depth: int) -> Node:
    def bad(what: str) -> InputError:
        return InputError(f"malformed predicate: {what}", field="predicate")

    if not isinstance(doc, dict) or depth > 2 * MAX_FILTER_DEPTH + 2:
        raise bad("not an object, or nested too deep")
    if "const" in doc:
        if not isinstance(doc["const"], bool):
            raise bad("const must be a bool")
        return Const(doc["const"])
    op = doc.get("op")
    if op in ("$and", "$or", "$not"):
        kids = doc.get("of")
        if not isinstance(kids, list) or not kids or (op == "$not" and len(kids) != 1):
            raise bad(f"{op} needs its children")
        return Logical(op, tuple(_node_from_json(k, schema, depth + 1) for k in kids))
    spec = schema.get(doc.get("field"))  # type: ignore[arg-type]
    if spec is None:
        raise bad(f"unknown field {doc.get('field')!r}")
    allowed = LIST_OPS if spec.kind == "list" else SCALAR_OPS
    if op not in allowed:
        raise bad(f"operator {op!r} on {spec.kind} field {spec.name!r}")
    value = doc.get("value")
    if op == "$exists":
        if not isinstance(value, bool):
            raise bad("$exists takes a bool")
        return Compare(spec.name, op, value)
    dtype = np.dtype(np.int64) if spec.kind == "list" else spec.domain
    many = op in ("$in", "$nin", "$any", "$none", "$all")
    try:
        if many:
            if not isinstance(value, list) or any(isinstance(v, bool) for v in value):
                raise bad(f"{op} takes a list of numbers")
            arr = np.unique(np.array(value, dtype=dtype))
            return Compare(spec.name, op, arr)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"{op} takes a number")
        return Compare(spec.name, op, dtype.type(value))
    except (OverflowError, ValueError, TypeError) as exc:
        raise bad(f"{op} operand ({exc})") from None
