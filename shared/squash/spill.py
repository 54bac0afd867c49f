"""Rows of each partition spilled to a scratch folder while the build assigns them.

The assignment pass sees rows in input order; the per-partition stage wants one
partition's rows at a time. Rows are buffered (up to ``BUFFER_BYTES``), then appended to
one file per partition, each record its global row number and its rotated vector; a
partition's rows therefore come back in row order, the order the in-memory build uses.
Files are read with plain reads, so they never count towards the build's resident memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

BUFFER_BYTES = 64 * 2**20


class PartitionSpill:
    """``add`` rows as they are assigned, ``flush`` once at the end, then ``read`` by partition."""

    def __init__(self, folder: Path, partitions: int, dims: int, buffer_bytes: int = BUFFER_BYTES) -> None:
        self.folder, self.partitions, self.buffer_bytes = folder, partitions, buffer_bytes
        self.record = np.dtype([("row", "<i8"), ("x", "<f4", (dims,))])
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._held = 0

    def path(self, part: int) -> Path:
        return self.folder / f"{part:06d}.rows"

    def add(self, parts: np.ndarray, rows: np.ndarray, x: np.ndarray) -> None:
        rec = np.empty(rows.shape[0], self.record)
        rec["row"], rec["x"] = rows, x
        self._pending.append((np.asarray(parts, np.int64), rec))
        self._held += rec.nbytes
        if self._held >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Append what is buffered to the partitions' files (stable: row order is kept)."""
        if not self._pending:
            return
        parts = np.concatenate([p for p, _ in self._pending])
        rec = np.concatenate([r for _, r in self._pending])
        self._pending, self._held = [], 0
        order = np.argsort(parts, kind="stable")
        parts, rec = parts[order], rec[order]
        present, starts = np.unique(parts, return_index=True)
        ends = np.append(starts[1:], parts.size)
        try:
            for part, a, b in zip(present.tolist(), starts.tolist(), ends.tolist(), strict=True):
                with self.path(part).open("ab") as fh:
                    rec[a:b].tofile(fh)
        except OSError as exc:  # a full disk is the user's to fix, not a traceback
            raise InputError(
                f"cannot write the build's spill to {self.folder}: {exc.strerror}; it needs about the "
                "float32 size of the input: give the build a scratch folder with room",
                field="scratch",
            ) from exc

    def read(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """(global row numbers (m,), rotated rows (m, d) float32) of one partition."""
        path = self.path(part)
        rec = np.fromfile(path, self.record) if path.exists() else np.empty(0, self.record)
        return rec["row"].copy(), np.ascontiguousarray(rec["x"])
