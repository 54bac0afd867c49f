"""Evaluate a parsed filter (:mod:`squash.filters`) over rows, three ways:

* ``maybe`` on codes: a superset of the matches (L0 pruning, partition match counts);
* ``sure`` on codes: a subset of the matches (to guarantee k results in one pass);
* ``exact`` on raw values (the final word, L4).

Codes of categories, booleans and ids are the values themselves, so every mode is exact on
them. Numeric cells record the [lo, hi] of the values they hold. A list row's code is a word
with a bit per frequent element value and hashed buckets for the rest: exact for values
with a bit, a superset for the rest. ``$not`` swaps the bounds: maybe(not X) = not sure(X).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from .attributes import ID_SPEC, AttributeSpec, AttrTable, ListColumn
from .filters import Const, Logical, Node

Mode = Literal["maybe", "sure", "exact"]
_OTHER = {"maybe": "sure", "sure": "maybe", "exact": "exact"}


def schema_of(specs: list[AttributeSpec]) -> dict[str, AttributeSpec]:
    """Specs by field name, ``id`` included."""
    return {s.name: s for s in specs} | {"id": ID_SPEC}


def evaluate(
    node: Node | None, table: AttrTable, schema: Mapping[str, AttributeSpec], mode: Mode
) -> np.ndarray:
    """Boolean mask over ``table``'s rows (``schema``: :func:`schema_of`)."""
    n = table.n
    if node is None:
        return np.ones(n, dtype=bool)
    if isinstance(node, Const):
        return np.full(n, node.value)
    if isinstance(node, Logical):
        if node.op == "$not":
            return ~evaluate(node.children[0], table, schema, _OTHER[mode])  # type: ignore[arg-type]
        masks = (evaluate(c, table, schema, mode) for c in node.children)
        combine = np.logical_and if node.op == "$and" else np.logical_or
        out = next(masks).copy()
        for m in masks:
            combine(out, m, out=out)
        return out
    if node.field == "id":
        if node.op == "$exists":
            return np.full(n, node.value)
        return _compare(table.ids, node.op, node.value)
    spec = schema[node.field]
    codes = table.codes[node.field]
    valid = table.valid.get(node.field)  # None: the column has no nulls
    if node.op == "$exists":
        present = np.ones(n, dtype=bool) if valid is None else valid.copy()  # callers mutate masks
        return present if node.value else ~present
    if spec.kind == "list":
        if mode == "exact":
            return _list_exact(table.raw[node.field], valid, node.op, node.value)  # type: ignore[index,arg-type]
        return _list_bounds(spec, codes, valid, node.op, node.value, mode)
    if spec.numeric and mode != "exact":
        lo, hi = spec.cell_ranges()
        cells = (_maybe if mode == "maybe" else _sure)(lo, hi, node.op, node.value)
        out = cells[codes]
        return out if valid is None else out & valid  # a null matches no comparison
    # exact on raw numbers; categories and bools compare their codes at every level
    col = table.raw[node.field] if spec.numeric else codes  # type: ignore[index]
    out = _compare(col, node.op, node.value)
    return out if valid is None else out & valid


# Operands are already values of the column's domain (see filters._compare_node): numpy
# compares int64 with int64 and float64 with float64, exactly. Arrays are sorted.


def _compare(x: np.ndarray, op: str, v) -> np.ndarray:
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


def _maybe(lo: np.ndarray, hi: np.ndarray, op: str, v) -> np.ndarray:
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


def _sure(lo: np.ndarray, hi: np.ndarray, op: str, v) -> np.ndarray:
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


def _list_bounds(
    spec: AttributeSpec, words: np.ndarray, valid: np.ndarray | None, op: str, codes: np.ndarray, mode: str
) -> np.ndarray:
    """maybe/sure of a list test on the L0 words (see :mod:`squash.attributes`)."""
    bits = np.left_shift(np.uint64(1), spec.element_bits(codes))  # a null row's word is 0
    own = spec.has_own_bit(codes)
    every = np.bitwise_or.reduce(bits) if bits.size else np.uint64(0)
    mine = np.bitwise_or.reduce(bits[own]) if own.any() else np.uint64(0)
    if op == "$all":
        if mode == "sure" and not own.all():
            return np.zeros(words.shape[0], dtype=bool)
        return (words & every) == every
    any_maybe = (words & every) != 0
    any_sure = (words & mine) != 0
    if op == "$any":
        return any_maybe if mode == "maybe" else any_sure
    present = np.ones(words.shape[0], dtype=bool) if valid is None else valid
    return present & ~(any_sure if mode == "maybe" else any_maybe)  # $none


def _list_exact(col: ListColumn, valid: np.ndarray | None, op: str, codes: np.ndarray) -> np.ndarray:
    """Exact list tests on the rows' element codes."""
    n = col.offsets.shape[0] - 1
    m = codes.shape[0]
    at = np.minimum(np.searchsorted(codes, col.values), max(m - 1, 0))
    hit = (codes[at] == col.values) if m else np.zeros(col.values.shape, dtype=bool)
    if op == "$all":
        rows = np.repeat(np.arange(n), col.sizes)
        pairs = np.unique(rows[hit] * m + at[hit])  # each (row, operand) held, once
        return np.bincount(pairs // m, minlength=n) == m
    held = np.zeros(col.values.shape[0] + 1, dtype=np.int64)
    np.cumsum(hit, out=held[1:])
    any_held = (held[col.offsets[1:]] - held[col.offsets[:-1]]) > 0
    if op == "$any":
        return any_held
    return ~any_held if valid is None else valid & ~any_held  # $none
