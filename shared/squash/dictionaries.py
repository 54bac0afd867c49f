"""Value dictionaries of string and list columns: code <-> value, kept by the coordinator.

A category column's rows hold codes into its dictionary; a list column's elements hold codes
into the dictionary of its element values. Dictionaries are sorted by value and stored in
one file of the build (``dictionaries.arrow``), not in the manifest and never in a worker's
event: a worker filters and returns codes, the coordinator translates. So a column of a
million distinct strings costs the coordinator one file and each worker event nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import read_stream, stream_bytes
from .errors import IndexFormatError

_SORTED = b"squash.sorted"  # how many leading values are in sorted order
#: Up to this many operands are looked up by binary search; more, by one hash join.
_BISECT_MAX = 64


class Dictionary:
    """Distinct values (an Arrow array) with code lookup both ways: the first ``sorted``
    values are in order (a build's), any after them were appended (a write's new values)."""

    def __init__(self, values: pa.Array, sorted_count: int | None = None) -> None:
        self.sorted = len(values) if sorted_count is None else sorted_count
        self.values = values
        self._numeric = not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type))
        head = values.slice(0, self.sorted)
        self._np = head.to_numpy(zero_copy_only=False) if self._numeric else None
        self._head = head
        tail = values.slice(self.sorted).to_pylist()
        self._tail = {v: self.sorted + i for i, v in enumerate(tail)}

    def __len__(self) -> int:
        return len(self.values)

    def codes_of(self, operands: Sequence[Any]) -> np.ndarray:
        """Code of each operand (already of the dictionary's type), -1 where absent."""
        codes = self._sorted_codes_of(operands)
        if self._tail:
            for i, v in enumerate(operands):
                if codes[i] < 0:
                    codes[i] = self._tail.get(v, -1)
        return codes

    def _sorted_codes_of(self, operands: Sequence[Any]) -> np.ndarray:
        if not operands:
            return np.zeros(0, dtype=np.int64)
        if self._numeric:
            vals = np.asarray(operands, dtype=self._np.dtype)
            at = np.searchsorted(self._np, vals)
            hit = at < self._np.shape[0]
            hit[hit] = self._np[at[hit]] == vals[hit]
            return np.where(hit, at, -1).astype(np.int64)
        if len(operands) <= _BISECT_MAX:
            view = _StringView(self._head)
            out = []
            for v in operands:
                i = bisect.bisect_left(view, v)
                out.append(i if i < len(view) and view[i] == v else -1)
            return np.array(out, dtype=np.int64)
        found = pc.index_in(pa.array(list(operands), self.values.type), value_set=self._head)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def decode(self, codes: np.ndarray) -> list[Any]:
        """Values of ``codes`` as Python objects."""
        return self.values.take(pa.array(np.asarray(codes, dtype=np.int64))).to_pylist()


class _StringView(Sequence):
    """Index access to an Arrow string array as Python str, for :mod:`bisect` (UTF-8 byte
    order, Arrow's sort order, is code-point order, Python's)."""

    def __init__(self, values: pa.Array) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):  # type: ignore[override]
        return self._values[i].as_py()


def sorted_unique(values: pa.Array) -> pa.Array:
    """Distinct non-null values, sorted (the dictionary of a column)."""
    uniq = pc.unique(values.drop_null())
    return uniq.take(pc.array_sort_indices(uniq))


def encode(values: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Codes (int64) of ``values`` into ``dictionary``; -1 for nulls."""
    found = pc.index_in(values, value_set=dictionary)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def to_bytes(dictionaries: dict[str, Dictionary]) -> bytes:
    """One Arrow IPC stream: a column per dictionary, holding one list row of its values."""
    fields, columns = [], []
    for name, d in dictionaries.items():
        column = pa.LargeListArray.from_arrays(pa.array([0, len(d)], pa.int64()), d.values)
        fields.append(pa.field(name, column.type, metadata={_SORTED: str(d.sorted).encode()}))
        columns.append(column)
    return stream_bytes(pa.Table.from_arrays(columns, schema=pa.schema(fields)))


def from_bytes(data: bytes, name: str = "dictionaries") -> dict[str, Dictionary]:
    table = read_stream(data, name)
    out = {}
    for field in table.schema:
        column = table.column(field.name)
        if not pa.types.is_large_list(field.type) or len(column) != 1 or column.null_count:
            raise IndexFormatError(f"{name}: column {field.name!r} is not a dictionary")
        values = column.chunk(0).values
        try:
            count = int((field.metadata or {}).get(_SORTED, str(len(values)).encode()))
        except ValueError:
            count = -1
        if not 0 <= count <= len(values):
            raise IndexFormatError(f"{name}: column {field.name!r} has a malformed sorted count")
        out[field.name] = Dictionary(values, count)
    return out
