import heapq

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from squash.arrays import from_arrow_bytes
from squash.attribute_build import quantize_attributes
from squash.osq.kmeans import balanced_kmeans, size_bounds
from squash.osq.scalar import QueryTerms, allocate_classes, bounds, decode_codes, estimate, hat_distances
from squash.partition_search import code_distances
from squash.segment import COLD_BLOCK_ROWS, Segment, block_crcs, build_segment


def _greedy_reference(variance, budget):
    """Bit by bit in 4-bit steps: each step to the axis whose error falls most."""
    bits = [0] * len(variance)
    heap = [(-v * (1 - 2.0**-8), j) for j, v in enumerate(variance)]
    heapq.heapify(heap)
    for _ in range(min(budget // 4, 2 * len(variance))):
        _, j = heapq.heappop(heap)
        bits[j] += 4
        if bits[j] == 4:
            heapq.heappush(heap, (-variance[j] * (2.0**-8 - 2.0**-16), j))
    return bits


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e4), min_size=1, max_size=30, unique=True), st.integers(0, 300))
def test_class_allocation_matches_the_greedy_6db_rule(variance, budget):
    bits = allocate_classes(np.array(variance), budget)
    assert bits.tolist() == _greedy_reference(variance, budget)
    assert set(bits.tolist()) <= {0, 4, 8}
    assert bits.sum() == 4 * min(budget // 4, 2 * len(variance))


def _segment(n, d, bits_per_dim, seed, scale_spread=10.0):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, scale_spread, size=d)
    x = (rng.normal(size=(n, d)) * scale).astype(np.float32)
    centroid = x.mean(axis=0)
    hot, cold = build_segment(
        x, centroid, np.arange(n), quantize_attributes(None, n), round(bits_per_dim * d), 4
    )
    return rng, scale, x, Segment.from_bytes(0, hot, "t.arrow"), cold


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(5, 300),
    d=st.integers(2, 24),
    bits_per_dim=st.floats(0.0, 8.0),
    seed=st.integers(0, 10_000),
)
def test_code_bounds_bracket_the_true_distance(n, d, bits_per_dim, seed):
    rng, scale, x, seg, _ = _segment(n, d, bits_per_dim, seed)
    q = (rng.normal(size=(7, d)) * scale * 1.5).astype(np.float32)
    terms = QueryTerms.of(q - seg.centroid, seg.code)
    hat = hat_distances(terms, decode_codes(seg.codes8, seg.codes4), seg.hat_sq)
    lower, upper = bounds(hat.astype(np.float64), seg.residual_sq.astype(np.float64))
    true = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    # The bounds are exact; |q - x_hat|^2 comes from the float32 product form, whose rounding
    # scales with the norms (|q|^2 + |x_hat|^2), not with the distance (seed 150: 1.3e-4 at 0.14).
    norms = ((q - seg.centroid).astype(np.float64) ** 2).sum(1)[:, None] + seg.hat_sq[None, :]
    tol = 1e-4 * (1 + true) + 1e-6 * norms
    assert np.all(lower <= true + tol)
    assert np.all(upper >= true - tol)
    est = estimate(hat, seg.residual_sq)
    assert np.all((est >= lower - tol) & (est <= upper + tol))


@settings(max_examples=15, deadline=None)
@given(d=st.integers(8, 64), seed=st.integers(0, 10_000))
def test_code_estimate_is_unbiased_and_tight_at_six_bits(d, seed):
    """Error statistics of the estimate against true distances on random data: the mean
    error is a small fraction of its spread (no bias), and the relative error is small."""
    rng, scale, x, seg, _ = _segment(2000, d, 6.0, seed, scale_spread=3.0)
    q = (rng.normal(size=(20, d)) * scale).astype(np.float32)
    est = code_distances(seg, q, np.arange(seg.size)).astype(np.float64)
    true = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    err = (est - true) / true.mean()
    assert abs(err.mean()) < 0.2 * err.std() + 1e-4
    assert np.sqrt((err**2).mean()) < 0.08


def test_segment_round_trip_is_zero_copy_and_the_cold_tier_is_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    hot, cold = build_segment(x, x.mean(0), np.arange(300) + 7, quantize_attributes(None, 300), 96, 16)
    assert cold == x.astype("<f4").tobytes()  # byte-exact float32 rows
    arrays = from_arrow_bytes(hot)
    np.testing.assert_array_equal(arrays["ids"], np.arange(300) + 7)
    np.testing.assert_array_equal(arrays["cold_crc"], block_crcs(cold, 64))
    assert arrays["cold_crc"].shape == (-(-300 // COLD_BLOCK_ROWS),)
    assert not arrays["codes8"].flags.writeable  # a view of the downloaded bytes
    seg = Segment.from_bytes(0, hot, "t.arrow")
    assert seg.code.bytes_per_row * 8 <= 96  # the budget holds
    assert "vectors" not in arrays  # float32 rows live in the cold tier only


def test_balanced_kmeans_keeps_partitions_within_ten_percent():
    rng = np.random.default_rng(3)
    # Very unbalanced natural clusters: one holds 70 % of the data.
    x = np.concatenate([rng.normal(0, 1, (7000, 8)), rng.normal(8, 1, (3000, 8))]).astype(np.float32)
    assign = balanced_kmeans(x, 20, seed=0)
    sizes = np.bincount(assign, minlength=20)
    lo, hi = size_bounds(10000, 20)
    assert lo == 450 and hi == 550
    assert sizes.min() >= lo and sizes.max() <= hi and sizes.sum() == 10000
