"""Reading vectors and attributes from user files, with validation before anything is built.

Vectors: ``.npy`` (float16/32/64, uint8, int8), ``.fvecs``, ``.bvecs``, or Parquet (one
fixed-size-list or list column; the other columns are attributes). Attributes: Parquet or
CSV, one row per vector. Never unpickles: ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import InputError

VECTOR_DTYPES = (np.float16, np.float32, np.float64, np.uint8, np.int8)
#: Largest vector norm accepted: squared distances between such vectors stay finite in float32.
MAX_NORM = 1e18
FLOAT32_MAX = float(np.finfo(np.float32).max)
_CHUNK_ROWS = 65536


@dataclass
class VectorInput:
    vectors: np.ndarray  # (n, d) float32
    attributes: pa.Table | None  # columns beside the vectors (Parquet input)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} file {str(path)!r} does not exist", field=what)
    if not path.is_file():
        raise InputError(f"{what} path {str(path)!r} is not a file", field=what)


def read_vectors(path: str | Path, vector_column: str | None = None) -> VectorInput:
    """Load and validate vectors (float32, finite, 2-D, non-empty)."""
    arr, attrs, path = _load_vectors(Path(path), vector_column)
    return VectorInput(check_vectors(arr, f"vectors in {path.name}"), attrs)


def read_queries(path: str | Path) -> np.ndarray:
    """Load and validate query vectors as (Q, d) float32. Unlike build vectors, a 1-D
    ``.npy`` of shape (d,) is accepted as one query: ``np.save("q.npy", vec)`` is the
    natural way to save a single query, and a query file has no other 1-D reading."""
    arr, _, path = _load_vectors(Path(path), None, "queries")
    if arr.ndim == 1:
        arr = arr[None, :]
    return check_vectors(arr, f"queries in {path.name}")


def _load_vectors(
    path: Path, vector_column: str | None, what: str = "vectors"
) -> tuple[np.ndarray, pa.Table | None, Path]:
    """The array a vectors file holds (unchecked), its Parquet attribute columns, its path."""
    _require_file(path, what)
    suffix = path.suffix.lower()
    attrs = None
    if suffix == ".npy":
        arr = _read_npy(path)
    elif suffix in (".fvecs", ".bvecs"):
        arr = read_xvecs(path)
    elif suffix in (".parquet", ".pq"):
        arr, attrs = _read_parquet_vectors(path, vector_column)
    else:
        raise InputError(
            f"unsupported {what} file {path.name!r}: use .npy, .fvecs, .bvecs or .parquet",
            field=what,
        )
    return arr, attrs, path


def _read_npy(path: Path) -> np.ndarray:
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":  # e.g. text saved with a .npy name (np.load would say "pickled")
        raise InputError(
            f"{path.name}: not a .npy file (no NumPy header); save arrays with numpy.save",
            field="vectors",
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(
            f"{path.name}: cannot read as a numeric .npy array ({exc})", field="vectors"
        ) from exc
    except OSError as exc:
        raise InputError(f"{path.name}: not a valid .npy file ({exc})", field="vectors") from exc
    if arr.dtype.type not in VECTOR_DTYPES:
        raise InputError(
            f"{path.name}: dtype {arr.dtype} is not supported; use float32, float16, float64, uint8 or int8",
            field="vectors",
        )
    return arr


def read_xvecs(path: str | Path) -> np.ndarray:
    """Read ``.fvecs`` (int32 d + d float32 per row) or ``.bvecs`` (int32 d + d uint8)."""
    path = Path(path)
    item = np.dtype(np.float32 if path.suffix.lower() == ".fvecs" else np.uint8)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 4:
        raise InputError(f"{path.name}: empty or truncated vectors file", field="vectors")
    d = int(raw[:4].view(np.int32)[0])
    row = 4 + d * item.itemsize
    if d <= 0 or raw.size % row:
        raise InputError(
            f"{path.name}: rows have different lengths (ragged) or the file is truncated",
            field="vectors",
        )
    rows = raw.reshape(-1, row)
    dims = rows[:, :4].copy().view(np.int32)[:, 0]
    if np.any(dims != d):
        bad = int(np.flatnonzero(dims != d)[0])
        raise InputError(
            f"{path.name}: row {bad} has dimension {int(dims[bad])}, expected {d} (ragged vectors)",
            field="vectors",
        )
    return rows[:, 4:].copy().view(item).reshape(-1, d)


def _read_parquet_vectors(path: Path, column: str | None) -> tuple[np.ndarray, pa.Table]:
    table = read_table(path, "vectors")
    column = pick_vector_column(table.schema, column, path.name)
    arr = list_vectors(table.column(column).combine_chunks(), path.name, column)
    return arr, table.drop_columns([column])


def is_list_type(typ: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ)


def pick_vector_column(schema: pa.Schema, column: str | None, name: str) -> str:
    """The vectors' column: ``column``, or the one list column there is."""
    lists = [f.name for f in schema if is_list_type(f.type)]
    if column is None:
        if len(lists) != 1:
            raise InputError(
                f"{name}: expected exactly one list column of vectors, found "
                f"{len(lists)} ({', '.join(lists) or 'none'}); name it with vector_column",
                field="vectors",
            )
        return lists[0]
    if column not in lists:
        raise InputError(f"{name}: no list column named {column!r}", field="vectors")
    return column


