"""The metrics an index can have, and how each maps onto the squared L2 the search computes.

* ``l2``: squared Euclidean distance, as searched.
* ``cosine``: rows and queries unit-normalised (see :mod:`squash.inputs`); distance 1 − cos.
* ``dot``: maximum inner product search by the MIPS-to-L2 transform (Bachrach et al. 2014).
  With M the largest row norm, a row x becomes x' = [x, sqrt(M² − |x|²)] and a query q
  becomes q' = [q, 0], so |q' − x'|² = |q|² + M² − 2 q·x: L2 ranking in the d + 1 dims of
  the augmented space is inner-product ranking, exactly. The score q·x is recovered as
  (|q|² + M² − d2) / 2.

For every metric a distance is smaller-is-better (dot: −q·x) and a score larger-is-better
(dot: q·x; cosine: cos = 1 − distance; l2: −squared distance); empty slots hold ``inf``
distances and ``-inf`` scores.
"""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "cosine", "dot")
_CHUNK_ROWS = 65536  # float64 work stays bounded


def space_dims(dims: int, metric: str) -> int:
    """Dimensions of the index's internal space for user vectors of ``dims`` (dot: one more)."""
    return dims + 1 if metric == "dot" else dims


def max_norm(x: np.ndarray) -> float:
    """M: the largest row norm of ``x`` (float64)."""
    best = 0.0
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        block = np.asarray(x[start : start + _CHUNK_ROWS])
        best = max(best, float(np.einsum("ij,ij->i", block, block, dtype=np.float64).max(initial=0.0)))
    return float(np.sqrt(best))


def augment_rows(x: np.ndarray, m: float) -> np.ndarray:
    """Rows x (n, d) -> x' = [x, sqrt(M² − |x|²)] (n, d + 1) float32; the root's argument is
    clamped at 0 (rounding can take it just below)."""
    n, d = x.shape
    out = np.empty((n, d + 1), dtype=np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        block = np.asarray(x[start : start + _CHUNK_ROWS])
        sq = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        out[start : start + block.shape[0], :d] = block
        out[start : start + block.shape[0], d] = np.sqrt(np.maximum(m * m - sq, 0.0))
    return out


def augment_queries(q: np.ndarray) -> np.ndarray:
    """Queries q (m, d) -> q' = [q, 0] (m, d + 1) float32."""
    out = np.zeros((q.shape[0], q.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = q
    return out


def dot_query_axis(metric: str, rotation: np.ndarray) -> np.ndarray | None:
    """For dot, the augmented coordinate's direction in the rotated space (the last row of
    the rotation, as x_rot = x' @ rotation); None for the other metrics."""
    return np.asarray(rotation[-1], np.float64) if metric == "dot" else None


def drop_axis(q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Rows of ``q`` (rotated space) without their component along the unit vector ``axis``:
    the augmented coordinate of a query is 0 (synthetic queries made from augmented rows)."""
    q64 = np.asarray(q, dtype=np.float64)
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return (q64 - np.outer(q64 @ a, a)).astype(np.float32)


def user_distances(d2: np.ndarray, queries: np.ndarray, metric: str, m: float = 0.0) -> np.ndarray:
    """Squared L2 (Q, k) as the search computes it for ``queries`` (Q, d') in the index's
    space -> the metric's distance: l2 as is, cosine 1 − cos = d2 / 2, dot −q·x."""
    if metric == "l2":
        return d2
    empty = np.isinf(d2)
    if metric == "cosine":
        return np.where(empty, np.inf, d2 / 2).astype(np.float32)
    q_sq = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore"):  # inf - inf in the empty slots, replaced below
        score = (q_sq + m * m - d2.astype(np.float64)) / 2
    return np.where(empty, np.inf, -score).astype(np.float32)


def scores(distances: np.ndarray, metric: str) -> np.ndarray:
    """The metric's distance -> its score, larger is better (dot q·x, cosine cos, l2 −d2)."""
    empty = np.isinf(distances)
    with np.errstate(invalid="ignore"):
        out = 1.0 - distances if metric == "cosine" else -distances
    return np.where(empty, -np.inf, out).astype(np.float32)
