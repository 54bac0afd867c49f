"""How well the hot tier's code ranks: measured at build time, stored with the calibration.

For the calibration queries, the probe keeps two running top-k lists over all rows, one by
the code's distance estimate and one by exact float32 distance, partition by partition as
the build writes them. Their overlap is the recall the final ranking on codes alone can
reach with perfect routing; the planner multiplies it into its expected recall and asks for
a float32 re-rank when the target is beyond it.
"""

from __future__ import annotations

import numpy as np

from .partition_search import code_distances, float32_distances
from .segment import Segment

PROBE_KS = (10, 100)
MAX_PROBE_QUERIES = 300


class RankingProbe:
    """Running top-k of calibration ``queries`` (rotated space) by estimate and by truth."""

    def __init__(self, queries: np.ndarray, exclude: np.ndarray | None) -> None:
        self.queries = queries[:MAX_PROBE_QUERIES]
        m = self.queries.shape[0]
        self.exclude = None if exclude is None else exclude[:m]
        width = max(PROBE_KS)
        self._best = {kind: (np.full((m, 0), np.inf, np.float32), np.full((m, 0), -1, np.int64))
                      for kind in ("code", "exact")}  # fmt: skip
        self._width = width

    def add(self, hot: bytes, key: str, rows_x: np.ndarray, rows: np.ndarray) -> None:
        """One partition: its hot file's bytes, float32 rows and their global row numbers."""
        self.add_segment(Segment.from_bytes(-1, hot, key), rows_x, rows)

    def add_segment(self, seg: Segment, rows_x: np.ndarray, rows: np.ndarray) -> None:
        every = np.arange(seg.size)
        scored = {
            "code": code_distances(seg, self.queries, every),
            "exact": float32_distances(self.queries, rows_x),
        }
        for kind, dist in scored.items():
            if self.exclude is not None:
                dist[self.exclude[:, None] == rows[None, :]] = np.inf
            self._keep(kind, dist, np.broadcast_to(rows, dist.shape))

    def state(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The running top-k lists, to send from a build worker process to the parent."""
        return self._best

    def merge(self, state: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Fold in another probe's :meth:`state` (same queries, other partitions)."""
        for kind, (dist, ids) in state.items():
            self._keep(kind, dist, ids)

    def _keep(self, kind: str, dist: np.ndarray, ids: np.ndarray) -> None:
        old_d, old_i = self._best[kind]
        if old_d.shape[1] == self._width:  # full: only entries below a query's worst kept count
            q, c = np.nonzero(dist < old_d.max(axis=1)[:, None])
            if q.size == 0:
                return
            hit = np.unique(q)
            w = self._width
            cat_q = np.concatenate([np.repeat(hit, w), q])
            cat_d = np.concatenate([old_d[hit].ravel(), dist[q, c]])
            cat_i = np.concatenate([old_i[hit].ravel(), ids[q, c]])
            order = np.lexsort((cat_i, cat_d, cat_q))  # ties by row: the same whatever the order
            cat_q, cat_d, cat_i = cat_q[order], cat_d[order], cat_i[order]
            keep = (np.arange(cat_q.size) - np.searchsorted(cat_q, cat_q, side="left")) < w
            old_d[hit], old_i[hit] = cat_d[keep].reshape(hit.size, w), cat_i[keep].reshape(hit.size, w)
            return
        cat_d = np.concatenate([old_d, dist], axis=1)
        cat_i = np.concatenate([old_i, ids], axis=1)
        if cat_d.shape[1] > self._width:
            keep = np.argpartition(cat_d, self._width - 1, axis=1)[:, : self._width]
            cat_d, cat_i = np.take_along_axis(cat_d, keep, 1), np.take_along_axis(cat_i, keep, 1)
        self._best[kind] = (cat_d, cat_i)

    def recall(self) -> dict[str, float]:
        """{"10": recall@10, "100": recall@100} of the code ranking against the truth."""
        out = {}
        for k in PROBE_KS:
            top = {}
            for kind, (dist, ids) in self._best.items():
                width = min(k, dist.shape[1])
                order = np.argsort(dist, axis=1, kind="stable")[:, :width]
                top[kind] = np.take_along_axis(ids, order, 1)
            hits = [np.intersect1d(a, b).size for a, b in zip(top["code"], top["exact"], strict=True)]
            out[str(k)] = round(float(np.sum(hits)) / max(top["exact"].size, 1), 4)
        return out
