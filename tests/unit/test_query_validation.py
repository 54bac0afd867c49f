"""Queries that cannot be answered correctly are rejected, naming the field — never answered short."""

from __future__ import annotations

import numpy as np
import pytest

import squash
from squash.build import BuildOptions, build_index
from squash.errors import InputError


@pytest.fixture(scope="module")
def l2_index(tmp_path_factory, small_data):
    uri = tmp_path_factory.mktemp("l2").as_uri()
    build_index(small_data.base[:1000], uri, None, BuildOptions(partitions=4))
    return squash.open_index(uri)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: np.full(d, 1e19),  # every component large but finite in float32
        lambda d: np.r_[1e20, np.zeros(d - 1)],  # one component
    ],
    ids=["all-1e19", "one-1e20"],
)
def test_huge_finite_query_is_rejected_not_answered_empty(l2_index, make):
    q = make(l2_index.dims).astype(np.float32)
    assert np.isfinite(q).all()
    with pytest.raises(InputError, match="too large") as exc:
        l2_index.search(q, k=5)
    assert exc.value.field == "vector"


def test_batch_with_one_huge_query_is_rejected_as_a_whole(l2_index, small_data):
    good = small_data.queries[0]
    huge = np.full(l2_index.dims, 1e19, np.float32)
    with pytest.raises(InputError, match="query 1") as exc:
        l2_index.search(np.stack([good, huge]), k=5)
    assert exc.value.field == "vector"


def test_queries_at_the_build_limit_still_answer(l2_index, small_data):
    """The rule is the build's (norm <= MAX_NORM): a large but valid query gets k results."""
    q = small_data.queries[0] / np.linalg.norm(small_data.queries[0]) * 1e17
    res = l2_index.search(q.astype(np.float32), k=5)
    assert (res.ids >= 0).all() and np.isfinite(res.distances).all()
