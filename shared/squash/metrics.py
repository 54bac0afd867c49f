"""The metrics an index can have, and how each maps onto the squared L2 the search computes.

* ``l2``: squared Euclidean distance, as searched.
* ``cosine``: rows and queries unit-normalised (see :mod:`squash.inputs`); distance 1 − cos.
* ``dot``: maximum inner product search by the MIPS-to-L2 transform (Bachrach et al. 2014).
  With M the largest row norm, a row x becomes x' = [x, sqrt(M² − |x|²)] and a query q
  becomes q' = [q̂, 0] with q̂ = q · M / |q|, so |q' − x'|² = 2 M² − 2 q̂·x: L2 ranking in
  the d + 1 dims of the augmented space is inner-product ranking, exactly. The query's
  length does not change that ranking, so every query is put at length M, as every
  augmented row is: routing, the code's estimate and the calibration then do not depend on
  how the queries are scaled (with q' = [q, 0] a short query ranks by the estimate's
  per-row error). The score is q·x = (|q| / M) (M² − d2 / 2).

For every metric a distance is smaller-is-better (dot: −q·x) and a score larger-is-better
(dot: q·x; cosine: cos = 1 − distance; l2: −squared distance); empty slots hold ``inf``
distances and ``-inf`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _at_length(q: np.ndarray, m: float) -> np.ndarray:
    """Rows of ``q`` rescaled to length ``m`` (float64); zero rows stay zero."""
    q64 = np.asarray(q, dtype=np.float64)
    norms = np.linalg.norm(q64, axis=1, keepdims=True)
    return q64 * np.divide(m, norms, out=np.zeros_like(norms), where=norms > 0)


def augment_queries(q: np.ndarray, m: float) -> np.ndarray:
    """Queries q (n, d) -> q' = [q · M / |q|, 0] (n, d + 1) float32; a zero query stays zero."""
    out = np.zeros((q.shape[0], q.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = _at_length(q, m)
    return out


@dataclass(frozen=True)
class DotSpace:
    """The dot metric's augmentation as the index's rotated space sees it."""

    axis: np.ndarray  # (d + 1,) the augmented coordinate's unit direction (x_rot = x' @ rotation)
    max_norm: float  # M

    @classmethod
    def of(cls, metric: str, rotation: np.ndarray, m: float) -> DotSpace | None:
        """For a dot index (``rotation``: its KLT), else None."""
        if metric != "dot":
            return None
        axis = np.asarray(rotation[-1], dtype=np.float64)
        return cls(axis / np.linalg.norm(axis), float(m))

    def queries_from_rows(self, q: np.ndarray) -> np.ndarray:
        """Synthetic queries made from augmented rows (rotated space) -> dot queries: without
        their component along the augmented axis (q' = [q, 0]) and at length M, as
        :func:`augment_queries` makes them."""
        q64 = np.asarray(q, dtype=np.float64)
        return _at_length(q64 - np.outer(q64 @ self.axis, self.axis), self.max_norm).astype(np.float32)


def user_distances(d2: np.ndarray, queries: np.ndarray, metric: str, m: float = 0.0) -> np.ndarray:
    """Squared L2 (Q, k) as the search computes it for the user's ``queries`` (Q, d) ->
    the metric's distance: l2 as is, cosine 1 − cos = d2 / 2, dot −q·x."""
    if metric == "l2":
        return d2
    empty = np.isinf(d2)
    if metric == "cosine":
        return np.where(empty, np.inf, d2 / 2).astype(np.float32)
    ratio = np.linalg.norm(np.asarray(queries, dtype=np.float64), axis=1)[:, None] / m if m > 0 else 0.0
    with np.errstate(invalid="ignore"):  # inf in the empty slots, replaced below
        score = ratio * (m * m - d2.astype(np.float64) / 2)
    return np.where(empty, np.inf, -score).astype(np.float32)


def scores(distances: np.ndarray, metric: str) -> np.ndarray:
    """The metric's distance -> its score, larger is better (dot q·x, cosine cos, l2 −d2)."""
    empty = np.isinf(distances)
    with np.errstate(invalid="ignore"):
        out = 1.0 - distances if metric == "cosine" else -distances
    return np.where(empty, -np.inf, out).astype(np.float32)
