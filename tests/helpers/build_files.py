"""An index's files as {relative key: bytes}, comparable across builds of the same data.

Two builds of the same input with the same seed differ only in their build id and their
timings; :func:`normalised` removes both, so equal dicts mean byte-identical indexes.
"""

from __future__ import annotations

import json
from pathlib import Path


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_files(bucket: str, prefix: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def normalised(files: dict[str, bytes]) -> dict[str, bytes]:
    """The build id replaced by "B" in keys and manifest; creation time and timings dropped."""
    build_id = json.loads(files["manifest.json"])["build_id"]
    doc = json.loads(files["manifest.json"].decode().replace(build_id, "B"))
    doc.pop("created")
    doc["stats"].pop("build_seconds")
    if doc.get("calibration"):
        doc["calibration"].pop("seconds")
    out = {k.replace(build_id, "B"): v for k, v in files.items() if k != "manifest.json"}
    return out | {"manifest.json": json.dumps(doc, sort_keys=True).encode()}


def assert_same_index(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Both normalised: the same files with the same bytes."""
    a, b = normalised(a), normalised(b)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"files differ: {differ[:5]}"
