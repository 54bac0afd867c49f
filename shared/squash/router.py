"""Router data: what the coordinator keeps warm to plan a query (L0 and L1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .arrays import from_arrow_bytes, to_arrow_bytes
from .attributes import AttributeSpec, AttrTable, validity_arrays
from .errors import IndexFormatError

if TYPE_CHECKING:
    from .manifest import Manifest


@dataclass
class Router:
    centroids: np.ndarray  # (P, d) float32, in the index's rotated space
    global_mean: np.ndarray  # (d,) subtracted before the rotation (zeros: a pure rotation)
    global_rotation: np.ndarray  # (d, d) the index's KLT, shared by every partition
    offsets: np.ndarray  # (P + 1,) rows of partition p are offsets[p]:offsets[p+1]
    ids: np.ndarray  # (n,) int64, in partition order (the id filter's codes; where an id lives)
    attr_codes: dict[str, np.ndarray]  # quantized attributes, in partition order
    specs: list[AttributeSpec]
    attr_valid: dict[str, np.ndarray] = field(default_factory=dict)  # nullable columns
    live: np.ndarray | None = None  # (n,) False for deleted rows (None: none deleted); set on open
    parents: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # of delta partitions
    centroid_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids)

    def table(self) -> AttrTable:
        """The rows' codes and ids as L0 evaluates filters on them (no raw values)."""
        return AttrTable(self.n, self.attr_codes, None, self.ids, self.attr_valid)

    def rotate(self, queries: np.ndarray) -> np.ndarray:
        """Queries (m, d) into the index's space (one float32 product)."""
        q = np.asarray(queries, np.float32)
        if self.global_mean.any():
            q = q - self.global_mean
        return q @ self.global_rotation

    @property
    def partitions(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        arrays = [self.centroids, self.global_mean, self.global_rotation, self.offsets, self.ids]
        return int(sum(a.nbytes for a in arrays) + sum(a.nbytes for a in self.attr_codes.values()))

    def extend(self, data: bytes, name: str) -> None:
        """Append a write's router rows (:func:`delta_router_bytes`): its delta partitions'
        centroids and sizes, their rows' ids, attribute codes and validity."""
        arrays = from_arrow_bytes(data, name)
        missing = sorted({"centroids", "sizes", "ids"} - set(arrays))
        if missing:
            raise IndexFormatError(f"{name}: missing array(s) {', '.join(missing)}")
        sizes, ids = arrays["sizes"].astype(np.int64), arrays["ids"]
        n_old, n_new = self.n, int(sizes.sum())
        if ids.shape != (n_new,) or arrays["centroids"].shape[1:] != self.centroids.shape[1:]:
            raise IndexFormatError(f"{name}: arrays disagree in shape (corrupt router delta)")
        self.centroids = np.concatenate([self.centroids, arrays["centroids"]])
        self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids)
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(sizes)])
        self.ids = np.concatenate([self.ids, ids])
        valid = validity_arrays(arrays, {k[2:] for k in arrays if k.startswith("q.")}, n_new, name)
        for spec in self.specs:
            codes = arrays.get(f"q.{spec.name}")
            if codes is None or codes.shape != (n_new,):
                raise IndexFormatError(f"{name}: codes of {spec.name!r} are missing or misshapen")
            self.attr_codes[spec.name] = np.concatenate([self.attr_codes[spec.name], codes])
            if spec.name in valid or spec.name in self.attr_valid:
                old = self.attr_valid.get(spec.name, np.ones(n_old, dtype=bool))
                self.attr_valid[spec.name] = np.concatenate(
                    [old, valid.get(spec.name, np.ones(n_new, dtype=bool))]
                )

    @classmethod
    def from_bytes(cls, data: bytes, specs: list[AttributeSpec], name: str = "router") -> Router:
        arrays = from_arrow_bytes(data, name)
        missing = sorted({"centroids", "global_mean", "global_rotation", "offsets", "ids"} - set(arrays))
        if missing:
            raise IndexFormatError(f"{name}: missing array(s) {', '.join(missing)}")
        codes = {k[2:]: v for k, v in arrays.items() if k.startswith("q.")}
        n = int(arrays["offsets"][-1]) if arrays["offsets"].size else 0
        return cls(
            attr_valid=validity_arrays(arrays, codes, n, name),
            centroids=arrays["centroids"],
            global_mean=arrays["global_mean"],
            global_rotation=arrays["global_rotation"],
            offsets=arrays["offsets"],
            ids=arrays["ids"],
            attr_codes=codes,
            specs=specs,
        )

    def check(self, manifest: Manifest, name: str = "router") -> None:
        """Raise IndexFormatError unless the router agrees with its manifest (dims, n,
        partitions, sizes, one in-range code column per attribute); its arrays live in the
        index's internal space (``manifest.space_dims``)."""
        d, p = manifest.space_dims, manifest.partitions

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise IndexFormatError(f"{name} does not match the manifest: {what}")

        need(
            self.centroids.shape == (p, d),
            f"centroids are {self.centroids.shape}, expected ({p}, {d}) (dims)",
        )
        need(bool(np.isfinite(self.centroids).all()), "centroids hold NaN or infinite values")
        need(
            self.global_mean.shape == (d,), f"global_mean is {self.global_mean.shape}, expected ({d},) (dims)"
        )
        rot = self.global_rotation.shape
        need(rot == (d, d), f"global_rotation is {rot}, expected ({d}, {d}) (dims)")
        need(bool(np.isfinite(self.global_rotation).all()), "global_rotation holds NaN or infinite values")
        need(
            self.offsets.shape == (p + 1,),
            f"offsets are {self.offsets.shape}, expected ({p + 1},) (partitions)",
        )
        need(
            int(self.offsets[0]) == 0 and int(self.offsets[-1]) == manifest.n,
            f"offsets do not span n={manifest.n}",
        )
        need(
            np.array_equal(np.diff(self.offsets), manifest.partition_sizes),
            "offsets disagree with partition_sizes",
        )
        need(
            set(self.attr_valid) <= {s.name for s in manifest.attributes if s.nullable},
            "validity masks for columns the manifest says have no nulls",
        )
        need(self.ids.shape == (manifest.n,), f"ids are {self.ids.shape}, expected ({manifest.n},) (n)")
        need(
            set(self.attr_codes) == {s.name for s in manifest.attributes},
            f"attribute codes for {sorted(self.attr_codes)}, "
            f"manifest lists {[s.name for s in manifest.attributes]}",
        )
        for spec in manifest.attributes:
            codes = self.attr_codes[spec.name]
            need(codes.shape == (manifest.n,), f"attribute {spec.name!r} has {codes.shape} codes, expected n")
            allowed = (np.uint64,) if spec.kind == "list" else (np.uint8, np.int32)
            need(codes.dtype.type in allowed, f"attribute {spec.name!r} codes are {codes.dtype}")
            need(
                spec.kind == "list" or codes.size == 0 or int(codes.max()) < spec.n_cells,
                f"attribute {spec.name!r} has codes beyond its {spec.n_cells} cells/categories",
            )


def delta_router_bytes(
    centroids: np.ndarray, sizes: np.ndarray, ids: np.ndarray, codes: dict, valid: dict
) -> bytes:
    """A write's router rows: its delta partitions' centroids and sizes, ids, codes, validity."""
    arrays = {
        "centroids": centroids.astype(np.float32),
        "sizes": sizes.astype(np.int64),
        "ids": ids.astype(np.int64),
    }
    arrays.update({f"q.{k}": v for k, v in codes.items()})
    arrays.update(valid)
    return to_arrow_bytes(arrays)
