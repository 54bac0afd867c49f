"""Named numpy arrays <-> Arrow IPC file bytes, zero-copy on read, no pickle.

Each array becomes one column holding a single list row (the flattened values); its shape
and dtype sit in the field metadata. Reading maps the list values straight onto numpy
(read-only views of the downloaded buffer), so a warm worker keeps no second copy.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .errors import IndexFormatError

_SHAPE = b"squash.shape"


def to_arrow_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` into one Arrow IPC stream (C-contiguous values, shapes kept; the
    stream format: the file format's footer repeats the schema, ~100 bytes per array)."""
    fields, columns = [], []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"array {name!r}: dtype {arr.dtype} cannot be stored")
        flat = pa.array(arr.reshape(-1))
        column = pa.LargeListArray.from_arrays(pa.array([0, len(flat)], pa.int64()), flat)
        meta = {_SHAPE: json.dumps(list(arr.shape)).encode()}
        fields.append(pa.field(name, column.type, nullable=False, metadata=meta))
        columns.append(column)
    return stream_bytes(pa.Table.from_arrays(columns, schema=pa.schema(fields)))


def stream_bytes(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes (the format of every squash file but the manifest)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_stream(data: bytes, name: str) -> pa.Table:
    """Inverse of :func:`stream_bytes`; unreadable bytes are an IndexFormatError naming ``name``."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise IndexFormatError(f"{name}: not a readable Arrow IPC file ({exc})") from exc


def from_arrow_bytes(data: bytes, name: str = "<bytes>") -> dict[str, np.ndarray]:
    """Inverse of :func:`to_arrow_bytes`; arrays are read-only views of ``data``."""
    table = read_stream(data, name)
    out: dict[str, np.ndarray] = {}
    for field in table.schema:
        shape = json.loads((field.metadata or {}).get(_SHAPE, b"null"))
        chunk = table.column(field.name).chunk(0)
        values = chunk.values
        if shape is None or values.null_count:
            raise IndexFormatError(f"{name}: column {field.name!r} is not a squash array")
        arr = values.to_numpy(zero_copy_only=True)
        out[field.name] = arr.reshape(shape)
    return out
