"""The ``squash`` command line: build an index, search it, describe it.

Errors a user can cause print one line ``squash: error: ...`` and exit with status 2;
nothing is written when a command fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .build import BuildOptions, build_index, calibrate_index
from .calibration import DEFAULT_QUERIES
from .compact import compact
from .deletes import delete
from .errors import IndexExistsError, InputError, SquashError
from .garbage import collect
from .index import open_index
from .inputs import read_table, read_vectors
from .metrics import METRICS
from .params import DEFAULT_TARGET_RECALL, LEVELS, PLANS, RERANKS, SearchParams
from .progress import NoProgress, TqdmProgress
from .storage import atomic_write
from .upserts import upsert


def _vectors_and_attributes(args: argparse.Namespace):
    """--vectors (+ their Parquet attribute columns) and --attributes, as build reads them."""
    vin = read_vectors(args.vectors, args.vector_column)
    attrs = vin.attributes
    if attrs is not None and attrs.num_columns == 0:
        attrs = None
    if args.attributes:
        if attrs is not None:
            raise InputError(
                "the Parquet vectors file already has attribute columns "
                f"({', '.join(attrs.column_names)}); do not also pass --attributes",
                field="attributes",
            )
        attrs = read_table(args.attributes, "attributes")
    return vin, attrs


def _upsert(args: argparse.Namespace) -> int:
    vin, attrs = _vectors_and_attributes(args)
    if args.ids is not None:
        ids = _read_ids(argparse.Namespace(ids=None, ids_file=args.ids))
    elif attrs is not None and "id" in attrs.column_names:
        ids = attrs.column("id").to_numpy(zero_copy_only=False)
        attrs = attrs.drop_columns(["id"])
    else:
        raise InputError("give the ids: --ids PATH, or an integer 'id' column in the attributes", field="ids")
    result = upsert(args.index_uri, ids, vin.vectors, attrs)
    print(f"upserted     {len(ids):,} vectors ({result.replaced:,} replaced); index version {result.version}")
    return 0


def _build(args: argparse.Namespace) -> int:
    vin, attrs = _vectors_and_attributes(args)
    opts = BuildOptions(
        partitions=args.partitions,
        bits_per_dim=args.bits_per_dim,
        metric=args.metric,
        seed=args.seed,
        sketch_bits=args.sketch_bits,
        calibration_queries=args.calibration_size,
    )
    cal_queries = _read_calibration(args.calibration_queries)
    progress = NoProgress() if args.quiet else TqdmProgress()
    try:
        summary = build_index(
            vin.vectors, args.index_uri, attrs, opts, progress, cal_queries, replace=args.replace
        )
    except IndexExistsError as exc:  # the library's advice is replace=True; here it is a flag
        raise InputError(
            f"an index already exists at {exc.uri}; add --replace to rebuild it (every vector there "
            "is replaced), or choose another --index-uri",
            field="index_uri",
        ) from exc
    print("\n".join(summary.lines()))
    return 0


def _read_calibration(path: str | None) -> np.ndarray | None:
    """A calibration query file, with errors that say which file they are about."""
    if path is None:
        return None
    try:
        return read_vectors(path).vectors
    except InputError as exc:
        raise InputError(f"calibration queries: {exc.message}", field="calibration_queries") from exc


def _calibrate(args: argparse.Namespace) -> int:
    queries = _read_calibration(args.queries)
    progress = NoProgress() if args.quiet else TqdmProgress()
    started = time.perf_counter()
    cal = calibrate_index(args.index_uri, queries, args.calibration_size, progress)
    print(
        f"calibrated   {args.index_uri} with {cal.n_queries:,} {cal.source} queries "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _load_filter(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if path.is_dir():
            raise InputError(f"filter file {str(path)!r} is a folder, not a JSON file", field="filter")
        if not path.is_file():
            raise InputError(f"filter file {str(path)!r} does not exist", field="filter")
        try:
            return path.read_bytes()  # bytes: the filter parser checks UTF-8 and says so
        except OSError as exc:
            raise InputError(
                f"cannot read filter file {str(path)!r}: {exc.strerror}", field="filter"
            ) from exc
    return text  # parsed (with a clear error) against the index schema


def _check_output(path: Path) -> None:
    """Fail before searching, not after, when the results could not be written."""
    if path.suffix not in (".npz", ".parquet"):
        raise InputError(f"--output must end in .npz or .parquet, got {str(path)!r}", field="output")
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist", field="output")


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write atomically: a failed write leaves any existing file untouched."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _write_parquet(path: Path, ids: np.ndarray, distances: np.ndarray, attributes: list) -> None:
    """One row per hit: query, rank, id, distance and the hit's attributes (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    found = ids >= 0
    query, rank = np.nonzero(found)
    columns: dict[str, Any] = {
        "query": pa.array(query.astype(np.int32)),
        "rank": pa.array(rank.astype(np.int32)),
        "id": pa.array(ids[found]),
        "distance": pa.array(distances[found]),
    }
    hits = [hit for row in attributes for hit in row]
    for name in hits[0] if hits else ():
        columns[f"attr.{name}"] = pa.array([h[name] for h in hits])
    atomic_write(path, lambda fh: pq.write_table(pa.table(columns), fh))


