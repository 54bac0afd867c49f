"""Router data: what the coordinator keeps warm to plan a query (L0 and L1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arrays import from_arrow_bytes
from .attributes import AttributeSpec


@dataclass
class Router:
    centroids: np.ndarray  # (P, d) float32, in the original (or normalised) space
    global_mean: np.ndarray
    global_rotation: np.ndarray
    offsets: np.ndarray  # (P + 1,) rows of partition p are offsets[p]:offsets[p+1]
    attr_codes: dict[str, np.ndarray]  # quantized attributes, in partition order
    specs: list[AttributeSpec]
    centroid_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids)

    @property
    def partitions(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        arrays = [self.centroids, self.global_mean, self.global_rotation, self.offsets]
        return int(sum(a.nbytes for a in arrays) + sum(a.nbytes for a in self.attr_codes.values()))

    @classmethod
    def from_bytes(cls, data: bytes, specs: list[AttributeSpec], name: str = "router") -> Router:
        arrays = from_arrow_bytes(data, name)
        return cls(
            centroids=arrays["centroids"],
            global_mean=arrays["global_mean"],
            global_rotation=arrays["global_rotation"],
            offsets=arrays["offsets"],
            attr_codes={k[2:]: v for k, v in arrays.items() if k.startswith("q.")},
            specs=specs,
        )
