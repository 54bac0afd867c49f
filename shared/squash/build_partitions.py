"""The build's per-partition stage: spilled rows -> one stored segment per partition.

Each partition is independent: its rows are read from the spill, centred on their mean
(the router's centroid), quantized (:func:`squash.segment.build_segment`) and written.
With ``workers > 1`` partitions are built by that many forked processes, each given runs
of consecutive partitions; results (refs, centroids, the ranking probe's top-k lists) come
back to the parent, which alone writes the router and the manifest. Every partition's bytes
are the same however many workers build them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .arrays import from_arrow_bytes, to_arrow_bytes
from .attributes import AttributeColumns, StoredAttributes
from .errors import IndexFormatError
from .manifest import FileRef
from .ranking import RankingProbe
from .segment import build_segment, write_segment
from .spill import PartitionSpill
from .storage import Storage, open_storage


@dataclass
class PartitionJob:
    """What every partition of one build shares."""

    spill: PartitionSpill
    storage: Storage
    prefix: str  # builds/<build_id>
    ids: np.ndarray  # (N,) every row's id, by global row number
    attrs: AttributeColumns  # every row's attributes, by global row number
    budget: int  # hot-tier code bits per vector
    sketch_bits: int
    probe_queries: np.ndarray | None = None  # calibration queries (rotated), for RankingProbe
    probe_exclude: np.ndarray | None = None
    write_fine: bool = True  # False (refine="off"): no refinement files, nothing probed on them


@dataclass
class PartitionResult:
    part: int
    segment: FileRef
    cold: FileRef
    centroid: np.ndarray  # (d,) float32: the mean of the partition's rows
    size: int
    rms: float  # RMS distance of its rows to the centroid (the calibration's radius)
    fine_bytes: int = 0  # size of its refinement file (named by the segment, not the manifest)


class PartitionBuilder(Protocol):
    """Builds every partition of a job (in this process, forked processes, or functions)."""

    def __call__(
        self, job: PartitionJob, partitions: int, advance: Callable[[int], None]
    ) -> tuple[list[PartitionResult], RankingProbe | None]: ...


def build_partition(job: PartitionJob, part: int, probe: RankingProbe | None) -> PartitionResult:
    rows, x = job.spill.read(part)
    return quantize_partition(
        job.storage,
        job.prefix,
        part,
        rows,
        x,
        job.ids[rows],
        job.attrs.take(rows),
        job.budget,
        job.sketch_bits,
        probe,
        job.write_fine,
    )


def quantize_partition(
    storage: Storage,
    prefix: str,
    part: int,
    rows: np.ndarray,
    x: np.ndarray,
    ids: np.ndarray,
    attrs: AttributeColumns | StoredAttributes,
    budget: int,
    sketch_bits: int,
    probe: RankingProbe | None,
    write_fine: bool = True,
) -> PartitionResult:
    """One partition from its rows (global numbers ``rows``, rotated ``x``), written under
    ``prefix``: the same bytes wherever it runs (``write_fine=False``: all but the
    refinement file, which the ranking probe then does not score either)."""
    centroid = (x.astype(np.float64).sum(axis=0) / max(x.shape[0], 1)).astype(np.float32)
    hot, cold, fine = build_segment(x, centroid, ids, attrs, budget, sketch_bits)
    kept = fine if write_fine else None
    ref, cold_ref = write_segment(storage, partition_key(prefix, part), hot, cold, kept)
    if probe is not None:
        probe.add(hot, kept, ref.key, rows)
    diff = x - centroid
    rms = float(np.sqrt(np.einsum("ij,ij->", diff, diff, dtype=np.float64) / max(x.shape[0], 1)))
    return PartitionResult(part, ref, cold_ref, centroid, int(x.shape[0]), rms, len(kept or b""))


def partition_key(prefix: str, part: int) -> str:
    return f"{prefix}/partitions/{part:05d}.arrow"


def input_key(prefix: str, part: int) -> str:
    """Where a fanned-out build puts a partition's input for the function that builds it."""
    return f"{prefix}/inputs/{part:05d}.arrow"


def partition_input(job: PartitionJob, part: int) -> bytes:
    """A partition's whole input as one Arrow file: global row numbers, rotated rows, ids and
    the attribute arrays its segment will store (see :func:`read_partition_input`)."""
    rows, x = job.spill.read(part)
    arrays = {"in.rows": rows, "in.x": x, "in.ids": job.ids[rows]}
    return to_arrow_bytes(arrays | job.attrs.take(rows).segment_arrays())


def read_partition_input(
    data: bytes, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, StoredAttributes]:
    """(rows, x, ids, attributes) of :func:`partition_input`'s file."""
    arrays = from_arrow_bytes(data, name)
    try:
        rows, x, ids = arrays.pop("in.rows"), arrays.pop("in.x"), arrays.pop("in.ids")
    except KeyError as exc:
        raise IndexFormatError(f"{name}: not a partition input file (no {exc})") from exc
    if x.ndim != 2 or rows.shape != (x.shape[0],) or ids.shape != rows.shape:
        raise IndexFormatError(f"{name}: partition input arrays disagree in length (corrupt file)")
    return rows, np.ascontiguousarray(x, np.float32), ids, StoredAttributes(arrays)


def probe_of(job: PartitionJob) -> RankingProbe | None:
    return None if job.probe_queries is None else RankingProbe(job.probe_queries, job.probe_exclude)


_JOB: PartitionJob | None = None  # the forked workers' copy of the job


def _run(parts: range) -> tuple[list[PartitionResult], dict | None]:
    assert _JOB is not None
    probe = probe_of(_JOB)
    results = [build_partition(_JOB, part, probe) for part in parts]
    return results, None if probe is None else probe.state()


def _child_storage() -> None:
    """A forked worker opens its own storage (a boto3 client is not fork-safe)."""
    global _JOB
    assert _JOB is not None
    _JOB.storage = open_storage(_JOB.storage.uri)


@dataclass(frozen=True)
class LocalBuilder:
    """Partitions built on this machine: in this process, or ``workers`` forked processes."""

    workers: int = 1

    def __call__(
        self, job: PartitionJob, partitions: int, advance: Callable[[int], None]
    ) -> tuple[list[PartitionResult], RankingProbe | None]:
        return build_all(job, partitions, self.workers, advance)


def build_all(
    job: PartitionJob, partitions: int, workers: int, advance: Callable[[int], None]
) -> tuple[list[PartitionResult], RankingProbe | None]:
    """Every partition's segment, in partition order, and the merged ranking probe."""
    probe = probe_of(job)
    if workers <= 1 or partitions <= 1:
        results = []
        for part in range(partitions):  # one partition at a time: peak memory is one segment
            results.append(build_partition(job, part, probe))
            advance(1)
        return results, probe
    global _JOB
    _JOB = job
    step = max(1, min(64, partitions // (workers * 8)))
    runs = [range(a, min(a + step, partitions)) for a in range(0, partitions, step)]
    results: list[PartitionResult] = []
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_child_storage) as pool:
            for run, (part_results, state) in zip(runs, pool.map(_run, runs), strict=True):
                results.extend(part_results)
                if probe is not None and state is not None:
                    probe.merge(state)
                advance(len(run))
    finally:
        _JOB = None
    return results, probe
