"""Binary sign sketch and Hamming distance: the cheapest pruning level (L2)."""

from __future__ import annotations

import numpy as np


def sign_sketch(rotated: np.ndarray, n_bits: int) -> np.ndarray:
    """Pack the signs of the first ``n_bits`` rotated (centred) dims into (n, words) uint32."""
    signs = np.asarray(rotated[:, :n_bits]) > 0
    n_bytes = ((n_bits + 31) // 32) * 4
    packed = np.zeros((signs.shape[0], n_bytes), dtype=np.uint8)
    raw = np.packbits(signs, axis=1, bitorder="big")
    packed[:, : raw.shape[1]] = raw
    return packed.view(np.uint32)


def hamming(queries: np.ndarray, sketches: np.ndarray) -> np.ndarray:
    """Hamming distances (m, n) uint16 between query sketches (m, w) and stored ones (n, w)."""
    if sketches.shape[0] == 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], sketches.shape[0]), dtype=np.uint16)
    out = np.zeros((queries.shape[0], sketches.shape[0]), dtype=np.uint16)
    for w in range(queries.shape[1]):  # a handful of 64-bit words, not dimensions
        out += np.bitwise_count(queries[:, w, None] ^ sketches[None, :, w]).astype(np.uint16)
    return out
