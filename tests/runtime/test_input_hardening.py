"""Hostile but fair input to the coordinator handler: 400 with the documented error body,
naming the field — never a 5xx, a traceback or a wrong answer returned as success."""

from __future__ import annotations

import numpy as np
from conftest import assert_error, post


def test_huge_query_in_a_batch_is_a_400_for_the_whole_batch(coordinator_app, runtime_indexes):
    good = runtime_indexes.queries[0].tolist()
    huge = [1e19] * len(good)
    status, body = post(coordinator_app, "sample", {"vectors": [good, huge], "k": 3})
    err = assert_error(status, body, 400, "vectors")
    assert "query 1" in err["message"] and "too large" in err["message"]
    one = [0.0] * len(good)
    one[3] = 1e20
    status, body = post(coordinator_app, "sample", {"vector": one, "k": 3})
    assert_error(status, body, 400, "vector")


def test_good_batch_still_answers(coordinator_app, runtime_indexes):
    q = runtime_indexes.queries[:2]
    status, body = post(coordinator_app, "sample", {"vectors": q.tolist(), "k": 3})
    assert status == 200 and [len(r) for r in body["results"]] == [3, 3]
    assert np.isfinite([h["distance"] for r in body["results"] for h in r]).all()
