"""The versioned ``manifest.json``: the one object that makes an index readable.

It is written last by a build, so a crashed build never leaves a readable half-index, and
it names (with size and SHA-256) every data file of its build.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .attributes import AttributeSpec
from .errors import IndexFormatError

FORMAT = "squash-index"
FORMAT_VERSION = 1
MANIFEST_KEY = "manifest.json"
METRICS = ("l2", "cosine")


@dataclass(frozen=True)
class FileRef:
    key: str
    size: int
    sha256: str

    @classmethod
    def of(cls, key: str, data: bytes) -> FileRef:
        return cls(key, len(data), hashlib.sha256(data).hexdigest())

    def verify(self, data: bytes) -> bytes:
        """Return ``data`` if it is exactly the file the manifest names."""
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise IndexFormatError(
                f"{self.key}: size or checksum does not match the manifest (corrupt or replaced)"
            )
        return data


@dataclass(frozen=True)
class Manifest:
    build_id: str
    created: str
    n: int
    dims: int
    metric: str
    partitions: int
    bits_per_dim: float
    attributes: list[AttributeSpec]
    router: FileRef
    segments: list[FileRef]
    partition_sizes: list[int]
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # see squash.calibration; None = uncalibrated

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "build_id": self.build_id,
            "created": self.created,
            "n": self.n,
            "dims": self.dims,
            "metric": self.metric,
            "partitions": self.partitions,
            "bits_per_dim": self.bits_per_dim,
            "attributes": [a.to_json() for a in self.attributes],
            "router": self.router.__dict__,
            "segments": [s.__dict__ for s in self.segments],
            "partition_sizes": self.partition_sizes,
            "params": self.params,
            "stats": self.stats,
        }
        if self.calibration is not None:
            doc["calibration"] = self.calibration
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST_KEY) -> Manifest:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise IndexFormatError(f"{where}: not a squash index manifest")
        if doc.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{where}: format version {doc.get('format_version')} is not supported "
                f"(this squash reads version {FORMAT_VERSION})"
            )
        try:
            return cls(
                build_id=doc["build_id"],
                created=doc["created"],
                n=int(doc["n"]),
                dims=int(doc["dims"]),
                metric=doc["metric"],
                partitions=int(doc["partitions"]),
                bits_per_dim=float(doc["bits_per_dim"]),
                attributes=[AttributeSpec.from_json(a) for a in doc["attributes"]],
                router=FileRef(**doc["router"]),
                segments=[FileRef(**s) for s in doc["segments"]],
                partition_sizes=[int(s) for s in doc["partition_sizes"]],
                params=doc.get("params", {}),
                stats=doc.get("stats", {}),
                calibration=doc.get("calibration"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where}: missing or malformed field ({exc})") from exc

    def summary(self) -> dict[str, Any]:
        """What ``squash info`` and ``GET /indexes/{index}`` show."""
        return {
            "build_id": self.build_id,
            "created": self.created,
            "n": self.n,
            "dims": self.dims,
            "metric": self.metric,
            "partitions": self.partitions,
            "bits_per_dim": self.bits_per_dim,
            "attributes": [
                {"name": a.name, "type": a.kind}
                | ({"categories": list(a.categories)} if a.kind == "category" else {})
                for a in self.attributes
            ],
            "stats": self.stats,
            "calibration": _calibration_summary(self.calibration),
        }


def _calibration_summary(cal: dict[str, Any] | None) -> dict[str, Any] | None:
    """The calibration's provenance (not its table) for ``info``."""
    if cal is None:
        return None
    return {k: cal.get(k) for k in ("source", "n_queries", "seconds")}
