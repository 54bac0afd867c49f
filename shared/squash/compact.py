"""Compaction: fold writes back into the build's partitions.

Each base partition that writes touched (it has delta partitions, or deleted rows) is
rebuilt from its live rows — its own and its deltas', read from the cold tier — with a
fresh centre and a fresh code (bit allocation and cells refitted to the rows it now holds:
the rule is *always refit what was touched*, since a partition's code is fitted to its rows
and writes change them). Untouched partitions keep their files. The router is rewritten
once, deltas and the deletion bitmap go, and a new version is committed with the same
conditional write as every write. The calibration is kept: partitions keep their place in
the space, so routing's recall curve is that of the build. Old files stay for in-flight
readers until ``gc``.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

import numpy as np

from .attributes import AttributeColumns, concat
from .build import router_bytes
from .deletes import commit_write
from .errors import InputError
from .manifest import FileRef
from .refine import ColdTier
from .segment import build_segment, delta_segment, write_segment
from .storage import Storage, open_storage


@dataclass(frozen=True)
class CompactResult:
    version: int
    partitions_rebuilt: int
    rows_dropped: int  # deleted rows removed from storage
    delta_partitions_folded: int
    attempts: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def compact(index_uri: str | Storage) -> CompactResult:
    """Fold delta partitions and deleted rows into rebuilt base partitions (see module doc)."""
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri

    def write(index, attempt: int):
        m = index.manifest
        if not m.parents and m.deleted is None:
            return None, CompactResult(m.version, 0, 0, 0, attempt)
        new, rebuilt = _rewrite(storage, index)
        dropped = 0 if index.deleted is None else int(index.deleted.sum())
        return new, CompactResult(new.version, rebuilt, dropped, len(m.parents), attempt)

    return commit_write(storage, write, "compact")


def _rewrite(storage: Storage, index):
    m, router = index.manifest, index.router
    base = m.base_partitions
    live = m.n - (0 if index.deleted is None else int(index.deleted.sum()))
    if live < base:
        raise InputError(
            f"compaction would leave {live:,} vectors in {base:,} partitions (an index needs at least one "
            "vector per partition); rebuild the index from its live vectors instead",
            field="index_uri",
        )
    groups: dict[int, list[int]] = {p: [p] for p in range(base)}
    for j, parent in enumerate(m.parents):
        groups[parent].append(base + j)
    dead = index.deleted if index.deleted is not None else np.zeros(m.n, dtype=bool)
    offsets = router.offsets
    touched = {p for p, parts in groups.items() if len(parts) > 1 or dead[offsets[p] : offsets[p + 1]].any()}
    cold = ColdTier(storage)
    budget = round(m.bits_per_dim * m.space_dims)
    sketch_bits = int(m.params.get("sketch_bits", 32))
    prefix = f"builds/{m.build_id}/compacted/{m.version + 1:08d}-{uuid.uuid4().hex[:8]}"
    segments, colds, sizes, centroids, pieces = [], [], [], [], []
    for p in range(base):
        if p not in touched:
            rows = np.arange(offsets[p], offsets[p + 1])
            segments.append(m.segments[p])
            colds.append(m.cold[p])
            sizes.append(rows.size)
            centroids.append(router.centroids[p])
            pieces.append(_router_piece(router, rows))
            continue
        vectors, attrs, ids = [], [], []
        for part in groups[p]:
            seg = index.segment(part)[0]
            live = np.flatnonzero(~dead[offsets[part] : offsets[part + 1]])
            vectors.append(cold.rows(seg, live))
            ids.append(seg.ids[live])
            attrs.append(seg.table().take(live))
        x = np.concatenate(vectors)
        columns = _columns(m.attributes, index.dictionaries, attrs)
        if x.shape[0]:
            centre = x.mean(axis=0)
            hot, cold_data, fine = build_segment(x, centre, np.concatenate(ids), columns, budget, sketch_bits)
        else:  # emptied: keep its centre and code for the rows later writes route here
            own = index.segment(p)[0]
            centre = own.centroid
            hot, cold_data, fine = delta_segment(x, own, np.concatenate(ids), columns)
        ref, cold_ref = write_segment(
            storage, f"{prefix}/{p:05d}.arrow", hot, cold_data, fine if m.refinement else None
        )
        segments.append(ref)
        colds.append(cold_ref)
        sizes.append(x.shape[0])
        centroids.append(centre.astype(np.float32))
        pieces.append((np.concatenate(ids), columns.codes, columns.valid))
    all_ids = np.concatenate([pc[0] for pc in pieces])
    names = [s.name for s in m.attributes]
    codes = {k: np.concatenate([pc[1][k] for pc in pieces]) for k in names}
    valid = {}
    for k in names:
        if any(k in pc[2] for pc in pieces):
            valid[k] = np.concatenate([pc[2].get(k, np.ones(pc[0].shape[0], dtype=bool)) for pc in pieces])
    order_attrs = AttributeColumns(m.attributes, {}, codes, {}, valid)
    offsets_new = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    data = router_bytes(
        np.stack(centroids), router.global_mean, router.global_rotation, offsets_new, all_ids, order_attrs
    )
    router_ref = FileRef.of(f"{prefix}/router.arrow", data)
    storage.write(router_ref.key, data)
    new = dataclasses.replace(
        m,
        version=m.version + 1,
        n=int(offsets_new[-1]),
        partitions=base,
        segments=segments,
        cold=colds,
        partition_sizes=[int(s) for s in sizes],
        parents=[],
        router_deltas=[],
        router=router_ref,
        deleted=None,
        stats=m.stats | {"deleted": 0, "delta_rows": 0},
    )
    return new, len(touched)


def _router_piece(router, rows: np.ndarray):
    codes = {k: v[rows] for k, v in router.attr_codes.items()}
    valid = {k: v[rows] for k, v in router.attr_valid.items()}
    return router.ids[rows], codes, valid


def _columns(specs, dictionaries, tables) -> AttributeColumns:
    """One partition's attribute columns from the live rows of its segments (codes stay
    valid: writes only widen cells and append dictionary values)."""
    codes = {s.name: np.concatenate([t.codes[s.name] for t in tables]) for s in specs}
    raw = {s.name: concat([t.raw[s.name] for t in tables]) for s in specs}
    valid = {}
    for s in specs:
        if any(s.name in t.valid for t in tables):
            valid[s.name] = np.concatenate([t.valid.get(s.name, np.ones(t.n, dtype=bool)) for t in tables])
    return AttributeColumns(specs, raw, codes, dict(dictionaries), valid)
