"""The exact plan on the code answers the same whichever way a small batch is scanned: per
partition on the code's product form with only each query's best rows rebuilt (a few
queries, big partitions), or every candidate row rebuilt and pooled into one product (the
large-batch way) — the same ids and, bit for bit, the same distances, filtered or not."""

from __future__ import annotations

import numpy as np
import pytest

import squash
from squash import search
from squash.datasets import synthetic_mixture
from squash.evaluation import exact_knn


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    ds = synthetic_mixture(n=6000, d=128, n_queries=24, clusters=12, seed=4)
    uri = (tmp_path_factory.mktemp("exact-small") / "ix").as_uri()
    squash.build_index(ds.base, uri, ds.attributes, squash.BuildOptions(partitions=10, calibration_queries=0))
    return squash.open_index(uri), ds


@pytest.mark.parametrize("filt", [None, {"price": {"$lt": 80}}, {"price": {"$lt": 3}}])  # all, few, pooled
@pytest.mark.parametrize("batch", [1, 3])
def test_per_partition_and_pooled_scans_agree(index, monkeypatch, filt, batch):
    ix, ds = index
    params = squash.SearchParams(plan="exact", rerank="none")
    sizes = np.array(ix.manifest.partition_sizes) * ix.manifest.dims
    assert sizes.min() >= search.FEW_MIN_VALUES  # unfiltered: every partition per partition
    matches = ix.matching_rows(ix.parse_filter(filt)).size
    price = ds.attributes.column("price").to_numpy()
    for start in range(0, 12, batch):
        q = ds.queries[start : start + batch]
        few = ix.search(q, 10, filter=filt, params=params)
        monkeypatch.setattr(search, "SMALL_BATCH", 0)  # the pooled scan for any batch
        pooled = ix.search(q, 10, filter=filt, params=params)
        monkeypatch.undo()
        assert few.stats["plan"] == pooled.stats["plan"] == "exact"
        np.testing.assert_array_equal(few.ids, pooled.ids)
        np.testing.assert_array_equal(few.distances, pooled.distances)
        # never short: exactly min(k, matches) hits per query, each one matching
        assert ((few.ids >= 0).sum(axis=1) == min(10, matches)).all()
        if filt is not None:  # ids are row numbers (the data has no id column)
            assert (price[few.ids[few.ids >= 0]] < filt["price"]["$lt"]).all()


def test_per_partition_scan_finds_the_true_neighbours(index):
    ix, ds = index
    params = squash.SearchParams(plan="exact", rerank="none")
    mask = ds.attributes.column("price").to_numpy() < 80
    truth = exact_knn(ds.base, ds.queries[:12], mask, 10)
    filt = {"price": {"$lt": 80}}
    found = [ix.search(ds.queries[i], 10, filter=filt, params=params).ids[0] for i in range(12)]
    recall = np.mean([np.intersect1d(f, t).size / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9, recall
