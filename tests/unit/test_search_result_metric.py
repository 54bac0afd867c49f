"""A search's result carries its index's metric, so ``scores`` is cos for a cosine index
(the metric was once passed positionally into ``attributes``: scores came out as −distance)."""

from __future__ import annotations

import numpy as np

import squash


def test_cosine_result_scores_are_cosines(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    uri = f"file://{tmp_path}/cos"
    squash.build_index(vectors, uri, options=squash.BuildOptions(metric="cosine", calibration_queries=0))
    res = squash.open_index(uri).search(vectors[:3], k=5)
    assert res.metric == "cosine" and res.attributes is None
    np.testing.assert_allclose(res.scores, 1.0 - res.distances, atol=1e-6)
    assert np.all(res.scores[:, 0] > 0.99)  # each query finds itself
