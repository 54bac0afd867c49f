"""Search a set of partitions for a batch of queries and merge: the unit of work of one
worker (in-process search runs it over every planned partition).

Two executions: each ``(partition, queries)`` pair is searched with the levels of
:mod:`squash.partition_search` (on the hot tier's code, re-ranked on float32 when asked);
the exact scan (``rerank="exact"``, e.g. ``target_recall=1``) scores every candidate row of
the partitions for every query on float32 rows from the cold tier, gathering small or
filtered partitions into blocks so that one BLAS product covers many partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .attributes import AttributeSpec
from .filters import Node
from .osq.scalar import reconstruct
from .params import SearchParams
from .partition_search import GATHER_BUDGET, code_distances, filter_rows, search_partition
from .refine import ColdTier
from .results import STAT_NAMES, TopK, merge, merge_flat, merge_rows, select_topk
from .segment import Segment

SMALL_BATCH = 4  # queries; up to this, per-partition distances are merged unselected
#: a small batch scores a partition of at least this many candidate values (rows x d) on the
#: code's product form instead of pooling it (measured on the tuning set manpages, one query:
#: 173 rows x 384 d, 1.7x faster; 87 rows, 0.94x)
FEW_MIN_VALUES = 48_000
EXACT_BLOCK_ROWS = 8192  # candidate rows gathered before one product (32 MB at d = 1024)


def search_partitions(
    load: Callable[[int], Segment],
    assignments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    node: Node | None,
    specs: list[AttributeSpec],
    params: SearchParams,
    cold: ColdTier | None = None,
    dead: Callable[[int], np.ndarray | None] | None = None,
) -> TopK:
    """Search each ``(partition, query indices)`` pair and merge into one TopK over all queries.

    ``queries`` are in the index's rotated space. With ``params.rerank == "exact"`` the pairs
    that cover the whole batch go through the exact scan (the result is the same set a
    per-partition exact search would give). ``cold`` reads float32 rows when asked for;
    ``dead(partition)`` gives its deleted rows (never candidates).
    """
    dead = dead or (lambda p: None)
    q = queries.shape[0]
    parts: list[TopK] = []
    pending = list(assignments)
    pooled = pooled_scan(params)
    if pooled is not None:
        whole = [p for p, qidx in pending if qidx.size == q]
        pending = [(p, qidx) for p, qidx in pending if qidx.size != q]
        if whole:
            rows_of = lambda seg: filter_rows(seg, node, specs, dead(seg.partition))  # noqa: E731
            parts.append(exact_scan(load, whole, queries, k, rows_of, cold, pooled))
    small = q <= SMALL_BATCH  # one sort of all candidates beats a selection per partition
    pieces = []
    for partition, qidx in pending:
        if qidx.size == 0:
            continue
        seg = load(partition)
        l0, rows = filter_rows(seg, node, specs, dead(partition))
        pieces.append((qidx, search_partition(seg, queries[qidx], k, rows, l0, params, not small, cold)))
    if pieces:
        parts.append((merge_flat if small else merge_rows)(pieces, q, k))
    if not parts:
        return TopK.empty(q, k)
    return parts[0] if len(parts) == 1 else merge(parts, k)


def pooled_scan(params: SearchParams) -> str | None:
    """What the pooled scan scores on for these params ("float32", "code"), or None when
    the pairs are searched one partition at a time: every candidate of an ``exact`` plan is
    scored in pooled blocks; a routed plan, or a float32 re-rank, goes per partition."""
    if params.rerank == "exact":
        return "float32"
    if params.plan == "exact" and params.rerank in ("none", "auto") and params.levels == "auto":
        return "code"
    return None


def exact_scan(
    load: Callable[[int], Segment],
    partitions: Iterable[int],
    queries: np.ndarray,
    k: int,
    rows_of: Callable[[Segment], tuple[int, np.ndarray]],
    cold: ColdTier | None,
    on: str = "float32",
) -> TopK:
    """Top-k of every query over every candidate row of ``partitions``: exact on float32
    rows from the cold tier (``on="float32"``), or the code's estimate (``on="code"``: rows
    rebuilt from the hot tier, plus each row's residual ``|r|^2``).

    ``rows_of(segment)`` gives (L0 candidates, rows passing the filter) of a partition:
    :func:`~squash.partition_search.filter_rows` on a worker, a slice of one filter pass over
    the whole index in-process.

    Each partition's candidate rows come from the cold tier in one range read (or from the
    code, decoded). They are scored in blocks of about ``EXACT_BLOCK_ROWS`` (a big partition
    is its own block) with the BLAS form of the distance; each block keeps its k best per
    query. The k chosen over all blocks then get their distance computed
    directly (sum of squared differences): the BLAS form's rounding depends on the block a
    row was scored in, so without this an answer would depend on how rows were grouped
    (in-process vs per worker of the tree).
    """
    q = queries.shape[0]
    q_sq = np.einsum("ij,ij->i", queries, queries)
    stats = np.zeros((q, len(STAT_NAMES)), dtype=np.int64)
    blocks: list[tuple[np.ndarray, np.ndarray]] = []  # per scored block: vectors, extra term
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per block: ids, BLAS dist, rows
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0

    def score(vectors: np.ndarray, sq: np.ndarray, ids: np.ndarray, extra: np.ndarray) -> None:
        """Keep each query's k best of a block's rows."""
        n = ids.shape[0]
        width = min(k, n)
        rows = np.empty((q, width), dtype=np.int64)
        dist = np.empty((q, width), dtype=np.float32)
        step = max(1, GATHER_BUDGET // max(1, ids.shape[0]))
        for start in range(0, q, step):
            end = min(q, start + step)
            d = q_sq[start:end, None] - 2.0 * (queries[start:end] @ vectors.T) + sq[None, :]
            top = np.argpartition(d, k - 1, axis=1)[:, :k] if n > k else np.arange(n)[None, :]
            top = np.broadcast_to(top, (end - start, width))
            rows[start:end] = top
            dist[start:end] = np.take_along_axis(d, top, axis=1)
        blocks.append((vectors, extra))
        kept.append((ids[rows], dist, rows))

    def flush() -> None:
        nonlocal pending, held
        if pending:
            score(*(np.concatenate(parts) for parts in zip(*pending, strict=True)))
        pending, held = [], 0

    few = on == "code" and q <= SMALL_BATCH
    for partition in partitions:
        seg = load(partition)
        l0, rows = rows_of(seg)
        stats[:, 0] += 1
        stats[:, 1] += l0
        stats[:, 2:6] += rows.shape[0]
        if rows.shape[0] == 0:
            continue
        if few and rows.shape[0] * seg.dims >= FEW_MIN_VALUES:
            # a few queries, many rows: the code's product form costs a decode, where the
            # pooled scan would rebuild every row d wide for one product
            blocks.append(_few_best(seg, rows, queries, k + EXACT_TIE_MARGIN, kept))
            continue
        if on == "code":
            vectors = reconstruct(seg.code, seg.codes8[rows], seg.codes4[rows], seg.centroid)
            extra = seg.residual_sq[rows]
        elif cold is None:
            raise ValueError("the exact scan needs the cold tier (pass cold=ColdTier(storage))")
        else:
            vectors, extra = cold.rows(seg, rows), np.zeros(rows.shape[0], np.float32)
        sq = np.einsum("ij,ij->i", vectors, vectors) + extra
        if rows.shape[0] >= EXACT_BLOCK_ROWS // 2:
            score(vectors, sq, seg.ids[rows], extra)
            continue
        pending.append((vectors, sq, seg.ids[rows], extra))
        held += rows.shape[0]
        if held >= EXACT_BLOCK_ROWS:
            flush()
    flush()
    if not kept:
        out = TopK.empty(q, k)
        out.stats = stats
        return out
    ids = np.concatenate([c[0] for c in kept], axis=1)
    dist = np.concatenate([c[1] for c in kept], axis=1)
    rows = np.concatenate([c[2] for c in kept], axis=1)
    which = np.concatenate([np.full(c[0].shape[1], b) for b, c in enumerate(kept)])
    # A margin above the k-th BLAS distance keeps near-ties, whatever block they came from.
    chosen = _k_smallest(dist, min(dist.shape[1], k + EXACT_TIE_MARGIN))
    ids, rows = np.take_along_axis(ids, chosen, axis=1), np.take_along_axis(rows, chosen, axis=1)
    direct = _direct_distances(queries, blocks, which[chosen], rows)
    return select_topk(ids, direct, k, stats)


EXACT_TIE_MARGIN = 2  # extra candidates re-scored directly, so BLAS rounding cannot pick the k


def _few_best(
    seg: Segment, rows: np.ndarray, queries: np.ndarray, width: int, kept: list
) -> tuple[np.ndarray, np.ndarray]:
    """One partition of a small batch's scan on the code: the product-form estimate of
    every candidate row (a decode, as a routed search does), each query's ``width`` best
    appended to ``kept``; returns the block of just those rows rebuilt (vectors, residual
    term) for the direct distances, which are then those of the pooled scan bit for bit."""
    dist = code_distances(seg, queries, rows)
    n = rows.shape[0]
    if n > width:
        top = np.argpartition(dist, width - 1, axis=1)[:, :width]
    else:
        top = np.broadcast_to(np.arange(n), (queries.shape[0], n))
    picked = rows[top.ravel()]  # (a row two queries keep is rebuilt twice: a few at most)
    local = np.arange(picked.shape[0]).reshape(top.shape)
    kept.append((seg.ids_of(picked).reshape(top.shape), np.take_along_axis(dist, top, axis=1), local))
    vectors = reconstruct(seg.code, seg.codes8[picked], seg.codes4[picked], seg.centroid)
    return vectors, seg.residual_sq[picked]


def _k_smallest(dist: np.ndarray, width: int) -> np.ndarray:
    """Column positions (q, width) of each row's ``width`` smallest values (unordered)."""
    if width >= dist.shape[1]:
        return np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    return np.argpartition(dist, width - 1, axis=1)[:, :width]


def _direct_distances(
    queries: np.ndarray, blocks: list[tuple[np.ndarray, np.ndarray]], block: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Squared L2 as the sum of squared differences between each query and its candidates
    (``blocks[block[i, j]]`` row ``rows[i, j]``, plus its extra term): independent of
    grouping, no cancellation error."""
    out = np.empty(rows.shape, dtype=np.float32)
    for j in range(rows.shape[1]):  # one column at a time: (q, d) temporaries, queries not gathered
        bj, rj = block[:, j], rows[:, j]
        for b in np.unique(bj):
            sel = slice(None) if bj[0] == bj[-1] == b and (bj == b).all() else bj == b
            vectors, extra = blocks[b]
            diff = vectors[rj[sel]]
            diff -= queries[sel]
            out[sel, j] = np.einsum("md,md->m", diff, diff) + extra[rj[sel]]
    return out
