"""Balanced k-means: partitions held within ±10 % of N/P, for even work per worker.

Lloyd iterations on a sample fit the centroids; every vector is then assigned with a
capacity-aware scheme: per-partition "prices" are raised on over-full partitions and
lowered on under-full ones (an auction), and a final capacitated pass guarantees the
bounds exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CHUNK = 16384
REFINE_ROUNDS = 2


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def nearest(x: np.ndarray, centroids: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of the ``top`` nearest centroids, chunked over rows."""
    top = min(top, centroids.shape[0])
    c_norm = _sq_norms(centroids)
    idx = np.empty((x.shape[0], top), dtype=np.int32)
    dist = np.empty((x.shape[0], top), dtype=np.float32)
    for start in range(0, x.shape[0], CHUNK):
        block = x[start : start + CHUNK]
        d2 = c_norm[None, :] - 2.0 * (block @ centroids.T) + _sq_norms(block)[:, None]
        if top < centroids.shape[0]:
            part = np.argpartition(d2, top - 1, axis=1)[:, :top]
        else:
            part = np.broadcast_to(np.arange(top), d2.shape)
        part_d = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        idx[start : start + CHUNK] = np.take_along_axis(part, order, axis=1)
        dist[start : start + CHUNK] = np.maximum(np.take_along_axis(part_d, order, axis=1), 0)
    return idx, dist


def fit_centroids(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 12, sample: int | None = None
) -> np.ndarray:
    """Plain Lloyd k-means on a sample (at most 64 points per centroid by default)."""
    n = x.shape[0]
    sample = sample or min(n, max(64 * k, 20000))
    pts = x[rng.choice(n, size=sample, replace=False)] if sample < n else x
    centroids = pts[rng.choice(pts.shape[0], size=k, replace=False)].astype(np.float32)
    for _ in range(iters):
        assign = nearest(pts, centroids, 1)[0][:, 0]
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, assign, pts)
        empty = counts == 0
        centroids[~empty] = (sums[~empty] / counts[~empty, None]).astype(np.float32)
        if empty.any():  # re-seed empty clusters on random points
            centroids[empty] = pts[rng.choice(pts.shape[0], size=int(empty.sum()), replace=False)]
    return centroids


def size_bounds(n: int, k: int, tolerance: float = 0.10) -> tuple[int, int]:
    """Smallest and largest allowed partition size."""
    target = n / k
    lo = int(np.ceil(target * (1 - tolerance)))
    hi = int(np.floor(target * (1 + tolerance)))
    lo = min(lo, n // k)
    hi = max(hi, -(-n // k))
    return lo, hi


def balanced_assign(
    x: np.ndarray,
    centroids: np.ndarray,
    tolerance: float = 0.10,
    top: int = 8,
    rounds: int = 60,
) -> np.ndarray:
    """Assign rows of ``x`` to centroids with every partition size within ±tolerance of N/P."""
    n, k = x.shape[0], centroids.shape[0]
    if k == 1:
        return np.zeros(n, dtype=np.int32)
    lo, hi = size_bounds(n, k, tolerance)
    cand, dist = nearest(x, centroids, top)
    prices = np.zeros(k, dtype=np.float64)
    scale = float(np.median(dist[:, -1] - dist[:, 0])) / 20 or 1.0
    for _ in range(rounds):
        choice = np.argmin(dist + prices[cand], axis=1)
        sizes = np.bincount(cand[np.arange(n), choice], minlength=k)
        if sizes.min() >= lo and sizes.max() <= hi:
            break
        prices += scale * ((sizes > hi).astype(np.float64) - (sizes < lo))
    assign = _capacitated(cand, dist + prices[cand].astype(np.float32), hi, k)
    assign = _fill_unassigned(x, centroids, assign, hi)
    return _raise_small(x, centroids, assign, lo)


def _capacitated(cand: np.ndarray, cost: np.ndarray, hi: int, k: int) -> np.ndarray:
    """Rounds of proposals: each free row proposes to its next choice; a partition accepts
    its cheapest proposers up to capacity. Vectorised with a lexsort per round."""
    n, top = cand.shape
    assign = np.full(n, -1, dtype=np.int32)
    room = np.full(k, hi, dtype=np.int64)
    for r in range(top):
        free = np.flatnonzero(assign < 0)
        if free.size == 0:
            break
        part = cand[free, r]
        order = np.lexsort((cost[free, r], part))
        part_sorted = part[order]
        first = np.searchsorted(part_sorted, part_sorted, side="left")
        rank = np.arange(part_sorted.size) - first
        ok = rank < room[part_sorted]
        winners = free[order[ok]]
        assign[winners] = part_sorted[ok]
        room -= np.bincount(part_sorted[ok], minlength=k)
    return assign


def _fill_unassigned(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, hi: int) -> np.ndarray:
    free = np.flatnonzero(assign < 0)
    if free.size == 0:
        return assign
    k = centroids.shape[0]
    sizes = np.bincount(assign[assign >= 0], minlength=k)
    order, _ = nearest(x[free], centroids, k)
    for row, prefs in zip(free, order, strict=True):  # rare leftovers only
        p = prefs[np.argmax(sizes[prefs] < hi)]
        assign[row] = p
        sizes[p] += 1
    return assign


def _raise_small(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, lo: int) -> np.ndarray:
    k = centroids.shape[0]
    sizes = np.bincount(assign, minlength=k)
    for p in np.flatnonzero(sizes < lo):  # loop over partitions, vectorised inside
        need = lo - sizes[p]
        donors = np.flatnonzero(sizes[assign] > lo)
        d_new = _sq_norms(x[donors] - centroids[p])
        d_old = _sq_norms(x[donors] - centroids[assign[donors]])
        order = donors[np.argsort(d_new - d_old, kind="stable")]
        taken = 0
        for row in order:  # stops after `need` moves
            if sizes[assign[row]] > lo:
                sizes[assign[row]] -= 1
                assign[row] = p
                sizes[p] += 1
                taken += 1
                if taken == need:
                    break
    return assign


def centroids_of(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """Mean of each partition's rows (float32), by one sort and a segmented sum."""
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=k)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.add.reduceat(np.asarray(x[order], np.float64), offsets, axis=0)
    return (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)


def balanced_kmeans(
    x: np.ndarray,
    k: int,
    seed: int,
    tolerance: float = 0.10,
    refine: int = REFINE_ROUNDS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Partition rows of ``x`` into ``k`` balanced clusters; returns the assignment (int32).

    After the first balanced assignment, ``refine`` rounds re-centre the partitions on
    their members and assign again: balancing moves boundary points, and re-centring
    pulls the centroids back to where routing will look for them.
    """
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    centroids = fit_centroids(x, k, rng)
    assign = balanced_assign(x, centroids, tolerance)
    if progress:
        progress(1)
    for _ in range(refine):
        assign = balanced_assign(x, centroids_of(x, assign, k), tolerance)
        if progress:
            progress(1)
    return assign
