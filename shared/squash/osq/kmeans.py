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
BLOCK_ELEMENTS = 1 << 24  # (rows x centroids) distances per block in nearest()
REFINE_ROUNDS = 2
TOP = 8  # candidate centroids per row the balancing chooses among
AUCTION_ROWS = 1 << 20  # rows per block of an auction round
FAR_BIDS = 4  # bids kept per missing row of an under-full partition
FAR_ROUNDS = 4  # passes of far bids (each over every row)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def nearest(x: np.ndarray, centroids: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of the ``top`` nearest centroids, chunked over rows.

    The rows' own norms do not change which centroids are nearest, so they are added to the
    ``top`` chosen distances only (one product and one add per block, not three passes)."""
    top = min(top, centroids.shape[0])
    c_norm = _sq_norms(centroids).astype(np.float32)
    neg2c = (-2.0 * centroids).astype(np.float32).T.copy()
    idx = np.empty((x.shape[0], top), dtype=np.int32)
    dist = np.empty((x.shape[0], top), dtype=np.float32)
    step = max(256, min(CHUNK, BLOCK_ELEMENTS // centroids.shape[0]))  # a (rows x P) block <= 64 MB
    for start in range(0, x.shape[0], step):
        block = np.asarray(x[start : start + step], np.float32)
        d2 = block @ neg2c
        d2 += c_norm
        if top == 1:
            part = np.argmin(d2, axis=1)[:, None]
        elif top < centroids.shape[0]:
            part = np.argpartition(d2, top - 1, axis=1)[:, :top]
        else:
            part = np.broadcast_to(np.arange(top), d2.shape)
        part_d = np.take_along_axis(d2, part, axis=1)
        if top > 1:
            order = np.argsort(part_d, axis=1, kind="stable")
            part, part_d = np.take_along_axis(part, order, axis=1), np.take_along_axis(part_d, order, axis=1)
        idx[start : start + step] = part
        dist[start : start + step] = np.maximum(part_d + _sq_norms(block)[:, None], 0)
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
        sums = _sums(pts, assign, counts)
        empty = counts == 0
        centroids[~empty] = (sums[~empty] / counts[~empty, None]).astype(np.float32)
        if empty.any():  # re-seed empty clusters on random points
            centroids[empty] = pts[rng.choice(pts.shape[0], size=int(empty.sum()), replace=False)]
    return centroids


def _sums(x: np.ndarray, assign: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(k, d) float64 sum of each cluster's rows, by one sort and a segmented sum."""
    order = np.argsort(assign, kind="stable")
    sums = np.zeros((counts.shape[0], x.shape[1]), np.float64)
    used = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[used]
    sums[used] = np.add.reduceat(np.asarray(x[order], np.float64), starts, axis=0)
    return sums


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
    top: int = TOP,
    rounds: int = 60,
) -> np.ndarray:
    """Assign rows of ``x`` to centroids with every partition size within ±tolerance of N/P."""
    n, k = x.shape[0], centroids.shape[0]
    if k == 1:
        return np.zeros(n, dtype=np.int32)
    cand, dist = nearest(x, centroids, top)
    assign = balance_candidates(cand, dist, k, tolerance, rounds)
    lo, hi = size_bounds(n, k, tolerance)
    free = np.flatnonzero(assign < 0)
    if free.size:
        sizes = np.bincount(assign[assign >= 0], minlength=k)
        assign[free] = place_leftovers(x[free], centroids, sizes, hi)
    return raise_far(x, centroids, assign, lo)


def raise_far(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, lo: int) -> np.ndarray:
    """Top up partitions still under-full (few rows have them among their candidates) with
    bids from every row, a block at a time."""
    k = centroids.shape[0]
    for _ in range(FAR_ROUNDS):
        under = under_full(assign, k, lo)
        if under.size == 0:
            break
        need = lo - np.bincount(assign[assign >= 0], minlength=k)[under]
        bids = [
            far_bids(x[s : s + CHUNK], centroids, assign, under, lo, s) for s in range(0, x.shape[0], CHUNK)
        ]
        assign = raise_small(best_bids(bids, under, need), assign, lo, k)
    return assign


