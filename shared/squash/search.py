"""Search a set of partitions for a batch of queries and merge: the unit of work of one
worker (in-process search runs it over every planned partition)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .attributes import AttributeSpec
from .filters import Node
from .params import SearchParams
from .partition_search import filter_rows, search_partition
from .results import TopK, merge
from .segment import Segment


def search_partitions(
    load: Callable[[int], Segment],
    assignments: Iterable[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    node: Node | None,
    specs: list[AttributeSpec],
    params: SearchParams,
) -> TopK:
    """Search each ``(partition, query indices)`` pair and merge into one TopK over all queries."""
    q = queries.shape[0]
    parts = [TopK.empty(q, k)]
    for partition, qidx in assignments:
        if qidx.size == 0:
            continue
        seg = load(partition)
        l0, rows = filter_rows(seg, node, specs)
        local = search_partition(seg, queries[qidx], k, rows, l0, params)
        full = TopK.empty(q, k)
        full.ids[qidx], full.distances[qidx], full.stats[qidx] = local.ids, local.distances, local.stats
        parts.append(full)
    return merge(parts, k)
