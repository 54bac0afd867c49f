"""Garbage collection: delete index files no live version needs.

A build keeps the build before it for in-flight readers; writes and compactions leave the
files of older versions (segments they replaced, earlier deletion bitmaps and router rows)
and a crashed build or write leaves files no manifest ever named. ``gc`` deletes every file
the current manifest does not name that is older than a grace period (default one hour,
far longer than any query pins a version), so readers of the previous version keep working
and a write still uploading its files is never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .manifest import MANIFEST_KEY, Manifest
from .storage import Storage, open_storage

DEFAULT_GRACE_S = 3600.0
_KEEP = {MANIFEST_KEY, ".squash-write.lock"}


@dataclass(frozen=True)
class GcResult:
    deleted: int
    kept_recent: int  # unreferenced but younger than the grace period
    referenced: int


def referenced_keys(manifest: Manifest) -> set[str]:
    """Every file the manifest names."""
    refs = [manifest.router, *manifest.router_deltas, *manifest.segments, *manifest.cold]
    refs += [r for r in (manifest.dictionaries, manifest.deleted) if r is not None]
    return {r.key for r in refs}


def collect(index_uri: str | Storage, older_than_s: float = DEFAULT_GRACE_S) -> GcResult:
    """Delete files the current manifest does not name and that are older than ``older_than_s``."""
    from .index import Index

    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    live = referenced_keys(Index.open(storage).manifest) | _KEEP
    now = time.time()
    old, recent = [], 0
    for key, modified in storage.listing():
        if key in live:
            continue
        if now - modified >= older_than_s:
            old.append(key)
        else:
            recent += 1
    storage.delete_keys(old)
    return GcResult(deleted=len(old), kept_recent=recent, referenced=len(live - _KEEP))
