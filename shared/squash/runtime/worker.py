"""One node of the worker tree: launch the children, search the own partitions, merge.

A request carries a batch of prepared queries, the ``(partition, query row)`` pairs of this
node's subtree, and the manifest entries (key, size, SHA-256) of those partitions' segments,
so a warm node needs no storage read at all: segments come from the module-level
:class:`~squash.cache.SegmentCache`. The answer is the subtree's top-k per query plus
statistics summed over the subtree (nodes, cold/warm containers, bytes read, time).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attributes import AttributeSpec, encoded_rows
from ..cache import SegmentCache
from ..deletes import bitmap_of
from ..errors import (
    IndexFormatError,
    IndexNotFoundError,
    InputError,
    SquashError,
    StorageError,
    UpstreamError,
)
from ..filters import Node, node_from_json
from ..manifest import FileRef
from ..params import MAX_K, SearchParams
from ..refine import ColdTier
from ..results import TopK, merge
from ..search import search_partitions
from ..segment import Segment, load_segment, read_indexed_file
from ..storage import Storage, open_storage
from . import build_worker
from . import deadline as deadlines
from .codec import pack_array, unpack_array
from .config import RuntimeConfig
from .invoke import Invoker
from .tree import TreeLayout, function_name


@dataclass
class NodeRequest:
    """The decoded payload of one tree node."""

    index: str
    position: int
    tree: TreeLayout
    prefix: str
    k: int
    params: SearchParams
    predicate: Node | None  # the parsed filter, in codes (filters.node_to_json)
    specs: list[AttributeSpec]
    segments: dict[int, FileRef]
    queries: np.ndarray  # (m, d) float32, already prepared (normalised for cosine)
    query_ids: np.ndarray  # (m,) int32, ascending rows of the coordinator's batch
    pairs: np.ndarray  # (n, 2) int32: partition, row into ``queries``
    include_attributes: bool
    deadline: float | None = None  # epoch seconds; the node answers deadline_exceeded after it
    # The index's deletion bitmap (a manifest file; the worker reads and caches it) and the
    # global row range of each partition the event carries: deleted rows are never candidates.
    deleted: FileRef | None = None
    ranges: dict[int, tuple[int, int]] | None = None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> NodeRequest:
        """Decode and check an event: types, shapes and ranges (every pair's partition has a
        segment entry and its row a query), so a malformed event is an InputError here, not
        an IndexError deep in the search."""
        tree = _member(event, "tree", dict)
        layout = TreeLayout(_int(tree, "branching", "tree.branching"), _int(tree, "depth", "tree.depth"))
        position = _int(event, "position")
        if not 0 <= position < layout.size:
            raise InputError(f"position {position} is not in a tree of {layout.size} nodes", field="position")
        k = _int(event, "k")
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be 1..{MAX_K}, got {k}", field="k")
        attributes = event.get("attributes", [])
        if not isinstance(attributes, list) or not all(isinstance(a, dict) for a in attributes):
            raise InputError("attributes must be a list of objects", field="attributes")
        refs = _segment_refs(event)
        queries = unpack_array(event.get("queries"), "queries")
        query_ids = unpack_array(event.get("query_ids"), "query_ids")
        pairs = unpack_array(event.get("pairs"), "pairs")
        if queries.ndim != 2 or queries.dtype != np.float32:
            raise InputError("queries must be a 2-D float32 array", field="queries")
        if query_ids.shape != (queries.shape[0],) or query_ids.dtype.kind != "i":
            raise InputError("query_ids must hold one integer per query", field="query_ids")
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind != "i":
            raise InputError("pairs must be an (n, 2) integer array", field="pairs")
        if pairs.size and (
            pairs[:, 1].min() < 0
            or pairs[:, 1].max() >= queries.shape[0]
            or not np.isin(pairs[:, 0], list(refs)).all()
        ):
            raise InputError("pairs name a query row or a partition the event does not carry", field="pairs")
        for name in ("name", "build_id"):
            if not isinstance(event.get(name, ""), str):
                raise InputError(f"{name} must be a string", field=name)
        include = event.get("include_attributes", False)
        prefix = tree.get("prefix")
        if (
            not isinstance(include, bool)
            or not isinstance(prefix, str)
            or not isinstance(event.get("index"), str)
        ):
            raise InputError(
                "index and tree.prefix must be strings, include_attributes a bool", field="event"
            )
        specs = _specs(event["index"], event.get("build_id", ""), attributes)
        deleted, ranges = _deleted(event.get("deleted"), refs)
        return cls(
            deleted=deleted,
            ranges=ranges,
            index=event["index"],
            position=position,
            tree=layout,
            prefix=prefix,
            k=k,
            params=SearchParams.from_dict(event.get("params")),
            predicate=node_from_json(event.get("predicate"), specs),
            specs=specs,
            segments=refs,
            queries=queries,
            query_ids=query_ids,
            pairs=pairs,
            include_attributes=include,
            deadline=deadlines.parse(event.get("deadline")),
        )

    def child_event(self, event: dict[str, Any], child: int, rows: np.ndarray, pairs: np.ndarray) -> dict:
        """The payload for ``child``: only the queries, pairs and segments its subtree needs."""
        parts = np.unique(pairs[:, 0])
        local = pairs.copy()
        local[:, 1] = np.searchsorted(rows, pairs[:, 1])
        return (
            {key: event[key] for key in _PASSED_DOWN if key in event}
            | {
                "position": child,
                "queries": pack_array(self.queries[rows]),
                "query_ids": pack_array(self.query_ids[rows]),
                "pairs": pack_array(local.astype(np.int32)),
                "segments": {str(p): event["segments"][str(p)] for p in parts.tolist()},
                **(
                    {
                        "deleted": event["deleted"]
                        | {"ranges": {str(p): event["deleted"]["ranges"][str(p)] for p in parts.tolist()}}
                    }
                    if event.get("deleted")
                    else {}
                ),
            }
            | ({"deadline": deadlines.for_child(self.deadline)} if self.deadline is not None else {})
        )


class WorkerNode:
    """Module-level state of a worker container: segment cache, storage clients, cold flag."""

    def __init__(self, invoke: Invoker, cache_bytes: int) -> None:
        self.invoke = invoke
        self.cache = SegmentCache(cache_bytes)
        self.cold = True
        self._storages: dict[str, Storage] = {}
        self._bitmaps: dict[tuple[str, str], np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None

    def handle(self, event: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
        """Serve one invocation; a failed subtree becomes ``{"error": {...}}``, never fewer results.

        ``deadline`` (epoch seconds) is this function's own limit (its Lambda time left minus
        a margin); the event's ``deadline`` is the caller's. The node answers
        ``deadline_exceeded`` (504) by the earlier of the two.
        """
        cold, self.cold = self.cold, False
        where = f"worker {event.get('position') if isinstance(event, dict) else None}"
        try:
            if isinstance(event, dict) and event.get("action") == "warm":
                return self.warm(event, cold)
            if isinstance(event, dict) and event.get("action") == "build":
                return build_worker.handle(event, RuntimeConfig.from_env(), self._storage)
            return self._handle(event, cold, deadline)
        except UpstreamError as exc:
            return _error(exc.status, exc.code, exc.message)
        except IndexFormatError as exc:  # a segment that fails its checksum or format
            return _error(500, "index_corrupt", f"{where}: {exc.message}")
        except StorageError as exc:
            if isinstance(exc, IndexNotFoundError):  # the manifest names it, storage lacks it
                return _error(500, "index_corrupt", f"{where}: {exc.message}; rebuild the index")
            return _error(503, "storage_error", f"{where}: {exc.message}")
        except SquashError as exc:
            return _error(502, "worker_failed", f"{where}: {exc.message}")

    def warm(self, event: dict[str, Any], cold: bool) -> dict[str, Any]:
        """The warm schedule's event ``{"action": "warm", "index": URI, "segments": {p: ref}}``:
        load this position's hot segments into the cache (so the next query at default
        settings reads nothing; a refinement file is loaded by the first query that re-ranks
        on it) and answer what it cost; no search, no children."""
        uri = _member(event, "index", str)
        io = {"segments_loaded": 0, "cache_hits": 0, "bytes_read": 0}
        for partition, ref in _segment_refs(event).items():
            _, hit, nbytes = self._segment(uri, partition, ref)
            io["cache_hits" if hit else "segments_loaded"] += 1
            io["bytes_read"] += nbytes
        return {"warmed": True, "cold": cold, "s3": io | {"hot_bytes_resident": self.cache.nbytes}}

    def _handle(self, event: dict[str, Any], cold: bool, deadline: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        req = _decode(event)
        req.deadline = deadlines.earliest(req.deadline, deadline)
        deadlines.check(req.deadline, f"worker {req.position}")  # before any child is invoked
        owner = req.pairs[:, 0] % req.tree.size
        branch = np.full(req.tree.size, -1, dtype=np.int64)
        for child in req.tree.children(req.position):
            branch[req.tree.subtree(child)] = child
        futures = []
        for child in req.tree.children(req.position):
            # Only subtrees with work are invoked: an invocation costs a request fee and tens
            # of ms whether or not it searches (issue #14). Warmth is the warm schedule's job.
            mine = req.pairs[branch[owner] == child]
            if mine.shape[0] == 0:
                continue
            rows = np.unique(mine[:, 1])
            payload = req.child_event(event, child, rows, mine)
            target = function_name(req.prefix, child)
            futures.append((child, self._executor(req.tree.branching).submit(self.invoke, target, payload)))

        own = req.pairs[owner == req.position]
        where = f"worker {req.position}"
        search = deadlines.run_until
        top, attrs, io = search(req.deadline, f"{where}'s own search", self._search_own, req, own)
        node_ms = (time.perf_counter() - started) * 1e3
        stats = {
            "nodes": {"invoked": 1, "cold": int(cold), "warm": int(not cold)},
            "positions": [req.position],
            "s3": io,
            "search_ms": node_ms,
            "max_node_ms": node_ms,
        }
        for position, fut in futures:
            # raises UpstreamError after the invoker's retries, DeadlineExceededError at the deadline
            child = deadlines.wait(fut, req.deadline, f"{where}: worker {position}")
            top, attrs = _merge_child(req, top, attrs, child)
            _add_stats(stats, child["stats"])
        if req.include_attributes:
            keep = {str(i) for i in np.unique(top.ids[top.ids >= 0]).tolist()}
            attrs = {i: v for i, v in attrs.items() if i in keep}
        return {
            "query_ids": pack_array(req.query_ids),
            "ids": pack_array(top.ids),
            "distances": pack_array(top.distances),
            "stats_per_query": pack_array(top.stats),
            "attributes": attrs,
            "stats": stats,
        }

    def _executor(self, width: int) -> ThreadPoolExecutor:
        if self._pool is None:
            # Room for invocations abandoned at a deadline (they end at the client's read timeout)
            # besides the current request's children.
            self._pool = ThreadPoolExecutor(max_workers=max(4 * width, 8), thread_name_prefix="child")
        return self._pool

    def _search_own(self, req: NodeRequest, own: np.ndarray) -> tuple[TopK, dict[str, dict], dict[str, int]]:
        io = {"bytes_read": 0, "segments_loaded": 0, "cache_hits": 0}
        node = req.predicate
        loaded: dict[int, Segment] = {}
        cold = ColdTier(self._storage(req.index), cache=self.cache)
        dead: dict[int, np.ndarray] = {}
        if req.deleted is not None:
            bits, nbytes = self._deleted_bits(req.index, req.deleted)
            io["bytes_read"] += nbytes
            for p, (start, end) in (req.ranges or {}).items():
                if end > bits.shape[0]:
                    raise InputError(f"deleted: partition {p}'s rows pass the bitmap's end", field="deleted")
                rows = np.flatnonzero(bits[start:end])
                if rows.size:
                    dead[p] = rows

        def load(partition: int) -> Segment:
            seg, hit, nbytes = self._segment(req.index, partition, req.segments[partition])
            if seg.dims != req.queries.shape[1]:  # a foreign or garbled event, never squash's
                raise InputError(
                    f"queries have dimension {req.queries.shape[1]}, the index's segments {seg.dims}",
                    field="queries",
                )
            io["cache_hits" if hit else "segments_loaded"] += 1
            io["bytes_read"] += nbytes
            loaded[partition] = seg
            return seg

        order = np.argsort(own[:, 0], kind="stable")
        own = own[order]
        parts, starts = np.unique(own[:, 0], return_index=True)
        groups = np.split(own[:, 1], starts[1:]) if own.shape[0] else []
        top = search_partitions(
            load,
            zip(parts.tolist(), groups, strict=True),
            req.queries,
            req.k,
            node,
            req.specs,
            req.params,
            cold,
            dead.get,
        )
        io |= cold.reads.as_dict() | {"hot_bytes_resident": self.cache.nbytes}
        attrs = _attributes_of(top, loaded.values(), req.specs, dead) if req.include_attributes else {}
        return top, attrs, io

    def _deleted_bits(self, uri: str, ref: FileRef) -> tuple[np.ndarray, int]:
        """The deletion bitmap ``ref`` (cached by key: each version writes a new file) and the
        bytes read for it (0 when cached)."""
        key = (uri, ref.key)
        found = self._bitmaps.get(key)
        if found is not None:
            return found, 0
        data = ref.verify(read_indexed_file(self._storage(uri), ref.key))
        bits = bitmap_of(data, ref.key)
        self._bitmaps = {k: v for k, v in list(self._bitmaps.items())[-3:]} | {key: bits}  # the last few
        return bits, len(data)

    def _storage(self, uri: str) -> Storage:
        storage = self._storages.get(uri)
        if storage is None:
            storage = self._storages[uri] = open_storage(uri)
        return storage

    def _segment(self, uri: str, partition: int, ref: FileRef) -> tuple[Segment, bool, int]:
        seg, hit = load_segment(self._storage(uri), partition, ref, self.cache)
        return seg, hit, 0 if hit else seg.file_bytes


#: Event members a node passes to its children unchanged (the rest is rebuilt per child).
_PASSED_DOWN = ("index", "name", "build_id", "tree", "k", "params", "predicate", "attributes")
_PASSED_DOWN += ("include_attributes",)  # "deleted" is passed down with the child's ranges only


#: Decoded attribute specs of the last few builds: (index URI, build id) -> (the event's
#: ``attributes`` as sent, specs). Decoding checks every cell bound in Python (~0.6 ms a node
#: for Fashion-MNIST's one int column, the larger part of decoding a single query's event);
#: comparing the member with the one cached is a C-level equality test. A rebuild has a new
#: build id and so a new entry, and a reused one with other attributes is decoded afresh.
_SPECS: dict[tuple[str, str], tuple[list[dict[str, Any]], list[AttributeSpec]]] = {}
_SPECS_KEPT = 4
_SPECS_LOCK = threading.Lock()


def _specs(index: str, build_id: str, attributes: list[dict[str, Any]]) -> list[AttributeSpec]:
    key = (index, build_id)
    found = _SPECS.get(key)
    if found is not None and found[0] == attributes:
        return found[1]
    specs = [AttributeSpec.from_json(a) for a in attributes]
    with _SPECS_LOCK:  # in-process trees run several nodes of one module at once
        _SPECS.pop(key, None)
        while len(_SPECS) >= _SPECS_KEPT:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[key] = (attributes, specs)
    return specs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _member(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise InputError(f"{name} must be a {kind.__name__}, got {type(value).__name__}", field=name)
    return value


def _segment_refs(event: dict[str, Any]) -> dict[int, FileRef]:
    """The event's ``segments`` (partition number → ``{key, size, sha256}``), checked."""
    refs = {}
    for p, ref in _member(event, "segments", dict).items():
        if not (isinstance(p, str) and p.isdigit() and len(p) < 10) or not isinstance(ref, dict):
            raise InputError(f"segments must map partition numbers to file refs, got {p!r}", field="segments")
        if set(ref) != {"key", "size", "sha256"} or not (
            isinstance(ref["key"], str) and _is_int(ref["size"]) and isinstance(ref["sha256"], str)
        ):
            raise InputError(f"segment {p}: a file ref is {{key, size, sha256}}", field="segments")
        refs[int(p)] = FileRef(**ref)
    return refs


