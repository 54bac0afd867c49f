"""How well the hot tier's code ranks: measured at build time, stored with the calibration.

For the calibration queries, the probe keeps two running top-k lists over all rows, one by
the code's distance estimate and one by exact float32 distance, partition by partition as
the build writes them. Their overlap is the recall the final ranking on codes alone can
reach with perfect routing; the planner multiplies it into its expected recall and asks for
a re-rank when the target is beyond it. A third list per k ranks on the refinement tier the
``k * RERANK_FACTOR`` best code estimates of each partition, as ``rerank="fine"`` does:
its recall tells the planner whether that re-rank (resident, no reads) is enough or the
float32 one (cold tier reads) is needed.
"""

from __future__ import annotations

import numpy as np

from .fine import Fine
from .osq.scalar import fine_values
from .partition_search import code_distances, float32_distances, refined_query_parts
from .segment import Segment

PROBE_KS = (10, 100)
RERANK_FACTOR = 4  # SearchParams' default rerank_factor
#: the running top-k lists: by the code, by truth, by the refinement re-rank for each k
KINDS = ("code", "exact", *(f"fine{k}" for k in PROBE_KS))
MAX_PROBE_QUERIES = 300
#: partitions' scores are merged into the running lists in batches of about this many rows:
#: a merge costs ~ the lists' size (queries x 100) however few rows it brings, and 173-row
#: partitions merged one by one made the probe most of a text set's calibration time
FLUSH_COLUMNS = 2048


class RankingProbe:
    """Running top-k of calibration ``queries`` (rotated space) by estimate and by truth."""

    def __init__(self, queries: np.ndarray, exclude: np.ndarray | None) -> None:
        self.queries = queries[:MAX_PROBE_QUERIES]
        m = self.queries.shape[0]
        self.exclude = None if exclude is None else exclude[:m]
        width = max(PROBE_KS)
        self._best = {kind: (np.full((m, 0), np.inf, np.float32), np.full((m, 0), -1, np.int64))
                      for kind in KINDS}  # fmt: skip
        self._width = width
        self._pending: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {kind: [] for kind in KINDS}
        self._pending_columns = 0

    def add(self, hot: bytes, fine: bytes, key: str, rows_x: np.ndarray, rows: np.ndarray) -> None:
        """One partition: its hot and refinement files' bytes, float32 rows and their global
        row numbers."""
        seg = Segment.from_bytes(-1, hot, key)
        refined = Fine.from_bytes(fine, seg.size, seg.codes4.shape[1], seg.fine_crc or 0, key)
        self.add_segment(seg, rows_x, rows, refined)

    def add_segment(
        self, seg: Segment, rows_x: np.ndarray, rows: np.ndarray, fine: Fine | None = None
    ) -> None:
        every = np.arange(seg.size)
        code = code_distances(seg, self.queries, every)
        mine = None if self.exclude is None else self.exclude[:, None] == rows[None, :]
        if mine is not None:  # before the refined re-rank's candidates are chosen from it
            code[mine] = np.inf
        scored = {"code": code, "exact": float32_distances(self.queries, rows_x)}
        if fine is not None:
            refined = _fine_products(seg, fine, self.queries)
            for k in PROBE_KS:  # only the rows a re-rank of k * factor candidates would see
                width = k * RERANK_FACTOR
                dist = refined.copy()
                if width < seg.size:
                    beyond = np.argpartition(code, width - 1, axis=1)[:, width:]
                    np.put_along_axis(dist, beyond, np.inf, axis=1)
                scored[f"fine{k}"] = dist
        for kind, dist in scored.items():
            if mine is not None:
                dist[mine] = np.inf
            self._pending[kind].append((dist, np.broadcast_to(rows, dist.shape)))
        self._pending_columns += seg.size
        if self._pending_columns >= FLUSH_COLUMNS:
            self._flush()

    def _flush(self) -> None:
        """Merge the pending partitions' scores into the running lists (the result does not
        depend on how partitions were batched: selection is by (distance, row))."""
        for kind, parts in self._pending.items():
            if parts:
                dist = np.concatenate([d for d, _ in parts], axis=1)
                ids = np.concatenate([i for _, i in parts], axis=1)
                self._keep(kind, dist, ids)
            self._pending[kind] = []
        self._pending_columns = 0

    def state(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The running top-k lists, to send from a build worker process to the parent."""
        self._flush()
        return self._best

    def merge(self, state: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Fold in another probe's :meth:`state` (same queries, other partitions)."""
        self._flush()
        for kind, (dist, ids) in state.items():
            self._keep(kind, dist, ids)

    def _keep(self, kind: str, dist: np.ndarray, ids: np.ndarray) -> None:
        old_d, old_i = self._best[kind]
        if old_d.shape[1] == self._width:
            # full (and sorted by (distance, row)): only entries before a query's last kept one
            # in that order count, a tie on distance going to the smaller row
            worst_d, worst_i = old_d[:, -1:], old_i[:, -1:]
            q, c = np.nonzero((dist < worst_d) | ((dist == worst_d) & (ids < worst_i)))
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
        if cat_d.shape[1] >= self._width:  # by (distance, row): ties never depend on the batching
            keep = np.lexsort((cat_i, cat_d), axis=1)[:, : self._width]
            cat_d, cat_i = np.take_along_axis(cat_d, keep, 1), np.take_along_axis(cat_i, keep, 1)
        self._best[kind] = (cat_d, cat_i)

    def recall(self, kind: str = "code") -> dict[str, float] | None:
        """{"10": recall@10, "100": recall@100} of the code ranking (``kind="code"``) or of
        the re-rank on the refinement tier (``"fine"``) against the truth; None for "fine"
        when no partition brought a refinement."""
        self._flush()
        out = {}
        for k in PROBE_KS:
            name = "code" if kind == "code" else f"fine{k}"
            if kind != "code" and not np.isfinite(self._best[name][0]).any():
                return None
            top = {}
            for which in (name, "exact"):
                dist, ids = self._best[which]
                width = min(k, dist.shape[1])
                order = np.argsort(dist, axis=1, kind="stable")[:, :width]
                top[which] = np.take_along_axis(ids, order, 1)
            hits = [np.intersect1d(a, b).size for a, b in zip(top[name], top["exact"], strict=True)]
            out[str(k)] = round(float(np.sum(hits)) / max(top["exact"].size, 1), 4)
        return out


def _fine_products(seg: Segment, fine: Fine, queries: np.ndarray) -> np.ndarray:
    """The refined estimate (m, n) of every row, BLAS form (a probe ranks, it need not agree
    with the direct sums of :func:`~squash.partition_search.fine_distances` to the last bit)."""
    values = fine_values(seg.code, seg.codes8, seg.codes4, fine.fine4)
    coded, rest = refined_query_parts(seg, queries)
    dist = float32_distances(coded, values)
    dist += rest[:, None].astype(np.float32)
    dist += fine.fine_sq[None, :]
    return dist
