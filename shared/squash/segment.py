"""One partition's segment, in two tiers.

The **hot tier** (``partitions/NNNNN.arrow``, what a warm worker keeps) holds the scalar
code of every row (:mod:`squash.osq.scalar`), the squared norm of what the code misses, the
sign sketch, ids and attributes, and a CRC per block of the cold tier's rows. The **cold
tier** (``partitions/NNNNN.f32``) holds the rows as float32 in the index's rotated space; it
is read by byte ranges, only when a search asks for float32 scores (see :mod:`squash.refine`).
The **refinement tier** (``partitions/NNNNN.fine``, :mod:`squash.fine`) refines the code's
4-bit axes; it is loaded (and then kept) only by searches that re-rank on it.

Building a segment runs the per-partition half of OSQ (bit allocation, cells, coding,
sketch); the KLT rotation is the index's, shared by all partitions and kept in the router.
Loading maps the Arrow IPC bytes onto numpy without copies and derives ``|x_hat|^2``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .arrays import from_arrow_bytes, to_arrow_bytes
from .attributes import AttributeColumns, AttrTable, ListColumn, Raw, StoredAttributes, validity_arrays
from .cache import SegmentCache
from .errors import IndexFormatError, IndexNotFoundError
from .fine import fine_bytes, fine_key
from .manifest import FileRef
from .osq.scalar import ScalarCode, as_float16, cover, decoded_values, encode, encode_fine, fit_code
from .osq.sketch import sign_sketch
from .storage import Storage

COLD_BLOCK_ROWS = 64  # rows per CRC-checked block of the cold tier (a range read's unit)


def cold_key(segment_key: str) -> str:
    """The cold-tier file beside a segment: ``.../00007.arrow`` -> ``.../00007.f32``."""
    return segment_key.rsplit(".", 1)[0] + ".f32"


def cold_bytes(rows: np.ndarray) -> bytes:
    """The cold-tier file of rows (n, d) float32: little-endian, row-major, nothing else."""
    return np.ascontiguousarray(rows, dtype="<f4").tobytes()


def block_crcs(data: bytes, row_bytes: int) -> np.ndarray:
    """CRC-32 of every ``COLD_BLOCK_ROWS`` rows of a cold-tier file."""
    step = COLD_BLOCK_ROWS * row_bytes
    view = memoryview(data)
    return np.array([zlib.crc32(view[i : i + step]) for i in range(0, len(data), step)], dtype=np.uint32)


def stored_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as a segment stores them: uint32 when every one fits (4 bytes a row less in the
    hot tier: the default ids 0..N-1 of any index under 4.3 billion rows), else int64."""
    ids = np.asarray(ids)
    if ids.size == 0 or (int(ids.min()) >= 0 and int(ids.max()) < 2**32):
        return ids.astype(np.uint32)
    return ids.astype(np.int64)


def build_segment(
    rows: np.ndarray,
    centroid: np.ndarray,
    ids: np.ndarray,
    attrs: AttributeColumns | StoredAttributes,
    budget_bits: int,
    sketch_bits: int,
) -> tuple[bytes, bytes, bytes]:
    """(hot, cold, fine) files of one partition: ``rows`` (n, d) float32 in the rotated space,
    ``centroid`` (d,) their centre, ``budget_bits`` per row for the code."""
    # The centre and cells are stored as float16 when it holds them (a partition's header is
    # d + 2K numbers), rounded before coding so the codes are exact for the values stored.
    with np.errstate(over="ignore"):
        c16 = centroid.astype(np.float16)
    half = bool(np.isfinite(c16).all())
    centroid = c16.astype(np.float32) if half else centroid.astype(np.float32)
    v = rows.astype(np.float64) - centroid
    code = fit_code(v, budget_bits)
    rounded = as_float16(code) if half else None
    code, half = (rounded, True) if rounded is not None else (code, False)
    bits = min(sketch_bits, rows.shape[1])
    # The sketch takes the signs of the partition's own highest-variance axes.
    sketch_dims = np.sort(np.argsort(-v.var(axis=0), kind="stable")[:bits]).astype(np.uint16)
    return _segment_files(rows, centroid, code, half, sketch_dims, ids, attrs)


def delta_segment(
    rows: np.ndarray, parent: Segment, ids: np.ndarray, attrs: AttributeColumns
) -> tuple[bytes, bytes, bytes]:
    """(hot, cold, fine) files of new rows routed to ``parent``'s partition (a write): coded with
    the parent's centre, axes, bit allocation and sketch axes, so they score like its own
    rows — and with its cells, widened only on axes where a new row lies far outside them
    (:func:`~squash.osq.scalar.cover`)."""
    code = cover(parent.code, rows.astype(np.float64) - parent.centroid)
    header = np.concatenate([parent.centroid, code.lo, code.step])
    half = bool(np.array_equal(header.astype(np.float16).astype(np.float32), header))
    return _segment_files(rows, parent.centroid, code, half, parent.sketch_dims, ids, attrs)


