"""Vector inputs read in chunks, so a build never holds more than one chunk of its input.

A :class:`VectorSource` knows its shape up front and yields float32 blocks of exactly
``CHUNK_ROWS`` rows (the last one shorter) at the same global row boundaries whatever the
input is: an array in memory, a ``.npy`` (read by offset, so the pages it reads are never
part of the build's resident memory), ``.fvecs``/``.bvecs``, or one or many Parquet files
read a row group at a time. The same rows in the same order give the same blocks, which is
what makes a build from files byte-identical to the in-memory build. Every block is
checked (finite, magnitude) with its global row numbers before the build uses it.

``s3://`` inputs are copied to the build's scratch folder first (streamed to disk by boto3's
transfer manager, never held in memory) and then read like local files.
"""

from __future__ import annotations

import glob as globbing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from .errors import InputError
from .inputs import VECTOR_DTYPES, check_block, check_shape, list_vectors, pick_vector_column

CHUNK_ROWS = 65536  # rows per block: every pass of the build works a block at a time
_PARQUET = (".parquet", ".pq")
_SUFFIXES = (".npy", ".fvecs", ".bvecs", *_PARQUET)


class VectorSource(Protocol):
    """Rows of a vectors input, in order, a block at a time."""

    n: int
    d: int
    name: str

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, float32 block)`` for every ``CHUNK_ROWS`` rows, checked."""
        ...


@dataclass
class ArraySource:
    """An array already in memory (or memory-mapped by the caller)."""

    array: np.ndarray
    name: str = "vectors"

    def __post_init__(self) -> None:
        self.array = check_shape(self.array, self.name)
        self.n, self.d = int(self.array.shape[0]), int(self.array.shape[1])

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n, CHUNK_ROWS):
            yield start, check_block(np.asarray(self.array[start : start + CHUNK_ROWS]), self.name, start)


def _check_shape(n: int, d: int, name: str) -> None:
    if n == 0 or d == 0:
        raise InputError(f"{name}: empty (shape ({n}, {d}))", field="vectors")


class NpySource:
    """A C-ordered ``.npy`` file, read a block at a time by offset (never unpickled)."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, f"vectors in {path.name}"
        with path.open("rb") as fh:
            if fh.read(6) != b"\x93NUMPY":  # e.g. text saved with a .npy name
                raise InputError(
                    f"{path.name}: not a .npy file (no NumPy header); save arrays with numpy.save",
                    field="vectors",
                )
            fh.seek(0)
            try:
                version = np.lib.format.read_magic(fh)
                read = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }
                if version not in read:
                    raise ValueError(f"format version {version} is not supported; save with numpy.save")
                shape, fortran, dtype = read[version](fh)
            except ValueError as exc:
                raise InputError(f"{path.name}: not a valid .npy file ({exc})", field="vectors") from exc
            self.offset = fh.tell()
        if dtype.hasobject:
            raise InputError(
                f"{path.name}: cannot read as a numeric .npy array (it holds Python objects, "
                "which squash never unpickles)",
                field="vectors",
            )
        if dtype.type not in VECTOR_DTYPES:
            raise InputError(
                f"{path.name}: dtype {dtype} is not supported; use float32, float16, float64, uint8 or int8",
                field="vectors",
            )
        if len(shape) != 2:
            raise InputError(f"{self.name}: expected a 2-D array (n, d), got shape {shape}", field="vectors")
        if fortran:
            raise InputError(
                f"{path.name}: the array is Fortran-ordered; save it with "
                "numpy.save(path, numpy.ascontiguousarray(x))",
                field="vectors",
            )
        self.n, self.d = int(shape[0]), int(shape[1])
        _check_shape(self.n, self.d, self.name)
        self.dtype = dtype
        need = self.offset + self.n * self.d * dtype.itemsize
        if path.stat().st_size < need:
            raise InputError(f"{path.name}: truncated (.npy header promises {need} bytes)", field="vectors")

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        row_bytes = self.d * self.dtype.itemsize
        with self.path.open("rb") as fh:
            for start in range(0, self.n, CHUNK_ROWS):
                rows = min(CHUNK_ROWS, self.n - start)
                fh.seek(self.offset + start * row_bytes)
                block = np.fromfile(fh, dtype=self.dtype, count=rows * self.d).reshape(rows, self.d)
                yield start, check_block(block, self.name, start)