def _int(obj: dict[str, Any], name: str, label: str | None = None) -> int:
    value = obj.get(name)
    if not _is_int(value) or abs(value) > 2**31:
        raise InputError(f"{label or name} must be an integer, got {value!r}"[:200], field=label or name)
    return value


def _deleted(doc: Any, refs: dict[int, FileRef]) -> tuple[FileRef | None, dict[int, tuple[int, int]]]:
    """``deleted``: {key, size, sha256, ranges: {partition: [start, end)}} or absent."""
    if doc is None:
        return None, {}
    if not isinstance(doc, dict) or not isinstance(doc.get("ranges"), dict):
        raise InputError("deleted must be a file ref with the partitions' row ranges", field="deleted")
    ref = {k: doc.get(k) for k in ("key", "size", "sha256")}
    if not (isinstance(ref["key"], str) and _is_int(ref["size"]) and isinstance(ref["sha256"], str)):
        raise InputError("deleted: a file ref is {key, size, sha256}", field="deleted")
    ranges = {}
    for p, span in doc["ranges"].items():
        ok = isinstance(p, str) and p.isdigit() and int(p) in refs
        ok = ok and isinstance(span, list) and len(span) == 2 and all(_is_int(v) and v >= 0 for v in span)
        if not ok or span[0] > span[1]:
            raise InputError(f"deleted: bad row range for partition {p!r}", field="deleted")
        ranges[int(p)] = (span[0], span[1])
    return FileRef(**ref), ranges


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message}}


