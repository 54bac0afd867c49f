"""One partition's segment: OSQ codes, sketch, full-precision vectors and attributes.

Building a segment runs the per-partition half of OSQ (KLT, bit allocation, Lloyd cells,
packing, sketch). Loading one maps the Arrow IPC bytes onto numpy without copies and
precomputes the few per-partition constants search needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arrays import from_arrow_bytes, to_arrow_bytes
from .attributes import AttributeColumns
from .cache import SegmentCache
from .errors import IndexFormatError, IndexNotFoundError
from .manifest import FileRef
from .osq.bitalloc import allocate_bits
from .osq.bounds import CellTable, residual_norms
from .osq.cells import encode, fit_edges
from .osq.klt import fit_klt
from .osq.packing import pack_codes
from .osq.sketch import sign_sketch
from .storage import Storage


def build_segment(
    x: np.ndarray,
    ids: np.ndarray,
    attrs: AttributeColumns,
    bits_per_vector: int,
    sketch_bits: int,
) -> bytes:
    """Quantize one partition's vectors (n, d) float32 and serialise the segment."""
    d = x.shape[1]
    klt = fit_klt(x)
    bits = allocate_bits(klt.eigenvalues, bits_per_vector)  # non-increasing along the axes
    active = int(np.count_nonzero(bits))
    kept = max(active, min(sketch_bits, d))
    rotation = klt.rotation[:, :kept]
    rotated = (x - klt.mean) @ rotation
    widths = bits[:kept]
    edges = fit_edges(rotated, widths)
    codes = encode(rotated, edges, widths)
    residual = residual_norms(x - klt.mean, rotated)
    arrays = {
        "ids": ids.astype(np.int64),
        "mean": klt.mean,
        "rotation": rotation,
        "widths": widths.astype(np.uint8),
        "edges": edges,
        "codes": pack_codes(codes, widths),
        "sketch": sign_sketch(rotated, min(sketch_bits, kept)),
        "sketch_bits": np.array([min(sketch_bits, kept)], dtype=np.int32),
        "residual": residual.astype(np.float32),
        "vectors": np.ascontiguousarray(x, dtype=np.float32),
    }
    for name, col in attrs.codes.items():
        arrays[f"q.{name}"] = col
    for name, col in attrs.raw.items():
        arrays[f"raw.{name}"] = col
    return to_arrow_bytes(arrays)


_SEGMENT_ARRAYS = {"ids", "mean", "rotation", "widths", "edges", "codes", "sketch", "sketch_bits"}
_SEGMENT_ARRAYS |= {"residual", "vectors"}


@dataclass
class Segment:
    """A loaded partition, ready to search (arrays are read-only views of the file)."""

    partition: int
    ids: np.ndarray
    mean: np.ndarray
    rotation: np.ndarray
    widths: np.ndarray
    edges: np.ndarray
    codes: np.ndarray  # (segments, n) uint8, column-major
    sketch: np.ndarray  # (n, words) uint64
    residual: np.ndarray
    vectors: np.ndarray
    attr_codes: dict[str, np.ndarray]
    attr_raw: dict[str, np.ndarray]
    nbytes: int
    sketch_bits: int
    # Derived once per load.
    table: CellTable = field(init=False)
    sq_norms: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.table = CellTable.from_edges(self.edges, self.widths)
        self.sq_norms = np.einsum("ij,ij->i", self.vectors, self.vectors)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def from_bytes(cls, partition: int, data: bytes, name: str) -> Segment:
        arrays = from_arrow_bytes(data, name)
        missing = sorted(_SEGMENT_ARRAYS - set(arrays))
        if missing:
            raise IndexFormatError(f"{name}: missing array(s) {', '.join(missing)}")
        sketch = arrays["sketch"]
        return cls(
            partition=partition,
            ids=arrays["ids"],
            mean=arrays["mean"],
            rotation=arrays["rotation"],
            widths=arrays["widths"],
            edges=arrays["edges"],
            codes=arrays["codes"],
            sketch=sketch,
            residual=arrays["residual"],
            vectors=arrays["vectors"],
            attr_codes={k[2:]: v for k, v in arrays.items() if k.startswith("q.")},
            attr_raw={k[4:]: v for k, v in arrays.items() if k.startswith("raw.")},
            nbytes=len(data),
            sketch_bits=int(arrays["sketch_bits"][0]),
        )


def read_indexed_file(storage: Storage, key: str) -> bytes:
    """A file the manifest names. Its absence means a corrupt index (IndexFormatError,
    ``index_corrupt``), not a missing one: the manifest — the commit point — is there."""
    try:
        return storage.read(key)
    except IndexNotFoundError as exc:
        raise IndexFormatError(
            f"{storage.uri}/{key} is missing although the manifest names it (corrupt index)"
        ) from exc


def load_segment(storage: Storage, partition: int, ref: FileRef, cache: SegmentCache) -> tuple[Segment, bool]:
    """``(segment, cache hit)``; a miss reads the file once (``segment.nbytes`` bytes) and
    checks it against the manifest entry before anything maps it."""

    def load() -> Segment:
        return Segment.from_bytes(partition, ref.verify(read_indexed_file(storage, ref.key)), ref.key)

    return cache.get_or_load((storage.uri, ref.key), load)
