"""Search knobs. Users turn ``target_recall``; the planner derives coverage from the index's
calibration (see README, "Planning to a recall target"). The routing knobs stay for experts."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InputError

MAX_K = 1000
LEVELS = ("auto", "all", "exact")
PLANS = ("auto", "routed", "exact")
RERANKS = ("auto", "none", "fine", "float32", "exact")
DEFAULT_TARGET_RECALL = 0.95

#: The fixed rule used when a routing knob is given, or the index carries no calibration.
LEGACY_ROUTING_FACTOR = 1.12
LEGACY_MIN_CANDIDATES = 2000
LEGACY_MIN_PARTITIONS = 8.0
MAX_INT_PARAM = 2**63 - 1  # integer knobs must fit int64 (they meet numpy counts)


@dataclass(frozen=True)
class SearchParams:
    """What a search must deliver, and (optionally) how.

    target_recall: the expected recall@k the planner plans for, in (0, 1]; 1 means exact.
        Coverage per query comes from the calibration stored with the index.
    plan: "auto" picks the cheaper of a routed and an exact scan by the cost model;
        "routed" and "exact" force one.
    routing_factor, min_candidates, min_partitions: expert knobs. Giving any of them
        replaces the calibrated rule by the fixed one: visit every partition whose centroid
        is within ``routing_factor`` of the nearest one's distance, then more in distance
        order until ``max(k, min_candidates, min_partitions x average matches per
        partition)`` matches are covered. Unset knobs of that rule take their legacy
        defaults (1.12, 2000, 8).
    max_partitions: hard cap on partitions per query from the distance rule (coverage may
        still add more so a full k is returned); 0 = no cap.
    rerank: what the final ranking scores on. "none": the hot tier's code (nothing read
        from storage on a warm worker); "fine": the ``k * rerank_factor`` best code
        estimates of each query per partition are re-scored on the refinement tier (four
        more bits on the 4-bit axes, loaded once per partition and kept resident);
        "float32": the same candidates re-scored on float32 rows read from the cold tier
        (exact distances); "exact": every candidate is scored on float32; "auto"
        (default): the planner picks the first of "none", "fine", "float32" whose
        calibrated recall meets the target, "exact" for target 1.
    sketch_keep: fraction of a partition's candidates the binary sketch (L2) keeps.
    rerank_factor: L4 re-scores k * rerank_factor candidates per query and partition.
    levels: "auto" scores every candidate on the code (L3); "all" prunes with the sign
        sketch (L2) first; "exact" is ``rerank="exact"``.
    """

    target_recall: float = DEFAULT_TARGET_RECALL
    plan: str = "auto"
    routing_factor: float | None = None
    min_candidates: int | None = None
    min_partitions: float | None = None
    max_partitions: int = 0
    rerank: str = "auto"
    sketch_keep: float = 0.9
    rerank_factor: int = 4
    levels: str = "auto"

    def __post_init__(self) -> None:
        checks = {
            "target_recall": 0.0 < self.target_recall <= 1.0,
            "plan": self.plan in PLANS,
            "routing_factor": self.routing_factor is None or 1.0 <= self.routing_factor < math.inf,
            "min_candidates": self.min_candidates is None or self.min_candidates >= 0,
            "min_partitions": self.min_partitions is None or 0 <= self.min_partitions < math.inf,
            "max_partitions": self.max_partitions >= 0,
            "sketch_keep": 0.0 < self.sketch_keep <= 1.0,
            "rerank_factor": self.rerank_factor >= 1,
            "levels": self.levels in LEVELS,
            "rerank": self.rerank in RERANKS,
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

    @property
    def expert(self) -> bool:
        """Whether a routing knob was given (the fixed rule replaces the calibrated one)."""
        return any(v is not None for v in (self.routing_factor, self.min_candidates, self.min_partitions))

    def fixed_rule(self) -> tuple[float, int, float]:
        """(routing_factor, min_candidates, min_partitions) of the fixed rule."""
        return (
            LEGACY_ROUTING_FACTOR if self.routing_factor is None else self.routing_factor,
            LEGACY_MIN_CANDIDATES if self.min_candidates is None else self.min_candidates,
            LEGACY_MIN_PARTITIONS if self.min_partitions is None else self.min_partitions,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, obj: dict[str, Any] | None) -> SearchParams:
        """Build from a request body's ``params``; unknown keys are an error, not ignored."""
        obj = obj or {}
        if not isinstance(obj, dict):
            raise InputError("params must be an object", field="params")
        names = {f.name: str(f.type) for f in fields(cls)}
        unknown = set(obj) - set(names)
        if unknown:
            raise InputError(f"unknown search parameter(s): {', '.join(sorted(unknown))}", field="params")
        clean: dict[str, Any] = {}
        for key, val in obj.items():
            kind = names[key]
            if kind == "str":
                choices = {"plan": PLANS, "rerank": RERANKS}.get(key, LEVELS)
                if val not in choices:
                    raise InputError(f"search parameter {key} must be one of {list(choices)}", field=key)
                clean[key] = val
                continue
            if val is None and "None" in kind:
                continue
            want_int = kind.startswith("int")
            if isinstance(val, bool) or not isinstance(val, int | float):
                raise InputError(f"search parameter {key} must be {_kind(want_int)}", field=key)
            if isinstance(val, float) and not math.isfinite(val):  # JSON NaN, Infinity, 1e400
                raise InputError(f"search parameter {key} must be a finite number, got {val!r}", field=key)
            if want_int and int(val) != val:
                raise InputError(f"search parameter {key} must be {_kind(want_int)}", field=key)
            if abs(val) > (MAX_INT_PARAM if want_int else sys.float_info.max):
                limit = "int64" if want_int else "float64"
                raise InputError(f"search parameter {key} is too large (beyond {limit})", field=key)
            clean[key] = int(val) if want_int else float(val)
        return cls(**clean)


def _kind(want_int: bool) -> str:
    return "an integer" if want_int else "a number"
