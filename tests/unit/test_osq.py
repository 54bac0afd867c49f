import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squash.arrays import from_arrow_bytes
from squash.attribute_build import quantize_attributes
from squash.errors import IndexFormatError
from squash.fine import Fine
from squash.osq.kmeans import balanced_kmeans, size_bounds
from squash.osq.scalar import (
    QueryTerms,
    allocate_classes,
    bounds,
    decode_codes,
    estimate,
    fine_values,
    hat_distances,
)
from squash.partition_search import code_distances, fine_distances
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
    hot, cold, _fine = build_segment(
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


@settings(max_examples=15, deadline=None)
@given(d=st.integers(8, 64), seed=st.integers(0, 10_000))
def test_refined_estimate_is_unbiased_and_several_times_tighter(d, seed):
    """The refinement tier's estimate (what rerank="fine" scores) against true distances:
    no bias, and at 6 bits per dimension on data whose every axis is coded (the case the
    tier is for: high intrinsic dimension) its typical error is a fraction of the code's, the 4-bit
    axes gaining 4 bits; its stored residual is exactly what the refined code misses."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 1.5, size=d)
    x = (rng.normal(size=(2000, d)) * scale).astype(np.float32)
    hot, _cold, data = build_segment(x, x.mean(0), np.arange(2000), quantize_attributes(None, 2000), 6 * d, 4)
    seg = Segment.from_bytes(0, hot, "t.arrow")
    fine = Fine.from_bytes(data, seg.size, seg.codes4.shape[1], seg.fine_crc, "t.fine")
    q = (rng.normal(size=(20, d)) * scale).astype(np.float32)
    true = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    rows = np.arange(seg.size)
    refined = fine_distances(seg, fine, q, rows, np.broadcast_to(rows, (20, seg.size))).astype(np.float64)
    coarse = code_distances(seg, q, rows).astype(np.float64)
    err, err_code = (refined - true) / true.mean(), (coarse - true) / true.mean()
    assert abs(err.mean()) < 0.2 * err.std() + 1e-4
    assert seg.code.dims.size == d and seg.code.dims4.size  # every axis coded, some at 4 bits
    # the typical error (median): rows clipped at the cells' 99.9 % edges keep their clipping
    # error in both codes and dominate the mean square
    assert np.median(np.abs(err)) < 0.3 * np.median(np.abs(err_code))
    x_fine = np.broadcast_to(seg.centroid, x.shape).astype(np.float64).copy()
    x_fine[:, seg.code.dims] += fine_values(seg.code, seg.codes8, seg.codes4, fine.fine4)
    np.testing.assert_allclose(fine.fine_sq, ((x - x_fine) ** 2).sum(1), rtol=1e-4, atol=1e-5)


def test_refinement_file_is_checked_against_its_segment():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 12)).astype(np.float32)
    hot, _cold, data = build_segment(x, x.mean(0), np.arange(100), quantize_attributes(None, 100), 48, 8)
    seg = Segment.from_bytes(0, hot, "t.arrow")
    half = seg.codes4.shape[1]
    assert len(data) == 100 * (half + 4) and seg.fine_crc is not None
    Fine.from_bytes(data, seg.size, half, seg.fine_crc, "t.fine")  # intact: loads
    flipped = bytearray(data)
    flipped[7] ^= 1
    with pytest.raises(IndexFormatError, match="checksum"):
        Fine.from_bytes(bytes(flipped), seg.size, half, seg.fine_crc, "t.fine")
    with pytest.raises(IndexFormatError, match="bytes"):
        Fine.from_bytes(data[:-4], seg.size, half, seg.fine_crc, "t.fine")


def test_segment_round_trip_is_zero_copy_and_the_cold_tier_is_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    hot, cold, _fine = build_segment(x, x.mean(0), np.arange(300) + 7, quantize_attributes(None, 300), 96, 16)
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
