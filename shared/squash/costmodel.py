"""The planner's cost model: seconds of one core for a routed plan and for a full scan.

Both plans score candidates on the hot tier's code with BLAS products (:func:`scan_seconds`
is the routed cost with every query visiting every partition that may match); they differ
in how many (query, row) pairs they score and in fixed costs. Per partition a plan touches,
the rows are decoded once (``C_STREAM`` per value, plus ``C_GATHER`` when a filter makes it
copy rows; fitted on float32 rows, which the byte/nibble decode costs about as much as),
every query routed there costs ``C_MAC`` per multiply-add and ``C_SELECT`` per scored row
(top-k selection), and the partition itself a fixed Python/numpy overhead (``C_PART``, plus
``C_FILTER_PART`` when a filter is evaluated and rechecked there; ``C_PART_EXACT`` in the
pooled scan). The routed plan's total is scaled by ``ROUTED_CODE_FACTOR``, measured when
scoring moved to the code (the constants are from the float32 path). The constants were
fitted on the team machine (2-core VM, one BLAS thread, numpy 2.4.6 / OpenBLAS, 2026-12-01)
by ``bench/fit_cost.py``; see README, "Planning to a recall target". Only ratios matter to
the choice, so a faster or slower machine of the same kind picks the same plans.
"""

from __future__ import annotations

import numpy as np

from .search import EXACT_TIE_MARGIN, FEW_MIN_VALUES, SMALL_BATCH

C_MAC = 0.022e-9  # s per multiply-add in a batched product (float32 GEMM)
C_STREAM = 0.4e-9  # s per float of a candidate matrix streamed once (dominates one query)
C_GATHER = 0.9e-9  # s per float copied when a filter gathers candidate rows
C_SELECT = 7.2e-9  # s per (query, row) distance through top-k selection
C_PAIR = 1.8e-6  # s per (query, partition) pair: query gather, top-k rows, merge
C_PART = 84e-6  # s per partition a routed plan searches
C_FILTER_PART = 100e-6  # ... plus this when a filter is evaluated and rechecked per partition
C_PART_EXACT = 90e-6  # s per partition the pooled scan rechecks and gathers
C_FIXED_EXACT = 30e-6  # s per batch for the pooled scan's setup
C_REBUILD = 6.5e-9  # s per value the pooled scan rebuilds d wide from the code, beyond streaming
C_DIRECT = 1.1e-9  # s per (query, candidate, dimension) of the final direct re-scoring
#: Measured / modelled time of the routed plan once it scores on the code (per-partition
#: decode, gathers of code rows, query terms): 1.55-2.1x on manpages, the tuning set.
ROUTED_CODE_FACTOR = 1.8
C_PLAN = 71e-9  # s per (query, partition) of routing work besides the centroid product (sorts)


def planning_seconds(queries: int, partitions: int, dims: int) -> float:
    """Routing's own cost: centroid distances and their ordering (the exact scan needs neither)."""
    return queries * partitions * (dims * C_MAC + C_PLAN)


def scoring_seconds(pairs: float, dims: int) -> float:
    """Scoring ``pairs`` (query, row) distances in batched products, selection included."""
    return pairs * (dims * C_MAC + C_SELECT)


def routed_seconds(visit: np.ndarray, rows: np.ndarray, dims: int, filtered: bool) -> float:
    """A routed plan: ``visit`` (Q, P) bool, ``rows`` (P,) candidate rows per partition."""
    m = visit.sum(axis=0).astype(np.float64)  # queries per partition
    used = m > 0
    r = rows.astype(np.float64)
    stream = C_STREAM + (C_GATHER if filtered else 0.0)
    per_part = (
        C_PART
        + (C_FILTER_PART if filtered else 0.0)
        + r * dims * stream
        + m * r * (dims * C_MAC + C_SELECT)
        + m * C_PAIR
    )
    return ROUTED_CODE_FACTOR * float(per_part[used].sum())


def scan_seconds(queries: int, rows: np.ndarray, dims: int, filtered: bool, k: int = 10) -> float:
    """The pooled scan (:func:`squash.search.exact_scan`): every candidate row (``rows``
    (P,) per partition) rebuilt from the code in blocks and scored for the whole batch, and
    each query's best ``k`` + a margin re-scored directly. The rebuild and re-scoring terms
    (``bench/fit_cost.py``, 2026-12-02): without them the model priced a Fashion-MNIST 10 %
    batch's scan at 165 ms (now 206; ~205 measured), below a routed plan that ran ~18 %
    faster."""
    r = rows.astype(np.float64)
    total = float(r.sum())
    stream = C_STREAM + (C_GATHER if filtered else 0.0)
    parts = int(np.count_nonzero(r))
    # a small batch scores big partitions on the code's product form: nothing rebuilt there
    few = queries <= SMALL_BATCH
    rebuilt = float(r[r * dims < FEW_MIN_VALUES].sum()) if few else total
    return (
        C_FIXED_EXACT
        + C_PART_EXACT * parts
        + total * dims * stream
        + rebuilt * dims * C_REBUILD
        + queries * total * (dims * C_MAC + C_SELECT)
        + queries * min(k + EXACT_TIE_MARGIN, total) * dims * C_DIRECT
        + queries * C_PAIR
    )
