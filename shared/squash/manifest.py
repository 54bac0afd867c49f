"""The versioned ``manifest.json``: the one object that makes an index readable.

It is written last by a build, so a crashed build never leaves a readable half-index, and
it names (with size and SHA-256) every data file of its build.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .attributes import ELEMENT_KINDS, KINDS, AttributeSpec
from .errors import IndexFormatError
from .metrics import METRICS, space_dims
from .timestamps import UNITS

FORMAT = "squash-index"
#: 4: the refinement tier (NNNNN.fine, its CRC in a 6-entry segment layout), segment ids
#: stored uint32 when they fit; 3: nulls, lists, timestamps, ids in the router, dictionaries
#: in their own file; 2: hot/cold tiers, one shared rotation; 1: float32 in every segment.
FORMAT_VERSION = 4
#: Versions this squash reads: a format-3 index is a format-4 one without refinement files
#: (5-entry layouts, int64 ids), so it keeps serving without a rebuild.
READS_VERSIONS = (3, 4)
MANIFEST_KEY = "manifest.json"
#: Optional capabilities a manifest may use; a reader refuses any it does not know (an index
#: a newer squash wrote), never silently ignoring what would change answers.
FEATURES = frozenset({"deletes", "upserts"})


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
    cold: list[FileRef] = field(default_factory=list)  # the float32 rows beside each segment
    dictionaries: FileRef | None = None  # values of string and list columns (None: there are none)
    version: int = 0  # commits since the build (each write adds one)
    deleted: FileRef | None = None  # bitmap of deleted rows, in partition order (None: none)
    # Writes append *delta partitions* (new rows routed to a base partition, coded with its
    # code): ``parents[j]`` is the base partition of partition ``partitions - len(parents) + j``,
    # and each write's router rows (centroids, ids, attribute codes) are one file.
    parents: list[int] = field(default_factory=list)
    router_deltas: list[FileRef] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # see squash.calibration; None = uncalibrated

    @property
    def space_dims(self) -> int:
        """Dimensions of the index's internal space (router, segments, cold rows): ``dims``,
        plus one for ``dot`` (see :mod:`squash.metrics`). Queries are checked against ``dims``."""
        return space_dims(self.dims, self.metric)

    @property
    def refinement(self) -> bool:
        """Whether the segments' refinement files exist (BuildOptions.refine; False before
        format 4): only then may a search re-rank on them and a write add them."""
        return bool(self.params.get("refinement", False))

    @property
    def dot_max_norm(self) -> float:
        """M of the dot metric's augmentation (the largest base row norm); 0 for l2/cosine."""
        return float(self.params.get("dot_max_norm", 0.0))

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
            "cold": [s.__dict__ for s in self.cold],
            "dictionaries": None if self.dictionaries is None else self.dictionaries.__dict__,
            "version": self.version,
            "features": sorted(self.features),
            "deleted": None if self.deleted is None else self.deleted.__dict__,
            "parents": self.parents,
            "router_deltas": [r.__dict__ for r in self.router_deltas],
            "partition_sizes": self.partition_sizes,
            "params": self.params,
            "stats": self.stats,
        }
        if self.calibration is not None:
            doc["calibration"] = self.calibration
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST_KEY) -> Manifest:
        """Parse and validate a manifest: any inconsistency is an IndexFormatError
        (``index_corrupt``) naming the field, before anything trusts the numbers."""
        doc = _load_doc(data, where)
        version = doc.get("format_version")
        if _is_int(version) and version < min(READS_VERSIONS):
            raise IndexFormatError(
                f"{where}: the index was built by an older squash (format version {version}); "
                f"rebuild it with this version (`squash build`), which reads formats "
                f"{', '.join(map(str, READS_VERSIONS))}"
            )
        if version not in READS_VERSIONS or not _is_int(version):
            raise IndexFormatError(
                f"{where}: format version {version!r} is not supported "
                f"(this squash reads versions {', '.join(map(str, READS_VERSIONS))}; "
                "a newer squash built it?)"
            )
        try:
            _validate(doc)
            return cls(
                build_id=doc["build_id"],
                created=doc["created"],
                n=doc["n"],
                dims=doc["dims"],
                metric=doc["metric"],
                partitions=doc["partitions"],
                bits_per_dim=float(doc["bits_per_dim"]),
                attributes=[AttributeSpec.from_json(a) for a in doc["attributes"]],
                router=FileRef(**doc["router"]),
                segments=[FileRef(**ref) for ref in doc["segments"]],
                cold=[FileRef(**ref) for ref in doc["cold"]],
                dictionaries=None if doc.get("dictionaries") is None else FileRef(**doc["dictionaries"]),
                version=doc.get("version", 0),
                deleted=None if doc.get("deleted") is None else FileRef(**doc["deleted"]),
                parents=list(doc.get("parents", [])),
                router_deltas=[FileRef(**r) for r in doc.get("router_deltas", [])],
                partition_sizes=list(doc["partition_sizes"]),
                params=doc.get("params", {}),
                stats=doc.get("stats", {}),
                calibration=doc.get("calibration"),
            )
        except _SchemaError as exc:
            raise IndexFormatError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where}: missing or malformed field ({exc})") from exc

    @property
    def features(self) -> set[str]:
        """The optional capabilities this manifest uses (see FEATURES)."""
        return ({"deletes"} if self.deleted is not None else set()) | ({"upserts"} if self.parents else set())

    @property
    def base_partitions(self) -> int:
        """Partitions of the build (the rest are delta partitions of writes)."""
        return self.partitions - len(self.parents)

    def summary(self) -> dict[str, Any]:
        """What ``squash info`` and ``GET /indexes/{index}`` show."""
        return {
            "build_id": self.build_id,
            "version": self.version,
            "deleted": self.stats.get("deleted", 0),
            "created": self.created,
            "n": self.n,
            "dims": self.dims,
            "metric": self.metric,
            "partitions": self.partitions,
            "bits_per_dim": self.bits_per_dim,
            "attributes": [a.summary() for a in self.attributes],
            "stats": self.stats,
            "calibration": _calibration_summary(self.calibration),
        }


