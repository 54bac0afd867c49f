"""Which tree positions a query batch invokes: the root and every node whose subtree owns a
partition the plan visits (idle subtrees are not invoked)."""

from __future__ import annotations

import numpy as np

import squash
from squash.runtime.tree import TreeLayout


def working_positions(uri: str, queries: np.ndarray, filt, tree: TreeLayout, k: int = 10) -> list[int]:
    index = squash.open_index(uri)
    plan = index.plan(index.prepare_queries(queries), k, index.parse_filter(filt), squash.SearchParams())
    out = {0}
    for position in {tree.owner(int(p)) for p in plan.partitions}:
        while position not in out:
            out.add(position)
            position = (position - 1) // tree.branching
    return sorted(out)
