"""Top-k results and per-query level statistics, mergeable up the worker tree."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Per-query counters, summed across partitions and tree nodes.
STAT_NAMES = ("partitions", "l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored")


@dataclass
class TopK:
    """ids (Q, k) int64 padded with -1, distances (Q, k) float32 padded with +inf."""

    ids: np.ndarray
    distances: np.ndarray
    stats: np.ndarray  # (Q, len(STAT_NAMES)) int64

    @classmethod
    def empty(cls, q: int, k: int) -> TopK:
        return cls(
            np.full((q, k), -1, dtype=np.int64),
            np.full((q, k), np.inf, dtype=np.float32),
            np.zeros((q, len(STAT_NAMES)), dtype=np.int64),
        )

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def stats_dict(self) -> dict[str, list[int]]:
        return {name: self.stats[:, i].tolist() for i, name in enumerate(STAT_NAMES)}


def merge(parts: list[TopK], k: int) -> TopK:
    """Merge several TopK over the same queries into one (k smallest distances per query)."""
    if not parts:
        raise ValueError("nothing to merge")
    ids = np.concatenate([p.ids for p in parts], axis=1)
    dist = np.concatenate([p.distances for p in parts], axis=1)
    stats = np.sum([p.stats for p in parts], axis=0)
    return select_topk(ids, dist, k, stats)


def merge_rows(pieces: list[tuple[np.ndarray, TopK]], q: int, k: int) -> TopK:
    """Merge per-partition answers for subsets of the queries into one TopK over ``q`` queries.

    ``pieces`` are ``(query rows, TopK of those rows)``. Instead of widening every piece to all
    ``q`` queries, the rows are grouped by query into one (q, pieces per query x k) buffer and
    selected once: the cost follows the (query, partition) pairs searched, not q x partitions.
    """
    out = TopK.empty(q, k)
    if not pieces:
        return out
    rows = np.concatenate([r for r, _ in pieces])
    ids = np.concatenate([t.ids for _, t in pieces])
    dist = np.concatenate([t.distances for _, t in pieces])
    stats = np.concatenate([t.stats for _, t in pieces])
    order = np.argsort(rows, kind="stable")
    rows, ids, dist = rows[order], ids[order], dist[order]
    counts = np.bincount(rows, minlength=q)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(rows.shape[0]) - starts[rows]
    width = int(counts.max())
    buf_ids = np.full((q, width, k), -1, dtype=np.int64)
    buf_dist = np.full((q, width, k), np.inf, dtype=np.float32)
    buf_ids[rows, rank], buf_dist[rows, rank] = ids, dist
    for i in range(stats.shape[1]):
        out.stats[:, i] = np.bincount(rows, stats[order, i], minlength=q).astype(np.int64)
    return select_topk(buf_ids.reshape(q, -1), buf_dist.reshape(q, -1), k, out.stats)


def merge_flat(pieces: list[tuple[np.ndarray, TopK]], q: int, k: int) -> TopK:
    """Like :func:`merge_rows` for pieces of any width (e.g. unselected distances), one query
    at a time: for small batches, where a selection per partition costs more."""
    out = TopK.empty(q, k)
    if not pieces:
        return out
    rows = np.concatenate([np.repeat(r, t.ids.shape[1]) for r, t in pieces])
    ids = np.concatenate([t.ids.ravel() for _, t in pieces])
    dist = np.concatenate([t.distances.ravel() for _, t in pieces])
    for query in range(q):
        mine = np.flatnonzero(rows == query) if q > 1 else slice(None)
        best = select_topk(ids[mine][None, :], dist[mine][None, :], k, out.stats[query : query + 1])
        out.ids[query], out.distances[query] = best.ids[0], best.distances[0]
    srows = np.concatenate([r for r, _ in pieces])
    stats = np.concatenate([t.stats for _, t in pieces])
    for i in range(stats.shape[1]):
        out.stats[:, i] = np.bincount(srows, stats[:, i], minlength=q).astype(np.int64)
    return out


def select_topk(ids: np.ndarray, dist: np.ndarray, k: int, stats: np.ndarray) -> TopK:
    """k smallest of each row, sorted; ties broken by id so results are deterministic."""
    width = ids.shape[1]
    if width > k:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        ids = np.take_along_axis(ids, part, axis=1)
        dist = np.take_along_axis(dist, part, axis=1)
    order = np.lexsort((ids, dist), axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    ids = np.where(np.isinf(dist), -1, ids)
    return TopK(ids.astype(np.int64), dist.astype(np.float32), stats)