def balance_candidates(
    cand: np.ndarray, dist: np.ndarray, k: int, tolerance: float = 0.10, rounds: int = 60
) -> np.ndarray:
    """A balanced assignment from each row's nearest centroids alone: ``cand``/``dist`` (n, t)
    from :func:`nearest`. Rows whose every candidate is full get −1; give them to
    :func:`place_leftovers`, which needs their vectors (a streaming build has them only on
    its next pass). Under-full partitions are topped up from rows that have them as a
    candidate, so only ``cand``/``dist`` are needed here."""
    n = cand.shape[0]
    if k == 1:
        return np.zeros(n, dtype=np.int32)
    lo, hi = size_bounds(n, k, tolerance)
    prices = np.zeros(k, dtype=np.float32)
    scale = np.float32(float(np.median(dist[:, -1] - dist[:, 0])) / 20 or 1.0)
    for _ in range(rounds):
        sizes = np.zeros(k, np.int64)
        for a in range(0, n, AUCTION_ROWS):  # bounded temporaries: a block of rows at a time
            c, d = cand[a : a + AUCTION_ROWS], dist[a : a + AUCTION_ROWS]
            choice = np.argmin(d + prices[c], axis=1)
            sizes += np.bincount(np.take_along_axis(c, choice[:, None], 1)[:, 0], minlength=k)
        if sizes.min() >= lo and sizes.max() <= hi:
            break
        prices += scale * ((sizes > hi).astype(np.float32) - (sizes < lo))
    assign = _capacitated(cand, dist, prices, hi, k)
    return raise_small(candidate_bids(cand, dist, assign, lo, k), assign, lo, k)


def _capacitated(cand: np.ndarray, dist: np.ndarray, prices: np.ndarray, hi: int, k: int) -> np.ndarray:
    """Rounds of proposals: each free row proposes to its next choice; a partition accepts
    its cheapest proposers (distance + price) up to capacity. Vectorised with a lexsort per
    round."""
    n, top = cand.shape
    assign = np.full(n, -1, dtype=np.int32)
    room = np.full(k, hi, dtype=np.int64)
    for r in range(top):
        free = np.flatnonzero(assign < 0)
        if free.size == 0:
            break
        part = cand[free, r]
        order = np.lexsort((dist[free, r] + prices[part], part))
        part_sorted = part[order]
        first = np.searchsorted(part_sorted, part_sorted, side="left")
        rank = np.arange(part_sorted.size) - first
        ok = rank < room[part_sorted]
        winners = free[order[ok]]
        assign[winners] = part_sorted[ok]
        room -= np.bincount(part_sorted[ok], minlength=k)
    return assign


def place_leftovers(x: np.ndarray, centroids: np.ndarray, sizes: np.ndarray, hi: int) -> np.ndarray:
    """Partitions for rows whose candidates were all full, in row order: each goes to its
    nearest partition with room. ``sizes`` is updated in place, so calling this block by
    block in row order gives the same answer as one call for every row."""
    out = np.empty(x.shape[0], dtype=np.int32)
    if x.shape[0] == 0:
        return out
    order, _ = nearest(x, centroids, centroids.shape[0])
    for i, prefs in enumerate(order):  # rare leftovers only
        p = prefs[np.argmax(sizes[prefs] < hi)]
        out[i] = p
        sizes[p] += 1
    return out


def under_full(assign: np.ndarray, k: int, lo: int) -> np.ndarray:
    """Partitions holding fewer than ``lo`` rows."""
    return np.flatnonzero(np.bincount(assign[assign >= 0], minlength=k) < lo).astype(np.int32)


