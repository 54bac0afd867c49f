"""Worker-side search of one partition for a batch of queries: filter -> (L2) -> L3 -> (L4).

Queries arrive in the index's rotated space. The candidate set is the partition's rows
passing the filter (L0 codes, then the exact predicate on raw values), so a row failing the
predicate is never scored. Then:

* L2 (``levels="all"`` only) keeps the ``sketch_keep`` fraction nearest in Hamming distance
  on the sign sketch;
* L3 scores every remaining candidate on the hot tier's code: one cast/nibble decode of the
  partition and one BLAS product for all the queries routed here (the product form of
  :mod:`squash.osq.scalar`), distance estimate ``|q - x_hat|^2 + |r|^2``;
* L4 scores on float32 rows from the cold tier, only when asked (``rerank``): ``"float32"``
  re-ranks the ``k * rerank_factor`` best estimates of each query, ``"exact"`` scores every
  candidate. Either reads one byte range of the partition's cold file per batch.
  ``"fine"`` re-ranks the same candidates on the refinement tier (:mod:`squash.fine`),
  loaded once per partition and cached: nothing is read on a warm worker.
"""

from __future__ import annotations

import math

import numpy as np

from .attributes import AttributeSpec
from .errors import InputError
from .filter_eval import evaluate, schema_of
from .filters import Node, fields_of
from .fine import Fine
from .osq.scalar import QueryTerms, decode_codes, fine_values, hat_distances
from .osq.sketch import hamming, sign_sketch
from .params import SearchParams
from .refine import ColdTier
from .results import STAT_NAMES, TopK, select_topk
from .segment import Segment

GATHER_BUDGET = 1 << 22  # elements per (queries x rows) block (~16 MB of float32)
SKETCH_FLOOR = 4


def filter_rows(
    seg: Segment, node: Node | None, specs: list[AttributeSpec], dead: np.ndarray | None = None
) -> tuple[int, np.ndarray]:
    """(L0 candidate count, rows passing the exact predicate); ``dead``: the partition's
    deleted rows, never candidates."""
    if dead is not None and dead.size and int(dead.max()) >= seg.size:
        raise InputError(f"deleted rows beyond partition {seg.partition}'s {seg.size} rows", field="dead")
    if node is None:
        rows = (
            np.arange(seg.size) if dead is None or dead.size == 0 else np.setdiff1d(np.arange(seg.size), dead)
        )
        return int(rows.shape[0]), rows
    schema = schema_of(specs)
    table = seg.table().only(fields_of(node))
    mask = evaluate(node, table, schema, "maybe")
    if dead is not None and dead.size:
        mask[dead] = False
    maybe = np.flatnonzero(mask)
    subset = table if maybe.shape[0] == seg.size else table.take(maybe)
    exact = evaluate(node, subset, schema, "exact")
    return int(maybe.shape[0]), maybe[exact]


