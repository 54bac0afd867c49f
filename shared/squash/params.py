"""Search knobs, with defaults tuned for recall@10 >= 0.95 (see README, "Search knobs")."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InputError

MAX_K = 1000
LEVELS = ("auto", "all", "exact")
MAX_INT_PARAM = 2**63 - 1  # integer knobs must fit int64 (they meet numpy counts)


@dataclass(frozen=True)
class SearchParams:
    """How much work each level may do.

    routing_factor: L1 visits every partition whose centroid is within this factor of the
        nearest centroid's distance (then more, in distance order, until ``min_candidates``
        matching vectors are covered).
    min_candidates: matching vectors L1 must cover per query (at least k).
    min_partitions: ... and at least this many average partitions' worth of matching
        vectors, so coverage keeps up when partitions grow with N (an absolute count alone
        covered only 4 partitions per query at 1M vectors, recall 0.90).
    max_partitions: hard cap on partitions per query from the factor rule (coverage may
        still add more so a full k is returned); 0 = no cap.
    sketch_keep: fraction of a partition's candidates the binary sketch (L2) keeps.
    rerank_factor: L3 keeps k * rerank_factor candidates per partition for exact L4.
    levels: "auto" re-ranks a partition's candidates exactly in one BLAS product when that
        is cheaper than L2 -> L3 -> L4 (resident vectors, small partitions); "all" always
        runs the levels; "exact" never does.
    """

    routing_factor: float = 1.12
    min_candidates: int = 2000
    min_partitions: float = 8.0
    max_partitions: int = 0
    sketch_keep: float = 0.8
    rerank_factor: int = 6
    levels: str = "auto"

    def __post_init__(self) -> None:
        checks = {
            "routing_factor": self.routing_factor >= 1.0,
            "min_candidates": self.min_candidates >= 0,
            "min_partitions": self.min_partitions >= 0,
            "max_partitions": self.max_partitions >= 0,
            "sketch_keep": 0.0 < self.sketch_keep <= 1.0,
            "rerank_factor": self.rerank_factor >= 1,
            "levels": self.levels in LEVELS,
        }
        for f in fields(self):  # NaN and inf pass no range check below; say so plainly
            val = getattr(self, f.name)
            if isinstance(val, float) and not math.isfinite(val):
                raise InputError(f"search parameter {f.name}={val!r} is not a finite number", field=f.name)
        for name, ok in checks.items():
            if not ok:
                raise InputError(
                    f"search parameter {name}={getattr(self, name)!r} is out of range", field=name
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any] | None) -> SearchParams:
        """Build from a request body's ``params``; unknown keys are an error, not ignored."""
        obj = obj or {}
        if not isinstance(obj, dict):
            raise InputError("params must be an object", field="params")
        names = {f.name: f.type for f in fields(cls)}
        unknown = set(obj) - set(names)
        if unknown:
            raise InputError(f"unknown search parameter(s): {', '.join(sorted(unknown))}", field="params")
        clean: dict[str, Any] = {}
        for key, val in obj.items():
            if names[key] == "str":
                if val not in LEVELS:
                    raise InputError(f"search parameter {key} must be one of {list(LEVELS)}", field=key)
                clean[key] = val
                continue
            want_int = names[key] == "int"
            kind = "an integer" if want_int else "a number"
            if isinstance(val, bool) or not isinstance(val, int | float):
                raise InputError(f"search parameter {key} must be {kind}", field=key)
            if isinstance(val, float) and not math.isfinite(val):  # JSON NaN, Infinity, 1e400
                raise InputError(f"search parameter {key} must be a finite number, got {val!r}", field=key)
            if want_int and int(val) != val:
                raise InputError(f"search parameter {key} must be {kind}", field=key)
            if abs(val) > (MAX_INT_PARAM if want_int else sys.float_info.max):
                limit = "int64" if want_int else "float64"
                raise InputError(f"search parameter {key} is too large (beyond {limit})", field=key)
            clean[key] = int(val) if want_int else float(val)
        return cls(**clean)
