"""metric="dot": maximum inner product through the MIPS-to-L2 augmentation (squash.metrics)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import squash
from squash import cli
from squash.build import BuildOptions, build_index, calibrate_index, calibration_sample
from squash.calibration import hard_queries
from squash.errors import IndexFormatError, InputError
from squash.manifest import MANIFEST_KEY, Manifest
from squash.metrics import DotSpace, augment_queries, augment_rows, max_norm, scores, user_distances
from squash.osq.klt import fit_klt
from squash.params import SearchParams

K = 10


def _data(seed: int = 5, n: int = 4000, d: int = 24, q: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Rows with very different norms (MIPS differs from L2 and cosine there), a few all zero."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(10, d))
    base = centres[rng.integers(0, 10, n)] + rng.normal(size=(n, d))
    base *= rng.lognormal(0, 0.5, size=(n, 1))
    base[:3] = 0.0  # all-zero rows are fine for dot
    # queries from the data's distribution, of lengths over two decades (not the ranking's business)
    queries = (centres[rng.integers(0, 10, q)] + rng.normal(size=(q, d))) * rng.lognormal(0, 1.2, size=(q, 1))
    return base.astype(np.float32), queries.astype(np.float32)


def exact_ip(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, inner products) of the exact top-k by inner product, float64, ties by row."""
    ip = queries.astype(np.float64) @ base.astype(np.float64).T
    ids = np.argsort(-ip, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(ip, ids, axis=1)


@pytest.fixture(scope="module")
def dot_data():
    return _data()


def _groups(n: int) -> np.ndarray:
    return np.random.default_rng(9).integers(0, 5, n)


@pytest.fixture(scope="module")
def dot_index(tmp_path_factory, dot_data):
    uri = tmp_path_factory.mktemp("dot").as_uri()
    attrs = pa.table({"group": pa.array(_groups(dot_data[0].shape[0]))})
    build_index(dot_data[0], uri, attrs, BuildOptions(metric="dot", partitions=16, seed=3))
    return squash.open_index(uri)


def test_exact_search_is_exact_mips(dot_index, dot_data):
    base, queries = dot_data
    res = dot_index.search(queries, k=K, params=SearchParams(target_recall=1.0))
    ids, ip = exact_ip(base, queries, K)
    assert res.stats["distances"] == "exact"
    np.testing.assert_array_equal(res.ids, ids)
    # float32 distances of size M² carry the scores, scaled by |q|/M: |q| M is their scale
    scale = np.linalg.norm(queries, axis=1)[:, None] * dot_index.manifest.dot_max_norm
    assert np.all(np.abs(res.scores - ip) <= 1e-5 * scale)
    np.testing.assert_array_equal(res.distances, -res.scores)  # smaller distance = better
    assert np.all(np.diff(res.scores, axis=1) <= 0)  # best first


def test_dot_ranking_differs_from_l2_on_this_data(dot_data):
    """The test data would not tell dot from l2 if their answers agreed."""
    base, queries = dot_data
    d2 = ((queries[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1)
    l2_ids = np.argsort(d2, axis=1, kind="stable")[:, :K]
    overlap = np.mean(
        [np.isin(a, b).mean() for a, b in zip(exact_ip(base, queries, K)[0], l2_ids, strict=True)]
    )
    assert overlap < 0.5


def test_default_search_recall_and_manifest(dot_index, dot_data):
    base, queries = dot_data
    res = dot_index.search(queries, k=K)
    truth, _ = exact_ip(base, queries, K)
    recall = np.mean([np.isin(t, f).mean() for f, t in zip(res.ids, truth, strict=True)])
    assert recall >= 0.95
    m = dot_index.manifest
    assert m.dims == 24 and m.space_dims == 25 and dot_index.router.centroids.shape[1] == 25
    assert m.dot_max_norm == pytest.approx(max_norm(base)) and m.dot_max_norm > 0
    assert all(c.size == 4 * 25 * s for c, s in zip(m.cold, m.partition_sizes, strict=True))
    assert dot_index.info()["metric"] == "dot" and dot_index.info()["dims"] == 24


@pytest.mark.parametrize("target", [1.0, 0.95])
def test_filtered_search(dot_index, dot_data, target):
    base, queries = dot_data
    mask = np.isin(_groups(base.shape[0]), [1, 3])
    res = dot_index.search(queries, k=K, filter={"group": {"$in": [1, 3]}}, params=SearchParams(target))
    rows = np.flatnonzero(mask)
    ids, _ = exact_ip(base[rows], queries, K)
    recall = np.mean([np.isin(t, f).mean() for f, t in zip(res.ids, rows[ids], strict=True)])
    assert recall == 1.0 if target == 1.0 else recall >= 0.95
    assert mask[res.ids].all()


@pytest.mark.parametrize("factor", [1e-3, 40.0])
def test_query_length_scales_scores_not_ranking(dot_index, dot_data, factor):
    """Every query is searched at length M: its own length changes no plan, route or rank."""
    queries = dot_data[1]
    res, scaled = dot_index.search(queries, k=K), dot_index.search(queries * np.float32(factor), k=K)
    np.testing.assert_array_equal(scaled.ids, res.ids)
    np.testing.assert_allclose(scaled.scores, res.scores * factor, rtol=1e-4)
    assert scaled.stats["partitions"] == res.stats["partitions"]


def test_zero_query_is_fine(dot_index):
    res = dot_index.search(np.zeros(24, np.float32), k=5)
    assert (res.ids >= 0).all()
    assert np.all(res.scores == 0.0)  # q·x = 0 for every row


def test_query_dimension_is_the_user_dimension(dot_index):
    with pytest.raises(InputError, match="does not match the index") as exc:
        dot_index.search(np.zeros(25, np.float32), k=5)
    assert exc.value.field == "vector"


def test_bad_metric_lists_every_metric(tmp_path, dot_data):
    with pytest.raises(InputError, match="l2, cosine, dot") as exc:
        build_index(dot_data[0], tmp_path.as_uri(), None, BuildOptions(metric="ip"))
    assert exc.value.field == "metric"


def test_transform_helpers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    x[0] = 0.0
    m = max_norm(x)
    xa = augment_rows(x, m)
    assert xa.shape == (50, 7) and np.array_equal(xa[:, :6], x)
    np.testing.assert_allclose(np.linalg.norm(xa.astype(np.float64), axis=1), m, rtol=1e-6)
    assert xa[0, 6] == pytest.approx(m) and xa[:, 6].min() >= 0.0
    q = rng.normal(size=(4, 6)).astype(np.float32)
    qa = augment_queries(q, m)
    np.testing.assert_allclose(np.linalg.norm(qa.astype(np.float64), axis=1), m, rtol=1e-6)  # length M
    assert (qa[:, 6] == 0).all() and (augment_queries(np.zeros((1, 6)), m) == 0).all()
    d2 = ((qa[:, None, :].astype(np.float64) - xa[None]) ** 2).sum(-1).astype(np.float32)
    d2[:, -1] = np.inf  # an empty slot
    dist = user_distances(d2, q, "dot", m)  # the user's queries: their lengths give the scores
    ip = q.astype(np.float64) @ x.astype(np.float64).T
    np.testing.assert_allclose(-dist[:, :-1], ip[:, :-1], atol=1e-4)
    assert np.isinf(dist[:, -1]).all() and (dist[:, -1] > 0).all()
    assert (scores(dist, "dot")[:, -1] == -np.inf).all()
    assert scores(np.array([[0.25, np.inf]], np.float32), "cosine").tolist() == [[0.75, -np.inf]]
    assert scores(np.array([[4.0]], np.float32), "l2").tolist() == [[-4.0]]


def test_synthetic_calibration_queries_are_queries(dot_data):
    """Hard queries are drawn from augmented rows, but a query is [q · M/|q|, 0]: after
    projecting out the augmented axis of the rotated space and rescaling, un-rotating leaves
    a 0 in the last dim and the query augment_queries would make of the row's first d dims."""
    base, _ = dot_data
    m = max_norm(base)
    xa = augment_rows(base, m)
    rot = fit_klt(xa).rotation.astype(np.float64)
    x = (xa.astype(np.float64) @ rot).astype(np.float32)
    opts = BuildOptions(metric="dot", calibration_queries=60)
    q, exclude, _, source = calibration_sample(
        x, opts, None, np.random.default_rng(1), DotSpace.of("dot", rot, m)
    )
    raw, _ = hard_queries(x, 60, np.random.default_rng(1), normalise=False)
    back = q.astype(np.float64) @ rot.T  # the rotation is orthogonal
    assert source == "synthetic-hard" and q.shape == (60, 25)
    assert np.abs(back[:, -1]).max() <= 1e-5 * m
    want = augment_queries((raw.astype(np.float64) @ rot.T)[:, :-1], m)
    np.testing.assert_allclose(back, want, atol=1e-4 * m)
    held = np.flatnonzero(exclude >= 0)  # a held-out row's query is the user vector itself
    np.testing.assert_allclose(back[held], augment_queries(base[exclude[held]], m), atol=1e-4 * m)


def test_user_calibration_queries_and_recalibration(tmp_path, dot_data):
    base, queries = dot_data
    uri = tmp_path.as_uri()
    build_index(base, uri, None, BuildOptions(metric="dot", partitions=16), calibration_queries=queries)
    assert squash.open_index(uri).calibration.source == "queries"
    with pytest.raises(InputError, match="dimension 25") as exc:
        calibrate_index(uri, augment_queries(queries, 1.0))  # the index's user dimension is 24
    assert exc.value.field == "calibration_queries"
    assert calibrate_index(uri, queries[:30]).source == "queries"  # squash calibrate --queries
    cal = calibrate_index(uri)  # a hard synthetic sample drawn from the augmented rows
    assert cal.source == "synthetic-hard" and cal.ranking is not None
    index = squash.open_index(uri)
    res = index.search(queries, k=K)
    truth, _ = exact_ip(base, queries, K)
    assert np.mean([np.isin(t, f).mean() for f, t in zip(res.ids, truth, strict=True)]) >= 0.95


def test_manifest_needs_the_max_norm(dot_index):
    doc = json.loads(dot_index.storage.read(MANIFEST_KEY))
    del doc["params"]["dot_max_norm"]
    with pytest.raises(IndexFormatError, match="dot_max_norm"):
        Manifest.from_json(json.dumps(doc).encode())
    doc["params"]["dot_max_norm"] = 2.0
    doc["metric"] = "l2"  # then the cold rows are one dimension too wide
    with pytest.raises(IndexFormatError, match=r"cold\[0\]\.size"):
        Manifest.from_json(json.dumps(doc).encode())


def test_l2_manifest_has_no_dot_params(tmp_path, dot_data):
    build_index(dot_data[0], tmp_path.as_uri(), None, BuildOptions(partitions=8, calibration_queries=0))
    m = squash.open_index(tmp_path.as_uri()).manifest
    assert "dot_max_norm" not in m.params and m.space_dims == m.dims == 24 and m.dot_max_norm == 0.0


def test_cli_build_search_info(tmp_path, dot_data, capsys):
    base, queries = dot_data
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "q.npy", queries)
    uri = (tmp_path / "idx").as_uri()
    args = ["build", "--vectors", str(tmp_path / "base.npy"), "--index-uri", uri, "--metric", "dot"]
    assert cli.main([*args, "--partitions", "16", "--quiet", "--calibration-size", "100"]) == 0
    out = tmp_path / "out.npz"
    search = ["search", "--index-uri", uri, "--queries", str(tmp_path / "q.npy"), "--k", "10"]
    assert cli.main([*search, "--output", str(out), "--target-recall", "1"]) == 0
    with np.load(out) as npz:
        assert set(npz.files) == {"ids", "scores"}
        ids, ip = exact_ip(base, queries, K)
        np.testing.assert_array_equal(npz["ids"], ids)
        np.testing.assert_allclose(npz["scores"], ip, rtol=1e-4, atol=1e-3)
    capsys.readouterr()
    assert cli.main(["info", "--index-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "dot"
    with pytest.raises(SystemExit) as exc:
        cli.main(["build", "--vectors", str(tmp_path / "base.npy"), "--index-uri", uri, "--metric", "ip"])
    assert exc.value.code == 2 and "'dot'" in capsys.readouterr().err
