"""Build + search on small synthetic data: semantics, determinism, crash safety, S3 parity."""

import hashlib

import numpy as np
import pytest

import squash
from squash.build import BuildOptions, build_index
from squash.errors import StorageError
from squash.evaluation import exact_knn, recall_at_k
from squash.manifest import MANIFEST_KEY, Manifest
from squash.storage import LocalStorage, open_storage


def _mask(ds, filt):
    label = np.asarray(ds.attributes.column("label").to_pylist())
    price = ds.attributes.column("price").to_numpy()
    stock = ds.attributes.column("in_stock").to_numpy(zero_copy_only=False)
    masks = {
        None: np.ones(len(label), bool),
        "label": label == "c03",
        "label+price": (label == "c03") & (price < 20),
        "rare": (label == "c03") & (price < 1.5),
        "or": (price >= 99) | (~stock & (label == "c01")),
    }
    return masks[filt]


FILTERS = {
    None: None,
    "label": {"label": "c03"},
    "label+price": {"label": "c03", "price": {"$lt": 20}},
    "rare": {"label": "c03", "price": {"$lt": 1.5}},
    "or": {"$or": [{"price": {"$gte": 99}}, {"in_stock": False, "label": "c01"}]},
}


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, small_data):
    path = tmp_path_factory.mktemp("idx")
    build_index(small_data.base, path.as_uri(), small_data.attributes, BuildOptions(partitions=12, seed=3))
    return squash.open_index(path.as_uri())


@pytest.mark.parametrize(("plan", "levels"), [("auto", "auto"), ("routed", "auto"), ("routed", "all")])
@pytest.mark.parametrize("name", list(FILTERS))
def test_filtered_search_is_accurate_and_full(small_index, small_data, name, plan, levels):
    k = 10
    mask = _mask(small_data, name)
    params = squash.SearchParams(plan=plan, levels=levels)
    res = small_index.search(small_data.queries, k=k, filter=FILTERS[name], params=params)
    truth = exact_knn(small_data.base, small_data.queries, mask, k)
    assert recall_at_k(res.ids, truth) >= 0.95
    # Exactly min(k, matches) results, every one of them matching, sorted by distance.
    found = (res.ids >= 0).sum(axis=1)
    assert np.all(found == min(k, int(mask.sum())))
    assert np.all(mask[res.ids[res.ids >= 0]])
    d = res.distances
    assert np.all(d[:, 1:] >= d[:, :-1])
    # Distances are squared L2: exact from float32, within a few % from a code (estimated).
    i, j = 0, 0
    if res.ids[i, j] >= 0:
        true = ((small_data.base[res.ids[i, j]] - small_data.queries[i]) ** 2).sum()
        exact = res.stats["distances"] == "exact"
        assert res.distances[i, j] == pytest.approx(true, rel=1e-4 if exact else 0.05)


def test_stats_count_levels(small_index, small_data):
    params = squash.SearchParams(plan="routed", levels="all", rerank="float32", min_candidates=500)
    s = small_index.search(small_data.queries[:5], k=5, params=params).stats
    for q in range(5):
        assert s["l0_candidates"][q] == s["exact_matches"][q] > s["l2_kept"][q] == s["l3_kept"][q]
        assert s["l3_kept"][q] > s["l4_scored"][q] >= 5  # float32 re-rank of k x rerank_factor
        assert s["partitions"][q] >= 1
    s = small_index.search(small_data.queries[:5], k=5, filter={"label": "c03"}, params=params).stats
    for q in range(5):
        assert s["l0_candidates"][q] >= s["exact_matches"][q] >= s["l2_kept"][q] >= s["l3_kept"][q]


