"""OSQ distance bounds from cell codes, via per-query lookup tables.

For query value q_j and cell [lo, hi] of dimension j the lower bound adds the squared
distance from q_j to the nearer cell edge (0 inside the cell) and the upper bound adds the
squared distance to the farther edge. Dimensions outside the kept KLT axes are bounded by
the residual norms via the triangle inequality: (|r_q| - |r_x|)^2 <= |r_q - r_x|^2
<= (|r_q| + |r_x|)^2.

Tables are ragged: dimension j owns ``2**bits[j]`` consecutive entries, so a table costs
the sum of the cell counts, not dims x 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellTable:
    """Every cell of every dimension, flattened: ``offset[j] + code`` indexes cell lo/hi."""

    lo: np.ndarray  # (C,) float32
    hi: np.ndarray  # (C,) float32
    dim: np.ndarray  # (C,) int64, the dimension of each cell
    offset: np.ndarray  # (d,) int64, first cell of each dimension

    @classmethod
    def from_edges(cls, edges: np.ndarray, widths: np.ndarray) -> CellTable:
        cells = np.left_shift(1, np.asarray(widths, np.int64))
        offset = np.concatenate([[0], np.cumsum(cells)[:-1]]).astype(np.int64)
        dim = np.repeat(np.arange(cells.shape[0]), cells)
        within = np.arange(dim.shape[0]) - offset[dim]
        return cls(
            lo=np.ascontiguousarray(edges[dim, within]),
            hi=np.ascontiguousarray(edges[dim, within + 1]),
            dim=dim,
            offset=offset,
        )

    def lower(self, q_rot: np.ndarray) -> np.ndarray:
        """(m, C) squared distance from each query value to the nearer edge of each cell."""
        q = q_rot[:, self.dim]
        gap = np.maximum(np.maximum(self.lo - q, q - self.hi), 0.0)
        return gap * gap

    def upper(self, q_rot: np.ndarray) -> np.ndarray:
        """(m, C) squared distance from each query value to the farther edge of each cell."""
        q = q_rot[:, self.dim]
        far = np.maximum(q - self.lo, self.hi - q)
        return far * far

    def index(self, codes: np.ndarray) -> np.ndarray:
        """Table positions (d, n) of codes (d, n)."""
        return codes.astype(np.int64) + self.offset[:, None]


def lut_sum(tables: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``sum_j tables[i, positions[i, j, c]]``: (m, C) x (m, d, n) -> (m, n), one flat take."""
    m, width = tables.shape
    base = (np.arange(m, dtype=np.int64) * width)[:, None, None]
    return np.take(tables.reshape(-1), positions + base).sum(axis=1, dtype=np.float32)


def residual_terms(q_res: np.ndarray, x_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual contributions (m, n) to the lower and upper bound.

    ``x_res`` is (n,) for candidates shared by all queries, or (m, n) per query.
    """
    diff = q_res[:, None] - x_res
    total = q_res[:, None] + x_res
    return diff * diff, total * total


def residual_norms(centred: np.ndarray, rotated: np.ndarray) -> np.ndarray:
    """Norm of the part of ``centred`` rows outside the kept axes."""
    full = np.einsum("ij,ij->i", centred, centred)
    kept = np.einsum("ij,ij->i", rotated, rotated)
    return np.sqrt(np.maximum(full - kept, 0.0))
