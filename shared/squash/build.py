"""Index build: vectors + attributes -> manifest, router and one segment per partition.

Steps (see ../shared/SQUASH.md, "OSQ"): global KLT (the index's rotated space, shared by every
partition); balanced k-means on its leading axes; per partition, centred on its centroid:
greedy bit allocation in byte-aligned classes, uniform cells, codes, residual norms and the
sign sketch (the hot tier) and the float32 rows (the cold tier); quantized attributes.
Every input check runs before the first write, data files go under ``builds/<build_id>/``
and the manifest is written last, so an existing index stays readable until the new one
is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import dictionaries
from .arrays import to_arrow_bytes
from .attribute_build import quantize_attributes, read_ids
from .attributes import AttributeColumns
from .build_partitions import LocalBuilder, PartitionBuilder, PartitionJob
from .calibration import (
    DEFAULT_QUERIES,
    Calibration,
    GroundTruth,
    band_counts,
    band_u,
    calibrate_from,
    exact_truth,
    hard_queries,
    partition_radius,
    query_family,
    sample_bounds,
)
from .errors import IndexExistsError, IndexFormatError, IndexNotFoundError, InputError
from .fine import fine_key
from .inputs import check_vectors, normalise_rows
from .manifest import MANIFEST_KEY, FileRef, Manifest, is_squash_manifest
from .metrics import METRICS, DotSpace, augment_queries, augment_rows
from .osq.klt import fit_klt
from .osq.kmeans import (
    FAR_ROUNDS,
    REFINE_ROUNDS,
    TOP,
    balance_candidates,
    balanced_kmeans,
    best_bids,
    centroids_of,
    far_bids,
    nearest,
    place_leftovers,
    raise_small,
    size_bounds,
    under_full,
)
from .progress import NoProgress, Progress
from .ranking import RankingProbe
from .sources import CHUNK_ROWS, ArraySource, VectorSource
from .spill import BUFFER_BYTES, PartitionSpill
from .storage import Storage, open_storage

ROUTING_DIMS = 64  # k-means runs on the leading global KLT axes
KLT_SAMPLE = 100_000
KMEANS_ROWS_PER_PARTITION = 64  # the k-means sample: max(KLT_SAMPLE, this x partitions) rows
KEEP_BUILDS = 2  # the current build and the one before it (for in-flight readers)
DEFAULT_SKETCH_BITS = 32  # one uint32 word per row (the sketch serves the opt-in L2 only)
MAX_SEED = 2**63 - 1
REFINE_MODES = ("auto", "on", "off")
#: "auto" keeps the refinement tier when the code's recall@10 is below this. The planner
#: scores on the code alone while target <= 0.99 x code recall (the default 0.95 from a code
#: recall of 0.96); below 0.98 targets a user may well ask for (0.97) already need a re-rank.
REFINE_BELOW = 0.98
_BUILD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")  # only such folders are ever deleted


@dataclass(frozen=True)
class BuildOptions:
    """Knobs of a build; the defaults suit 10^4–10^7 vectors of 32–1024 dims."""

    partitions: int | None = None  # default: about sqrt(N), at least 1
    bits_per_dim: float = 6.0  # the hot tier's code: 6 bits = 3/4 byte per dimension
    metric: str = "l2"
    seed: int = 0
    sketch_bits: int | None = None  # default: min(32, d); at most d (one sign bit per axis)
    calibration_queries: int = DEFAULT_QUERIES  # how many to calibrate with; 0 = no calibration
    # The refinement tier (squash.fine): "auto" keeps it when the code's measured recall@10 is
    # below REFINE_BELOW (the planner may then re-rank on it instead of reading float32) or
    # was not measured; "on" always; "off" never.
    refine: str = "auto"

    def resolve_partitions(self, n: int) -> int:
        if self.partitions is not None:
            return self.partitions
        return int(max(1, min(n, round(np.sqrt(n)))))

    def resolve_sketch_bits(self, d: int) -> int:
        return min(DEFAULT_SKETCH_BITS, d) if self.sketch_bits is None else self.sketch_bits


@dataclass(frozen=True)
class BuildSummary:
    uri: str
    build_id: str
    n: int
    dims: int
    partitions: int
    bits_per_vector: float
    code_bytes_per_vector: float
    float32_bytes_per_vector: int
    index_bytes: int
    seconds: float
    hot_bytes: int = 0
    cold_bytes: int = 0
    attribute_bytes: int = 0  # of the hot tier: the stored attribute columns (codes, values)
    fine_bytes: int = 0  # the refinement tier (0: not kept, see BuildOptions.refine)

    @property
    def hot_bytes_per_vector(self) -> float:
        return self.hot_bytes / max(self.n, 1)

    def lines(self) -> list[str]:
        return [
            f"index        {self.uri} (build {self.build_id})",
            f"vectors      N={self.n:,}  d={self.dims}  partitions={self.partitions}",
            f"codes        {self.bits_per_vector:.1f} bits/vector = "
            f"{self.code_bytes_per_vector:.1f} bytes/vector "
            f"(float32: {self.float32_bytes_per_vector} bytes, "
            f"{self.float32_bytes_per_vector / max(self.code_bytes_per_vector, 1e-9):.1f}x smaller)",
            f"hot tier     {self.hot_bytes / 2**20:.1f} MiB ({self.hot_bytes_per_vector:.0f} bytes/vector: "
            f"codes, ids, sketch, {self.attribute_bytes / max(self.n, 1):.0f} of attributes), "
            "what a warm worker keeps",
            f"refinement   {self.fine_bytes / 2**20:.1f} MiB"
            + (" (loaded by workers when a query re-ranks on it)" if self.fine_bytes else " (not kept)"),
            f"cold tier    {self.cold_bytes / 2**20:.1f} MiB (float32 rows, read only to re-rank)",
            f"stored       {self.index_bytes / 2**20:.1f} MiB in total "
            f"({self.index_bytes / max(self.n * self.float32_bytes_per_vector, 1):.2f}x the float32 data)",
            f"build time   {self.seconds:.1f} s",
        ]


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def keeps_refinement(mode: str, calibration: Calibration | None) -> bool:
    """Whether a build keeps its refinement files (see BuildOptions.refine)."""
    if mode != "auto":
        return mode == "on"
    code = None if calibration is None else calibration.ranking_recall(10)
    return code is None or code < REFINE_BELOW


def validate_options(opts: BuildOptions, n: int, d: int | None = None) -> None:
    """Every option checked before anything is read or written (``d``: the vectors' dims).
    Messages name the BuildOptions field; the CLI shows its own flag names instead."""
    if not _is_int(opts.seed) or not 0 <= opts.seed <= MAX_SEED:
        raise InputError(f"seed must be an integer from 0 to {MAX_SEED}, got {opts.seed!r}", field="seed")
    if opts.partitions is not None and not _is_int(opts.partitions):
        raise InputError(f"partitions must be an integer, got {opts.partitions!r}", field="partitions")
    if d is not None:
        bits = opts.resolve_sketch_bits(d)
        if not _is_int(bits) or not 1 <= bits <= d:
            raise InputError(
                f"sketch_bits must be from 1 to {d} (the vector dimension: one sign bit per "
                f"rotated axis), got {bits!r}",
                field="sketch_bits",
            )
    if opts.metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {opts.metric!r}", field="metric")
    p = opts.resolve_partitions(n)
    if p < 1:
        raise InputError("partitions must be at least 1", field="partitions")
    if p > n:
        raise InputError(f"partitions ({p}) is larger than the number of vectors ({n})", field="partitions")
    if not 0 < opts.bits_per_dim <= 8:
        raise InputError(f"bits_per_dim must be in (0, 8], got {opts.bits_per_dim}", field="bits_per_dim")
    if opts.refine not in REFINE_MODES:
        raise InputError(
            f"refine must be one of {', '.join(REFINE_MODES)}, got {opts.refine!r}", field="refine"
        )
    if not _is_int(opts.calibration_queries) or opts.calibration_queries < 0:
        raise InputError("the number of calibration queries must be >= 0", field="calibration_queries")


def prepare_calibration_queries(
    queries: np.ndarray, dims: int, metric: str, dot_max_norm: float | None = None
) -> np.ndarray:
    """A user's calibration queries, checked like vectors (dimension, NaN, magnitude) and
    prepared like queries (cosine: normalised; dot: augmented, see squash.metrics), not yet
    rotated."""
    try:
        q = check_vectors(queries, "calibration queries")
        if q.shape[1] != dims:
            raise InputError(f"calibration queries have dimension {q.shape[1]}, the index has {dims}")
        if metric == "cosine":
            return normalise(q)
        return augment_queries(q, dot_max_norm or 0.0) if metric == "dot" else q
    except InputError as exc:
        raise InputError(exc.message, field="calibration_queries") from exc


def calibration_sample(
    x: np.ndarray,
    opts: BuildOptions,
    user: np.ndarray | None,
    rng: np.random.Generator,
    dot: DotSpace | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """(queries, rows each must not find, families, source): at most
    ``opts.calibration_queries`` of the user's queries, else a hard synthetic sample
    (for ``dot``, made from augmented rows, then turned into queries: see DotSpace)."""
    n = opts.calibration_queries
    if user is not None:
        if user.shape[0] > n:
            user = user[np.sort(rng.choice(user.shape[0], n, replace=False))]
        return user, None, None, "queries"
    q, exclude = hard_queries(x, n, rng, normalise=opts.metric == "cosine")
    if dot is not None:
        q = dot.queries_from_rows(q)
    return q, exclude, query_family(n), "synthetic-hard"


def prepare_rows(
    vectors: np.ndarray, metric: str, dot_max_norm: float | None, first_row: int = 0
) -> np.ndarray:
    """Base rows in the metric's search space, before the rotation (``first_row``: the
    global number of the first, for error messages)."""
    if metric == "cosine":
        return normalise(vectors, first_row)
    if metric == "dot":
        return augment_rows(vectors, dot_max_norm)
    return np.ascontiguousarray(vectors, np.float32)


def normalise(x: np.ndarray, first_row: int = 0) -> np.ndarray:
    """Unit-normalise rows (cosine metric); a zero row is an InputError naming it."""
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], 65536):  # chunked: float64 work stays bounded
        block = x[start : start + 65536]
        out[start : start + 65536] = normalise_rows(block, "vectors", first_row=first_row + start)
    return out


def build_index(
    vectors: np.ndarray | VectorSource,
    index_uri: str | Storage,
    attributes: pa.Table | None = None,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
    calibration_queries: np.ndarray | None = None,
    *,
    replace: bool = False,
    workers: int = 1,
    scratch: str | Path | None = None,
    builder: PartitionBuilder | None = None,
) -> BuildSummary:
    """Build an index from ``vectors`` (an (n, d) array, or a :class:`~squash.sources.VectorSource`
    such as :func:`squash.sources.open_source` gives for files larger than memory) and
    optional attributes (one row per vector).

    The input is read a block at a time, in a few passes (see README, "Building large
    indexes"): check every row and draw the sample; fit the rotation and the balanced
    k-means on the sample; assign every row; spill each partition's rows to ``scratch`` (a
    temporary folder by default, removed at the end); quantize and write the partitions
    (``workers`` processes). Peak memory does not grow with the input beyond a few dozen
    bytes per row. ``calibration_queries`` (m, d): real queries to calibrate the planner with
    (recommended); without them the build calibrates on a hard synthetic sample.
    ``replace``: a URI that already holds an index is an IndexExistsError unless this is
    set (then readers keep the old index until the new manifest is written).
    ``builder``: who quantizes the partitions (default: this machine, ``workers`` processes;
    :class:`squash.runtime.build_driver.LambdaBuilder` fans them out over deployed workers).
    """
    started = time.perf_counter()
    opts = options or BuildOptions()
    progress = progress or NoProgress()
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    source = vectors if hasattr(vectors, "blocks") else ArraySource(vectors)
    n, d = source.n, source.d
    validate_options(opts, n, d)
    if not _is_int(workers) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}", field="workers")
    sketch_bits = opts.resolve_sketch_bits(d)
    ids = read_ids(attributes, n)
    attrs = quantize_attributes(attributes, n)
    storage.check_writable()
    previous = _previous_build(storage, replace)
    with scratch_folder(scratch) as tmp:
        rng = np.random.default_rng(opts.seed)
        p = opts.resolve_partitions(n)
        want = min(n, max(KLT_SAMPLE, KMEANS_ROWS_PER_PARTITION * p))
        sample_rows = np.sort(rng.choice(n, want, replace=False)) if want < n else np.arange(n)
        with progress.step("check vectors", _blocks(n)) as advance:
            raw_sample, sample_u, peak = _scan(source, sample_rows, opts.metric, opts.seed, advance)
        dot_max_norm = peak if opts.metric == "dot" else None
        user_queries = None
        if calibration_queries is not None:
            user_queries = prepare_calibration_queries(calibration_queries, d, opts.metric, dot_max_norm)
        _fault("scanned")

        sample = prepare_rows(raw_sample, opts.metric, dot_max_norm)
        del raw_sample
        ds = sample.shape[1]  # the index's space: d, or d + 1 for dot
        with progress.step("global KLT", 1) as advance:
            glob = fit_klt(
                sample[np.sort(rng.choice(want, KLT_SAMPLE, replace=False))] if want > KLT_SAMPLE else sample
            )
            # The index's space from here on: a pure rotation (no shift), so norms, distances and
            # the unit sphere of cosine are kept; partitions centre their codes themselves.
            glob = dataclasses.replace(glob, mean=np.zeros(ds, np.float32))
            sample = rotate(sample, glob.mean, glob.rotation)
            advance(1)
        route = min(ds, ROUTING_DIMS)
        with progress.step("balanced k-means", 1 + REFINE_ROUNDS) as advance:
            sample_assign = balanced_kmeans(sample[:, :route], p, opts.seed, progress=advance)
            seeds = centroids_of(sample[:, :route], sample_assign, p)
        cal_sample = truth = None
        if opts.calibration_queries:
            dot = DotSpace.of(opts.metric, glob.rotation, dot_max_norm or 0.0)
            cal_sample = calibration_sample(sample, opts, rotate_queries(user_queries, glob), rng, dot)
            cal_sample = _global_exclude(cal_sample, sample_rows)
            bounds = None  # data of one block: it bounds itself (no pass over the sample)
            if n > CHUNK_ROWS:
                bounds = sample_bounds(cal_sample[0], sample, sample_u, sample_rows, cal_sample[1])
            truth = GroundTruth(cal_sample[0], opts.seed, cal_sample[1], bounds)
        del sample

        def rotated() -> Iterator[tuple[int, np.ndarray]]:
            for start, block in source.blocks():
                yield (
                    start,
                    rotate(prepare_rows(block, opts.metric, dot_max_norm, start), glob.mean, glob.rotation),
                )

        assign = _assign(rotated, n, seeds, route, truth, progress, workers)
        _fault("assigned")
        spill = PartitionSpill(tmp / "partitions", p, ds)
        with progress.step("spill partitions", _blocks(n)) as advance:
            for start, xb in rotated():
                spill.add(assign[start : start + xb.shape[0]], np.arange(start, start + xb.shape[0]), xb)
                advance(1)
            spill.flush()
        _fault("spilled")

        build_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        prefix = f"builds/{build_id}"
        budget = round(opts.bits_per_dim * ds)
        job = PartitionJob(spill, storage, prefix, ids, attrs, budget, sketch_bits)
        job.write_fine = opts.refine != "off"
        if cal_sample is not None:
            job.probe_queries, job.probe_exclude = cal_sample[0], cal_sample[1]
        with progress.step("quantize partitions", p) as advance:
            results, probe = (builder or LocalBuilder(workers))(job, p, advance)
    _fault("partitions")
    segments = [r.segment for r in results]
    colds = [r.cold for r in results]
    hot_bytes = sum(r.size for r in segments)
    cold_total = sum(r.size for r in colds)
    centroids = np.stack([r.centroid for r in results])
    sizes = np.bincount(assign, minlength=p)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    order = np.argsort(assign, kind="stable")
    router = router_bytes(centroids, glob.mean, glob.rotation, offsets, ids[order], attrs.take(order))
    del order
    router_ref = FileRef.of(f"{prefix}/router.arrow", router)
    storage.write(router_ref.key, router)
    dict_ref = None
    if attrs.dictionaries:
        data = dictionaries.to_bytes(attrs.dictionaries)
        dict_ref = FileRef.of(f"{prefix}/dictionaries.arrow", data)
        storage.write(dict_ref.key, data)
    attribute_bytes = sum(c.nbytes for c in [*attrs.codes.values(), *attrs.stored_raw().values()])

    calibration = None
    if truth is not None and cal_sample is not None and probe is not None:
        with progress.step("calibrate", 1) as advance:
            radius = float(max(np.median([r.rms for r in results]), 1e-12))
            counts = band_counts(opts.seed, assign, p)
            calibration = calibrate_from(
                truth, assign, centroids, counts, radius, cal_sample[3], cal_sample[2]
            )
            nearest = truth.truths(0)  # band 0 = every row
            calibration = dataclasses.replace(
                calibration, ranking=probe.recall(nearest), fine=probe.recall(nearest, "fine")
            )
            advance(1)
    refined = keeps_refinement(opts.refine, calibration)
    fine_total = sum(r.fine_bytes for r in results) if refined else 0
    if not refined:  # partitions wrote one (all but a local refine="off" build): none is kept
        storage.delete_keys([fine_key(r.segment.key) for r in results])
        if calibration is not None:
            calibration = dataclasses.replace(calibration, fine=None)
    total_bytes = hot_bytes + cold_total + fine_total + router_ref.size + (dict_ref.size if dict_ref else 0)
    _fault("router")

    bits_per_vector = float(budget if budget <= 8 * ds else 8 * ds)
    seconds = time.perf_counter() - started
    manifest = Manifest(
        build_id=build_id,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        n=n,
        dims=d,
        metric=opts.metric,
        partitions=p,
        bits_per_dim=opts.bits_per_dim,
        attributes=attrs.specs,
        router=router_ref,
        dictionaries=dict_ref,
        segments=segments,
        cold=colds,
        partition_sizes=sizes.tolist(),
        params={
            "seed": opts.seed,
            "sketch_bits": sketch_bits,
            "routing_dims": int(glob.rotation.shape[1]),
            "sample_rows": int(want),
            "refinement": refined,
            "previous_builds": previous[-(KEEP_BUILDS - 1) :],
        }
        | ({} if dot_max_norm is None else {"dot_max_norm": dot_max_norm}),
        stats={
            "bits_per_vector": bits_per_vector,
            "code_bytes_per_vector": bits_per_vector / 8,
            "index_bytes": total_bytes,
            "hot_bytes": hot_bytes,
            "cold_bytes": cold_total,
            "hot_bytes_per_vector": round(hot_bytes / n, 2),
            "attribute_bytes_per_vector": round(attribute_bytes / n, 2),
            "build_seconds": round(seconds, 3),
        },
        calibration=None if calibration is None else calibration.to_json(),
    )
    storage.write(MANIFEST_KEY, manifest.to_json())  # the commit point
    _drop_old_builds(storage, previous)
    return BuildSummary(
        uri=storage.uri,
        build_id=build_id,
        n=n,
        dims=d,
        partitions=p,
        bits_per_vector=bits_per_vector,
        code_bytes_per_vector=bits_per_vector / 8,
        float32_bytes_per_vector=4 * d,
        index_bytes=total_bytes,
        seconds=seconds,
        hot_bytes=hot_bytes,
        cold_bytes=cold_total,
        attribute_bytes=attribute_bytes,
        fine_bytes=fine_total,
    )


#: Bytes per row the build holds however it reads its input: the rows' nearest centroids
#: (TOP x (int32 + float32)) and the balancing's float32 cost matrix beside them, the
#: assignment, ids, the router's sort order and its copy of ids.
BYTES_PER_ROW = TOP * 8 * 2 + 4 + 8 + 8 + 8
BASE_BYTES = 250 * 2**20  # the interpreter with numpy, pyarrow and squash imported
BLOCK_BYTES = 64 * 2**20  # each bounded work block (nearest, ground truth, rotation)


def memory_estimate(
    n: int, d: int, partitions: int | None = None, workers: int = 1, attribute_bytes_per_row: float = 0.0
) -> dict[str, int]:
    """Predicted peak resident bytes of a build (the formula in README, "Building large
    indexes"): a fixed base, the sample, a few bounded blocks, the spill buffer, a few dozen
    bytes per row (plus the attributes' codes), and per worker one partition. The input's
    size enters only through ``n``, never through ``n x d``."""
    p = BuildOptions(partitions=partitions).resolve_partitions(n)
    ds = d + 1
    sample = min(n, max(KLT_SAMPLE, KMEANS_ROWS_PER_PARTITION * p))
    part_rows = -(-n // p) * 1.1
    out = {
        "base": BASE_BYTES,
        "sample": int(sample * ds * 4 * 3),  # as read, prepared, rotated
        "blocks": int(4 * BLOCK_BYTES + CHUNK_ROWS * ds * (4 + 8 + 4)),
        "spill_buffer": int(3 * BUFFER_BYTES),  # the buffer, its concatenation and sorted copy
        "per_row": int(n * (BYTES_PER_ROW + attribute_bytes_per_row)),
        "partitions": int(max(workers, 1) * part_rows * ds * 4 * 8),  # rows, codes, files
    }
    out["total"] = sum(out.values())
    return out


def _blocks(n: int) -> int:
    return -(-n // CHUNK_ROWS)


def _scan(
    source: VectorSource, sample_rows: np.ndarray, metric: str, seed: int, advance: Callable[[int], None]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Pass 1: every block checked (the source checks values; cosine: no zero rows), the
    sample's rows (as given, float32) and band draws, and the largest row norm (dot's M)."""
    sample = np.empty((sample_rows.size, source.d), np.float32)
    sample_u = np.empty(sample_rows.size)
    best = 0.0
    for start, block in source.blocks():
        end = start + block.shape[0]
        a, b = np.searchsorted(sample_rows, [start, end])
        sample[a:b] = block[sample_rows[a:b] - start]
        sample_u[a:b] = band_u(seed, start, block.shape[0])[sample_rows[a:b] - start]
        sq = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        best = max(best, float(sq.max(initial=0.0)))
        if metric == "cosine" and not sq.all():
            raise InputError(
                f"vectors: row {start + int(np.flatnonzero(sq == 0)[0])} is all zeros; the cosine metric "
                "needs non-zero vectors (a zero vector has no direction)",
                field="vectors",
            )
        advance(1)
    return sample, sample_u, float(np.sqrt(best))


def _assign(
    rotated: Callable[[], Iterator[tuple[int, np.ndarray]]],
    n: int,
    seeds: np.ndarray,
    route: int,
    truth: GroundTruth | None,
    progress: Progress,
    workers: int = 1,
) -> np.ndarray:
    """Every row's partition, balanced (±10 %): pass 2 keeps each row's nearest ``TOP``
    centroids and feeds the ground truth; the auction balances from those alone; extra
    passes (rare) place rows whose candidates were all full and top up partitions few rows
    have as a candidate. Memory: ``TOP`` × 8 bytes per row."""
    p = seeds.shape[0]
    t = min(TOP, p)
    cand = np.empty((n, t), np.int32)
    dist = np.empty((n, t), np.float32)
    with progress.step("assign rows", _blocks(n)) as advance:
        for start, c, dd, part in _block_candidates(rotated, seeds, route, truth, workers):
            cand[start : start + c.shape[0]], dist[start : start + c.shape[0]] = c, dd
            if truth is not None:
                truth.merge(part)
            advance(1)
    assign = balance_candidates(cand, dist, p)
    del cand, dist
    lo, hi = size_bounds(n, p)
    if (assign < 0).any():
        sizes = np.bincount(assign[assign >= 0], minlength=p)
        for start, xb in rotated():  # rows whose candidates were all full, in row order
            mine = assign[start : start + xb.shape[0]]
            free = np.flatnonzero(mine < 0)
            mine[free] = place_leftovers(xb[free, :route], seeds, sizes, hi)
    for _ in range(FAR_ROUNDS):
        under = under_full(assign, p, lo)
        if under.size == 0:
            break
        need = lo - np.bincount(assign, minlength=p)[under]
        bids = [far_bids(xb[:, :route], seeds, assign, under, lo, start) for start, xb in rotated()]
        assign = raise_small(best_bids(bids, under, need), assign, lo, p)
    return assign


_PASS: tuple | None = None  # what forked assignment workers share: (seeds, route, truth)


def _one_block(start: int, xb: np.ndarray) -> tuple:
    assert _PASS is not None
    seeds, route, truth = _PASS
    cand, dist = nearest(xb[:, :route], seeds, min(TOP, seeds.shape[0]))
    return start, cand, dist, None if truth is None else truth.block(start, xb)


def _block_candidates(
    rotated: Callable[[], Iterator[tuple[int, np.ndarray]]],
    seeds: np.ndarray,
    route: int,
    truth: GroundTruth | None,
    workers: int,
) -> Iterator[tuple]:
    """Each block's nearest centroids and ground-truth entries, in block order; with
    ``workers > 1`` computed by forked processes (blocks are independent, so the answer is
    the same), at most two blocks per worker in flight."""
    global _PASS
    _PASS = (seeds, route, truth)
    try:
        if workers <= 1:
            for start, xb in rotated():
                yield _one_block(start, xb)
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            pending: deque = deque()
            for start, xb in rotated():
                pending.append(pool.submit(_one_block, start, xb))
                while len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        _PASS = None


def _global_exclude(cal_sample: tuple, sample_rows: np.ndarray) -> tuple:
    """Calibration queries made from sample rows exclude those rows by their global number."""
    q, exclude, families, source = cal_sample
    if exclude is not None:
        exclude = np.where(exclude >= 0, sample_rows[np.maximum(exclude, 0)], -1)
    return q, exclude, families, source


def _fault(point: str) -> None:
    """Crash-test hook: ``SQUASH_BUILD_FAULT=<point>`` kills the build there (SIGKILL), as a
    lost machine would. Points: scanned, assigned, spilled, partitions, router."""
    if os.environ.get("SQUASH_BUILD_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def scratch_folder(parent: str | Path | None) -> Iterator[Path]:
    """A private folder for the spilled partitions, removed at the end (also on errors).
    A build killed outright leaves ``squash-build-<pid>-*`` behind; the next build in the
    same parent removes those whose process is gone."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    try:
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale(base)
        folder = Path(tempfile.mkdtemp(prefix=f"squash-build-{os.getpid()}-", dir=base))
    except OSError as exc:
        raise InputError(f"cannot use scratch folder {str(base)!r}: {exc.strerror}", field="scratch") from exc
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale(base: Path) -> None:
    for old in base.glob("squash-build-*-*"):
        pid = old.name.split("-")[2]
        if not pid.isdigit() or not old.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def rotate(x: np.ndarray, mean: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rows of ``x`` in the index's space, ``(x - mean) @ rotation``, in float64 then stored
    float32 (chunked: the float64 work stays bounded)."""
    out = np.empty((x.shape[0], rotation.shape[1]), dtype=np.float32)
    r64 = rotation.astype(np.float64)
    for start in range(0, x.shape[0], 65536):
        out[start : start + 65536] = (x[start : start + 65536].astype(np.float64) - mean) @ r64
    return out


def rotate_queries(queries: np.ndarray | None, glob) -> np.ndarray | None:
    return None if queries is None else rotate(queries, glob.mean, glob.rotation)


def calibrate_index(
    index_uri: str | Storage,
    queries: np.ndarray | None = None,
    n_queries: int = DEFAULT_QUERIES,
    progress: Progress | None = None,
) -> Calibration:
    """Recalibrate an existing index with ``queries`` (or a hard synthetic sample) in place.

    Reads every segment once (the rows and their partitions), measures the recall curves
    and commits a manifest that differs from the current one only in its calibration. The
    write is refused if the index was rebuilt meanwhile.
    """
    from .index import Index  # the index reader sits above the build
    from .refine import ColdTier

    progress = progress or NoProgress()
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    if n_queries < 1:
        raise InputError("the number of calibration queries must be at least 1", field="calibration_queries")
    version = storage.version(MANIFEST_KEY)
    index = Index.open(storage)
    manifest = index.manifest
    user = None
    if queries is not None:
        user = prepare_calibration_queries(queries, manifest.dims, manifest.metric, manifest.dot_max_norm)
        user = index.router.rotate(user)
    storage.check_writable()
    cold = ColdTier(storage)
    with progress.step("read partitions", manifest.partitions) as advance:
        parts, segs = [], []
        for p in range(manifest.partitions):
            seg = index.segment(p)[0]
            parts.append(cold.rows(seg, np.arange(seg.size)))
            segs.append(seg)
            advance(1)
    x = np.concatenate(parts)
    assign = np.repeat(np.arange(manifest.partitions), [a.shape[0] for a in parts])
    opts = BuildOptions(
        metric=manifest.metric, seed=int(manifest.params.get("seed", 0)), calibration_queries=n_queries
    )
    rng = np.random.default_rng(opts.seed + 1)
    with progress.step("calibrate", 1) as advance:
        dot = DotSpace.of(manifest.metric, index.router.global_rotation, manifest.dot_max_norm)
        cal_q, exclude, families, source = calibration_sample(x, opts, user, rng, dot)
        truth = exact_truth(x, cal_q, opts.seed, exclude)
        radius = partition_radius(x, assign, index.router.centroids)
        counts = band_counts(opts.seed, assign, manifest.partitions)
        cal = calibrate_from(truth, assign, index.router.centroids, counts, radius, source, families)
        del x, parts
        probe = RankingProbe(cal_q, exclude)
        offsets = index.router.offsets
        for p, seg in enumerate(segs):
            fine = cold.fine(seg) if manifest.refinement else None
            probe.add_segment(seg, np.arange(offsets[p], offsets[p + 1]), fine)
        nearest = truth.truths(0)
        cal = dataclasses.replace(cal, ranking=probe.recall(nearest), fine=probe.recall(nearest, "fine"))
        advance(1)
    if storage.version(MANIFEST_KEY) != version:
        raise InputError(
            "the index changed while it was being calibrated; run `squash calibrate` again", field="index_uri"
        )
    storage.write(MANIFEST_KEY, dataclasses.replace(manifest, calibration=cal.to_json()).to_json())
    return cal


def router_bytes(
    centroids: np.ndarray,
    mean: np.ndarray,
    rotation: np.ndarray,
    offsets: np.ndarray,
    ids: np.ndarray,
    attrs: AttributeColumns,
) -> bytes:
    """The router file: centroids, the index's rotation, partition offsets, every row's id
    and attribute codes (and validity), in partition order."""
    arrays = {
        "centroids": centroids.astype(np.float32),
        "global_mean": mean,
        "global_rotation": rotation,
        "offsets": offsets,
        "ids": ids.astype(np.int64),
    }
    arrays.update({f"q.{k}": v for k, v in attrs.codes.items()})
    arrays.update(attrs.stored_valid())
    return to_arrow_bytes(arrays)


def _previous_build(storage: Storage, replace: bool) -> list[str]:
    """Build ids the stored manifest history names (newest last); empty for a new index.

    A ``manifest.json`` that is not a squash manifest belongs to someone else: the build
    refuses (before writing anything) rather than replace it. A squash index is replaced
    only when ``replace`` is set; one whose manifest is corrupt too — rebuilding repairs it."""
    try:
        raw = storage.read(MANIFEST_KEY)
    except IndexNotFoundError:
        return []
    if not is_squash_manifest(raw):
        raise InputError(
            f"{storage.uri}/{MANIFEST_KEY} exists and is not a squash index manifest; refusing to "
            "overwrite it — build into an empty folder/prefix, or remove that file first",
            field="index_uri",
        )
    if not replace:
        raise IndexExistsError(storage.uri)
    try:
        old = Manifest.from_json(raw)
        history = [*old.params.get("previous_builds", []), old.build_id]
    except IndexFormatError:  # corrupt, or an older format: its history still names its builds
        doc = json.loads(raw)
        params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
        previous = params.get("previous_builds")
        history = [*(previous if isinstance(previous, list) else []), doc.get("build_id")]
    return [b for b in history if isinstance(b, str) and _BUILD_ID.match(b)]  # never "../.."


def _drop_old_builds(storage: Storage, previous: list[str]) -> None:
    """Keep the new build and the one before it; older builds are deleted (best effort)."""
    for build_id in previous[: max(len(previous) - (KEEP_BUILDS - 1), 0)]:
        with contextlib.suppress(Exception):  # leftover files never break the index
            storage.delete_prefix(f"builds/{build_id}")