def _calibration_summary(cal: dict[str, Any] | None) -> dict[str, Any] | None:
    """The calibration's provenance (not its table) for ``info``."""
    if cal is None:
        return None
    return {k: cal.get(k) for k in ("source", "n_queries", "seconds", "ranking")}


def is_squash_manifest(data: bytes) -> bool:
    """Whether ``data`` is (meant to be) a squash manifest, valid or not: a JSON object with
    ``"format": "squash-index"``. Builds refuse to replace anything else."""
    try:
        _load_doc(data, MANIFEST_KEY)
    except IndexFormatError:
        return False
    return True


def _load_doc(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IndexFormatError(f"{where}: not a squash index manifest")
    return doc


class _SchemaError(Exception):
    """A manifest field that fails the schema; the message names it."""


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise _SchemaError(message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _validate(doc: dict[str, Any]) -> None:
    """The manifest schema: types, ranges, and agreement between the counts."""
    for key in ("build_id", "created"):
        _need(isinstance(doc.get(key), str) and doc[key] != "", f"{key} must be a non-empty string")
    for key in ("n", "dims", "partitions"):
        _need(
            _is_int(doc.get(key)) and doc[key] > 0, f"{key} must be a positive integer, got {doc.get(key)!r}"
        )
    _need(doc["partitions"] <= doc["n"], f"partitions ({doc['partitions']}) is more than n ({doc['n']})")
    _need(doc.get("metric") in METRICS, f"metric {doc.get('metric')!r} is not one of {', '.join(METRICS)}")
    bits = doc.get("bits_per_dim")
    _need(_is_number(bits) and 0 < bits <= 8, f"bits_per_dim must be a number in (0, 8], got {bits!r}")
    sizes = doc.get("partition_sizes")
    _need(
        isinstance(sizes, list) and len(sizes) == doc["partitions"],
        f"partition_sizes must list one size per partition ({doc['partitions']})",
    )
    _need(all(_is_int(v) and v >= 0 for v in sizes), "partition_sizes must be non-negative integers")
    _need(sum(sizes) == doc["n"], f"partition_sizes sum to {sum(sizes)}, not n ({doc['n']})")
    _file_ref(doc.get("router"), "router")
    features = doc.get("features", [])
    _need(isinstance(features, list) and all(isinstance(f, str) for f in features), "features must be a list")
    unknown = sorted(set(features) - FEATURES)
    _need(
        not unknown,
        f"uses features this squash does not know ({', '.join(unknown)}): a newer squash wrote it",
    )
    _need(
        _is_int(doc.get("version", 0)) and doc.get("version", 0) >= 0,
        "version must be a non-negative integer",
    )
    if doc.get("deleted") is not None:
        _file_ref(doc["deleted"], "deleted")
    parents, deltas = doc.get("parents", []), doc.get("router_deltas", [])
    _need(isinstance(parents, list) and isinstance(deltas, list), "parents and router_deltas must be lists")
    base = doc["partitions"] - len(parents)
    _need(
        base >= 1 and all(_is_int(p) and 0 <= p < base for p in parents), "parents must name base partitions"
    )
    _need(bool(parents) == bool(deltas), "delta partitions need their router files (and back)")
    for i, ref in enumerate(deltas):
        _file_ref(ref, f"router_deltas[{i}]")
    if doc.get("dictionaries") is not None:
        _file_ref(doc["dictionaries"], "dictionaries")
    for key, what in (("segments", "file"), ("cold", "float32 file")):
        refs = doc.get(key)
        _need(
            isinstance(refs, list) and len(refs) == doc["partitions"],
            f"{key} must list one {what} per partition ({doc['partitions']})",
        )
        for i, ref in enumerate(refs):
            _file_ref(ref, f"{key}[{i}]")
    space = space_dims(doc["dims"], doc["metric"])  # dot rows carry one more dimension
    for i, ref in enumerate(doc["cold"]):
        _need(ref["size"] == 4 * space * sizes[i], f"cold[{i}].size is not 4 x {space} dims x partition size")
    for key in ("params", "stats"):
        _need(isinstance(doc.get(key, {}), dict), f"{key} must be an object")
    if doc["metric"] == "dot":
        m = doc.get("params", {}).get("dot_max_norm")
        _need(
            _is_number(m) and math.isfinite(m) and m >= 0,
            f"params.dot_max_norm must be a finite number >= 0 for the dot metric, got {m!r}",
        )
    attrs = doc.get("attributes")
    _need(isinstance(attrs, list), "attributes must be a list")
    names: set[str] = set()
    for i, spec in enumerate(attrs):
        name = _attribute(spec, f"attributes[{i}]")
        _need(name not in names and name != "id", f"attributes[{i}]: attribute {name!r} is listed twice")
        names.add(name)
    coded = any(a.get("type") in ("category", "list") for a in attrs)
    _need(not coded or doc.get("dictionaries") is not None, "string or list attributes need dictionaries")


def _file_ref(ref: Any, where: str) -> None:
    _need(
        isinstance(ref, dict) and set(ref) == {"key", "size", "sha256"},
        f"{where} must be {{key, size, sha256}}",
    )
    key = ref["key"]
    _need(
        isinstance(key, str)
        and key != ""
        and not key.startswith("/")
        and "\\" not in key
        and ".." not in key.split("/"),
        f"{where}.key {key!r} must be a relative path inside the index",
    )
    _need(_is_int(ref["size"]) and ref["size"] >= 0, f"{where}.size must be a non-negative integer")
    _need(
        isinstance(ref["sha256"], str) and bool(_SHA256.match(ref["sha256"])),
        f"{where}.sha256 must be 64 hex digits",
    )


def _attribute(spec: Any, where: str) -> str:
    _need(isinstance(spec, dict), f"{where} must be an object")
    name, kind = spec.get("name"), spec.get("type")
    _need(
        isinstance(name, str) and name != "" and not name.startswith("$"),
        f"{where}.name {name!r} must be a non-empty string not starting with '$'",
    )
    _need(kind in KINDS, f"{where} ({name}): type {kind!r} is not one of {', '.join(KINDS)}")
    where = f"{where} ({name})"
    _need(isinstance(spec.get("nullable", False), bool), f"{where}: nullable must be a bool")
    if kind in ("int", "float", "timestamp"):
        cells = spec.get("cells")
        _need(isinstance(cells, dict), f"{where}: numeric attributes need cells {{lo, hi}}")
        lo, hi = cells.get("lo"), cells.get("hi")
        cap = 256
        _need(
            isinstance(lo, list) and isinstance(hi, list) and len(lo) == len(hi) and 0 < len(lo) <= cap,
            f"{where}: cells lo and hi must be lists of the same length (1 to {cap})",
        )
        _need(
            all(_is_number(v) and math.isfinite(v) for v in lo + hi),
            f"{where}: cells must hold finite numbers",
        )
        _need(all(a <= b for a, b in zip(lo, hi, strict=True)), f"{where}: cells with lo > hi")
    if kind == "timestamp":
        _need(spec.get("unit") in UNITS, f"{where}: unit must be one of {', '.join(UNITS)}")
    if kind in ("category", "list"):
        values = spec.get("values")
        _need(_is_int(values) and 0 <= values < 2**31, f"{where}: values must be a count of distinct values")
    if kind == "list":
        _need(
            spec.get("element") in ELEMENT_KINDS,
            f"{where}: element must be one of {', '.join(ELEMENT_KINDS)}",
        )
        frequent = spec.get("frequent", [])
        _need(
            isinstance(frequent, list)
            and all(_is_int(c) and 0 <= c < spec["values"] for c in frequent)
            and len(set(frequent)) == len(frequent) <= 56,
            f"{where}: frequent must list distinct element codes",
        )
    return name