def _search(args: argparse.Namespace) -> int:
    output = Path(args.output)
    _check_output(output)
    queries = read_vectors(args.queries).vectors
    index = open_index(args.index_uri)
    params = SearchParams(
        **{
            name: getattr(args, name)
            for name in (
                "target_recall",
                "plan",
                "routing_factor",
                "min_candidates",
                "min_partitions",
                "sketch_keep",
                "rerank_factor",
                "max_partitions",
                "levels",
                "rerank",
            )
            if getattr(args, name) is not None
        }
    )
    started = time.perf_counter()
    parquet = output.suffix == ".parquet"
    include = ["attributes"] if parquet else []
    res = index.search(queries, k=args.k, filter=_load_filter(args.filter), params=params, include=include)
    seconds = time.perf_counter() - started
    if parquet:
        _write_parquet(output, res.ids, res.distances, res.attributes or [])
    elif index.manifest.metric == "dot":  # the inner product, larger is better (-inf padded)
        _write_npz(output, ids=res.ids, scores=res.scores)
    else:
        _write_npz(output, ids=res.ids, distances=res.distances)
    found = (res.ids >= 0).sum(axis=1)
    print(
        f"searched     {queries.shape[0]:,} queries, k={args.k}, in {seconds:.3f} s "
        f"({queries.shape[0] / seconds:,.0f} queries/s)"
    )
    print(f"results      {found.min()}..{found.max()} per query -> {output}")
    print(f"filter       may match {res.stats['matches_maybe']:,}, surely {res.stats['matches_sure']:,}")
    expected = res.stats["expected_recall"]
    print(
        f"plan         {res.stats['plan']} ({res.stats['rule']} rule), rerank {res.stats['rerank']} "
        f"(distances {res.stats['distances']}), expected recall "
        f"{'unknown (uncalibrated index: run squash calibrate)' if expected is None else expected}"
    )
    print(
        f"storage      read {res.stats['bytes_read']:,} bytes of hot tier, "
        f"{res.stats['refine_bytes_read']:,} bytes of float32 in {res.stats['refine_gets']} range reads"
    )
    for name in ("partitions", "l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored"):
        print(f"  {name:<14} mean {np.mean(res.stats[name]):,.1f} per query")
    return 0


def _read_ids(args: argparse.Namespace) -> Any:
    """--ids 1,2,3 or --ids-file (an integer .npy, or text with one id per line)."""
    if args.ids is not None:
        try:
            return [int(v) for v in args.ids.split(",") if v.strip()]
        except ValueError:
            raise InputError(
                f"--ids must be comma-separated integers, got {args.ids!r}", field="ids"
            ) from None
    path = Path(args.ids_file)
    if not path.is_file():
        raise InputError(f"ids file {str(path)!r} does not exist", field="ids")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path.name}: not an integer .npy array ({exc})", field="ids") from exc
    try:
        return [int(line) for line in path.read_text().split() if line]
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path.name}: expected one integer id per line", field="ids") from None


