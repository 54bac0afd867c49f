"""The refinement tier: four more bits on every 4-bit axis, for re-ranking without float32.

On data whose code ranks short of the recall target (high intrinsic dimension, e.g. 1M x 128
Gaussian mixtures: recall@10 0.92 on the 6-bit code), re-ranking the best estimates on
float32 means S3 range reads on every query. The refinement (``partitions/NNNNN.fine``)
holds each row's sub-cell on the 4-bit axes (:func:`~squash.osq.scalar.encode_fine`) and
the squared norm of what that finer code misses: ``K4 / 2 + 4`` bytes per row, about 8-bit
precision on every coded axis. A search that re-ranks on it (``rerank="fine"``) loads a
partition's file once, through the same cache as the hot tier, so warm queries read nothing.

The file is ``fine4`` (n x K4/2 bytes, row-major) then ``fine_sq`` (n little-endian
float32). Its CRC-32 is in the hot segment (whose own hash the manifest carries), so the
manifest and the tree's events need no entry of their own for it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .errors import IndexFormatError


def fine_key(segment_key: str) -> str:
    """The refinement file beside a segment: ``.../00007.arrow`` -> ``.../00007.fine``."""
    return segment_key.rsplit(".", 1)[0] + ".fine"


def fine_bytes(fine4: np.ndarray, fine_sq: np.ndarray) -> bytes:
    return np.ascontiguousarray(fine4, dtype=np.uint8).tobytes() + np.asarray(fine_sq, "<f4").tobytes()


@dataclass(frozen=True)
class Fine:
    """A partition's refinement, as loaded (views of the file's bytes)."""

    fine4: np.ndarray  # (n, K4/2) uint8
    fine_sq: np.ndarray  # (n,) float32, |v - x_fine|^2

    @property
    def nbytes(self) -> int:
        return int(self.fine4.nbytes + self.fine_sq.nbytes)

    @classmethod
    def from_bytes(cls, data: bytes, rows: int, half: int, crc: int, name: str) -> Fine:
        """Check ``data`` against the segment's row count, nibble width and CRC."""
        if len(data) != rows * (half + 4):
            raise IndexFormatError(f"{name}: {len(data):,} bytes, its segment needs {rows * (half + 4):,}")
        if zlib.crc32(data) != crc:
            raise IndexFormatError(f"{name}: fails its checksum (corrupt or replaced)")
        fine4 = np.frombuffer(data, dtype=np.uint8, count=rows * half).reshape(rows, half)
        fine_sq = np.frombuffer(data, dtype="<f4", offset=rows * half).astype(np.float32, copy=False)
        return cls(fine4, fine_sq)
