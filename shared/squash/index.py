"""The library's front door: open an index, search a batch of queries with k and a filter.

>>> index = squash.open_index("file:///tmp/fmnist")
>>> res = index.search(queries, k=10, filter={"label": "Bag"})
>>> res.ids, res.distances, res.scores, res.stats
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import dictionaries as dictionary_files
from .attributes import AttrTable, concat, decoded_rows, encoded_rows
from .cache import SegmentCache
from .calibration import Calibration
from .deletes import manifest_deleted
from .errors import IndexFormatError, IndexNotFoundError, InputError
from .filter_eval import evaluate, schema_of
from .filters import Node, fields_of, parse_filter
from .inputs import check_magnitude, normalise_rows
from .manifest import MANIFEST_KEY, Manifest
from .metrics import augment_queries, scores, user_distances
from .params import MAX_K, SearchParams
from .planner import Plan, count_matches, plan_queries
from .refine import ColdTier
from .results import TopK
from .router import Router
from .search import exact_scan, pooled_scan, search_partitions
from .segment import Segment, load_segment, read_indexed_file
from .storage import Storage, open_storage

DEFAULT_CACHE_BYTES = 2 << 30
INCLUDE_CHOICES = ("attributes",)
#: ``info`` lists a category column's values when it has at most this many.
INFO_MAX_CATEGORIES = 256


@dataclass
class SearchResult:
    """ids (Q, k) int64 (-1 padded), distances (Q, k) float32 (smaller is better, +inf
    padded: squared L2, 1 − cos for cosine, −q·x for dot), statistics per query, and with
    ``include=["attributes"]`` each hit's attributes (``attributes[q][j]`` for ``ids[q, j]``;
    nulls as None, timestamps as ISO-8601 strings)."""

    ids: np.ndarray
    distances: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    attributes: list[list[dict[str, Any]]] | None = None
    metric: str = "l2"

    @property
    def scores(self) -> np.ndarray:
        """(Q, k) float32, larger is better, −inf padded: the inner product q·x for dot,
        cos(q, x) for cosine, −squared L2 for l2 (see :mod:`squash.metrics`)."""
        return scores(self.distances, self.metric)


def validate_queries(queries: Any, dims: int, field: str = "vector") -> np.ndarray:
    """Queries as C-contiguous float32 (Q, dims); one vector may be given as (dims,).

    Finiteness and magnitude are checked before the float32 cast, with the build's rule
    (:func:`squash.inputs.check_magnitude`): a query whose squared distances would overflow
    float32 is an error, never an empty answer.
    """
    try:
        arr = np.asarray(queries)
        if arr.dtype.kind not in "fiub":  # e.g. object arrays of Python ints
            arr = arr.astype(np.float64)
    except OverflowError as exc:
        raise InputError("queries hold a number too large for float32", field=field) from exc
    except (TypeError, ValueError) as exc:
        raise InputError("queries must be numeric vectors", field=field) from exc
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"queries must be a non-empty (Q, {dims}) array, got shape {arr.shape}", field=field)
    if arr.shape[1] != dims:
        raise InputError(f"query dimension {arr.shape[1]} does not match the index ({dims})", field=field)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise InputError(
            f"query {int(np.flatnonzero(~finite)[0])} contains NaN or infinite values", field=field
        )
    check_magnitude(arr, "queries", field=field, row="query")
    return np.ascontiguousarray(arr, dtype=np.float32)


def validate_include(include: Any) -> frozenset[str]:
    """What a library search returns besides ids and distances: a subset of INCLUDE_CHOICES."""
    if isinstance(include, str) or not isinstance(include, list | tuple | set | frozenset):
        raise InputError(f"include must be a list drawn from {list(INCLUDE_CHOICES)}", field="include")
    bad = sorted(str(i) for i in set(include) - set(INCLUDE_CHOICES))
    if bad:
        raise InputError(
            f"include: unknown value(s) {bad}; choose from {list(INCLUDE_CHOICES)}", field="include"
        )
    return frozenset(include)


def validate_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer from 1 to {MAX_K}, got {k!r}", field="k")
    return int(k)


class Index:
    """An opened index: manifest and router in memory, segments loaded on demand (cached)."""

    def __init__(self, storage: Storage, manifest: Manifest, router: Router, cache: SegmentCache) -> None:
        self.storage = storage
        self.manifest = manifest
        self.router = router
        self.cache = cache
        self.bytes_read = 0
        where = f"{storage.uri}/{MANIFEST_KEY}"
        raw = manifest.calibration
        self.calibration = None if raw is None else Calibration.from_json(raw, where)
        self._raw: dict[str, Any] | None = None  # see _raw_attributes
        self.dictionaries: dict[str, dictionary_files.Dictionary] = {}
        self._id_order: np.ndarray | None = None  # see _locate
        self.deleted: np.ndarray | None = None  # (n,) deleted rows, partition order (None: none)

    @classmethod
    def open(cls, uri: str | Storage, cache: SegmentCache | None = None) -> Index:
        storage = open_storage(uri) if isinstance(uri, str) else uri
        try:
            raw = storage.read(MANIFEST_KEY)
        except IndexNotFoundError as exc:
            raise IndexNotFoundError(f"no squash index at {storage.uri} ({MANIFEST_KEY} is missing)") from exc
        manifest = Manifest.from_json(raw, f"{storage.uri}/{MANIFEST_KEY}")
        data = manifest.router.verify(read_indexed_file(storage, manifest.router.key))
        router = Router.from_bytes(data, manifest.attributes, manifest.router.key)
        read = len(data)
        for ref in manifest.router_deltas:  # writes' rows, in commit order
            delta = ref.verify(read_indexed_file(storage, ref.key))
            router.extend(delta, ref.key)
            read += len(delta)
        router.check(manifest, manifest.router.key)
        router.parents = np.asarray(manifest.parents, dtype=np.int64)
        cache = cache if cache is not None else SegmentCache(DEFAULT_CACHE_BYTES)  # an empty one is falsy
        index = cls(storage, manifest, router, cache)
        index.bytes_read = read
        index.deleted = manifest_deleted(storage, manifest)
        if index.deleted is not None:
            router.live = ~index.deleted
            index.bytes_read += manifest.deleted.size
        if manifest.dictionaries is not None:
            ref = manifest.dictionaries
            raw_dicts = ref.verify(read_indexed_file(storage, ref.key))
            index.dictionaries = dictionary_files.from_bytes(raw_dicts, ref.key)
            index.bytes_read += len(raw_dicts)
            index._check_dictionaries()
        return index

    def _check_dictionaries(self) -> None:
        for spec in self.manifest.attributes:
            if spec.kind in ("category", "list"):
                found = self.dictionaries.get(spec.name)
                if found is None or len(found) != spec.values:
                    raise IndexFormatError(
                        f"{self.manifest.dictionaries.key}: dictionary of {spec.name!r} is missing or "
                        f"does not hold its {spec.values} values (corrupt index)"
                    )

    @property
    def dims(self) -> int:
        return self.manifest.dims

    def summary(self) -> dict[str, Any]:
        """The manifest's summary, with the values of small category columns."""
        out = self.manifest.summary()
        for entry in out["attributes"]:
            found = self.dictionaries.get(entry["name"])
            if entry["type"] == "category" and found is not None and len(found) <= INFO_MAX_CATEGORIES:
                entry["categories"] = found.values.to_pylist()
        return out

    def info(self) -> dict[str, Any]:
        return self.summary() | {"uri": self.storage.uri}

    def prepare_queries(self, queries: Any, field: str = "vector") -> np.ndarray:
        """Validated float32 queries (``dims`` wide), unit-normalised for cosine (a zero
        query is an error), augmented for dot (see :mod:`squash.metrics`), in the index's
        rotated space (where its centroids, codes and float32 rows live: ``space_dims`` wide)."""
        q = validate_queries(queries, self.dims, field)
        if self.manifest.metric == "cosine":
            q = normalise_rows(q, "queries", field=field, row="query")
        elif self.manifest.metric == "dot":
            q = augment_queries(q, self.manifest.dot_max_norm)
        return self.router.rotate(q)

    def parse_filter(self, filt: Any) -> Node | None:
        return parse_filter(filt, self.manifest.attributes, self.dictionaries)

    def plan(self, queries: np.ndarray, k: int, node: Node | None, params: SearchParams) -> Plan:
        if params.rerank == "fine" and not self.manifest.refinement:
            raise InputError(
                'rerank "fine" needs the refinement tier, which this index does not keep (its code '
                'ranks well enough, or it was built with refine="off" or by an older squash); '
                'use "none" or "float32"',
                field="rerank",
            )
        return plan_queries(self.router, queries, k, node, params, self.calibration)

    def segment(self, partition: int) -> tuple[Segment, bool]:
        """The loaded segment of ``partition`` and whether it came from the cache."""
        seg, hit = load_segment(self.storage, partition, self.manifest.segments[partition], self.cache)
        if not hit:
            self.bytes_read += seg.file_bytes
        return seg, hit

    def delete(self, ids: Any = None, filter: Any = None) -> Any:
        """Delete vectors by ``ids`` or by ``filter`` (see :mod:`squash.deletes`) and reopen
        this index at the new version, so its next search sees the write."""
        from .deletes import delete

        result = delete(self.storage, ids=ids, filter=filter)
        self.refresh()
        return result

    def upsert(self, ids: Any, vectors: Any, attributes: Any = None) -> Any:
        """Insert or replace vectors by id (see :mod:`squash.upserts`) and reopen this index
        at the new version, so its next search sees the write."""
        from .upserts import upsert

        result = upsert(self.storage, ids, vectors, attributes)
        self.refresh()
        return result

    def compact(self) -> Any:
        """Fold writes into rebuilt partitions (see :mod:`squash.compact`); reopens this index."""
        from .compact import compact

        result = compact(self.storage)
        self.refresh()
        return result

    def refresh(self) -> None:
        """Reopen at the manifest's current version (segments stay cached: keys are immutable)."""
        self.__dict__.update(Index.open(self.storage, self.cache).__dict__)

    def search(
        self,
        queries: Any,
        k: int = 10,
        filter: Any = None,
        params: SearchParams | None = None,
        include: Any = (),
    ) -> SearchResult:
        """k nearest neighbours of each query among vectors matching ``filter``;
        ``include=["attributes"]`` also returns each hit's attributes."""
        started = time.perf_counter()
        k = validate_k(k)
        with_attrs = "attributes" in validate_include(include)
        user_q = validate_queries(queries, self.dims)
        q = self.prepare_queries(user_q)
        node = self.parse_filter(filter)
        params = params or SearchParams()
        bytes_before = self.bytes_read
        plan = self.plan(q, k, node, params)
        planned = time.perf_counter()
        cold = ColdTier(self.storage, cache=self.cache)
        top = self.search_planned(q, k, node, plan, params, cold)
        result = self._result(top, user_q, plan, started, planned, self.bytes_read - bytes_before, cold)
        if with_attrs:
            result.attributes = self.attributes_of(result.ids)
        return result

    def search_planned(
        self, q: np.ndarray, k: int, node: Node | None, plan: Plan, params: SearchParams, cold: ColdTier
    ) -> TopK:
        """Run ``plan`` for prepared queries ``q`` here, in this process: the top-k in the
        index's internal distances (what a worker tree answers for the same plan)."""
        run = plan.execution_params(params)
        pooled = pooled_scan(run)
        if plan.kind == "exact" and pooled is not None and node is not None:
            load = lambda p: self.segment(p)[0]  # noqa: E731
            return exact_scan(load, plan.partitions, q, k, self._matches(node, plan), cold, pooled)
        return search_partitions(
            lambda p: self.segment(p)[0],
            ((int(p), plan.queries_of(int(p))) for p in plan.partitions),
            q,
            k,
            node,
            self.manifest.attributes,
            run,
            cold,
            self.dead_rows,
        )

    def attributes_of(self, ids: np.ndarray) -> list[list[dict[str, Any]]]:
        """Attributes of every id in ``ids`` (Q, k), -1 padding skipped (read from the
        segments that hold them)."""
        wanted = np.unique(ids[ids >= 0])
        rows, _ = self.rows_of_ids(wanted)
        part = np.searchsorted(self.router.offsets, rows, side="right") - 1
        encoded: dict[str, dict[str, Any]] = {}
        for p in np.unique(part).tolist():
            seg = self.segment(p)[0]
            local = rows[part == p] - self.router.offsets[p]
            encoded |= encoded_rows(self.manifest.attributes, seg.table(), local)
        values = decoded_rows(self.manifest.attributes, self.dictionaries, encoded)
        return [[values[str(i)] for i in row if i >= 0] for row in ids.tolist()]

    def rows_of_ids(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows in partition order of the ``ids`` the index holds live, mask of which ids it
        holds). A replaced id's old row is deleted, so each id has at most one live row."""
        if self._id_order is None:
            live = np.arange(self.router.n) if self.deleted is None else np.flatnonzero(~self.deleted)
            self._id_order = live[np.argsort(self.router.ids[live], kind="stable")]
        order = self._id_order
        sorted_ids = self.router.ids[order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(sorted_ids.shape[0] - 1, 0))
        found = sorted_ids[at] == ids if sorted_ids.size else np.zeros(ids.shape, dtype=bool)
        return order[at[found]], found

    def dead_rows(self, partition: int) -> np.ndarray | None:
        """Deleted rows of ``partition`` (local row numbers), None when it has none."""
        if self.deleted is None:
            return None
        start, end = self.router.offsets[partition], self.router.offsets[partition + 1]
        rows = np.flatnonzero(self.deleted[start:end])
        return rows if rows.size else None

    def matching_rows(self, node: Node | None) -> np.ndarray:
        """Live rows (partition order) matching ``node``, exactly."""
        _, _, maybe = count_matches(self.router, node)
        if node is None:
            return np.arange(self.router.n) if maybe is None else maybe
        return self._exact_rows(node, maybe)

    def _exact_rows(self, node: Node, maybe: np.ndarray) -> np.ndarray:
        """The rows of ``maybe`` (partition order) that pass ``node`` on their raw values."""
        router = self.router
        table = AttrTable(router.n, router.attr_codes, self._raw_attributes(), router.ids, router.attr_valid)
        table = table.only(fields_of(node))
        return maybe[evaluate(node, table.take(maybe), schema_of(self.manifest.attributes), "exact")]

    def _matches(self, node: Node, plan: Plan) -> Callable[[Segment], tuple[int, np.ndarray]]:
        """Rows passing ``node`` per partition, from one exact pass over the whole index's raw
        attributes (in-process only: a worker rechecks per partition what it holds)."""
        rows = self._exact_rows(node, plan.maybe_rows)
        offsets = self.router.offsets
        bounds = np.searchsorted(rows, offsets)

        def rows_of(seg: Segment) -> tuple[int, np.ndarray]:
            p = seg.partition
            return int(plan.maybe_counts[p]), rows[bounds[p] : bounds[p + 1]] - offsets[p]

        return rows_of

    def _raw_attributes(self) -> dict[str, Any]:
        """Every partition's raw attribute columns, concatenated in partition order (once)."""
        if self._raw is None:
            segs = [self.segment(p)[0] for p in range(self.manifest.partitions)]
            names = [a.name for a in self.manifest.attributes]
            self._raw = {n: concat([s.attr_raw[n] for s in segs]) for n in names}
        return self._raw

    def user_distances(self, dist: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Squared L2 as the search computes it for the user's (validated) ``queries`` ->
        the index's metric's distance (cosine: 1 − cos; dot: −q·x)."""
        return user_distances(dist, queries, self.manifest.metric, self.manifest.dot_max_norm)

    def _result(
        self,
        top: TopK,
        queries: np.ndarray,
        plan: Plan,
        started: float,
        planned: float,
        read: int,
        cold: ColdTier,
    ) -> SearchResult:
        dist = self.user_distances(top.distances, queries)
        done = time.perf_counter()
        stats = (
            top.stats_dict()
            | plan.stats()
            | {
                "matches_maybe": int(plan.maybe_counts.sum()),
                "matches_sure": int(plan.sure_counts.sum()),
                "bytes_read": read,
                **cold.reads.as_dict(),
                "hot_bytes_resident": self.cache.nbytes,
                "plan_ms": round((planned - started) * 1e3, 3),
                "search_ms": round((done - planned) * 1e3, 3),
            }
        )
        return SearchResult(top.ids, dist, stats, metric=self.manifest.metric)


def open_index(uri: str | Storage, cache: SegmentCache | None = None) -> Index:
    """Open the index at ``uri`` (``file:///...`` or ``s3://bucket/prefix``)."""
    return Index.open(uri, cache)
