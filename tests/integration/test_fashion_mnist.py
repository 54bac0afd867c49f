"""Recall@10 on real data: Fashion-MNIST, 60k base, 1,000 test queries, exact ground truth."""

import numpy as np
import pytest

import squash
from squash.datasets import fashion_filters
from squash.evaluation import exact_knn, recall_at_k

K = 10
SELECTIVITY = {
    "none": (1.0, 1.0),
    "50%": (0.45, 0.55),
    "10%": (0.09, 0.11),
    "1%": (0.007, 0.013),
    "0.1%": (0.0007, 0.0013),
}


@pytest.fixture(scope="module")
def fm_index(fashion, tmp_path_factory):
    uri = tmp_path_factory.mktemp("fmnist").as_uri()
    squash.build_index(fashion.base, uri, fashion.attributes, squash.BuildOptions(seed=0))
    return squash.open_index(uri)


@pytest.mark.slow
@pytest.mark.parametrize("levels", ["auto", "all"])
@pytest.mark.parametrize("name", list(SELECTIVITY))
def test_recall_at_10_on_fashion_mnist(fm_index, fashion, name, levels):
    filt, mask = fashion_filters(fashion.attributes)[name]
    lo, hi = SELECTIVITY[name]
    assert lo <= mask.mean() <= hi, f"filter {name} has selectivity {mask.mean():.4f}"
    # The level-pruning path is ~20x slower in-process: 200 queries keep the test short.
    queries = fashion.queries if levels == "auto" else fashion.queries[:200]
    res = fm_index.search(queries, k=K, filter=filt, params=squash.SearchParams(levels=levels))
    truth = exact_knn(fashion.base, queries, mask, K)
    r = recall_at_k(res.ids, truth)
    print(f"recall@10 {name} levels={levels}: {r:.4f}")
    assert r >= 0.95
    assert np.all((res.ids >= 0).sum(axis=1) == min(K, int(mask.sum())))
    assert np.all(mask[res.ids[res.ids >= 0]])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SELECTIVITY))
def test_target_recall_0_99_on_fashion_mnist(fm_index, fashion, name):
    filt, mask = fashion_filters(fashion.attributes)[name]
    params = squash.SearchParams(target_recall=0.99)
    res = fm_index.search(fashion.queries, k=K, filter=filt, params=params)
    r = recall_at_k(res.ids, exact_knn(fashion.base, fashion.queries, mask, K))
    plan, expected = res.stats["plan"], res.stats["expected_recall"]
    print(f"recall@10 {name} target 0.99: {r:.4f} ({plan}, expected {expected})")
    assert r >= 0.99
    assert res.stats["expected_recall"] >= 0.99
    assert np.all((res.ids >= 0).sum(axis=1) == min(K, int(mask.sum())))


@pytest.mark.slow
def test_hot_tier_is_a_quarter_of_float32_and_default_search_reads_no_float32(fm_index, fashion):
    stats, d = fm_index.manifest.stats, fm_index.dims
    float32 = 4 * d * fm_index.manifest.n
    print(f"hot tier {stats['hot_bytes_per_vector']:.0f} B/vector (float32 {4 * d}); "
          f"stored {stats['index_bytes'] / float32:.3f}x float32")  # fmt: skip
    assert stats["hot_bytes_per_vector"] <= d  # <= 1/4 of the float32 bytes
    assert stats["index_bytes"] <= 1.25 * float32
    res = fm_index.search(fashion.queries[:200], k=10)
    assert res.stats["rerank"] == "none" and res.stats["refine_gets"] == 0
    assert res.stats["hot_bytes_resident"] == fm_index.cache.nbytes > 0
