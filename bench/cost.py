"""Dollars per million queries on AWS, from measured per-partition work and stated prices.

Model (every input is a parameter, reported with the figures):

- Each tree position p searches the partitions it owns (``partition % size``) for the batch:
  ``own[p]`` ms, measured in-process on one core (``treework``). A node invokes only the
  children whose subtree has a (partition, query) pair (``squash.runtime.worker``: an idle
  subtree is never invoked), concurrently, searches its own partitions meanwhile, then
  merges, so its billed duration is ``handler_ms + max(own[p], max over invoked children
  (D(child) + invoke_ms))``: interior nodes pay for waiting on their subtree.
- The coordinator is billed ``handler_ms + plan_ms + invoke_ms + D(root)``, and invokes the
  root only when the batch has a pair at all.
- Lambda bills ceil(ms) x memory; one request per function invocation: 1 (the coordinator)
  + the invoked nodes (:func:`invoked`, the runtime's rule; ``bench/econ.py`` checks it against
  the answers' ``stats.nodes.invoked``); one HTTP API request per batch, metered in 512 KB
  increments of the request body (JSON, ~``json_bytes_per_float`` per number).
- Warm containers read nothing from S3. A cold tree reads every segment once (one GET each,
  plus manifest and router), at ``s3_mb_per_s`` per function; its cost is reported on its own
  and amortised over ``cold_every_queries`` queries.

``bench/tree_sim.py`` extends this with measured invoke overheads, payload sizes and serial
child launches, for trees of 1 to 1,024 nodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from squash.runtime.tree import TreeLayout

from .treework import BatchWork

PRICES_NOTE = "published rates, verify before use"


@dataclass(frozen=True)
class Prices:
    """AWS list prices, us-east-1, as of 2026 (published rates, verify before use)."""

    lambda_gb_second: float = 0.0000166667  # Lambda x86, first 6 B GB-s/month tier
    lambda_per_million_requests: float = 0.20
    apigw_http_per_million: float = 1.00  # HTTP API, first 300 M requests/month
    s3_get_per_thousand: float = 0.0004  # S3 Standard GET
    date: str = "2026, us-east-1"
    sources: tuple[str, ...] = (
        "https://aws.amazon.com/lambda/pricing/",
        "https://aws.amazon.com/api-gateway/pricing/",
        "https://aws.amazon.com/s3/pricing/",
    )


@dataclass(frozen=True)
class Assumptions:
    """Deployment and overhead assumptions (not measured here unless stack.json says otherwise)."""

    coordinator_mb: int = 1024  # template.yaml CoordinatorMemorySize default
    worker_mb: int = 2048  # template.yaml WorkerMemorySize default
    invoke_ms: float = 15.0  # caller-side overhead of one warm synchronous Lambda invoke
    handler_ms: float = 3.0  # per invocation: decode request, encode response, merge top-k
    api_gateway: bool = True  # False: batch jobs invoking the coordinator directly
    apigw_increment_bytes: int = 512 * 1024
    json_bytes_per_float: float = 10.0
    s3_mb_per_s: float = 80.0  # per-function S3 read throughput on a cold start
    cold_every_queries: int = 100_000  # one whole-tree cold start per this many queries
    cache_fraction: float = 0.6  # runtime default: segment cache = 60 % of worker memory
    cpu_note: str = "a Lambda vCPU is assumed as fast as one core of the bench machine"


# Reference points, quoted (not measured here).
REFERENCES = {
    "squash_paper_sift1m": {
        "low": 9.6,
        "high": 43.0,
        "source": "SQUASH paper (arXiv 2502.01528), SIFT1M, 10-258 tree nodes",
    },
    "paper_serverless_competitor": {
        "value": 90.0,
        "source": "SQUASH paper, its anonymised serverless competitor, SIFT1M",
    },
    "s3_vectors": {
        "value": 2.5,
        "source": "S3 Vectors pricing page, 2025: $0.0025 per 1,000 queries plus data processed "
        "(data-processed charge not included; quoted, not measured)",
    },
}


LAMBDA_FULL_VCPU_MB = 1769  # Lambda gives one full vCPU at this memory, a share below it
RUNTIME_BASELINE_MB = 256  # Python, numpy, pyarrow, boto3 and Powertools imported
RESIDENT_OVERHEAD = 1.25  # derived arrays and scan scratch on top of the hot tier's bytes


def node_bytes(segment_bytes: np.ndarray, tree: TreeLayout) -> np.ndarray:
    """Segment bytes each tree position owns (partition p lives at position p % nodes)."""
    owner = np.arange(segment_bytes.size) % tree.size
    return np.bincount(owner, weights=segment_bytes, minlength=tree.size)


def sized_worker_mb(segment_bytes: np.ndarray, tree: TreeLayout) -> int:
    """Worker memory sized from the measured hot tier: the largest node's share of it (with
    overhead) plus the runtime, over the cache fraction, in 64 MB steps, 512 MB at least."""
    per_node = node_bytes(segment_bytes, tree)
    need = RUNTIME_BASELINE_MB + per_node.max() * RESIDENT_OVERHEAD / 2**20 / Assumptions().cache_fraction
    return int(max(512, 64 * math.ceil(need / 64)))


def invoked(work: BatchWork, tree: TreeLayout) -> np.ndarray:
    """Which positions a batch invokes: those whose subtree owns a planned partition (the
    runtime invokes a child only when its subtree has a pair; the root when the batch has one)."""
    busy = np.bincount(work.partitions % tree.size, minlength=tree.size) > 0
    for pos in reversed(range(1, tree.size)):  # heap order: children have larger positions
        busy[(pos - 1) // tree.branching] |= busy[pos]
    return busy


def node_durations(
    own_ms: np.ndarray, tree: TreeLayout, a: Assumptions, busy: np.ndarray | None = None
) -> np.ndarray:
    """Unrounded duration (ms) of every position for one batch, leaves first; 0 for the
    positions not invoked (``busy``: :func:`invoked`; None: every position)."""
    dur = np.zeros(tree.size)
    busy = np.ones(tree.size, dtype=bool) if busy is None else busy
    own_ms = own_ms * max(1.0, LAMBDA_FULL_VCPU_MB / a.worker_mb)  # a vCPU share below 1769 MB
    for pos in reversed(range(tree.size)):  # heap order: children have larger positions
        if not busy[pos]:
            continue
        wait = max((dur[c] + a.invoke_ms for c in tree.children(pos) if busy[c]), default=0.0)
        dur[pos] = a.handler_ms + max(float(own_ms[pos]), wait)
    return dur


def batch_cost(
    work: BatchWork, tree: TreeLayout, dims: int, prices: Prices, a: Assumptions
) -> dict[str, float]:
    """Dollars and billed milliseconds of one warm batch."""
    busy = invoked(work, tree)
    workers = node_durations(work.node_ms(tree), tree, a, busy)
    coord = a.handler_ms + work.plan_ms + (a.invoke_ms + workers[0] if busy[0] else 0.0)
    worker_billed = float(np.ceil(workers[busy]).sum())
    coord_billed = float(math.ceil(coord))
    gb_s = (coord_billed * a.coordinator_mb + worker_billed * a.worker_mb) / 1024 / 1000
    requests = 1 + int(busy.sum())
    body = work.size * dims * a.json_bytes_per_float
    api = math.ceil(body / a.apigw_increment_bytes) if a.api_gateway else 0
    compute = gb_s * prices.lambda_gb_second
    invokes = requests * prices.lambda_per_million_requests / 1e6
    gateway = api * prices.apigw_http_per_million / 1e6
    return {
        "latency_ms": coord,
        "invocations": requests,
        "coordinator_billed_ms": coord_billed,
        "workers_billed_ms": worker_billed,
        "compute": compute,
        "requests": invokes,
        "api_gateway": gateway,
        "total": compute + invokes + gateway,
    }


def cold_tree(segment_bytes: np.ndarray, router_bytes: int, tree: TreeLayout, prices: Prices, a: Assumptions):
    """Cost of one whole-tree cold start: every segment read once, load time billed."""
    per_node = node_bytes(segment_bytes, tree)
    load_s = per_node / (a.s3_mb_per_s * 2**20)
    coord_s = router_bytes / (a.s3_mb_per_s * 2**20)
    gets = segment_bytes.size + 2  # segments + manifest + router
    dollars = gets * prices.s3_get_per_thousand / 1000 + prices.lambda_gb_second * (
        load_s.sum() * a.worker_mb / 1024 + coord_s * a.coordinator_mb / 1024
    )
    return {
        "s3_gets": gets,
        "dollars": float(dollars),
        "max_worker_load_s": float(load_s.max()),
        "max_worker_segment_mib": float(per_node.max() / 2**20),
        "fits_cache": bool(per_node.max() <= a.cache_fraction * a.worker_mb * 2**20),
    }


def per_million(
    work: list[BatchWork],
    tree: TreeLayout,
    dims: int,
    segment_bytes: np.ndarray,
    router_bytes: int,
    prices: Prices | None = None,
    a: Assumptions | None = None,
) -> dict[str, Any]:
    """$ per million queries (warm, and with amortised cold starts) for one batch size and tree."""
    prices, a = prices or Prices(), a or Assumptions()
    costs = [batch_cost(w, tree, dims, prices, a) for w in work]
    queries = sum(w.size for w in work)
    warm = {
        key: sum(c[key] for c in costs) / queries * 1e6
        for key in ("compute", "requests", "api_gateway", "total")
    }
    cold = cold_tree(segment_bytes, router_bytes, tree, prices, a)
    amortised = cold["dollars"] / a.cold_every_queries * 1e6
    return {
        "batch": work[0].size,
        "tree": {"branching": tree.branching, "depth": tree.depth, "nodes": tree.size},
        "warm_per_million": warm,
        "cold_tree": cold,
        "with_cold_per_million": warm["total"] + amortised,
        "mean_latency_ms": float(np.mean([c["latency_ms"] for c in costs])),
        "invocations_per_query": sum(c["invocations"] for c in costs) / queries,
        "mean_coordinator_billed_ms": float(np.mean([c["coordinator_billed_ms"] for c in costs])),
        "mean_workers_billed_ms": float(np.mean([c["workers_billed_ms"] for c in costs])),
    }


def stack_cost(
    stack: dict[str, Any], prices: Prices | None = None, a: Assumptions | None = None
) -> list[dict]:
    """Upper-bound $/M from the local stack's measured latencies (when stack.json exists).

    Every invoked function (the coordinator and each invoked node) is billed for the whole
    request: the warm single-query p50 for batch 1, the median batch time for larger batches.
    Invocations come from the warm answer's ``stats.nodes.invoked`` when stack.json has it
    (a single query), else every node is counted.
    """
    prices, a = prices or Prices(), a or Assumptions()
    out = []
    for shape in stack.get("tree_shapes", []):
        nodes = shape.get("nodes")
        if not nodes:
            continue
        counted = shape.get("warm_invoked")
        timings = {int(b): sec * 1e3 for b, sec in (shape.get("batch_seconds") or {}).items() if sec}
        if shape.get("warm_p50_ms") is not None:
            timings[1] = shape["warm_p50_ms"]  # the median of many single queries beats 3 batch runs
        for batch, ms in sorted(timings.items()):
            if ms is None:
                continue
            used = counted if batch == 1 and counted is not None else nodes
            gb_s = math.ceil(ms) * (a.coordinator_mb + used * a.worker_mb) / 1024 / 1000
            total = gb_s * prices.lambda_gb_second + (1 + used) * prices.lambda_per_million_requests / 1e6
            total += prices.apigw_http_per_million / 1e6 if a.api_gateway else 0.0
            out.append(
                {
                    "nodes": nodes,
                    "invoked": used,
                    "invoked_counted": batch == 1 and counted is not None,
                    "batch": batch,
                    "ms": ms,
                    "per_million_upper_bound": total / batch * 1e6,
                }
            )
    return out


def parameters(prices: Prices | None = None, a: Assumptions | None = None) -> dict[str, Any]:
    """The model's inputs, for the results file and the report."""
    return {
        "prices": asdict(prices or Prices()),
        "prices_note": PRICES_NOTE,
        "assumptions": asdict(a or Assumptions()),
        "references": REFERENCES,
    }