def far_bids(
    x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, parts: np.ndarray, lo: int, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bids ``(rows, targets, delta)`` of rows ``x`` (global numbers from ``first_row``) for
    the under-full partitions ``parts``: for each, the rows whose move there costs least
    (distance increase), a few times its need. Merge blocks with :func:`best_bids`."""
    sizes = np.bincount(assign[assign >= 0], minlength=centroids.shape[0])
    mine = assign[first_row : first_row + x.shape[0]]
    own = np.zeros(x.shape[0], np.float32)
    ok = (mine >= 0) & (sizes[np.maximum(mine, 0)] > lo)  # only rows that can be given
    own[ok] = _sq_norms(x[ok] - centroids[mine[ok]])
    sub = centroids[parts]
    d2 = _sq_norms(sub)[None, :] - 2.0 * (x @ sub.T) + _sq_norms(x)[:, None]
    delta = np.where(ok[:, None], np.maximum(d2, 0) - own[:, None], np.inf)
    want = np.minimum(FAR_BIDS * (lo - sizes[parts]), x.shape[0])
    rows, targets, costs = [], [], []
    for j, t in enumerate(parts):  # few partitions, vectorised inside
        col = delta[:, j]
        top = np.argpartition(col, want[j] - 1)[: want[j]] if want[j] < col.size else np.arange(col.size)
        top = top[np.isfinite(col[top])]
        rows.append(top + first_row)
        targets.append(np.full(top.size, t, np.int32))
        costs.append(col[top])
    return np.concatenate(rows), np.concatenate(targets), np.concatenate(costs).astype(np.float32)


def best_bids(
    bids: list[tuple[np.ndarray, np.ndarray, np.ndarray]], parts: np.ndarray, need: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cheapest ``FAR_BIDS * need`` bids per partition among blocks' bids."""
    rows, targets, costs = (np.concatenate(c) for c in zip(*bids, strict=True))
    order = np.lexsort((costs, targets))
    rows, targets, costs = rows[order], targets[order], costs[order]
    rank = np.arange(targets.size) - np.searchsorted(targets, targets, side="left")
    limit = np.zeros(int(parts.max()) + 1, np.int64)
    limit[parts] = FAR_BIDS * need
    keep = rank < limit[targets]
    return rows[keep], targets[keep], costs[keep]


def candidate_bids(
    cand: np.ndarray, dist: np.ndarray, assign: np.ndarray, lo: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bids of rows for the under-full partitions among their own candidates."""
    under = np.bincount(assign[assign >= 0], minlength=k) < lo
    if not under.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    here = cand == assign[:, None]
    col = np.argmax(here, axis=1)[:, None]
    own = np.where(here.any(axis=1), np.take_along_axis(dist, col, 1)[:, 0], np.inf)
    rows, cols = np.nonzero(under[cand] & np.isfinite(own)[:, None])
    return rows, cand[rows, cols], (dist[rows, cols] - own[rows]).astype(np.float32)


def raise_small(
    bids: tuple[np.ndarray, np.ndarray, np.ndarray], assign: np.ndarray, lo: int, k: int
) -> np.ndarray:
    """Move the cheapest bidding rows into under-full partitions, vectorised. Each round a
    row's cheapest open bid counts; a partition takes its cheapest bids up to its need, a
    donor gives at most what it holds above ``lo``; a moved row moves no more. (Rows without
    a partition yet, −1, neither give nor count.)"""
    rows, targets, costs = bids
    for _ in range(16):
        sizes = np.bincount(assign[assign >= 0], minlength=k)
        need = lo - sizes
        if need.max() <= 0 or rows.size == 0:
            break
        src = assign[rows]
        live = (need[targets] > 0) & (src >= 0) & (sizes[np.maximum(src, 0)] > lo)
        r, t, c = rows[live], targets[live], costs[live]
        by_cost = np.lexsort((t, c))
        r, t, c = r[by_cost], t[by_cost], c[by_cost]
        first = np.sort(np.unique(r, return_index=True)[1])  # each row's cheapest bid
        r, t, c = r[first], t[first], c[first]
        by_target = np.lexsort((c, t))
        r, t, c = r[by_target], t[by_target], c[by_target]
        rank = np.arange(t.size) - np.searchsorted(t, t, side="left")
        take = rank < need[t]
        r, t, c = r[take], t[take], c[take]
        s = assign[r]
        by_source = np.lexsort((c, s))
        r, t, s = r[by_source], t[by_source], s[by_source]
        rank = np.arange(s.size) - np.searchsorted(s, s, side="left")
        give = rank < sizes[s] - lo
        if not give.any():
            break
        assign[r[give]] = t[give]
        moved = np.isin(rows, r[give])
        rows, targets, costs = rows[~moved], targets[~moved], costs[~moved]
    return assign


def centroids_of(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """Mean of each partition's rows (float32), by one sort and a segmented sum."""
    sizes = np.bincount(assign, minlength=k)
    return (_sums(x, assign, sizes) / np.maximum(sizes, 1)[:, None]).astype(np.float32)


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