def list_vectors(col: pa.Array, name: str, column: str, first_row: int = 0) -> np.ndarray:
    """A list column's rows as a 2-D array (unchecked values), with errors naming the row
    (``first_row``: the global number of the first)."""
    if col.null_count:
        raise InputError(f"{name}: column {column!r} has null vectors", field="vectors")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    else:
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        if lengths.size and np.any(lengths != lengths[0]):
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise InputError(
                f"{name}: vector {first_row + bad} has {int(lengths[bad])} values, expected "
                f"{int(lengths[0])} (ragged vectors)",
                field="vectors",
            )
        d = int(lengths[0]) if lengths.size else 0
    values = col.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputError(f"{name}: vector values of type {values.type} are not numeric", field="vectors")
    if values.null_count:
        raise InputError(f"{name}: vectors contain null values", field="vectors")
    return values.to_numpy(zero_copy_only=False).reshape(len(col), d) if d else np.zeros((len(col), 0))


def read_table(path: str | Path, what: str = "attributes") -> pa.Table:
    """Read a Parquet or CSV file into an Arrow table."""
    path = Path(path)
    _require_file(path, what)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return _json_lists(pcsv.read_csv(path))
    except (pa.ArrowInvalid, OSError) as exc:
        detail = " ".join(str(exc).split())  # Arrow's messages span lines; errors are one line
        raise InputError(f"{path.name}: cannot read ({detail})", field=what) from exc
    raise InputError(f"unsupported {what} file {path.name!r}: use .parquet or .csv", field=what)


def _json_lists(table: pa.Table) -> pa.Table:
    """CSV has no list type: a string column whose every non-empty value is a JSON array
    (``["news", "sports"]``) becomes a list column. Its elements must share one type
    (strings, integers, numbers or booleans); a mix is an InputError naming the column."""
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not pa.types.is_string(col.type) or col.null_count == len(col):
            continue
        texts = [None if t is None or not t.strip() else t for t in col.to_pylist()]  # empty: null
        if all(t is None for t in texts) or not all(t is None or t.lstrip().startswith("[") for t in texts):
            continue
        try:
            rows = [None if t is None else json.loads(t) for t in texts]
        except ValueError:
            continue  # text that only looks like a list: keep the strings
        if not all(r is None or isinstance(r, list) for r in rows):
            continue
        table = table.set_column(i, name, _list_array(name, rows))
    return table


def _list_array(name: str, rows: list) -> pa.Array:
    kinds = {_element_kind(v) for r in rows if r for v in r}
    if "null" in kinds:
        raise InputError(f"list column {name!r} holds null elements; drop them from the lists", field=name)
    if "other" in kinds:
        raise InputError(
            f"list column {name!r} holds nested lists or objects; elements must be scalars", field=name
        )
    if kinds == {"int", "float"}:
        kinds = {"float"}
    if len(kinds) > 1:
        raise InputError(
            f"list column {name!r} mixes element types ({', '.join(sorted(kinds))}); "
            "a list column holds strings, integers, numbers or booleans, one type per column",
            field=name,
        )
    element = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    typ = element[kinds.pop()] if kinds else pa.string()
    try:
        return pa.array(rows, pa.list_(typ))
    except (pa.ArrowInvalid, OverflowError) as exc:
        raise InputError(f"list column {name!r}: {exc}", field=name) from exc