def _delete(args: argparse.Namespace) -> int:
    if sum(v is not None for v in (args.ids, args.ids_file, args.filter)) != 1:
        raise InputError("give exactly one of --ids, --ids-file and --filter", field="ids")
    ids = None if args.filter is not None else _read_ids(args)
    result = delete(args.index_uri, ids=ids, filter=_load_filter(args.filter))
    missing = f", {result.not_found:,} ids not in the index" if result.not_found else ""
    print(f"deleted      {result.deleted:,} vectors{missing}; index version {result.version}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    r = compact(args.index_uri)
    if r.partitions_rebuilt == 0:
        print(f"compact      nothing to fold; index version {r.version}")
    else:
        print(
            f"compacted    {r.partitions_rebuilt:,} partitions rebuilt, {r.delta_partitions_folded:,} delta "
            f"partitions folded, {r.rows_dropped:,} deleted rows dropped; index version {r.version}"
        )
    return 0


def _duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(value) * units[unit]
    except ValueError:
        raise InputError(
            f"--older-than takes a duration like 30m, 2h or 7d, got {text!r}", field="older_than"
        ) from None
    if not seconds >= 0:
        raise InputError("--older-than must not be negative", field="older_than")
    return seconds


def _gc(args: argparse.Namespace) -> int:
    r = collect(args.index_uri, _duration(args.older_than))
    print(
        f"gc           deleted {r.deleted:,} files; {r.referenced:,} in use, {r.marked:,} unused and waiting "
        "out the grace period (a later gc deletes them)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    index = open_index(args.index_uri)
    print(json.dumps(index.info(), indent=2))
    return 0


def _calibration_options(p: argparse.ArgumentParser, size_help: str) -> None:
    """--calibration-size and --quiet, shared by build and calibrate."""
    p.add_argument(
        "--calibration-size",
        type=int,
        default=DEFAULT_QUERIES,
        help=size_help.format(f"default {DEFAULT_QUERIES}"),
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squash", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an index from vectors (+ attributes)")
    b.add_argument("--vectors", required=True, help=".npy, .fvecs, .bvecs or .parquet")
    b.add_argument("--index-uri", required=True, help="file:///abs/path or s3://bucket/prefix")
    b.add_argument("--attributes", help="Parquet or CSV, one row per vector (optional 'id' column)")
    b.add_argument("--vector-column", help="the vectors' column in a Parquet file with several lists")
    b.add_argument("--partitions", type=int, help="number of partitions (default: about sqrt(N))")
    b.add_argument(
        "--bits-per-dim",
        type=float,
        default=BuildOptions.bits_per_dim,
        help=f"hot-tier code budget, bits per dimension (default {BuildOptions.bits_per_dim:g}, at most 8)",
    )
    b.add_argument(
        "--metric",
        choices=METRICS,
        default="l2",
        help="l2 (default), cosine, or dot (maximum inner product; one extra internal dimension)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--sketch-bits", type=int, help="bits of the binary sign sketch (default min(32, d), at most d)"
    )
    b.add_argument(
        "--calibration-queries",
        help="a sample of real queries (.npy/.fvecs/.parquet) to calibrate the planner with "
        "(recommended; default: a hard synthetic sample of the data)",
    )
    b.add_argument(
        "--replace",
        action="store_true",
        help="rebuild an index that already exists at --index-uri (without it, that is an error)",
    )
    _calibration_options(b, "calibration queries used ({}; 0 = no calibration)")
    b.set_defaults(run=_build)

    s = sub.add_parser("search", help="k-NN search for a batch of queries")
    s.add_argument("--index-uri", required=True)
    s.add_argument("--queries", required=True, help=".npy, .fvecs or .bvecs")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--filter", help='JSON, e.g. \'{"label": "Bag"}\', or @file.json')
    s.add_argument(
        "--output",
        required=True,
        help="OUT.npz (ids int64; distances float32, or scores for dot) or OUT.parquet (one row per "
        "hit, with its attributes)",
    )
    s.add_argument(
        "--target-recall",
        type=float,
        help=f"expected recall@k the planner aims for, in (0, 1] (default {DEFAULT_TARGET_RECALL})",
    )
    s.add_argument("--plan", choices=PLANS, help="auto (cheaper by the cost model), routed or exact")
    s.add_argument("--routing-factor", type=float, help="expert: the fixed routing rule's factor")
    s.add_argument("--min-candidates", type=int)
    s.add_argument("--sketch-keep", type=float)
    s.add_argument("--rerank-factor", type=int)
    s.add_argument("--min-partitions", type=float)
    s.add_argument("--max-partitions", type=int)
    s.add_argument("--levels", choices=LEVELS)
    s.add_argument(
        "--rerank",
        choices=RERANKS,
        help="final ranking: auto (default), none (the hot tier's code), float32 (re-rank the best "
        "on float32 rows from the cold tier: exact distances), exact (every candidate on float32)",
    )
    s.set_defaults(run=_search)

    c = sub.add_parser("calibrate", help="recalibrate an index's planner with a sample of queries")
    c.add_argument("--index-uri", required=True)
    c.add_argument("--queries", help="real queries (.npy/.fvecs/.parquet); default: a hard synthetic sample")
    _calibration_options(c, "at most this many queries ({})")
    c.set_defaults(run=_calibrate)

    u = sub.add_parser("upsert", help="insert or replace vectors by id (no rebuild)")
    u.add_argument("--index-uri", required=True)
    u.add_argument("--vectors", required=True, help=".npy, .fvecs, .bvecs or .parquet")
    u.add_argument("--attributes", help="Parquet or CSV, one row per vector (may hold the 'id' column)")
    u.add_argument("--vector-column", help="the vectors' column in a Parquet file with several lists")
    u.add_argument("--ids", help="an integer .npy, or a text file with one id per line")
    u.set_defaults(run=_upsert)

    d = sub.add_parser("delete", help="delete vectors by id or by filter (no rebuild)")
    d.add_argument("--index-uri", required=True)
    d.add_argument("--ids", help="comma-separated ids, e.g. 3,17,42")
    d.add_argument("--ids-file", help="an integer .npy, or a text file with one id per line")
    d.add_argument("--filter", help="delete every vector matching this filter (JSON or @file.json)")
    d.set_defaults(run=_delete)

    k = sub.add_parser("compact", help="fold upserts and deletes into rebuilt partitions")
    k.add_argument("--index-uri", required=True)
    k.set_defaults(run=_compact)

    g = sub.add_parser("gc", help="delete files no live version of the index needs")
    g.add_argument("--index-uri", required=True)
    g.add_argument("--older-than", default="1h", help="grace period for unreferenced files (default 1h)")
    g.set_defaults(run=_gc)

    i = sub.add_parser("info", help="print an index's manifest summary")
    i.add_argument("--index-uri", required=True)
    i.set_defaults(run=_info)
    return p


#: Library option names (BuildOptions fields, read_vectors' vector_column) -> the CLI's flags.
_FLAGS = {
    "partitions": "--partitions",
    "seed": "--seed",
    "sketch_bits": "--sketch-bits",
    "bits_per_dim": "--bits-per-dim",
    "vector_column": "--vector-column",
}


def cli_message(exc: SquashError) -> str:
    """The library names its options (``partitions (256) is larger ...``); a CLI user typed
    flags, so say ``--partitions``. Only in messages about build options or the vectors
    file, and only whole option names, so an attribute or value is never rewritten."""
    if exc.field not in (*_FLAGS, "vectors"):
        return exc.message
    message = exc.message
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w'\"-]){name}(?![\w'\"-])", flag, message)
    return message


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SquashError as exc:
        print(f"squash: error: {cli_message(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `squash info ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("squash: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
