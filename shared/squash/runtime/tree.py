"""The worker tree: a complete b-ary tree of depth l, laid out deterministically.

Positions are numbered breadth-first (heap order): the root is 0 and the children of p are
``b*p + 1 .. b*p + b``. Each position maps to a fixed worker function name, and each
partition to a fixed position (``partition % size``), so the warm containers of a worker
function keep holding the same partitions from one query to the next (affinity).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError

MAX_NODES = 1024


@dataclass(frozen=True)
class TreeLayout:
    branching: int  # b >= 1
    depth: int  # l >= 0: levels below the root

    def __post_init__(self) -> None:
        if self.branching < 1 or self.depth < 0:
            raise InputError(
                f"tree needs branching >= 1 and depth >= 0, got b={self.branching}, l={self.depth}"
            )
        if self.size > MAX_NODES:
            raise InputError(
                f"tree b={self.branching}, l={self.depth} has {self.size} nodes (max {MAX_NODES})"
            )

    @property
    def size(self) -> int:
        """Number of nodes: 1 + b + b^2 + ... + b^l (counting stops past MAX_NODES, so a
        huge b or l from a foreign event costs nothing)."""
        total, level = 0, 1
        for _ in range(self.depth + 1):
            total += level
            if total > MAX_NODES:
                return total
            level *= self.branching
        return total

    def children(self, position: int) -> list[int]:
        first = self.branching * position + 1
        return [c for c in range(first, first + self.branching) if c < self.size]

    def subtree(self, position: int) -> list[int]:
        """``position`` and all its descendants, breadth-first."""
        out, frontier = [], [position]
        while frontier:
            out.extend(frontier)
            frontier = [c for p in frontier for c in self.children(p)]
        return out

    def owner(self, partition: int) -> int:
        """The tree position that always searches ``partition``."""
        return partition % self.size

    def assign(self, partitions: Iterable[int]) -> dict[int, list[int]]:
        """Partitions per position (every position present, possibly with none)."""
        out: dict[int, list[int]] = {p: [] for p in range(self.size)}
        for part in partitions:
            out[self.owner(int(part))].append(int(part))
        return out


def function_name(prefix: str, position: int) -> str:
    """The worker function serving a tree position, e.g. ``squash-worker-3``."""
    return f"{prefix}-worker-{position}"
