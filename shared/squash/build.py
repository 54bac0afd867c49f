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
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from . import dictionaries
from .arrays import to_arrow_bytes
from .attribute_build import quantize_attributes, read_ids
from .attributes import AttributeColumns
from .calibration import DEFAULT_QUERIES, Calibration, calibrate, hard_queries, query_family
from .errors import IndexExistsError, IndexFormatError, IndexNotFoundError, InputError
from .inputs import check_vectors, normalise_rows
from .manifest import MANIFEST_KEY, FileRef, Manifest, is_squash_manifest
from .metrics import METRICS, DotSpace, augment_queries, augment_rows, max_norm
from .osq.klt import fit_klt
from .osq.kmeans import REFINE_ROUNDS, balanced_kmeans, centroids_of
from .progress import NoProgress, Progress
from .ranking import RankingProbe
from .segment import build_segment, write_segment
from .storage import Storage, open_storage

ROUTING_DIMS = 64  # k-means runs on the leading global KLT axes
KLT_SAMPLE = 100_000
KEEP_BUILDS = 2  # the current build and the one before it (for in-flight readers)
DEFAULT_SKETCH_BITS = 32  # one uint32 word per row (the sketch serves the opt-in L2 only)
MAX_SEED = 2**63 - 1
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
            f"cold tier    {self.cold_bytes / 2**20:.1f} MiB (float32 rows, read only to re-rank)",
            f"stored       {self.index_bytes / 2**20:.1f} MiB in total "
            f"({self.index_bytes / max(self.n * self.float32_bytes_per_vector, 1):.2f}x the float32 data)",
            f"build time   {self.seconds:.1f} s",
        ]


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


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


def prepare_rows(vectors: np.ndarray, metric: str, dot_max_norm: float | None) -> np.ndarray:
    """Base rows in the metric's search space, before the rotation."""
    if metric == "cosine":
        return normalise(vectors)
    if metric == "dot":
        return augment_rows(vectors, dot_max_norm)
    return np.ascontiguousarray(vectors, np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    """Unit-normalise rows (cosine metric); a zero row is an InputError naming it."""
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], 65536):  # chunked: float64 work stays bounded
        out[start : start + 65536] = normalise_rows(x[start : start + 65536], "vectors", first_row=start)
    return out


def build_index(
    vectors: np.ndarray,
    index_uri: str | Storage,
    attributes: pa.Table | None = None,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
    calibration_queries: np.ndarray | None = None,
    *,
    replace: bool = False,
) -> BuildSummary:
    """Build an index from validated float32 ``vectors`` (n, d) and optional attributes.

    ``calibration_queries`` (m, d): a sample of real queries to calibrate the planner with
    (recommended); without them the build calibrates on a hard synthetic sample.
    ``replace``: a URI that already holds an index is an IndexExistsError unless this is
    set (then readers keep the old index until the new manifest is written).
    """
    started = time.perf_counter()
    opts = options or BuildOptions()
    progress = progress or NoProgress()
    storage = open_storage(index_uri) if isinstance(index_uri, str) else index_uri
    vectors = check_vectors(vectors)  # library callers get the CLI's checks too
    n, d = vectors.shape
    validate_options(opts, n, d)
    sketch_bits = opts.resolve_sketch_bits(d)
    dot_max_norm = max_norm(vectors) if opts.metric == "dot" else None
    user_queries = None
    if calibration_queries is not None:
        user_queries = prepare_calibration_queries(calibration_queries, d, opts.metric, dot_max_norm)
    ids = read_ids(attributes, n)
    attrs = quantize_attributes(attributes, n)
    storage.check_writable()
    previous = _previous_build(storage, replace)

    x = prepare_rows(vectors, opts.metric, dot_max_norm)
    ds = x.shape[1]  # the index's space: d, or d + 1 for dot
    rng = np.random.default_rng(opts.seed)
    p = opts.resolve_partitions(n)
    with progress.step("global KLT", 1) as advance:
        sample = x[np.sort(rng.choice(n, KLT_SAMPLE, replace=False))] if n > KLT_SAMPLE else x
        glob = fit_klt(sample)
        # The index's space from here on: a pure rotation (no shift), so norms, distances and
        # the unit sphere of cosine are kept; partitions centre their codes themselves.
        glob = dataclasses.replace(glob, mean=np.zeros(ds, np.float32))
        x = rotate(x, glob.mean, glob.rotation)
        advance(1)
    with progress.step("balanced k-means", 1 + REFINE_ROUNDS) as advance:
        assign = balanced_kmeans(x[:, : min(ds, ROUTING_DIMS)], p, opts.seed, progress=advance)
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=p)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    centroids = centroids_of(x, assign, p)
    cal_sample = None
    if opts.calibration_queries:
        dot = DotSpace.of(opts.metric, glob.rotation, dot_max_norm or 0.0)
        cal_sample = calibration_sample(x, opts, rotate_queries(user_queries, glob), rng, dot)

    build_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    prefix = f"builds/{build_id}"
    budget = round(opts.bits_per_dim * ds)
    segments: list[FileRef] = []
    colds: list[FileRef] = []
    hot_bytes = cold_total = 0
    probe = None if cal_sample is None else RankingProbe(cal_sample[0], cal_sample[1])
    with progress.step("quantize partitions", p) as advance:
        for part in range(p):  # one partition at a time keeps peak memory at one segment
            rows = order[offsets[part] : offsets[part + 1]]
            hot, cold = build_segment(
                x[rows], centroids[part], ids[rows], attrs.take(rows), budget, sketch_bits
            )
            ref, cold_ref = write_segment(storage, f"{prefix}/partitions/{part:05d}.arrow", hot, cold)
            if probe is not None:
                probe.add(hot, ref.key, x[rows], rows)
            segments.append(ref)
            colds.append(cold_ref)
            hot_bytes += ref.size
            cold_total += cold_ref.size
            advance(1)
    router = router_bytes(centroids, glob.mean, glob.rotation, offsets, ids[order], attrs.take(order))
    router_ref = FileRef.of(f"{prefix}/router.arrow", router)
    storage.write(router_ref.key, router)
    dict_ref = None
    if attrs.dictionaries:
        data = dictionaries.to_bytes(attrs.dictionaries)
        dict_ref = FileRef.of(f"{prefix}/dictionaries.arrow", data)
        storage.write(dict_ref.key, data)
    total_bytes = hot_bytes + cold_total + router_ref.size + (dict_ref.size if dict_ref else 0)
    attribute_bytes = sum(c.nbytes for c in [*attrs.codes.values(), *attrs.stored_raw().values()])

    calibration = None
    if cal_sample is not None:
        with progress.step("calibrate", 1) as advance:
            cal_q, exclude, families, source = cal_sample
            calibration = calibrate(x, assign, centroids, cal_q, source, opts.seed, exclude, families)
            calibration = dataclasses.replace(calibration, ranking=probe.recall())
            advance(1)

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
    )


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
        cal = calibrate(x, assign, index.router.centroids, cal_q, source, opts.seed, exclude, families)
        probe = RankingProbe(cal_q, exclude)
        offsets = index.router.offsets
        for p, seg in enumerate(segs):
            probe.add_segment(seg, parts[p], np.arange(offsets[p], offsets[p + 1]))
        cal = dataclasses.replace(cal, ranking=probe.recall())
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
