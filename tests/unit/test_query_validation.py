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


@pytest.fixture(scope="module")
def cos_index(tmp_path_factory, small_data):
    uri = tmp_path_factory.mktemp("cos").as_uri()
    build_index(small_data.base[:1000], uri, None, BuildOptions(partitions=4, metric="cosine"))
    return squash.open_index(uri)


def test_cosine_zero_query_is_rejected(cos_index, small_data):
    with pytest.raises(InputError, match=r"query 0 .*zero") as exc:
        cos_index.search(np.zeros(cos_index.dims, np.float32), k=3)
    assert exc.value.field == "vector"
    batch = np.stack([small_data.queries[0], np.zeros(cos_index.dims, np.float32)])
    with pytest.raises(InputError, match=r"query 1 .*zero"):
        cos_index.search(batch, k=3)


def test_cosine_tiny_query_is_normalised_not_rejected(cos_index, small_data):
    q = small_data.queries[0] * np.float32(1e-30)
    assert np.array_equal(cos_index.search(q, k=5).ids, cos_index.search(small_data.queries[0], k=5).ids)


def test_cosine_build_rejects_a_zero_row_naming_it(tmp_path, small_data):
    x = small_data.base[:200].copy()
    x[17] = 0
    with pytest.raises(InputError, match="row 17") as exc:
        build_index(x, tmp_path.as_uri(), None, BuildOptions(partitions=2, metric="cosine"))
    assert exc.value.field == "vectors"
    assert not any(tmp_path.iterdir()), "nothing is written"
    build_index(x, tmp_path.as_uri(), None, BuildOptions(partitions=2, metric="l2"))  # fine for l2
