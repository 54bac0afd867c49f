"""Worker-side search of one partition for a batch of queries: L2 -> L3 -> L4.

The candidate set is the partition's rows passing the filter (L0 codes, then the exact
predicate on raw values), so a row failing the predicate is never scored. Then:
L2 keeps the ``sketch_keep`` fraction nearest in Hamming distance on the sign sketch,
L3 keeps the ``k * rerank_factor`` smallest OSQ lower bounds (dimensional extraction and
per-query lookup tables), L4 computes exact distances and keeps the top k.
"""

from __future__ import annotations

import math

import numpy as np

from .attributes import AttributeSpec
from .filters import Node, evaluate
from .osq.bounds import lut_sum, residual_norms, residual_terms
from .osq.packing import extract_codes
from .osq.sketch import hamming, sign_sketch
from .params import SearchParams
from .results import STAT_NAMES, TopK, select_topk
from .segment import Segment

GATHER_BUDGET = 1 << 22  # elements per vectorised gather chunk (~16 MB of float32)
GATHER_COST = 8  # one numpy table gather ~ this many BLAS multiply-adds (single query, 1 core)


def filter_rows(seg: Segment, node: Node | None, specs: list[AttributeSpec]) -> tuple[int, np.ndarray]:
    """(L0 candidate count, rows passing the exact predicate)."""
    if node is None:
        return seg.size, np.arange(seg.size)
    maybe = np.flatnonzero(evaluate(node, seg.attr_codes, specs, "maybe", seg.size))
    raw = {name: col[maybe] for name, col in seg.attr_raw.items()}
    exact = evaluate(node, raw, specs, "exact", maybe.shape[0])
    return int(maybe.shape[0]), maybe[exact]


def search_partition(
    seg: Segment,
    queries: np.ndarray,
    k: int,
    rows: np.ndarray,
    l0_count: int,
    params: SearchParams,
    select: bool = True,
) -> TopK:
    """Top-k of ``queries`` (m, d) among ``rows`` of ``seg``; stats per query.

    ``select=False`` lets the exact re-rank return every candidate's distance unselected
    (a small batch merges them all at once, cheaper than a selection per partition)."""
    m = queries.shape[0]
    n_c = rows.shape[0]
    stats = np.zeros((m, len(STAT_NAMES)), dtype=np.int64)
    stats[:, 0] = 1
    stats[:, 1] = l0_count
    stats[:, 2] = n_c
    if n_c == 0:
        return _empty(m, k, stats)

    keep3 = min(n_c, k * params.rerank_factor)
    keep2 = min(n_c, max(keep3, math.ceil(params.sketch_keep * n_c)))
    if params.levels == "exact" or (params.levels == "auto" and _exact_is_cheaper(seg, n_c, keep2, keep3)):
        return _exact(seg, queries, k, rows, stats, select)

    q_rot = (queries - seg.mean) @ seg.rotation  # (m, kept)

    # L2: Hamming distance on the sign sketch.
    if keep2 < n_c:
        q_sketch = sign_sketch(q_rot, seg.sketch_bits)
        ham = hamming(q_sketch, seg.sketch[rows])
        sel = np.argpartition(ham, keep2 - 1, axis=1)[:, :keep2]  # (m, keep2) into rows
    else:
        sel = np.broadcast_to(np.arange(n_c), (m, n_c))
    stats[:, 3] = keep2

    # L3: OSQ lower bound from the codes (dimensional extraction + lookup tables).
    if keep3 < keep2:
        sel = sel[np.arange(m)[:, None], _smallest_lower_bounds(seg, queries, q_rot, rows, sel, keep3)]
    stats[:, 4] = keep3

    # L4: exact distances on full-precision vectors.
    cand = rows[sel]  # (m, keep3) partition rows
    dots = np.einsum("md,mcd->mc", queries, seg.vectors[cand], optimize=True)
    q_sq = np.einsum("ij,ij->i", queries, queries)
    dist = np.maximum(q_sq[:, None] - 2.0 * dots + seg.sq_norms[cand], 0.0).astype(np.float32)
    stats[:, 5] = keep3
    return select_topk(seg.ids[cand], dist, k, stats)


def _exact_is_cheaper(seg: Segment, n_c: int, keep2: int, keep3: int) -> bool:
    """Whether one BLAS product over all candidates beats L2 -> L3 -> L4 on them.

    Per query, L4 alone costs ``n_c * d`` multiply-adds in BLAS; the levels cost a sketch
    pass, ``keep2 * S`` table gathers for L3 and ``keep3 * d`` for the re-rank. A numpy
    gather costs about GATHER_COST multiply-adds (measured, see README "Benchmarks"), so
    with resident full-precision vectors the levels pay only for large partitions of
    low-dimensional data.
    """
    d, coded = seg.vectors.shape[1], seg.rotation.shape[1]
    return n_c * d <= GATHER_COST * keep2 * coded + keep3 * d


def _exact(
    seg: Segment, queries: np.ndarray, k: int, rows: np.ndarray, stats: np.ndarray, select: bool = True
) -> TopK:
    """L4 on every candidate: one GEMM per chunk of queries over the candidates' vectors."""
    n_c = rows.shape[0]
    vectors = seg.vectors if n_c == seg.size else seg.vectors[rows]
    sq = seg.sq_norms if n_c == seg.size else seg.sq_norms[rows]
    ids = seg.ids if n_c == seg.size else seg.ids[rows]
    stats[:, 3:6] = n_c
    m = queries.shape[0]
    q_sq = np.einsum("ij,ij->i", queries, queries)
    step = max(1, GATHER_BUDGET // n_c)
    parts = []
    for start in range(0, m, step):
        end = min(m, start + step)
        dist = q_sq[start:end, None] - 2.0 * (queries[start:end] @ vectors.T) + sq[None, :]
        dist = np.maximum(dist, 0.0, out=dist).astype(np.float32, copy=False)
        if not select:
            parts.append(TopK(np.broadcast_to(ids, dist.shape), dist, stats[start:end]))
            continue
        parts.append(select_topk(np.broadcast_to(ids, dist.shape), dist, k, stats[start:end]))
    if len(parts) == 1:
        return parts[0]
    return TopK(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "distances", "stats")))


def _smallest_lower_bounds(
    seg: Segment,
    queries: np.ndarray,
    q_rot: np.ndarray,
    rows: np.ndarray,
    sel: np.ndarray,
    keep: int,
) -> np.ndarray:
    """Positions (m, keep) within ``sel`` of the ``keep`` smallest OSQ lower bounds."""
    m, width = sel.shape
    table = seg.table
    positions = table.index(extract_codes(seg.codes[:, rows], seg.widths))  # (kept, n_c)
    q_res = residual_norms(queries - seg.mean, q_rot)
    x_res = seg.residual[rows]
    out = np.empty((m, keep), dtype=np.int64)
    step = max(1, GATHER_BUDGET // max(1, positions.shape[0] * width, table.lo.shape[0]))
    for start in range(0, m, step):  # chunks of queries, bounded memory
        end = min(m, start + step)
        chunk_sel = sel[start:end]
        lb = lut_sum(table.lower(q_rot[start:end]), positions[:, chunk_sel].transpose(1, 0, 2))
        lb += residual_terms(q_res[start:end], x_res[chunk_sel])[0]
        out[start:end] = np.argpartition(lb, keep - 1, axis=1)[:, :keep]
    return out


def _empty(m: int, k: int, stats: np.ndarray) -> TopK:
    out = TopK.empty(m, k)
    out.stats = stats
    return out