def _element_kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    return "str" if isinstance(v, str) else "other"


def check_vectors(arr: np.ndarray, what: str = "vectors") -> np.ndarray:
    """Return ``arr`` as C-contiguous float32 (n, d), or raise InputError naming the problem."""
    arr = check_shape(arr, what)
    ready = arr.dtype == np.float32 and arr.flags.c_contiguous
    out = arr if ready else np.empty(arr.shape, dtype=np.float32)  # no copy when already float32
    for start in range(0, arr.shape[0], _CHUNK_ROWS):  # chunked: bounded memory on big mmaps
        block = check_block(np.asarray(arr[start : start + _CHUNK_ROWS]), what, start)
        if not ready:
            out[start : start + block.shape[0]] = block
    return out


def check_shape(arr: np.ndarray, what: str = "vectors") -> np.ndarray:
    """``arr`` as a numeric 2-D non-empty array (values unchecked), or an InputError."""
    try:
        arr = np.asarray(arr)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{what}: not a rectangular array of numbers ({exc})", field="vectors") from exc
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InputError(f"{what}: dtype {arr.dtype} is not numeric", field="vectors")
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (n, d), got shape {arr.shape}", field="vectors")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: empty (shape {arr.shape})", field="vectors")
    return arr


def check_block(block: np.ndarray, what: str, first_row: int) -> np.ndarray:
    """One block of rows (checked in its own dtype: finite, magnitude) as C-contiguous
    float32, or an InputError naming the global row."""
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = first_row + int(np.flatnonzero(~finite)[0])
        raise InputError(f"{what}: row {row} contains NaN or infinite values", field="vectors")
    check_magnitude(block, what, first_row)
    return np.ascontiguousarray(block, dtype=np.float32)


def check_magnitude(
    block: np.ndarray, what: str, first_row: int = 0, *, field: str = "vectors", row: str = "row"
) -> None:
    """Reject rows so large that squared distances would overflow float32.

    The one rule for build vectors (CLI and library) and for queries (library, CLI and
    HTTP): a row whose L2 norm is above :data:`MAX_NORM` is an error naming the row.
    """
    block = np.asarray(block)
    if block.size and block.dtype.itemsize > 4:  # float64, int64, ...: may not fit float32
        peaks = np.maximum(block.max(axis=1), -block.min(axis=1)).astype(np.float64)
        if peaks.max() > FLOAT32_MAX:
            at = int(np.argmax(peaks))
            value = block[at, np.argmax(np.abs(block[at]))]
            raise InputError(
                f"{what}: {row} {first_row + at} holds {float(value):.3g}, too large for float32 "
                f"(largest {FLOAT32_MAX:.3g}) — rescale the vectors",
                field=field,
            )
    # Squared norms accumulated in float64 without a float64 copy of the block.
    norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    if norms.size and norms.max() > MAX_NORM:
        at = first_row + int(np.argmax(norms))
        raise InputError(
            f"{what}: {row} {at} has norm {norms.max():.3g}, too large (above {MAX_NORM:.0e}): "
            "squared distances would overflow float32 — rescale the vectors",
            field=field,
        )


def normalise_rows(
    x: np.ndarray, what: str, first_row: int = 0, *, field: str = "vectors", row: str = "row"
) -> np.ndarray:
    """Unit-normalise rows for the cosine metric, in float64 (tiny rows stay exact), as
    float32. An all-zero row has no direction: an error naming it, never a silent zero."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise InputError(
            f"{what}: {row} {first_row + int(np.flatnonzero(zero)[0])} is all zeros; the cosine metric "
            "needs non-zero vectors (a zero vector has no direction)",
            field=field,
        )
    return (x64 / norms).astype(np.float32)
