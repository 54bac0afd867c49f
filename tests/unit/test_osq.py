import heapq

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from squash.arrays import from_arrow_bytes
from squash.attributes import quantize_attributes
from squash.osq.bitalloc import allocate_bits
from squash.osq.bounds import lut_sum, residual_norms, residual_terms
from squash.osq.kmeans import balanced_kmeans, size_bounds
from squash.osq.packing import extract_codes
from squash.segment import Segment, build_segment


def _greedy_reference(energy, budget):
    bits = [0] * len(energy)
    heap = [(-e, j) for j, e in enumerate(energy)]
    heapq.heapify(heap)
    for _ in range(budget):
        while heap:
            e, j = heapq.heappop(heap)
            if bits[j] < 8:
                bits[j] += 1
                heapq.heappush(heap, (e / 4, j))
                break
    return bits


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e4), min_size=1, max_size=30), st.integers(0, 300))
def test_bit_allocation_matches_the_greedy_6db_rule(energy, budget):
    bits = allocate_bits(np.array(energy), budget)
    assert bits.tolist() == _greedy_reference(energy, budget)
    assert bits.sum() == min(budget, 8 * len(energy))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(5, 300),
    d=st.integers(2, 24),
    bits_per_dim=st.floats(0.25, 6),
    seed=st.integers(0, 10_000),
)
def test_osq_bounds_bracket_the_true_distance(n, d, bits_per_dim, seed):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 10, size=d)
    x = (rng.normal(size=(n, d)) * scale).astype(np.float32)
    q = (rng.normal(size=(7, d)) * scale * 1.5).astype(np.float32)
    attrs = quantize_attributes(None, n)
    seg = Segment.from_bytes(0, build_segment(x, np.arange(n), attrs, round(bits_per_dim * d), 4), "t")
    q_rot = (q - seg.mean) @ seg.rotation
    positions = seg.table.index(extract_codes(seg.codes, seg.widths))  # (kept, n)
    pos = np.broadcast_to(positions, (q.shape[0], *positions.shape))
    q_res = residual_norms(q - seg.mean, q_rot)
    res_lo, res_hi = residual_terms(q_res, seg.residual)
    lower = lut_sum(seg.table.lower(q_rot), pos) + res_lo
    upper = lut_sum(seg.table.upper(q_rot), pos) + res_hi
    true = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    tol = 1e-4 * (1 + true)
    assert np.all(lower <= true + tol)
    assert np.all(upper >= true - tol)


def test_balanced_kmeans_keeps_partitions_within_ten_percent():
    rng = np.random.default_rng(3)
    # Very unbalanced natural clusters: one holds 70 % of the data.
    x = np.concatenate([rng.normal(0, 1, (7000, 8)), rng.normal(8, 1, (3000, 8))]).astype(np.float32)
    assign = balanced_kmeans(x, 20, seed=0)
    sizes = np.bincount(assign, minlength=20)
    lo, hi = size_bounds(10000, 20)
    assert lo == 450 and hi == 550
    assert sizes.min() >= lo and sizes.max() <= hi and sizes.sum() == 10000


def test_segment_round_trip_is_zero_copy_and_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 16)).astype(np.float32)
    data = build_segment(x, np.arange(100) + 7, quantize_attributes(None, 100), 32, 16)
    arrays = from_arrow_bytes(data)
    np.testing.assert_array_equal(arrays["vectors"], x)
    np.testing.assert_array_equal(arrays["ids"], np.arange(100) + 7)
    assert not arrays["vectors"].flags.writeable  # a view of the downloaded bytes
