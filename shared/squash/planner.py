"""Coordinator-side planning: L0 quantized-attribute filter and L1 centroid routing.

L0 evaluates the filter on quantized codes twice: ``maybe`` (a superset of the matches)
tells which partitions are worth visiting, ``sure`` (a subset) tells how many matches a
partition is guaranteed to return. L1 then visits, per query, the partitions close to the
query (``routing_factor``) and more in centroid order until at least ``max(k,
min_candidates, min_partitions x average sure matches per partition)`` sure matches are
covered — or every partition that may match, when fewer than k matches are sure. One
pass, never a second round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filters import Node, evaluate
from .params import SearchParams
from .router import Router


@dataclass
class Plan:
    """visit[q, p]: query q searches partition p."""

    visit: np.ndarray  # (Q, P) bool
    maybe_counts: np.ndarray  # (P,) L0 superset per partition
    sure_counts: np.ndarray  # (P,) L0 subset per partition

    @property
    def partitions(self) -> np.ndarray:
        """Partitions visited by at least one query."""
        return np.flatnonzero(self.visit.any(axis=0))

    def queries_of(self, partition: int) -> np.ndarray:
        return np.flatnonzero(self.visit[:, partition])


def count_matches(router: Router, node: Node | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-partition counts of rows that may / surely match (L0)."""
    if node is None:
        sizes = np.diff(router.offsets)
        return sizes, sizes
    starts = router.offsets[:-1]
    counts = []
    for mode in ("maybe", "sure"):
        mask = evaluate(node, router.attr_codes, router.specs, mode, router.n)
        cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        counts.append(cum[router.offsets[1:]] - cum[starts])
    return counts[0], counts[1]


def centroid_distances(router: Router, queries: np.ndarray) -> np.ndarray:
    """Squared L2 distances (Q, P) from queries to partition centroids."""
    q_sq = np.einsum("ij,ij->i", queries, queries)
    d2 = q_sq[:, None] - 2.0 * (queries @ router.centroids.T) + router.centroid_sq[None, :]
    return np.maximum(d2, 0.0)


def plan_queries(
    router: Router, queries: np.ndarray, k: int, node: Node | None, params: SearchParams
) -> Plan:
    """Decide which partitions each query visits (vectorised over queries and partitions)."""
    maybe, sure = count_matches(router, node)
    q = queries.shape[0]
    d2 = centroid_distances(router, queries)
    d2 = np.where(maybe[None, :] > 0, d2, np.inf)  # nothing to find there
    order = np.argsort(d2, axis=1, kind="stable")
    sorted_d = np.take_along_axis(d2, order, axis=1)
    near = np.sqrt(sorted_d) <= params.routing_factor * np.sqrt(sorted_d[:, :1])
    if params.max_partitions:
        near[:, params.max_partitions :] = False
    total_sure = int(sure.sum())
    if total_sure < k:
        # Fewer than k guaranteed matches: every partition that may hold one is searched.
        visit_sorted = np.isfinite(sorted_d)
    else:
        per_partition = total_sure / router.partitions  # average sure matches per partition
        target = min(total_sure, max(k, params.min_candidates, params.min_partitions * per_partition))
        covered_before = np.cumsum(sure[order], axis=1) - sure[order]
        visit_sorted = (near | (covered_before < target)) & np.isfinite(sorted_d)
    visit = np.zeros((q, router.partitions), dtype=bool)
    np.put_along_axis(visit, order, visit_sorted, axis=1)
    return Plan(visit, maybe, sure)
