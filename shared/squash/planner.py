"""Coordinator-side planning: L0 quantized-attribute filter, L1 routing, and the plan choice.

L0 evaluates the filter on quantized codes twice: ``maybe`` (a superset of the matches)
tells which partitions are worth visiting, ``sure`` (a subset) how many matches a partition
is guaranteed to return.

L1, calibrated (the default): each query visits the partitions whose routing score (see
:mod:`squash.calibration`) is within the threshold that the index's calibration gives for
the target recall at this filter's selectivity and k — then more, in centroid order, until
the calibrated number of matches is covered when a filter is given, and at least k sure
matches always (every partition that may match when fewer than k are sure). One pass,
never a second round. With an expert routing knob, or on an index without
calibration, the fixed rule of :class:`~squash.params.SearchParams` applies instead.

Plan choice: a scan of every candidate row (``exact``) is a plan too. With ``plan="auto"``
the cost model (:mod:`squash.costmodel`) prices both for the batch and the cheaper one runs.

Final ranking (``rerank``): candidates are scored on the hot tier's code; its own recall
(measured at build, :mod:`squash.ranking`) multiplies into the expected recall, and routing
aims at ``target / code recall`` so the product meets the target. When the target is beyond
what the code can carry (``target > CODE_SHARE x code recall``), the best candidates are
re-scored on the refinement tier (resident, :mod:`squash.fine`) when its measured recall
carries the target, else on float32 rows from the cold tier. ``target_recall=1`` or ``plan="exact"`` scores
every candidate on float32: exact.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import costmodel
from .calibration import Calibration, routing_scores
from .filter_eval import evaluate, schema_of
from .filters import Node
from .params import SearchParams
from .router import Router

#: The code ranking serves alone while the target is at most this share of its recall:
#: routing then has to deliver target / code recall <= this, within its calibrated levels.
CODE_SHARE = 0.99


@dataclass
class Plan:
    """visit[q, p]: query q searches partition p; ``kind`` is "routed" or "exact"."""

    visit: np.ndarray  # (Q, P) bool
    maybe_counts: np.ndarray  # (P,) L0 superset per partition
    sure_counts: np.ndarray  # (P,) L0 subset per partition
    kind: str = "routed"
    rule: str = "calibrated"  # "calibrated", "fixed" (expert knobs / no calibration) or "exact"
    expected_recall: float | None = None  # from the calibration; 1.0 for exact; None = unknown
    cost_routed_ms: float | None = None
    cost_exact_ms: float | None = None
    maybe_rows: np.ndarray | None = None  # rows (partition order) L0 says may match; None: all
    rerank: str = "none"  # "none" (codes), "fine" (refinement tier), "float32" (cold tier), "exact"

    @property
    def partitions(self) -> np.ndarray:
        """Partitions visited by at least one query."""
        return np.flatnonzero(self.visit.any(axis=0))

    def queries_of(self, partition: int) -> np.ndarray:
        return np.flatnonzero(self.visit[:, partition])

    def execution_params(self, params: SearchParams) -> SearchParams:
        """The params the partitions are searched with: the chosen plan made explicit."""
        if params.plan == self.kind and params.rerank == self.rerank:
            return params
        return dataclasses.replace(params, plan=self.kind, rerank=self.rerank)

    def stats(self) -> dict[str, object]:
        """What every answer says about the plan that ran."""
        out: dict[str, object] = {
            "plan": self.kind,
            "rule": self.rule,
            "rerank": self.rerank,
            # what "distance" holds: exact float32 distances, or the code's estimates
            "distances": "estimated" if self.rerank in ("none", "fine") else "exact",
            "expected_recall": None if self.expected_recall is None else round(self.expected_recall, 4),
        }
        if self.cost_routed_ms is not None:
            out["cost_ms"] = {"routed": round(self.cost_routed_ms, 3), "exact": round(self.cost_exact_ms, 3)}
        return out


def count_matches(router: Router, node: Node | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-partition counts of rows that may / surely match (L0), and the rows (in partition
    order) that may match (None without a filter and deletes). Deleted rows never count."""
    if node is None and router.live is None:
        sizes = np.diff(router.offsets)
        return sizes, sizes, None
    starts = router.offsets[:-1]
    counts, masks = [], []
    table, schema = router.table(), schema_of(router.specs)
    for mode in ("maybe", "sure"):
        mask = evaluate(node, table, schema, mode)
        if router.live is not None:
            mask &= router.live
        cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        counts.append(cum[router.offsets[1:]] - cum[starts])
        masks.append(mask)
    return counts[0], counts[1], np.flatnonzero(masks[0])


def centroid_distances(router: Router, queries: np.ndarray) -> np.ndarray:
    """Squared L2 distances (Q, P) from queries to partition centroids."""
    q_sq = np.einsum("ij,ij->i", queries, queries)
    d2 = q_sq[:, None] - 2.0 * (queries @ router.centroids.T) + router.centroid_sq[None, :]
    return np.maximum(d2, 0.0)


@dataclass(frozen=True)
class _Rule:
    """How far a routed plan goes, decided before any centroid distance is computed."""

    name: str  # "calibrated" or "fixed"
    score: float  # calibrated: visit partitions scoring <= this (inf: all that may match)
    need: float  # sure matches every query covers in centroid order
    expected: float | None


