"""MSB-first variable-width bit packing into column-major byte segments.

A vector's codes are concatenated in dimension order, most significant bit first, and cut
into bytes ("segments"); a code may straddle two segments. Storage is column-major:
``packed[s]`` holds segment ``s`` of every vector, so extracting one dimension for many
vectors is a gather of at most two rows plus a shift and a mask.
"""

from __future__ import annotations

import numpy as np


def bit_offsets(widths: np.ndarray) -> np.ndarray:
    """Starting bit of each dimension in the packed bit string."""
    widths = np.asarray(widths, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)


def n_segments(widths: np.ndarray) -> int:
    """Bytes per vector for these widths."""
    return int((int(np.sum(widths, dtype=np.int64)) + 7) // 8)


def pack_codes(codes: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Pack ``codes`` (n, d) uint8 with per-dimension ``widths`` (0..8) into (segments, n) uint8."""
    codes = np.asarray(codes, dtype=np.uint8)
    widths = np.asarray(widths, dtype=np.int64)
    n = codes.shape[0]
    if np.any(widths < 0) or np.any(widths > 8):
        raise ValueError("widths must lie in 0..8")
    too_wide = (codes.astype(np.int64) >> widths) != 0
    if too_wide.any():
        raise ValueError("a code does not fit its width")
    total = int(widths.sum())
    n_seg = (total + 7) // 8
    if total == 0:
        return np.zeros((0, n), dtype=np.uint8)
    # For every bit position of the bit string: which dimension, and which bit of its code.
    dim_of_bit = np.repeat(np.arange(widths.shape[0]), widths)
    shift_of_bit = (np.repeat(widths, widths) - 1) - (
        np.arange(total) - np.repeat(bit_offsets(widths), widths)
    )
    bits = (codes[:, dim_of_bit] >> shift_of_bit.astype(np.uint8)) & 1  # (n, total)
    padded = np.zeros((n, n_seg * 8), dtype=np.uint8)
    padded[:, :total] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="big").T)


def extraction_plan(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dimension: first segment, right shift of the 16-bit window, and mask."""
    widths = np.asarray(widths, dtype=np.int64)
    offsets = bit_offsets(widths)
    seg = offsets // 8
    shift = 16 - (offsets % 8) - widths
    mask = (1 << widths) - 1
    return seg, shift.astype(np.uint16), mask.astype(np.uint16)


def extract_codes(packed: np.ndarray, widths: np.ndarray, dims: np.ndarray | None = None) -> np.ndarray:
    """Dimensional extraction: codes of ``dims`` (default all) for every column of ``packed``.

    ``packed`` is (segments, n); the result is (len(dims), n) uint8. One vectorised gather
    of two segment rows per dimension, then a shift and mask — no loop over vectors or dims.
    """
    widths = np.asarray(widths, dtype=np.int64)
    if dims is None:
        dims = np.arange(widths.shape[0])
    dims = np.asarray(dims, dtype=np.int64)
    n = packed.shape[1]
    if packed.shape[0] == 0:
        return np.zeros((dims.shape[0], n), dtype=np.uint8)
    seg, shift, mask = extraction_plan(widths)
    seg, shift, mask = seg[dims], shift[dims], mask[dims]
    last = packed.shape[0] - 1
    hi = packed[np.minimum(seg, last)].astype(np.uint16)
    lo = packed[np.minimum(seg + 1, last)].astype(np.uint16)
    window = (hi << 8) | lo
    return ((window >> shift[:, None]) & mask[:, None]).astype(np.uint8)