class XvecsSource:
    """``.fvecs`` (int32 d + d float32 per row) or ``.bvecs`` (int32 d + d uint8), by offset."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, f"vectors in {path.name}"
        self.item = np.dtype(np.float32 if path.suffix.lower() == ".fvecs" else np.uint8)
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4)
        if len(head) < 4:
            raise InputError(f"{path.name}: empty or truncated vectors file", field="vectors")
        self.d = int(np.frombuffer(head, np.int32)[0])
        self.row = 4 + self.d * self.item.itemsize
        if self.d <= 0 or size % self.row:
            raise InputError(
                f"{path.name}: rows have different lengths (ragged) or the file is truncated", field="vectors"
            )
        self.n = size // self.row

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        with self.path.open("rb") as fh:
            for start in range(0, self.n, CHUNK_ROWS):
                rows = min(CHUNK_ROWS, self.n - start)
                raw = np.fromfile(fh, dtype=np.uint8, count=rows * self.row).reshape(rows, self.row)
                dims = raw[:, :4].copy().view(np.int32)[:, 0]
                if np.any(dims != self.d):
                    bad = start + int(np.flatnonzero(dims != self.d)[0])
                    raise InputError(
                        f"{self.path.name}: row {bad} has dimension {int(dims[bad - start])}, "
                        f"expected {self.d} (ragged vectors)",
                        field="vectors",
                    )
                block = raw[:, 4:].copy().view(self.item).reshape(rows, self.d)
                yield start, check_block(block, self.name, start)


class ParquetSource:
    """One list column of vectors across Parquet files (in order), read by row group.

    The other columns are the attributes (:meth:`attributes`); every file must have the
    same columns. Blocks are re-cut to the global ``CHUNK_ROWS`` boundaries."""

    def __init__(self, paths: list[Path], column: str | None) -> None:
        import pyarrow.parquet as pq

        self.paths = paths
        self.name = f"vectors in {paths[0].name}" + (f" (+{len(paths) - 1} files)" if len(paths) > 1 else "")
        schema = None
        self.n = 0
        for path in paths:
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(
                    f"{path.name}: cannot read ({' '.join(str(exc).split())})", field="vectors"
                ) from exc
            file_schema = meta.schema_arrow
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema):
                raise InputError(
                    f"{path.name}: its columns ({', '.join(file_schema.names)}) differ from "
                    f"{paths[0].name}'s ({', '.join(schema.names)}); every file needs the same columns",
                    field="vectors",
                )
            self.n += meta.metadata.num_rows
        assert schema is not None
        column = pick_vector_column(schema, column, paths[0].name)
        self.column = column
        typ = schema.field(column).type
        self.d = typ.list_size if pa.types.is_fixed_size_list(typ) else self._first_length()
        if self.n == 0:
            raise InputError(f"{self.name}: empty (no rows)", field="vectors")
        _check_shape(self.n, self.d, self.name)

    def _first_length(self) -> int:
        for _, block in self._batches():
            return int(block.shape[1])
        return 0

    def attributes(self) -> pa.Table | None:
        """The columns beside the vectors, every file's rows in order (None: there are none)."""
        import pyarrow.parquet as pq

        names = [c for c in pq.ParquetFile(self.paths[0]).schema_arrow.names if c != self.column]
        if not names:
            return None
        tables = []
        for path in self.paths:
            try:
                tables.append(pq.read_table(path, columns=names))  # never the vectors column
            except (pa.ArrowInvalid, OSError) as exc:
                detail = " ".join(str(exc).split())
                raise InputError(f"{path.name}: cannot read ({detail})", field="vectors") from exc
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _batches(self) -> Iterator[tuple[str, np.ndarray]]:
        import pyarrow.parquet as pq

        seen = 0
        for path in self.paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=[self.column]):
                yield path.name, list_vectors(batch.column(0), path.name, self.column, seen)
                seen += batch.num_rows

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        pending: list[np.ndarray] = []
        held = start = 0
        for name, arr in self._batches():
            if arr.shape[1] != self.d:
                raise InputError(
                    f"{name}: vectors have {arr.shape[1]} values, expected {self.d} (ragged vectors)",
                    field="vectors",
                )
            pending.append(arr)
            held += arr.shape[0]
            while held >= CHUNK_ROWS:
                block, pending, held = _cut(pending, CHUNK_ROWS)
                yield start, check_block(block, self.name, start)
                start += CHUNK_ROWS
        if held:
            yield start, check_block(np.concatenate(pending), self.name, start)


