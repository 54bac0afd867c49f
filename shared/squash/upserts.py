"""Upserts: insert or replace vectors by id without a rebuild.

New rows are routed to their nearest base partition and coded with that partition's own
code (centre, cells, sketch axes — :func:`squash.segment.delta_segment`), so they score
exactly like its rows. Each touched partition gets a *delta partition* (its own hot and cold
files, the parent's centroid); the write's router rows (centroids, ids, attribute codes) are
one more small file; attributes are coded with the index's schema (cells widen, dictionaries
append, :func:`squash.attribute_build.encode_like`). The previous live row of every id
given is marked deleted (:mod:`squash.deletes`), so an id has at most one live row and a
query returns its new vector and attributes. Then the manifest is committed with a
conditional write, retried on a lost race as deletes are.

The planner, the worker tree and the cost model see delta partitions as partitions; a query
whose routing reaches a parent reaches its deltas too (same centroid, same score). Many
small writes make many small partitions: compaction (issue #12) will fold them back.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import dictionaries as dictionary_files
from .attribute_build import encode_like
from .build import prepare_rows
from .deletes import check_ids, commit_write, deleted_bytes
from .errors import InputError
from .inputs import check_vectors
from .manifest import FileRef
from .osq.scalar import far_rows
from .planner import centroid_distances
from .router import delta_router_bytes
from .segment import delta_segment, write_segment
from .storage import Storage, open_storage


@dataclass(frozen=True)
class UpsertResult:
    """A committed upsert: the new manifest version, rows written, and how many replaced a
    live row of the same id."""

    version: int
    upserted: int
    replaced: int
    attempts: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


#: Rows per upsert call (one write's files stay small; split bigger loads).
MAX_UPSERT_ROWS = 100_000


def as_table(attributes: Any, n: int) -> pa.Table | None:
    """Attributes as an Arrow table: a pyarrow Table, a dict of columns or a list of dicts."""
    if attributes is None:
        return None
    try:
        if isinstance(attributes, pa.Table):
            table = attributes
        elif isinstance(attributes, dict):
            table = pa.table(attributes)
        elif isinstance(attributes, list):
            table = pa.Table.from_pylist(attributes)
        else:
            raise InputError(
                "attributes must be a pyarrow Table, a dict of columns or a list of dicts", field="attributes"
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"attributes: {' '.join(str(exc).split())}", field="attributes") from exc
    if table.num_rows != n:
        raise InputError(f"attributes have {table.num_rows} rows for {n} vectors", field="attributes")
    return table


def upsert(index_uri: str | Storage, ids: Any, vectors: Any, attributes: Any = None) -> UpsertResult:
    """Insert or replace the vectors ``ids`` (n,) with ``vectors`` (n, d) and ``attributes``."""
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    ids = check_ids(ids)
    x = check_vectors(vectors, "vectors")
    if x.shape[0] != ids.shape[0]:
        raise InputError(f"{ids.shape[0]} ids for {x.shape[0]} vectors", field="ids")
    if ids.shape[0] > MAX_UPSERT_ROWS:
        raise InputError(f"at most {MAX_UPSERT_ROWS:,} rows per upsert, got {ids.shape[0]:,}", field="ids")
    table = as_table(attributes, ids.shape[0])
    if table is not None and "id" in table.column_names:
        raise InputError("pass ids separately (ids=...), not as an 'id' attribute column", field="attributes")

    def write(index, attempt: int):
        new = _write(storage, index, ids, x, table)
        replaced = int(new.stats.get("deleted", 0)) - int(index.manifest.stats.get("deleted", 0))
        return new, UpsertResult(new.version, int(ids.shape[0]), replaced, attempt)

    return commit_write(storage, write, "upsert")


def _write(storage: Storage, index, ids: np.ndarray, x: np.ndarray, table: pa.Table | None):
    """Write a version's files (delta segments, router rows, dictionaries, deletions) and
    return the manifest that names them (not yet committed)."""
    m = index.manifest
    if x.shape[1] != m.dims:
        raise InputError(f"vectors have dimension {x.shape[1]}, the index {m.dims}", field="vectors")
    if m.metric == "dot":
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        if norms.max() > m.dot_max_norm * (1 + 1e-6):
            raise InputError(
                f"vector {int(np.argmax(norms))} has norm {norms.max():.6g}, above the index's largest "
                f"({m.dot_max_norm:.6g}): a dot index cannot take longer vectors without a rebuild",
                field="vectors",
            )
    rows = index.router.rotate(prepare_rows(x, m.metric, m.dot_max_norm))
    attrs = encode_like(table, ids.shape[0], m.attributes, index.dictionaries)
    base = m.base_partitions
    parent = np.argmin(centroid_distances(index.router, rows)[:, :base], axis=1)
    # Rows far outside their partition's cells go to a delta of their own (widened cells,
    # osq.scalar.cover), so they cannot coarsen the code of the write's other rows.
    far = np.zeros(parent.shape[0], dtype=bool)
    for p in np.unique(parent).tolist():
        seg = index.segment(p)[0]
        mine = parent == p
        far[mine] = far_rows(seg.code, rows[mine].astype(np.float64) - seg.centroid)
    group = 2 * parent + far
    order = np.argsort(group, kind="stable")
    groups, sizes = np.unique(group, return_counts=True)
    parents = groups // 2
    tag = f"{m.version + 1:08d}-{uuid.uuid4().hex[:8]}"
    prefix = f"builds/{m.build_id}/writes/{tag}"
    segments, colds = [], []
    start = 0
    for g, size in zip(groups.tolist(), sizes.tolist(), strict=True):
        p = g // 2
        take = order[start : start + size]
        start += size
        hot, cold, fine = delta_segment(rows[take], index.segment(p)[0], ids[take], attrs.take(take))
        name = f"{p:05d}{'-far' if g % 2 else ''}.arrow"
        ref, cold_ref = write_segment(storage, f"{prefix}/{name}", hot, cold, fine if m.refinement else None)
        segments.append(ref)
        colds.append(cold_ref)
    ordered = attrs.take(order)
    router = delta_router_bytes(
        index.router.centroids[parents], sizes, ids[order], ordered.codes, ordered.stored_valid()
    )
    router_ref = FileRef.of(f"{prefix}/router.arrow", router)
    storage.write(router_ref.key, router)
    dict_ref = m.dictionaries
    if any(len(attrs.dictionaries[k]) != len(index.dictionaries[k]) for k in index.dictionaries):
        data = dictionary_files.to_bytes(attrs.dictionaries)
        dict_ref = FileRef.of(f"{prefix}/dictionaries.arrow", data)
        storage.write(dict_ref.key, data)
    # The previous live row of each id is deleted; the new rows are live.
    old_rows, _ = index.rows_of_ids(ids)
    dead = np.zeros(m.n + ids.shape[0], dtype=bool)
    if index.deleted is not None:
        dead[: m.n] = index.deleted
    dead[old_rows] = True
    deleted_ref = m.deleted
    if dead.any():
        data = deleted_bytes(dead)
        deleted_ref = FileRef.of(f"{prefix}/deleted.arrow", data)
        storage.write(deleted_ref.key, data)
    return dataclasses.replace(
        m,
        version=m.version + 1,
        n=m.n + ids.shape[0],
        partitions=m.partitions + parents.shape[0],
        attributes=attrs.specs,
        segments=[*m.segments, *segments],
        cold=[*m.cold, *colds],
        partition_sizes=[*m.partition_sizes, *sizes.tolist()],
        parents=[*m.parents, *parents.tolist()],
        router_deltas=[*m.router_deltas, router_ref],
        dictionaries=dict_ref,
        deleted=deleted_ref,
        stats=m.stats
        | {"deleted": int(dead.sum()), "delta_rows": int(m.stats.get("delta_rows", 0)) + ids.shape[0]},
    )
