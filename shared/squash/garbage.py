"""Garbage collection: delete index files no live version needs.

A build keeps the build before it for in-flight readers; writes and compactions leave the
files of older versions (segments they replaced, earlier deletion bitmaps and router rows)
and a crashed build or write leaves files no manifest ever named. ``gc`` only ever looks at
squash's own files (``builds/<build id>/...``), and deletes one only after it has seen it
*unreferenced* by the current manifest for a whole grace period (default one hour, far
longer than any query pins a version): mark, then sweep. The first run marks
(``gc-marks.json``: key -> when it was first seen unreferenced); a later run deletes what
is still unreferenced and was marked at least the grace period before. A file that a build
or write is still uploading, or that a reader of the previous version still needs, is
therefore never deleted early, however old the file itself is.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from .errors import IndexNotFoundError, InputError
from .fine import fine_key
from .manifest import Manifest
from .storage import Storage, open_storage

DEFAULT_GRACE_S = 3600.0
MARKS_KEY = "gc-marks.json"
_OWN = re.compile(r"^builds/\d{8}T\d{6}Z-[0-9a-f]{8}/")  # a build's folder (build ids are made so)


@dataclass(frozen=True)
class GcResult:
    deleted: int
    marked: int  # unreferenced, waiting out the grace period
    referenced: int


def referenced_keys(manifest: Manifest) -> set[str]:
    """Every file the manifest names."""
    refs = [manifest.router, *manifest.router_deltas, *manifest.segments, *manifest.cold]
    refs += [r for r in (manifest.dictionaries, manifest.deleted) if r is not None]
    # each segment's refinement file is named by the segment (which carries its CRC)
    return {r.key for r in refs} | {fine_key(r.key) for r in manifest.segments}


def collect(index_uri: str | Storage, older_than_s: float = DEFAULT_GRACE_S) -> GcResult:
    """Mark squash files the current manifest does not name; delete those marked at least
    ``older_than_s`` seconds ago and still unreferenced."""
    from .index import Index

    if not older_than_s >= 0:
        raise InputError("the grace period must not be negative", field="older_than")
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    live = referenced_keys(Index.open(storage).manifest)
    try:
        marks = json.loads(storage.read(MARKS_KEY))
        marks = {k: float(v) for k, v in marks.items()} if isinstance(marks, dict) else {}
    except (IndexNotFoundError, ValueError, TypeError):
        marks = {}
    now = time.time()
    candidates = {key for key, _ in storage.listing() if _OWN.match(key) and key not in live}
    due = sorted(k for k in candidates if k in marks and now - marks[k] >= older_than_s)
    storage.delete_keys(due)
    kept = {k: marks.get(k, now) for k in candidates if k not in due}
    storage.write(MARKS_KEY, json.dumps(kept, sort_keys=True).encode())
    return GcResult(deleted=len(due), marked=len(kept), referenced=len(live))