def _decode(event: Any) -> NodeRequest:
    """The node request of ``event``; anything malformed is an InputError (a 502 to the caller:
    workers are only invoked by squash, so a bad event is a bug or a foreign caller)."""
    if not isinstance(event, dict):
        raise InputError(f"worker event must be a JSON object, got {type(event).__name__}", field="event")
    try:
        return NodeRequest.from_event(event)
    except SquashError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise InputError(f"malformed worker event ({detail})"[:500], field="event") from exc


def _attributes_of(
    top: TopK, segments, specs: list[AttributeSpec], dead: dict[int, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Stored attribute values (codes for strings and list elements: the coordinator holds
    the dictionaries) of every id in ``top`` that lives in one of ``segments``."""
    wanted = np.unique(top.ids[top.ids >= 0])
    out: dict[str, dict[str, Any]] = {}
    for seg in segments:
        rows = np.flatnonzero(np.isin(seg.ids, wanted))
        if seg.partition in dead:  # a replaced id's old row shares its id: never its attributes
            rows = np.setdiff1d(rows, dead[seg.partition])
        if rows.size:
            out |= encoded_rows(specs, seg.table(), rows)
    return out


def _merge_child(req: NodeRequest, top: TopK, attrs: dict, child: dict[str, Any]) -> tuple[TopK, dict]:
    """Fold a child's answer (over a subset of this node's queries) into ``top``."""
    rows = np.searchsorted(req.query_ids, unpack_array(child["query_ids"], "query_ids"))
    theirs = TopK.empty(top.ids.shape[0], req.k)
    theirs.ids[rows] = unpack_array(child["ids"], "ids")
    theirs.distances[rows] = unpack_array(child["distances"], "distances")
    theirs.stats[rows] = unpack_array(child["stats_per_query"], "stats_per_query")
    return merge([top, theirs], req.k), attrs | child.get("attributes", {})


def _add_stats(total: dict[str, Any], child: dict[str, Any]) -> None:
    for key in ("invoked", "cold", "warm"):
        total["nodes"][key] += child["nodes"][key]
    for key in total["s3"]:
        total["s3"][key] += child["s3"].get(key, 0)  # a subtree's caches add up
    total["positions"] += child["positions"]
    total["search_ms"] += child["search_ms"]
    total["max_node_ms"] = max(total["max_node_ms"], child["max_node_ms"])
