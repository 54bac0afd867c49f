"""Simulated worker trees of 1 to 1,024 nodes: modelled latency, QPS and dollars per query.

Inputs, all measured except where a parameter says otherwise:

- per-partition search times of real batches (``treework.measure``: which partitions a batch
  of B queries visits, the ms each takes on one core, and which batch rows it serves);
- per-invoke overheads (:class:`Overheads`): a fixed ms per invoke, ms per KB of request
  and of response, and the caller's CPU per child launched — measured on the local stack
  (``invoke_overhead.py``), or AWS's (an assumption, :data:`AWS_INVOKE_MS`);
- payload sizes (:class:`Payload`): bytes of a child's event and answer from the rows,
  (partition, query) pairs and segment refs its subtree needs, fitted to the runtime's real
  events (``econ.py`` counts them).

What it models is what the runtime does (``squash.runtime.worker`` / ``coordinator``):
partition p is searched by position ``p % size``; a node invokes only the children whose
subtree has a pair (the coordinator invokes the root only if there is one); it launches
those children one after the other (``launch(c) = launch_ms + launch_ms_per_kb *
request_kb(c)`` each, serial CPU in the parent), searches its own partitions, waits for the
children and merges. With ``S_j`` the launches of the first j invoked children summed, a
node's duration is therefore

    D(p) = handler_ms + max(S_last + own(p),  max_j (S_j + hop(c_j) + D(c_j)))

with ``hop(c) = fixed_ms + ms_per_request_kb * request_kb(c) + ms_per_response_kb * response_kb(c)``,
and the coordinator's is ``handler_ms + plan_ms + launch(root) + hop(root) + D(root)``. Billing:
ceil(ms) x memory for the coordinator and every *invoked* node; one Lambda request fee per
invocation (1 + invoked nodes per batch); one API Gateway request per batch, metered in
512 KB steps of the body. ``QPS = B / latency`` (one batch in flight; the paper's "latency"
is this inverse throughput, ms per query).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from squash.runtime.tree import MAX_NODES, TreeLayout

from .cost import LAMBDA_FULL_VCPU_MB, RESIDENT_OVERHEAD, RUNTIME_BASELINE_MB, Prices
from .treework import BatchWork

#: AWS's warm synchronous Lambda -> Lambda invoke overhead: an ASSUMPTION (AWS publishes no
#: figure; 15-30 ms warm is the commonly reported range, e.g. forum.serverless.com/t/3891
#: "each layer of AWS adds ~30 ms"). The sensitivity runs use the ends of that range.
AWS_INVOKE_MS = 20.0
AWS_INVOKE_RANGE_MS = (15.0, 30.0)

#: The SQUASH paper's SIFT1M scaling figures, read from its published plots (issue #14):
#: allocators -> ms per query (1/QPS over all allocators) and $ per 100,000 queries.
PAPER_SIFT1M = {
    "allocators": [10, 20, 84, 155, 258],
    "ms_per_query": [7.91, 5.02, 1.95, 1.45, 1.43],
    "usd_per_100k": [0.96, 1.08, 1.87, 2.59, 4.33],
    "source": "SQUASH paper (arXiv 2502.01528), SIFT1M scaling figures, read from the plots",
}

#: The knee rule: the smallest node budget N from which doubling the budget cuts the p50
#: latency by less than this fraction while the cost per query does not fall.
KNEE_GAIN = 0.10


@dataclass(frozen=True)
class Overheads:
    """Per-invoke costs seen by the caller (ms), and where they come from."""

    label: str
    fixed_ms: float
    ms_per_request_kb: float = 0.0
    ms_per_response_kb: float = 0.0
    launch_ms: float = 0.0  # the caller's CPU per child launched (children start one by one)
    launch_ms_per_kb: float = 0.0  # ... and per KB of the child's event (encode, send)

    def hop(self, request_bytes: np.ndarray | float, response_bytes: np.ndarray | float) -> Any:
        return (
            self.fixed_ms
            + self.ms_per_request_kb * np.asarray(request_bytes) / 1024
            + self.ms_per_response_kb * np.asarray(response_bytes) / 1024
        )


@dataclass(frozen=True)
class Payload:
    """Bytes of a child's event and answer: affine in its subtree's rows, pairs and partitions."""

    base: float = 1500.0
    per_row: float = 128 * 4 * 4 / 3 + 8  # a float32 query, base64, plus its id
    per_pair: float = 4.0  # (partition, row) int32 pairs, zlib + base64
    per_partition: float = 110.0  # one segment ref in the event
    response_base: float = 600.0
    response_per_row: float = 10 * (6 + 16 / 3)  # k ids (zlib) and distances (raw) per row

    def request(self, rows, pairs, parts) -> np.ndarray:
        return self.base + self.per_row * rows + self.per_pair * pairs + self.per_partition * parts

    def response(self, rows) -> np.ndarray:
        return self.response_base + self.response_per_row * np.asarray(rows)


@dataclass(frozen=True)
class SimConfig:
    """Deployment parameters of the model (stated with every figure)."""

    coordinator_mb: int = 1024  # template.yaml CoordinatorMemorySize default (tree mode)
    alone_coordinator_mb: int = LAMBDA_FULL_VCPU_MB  # coordinator serving the index by itself
    worker_mb_floor: int = LAMBDA_FULL_VCPU_MB  # one full vCPU; more if the hot tier needs it
    handler_ms: float = 1.0  # per invocation: decode, encode and merge beyond the search itself
    api_gateway: bool = True  # False: batch jobs invoking the coordinator directly
    apigw_increment_bytes: int = 512 * 1024
    body_bytes_per_float: float = 10.0  # JSON text; the binary wire is 4 * 4/3
    cache_fraction: float = 0.6
    s3_mb_per_s: float = 80.0
    cold_every_queries: int = 100_000
    time_scale: float = 1.0  # multiplies measured search ms (the 10M model scales by rows)


def cpu_factor(mb: int) -> float:
    """How much slower than one full core a function of ``mb`` MB scans (Lambda's vCPU share)."""
    return max(1.0, LAMBDA_FULL_VCPU_MB / mb)


def worker_mb(segment_bytes: np.ndarray, size: int, cfg: SimConfig) -> int:
    """Memory of every worker: the floor, or more when the largest node's hot tier needs it."""
    per = np.bincount(np.arange(segment_bytes.size) % size, weights=segment_bytes, minlength=size)
    need = RUNTIME_BASELINE_MB + per.max() * RESIDENT_OVERHEAD / 2**20 / cfg.cache_fraction
    return int(max(cfg.worker_mb_floor, 64 * math.ceil(need / 64)))


def alone_mb(segment_bytes: np.ndarray, cfg: SimConfig) -> int:
    """Memory of a coordinator holding the whole hot tier."""
    need = RUNTIME_BASELINE_MB + segment_bytes.sum() * RESIDENT_OVERHEAD / 2**20 / cfg.cache_fraction
    return int(max(cfg.alone_coordinator_mb, 64 * math.ceil(need / 64)))


@dataclass
class BatchResult:
    latency_ms: float
    coordinator_ms: float
    node_ms: np.ndarray  # durations of invoked nodes
    invoked: int
    root_request_bytes: float
    max_request_bytes: float


def _levels(tree: TreeLayout) -> list[np.ndarray]:
    """Positions of each level below the root, deepest first (heap order)."""
    out, start, width = [], 1, tree.branching
    for _ in range(tree.depth):
        end = min(start + width, tree.size)
        out.append(np.arange(start, end))
        start, width = end, width * tree.branching
    return out[::-1]


def subtree_sums(tree: TreeLayout, values: np.ndarray) -> np.ndarray:
    """Per position, the sum of ``values`` (positions x ...) over its subtree."""
    out = np.array(values, dtype=np.float64, copy=True)
    for level in _levels(tree):
        np.add.at(out, (level - 1) // tree.branching, out[level])
    return out


def subtree_any(tree: TreeLayout, mask: np.ndarray) -> np.ndarray:
    """Per position, the OR of boolean rows (positions x B) over its subtree."""
    return subtree_sums(tree, mask.astype(np.float64)) > 0


def simulate_batch(
    w: BatchWork,
    tree: TreeLayout,
    over: Overheads,
    pay: Payload,
    cfg: SimConfig,
    mem_mb: int,
    partition_of: np.ndarray | None = None,
) -> BatchResult:
    """One batch on one tree shape (``partition_of`` relabels partitions, for scaled indexes)."""
    n = tree.size
    parts = w.partitions if partition_of is None else partition_of[w.partitions]
    pos = parts % n
    ms = w.ms * cfg.time_scale * cpu_factor(mem_mb)
    own = np.bincount(pos, weights=ms, minlength=n)
    pairs = subtree_sums(tree, np.bincount(pos, weights=w.visits, minlength=n))
    nparts = subtree_sums(tree, np.bincount(pos, minlength=n))
    if w.queries is not None and w.size > 1:
        mask = np.zeros((n, w.size), dtype=bool)
        for p, rows in zip(pos, w.queries, strict=True):
            mask[p, rows] = True
        rows = subtree_any(tree, mask).sum(axis=1).astype(np.float64)
    else:
        rows = np.minimum(pairs, w.size)
    req = pay.request(rows, pairs, nparts)
    hop = over.hop(req, pay.response(rows))
    launch = over.launch_ms + over.launch_ms_per_kb * req / 1024
    dur = np.zeros(n)
    for p in np.flatnonzero(pairs > 0)[::-1].tolist():  # children before parents
        kids = [c for c in tree.children(p) if pairs[c] > 0]
        started = np.cumsum(launch[kids]) if kids else np.zeros(0)  # launched one after another
        wait = max((started[j] + hop[c] + dur[c] for j, c in enumerate(kids)), default=0.0)
        dur[p] = cfg.handler_ms + max((started[-1] if kids else 0.0) + own[p], wait)
    plan = w.plan_ms * cpu_factor(cfg.coordinator_mb)
    invoked = pairs > 0
    tree_ms = launch[0] + hop[0] + dur[0] if pairs[0] > 0 else 0.0  # nothing invoked without pairs
    coord = cfg.handler_ms + plan + tree_ms
    return BatchResult(
        latency_ms=float(coord),
        coordinator_ms=float(coord),
        node_ms=dur[invoked],
        invoked=int(invoked.sum()),
        root_request_bytes=float(req[0]),
        max_request_bytes=float(req.max()),
    )


def simulate_alone(w: BatchWork, cfg: SimConfig, mem_mb: int) -> BatchResult:
    """The coordinator serving the index by itself (hot tier <= CoordinatorServesUpToMB)."""
    ms = (w.plan_ms + w.ms.sum() * cfg.time_scale) * cpu_factor(mem_mb) + cfg.handler_ms
    return BatchResult(float(ms), float(ms), np.zeros(0), 0, 0.0, 0.0)


def batch_dollars(
    r: BatchResult, batch: int, dims: int, coord_mb: int, worker_mb_: int, prices: Prices, cfg: SimConfig
) -> dict[str, float]:
    """Dollars of one warm batch, by component."""
    gb_s = (math.ceil(r.coordinator_ms) * coord_mb + float(np.ceil(r.node_ms).sum()) * worker_mb_) / 1024e3
    compute = gb_s * prices.lambda_gb_second
    requests = (1 + r.invoked) * prices.lambda_per_million_requests / 1e6
    body = batch * dims * cfg.body_bytes_per_float
    api = math.ceil(body / cfg.apigw_increment_bytes) if cfg.api_gateway else 0
    gateway = api * prices.apigw_http_per_million / 1e6
    return {
        "compute": compute,
        "requests": requests,
        "api_gateway": gateway,
        "total": compute + requests + gateway,
    }


def cold_dollars(
    segment_bytes: np.ndarray, size: int, mem_mb: int, coord_mb: int, prices: Prices, cfg: SimConfig
):
    """One whole-tree cold start (every segment read once), and its share per query."""
    per = np.bincount(
        np.arange(segment_bytes.size) % max(size, 1), weights=segment_bytes, minlength=max(size, 1)
    )
    load_s = per / (cfg.s3_mb_per_s * 2**20)
    gets = segment_bytes.size + 2  # segments, manifest, router
    dollars = (
        gets * prices.s3_get_per_thousand / 1000 + prices.lambda_gb_second * load_s.sum() * mem_mb / 1024
    )
    return {"s3_gets": gets, "dollars": float(dollars), "per_query": float(dollars) / cfg.cold_every_queries}


def simulate(
    work: Sequence[BatchWork],
    tree: TreeLayout | None,
    dims: int,
    segment_bytes: np.ndarray,
    over: Overheads,
    pay: Payload,
    cfg: SimConfig | None = None,
    prices: Prices | None = None,
    partition_of: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every batch of ``work`` on ``tree`` (None: the coordinator alone): p50 latency, QPS, $/M."""
    cfg, prices = cfg or SimConfig(), prices or Prices()
    batch = work[0].size
    if tree is None:
        mem = alone_mb(segment_bytes, cfg)
        results = [simulate_alone(w, cfg, mem) for w in work]
        coord_mb, nodes = mem, 0
    else:
        mem = worker_mb(segment_bytes, tree.size, cfg)
        results = [simulate_batch(w, tree, over, pay, cfg, mem, partition_of) for w in work]
        coord_mb, nodes = cfg.coordinator_mb, tree.size
    dollars = [batch_dollars(r, batch, dims, coord_mb, mem, prices, cfg) for r in results]
    per_m = {k: sum(d[k] for d in dollars) / (batch * len(work)) * 1e6 for k in dollars[0]}
    cold = cold_dollars(segment_bytes, nodes, mem, coord_mb, prices, cfg)
    lat = np.array([r.latency_ms for r in results])
    return {
        "shape": "coordinator alone" if tree is None else f"b={tree.branching} l={tree.depth}",
        "branching": None if tree is None else tree.branching,
        "depth": None if tree is None else tree.depth,
        "nodes": nodes,
        "batch": batch,
        "worker_mb": None if tree is None else mem,
        "coordinator_mb": coord_mb,
        "invocations_per_batch": 1 + float(np.mean([r.invoked for r in results])),
        "invocations_per_query": (1 + float(np.mean([r.invoked for r in results]))) / batch,
        "p50_ms": float(np.median(lat)),
        "p95_ms": float(np.percentile(lat, 95)),
        "qps": batch / (float(np.median(lat)) / 1e3),
        "ms_per_query": float(np.median(lat)) / batch,
        "per_million": per_m,
        "per_million_with_cold": per_m["total"] + cold["per_query"] * 1e6,
        "max_request_kb": float(max(r.max_request_bytes for r in results) / 1024),
    }


#: Fan-outs of the one-level (star) trees simulated; deeper trees take every fan-out.
STAR_FANOUTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1023)


def shapes(max_nodes: int = MAX_NODES) -> list[TreeLayout]:
    """The complete b-ary trees simulated (the runtime's shapes) with at most ``max_nodes``
    nodes: one node, stars of :data:`STAR_FANOUTS`, and every b for depths 2 and more."""
    out = [TreeLayout(1, 0)] + [TreeLayout(b, 1) for b in STAR_FANOUTS if b + 1 <= max_nodes]
    for depth in range(2, 11):
        for b in range(2, max_nodes):
            if sum(b**i for i in range(depth + 1)) > max_nodes:
                break
            out.append(TreeLayout(b, depth))
    return out


def envelope(rows: Iterable[dict], budgets: Sequence[int]) -> list[dict]:
    """Per node budget N, the simulated shape with at most N nodes and the lowest p50
    (ties: fewer nodes, then cheaper)."""
    rows = [r for r in rows if r["nodes"] > 0]
    out = []
    for n in budgets:
        fit = [r for r in rows if r["nodes"] <= n]
        if fit:
            best = min(fit, key=lambda r: (round(r["p50_ms"], 6), r["nodes"], r["per_million"]["total"]))
            out.append({"budget": n} | best)
    return out


def knee(env: Sequence[dict], gain: float = KNEE_GAIN) -> dict | None:
    """The first budget from which doubling it cuts p50 by less than ``gain`` while the cost
    per query does not fall (``env`` ordered by doubling budgets)."""
    for a, b in itertools.pairwise(env):
        cut = 1 - b["p50_ms"] / a["p50_ms"]
        if cut < gain and b["per_million"]["total"] >= a["per_million"]["total"] * (1 - 1e-9):
            return a | {
                "next_cut": cut,
                "rule": f"doubling the node budget cuts p50 by < {gain:.0%}, cost not lower",
            }
    return None


@dataclass
class Scenario:
    """One simulated index: its measured work per batch size and its segment bytes."""

    name: str
    dims: int
    segment_bytes: np.ndarray
    work: dict[int, list[BatchWork]]
    time_scale: float = 1.0
    partition_of: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def sweep(
    sc: Scenario,
    over: Overheads,
    pay: Payload,
    cfg: SimConfig | None = None,
    budgets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    trees: Sequence[TreeLayout] | None = None,
) -> dict[str, Any]:
    """Every shape and batch size of a scenario; the envelope and its knee per batch size."""
    cfg = cfg or SimConfig()
    cfg = SimConfig(**{**asdict(cfg), "time_scale": sc.time_scale})
    trees = list(trees or shapes())
    out: dict[str, Any] = {"scenario": sc.name, "overheads": asdict(over), "by_batch": {}}
    for batch, work in sc.work.items():
        rows = [
            simulate(work, t, sc.dims, sc.segment_bytes, over, pay, cfg, partition_of=sc.partition_of)
            for t in trees
        ]
        alone = simulate(work, None, sc.dims, sc.segment_bytes, over, pay, cfg)
        env = envelope(rows, budgets)
        out["by_batch"][str(batch)] = {
            "alone": alone,
            "envelope": env,
            "knee": knee(env),
            "all": [
                {k: r[k] for k in ("shape", "nodes", "p50_ms", "qps", "invocations_per_query")}
                | {"per_million": r["per_million"]["total"]}
                for r in rows
            ],
        }
    return out
