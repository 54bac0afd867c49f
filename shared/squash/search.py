"""Search a set of partitions for a batch of queries and merge: the unit of work of one
worker (in-process search runs it over every planned partition).

Two executions: the routed one searches each ``(partition, queries)`` pair with the levels
of :mod:`squash.partition_search`; the exact scan (the planner's ``exact`` plan) scores every
candidate row of the partitions for every query, gathering small or filtered partitions into
blocks so that one BLAS product covers many partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .attributes import AttributeSpec
from .filters import Node
from .params import SearchParams
from .partition_search import GATHER_BUDGET, filter_rows, search_partition
from .results import STAT_NAMES, TopK, merge, merge_rows, select_topk
from .segment import Segment

EXACT_BLOCK_ROWS = 8192  # candidate rows gathered before one product (32 MB at d = 1024)


def search_partitions(
    load: Callable[[int], Segment],
    assignments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    node: Node | None,
    specs: list[AttributeSpec],
    params: SearchParams,
) -> TopK:
    """Search each ``(partition, query indices)`` pair and merge into one TopK over all queries.

    With ``params.plan == "exact"`` the pairs that cover the whole batch go through the
    exact scan (the result is the same set a per-partition exact search would give).
    """
    q = queries.shape[0]
    parts: list[TopK] = []
    pending = list(assignments)
    if params.plan == "exact":
        whole = [p for p, qidx in pending if qidx.size == q]
        pending = [(p, qidx) for p, qidx in pending if qidx.size != q]
        if whole:
            parts.append(exact_scan(load, whole, queries, k, node, specs))
    pieces = []
    for partition, qidx in pending:
        if qidx.size == 0:
            continue
        seg = load(partition)
        l0, rows = filter_rows(seg, node, specs)
        pieces.append((qidx, search_partition(seg, queries[qidx], k, rows, l0, params)))
    if pieces:
        parts.append(merge_rows(pieces, q, k))
    if not parts:
        return TopK.empty(q, k)
    return parts[0] if len(parts) == 1 else merge(parts, k)


def exact_scan(
    load: Callable[[int], Segment],
    partitions: Iterable[int],
    queries: np.ndarray,
    k: int,
    node: Node | None,
    specs: list[AttributeSpec],
) -> TopK:
    """Exact top-k of every query over every row of ``partitions`` passing the filter.

    Candidate rows are scored in blocks of about ``EXACT_BLOCK_ROWS`` (a big whole partition
    is its own block, without a copy); each block keeps its k best per query and one
    selection at the end merges the blocks.
    """
    q = queries.shape[0]
    q_sq = np.einsum("ij,ij->i", queries, queries)
    stats = np.zeros((q, len(STAT_NAMES)), dtype=np.int64)
    kept_ids: list[np.ndarray] = []  # per block: (q, <= k)
    kept_dist: list[np.ndarray] = []
    block: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0

    def score(vectors: np.ndarray, sq: np.ndarray, ids: np.ndarray) -> None:
        n = ids.shape[0]
        width = min(k, n)
        block_ids = np.empty((q, width), dtype=np.int64)
        block_dist = np.empty((q, width), dtype=np.float32)
        step = max(1, GATHER_BUDGET // max(1, n))
        for start in range(0, q, step):
            end = min(q, start + step)
            if n > k:  # select with the BLAS form, keep k per query of this block
                dist = q_sq[start:end, None] - 2.0 * (queries[start:end] @ vectors.T) + sq[None, :]
                top = np.argpartition(dist, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(n), (end - start, n))
            block_ids[start:end] = ids[top]
            block_dist[start:end] = _direct_distances(queries[start:end], vectors, top)
        kept_ids.append(block_ids)
        kept_dist.append(block_dist)

    def flush() -> None:
        nonlocal block, held
        if block:
            score(*(np.concatenate(parts) for parts in zip(*block, strict=True)))
        block, held = [], 0

    for partition in partitions:
        seg = load(partition)
        l0, rows = filter_rows(seg, node, specs)
        stats[:, 0] += 1
        stats[:, 1] += l0
        stats[:, 2:6] += rows.shape[0]
        if rows.shape[0] == 0:
            continue
        if rows.shape[0] == seg.size and seg.size >= EXACT_BLOCK_ROWS // 2:
            score(seg.vectors, seg.sq_norms, seg.ids)  # big and whole: no copy
            continue
        block.append((seg.vectors[rows], seg.sq_norms[rows], seg.ids[rows]))
        held += rows.shape[0]
        if held >= EXACT_BLOCK_ROWS:
            flush()
    flush()
    if not kept_ids:
        out = TopK.empty(q, k)
        out.stats = stats
        return out
    return select_topk(np.concatenate(kept_ids, axis=1), np.concatenate(kept_dist, axis=1), k, stats)


def _direct_distances(queries: np.ndarray, vectors: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared L2 as the sum of squared differences of each query and its ``cols`` (m, c) rows.

    Selection uses the BLAS form (fast, but its rounding depends on the block it ran in);
    the distances returned are computed directly, so an answer does not depend on how the
    rows were grouped (in-process vs per worker) and has no cancellation error.
    """
    m, c = cols.shape
    out = np.empty((m, c), dtype=np.float32)
    step = max(1, GATHER_BUDGET // max(1, c * vectors.shape[1]))
    for start in range(0, m, step):
        diff = vectors[cols[start : start + step]] - queries[start : start + step, None, :]
        out[start : start + step] = np.einsum("mcd,mcd->mc", diff, diff)
    return out
