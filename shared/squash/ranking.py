"""How well the hot tier's code ranks: measured at build time, stored with the calibration.

For the calibration queries, the probe keeps a running top-k list over all rows by the
code's distance estimate, partition by partition as the build writes them. Its overlap with
the exact neighbours (the calibration's ground truth, computed anyway) is the recall the
final ranking on codes alone can reach with perfect routing; the planner multiplies it into
its expected recall and asks for a re-rank when the target is beyond it. Another list per k
ranks on the refinement tier the ``k * RERANK_FACTOR`` best code estimates of each
partition, as ``rerank="fine"`` does: its recall tells the planner whether that re-rank
(resident, no reads) is enough or the float32 one (cold tier reads) is needed.
"""

from __future__ import annotations

import numpy as np

from .fine import Fine
from .osq.scalar import fine_values
from .partition_search import code_distances, float32_distances, refined_query_parts
from .segment import Segment

PROBE_KS = (10, 100)
RERANK_FACTOR = 4  # SearchParams' default rerank_factor
#: the running top-k lists: by the code, by the refinement re-rank for each k
KINDS = ("code", *(f"fine{k}" for k in PROBE_KS))
MAX_PROBE_QUERIES = 100
#: partitions' scores are merged into the running lists in batches of about this many rows:
#: a merge costs ~ the lists' size (queries x 100) however few rows it brings, and 173-row
#: partitions merged one by one made the probe most of a text set's calibration time
#: (pending scores: queries x this x 4 bytes per kind)
FLUSH_COLUMNS = 8192


