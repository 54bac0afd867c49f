"""metric="dot" on real, not normalised data: Fashion-MNIST pixels (row norms from 560 to 5,800), a 20k
subset and 200 test queries, against exact inner-product ground truth."""

import numpy as np
import pytest

import squash
from squash.evaluation import exact_mips, recall_at_k

K = 10
N_BASE, N_QUERIES = 20_000, 200
FILTERS = {
    "none": None,
    "label in Bag, Coat": {"label": {"$in": ["Bag", "Coat"]}},
}


@pytest.fixture(scope="module")
def fm_dot(fashion, tmp_path_factory):
    uri = tmp_path_factory.mktemp("fmnist-dot").as_uri()
    base, attrs = fashion.base[:N_BASE], fashion.attributes.slice(0, N_BASE)
    squash.build_index(base, uri, attrs, squash.BuildOptions(metric="dot", seed=0))
    return squash.open_index(uri), base, np.asarray(attrs.column("label").to_pylist())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FILTERS))
def test_dot_recall_at_10_on_fashion_mnist(fm_dot, fashion, name):
    index, base, label = fm_dot
    filt = FILTERS[name]
    mask = np.ones(base.shape[0], bool) if filt is None else np.isin(label, filt["label"]["$in"])
    queries = fashion.queries[:N_QUERIES]
    norms = np.linalg.norm(base, axis=1)
    assert np.percentile(norms, 90) > 2 * np.percentile(norms, 10)  # not normalised: MIPS is not cosine
    res = index.search(queries, k=K, filter=filt)
    r = recall_at_k(res.ids, exact_mips(base, queries, mask, K))
    print(f"dot recall@10 {name}: {r:.4f} ({res.stats['plan']}, rerank {res.stats['rerank']})")
    assert r >= 0.95
    assert np.all(mask[res.ids[res.ids >= 0]])
    assert np.all(np.diff(res.scores, axis=1) <= 0)  # inner products, best first
    exact = np.einsum("qd,qkd->qk", queries.astype(np.float64), base[res.ids].astype(np.float64))
    if res.stats["distances"] == "exact":
        np.testing.assert_allclose(res.scores, exact, rtol=1e-4)
    else:  # the code's estimate of |q'-x'|^2 (of size M^2) carries the score, times |q|/M
        scale = np.linalg.norm(queries, axis=1)[:, None] * index.manifest.dot_max_norm
        assert np.all(np.abs(res.scores - exact) <= 0.01 * scale)
