"""The planner: calibration stored with the index, recall targets, the exact plan."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import squash
from squash.build import BuildOptions, build_index, calibrate_index
from squash.calibration import Calibration
from squash.cli import main
from squash.errors import InputError
from squash.evaluation import exact_knn, recall_at_k
from squash.manifest import MANIFEST_KEY


def hard_data(n: int, d: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic: 64 loose clusters; queries are noisy mixes of two cluster centres, so they
    lie between clusters, out of the data's distribution (as short text queries do)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + 0.9 * rng.normal(size=(n, d)).astype(np.float32)
    a, b = rng.integers(0, 64, nq), rng.integers(0, 64, nq)
    q = 0.5 * centres[a] + 0.5 * centres[b] + 0.6 * rng.normal(size=(nq, d))
    return x.astype(np.float32), q.astype(np.float32)


@pytest.fixture(scope="module")
def hard_index(tmp_path_factory):
    x, q = hard_data(40_000, 32, 300)
    uri = (tmp_path_factory.mktemp("hard") / "idx").as_uri()
    build_index(x, uri, None, BuildOptions(seed=1))
    return squash.open_index(uri), x, q


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, small_data):
    path = tmp_path_factory.mktemp("small")
    build_index(small_data.base, path.as_uri(), small_data.attributes, BuildOptions(partitions=12, seed=3))
    return squash.open_index(path.as_uri())


def test_calibrated_index_reaches_the_target_where_fixed_defaults_do_not(hard_index):
    index, x, q = hard_index
    truth = exact_knn(x, q, np.ones(x.shape[0], dtype=bool), 10)
    fixed = index.search(q, 10, params=squash.SearchParams(plan="routed", routing_factor=1.12))
    target = index.search(q, 10, params=squash.SearchParams(plan="routed"))
    strict = index.search(q, 10, params=squash.SearchParams(plan="routed", target_recall=0.99))
    r_fixed, r_target, r_strict = (recall_at_k(r.ids, truth) for r in (fixed, target, strict))
    print(f"synthetic hard 40k x 32: fixed defaults {r_fixed:.4f}, target 0.95 -> {r_target:.4f}, "
          f"target 0.99 -> {r_strict:.4f}")  # fmt: skip
    assert fixed.stats["rule"] == "fixed" and target.stats["rule"] == "calibrated"
    assert r_fixed < 0.95 <= r_target
    assert r_strict >= 0.99
    assert target.stats["plan"] == "routed" and target.stats["expected_recall"] >= 0.95
    assert (target.ids >= 0).all()  # a full k for every query


def test_default_plan_is_the_cheaper_one_and_says_so(hard_index):
    index, x, q = hard_index
    res = index.search(q, 10)
    assert res.stats["plan"] in ("routed", "exact")
    cost = res.stats["cost_ms"]
    assert res.stats["plan"] == ("exact" if cost["exact"] < cost["routed"] else "routed")
    truth = exact_knn(x, q, np.ones(x.shape[0], dtype=bool), 10)
    assert recall_at_k(res.ids, truth) >= 0.95


@pytest.mark.parametrize("params", [{"plan": "exact"}, {"target_recall": 1.0}])
def test_exact_plan_equals_brute_force(small_index, small_data, params):
    price = small_data.attributes.column("price").to_numpy()
    filt, mask = {"price": {"$lt": 40}}, price < 40
    res = small_index.search(small_data.queries, 10, filt, squash.SearchParams.from_dict(params))
    truth = exact_knn(small_data.base, small_data.queries, mask, 10)
    assert res.stats["plan"] == "exact" and res.stats["expected_recall"] == 1.0
    np.testing.assert_array_equal(res.ids, truth)
    diff = small_data.base[truth] - small_data.queries[:, None, :]
    np.testing.assert_allclose(res.distances, np.einsum("qkd,qkd->qk", diff, diff), rtol=1e-5)


def test_selective_filter_takes_the_exact_plan(small_index, small_data):
    price = small_data.attributes.column("price").to_numpy()
    cut = float(np.sort(price)[15])  # 16 matches
    res = small_index.search(small_data.queries, 10, {"price": {"$lte": cut}})
    assert res.stats["plan"] == "exact"
    truth = exact_knn(small_data.base, small_data.queries, price <= cut, 10)
    # the final ranking at the default target may be estimated (code or refinement tier)
    assert recall_at_k(res.ids, truth) >= 0.95
    exact = small_index.search(
        small_data.queries, 10, {"price": {"$lte": cut}}, params=squash.SearchParams(target_recall=1)
    )
    np.testing.assert_array_equal(exact.ids, truth)


def test_calibration_round_trips_through_the_manifest(small_index):
    cal = small_index.calibration
    assert cal is not None and cal.source == "synthetic-hard"
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    np.testing.assert_array_equal(again.score, cal.score)
    np.testing.assert_array_equal(again.coverage, cal.coverage)
    # More recall never needs less routing; a rarer filter never needs a smaller score.
    for table in (cal.score, cal.coverage):
        capped = np.minimum(table, 1e300)  # inf (uncalibrated) compares as the largest
        assert (np.diff(capped, axis=2) >= 0).all()
    assert (np.diff(np.minimum(cal.score, 1e300), axis=0) >= 0).all()
    score, _, expected = cal.threshold(1.0, 10, 0.95)
    assert math.isfinite(score) and expected >= 0.95
    assert cal.threshold(1.0, 10, 1.0)[0] == math.inf


def test_uncalibrated_index_uses_the_fixed_rule(tmp_path, small_data):
    uri = (tmp_path / "idx").as_uri()
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(calibration_queries=0))
    index = squash.open_index(uri)
    assert index.calibration is None
    res = index.search(small_data.queries, 10, params=squash.SearchParams(plan="routed"))
    assert res.stats["rule"] == "fixed" and res.stats["expected_recall"] is None


def test_user_queries_calibrate_and_recalibrate_in_place(tmp_path, small_data):
    uri = (tmp_path / "idx").as_uri()
    build_index(small_data.base, uri, None, BuildOptions(seed=3), calibration_queries=small_data.queries)
    assert squash.open_index(uri).calibration.source == "queries"
    before = (tmp_path / "idx" / MANIFEST_KEY).read_bytes()
    cal = calibrate_index(uri, None, n_queries=90)
    after = squash.open_index(uri)
    assert cal.source == after.calibration.source == "synthetic-hard" and cal.n_queries == 90
    old, new = json.loads(before), json.loads(after.manifest.to_json())
    assert {k: v for k, v in old.items() if k != "calibration"} == {
        k: v for k, v in new.items() if k != "calibration"
    }


def test_calibrate_on_s3(tmp_path, small_data, s3_bucket):
    uri = f"s3://{s3_bucket}/idx"
    build_index(small_data.base, uri, None, BuildOptions(calibration_queries=0))
    np.save(tmp_path / "q.npy", small_data.queries)
    assert main(["calibrate", "--index-uri", uri, "--queries", str(tmp_path / "q.npy"), "--quiet"]) == 0
    index = squash.open_index(uri)
    assert index.calibration.source == "queries"
    routed = squash.SearchParams(plan="routed")
    assert index.search(small_data.queries, 10, params=routed).stats["rule"] == "calibrated"


@pytest.mark.parametrize("value", [0, -0.5, 1.01, float("nan"), float("inf"), "high", True])
def test_target_recall_out_of_range(value):
    with pytest.raises(InputError) as err:
        squash.SearchParams.from_dict({"target_recall": value})
    assert err.value.field == "target_recall"


def test_cli_rejects_a_bad_target_recall(small_index, small_data, tmp_path, capsys):
    np.save(tmp_path / "q.npy", small_data.queries)
    argv = ["search", "--index-uri", small_index.storage.uri, "--queries", str(tmp_path / "q.npy")]
    assert main([*argv, "--output", str(tmp_path / "o.npz"), "--target-recall", "1.5"]) == 2
    assert "target_recall=1.5 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("bad", ["dims", "nan"])
def test_bad_calibration_queries_write_nothing(tmp_path, small_data, bad, capsys):
    q = small_data.queries.copy()
    q = q[:, :-1] if bad == "dims" else np.where(np.arange(q.shape[1]) == 3, np.nan, q).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    np.save(tmp_path / "x.npy", small_data.base)
    uri = (tmp_path / "idx").as_uri()
    with pytest.raises(InputError) as err:
        build_index(small_data.base, uri, None, calibration_queries=q)
    assert err.value.field == "calibration_queries"
    assert not (tmp_path / "idx").exists() or not any((tmp_path / "idx").iterdir())
    cli = ["build", "--vectors", str(tmp_path / "x.npy"), "--index-uri", uri, "--quiet"]
    assert main([*cli, "--calibration-queries", str(tmp_path / "q.npy")]) == 2
    assert "calibration queries" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists() or not any((tmp_path / "idx").iterdir())
    # ... and recalibrating an existing index with them leaves its manifest untouched.
    build_index(small_data.base, uri, None, BuildOptions(calibration_queries=0))
    before = (tmp_path / "idx" / MANIFEST_KEY).read_bytes()
    assert main(["calibrate", "--index-uri", uri, "--queries", str(tmp_path / "q.npy"), "--quiet"]) == 2
    assert (tmp_path / "idx" / MANIFEST_KEY).read_bytes() == before