def _segment_files(
    rows: np.ndarray,
    centroid: np.ndarray,
    code: ScalarCode,
    half: bool,
    sketch_dims: np.ndarray,
    ids: np.ndarray,
    attrs: AttributeColumns | StoredAttributes,
) -> tuple[bytes, bytes, bytes]:
    v = rows.astype(np.float64) - centroid
    codes8, codes4, residual_sq = encode(v, code)
    cold = cold_bytes(rows)
    fine = fine_bytes(*encode_fine(v, code, codes8, codes4))
    bits = int(sketch_dims.shape[0])
    sketch_dims = sketch_dims.astype(np.uint16)
    # The small per-partition arrays share three columns (each Arrow column costs ~400 bytes).
    # The refinement file's CRC closes the layout: the manifest's hash of this file covers it.
    layout = [
        rows.shape[1],
        code.dims8.shape[0],
        code.dims4.shape[0],
        bits,
        COLD_BLOCK_ROWS,
        zlib.crc32(fine),
    ]
    arrays = {
        "layout": np.array(layout, dtype=np.int64),
        "header_f16" if half else "header_f32": np.concatenate([centroid, code.lo, code.step]).astype(
            np.float16 if half else np.float32
        ),
        "header_u16": np.concatenate([code.dims8, code.dims4, sketch_dims]).astype(np.uint16),
        "ids": stored_ids(ids),
        "codes8": codes8,
        "codes4": codes4,
        "residual_sq": residual_sq,
        "sketch": sign_sketch(v[:, sketch_dims], bits),
        "cold_crc": block_crcs(cold, 4 * rows.shape[1]),
    }
    arrays.update(attrs.segment_arrays())
    return to_arrow_bytes(arrays), cold, fine


_SEGMENT_ARRAYS = {"layout", "header_u16", "ids", "codes8", "codes4", "residual_sq"}
_SEGMENT_ARRAYS |= {"sketch", "cold_crc"}


