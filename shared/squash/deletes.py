"""Deleting vectors without a rebuild.

A delete writes one small immutable file — the index's bitmap of deleted rows (partition
order, 1 bit per row), the previous version's bits plus the new ones — and then commits a
new manifest version with a **conditional write** (``If-Match`` on the manifest's ETag on
S3, a compare-and-swap under a lock file on ``file://``). Two writers can never both win:
the loser re-reads the manifest, recomputes on top of the winner's version and retries
(``WRITE_ATTEMPTS`` in all), and only then fails with ``WriteConflictError`` (HTTP 409).
Until the manifest is replaced nothing is visible; a crash between the two writes leaves
an unreferenced file and the index as it was.

Readers apply the bitmap everywhere a row can surface: the planner's match counts (so the
"k sure matches" guarantee holds), every partition's candidate rows on the workers, and
the in-process exact scan. A deleted id is never returned.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .arrays import from_arrow_bytes, to_arrow_bytes
from .errors import IndexFormatError, InputError, WriteConflictError
from .manifest import MANIFEST_KEY, FileRef, Manifest
from .storage import Storage, open_storage

WRITE_ATTEMPTS = 5
_BACKOFF_S = 0.05
T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    """What a committed write did: the new manifest version and the rows it changed."""

    version: int
    deleted: int  # rows this write deleted
    not_found: int  # ids given that the index does not hold (or that were deleted before)
    attempts: int  # 1 unless another writer committed meanwhile

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def deleted_bytes(mask: np.ndarray) -> bytes:
    """The deletion file of ``mask`` (n,) bool, partition order."""
    return to_arrow_bytes({"deleted": np.packbits(mask), "n": np.array([mask.shape[0]], dtype=np.int64)})


def bitmap_of(data: bytes, name: str) -> np.ndarray:
    """Inverse of :func:`deleted_bytes`: the mask (n,) bool."""
    arrays = from_arrow_bytes(data, name)
    packed, count = arrays.get("deleted"), arrays.get("n")
    if packed is None or count is None or count.shape != (1,) or packed.shape != (-(-int(count[0]) // 8),):
        raise IndexFormatError(f"{name}: not a deletion bitmap (corrupt index)")
    return np.unpackbits(packed, count=int(count[0])).astype(bool)


def read_deleted(data: bytes, n: int, name: str) -> np.ndarray:
    """:func:`bitmap_of`, checked against the index's row count."""
    bits = bitmap_of(data, name)
    if bits.shape != (n,):
        raise IndexFormatError(
            f"{name}: a deletion bitmap of {bits.shape[0]} rows, the index has {n} (corrupt index)"
        )
    return bits


def check_ids(ids: Any, field: str = "ids") -> np.ndarray:
    """A 1-D array of distinct non-negative int64 ids, or an InputError naming ``field``."""
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{field} must be a list of integers", field=field) from exc
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"{field} must be a non-empty list of integers", field=field)
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{field}: an id is larger than int64", field=field)
    arr = arr.astype(np.int64)
    if int(arr.min()) < 0:
        raise InputError(f"{field} must be non-negative", field=field)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{field}: id {int(uniq[counts > 1][0])} is given twice", field=field)
    return arr


def delete(index_uri: str | Storage, ids: Any = None, filter: Any = None) -> WriteResult:
    """Delete the vectors with ``ids``, or every vector matching ``filter`` (exactly one).

    Ids the index does not hold (or no longer holds) are counted in ``not_found``; when none
    is held nothing is written and the version stays (so a retried delete succeeds). A filter
    matching no live vector is an InputError (a mistyped filter should not pass silently).
    """
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    if (ids is None) == (filter is None):
        raise InputError("give either ids or a filter to delete by (exactly one)", field="ids")
    wanted = None if ids is None else check_ids(ids)

    def write(index, attempt: int) -> tuple[Manifest | None, WriteResult]:
        manifest = index.manifest
        dead = index.deleted if index.deleted is not None else np.zeros(manifest.n, dtype=bool)
        if wanted is not None:
            rows, _ = index.rows_of_ids(wanted)
            rows = rows[~dead[rows]]
            not_found = int(wanted.size - rows.size)
            if rows.size == 0:  # idempotent: a retried delete finds its ids gone, and that is fine
                return None, WriteResult(manifest.version, 0, not_found, attempt)
        else:
            rows = index.matching_rows(index.parse_filter(filter))
            not_found = 0
            if rows.size == 0:
                raise InputError("the filter matches no vector of the index; nothing deleted", field="filter")
        mask = dead.copy()
        mask[rows] = True
        data = deleted_bytes(mask)
        tag = f"{manifest.version + 1:08d}-{uuid.uuid4().hex[:8]}"
        ref = FileRef.of(f"builds/{manifest.build_id}/deleted/{tag}.arrow", data)
        storage.write(ref.key, data)  # first the file, then the commit that names it
        new = dataclasses.replace(
            manifest,
            version=manifest.version + 1,
            deleted=ref,
            stats=manifest.stats | {"deleted": int(mask.sum())},
        )
        return new, WriteResult(new.version, int(rows.size), not_found, attempt)

    return commit_write(storage, write, "delete")


def commit_write(storage: Storage, write: Callable[[Any, int], tuple[Manifest | None, T]], what: str) -> T:
    """Run ``write(index, attempt)`` on the index's current version and commit the manifest it
    returns with a conditional write; when another writer committed first, run it again on
    the winner's version (``WRITE_ATTEMPTS`` in all, jittered backoff), then raise
    WriteConflictError. ``write`` returns ``(None, result)`` when there is nothing to commit.
    The one commit loop of every write (delete, upsert, compact)."""
    from .index import Index  # the reader sits above; writes use it to resolve rows

    storage.check_writable()
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        expected = storage.version(MANIFEST_KEY)
        new, result = write(Index.open(storage), attempt)
        if new is None:
            return result
        try:
            storage.write_if(MANIFEST_KEY, new.to_json(), expected)
        except WriteConflictError:
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1) * (0.5 + np.random.default_rng().random()))
            continue
        return result
    raise WriteConflictError(
        f"{storage.uri}: other writers committed first {WRITE_ATTEMPTS} times in a row; nothing of this "
        f"{what} is visible — retry it"
    )


def manifest_deleted(storage: Storage, manifest: Manifest) -> np.ndarray | None:
    """The deleted-rows mask a manifest names (None: nothing deleted)."""
    from .segment import read_indexed_file

    if manifest.deleted is None:
        return None
    data = manifest.deleted.verify(read_indexed_file(storage, manifest.deleted.key))
    return read_deleted(data, manifest.n, manifest.deleted.key)