def _cut(pending: list[np.ndarray], rows: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """The first ``rows`` rows of the pending arrays, and what is left."""
    whole = np.concatenate(pending) if len(pending) > 1 else pending[0]
    rest = whole[rows:]
    return whole[:rows], ([rest] if rest.shape[0] else []), int(rest.shape[0])


def expand_inputs(spec: str) -> list[Path]:
    """A file, a folder (its vector files, sorted by name) or a glob, as a list of files of
    one kind. Errors name the spec."""
    if any(ch in spec for ch in "*?["):
        paths = sorted(Path(p) for p in globbing.glob(spec, recursive=True) if Path(p).is_file())
        if not paths:
            raise InputError(f"no files match {spec!r}", field="vectors")
    else:
        path = Path(spec)
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
            if not paths:
                raise InputError(
                    f"folder {spec!r} holds no vector files ({', '.join(_SUFFIXES)})", field="vectors"
                )
        elif not path.exists():
            raise InputError(f"vectors file {spec!r} does not exist", field="vectors")
        else:
            paths = [path]
    kinds = {_kind(p) for p in paths}
    if len(kinds) > 1:
        raise InputError(
            f"{spec!r} mixes file kinds ({', '.join(sorted(kinds))}); use one kind", field="vectors"
        )
    kind = kinds.pop()
    if kind not in ("parquet",) and len(paths) > 1:
        raise InputError(
            f"{spec!r} names {len(paths)} {kind} files; several files are read only as Parquet "
            "(convert them, or concatenate into one file)",
            field="vectors",
        )
    return paths


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        return "parquet"
    if suffix in _SUFFIXES:
        return suffix[1:]
    raise InputError(
        f"unsupported vectors file {path.name!r}: use .npy, .fvecs, .bvecs or .parquet", field="vectors"
    )


def open_source(
    spec: str | Path, vector_column: str | None = None, scratch: Path | None = None
) -> tuple[VectorSource, pa.Table | None]:
    """The vectors a build reads from ``spec`` (a file, folder, glob or ``s3://`` URI) and the
    attribute columns that come with them (Parquet), or None."""
    spec = str(spec)
    if spec.startswith("s3://"):
        if scratch is None:
            raise InputError("s3:// vectors need a scratch folder to be copied to", field="vectors")
        spec = str(download(spec, scratch))
    paths = expand_inputs(spec)
    kind = _kind(paths[0])
    if kind == "parquet":
        src = ParquetSource(paths, vector_column)
        return src, src.attributes()
    if vector_column is not None:
        raise InputError("vector_column applies to Parquet inputs only", field="vector_column")
    path = paths[0]
    return (NpySource(path) if kind == "npy" else XvecsSource(path)), None


def download(uri: str, scratch: Path) -> Path:
    """Copy ``s3://bucket/key`` (one object, or every object under a prefix ending in ``/``)
    into ``scratch``; returns the file or folder. Streams to disk (boto3 transfer manager)."""
    import boto3
    import botocore.exceptions

    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise InputError(f"{uri!r}: expected s3://bucket/key", field="vectors")
    client = boto3.client("s3")
    target = scratch / "input"
    target.mkdir(parents=True, exist_ok=True)
    try:
        if key.endswith("/"):
            keys = [
                o["Key"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                for o in page.get("Contents", [])
                if Path(o["Key"]).suffix.lower() in _SUFFIXES
            ]
            if not keys:
                raise InputError(f"{uri!r} holds no vector files ({', '.join(_SUFFIXES)})", field="vectors")
            for k in keys:
                client.download_file(bucket, k, str(target / Path(k).name))
            return target
        out = target / Path(key).name
        client.download_file(bucket, key, str(out))
        return out
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise InputError(f"cannot read {uri!r} ({code or exc})", field="vectors") from exc
