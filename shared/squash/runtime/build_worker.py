"""The worker's ``build`` action: quantize partitions of a fanned-out build (issue #14).

Event (from :class:`squash.runtime.build_driver.LambdaBuilder`)::

    {"action": "build", "index": "s3://<bucket>/<prefix><name>", "build_id": "...",
     "partitions": [p, ...], "budget": bits, "sketch_bits": b,
     "probe": {"queries": packed, "exclude": packed}}        # optional

For each partition the function reads ``builds/<id>/inputs/<p>.arrow`` (written by the
driver), builds the segment exactly as a local build does, and writes it under
``builds/<id>/partitions/``; it answers the file refs, centroids, sizes and the ranking
probe's top-k lists. It writes nothing else and nothing outside the index: the action is
refused unless the deployment enables builds (template.yaml ``EnableBuilds``), and the
index must lie under this deployment's bucket and prefix.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Any

from ..build_partitions import input_key, quantize_partition, read_partition_input
from ..errors import InputError
from ..ranking import RankingProbe
from ..storage import Storage
from .codec import pack_array, unpack_array
from .config import RuntimeConfig

BUILD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
MAX_PARTITIONS_PER_CALL = 256


def handle(event: dict[str, Any], config: RuntimeConfig, storage_of) -> dict[str, Any]:
    """Serve one build invocation; errors are ``{"error": {...}}`` like a query's."""
    if not config.builds_enabled:
        return _error(403, "builds_disabled", "this deployment does not build indexes (EnableBuilds=false)")
    try:
        uri, build_id, parts, budget, sketch_bits, probe = _decode(event, config)
    except InputError as exc:
        return _error(400, "invalid_request", exc.message)
    started = time.perf_counter()
    storage: Storage = storage_of(uri)
    prefix = f"builds/{build_id}"
    built, read = [], 0
    for part in parts:
        key = input_key(prefix, part)
        data = storage.read(key)
        read += len(data)
        rows, x, ids, attrs = read_partition_input(data, key)
        r = quantize_partition(storage, prefix, part, rows, x, ids, attrs, budget, sketch_bits, probe)
        built.append(
            {
                "partition": r.part,
                "segment": asdict(r.segment),
                "cold": asdict(r.cold),
                "centroid": pack_array(r.centroid),
                "rows": r.size,
                "rms": r.rms,
                "fine_bytes": r.fine_bytes,
            }
        )
    written = sum(b["segment"]["size"] + b["cold"]["size"] + b["fine_bytes"] for b in built)
    out: dict[str, Any] = {
        "built": built,
        "s3": {"bytes_read": read, "bytes_written": written},
        "seconds": round(time.perf_counter() - started, 4),
    }
    if probe is not None:
        out["probe"] = {
            f"{kind}.{what}": pack_array(arr)
            for kind, pair in probe.state().items()
            for what, arr in zip(("d", "i"), pair, strict=True)
        }
    return out


def _decode(event: dict[str, Any], config: RuntimeConfig):
    uri = event.get("index")
    if not isinstance(uri, str) or not uri.startswith(f"s3://{config.bucket}/{config.prefix}"):
        raise InputError(
            f"index must be an s3:// URI under s3://{config.bucket}/{config.prefix}", field="index"
        )
    name = uri[len(f"s3://{config.bucket}/{config.prefix}") :]
    if config.index_uri(name) != uri:  # one valid name, no "../" or sub-folders
        raise InputError(f"index {uri!r} is not an index of this deployment", field="index")
    build_id = event.get("build_id")
    if not isinstance(build_id, str) or not BUILD_ID.match(build_id):
        raise InputError("build_id must look like 20261201T120000Z-0123abcd", field="build_id")
    parts = event.get("partitions")
    if (
        not isinstance(parts, list)
        or not 0 < len(parts) <= MAX_PARTITIONS_PER_CALL
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 10**7 for p in parts)
    ):
        raise InputError(
            f"partitions must be 1-{MAX_PARTITIONS_PER_CALL} partition numbers", field="partitions"
        )
    budget, bits = event.get("budget"), event.get("sketch_bits")
    for name_, value, top in (("budget", budget, 8 * 65536), ("sketch_bits", bits, 65536)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= top:
            raise InputError(f"{name_} must be an integer from 1 to {top}", field=name_)
    probe = None
    if event.get("probe") is not None:
        doc = event["probe"]
        if not isinstance(doc, dict):
            raise InputError("probe must be an object", field="probe")
        exclude = doc.get("exclude")
        probe = RankingProbe(
            unpack_array(doc.get("queries"), "probe.queries"),
            None if exclude is None else unpack_array(exclude, "probe.exclude"),
        )
    return uri, build_id, parts, budget, bits, probe


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message}}