def code_distances(seg: Segment, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """L3: estimated squared distances (m, len(rows)) from the hot tier's code."""
    whole = rows.shape[0] == seg.size
    c8 = seg.codes8 if whole else seg.codes8[rows]
    c4 = seg.codes4 if whole else seg.codes4[rows]
    values = decode_codes(c8, c4)
    extra = (seg.hat_sq + seg.residual_sq) if whole else (seg.hat_sq[rows] + seg.residual_sq[rows])
    centred = queries - seg.centroid
    terms = QueryTerms.of(centred, seg.code)
    m, n = queries.shape[0], rows.shape[0]
    out = np.empty((m, n), dtype=np.float32)
    step = max(1, GATHER_BUDGET // max(n, 1))
    for start in range(0, m, step):
        end = min(m, start + step)
        part = QueryTerms(terms.scaled[start:end], terms.offset[start:end], terms.sq[start:end])
        # |q - x_hat|^2 + |r|^2, with |x_hat|^2 + |r|^2 added in one go
        out[start:end] = hat_distances(part, values, extra)
    return out


def float32_distances(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Squared L2 (m, n) between queries and float32 rows, BLAS form."""
    q_sq = np.einsum("ij,ij->i", queries, queries)
    x_sq = np.einsum("ij,ij->i", vectors, vectors)
    dist = q_sq[:, None] - 2.0 * (queries @ vectors.T) + x_sq[None, :]
    return np.maximum(dist, 0.0, out=dist).astype(np.float32, copy=False)


def search_partition(
    seg: Segment,
    queries: np.ndarray,
    k: int,
    rows: np.ndarray,
    l0_count: int,
    params: SearchParams,
    select: bool = True,
    cold: ColdTier | None = None,
) -> TopK:
    """Top-k of ``queries`` (m, d) among ``rows`` of ``seg``; stats per query.

    ``select=False`` returns every scored candidate's distance unselected (a small batch
    merges them all at once, cheaper than a selection per partition)."""
    m = queries.shape[0]
    n_c = rows.shape[0]
    stats = np.zeros((m, len(STAT_NAMES)), dtype=np.int64)
    stats[:, 0] = 1
    stats[:, 1] = l0_count
    stats[:, 2] = n_c
    if n_c == 0:
        return _empty(m, k, stats)
    rerank = "none" if params.rerank == "auto" else params.rerank  # the planner resolves auto
    if rerank == "exact":
        stats[:, 3:6] = n_c
        # centred on the partition: the BLAS form's cancellation error scales with the norms
        dist = float32_distances(queries - seg.centroid, _cold(cold).rows(seg, rows) - seg.centroid)
        ids = np.broadcast_to(seg.ids_of(rows), dist.shape)
        return select_topk(ids, dist, k, stats) if select else TopK(ids, dist, stats)

    stats[:, 3] = n_c
    # The sketch is coarse: it only thins large candidate sets, never below SKETCH_FLOOR x
    # the re-rank depth (a rare filter's few candidates are all scored on the code).
    keep2 = max(SKETCH_FLOOR * k * params.rerank_factor, math.ceil(params.sketch_keep * n_c))
    if params.levels == "all" and keep2 < n_c:
        # L2: each query keeps its keep2 nearest rows in Hamming distance; the code is then
        # decoded and scored only for rows some query kept (a few queries: far fewer rows).
        centred = queries - seg.centroid
        bits = seg.sketch_dims.shape[0]
        ham = hamming(sign_sketch(centred[:, seg.sketch_dims], bits), seg.sketch[rows])
        kept = np.zeros((m, n_c), dtype=bool)
        np.put_along_axis(kept, np.argpartition(ham, keep2 - 1, axis=1)[:, :keep2], True, axis=1)
        union = np.flatnonzero(kept.any(axis=0))
        rows, kept = rows[union], kept[:, union]
        dist = code_distances(seg, queries, rows)
        dist[~kept] = np.inf
        stats[:, 3] = keep2
    else:
        dist = code_distances(seg, queries, rows)
    stats[:, 4] = stats[:, 3]  # every row L2 kept is scored on the code
    n_c = rows.shape[0]
    ids = np.broadcast_to(seg.ids_of(rows), dist.shape)
    if rerank not in ("float32", "fine"):
        return select_topk(ids, dist, k, stats) if select else TopK(ids, dist, stats)

    # L4: the best k * rerank_factor estimates of each query, re-scored on float32 (cold
    # tier) or on the refined code (the resident refinement tier).
    width = min(n_c, k * params.rerank_factor)
    cand = (
        np.argpartition(dist, width - 1, axis=1)[:, :width]
        if width < n_c
        else np.broadcast_to(np.arange(n_c), (m, n_c))
    )
    union, inverse = np.unique(cand, return_inverse=True)
    if rerank == "fine":
        exact = fine_distances(seg, _cold(cold).fine(seg), queries, rows[union], inverse.reshape(cand.shape))
    else:
        exact = _direct_distances(queries, _cold(cold).rows(seg, rows[union]), inverse.reshape(cand.shape))
    exact = np.where(np.isinf(np.take_along_axis(dist, cand, axis=1)), np.float32(np.inf), exact)
    stats[:, 5] = width
    return select_topk(seg.ids_of(rows[cand]), exact.astype(np.float32), k, stats)


def _direct_distances(queries: np.ndarray, vectors: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Squared L2 (m, w) from query i to ``vectors[which[i, j]]`` as a sum of squared
    differences: no cancellation error (a stored row queried gives 0), and the same value
    whatever else was scored with it (in-process and tree answers agree)."""
    m, width = which.shape
    out = np.empty((m, width), dtype=np.float32)
    step = max(1, GATHER_BUDGET // max(1, width * vectors.shape[1]))
    for start in range(0, m, step):
        end = min(m, start + step)
        diff = vectors[which[start:end]]
        diff -= queries[start:end, None, :]
        out[start:end] = np.einsum("mwd,mwd->mw", diff, diff)
    return out


def fine_distances(
    seg: Segment, fine: Fine, queries: np.ndarray, rows: np.ndarray, which: np.ndarray
) -> np.ndarray:
    """Estimated squared distances (m, w) from query i to row ``rows[which[i, j]]`` of
    ``seg`` on the refined code: ``|q - x_fine|^2 + |v - x_fine|^2``, the first term summed
    directly over the coded axes (no cancellation error, the same value whatever else is
    scored with it) plus the query's energy on the uncoded axes."""
    values = fine_values(seg.code, seg.codes8[rows], seg.codes4[rows], fine.fine4[rows])
    coded, rest = refined_query_parts(seg, queries)
    out = _direct_distances(coded, values, which)
    out += rest[:, None]
    out += fine.fine_sq[rows][which]
    return out


def refined_query_parts(seg: Segment, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Queries centred on ``seg``'s partition, split as the refined estimate needs them:
    (their coordinates on the coded axes (m, K), their energy on the uncoded axes (m,))."""
    centred = queries - seg.centroid
    coded = np.ascontiguousarray(centred[:, seg.code.dims])
    rest = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", coded, coded)
    return coded, np.maximum(rest, 0.0)


def _cold(cold: ColdTier | None) -> ColdTier:
    if cold is None:
        raise ValueError("float32 scoring needs the cold tier (pass cold=ColdTier(storage))")
    return cold


def _empty(m: int, k: int, stats: np.ndarray) -> TopK:
    out = TopK.empty(m, k)
    out.stats = stats
    return out