def _rule(
    router: Router, k: int, sure: np.ndarray, filtered: bool, params: SearchParams, cal: Calibration | None
) -> _Rule:
    total = float(sure.sum())
    if params.expert or cal is None:
        _, min_candidates, min_partitions = params.fixed_rule()
        need = min(total, max(k, min_candidates, min_partitions * total / router.partitions))
        return _Rule("fixed", math.nan, need, None)
    score, cover, expected = cal.threshold(total / max(router.n, 1), k, params.target_recall)
    # The coverage rule serves filters, whose matches may lie away from the nearest partitions.
    need = max(k, cover) if filtered else k
    if math.isinf(score):
        need = math.inf
    return _Rule("calibrated", score, float(need), expected)


def plan_queries(
    router: Router,
    queries: np.ndarray,
    k: int,
    node: Node | None,
    params: SearchParams,
    calibration: Calibration | None = None,
) -> Plan:
    """Decide which partitions each query visits (vectorised over queries and partitions)."""
    maybe, sure, maybe_rows = count_matches(router, node)
    q = queries.shape[0]
    valid = maybe > 0
    exact_visit = np.broadcast_to(valid, (q, router.partitions))
    if params.levels == "exact":  # the older spelling of rerank="exact"
        params = dataclasses.replace(params, rerank="exact", levels="auto")
    # An index that never measured its code's recall re-ranks on float32: no unmeasured promise.
    ranking = None if calibration is None else calibration.ranking_recall(k)
    fine = None if calibration is None else calibration.ranking_recall(k, "fine")
    if params.plan == "exact" or params.target_recall >= 1.0:
        rerank = "exact" if params.rerank == "auto" else params.rerank
        expected = {"exact": 1.0, "float32": 1.0, "none": ranking, "fine": fine}[rerank]
        plan = Plan(exact_visit.copy(), maybe, sure, "exact", "exact", expected, maybe_rows=maybe_rows)
        plan.rerank = rerank
        return plan
    rerank = params.rerank
    if rerank == "auto":  # the first final ranking whose measured recall holds the target
        rerank = next(
            (
                name
                for name, measured in (("none", ranking), ("fine", fine))
                if measured is not None and params.target_recall <= CODE_SHARE * measured
            ),
            "float32",
        )
    measured = {"none": ranking, "fine": fine}.get(rerank)
    code_recall = 1.0 if measured is None else measured
    route_target = min(params.target_recall / max(code_recall, 1e-9), 1.0)
    dims, filtered = int(queries.shape[1]), node is not None
    total_sure = int(sure.sum())
    rule = _rule(
        router, k, sure, filtered, dataclasses.replace(params, target_recall=route_target), calibration
    )
    if total_sure < k:
        rule = dataclasses.replace(rule, need=math.inf)  # fewer than k sure: all that may match

    scan_ms = costmodel.scan_seconds(q, maybe, dims, filtered, k) * 1e3
    # No routed plan costs less than routing itself plus scoring ``need`` rows per query.
    floor_rows = min(rule.need, float(maybe.sum()))
    planning_ms = costmodel.planning_seconds(q, router.partitions, dims) * 1e3
    floor_ms = planning_ms + costmodel.scoring_seconds(q * floor_rows, dims) * 1e3
    scan_expected = None if calibration is None else code_recall

    def scan_plan(routed_ms: float | None) -> Plan:
        plan = Plan(
            exact_visit.copy(), maybe, sure, "exact", "exact", scan_expected, routed_ms, scan_ms, maybe_rows
        )
        plan.rerank = rerank
        return plan

    if params.plan == "auto" and scan_ms <= floor_ms:
        return scan_plan(floor_ms)

    d2 = np.where(valid[None, :], centroid_distances(router, queries), np.inf)
    # not "stable": the SIMD sort is ~1.7x faster, and the order differs only among ties,
    # in practice partitions that cannot match (inf: never visited)
    order = np.argsort(d2, axis=1)
    finite = np.isfinite(np.take_along_axis(d2, order, axis=1))
    if rule.name == "fixed":
        visit_sorted = _fixed_rule(d2, order, params)
    elif math.isinf(rule.score):
        visit_sorted = finite
    else:
        near = routing_scores(d2, valid[None, :], calibration.radius) <= rule.score
        visit_sorted = np.take_along_axis(near, order, axis=1)
        if params.max_partitions:
            visit_sorted[:, params.max_partitions :] = False
    covered_before = np.cumsum(sure[order], axis=1) - sure[order]
    visit_sorted = (visit_sorted | (covered_before < rule.need)) & finite
    visit = np.zeros((q, router.partitions), dtype=bool)
    np.put_along_axis(visit, order, visit_sorted, axis=1)
    if router.parents.size:  # a write's delta partitions go wherever their parent goes
        base = router.partitions - router.parents.size
        visit[:, base:] |= visit[:, router.parents] & valid[None, base:]
    expected = None if rule.expected is None else rule.expected * code_recall
    plan = Plan(visit, maybe, sure, "routed", rule.name, expected, maybe_rows=maybe_rows)
    plan.rerank = rerank
    if params.plan == "auto":
        routed_ms = planning_ms + costmodel.routed_seconds(visit, maybe, dims, filtered) * 1e3
        if scan_ms < routed_ms:
            return scan_plan(routed_ms)
        plan.cost_routed_ms, plan.cost_exact_ms = routed_ms, scan_ms
    return plan


def _fixed_rule(d2: np.ndarray, order: np.ndarray, params: SearchParams) -> np.ndarray:
    """The expert rule's distance part, in centroid order: within ``routing_factor`` of the
    nearest centroid's distance (capped at ``max_partitions``); coverage comes from ``_Rule``."""
    factor = params.fixed_rule()[0]
    sorted_d = np.take_along_axis(d2, order, axis=1)
    near = np.sqrt(sorted_d) <= factor * np.sqrt(sorted_d[:, :1])
    if params.max_partitions:
        near[:, params.max_partitions :] = False
    return near
