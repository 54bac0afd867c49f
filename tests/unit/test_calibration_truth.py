"""The calibration's ground truth is exact: per selectivity band, every query's nearest
rows over all blocks equal a brute-force search of that band, whatever the sample bounds
prune, the block cut or the merge order."""

from __future__ import annotations

import numpy as np
import pytest

from squash.calibration import BANDS, KS, GroundTruth, band_u, sample_bounds


def _brute(queries, x, u, exclude, band):
    """(rows nearest first, float64 distances to every row: inf outside the band / own row)."""
    d = ((queries[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    d[:, ~(u < band)] = np.inf
    if exclude is not None:
        hit = exclude >= 0
        d[np.flatnonzero(hit), exclude[hit]] = np.inf
    width = min(max(KS), int((u < band).sum()))
    return np.argsort(d, axis=1, kind="stable")[:, :width], d


@pytest.mark.parametrize("sample_size", [4000, 3000, 600, 90, None])  # None: self-bounding
@pytest.mark.parametrize("block", [4000, 777])
def test_truths_equal_brute_force_in_every_band(sample_size: int | None, block: int) -> None:
    rng = np.random.default_rng((sample_size or 1) + block)
    n, d, m, seed = 4000, 12, 40, 5
    x = (rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)).astype(np.float32)
    queries = (x[rng.integers(0, n, m)] + rng.normal(size=(m, d)).astype(np.float32)).astype(np.float32)
    exclude = np.where(rng.random(m) < 0.5, rng.integers(0, n, m), -1)
    u = band_u(seed, 0, n)
    bounds = None
    if sample_size is not None:
        rows = np.sort(rng.choice(n, sample_size, replace=False))
        bounds = sample_bounds(queries, x[rows], u[rows], rows, exclude)
    truth = GroundTruth(queries, seed, exclude, bounds)
    starts = list(range(0, n, block))
    for start in reversed(starts):  # merge order must not matter
        truth.merge(truth.block(start, x[start : start + block]))
    for bi, band in enumerate(BANDS):
        want, dist = _brute(queries, x, u, exclude, band)
        got = truth.truths(bi)
        assert got.shape == want.shape, band
        # the same rows, up to float32 near-ties: every row found is in the band and not
        # excluded, none twice, and their true distances are the brute force's
        got_d = np.take_along_axis(dist, got, 1)
        assert np.isfinite(got_d).all(), band
        assert all(np.unique(r).size == r.size for r in got), band
        np.testing.assert_allclose(
            np.sort(got_d, axis=1), np.take_along_axis(dist, want, 1), rtol=1e-5, err_msg=f"band {band}"
        )
        assert (got == want).mean() > 0.99, band
        assert truth.rows[bi] == int((u < band).sum())


def test_sample_bounds_are_upper_bounds_and_inf_when_the_band_is_thin() -> None:
    rng = np.random.default_rng(1)
    n, d = 5000, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(30, d)).astype(np.float32)
    u = band_u(2, 0, n)
    rows = np.arange(n)
    bounds = sample_bounds(queries, x, u, rows)
    full = ((queries[:, None, :] - x[None]) ** 2).sum(-1)
    for bi, band in enumerate(BANDS):
        inside = full[:, u < band]
        if inside.shape[1] < max(KS):
            assert np.isinf(bounds[bi]).all()
        else:
            kth = np.sort(inside, axis=1)[:, max(KS) - 1]
            assert (bounds[bi] >= kth - 1e-4).all()
