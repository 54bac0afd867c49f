import numpy as np
import pytest

import squash
from squash.build import BuildOptions, build_index
from squash.errors import InputError
from squash.refine import ColdTier
from squash.results import TopK, merge
from squash.runtime.tree import TreeLayout, function_name
from squash.search import search_partitions


@pytest.mark.parametrize(("b", "depth", "size"), [(2, 2, 7), (4, 1, 5), (4, 2, 21), (1, 3, 4), (3, 0, 1)])
def test_layout_is_a_complete_tree(b, depth, size):
    t = TreeLayout(b, depth)
    assert t.size == size
    assert sorted(t.subtree(0)) == list(range(size))  # every node reached exactly once
    parents = {c: p for p in range(size) for c in t.children(p)}
    assert sorted(parents) == list(range(1, size))
    assert function_name("squash", 3) == "squash-worker-3"


def test_partition_affinity_is_stable():
    t = TreeLayout(2, 2)
    a = t.assign([0, 5, 7, 12, 14])
    b = t.assign([14, 12, 7, 5, 0])
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert {p: t.owner(p) for p in (0, 5, 7, 12, 14)} == {0: 0, 5: 5, 7: 0, 12: 5, 14: 0}
    assert sum(len(v) for v in a.values()) == 5


def test_bad_tree_shapes():
    with pytest.raises(InputError):
        TreeLayout(0, 1)
    with pytest.raises(InputError):
        TreeLayout(10, 4)


@pytest.mark.parametrize(("b", "depth"), [(2, 2), (4, 1)])
def test_searching_per_node_and_merging_up_the_tree_equals_in_process(tmp_path, small_data, b, depth):
    uri = (tmp_path / "idx").as_uri()
    build_index(small_data.base, uri, small_data.attributes, BuildOptions(partitions=16, seed=2))
    index = squash.open_index(uri)
    q, k, filt = small_data.queries, 10, {"price": {"$lt": 60}}
    expected = index.search(q, k=k, filter=filt)

    node = index.parse_filter(filt)
    params = squash.SearchParams()
    plan = index.plan(index.prepare_queries(q), k, node, params)
    tree = TreeLayout(b, depth)
    owned = tree.assign(plan.partitions)

    def run(position: int) -> TopK:  # what one worker does: children first, then its own, merge
        kids = [run(c) for c in tree.children(position)]
        own = search_partitions(
            lambda p: index.segment(p)[0],
            ((p, plan.queries_of(p)) for p in owned[position]),
            index.prepare_queries(q), k, node, index.manifest.attributes, plan.execution_params(params),
            ColdTier(index.storage),
        )  # fmt: skip
        return merge([own, *kids], k)

    top = run(0)
    np.testing.assert_array_equal(top.ids, expected.ids)
    np.testing.assert_array_equal(top.distances, expected.distances)
    assert top.stats_dict()["l4_scored"] == expected.stats["l4_scored"]
