"""Per-dimension cell boundaries: equal-count (quantile) start, refined by Lloyd–Max.

Each dimension with ``c = 2**bits`` cells gets ``c + 1`` edges; the outer edges are the
dimension's min and max so every stored value lies inside its cell (the bounds rely on it).
Edges are padded to ``MAX_CELLS + 1`` columns with the last edge so one array holds all.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 8  # at most 256 cells per column

MAX_CELLS = 1 << MAX_BITS


def fit_edges(values: np.ndarray, bits: np.ndarray, *, max_iter: int = 25, tol: float = 1e-4) -> np.ndarray:
    """Return edges (d, MAX_CELLS + 1) float32 for columns of ``values`` (n, d)."""
    n, d = values.shape
    edges = np.empty((d, MAX_CELLS + 1), dtype=np.float32)
    if n == 0:
        edges[:] = 0.0
        return edges
    ordered = np.sort(np.asarray(values, np.float64), axis=0)
    csum = np.vstack([np.zeros((1, d)), np.cumsum(ordered, axis=0)])
    csq = np.vstack([np.zeros((1, d)), np.cumsum(ordered * ordered, axis=0)])
    for j in range(d):  # build time only; every step inside is vectorised over the n values
        edges[j] = _lloyd_column(ordered[:, j], csum[:, j], csq[:, j], 1 << int(bits[j]), max_iter, tol)
    return edges


def _lloyd_column(
    col: np.ndarray, csum: np.ndarray, csq: np.ndarray, cells: int, max_iter: int, tol: float
) -> np.ndarray:
    n = col.shape[0]
    out = np.empty(MAX_CELLS + 1, dtype=np.float32)
    lo, hi = col[0], col[-1]
    if cells == 1 or lo == hi:
        inner = np.full(cells - 1, lo)
    else:
        # Equal-count start; positions[i] = number of values below edge i.
        positions = (np.arange(1, cells) * n) // cells
        inner = col[positions]
        best = np.inf
        for _ in range(max_iter):
            pos = np.concatenate([[0], np.searchsorted(col, inner, side="left"), [n]])
            counts = np.diff(pos)
            sums = np.diff(csum[pos])
            filled = counts > 0
            means = np.where(filled, sums / np.maximum(counts, 1), np.nan)
            distortion = float((np.diff(csq[pos]) - np.where(filled, sums * means, 0.0)).sum())
            if distortion >= best * (1.0 - tol):
                break
            best = distortion
            # Empty cells take the midpoint of their edges so means stay ordered.
            bounds = np.concatenate([[lo], inner, [hi]])
            means = np.where(filled, means, (bounds[:-1] + bounds[1:]) / 2)
            inner = (means[:-1] + means[1:]) / 2
    edges = np.concatenate([[lo], inner, [hi]]).astype(np.float32)
    out[: cells + 1] = edges
    out[cells + 1 :] = edges[-1]
    return out


def encode(values: np.ndarray, edges: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Cell index of every value: (n, d) float -> (n, d) uint8.

    Uses float32 comparisons against the stored float32 edges, so the cell found is exactly
    the one whose [lo, hi] contains the stored value.
    """
    values = np.asarray(values, np.float32)
    n, d = values.shape
    codes = np.zeros((n, d), dtype=np.uint8)
    for j in np.flatnonzero(bits):  # build time only; vectorised over the n values
        cells = 1 << int(bits[j])
        inner = edges[j, 1:cells]
        codes[:, j] = np.searchsorted(inner, values[:, j], side="right")
    return codes