class RankingProbe:
    """Running top-k of calibration ``queries`` (rotated space) by the code's estimate and
    by the refinement re-rank."""

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

    def add(self, hot: bytes, fine: bytes | None, key: str, rows: np.ndarray) -> None:
        """One partition: its hot and refinement files' bytes (None: not kept) and its rows'
        global numbers."""
        seg = Segment.from_bytes(-1, hot, key)
        refined = None
        if fine is not None:
            refined = Fine.from_bytes(fine, seg.size, seg.codes4.shape[1], seg.fine_crc or 0, key)
        self.add_segment(seg, rows, refined)

    def add_segment(self, seg: Segment, rows: np.ndarray, fine: Fine | None = None) -> None:
        every = np.arange(seg.size)
        code = code_distances(seg, self.queries, every)
        mine = None if self.exclude is None else self.exclude[:, None] == rows[None, :]
        if mine is not None:  # a query's own row: never a neighbour, nor a re-rank candidate
            code[mine] = np.inf
        scored = {"code": code}
        if fine is not None:
            refined = _fine_products(seg, fine, self.queries)
            if mine is not None:
                refined[mine] = np.inf
            for k in PROBE_KS:  # only the rows a re-rank of k * factor candidates would see
                width = k * RERANK_FACTOR
                if width < seg.size:  # (a value partition: ~5x faster than argpartition's)
                    kth = np.partition(code, width - 1, axis=1)[:, width - 1 : width]
                    scored[f"fine{k}"] = np.where(code <= kth, refined, np.float32(np.inf))
                else:
                    scored[f"fine{k}"] = refined.copy()
        for kind, dist in scored.items():
            self._pending[kind].append((dist, rows))
        self._pending_columns += seg.size
        if self._pending_columns >= FLUSH_COLUMNS:
            self._flush()

    def _flush(self) -> None:
        """Merge the pending partitions' scores into the running lists (the result does not
        depend on how partitions were batched: selection is by (distance, row))."""
        for kind, parts in self._pending.items():
            if parts:
                dist = np.concatenate([d for d, _ in parts], axis=1)
                self._keep(kind, dist, np.concatenate([r for _, r in parts]))
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
        """Fold (queries, columns) distances into the running lists; ``ids`` is the same
        shape, or 1-D: the columns' rows, the same for every query."""
        old_d, old_i = self._best[kind]
        per_column = ids.ndim == 1
        if old_d.shape[1] == self._width:
            # full (and sorted by (distance, row)): only entries before a query's last kept one
            # in that order count, a tie on distance going to the smaller row
            worst_d, worst_i = old_d[:, -1], old_i[:, -1]
            q, c = np.nonzero(dist <= worst_d[:, None])  # one pass; the few ties settled below
            new_i = ids[c] if per_column else ids[q, c]
            ahead = (dist[q, c] < worst_d[q]) | (new_i < worst_i[q])
            q, c, new_i = q[ahead], c[ahead], new_i[ahead]
            if q.size == 0:
                return
            hit = np.unique(q)
            w = self._width
            cat_q = np.concatenate([np.repeat(hit, w), q])
            cat_d = np.concatenate([old_d[hit].ravel(), dist[q, c]])
            cat_i = np.concatenate([old_i[hit].ravel(), new_i])
            order = np.lexsort((cat_i, cat_d, cat_q))  # ties by row: the same whatever the order
            cat_q, cat_d, cat_i = cat_q[order], cat_d[order], cat_i[order]
            keep = (np.arange(cat_q.size) - np.searchsorted(cat_q, cat_q, side="left")) < w
            old_d[hit], old_i[hit] = cat_d[keep].reshape(hit.size, w), cat_i[keep].reshape(hit.size, w)
            return
        cat_d = np.concatenate([old_d, dist], axis=1)
        cat_i = np.concatenate([old_i, np.broadcast_to(ids, dist.shape) if per_column else ids], axis=1)
        w = self._width
        if cat_d.shape[1] >= w:  # by (distance, row): ties never depend on the batching
            # sort only what can be kept: entries up to each query's w-th distance (ties too)
            kth = np.partition(cat_d, w - 1, axis=1)[:, w - 1 : w]
            q, c = np.nonzero(cat_d <= kth)
            d, i = cat_d[q, c], cat_i[q, c]
            order = np.lexsort((i, d, q))
            q, d, i = q[order], d[order], i[order]
            keep = (np.arange(q.size) - np.searchsorted(q, q, side="left")) < w
            cat_d, cat_i = d[keep].reshape(-1, w), i[keep].reshape(-1, w)
        self._best[kind] = (cat_d, cat_i)

    def recall(self, truth: np.ndarray, kind: str = "code") -> dict[str, float] | None:
        """{"10": recall@10, "100": recall@100} of the code ranking (``kind="code"``) or of
        the re-rank on the refinement tier (``"fine"``) against ``truth`` (each query's exact
        neighbours' rows, nearest first, at least the probe's queries); None for "fine" when
        no partition brought a refinement."""
        self._flush()
        truth = truth[: self.queries.shape[0]]
        out = {}
        for k in PROBE_KS:
            name = "code" if kind == "code" else f"fine{k}"
            dist, ids = self._best[name]
            if kind != "code" and not np.isfinite(dist).any():
                return None
            width = min(k, dist.shape[1], truth.shape[1])
            order = np.argsort(dist, axis=1, kind="stable")[:, :width]
            found, exact = np.take_along_axis(ids, order, 1), truth[:, :width]
            hits = _shared(found, exact)
            out[str(k)] = round(float(hits) / max(exact.size, 1), 4)
        return out


def _shared(a: np.ndarray, b: np.ndarray) -> int:
    """Entries of each row of ``a`` found in the same row of ``b`` (rows hold no repeats;
    -1 pads a short list and never counts), summed over rows."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return int(((both[:, 1:] == both[:, :-1]) & (both[:, 1:] >= 0)).sum())


def _fine_products(seg: Segment, fine: Fine, queries: np.ndarray) -> np.ndarray:
    """The refined estimate (m, n) of every row, BLAS form (a probe ranks, it need not agree
    with the direct sums of :func:`~squash.partition_search.fine_distances` to the last bit)."""
    values = fine_values(seg.code, seg.codes8, seg.codes4, fine.fine4)
    coded, rest = refined_query_parts(seg, queries)
    dist = float32_distances(coded, values)
    dist += rest[:, None].astype(np.float32)
    dist += fine.fine_sq[None, :]
    return dist
