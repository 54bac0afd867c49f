"""The coordinator: validate, plan L0/L1 on the warm router data, fan out, shape the answer.

The router data of each index (manifest, centroids, quantized attributes) stays in the
warm container. At most every ``manifest_check_s`` seconds a HEAD request (no body read)
tells whether a new build was published; only then is the index reloaded. Batches whose
worker payloads would pass Lambda's 6 MB limit are split into chunks that travel the tree
concurrently.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attributes import decoded_rows
from ..cache import SegmentCache
from ..deletes import delete
from ..errors import (
    AccessDeniedError,
    IndexNotFoundError,
    PayloadTooLargeError,
    StorageError,
    WritesDisabledError,
)
from ..filters import Node, node_to_json
from ..index import Index
from ..manifest import MANIFEST_KEY
from ..metrics import scores
from ..planner import Plan
from ..refine import ColdTier
from ..results import STAT_NAMES, TopK
from ..storage import S3Storage, open_storage
from ..upserts import upsert
from . import deadline as deadlines
from .codec import MAX_PAYLOAD_BYTES, encoded_size, pack_array, unpack_array
from .config import RuntimeConfig, valid_name
from .invoke import Invoker
from .requests import QueryRequest
from .tree import function_name
from .wire import encode_array

#: Share of Lambda's payload limit a chunk may use; the rest is headroom for JSON framing.
PAYLOAD_BUDGET = int(MAX_PAYLOAD_BYTES * 0.8)
MAX_PARALLEL_CHUNKS = 4


@dataclass
class _Loaded:
    index: Index
    version: str
    checked: float


class Coordinator:
    """One per warm container: the index registry plus the query path."""

    def __init__(self, config: RuntimeConfig, invoke: Invoker) -> None:
        self.config = config
        self.invoke = invoke
        self._indexes: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._cold = True

    def index(self, name: str) -> tuple[Index, int]:
        """The warm index ``name`` and the bytes read from storage to get it (0 when warm)."""
        now = time.monotonic()
        entry = self._indexes.get(name)
        if entry and now - entry.checked < self.config.manifest_check_s:
            return entry.index, 0
        storage = entry.index.storage if entry else open_storage(self.config.index_uri(name))
        try:
            version = storage.version(MANIFEST_KEY)
            if entry and entry.version == version:
                entry.checked = now
                return entry.index, 0
            index = Index.open(storage, cache=SegmentCache(0))
            if self._serves_here(index):  # small: its hot tier is cached here, no tree
                # Segment files are immutable (cache keys are their keys): a new version keeps
                # the segments already held. Twice the limit: a segment in memory also holds
                # per-row terms its file does not (hat_sq), so the whole tier always fits.
                old = entry.index.cache if entry else None
                keep = old is not None and old.max_bytes >= 2 * self.config.local_max_bytes
                index.cache = old if keep else SegmentCache(2 * self.config.local_max_bytes)
        except IndexNotFoundError as exc:
            raise IndexNotFoundError(f"index {name!r} not found", field="index") from exc
        except AccessDeniedError as exc:  # S3's answer for a missing key without s3:ListBucket
            msg = f"index {name!r} not found (or not readable here)"
            raise IndexNotFoundError(msg, field="index") from exc
        with self._lock:
            self._indexes[name] = _Loaded(index, version, now)
        manifest_bytes = len(index.manifest.to_json())
        return index, index.bytes_read + manifest_bytes

    def delete(self, name: str, body: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
        """Delete by ids or filter (``body`` from :func:`~squash.runtime.requests.parse_delete`)
        and forget this container's view of the index, so its next query reads the new
        version (read-your-writes through the same coordinator)."""
        return self._write(
            name,
            lambda s: delete(s, ids=body.get("ids"), filter=body.get("filter")),
        )

    def upsert(self, name: str, body: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
        """Insert or replace vectors (``body`` from :func:`~squash.runtime.requests.parse_upsert`);
        like :meth:`delete`, this container's next query reads the new version."""
        return self._write(
            name,
            lambda s: upsert(s, body["ids"], body["vectors"], body.get("attributes")),
        )

    def _write(self, name: str, write) -> dict[str, Any]:
        if not self.config.writes_enabled:
            raise WritesDisabledError(
                "writes are disabled on this deployment (deploy with EnableWrites=true)", field="index"
            )
        storage = open_storage(self.config.index_uri(name))

        def run() -> Any:
            try:
                return write(storage)
            except IndexNotFoundError as exc:
                raise IndexNotFoundError(f"index {name!r} not found", field="index") from exc

        # Synchronous, not bounded by ``deadline``: a write answered 504 must never commit
        # afterwards. Lambda's own timeout can only leave unreferenced files (gc removes them).
        result = run()
        with self._lock:
            self._indexes.pop(name, None)
        return {"index": name} | result.to_dict()

    def _serves_here(self, index: Index) -> bool:
        """Whether this coordinator searches ``index`` itself: its whole hot tier (every
        segment, deltas included) fits ``local_max_bytes``."""
        hot = sum(ref.size for ref in index.manifest.segments)
        return 0 < hot <= self.config.local_max_bytes

    def list_indexes(self, deadline: float | None = None) -> dict[str, Any]:
        """The index names under the configured prefix (one delimited LIST per 1,000 names,
        nothing else read): ``{"indexes": [{"name", "warm", and for warm ones "n", "dims",
        "metric", "build_id"}]}``. Warm ones are those this container has open; their fields
        come from memory. A folder without a manifest may be listed: GET /indexes/{name} tells."""
        return deadlines.run_until(deadline, "listing the indexes", self._list_indexes)

    def _list_indexes(self) -> dict[str, Any]:
        storage = S3Storage(self.config.bucket, "")
        prefix = self.config.prefix
        if not self.config.bucket:
            raise StorageError("SQUASH_INDEX_BUCKET is not set for this function")
        names: list[str] = []
        try:
            pages = storage.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                names += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as exc:  # botocore raises many unrelated types
            raise StorageError(f"cannot list s3://{self.config.bucket}/{prefix}: {exc}") from exc
        out = []
        for name in sorted(n for n in names if valid_name(n)):
            entry: dict[str, Any] = {"name": name, "warm": name in self._indexes}
            if entry["warm"]:
                m = self._indexes[name].index.manifest
                entry |= {"n": int(m.n), "dims": int(m.dims), "metric": m.metric, "build_id": m.build_id}
            out.append(entry)
        return {"indexes": out}

    def warm(self, name: str, deadline: float | None = None) -> dict[str, Any]:
        """The warm schedule (template ``WarmSchedule``): every tree position loads the hot
        segments it owns for index ``name`` into its cache, one invocation each, so queries
        between two runs find warm containers that read nothing. Queries themselves invoke
        only the nodes with work; warmth is this explicit, optional (and priced) job."""
        return deadlines.run_until(deadline, f"warming index {name!r}", self._warm, name)

    def _warm(self, name: str) -> dict[str, Any]:
        index, _ = self.index(name)
        if self._serves_here(index):  # no tree for it: warm this container's own cache
            before = index.bytes_read
            for p in range(len(index.manifest.segments)):
                index.segment(p)
            read = index.bytes_read - before
            return {"index": name, "nodes": 0, "cold": 0, "s3": {"bytes_read": read}}
        tree = self.config.tree
        owned = tree.assign(range(len(index.manifest.segments)))
        segs = index.manifest.segments

        def one(position: int) -> dict[str, Any]:
            event = {
                "action": "warm",
                "index": index.storage.uri,
                "position": position,
                "segments": {str(p): segs[p].__dict__ for p in owned[position]},
            }
            return self.invoke(function_name(self.config.worker_prefix, position), event)

        with ThreadPoolExecutor(min(MAX_PARALLEL_CHUNKS, tree.size)) as pool:
            answers = list(pool.map(one, range(tree.size)))
        total = {"segments_loaded": 0, "cache_hits": 0, "bytes_read": 0}
        for a in answers:
            for key in total:
                total[key] += a["s3"][key]
        return {"index": name, "nodes": tree.size, "cold": sum(a["cold"] for a in answers), "s3": total}

    def info(self, name: str, deadline: float | None = None) -> dict[str, Any]:
        index, _ = deadlines.run_until(deadline, f"loading index {name!r}", self.index, name)
        return {"index": name} | index.summary()

    def query(self, name: str, req: QueryRequest, deadline: float | None = None) -> dict[str, Any]:
        """Search; past ``deadline`` (epoch seconds) a DeadlineExceededError (504), whatever
        is still waiting (storage, the tree). The tree gets a slightly earlier deadline."""
        return deadlines.run_until(deadline, "the query", self._query, name, req, deadline)

    def _query(self, name: str, req: QueryRequest, deadline: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        cold, self._cold = self._cold, False
        index, coord_bytes = self.index(name)
        q = index.prepare_queries(req.vectors, req.vector_field)
        node = index.parse_filter(req.filter)
        plan = index.plan(q, req.k, node, req.params)
        columns = hit_columns(req.include, index.manifest.metric)
        _check_answer_can_fit(q.shape[0], req, int(plan.sure_counts.sum()), columns)
        planned = time.perf_counter()

        local = self._serves_here(index)
        if local:  # no worker payloads to build or fit: one pass
            base: dict[str, Any] = {}
            size = q.shape[0]
        else:
            base = self._base_event(name, index, req, plan, node)
            if deadline is not None:
                base["deadline"] = deadlines.for_child(deadline)
            visits = plan.visit.sum(axis=1)
            size = self._chunk_size(q.shape[0], index.manifest.space_dims, req, visits, encoded_size(base))
        chunks = [np.arange(s, min(s + size, q.shape[0])) for s in range(0, q.shape[0], size)]
        event_sizes: list[int] = []

        def run(rows: np.ndarray) -> dict[str, Any]:
            if local:
                event_sizes.append(0)
                return _answer_here(index, q, req, plan, node)
            qi, parts = np.nonzero(plan.visit[rows])
            pairs = np.stack([parts, qi], axis=1).astype(np.int32)
            if pairs.shape[0] == 0:  # nothing to search (no row can match): nothing invoked
                event_sizes.append(0)
                return _idle_answer(rows.size, req.k)
            event = base | {
                "queries": pack_array(q[rows]),
                "query_ids": pack_array(np.arange(rows.size, dtype=np.int32)),
                "pairs": pack_array(pairs),
            }
            event_sizes.append(encoded_size(event))
            return self.invoke(function_name(self.config.worker_prefix, 0), event)

        if len(chunks) == 1:
            answers = [run(chunks[0])]
        else:
            with ThreadPoolExecutor(min(MAX_PARALLEL_CHUNKS, len(chunks))) as pool:
                answers = list(pool.map(run, chunks))
        searched = time.perf_counter()

        ids = np.concatenate([_array(a, "ids") for a in answers])
        dist = index.user_distances(np.concatenate([_array(a, "distances") for a in answers]), req.vectors)
        per_query = np.concatenate([_array(a, "stats_per_query") for a in answers])
        attributes: dict[str, Any] = {}
        for a in answers:
            attributes |= a.get("attributes", {})
        if attributes and not local:  # the tree answers codes; the coordinator decodes them
            attributes = decoded_rows(index.manifest.attributes, index.dictionaries, attributes)

        values = {"distance": dist, "score": scores(dist, index.manifest.metric)}
        if req.encoding == "binary":
            out = _binary_results(ids, {c: values[c] for c in columns}, attributes, req.include)
        else:
            out = {"results": _shape_results(ids, {c: values[c] for c in columns}, attributes, req.include)}
        stats = _stats(plan, per_query, answers, len(chunks), cold, coord_bytes)
        stats["event_bytes"] = max(event_sizes)  # the largest event a worker received
        stats["metric"] = index.manifest.metric  # how a client turns distances into scores
        stats["timings_ms"] = {
            "plan": round((planned - started) * 1e3, 3),
            "tree": round((searched - planned) * 1e3, 3),
            "worker_search_sum": round(sum(a["stats"]["search_ms"] for a in answers), 3),
            "worker_search_max": round(max(a["stats"]["max_node_ms"] for a in answers), 3),
            "total": round((time.perf_counter() - started) * 1e3, 3),
        }
        out["stats"] = stats
        size = encoded_size(out)
        if size > MAX_PAYLOAD_BYTES - 64 * 1024:
            raise PayloadTooLargeError(
                f"the answer ({size / 2**20:.1f} MiB) would pass Lambda's 6 MiB response "
                "limit; send fewer queries per request, a smaller k, or drop include=attributes",
                field="vectors",
            )
        return out

    def _base_event(
        self, name: str, index: Index, req: QueryRequest, plan: Plan, node: Node | None
    ) -> dict[str, Any]:
        tree = self.config.tree
        segs = index.manifest.segments
        parts = plan.partitions
        return {
            "index": index.storage.uri,
            "name": name,
            "build_id": index.manifest.build_id,
            "position": 0,
            "tree": {"branching": tree.branching, "depth": tree.depth, "prefix": self.config.worker_prefix},
            "k": req.k,
            "params": plan.execution_params(req.params).to_dict(),
            "predicate": node_to_json(node),
            "attributes": [a.to_json() for a in index.manifest.attributes],
            "segments": {str(p): segs[p].__dict__ for p in parts.tolist()},
            "include_attributes": "attributes" in req.include,
        } | self._deleted_member(index, parts)

    @staticmethod
    def _deleted_member(index: Index, parts: np.ndarray) -> dict[str, Any]:
        """The deletion bitmap's file ref and the visited partitions' row ranges in it: a
        constant-size member (workers read and cache the bitmap), never the deleted rows."""
        ref = index.manifest.deleted
        if ref is None:
            return {}
        off = index.router.offsets
        ranges = {str(p): [int(off[p]), int(off[p + 1])] for p in parts.tolist()}
        return {"deleted": ref.__dict__ | {"ranges": ranges}}

    def _chunk_size(self, n: int, dims: int, req: QueryRequest, visits: np.ndarray, fixed: int) -> int:
        """Queries per tree invocation so requests and answers stay inside PAYLOAD_BUDGET
        (``dims``: of the prepared queries the workers get, the index's space)."""
        b64 = 4 / 3
        request = dims * 4 * b64 + float(visits.max(initial=0)) * 8 * b64
        answer = req.k * 12 * b64 + len(STAT_NAMES) * 8 * b64
        if "attributes" in req.include:
            answer += req.k * 200  # generous JSON per result's attributes
        per_query = max(request, answer)
        room = PAYLOAD_BUDGET - fixed
        if room < per_query:
            raise PayloadTooLargeError(
                "even one query does not fit a worker payload: the index has too many partitions "
                "or attributes for this request; narrow the filter or lower k",
                field="vectors",
            )
        return max(1, min(n, int(room // per_query)))


#: The smallest JSON a hit can take: ``{"id":0},`` (+ ``"distance":0.0,`` / ``"score":0.0,``).
_MIN_HIT_BYTES = len('{"id":0},')
_MIN_COLUMN_BYTES = {"distance": len('"distance":0.0,'), "score": len('"score":0.0,')}


def hit_columns(include: frozenset[str], metric: str) -> tuple[str, ...]:
    """The numbers each hit carries: ``"score"`` when asked for, ``"distance"`` when asked
    for — except that a dot index answers its score (the inner product) instead."""
    wants_score = "score" in include or (metric == "dot" and "distance" in include)
    wants_distance = "distance" in include and metric != "dot"
    return tuple(c for c, want in (("distance", wants_distance), ("score", wants_score)) if want)


def _check_answer_can_fit(
    n_queries: int, req: QueryRequest, sure_matches: int, columns: tuple[str, ...]
) -> None:
    """413 from the request's shape, before any worker runs, when the answer surely cannot
    fit Lambda's response limit: every query returns at least min(k, sure matches) hits
    (README), and each hit takes at least a few bytes of JSON."""
    hits = n_queries * min(req.k, sure_matches)
    per_hit = _MIN_HIT_BYTES + sum(_MIN_COLUMN_BYTES[c] for c in columns)
    if req.encoding == "binary":  # every query holds k slots, padded: 8 bytes of id, 4 a column
        hits, per_hit = n_queries * req.k, (8 + 4 * len(columns)) * 4 // 3
    floor = hits * per_hit
    if floor > MAX_PAYLOAD_BYTES - 64 * 1024:
        raise PayloadTooLargeError(
            f"the answer would hold at least {hits:,} hits ({n_queries:,} queries x "
            f"{min(req.k, sure_matches):,}), at least {floor / 2**20:.1f} MiB, over Lambda's 6 MiB "
            "response limit; send fewer queries per request or a smaller k",
            field="vectors",
        )


def _shape_results(
    ids: np.ndarray, columns: dict[str, np.ndarray], attrs: dict[str, Any], include: frozenset[str]
) -> list:
    """One list of hits per query: ``{"id", <columns>..., "attributes"?}``, -1 padding dropped."""
    with_attrs = "attributes" in include
    names = list(columns)
    rows = [v.tolist() for v in columns.values()]
    out = []
    for qi, row_ids in enumerate(ids.tolist()):
        hits = []
        for j, i in enumerate(row_ids):
            if i < 0:
                break
            hit: dict[str, Any] = {"id": i}
            for name, values in zip(names, rows, strict=True):
                hit[name] = values[qi][j]
            if with_attrs:
                hit["attributes"] = attrs.get(str(i), {})
            hits.append(hit)
        out.append(hits)
    return out


def _binary_results(
    ids: np.ndarray, columns: dict[str, np.ndarray], attrs: dict[str, Any], include: frozenset[str]
) -> dict[str, Any]:
    """``encoding: "binary"``: ids (Q, k) int64 padded with -1 and each column (Q, k) float32
    padded with +inf (scores with −inf, as ``SearchResult.scores``), as packed arrays
    (:mod:`.wire`); attributes per query in hit order, padding left out. Distances and
    scores are exactly the JSON answer's (float32 either way)."""
    ids = ids.astype(np.int64, copy=False)
    pad = ids < 0
    out: dict[str, Any] = {"ids": encode_array(np.where(pad, -1, ids))}
    for name, values in columns.items():
        fill = np.inf if name == "distance" else -np.inf  # padding sorts last either way
        out[_PLURAL[name]] = encode_array(np.where(pad, fill, values).astype(np.float32))
    if "attributes" in include:
        out["attributes"] = [[attrs.get(str(i), {}) for i in row if i >= 0] for row in ids.tolist()]
    return out


_PLURAL = {"distance": "distances", "score": "scores"}


def _answer_here(index: Index, q: np.ndarray, req: QueryRequest, plan: Plan, node: Node | None) -> dict:
    """The plan run by the coordinator itself (a small index), shaped as the tree answers,
    attributes already decoded."""
    started = time.perf_counter()
    before = index.bytes_read
    hits, misses = index.cache.hits, index.cache.misses
    cold = ColdTier(index.storage, cache=index.cache)
    top = index.search_planned(q, req.k, node, plan, req.params, cold)
    attrs: dict[str, Any] = {}
    if "attributes" in req.include:
        for row_ids, row_attrs in zip(top.ids.tolist(), index.attributes_of(top.ids), strict=True):
            attrs |= {str(i): a for i, a in zip(row_ids, row_attrs, strict=False) if i >= 0}
    s3 = {
        "bytes_read": index.bytes_read - before,
        "segments_loaded": index.cache.misses - misses - cold.reads.fine_loaded,
        "cache_hits": index.cache.hits - hits - cold.reads.fine_hits,
    }
    s3 |= cold.reads.as_dict() | {"hot_bytes_resident": index.cache.nbytes}
    return _uninvoked_answer(top, attrs, s3, (time.perf_counter() - started) * 1e3)


def _idle_answer(q: int, k: int) -> dict[str, Any]:
    """What the tree would answer for a chunk with no (partition, query) pair, uninvoked."""
    return _uninvoked_answer(TopK.empty(q, k), {}, {}, 0.0)


def _uninvoked_answer(top: TopK, attrs: dict[str, Any], s3: dict[str, int], ms: float) -> dict[str, Any]:
    """A chunk's answer in the tree's shape, from work done without invoking any node (its
    arrays stay arrays: they never cross a Lambda boundary, see :func:`_array`)."""
    return {
        "ids": top.ids,
        "distances": top.distances,
        "stats_per_query": top.stats,
        "attributes": attrs,
        "stats": {
            "nodes": {"invoked": 0, "cold": 0, "warm": 0},
            "positions": [],
            "s3": s3,
            "search_ms": ms,
            "max_node_ms": ms,
        },
    }


def _array(answer: dict[str, Any], key: str) -> np.ndarray:
    """``answer[key]`` as an array: packed in a worker's answer, as is in one made here."""
    value = answer[key]
    return value if isinstance(value, np.ndarray) else unpack_array(value, key)


def _stats(
    plan: Plan, per_query: np.ndarray, answers: list[dict], chunks: int, cold: bool, coord_bytes: int
) -> dict:
    nodes = {"invoked": 0, "cold": 0, "warm": 0}
    s3 = {"bytes_read": coord_bytes, "segments_loaded": 0, "cache_hits": 0}
    s3 |= {"refine_gets": 0, "refine_bytes_read": 0, "fine_loaded": 0, "fine_bytes_read": 0}
    s3 |= {"hot_bytes_resident": 0}
    positions: list[int] = []
    for a in answers:
        for key in nodes:
            nodes[key] += a["stats"]["nodes"][key]
        for key in s3:
            got = a["stats"]["s3"].get(key, 0)
            # every chunk visits the same tree: its resident bytes are a size, not a count
            s3[key] = max(s3[key], got) if key == "hot_bytes_resident" else s3[key] + got
        positions += a["stats"]["positions"]
    totals = per_query.sum(axis=0)
    return plan.stats() | {
        "queries": int(per_query.shape[0]),
        "chunks": chunks,
        "partitions_visited": int(plan.partitions.size),
        "partitions_per_query": round(float(plan.visit.sum(axis=1).mean()), 3),
        "levels": {"l0_maybe": int(plan.maybe_counts.sum()), "l0_sure": int(plan.sure_counts.sum())}
        | {name: int(totals[i]) for i, name in enumerate(STAT_NAMES) if name != "partitions"},
        "nodes": nodes | {"positions": sorted(positions)},
        "coordinator": {"cold": cold, "bytes_read": coord_bytes},
        "s3": s3,
    }