@dataclass
class Segment:
    """A loaded partition's hot tier, ready to search (arrays are read-only views of the file)."""

    partition: int
    key: str  # the hot file's key; the cold tier is at cold_key(key)
    stored: np.ndarray  # the ids as stored: uint32 or int64 (see stored_ids); use .ids
    centroid: np.ndarray  # (d,) in the rotated space
    code: ScalarCode
    codes8: np.ndarray  # (n, K8) uint8
    codes4: np.ndarray  # (n, K4 / 2) uint8, two 4-bit codes per byte
    residual_sq: np.ndarray  # (n,) float32, |v - x_hat|^2
    sketch: np.ndarray  # (n, words) uint64
    sketch_dims: np.ndarray  # (bits,) the axes whose signs the sketch holds
    cold_block_rows: int
    cold_crc: np.ndarray  # (blocks,) uint32
    attr_codes: dict[str, np.ndarray]
    attr_raw: dict[str, Raw]  # numbers, list elements (ListColumn); categories/bools: the codes
    attr_valid: dict[str, np.ndarray]  # nullable columns: True where not null
    file_bytes: int
    # CRC-32 of the refinement file; None: a format-3 segment. The file exists only when the
    # manifest's params say "refinement" (a build may drop it, see BuildOptions.refine).
    fine_crc: int | None = None
    hat_sq: np.ndarray = field(init=False)  # (n,) |x_hat|^2, derived once per load

    def __post_init__(self) -> None:
        values = decoded_values(self.code, self.codes8, self.codes4)
        self.hat_sq = np.einsum("ij,ij->i", values, values)

    @property
    def ids(self) -> np.ndarray:
        """The rows' ids, int64 (converted on each access: a partition's few thousand)."""
        return self.stored if self.stored.dtype == np.int64 else self.stored.astype(np.int64)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The ids of ``rows``, int64 (only those rows converted)."""
        return self.stored[rows].astype(np.int64, copy=False)

    @property
    def size(self) -> int:
        return int(self.stored.shape[0])

    def table(self) -> AttrTable:
        """The rows as a filter sees them (codes, raw values, ids)."""
        return AttrTable(self.size, self.attr_codes, self.attr_raw, self.ids, self.attr_valid)

    @property
    def dims(self) -> int:
        return int(self.centroid.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes resident while cached: the file (arrays are views of it) and derived arrays."""
        return self.file_bytes + int(self.hat_sq.nbytes)

    @classmethod
    def from_bytes(cls, partition: int, data: bytes, name: str) -> Segment:
        arrays = from_arrow_bytes(data, name)
        missing = sorted(_SEGMENT_ARRAYS - set(arrays))
        if missing:
            raise IndexFormatError(f"{name}: missing array(s) {', '.join(missing)}")
        layout = arrays["layout"]
        if layout.shape not in ((5,), (6,)) or int(layout.min()) < 0:  # 5: no refinement file
            raise IndexFormatError(f"{name}: malformed layout (corrupt segment)")
        d, k8, k4, bits, block = (int(v) for v in layout[:5])
        fine_crc = int(layout[5]) if layout.shape == (6,) else None
        header = arrays.get("header_f16", arrays.get("header_f32"))
        if header is None:
            raise IndexFormatError(f"{name}: missing array(s) header_f16 or header_f32")
        f32, u16 = header.astype(np.float32), arrays["header_u16"].astype(np.int64)
        k = k8 + k4
        n = arrays["ids"].shape[0]
        if arrays["ids"].dtype not in (np.int64, np.uint32) or arrays["ids"].ndim != 1:
            raise IndexFormatError(f"{name}: ids are not int64 or uint32 (corrupt segment)")
        shapes_ok = (
            f32.shape == (d + 2 * k,)
            and u16.shape == (k + bits,)
            and arrays["codes8"].shape == (n, k8)
            and arrays["codes4"].shape == (n, k4 // 2)
            and arrays["residual_sq"].shape == (n,)
            and arrays["sketch"].ndim == 2
            and arrays["sketch"].shape[0] == n
            and (u16.size == 0 or int(u16.max()) < d)
            and block >= 1
            and arrays["cold_crc"].shape == (-(-n // block),)
        )
        if not shapes_ok:
            raise IndexFormatError(f"{name}: arrays disagree in shape (corrupt segment)")
        code = ScalarCode(u16[:k8], u16[k8:k], f32[d : d + k], f32[d + k :])
        codes, raw = _attribute_arrays(arrays, n, name)
        valid = validity_arrays(arrays, codes, n, name)
        return cls(
            partition=partition,
            key=name,
            stored=arrays["ids"],
            centroid=f32[:d],
            code=code,
            codes8=arrays["codes8"],
            codes4=arrays["codes4"],
            residual_sq=arrays["residual_sq"],
            sketch=arrays["sketch"],
            sketch_dims=u16[k:],
            cold_block_rows=block,
            cold_crc=arrays["cold_crc"],
            attr_codes=codes,
            attr_raw=raw,
            attr_valid=valid,
            file_bytes=len(data),
            fine_crc=fine_crc,
        )


def _attribute_arrays(arrays: dict[str, np.ndarray], n: int, name: str) -> tuple[dict, dict]:
    """Codes (``q.NAME``) and raw values (``raw.NAME``, with ``off.NAME`` for lists) of a
    segment's attributes, checked for shape; a category's or bool's raw value is its code."""
    codes = {key[2:]: v for key, v in arrays.items() if key.startswith("q.")}
    raw: dict[str, Raw] = {}
    for attr, col in codes.items():
        values, offsets = arrays.get(f"raw.{attr}"), arrays.get(f"off.{attr}")
        if offsets is not None and values is not None:
            ok = offsets.shape == (n + 1,) and int(offsets[0]) == 0 and int(offsets[-1]) == values.shape[0]
            ok = ok and bool((np.diff(offsets) >= 0).all())
            raw[attr] = ListColumn(offsets, values)
        else:
            raw[attr] = col if values is None else values
            ok = raw[attr].shape == (n,)
        if not ok or col.shape != (n,):
            raise IndexFormatError(f"{name}: attribute {attr!r} arrays disagree in shape (corrupt segment)")
    return codes, raw


def write_segment(
    storage: Storage, key: str, hot: bytes, cold: bytes, fine: bytes | None
) -> tuple[FileRef, FileRef]:
    """Store a partition's tiers (the hot file under ``key``, the cold and refinement files
    beside it; ``fine=None``: an index that keeps no refinement tier) and return the manifest
    entries of the first two (the hot file carries the refinement's CRC). The hot file goes
    last: it never lacks the cold tier (nor the refinement file, when one is written)."""
    ref, cold_ref = FileRef.of(key, hot), FileRef.of(cold_key(key), cold)
    storage.write(cold_ref.key, cold)
    if fine is not None:
        storage.write(fine_key(key), fine)
    storage.write(ref.key, hot)
    return ref, cold_ref


def read_indexed_file(storage: Storage, key: str, span: tuple[int, int] | None = None) -> bytes:
    """A file the manifest names (bytes ``[start, end)`` of it with ``span``). Its absence
    means a corrupt index (IndexFormatError, ``index_corrupt``), not a missing one: the
    manifest — the commit point — is there."""
    try:
        return storage.read(key) if span is None else storage.read_range(key, *span)
    except IndexNotFoundError as exc:
        raise IndexFormatError(
            f"{storage.uri}/{key} is missing although the manifest names it (corrupt index)"
        ) from exc


def load_segment(storage: Storage, partition: int, ref: FileRef, cache: SegmentCache) -> tuple[Segment, bool]:
    """``(segment, cache hit)``; a miss reads the file once (``segment.file_bytes`` bytes)
    and checks it against the manifest entry before anything maps it."""

    def load() -> Segment:
        return Segment.from_bytes(partition, ref.verify(read_indexed_file(storage, ref.key)), ref.key)

    return cache.get_or_load((storage.uri, ref.key), load)