def test_code_ranking_reads_nothing_and_float32_rerank_gives_exact_distances(small_index, small_data):
    q = small_data.queries
    codes = small_index.search(q, k=10, params=squash.SearchParams(plan="routed", rerank="none"))
    assert codes.stats["refine_gets"] == 0 and codes.stats["refine_bytes_read"] == 0
    assert codes.stats["distances"] == "estimated"
    f32 = small_index.search(q, k=10, params=squash.SearchParams(plan="routed", rerank="float32"))
    assert f32.stats["distances"] == "exact"
    # one range GET per visited partition per batch, at most
    visited = int(np.count_nonzero(np.array(f32.stats["partitions"])))  # queries that visited any
    assert visited == len(q) and 0 < f32.stats["refine_gets"] <= small_index.manifest.partitions
    exact = ((small_data.base[f32.ids].astype(np.float64) - q[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(f32.distances, exact, rtol=1e-4, atol=1e-3)
    est = ((small_data.base[codes.ids].astype(np.float64) - q[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(codes.distances, est, rtol=0.1)
    truth = exact_knn(small_data.base, q, np.ones(len(small_data.base), bool), 10)
    assert recall_at_k(f32.ids, truth) >= recall_at_k(codes.ids, truth) - 0.01


def test_k_larger_than_matches_pads(small_index, small_data):
    mask = _mask(small_data, "rare")
    k = int(mask.sum()) + 5
    res = small_index.search(small_data.queries[:3], k=k, filter=FILTERS["rare"])
    assert np.all((res.ids >= 0).sum(axis=1) == mask.sum())
    assert np.all(res.ids[:, -5:] == -1) and np.all(np.isinf(res.distances[:, -5:]))


def test_cosine_metric(tmp_path, small_data):
    uri = (tmp_path / "cos").as_uri()
    build_index(small_data.base, uri, None, BuildOptions(partitions=8, metric="cosine"))
    res = squash.open_index(uri).search(small_data.queries, k=10)
    b = small_data.base / np.linalg.norm(small_data.base, axis=1, keepdims=True)
    q = small_data.queries / np.linalg.norm(small_data.queries, axis=1, keepdims=True)
    assert recall_at_k(res.ids, exact_knn(b, q, np.ones(len(b), bool), 10)) >= 0.95
    cos = (b[res.ids[0, 0]] * q[0]).sum()
    exact = res.stats["distances"] == "exact"  # else estimated on a code: within a few %
    want = pytest.approx(1 - cos, abs=1e-5) if exact else pytest.approx(1 - cos, rel=0.05)
    assert res.distances[0, 0] == want


def _hashes(path):
    files = sorted(p for p in path.rglob("*.arrow"))
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


def test_build_is_deterministic_for_a_seed(tmp_path, small_data):
    for name in ("a", "b"):
        build_index(
            small_data.base,
            (tmp_path / name).as_uri(),
            small_data.attributes,
            BuildOptions(partitions=6, seed=9),
        )
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_crashed_rebuild_leaves_the_old_index_readable(tmp_path, small_data):
    uri = (tmp_path / "idx").as_uri()
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(partitions=6))
    before = squash.open_index(uri).search(small_data.queries, k=5)

    class Failing(LocalStorage):
        writes = 0

        def write(self, key, data):
            Failing.writes += 1
            if Failing.writes == 4:
                raise StorageError("disk full (simulated)")
            super().write(key, data)

    with pytest.raises(StorageError):
        build_index(
            small_data.base[::-1].copy(),
            Failing(tmp_path / "idx"),
            None,
            BuildOptions(partitions=6),
            replace=True,
        )
    after = squash.open_index(uri).search(small_data.queries, k=5)
    np.testing.assert_array_equal(before.ids, after.ids)


def test_rebuild_replaces_and_keeps_one_previous_build(tmp_path, small_data):
    uri = (tmp_path / "idx").as_uri()
    ids = []
    for seed in range(3):
        build_index(small_data.base, uri, None, BuildOptions(partitions=4, seed=seed), replace=seed > 0)
        ids.append(Manifest.from_json(open_storage(uri).read(MANIFEST_KEY)).build_id)
    left = sorted(p.name for p in (tmp_path / "idx" / "builds").iterdir())
    assert left == sorted(ids[1:])


def test_corrupt_segment_is_detected(tmp_path, small_data):
    uri = (tmp_path / "idx").as_uri()
    build_index(small_data.base, uri, None, BuildOptions(partitions=2))
    seg = next((tmp_path / "idx").rglob("00000.arrow"))
    seg.write_bytes(seg.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(squash.IndexFormatError, match="checksum does not match"):
        squash.open_index(uri).search(small_data.queries, k=5, params=squash.SearchParams(routing_factor=100))


def test_s3_and_file_builds_give_identical_results(tmp_path, small_data, s3_bucket):
    opts = BuildOptions(partitions=10, seed=5)
    build_index(small_data.base, (tmp_path / "f").as_uri(), small_data.attributes, opts)
    build_index(small_data.base, f"s3://{s3_bucket}/indexes/small", small_data.attributes, opts)
    a = squash.open_index((tmp_path / "f").as_uri())
    b = squash.open_index(f"s3://{s3_bucket}/indexes/small")
    for filt in FILTERS.values():
        ra = a.search(small_data.queries, k=10, filter=filt)
        rb = b.search(small_data.queries, k=10, filter=filt)
        np.testing.assert_array_equal(ra.ids, rb.ids)
        np.testing.assert_array_equal(ra.distances, rb.distances)
    assert [(s.size, s.sha256) for s in a.manifest.segments] == [
        (s.size, s.sha256) for s in b.manifest.segments
    ]
