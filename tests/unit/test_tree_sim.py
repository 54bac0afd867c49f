"""The tree simulator's arithmetic (bench/tree_sim.py) on hand-made batches."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import cost, tree_sim
from bench.treework import BatchWork
from squash.runtime.tree import TreeLayout

OVER = tree_sim.Overheads("test", fixed_ms=20.0, ms_per_request_kb=0.1, ms_per_response_kb=0.2, launch_ms=1.5)
PAY = tree_sim.Payload(
    base=1000, per_row=700, per_pair=4, per_partition=100, response_base=500, response_per_row=100
)
CFG = tree_sim.SimConfig(coordinator_mb=1024, worker_mb_floor=1769, handler_ms=1.0)
PRICES = cost.Prices()
SEG = np.full(8, 1e6)  # 8 partitions of 1 MB: every worker fits the 1,769 MB floor


def work(parts, ms, batch=1, plan_ms=0.5):
    parts = np.asarray(parts)
    rows = [np.arange(batch) for _ in parts]
    return BatchWork(batch, plan_ms, parts, np.asarray(ms, float), np.full(parts.size, batch), rows)


def test_one_node_equals_the_direct_formula():
    w = work([0, 3, 5], [2.0, 3.0, 4.0])
    r = tree_sim.simulate([w], TreeLayout(1, 0), 128, SEG, OVER, PAY, CFG, PRICES)
    req = PAY.base + PAY.per_row * 1 + PAY.per_pair * 3 + PAY.per_partition * 3
    hop = OVER.fixed_ms + OVER.ms_per_request_kb * req / 1024 + OVER.ms_per_response_kb * (500 + 100) / 1024
    node = CFG.handler_ms + 9.0
    coord = CFG.handler_ms + 0.5 * (1769 / 1024) + OVER.launch_ms + hop + node
    assert r["p50_ms"] == pytest.approx(coord)
    gb_s = (math.ceil(coord) * 1024 + math.ceil(node) * 1769) / 1024e3
    body = math.ceil(128 * 10 / (512 * 1024))
    dollars = gb_s * PRICES.lambda_gb_second + 2 * 0.2e-6 + body * 1e-6
    assert r["per_million"]["total"] == pytest.approx(dollars * 1e6)
    assert r["invocations_per_query"] == 2


def test_only_subtrees_with_work_are_invoked_and_match_cost_py():
    tree = TreeLayout(4, 1)  # positions 0..4; partitions 1 and 6 live at 1, 5 % 5 = 0
    w = work([1, 6], [1.0, 1.0])
    r = tree_sim.simulate([w], tree, 128, SEG, OVER, PAY, CFG, PRICES)
    assert r["invocations_per_batch"] == 1 + 2  # coordinator, root (router), position 1
    assert cost.invoked(w, tree).tolist() == [True, True, False, False, False]


def test_no_pairs_invokes_nothing():
    w = BatchWork(1, 0.5, np.zeros(0, int), np.zeros(0), np.zeros(0, int), [])
    r = tree_sim.simulate([w], TreeLayout(4, 1), 128, SEG, OVER, PAY, CFG, PRICES)
    assert r["invocations_per_batch"] == 1


def test_cost_is_monotone_in_invocations():
    """Spreading the same work over more invoked nodes never costs less in request fees and
    every extra invocation adds at least its fee."""
    prev = None
    for parts in ([0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7]):
        w = work(parts, [1.0] * len(parts))
        r = tree_sim.simulate([w], TreeLayout(8, 1), 128, SEG, OVER, PAY, CFG, PRICES)
        if prev is not None:
            assert r["invocations_per_batch"] > prev["invocations_per_batch"]
            assert r["per_million"]["requests"] > prev["per_million"]["requests"]
            assert r["per_million"]["total"] >= prev["per_million"]["total"] + 0.2 - 1e-9
        prev = r


def test_serial_launch_delays_later_children():
    tree = TreeLayout(3, 1)
    w = work([1, 2, 3], [5.0, 5.0, 5.0])
    slow = tree_sim.simulate([w], tree, 128, SEG, OVER, PAY, CFG, PRICES)
    fast = tree_sim.simulate(
        [w], tree, 128, SEG, tree_sim.Overheads("t", 20.0, 0.1, 0.2, launch_ms=0.0), PAY, CFG, PRICES
    )
    assert slow["p50_ms"] - fast["p50_ms"] == pytest.approx(3 * 1.5 + 1.5)  # 3rd child + coordinator's launch


def test_subtree_sums_and_knee():
    tree = TreeLayout(2, 2)
    v = np.zeros(7)
    v[[3, 6]] = [1.0, 2.0]
    assert tree_sim.subtree_sums(tree, v).tolist() == [3.0, 1.0, 2.0, 1.0, 0.0, 0.0, 2.0]
    env = [
        {"budget": n, "p50_ms": p, "per_million": {"total": c}}
        for n, p, c in ((1, 100.0, 1.0), (2, 60.0, 1.1), (4, 57.0, 1.3), (8, 40.0, 1.5))
    ]
    assert tree_sim.knee(env)["budget"] == 2  # 60 -> 57 is a 5 % cut at higher cost
