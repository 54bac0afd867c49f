"""A SearchResult knows its index's metric: scores are cosines on a cosine index."""

import numpy as np
import pytest

import squash


def test_cosine_scores_are_cosines(tmp_path):
    x = np.random.default_rng(2).normal(size=(200, 8)).astype(np.float32)
    uri = (tmp_path / "cos").as_uri()
    squash.build_index(
        x, uri, None, squash.BuildOptions(metric="cosine", partitions=2, calibration_queries=0)
    )
    res = squash.open_index(uri).search(x[:2], k=3)
    assert res.metric == "cosine" and res.attributes is None
    np.testing.assert_allclose(res.scores, 1 - res.distances, rtol=1e-6)
    assert res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
