"""The ``squash`` command line: build an index, query it, update it, describe it.
``squash query`` (alias ``search``) lives in :mod:`squash.cli_query`.

Errors a user can cause print one line ``squash: error: ...`` and exit with status 2;
nothing is written when a command fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .build import REFINE_MODES, BuildOptions, build_index, calibrate_index, scratch_folder
from .calibration import DEFAULT_QUERIES
from .cli_query import add_query_command, load_filter
from .compact import compact
from .deletes import delete
from .errors import IndexExistsError, InputError, SquashError
from .garbage import collect
from .index import open_index
from .inputs import read_table, read_vectors
from .metrics import METRICS
from .progress import NoProgress, TqdmProgress
from .sources import open_source
from .upserts import upsert


def _vectors_and_attributes(args: argparse.Namespace):
    """--vectors (+ their Parquet attribute columns) and --attributes, as upsert reads them."""
    vin = read_vectors(args.vectors, args.vector_column)
    return vin, _attributes(args, vin.attributes)


def _attributes(args: argparse.Namespace, attrs):
    """The vectors file's own attribute columns, or --attributes (not both)."""
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
    return attrs


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
    with scratch_folder(args.scratch) as tmp:
        source, attrs = open_source(args.vectors, args.vector_column, tmp)
        return _build_from(args, source, _attributes(args, attrs), tmp)


def _build_from(args: argparse.Namespace, source, attrs, scratch) -> int:
    opts = BuildOptions(
        partitions=args.partitions,
        bits_per_dim=args.bits_per_dim,
        metric=args.metric,
        seed=args.seed,
        sketch_bits=args.sketch_bits,
        calibration_queries=args.calibration_size,
        refine=args.refine,
    )
    cal_queries = _read_calibration(args.calibration_queries)
    progress = NoProgress() if args.quiet else TqdmProgress()
    builder = None
    if args.on == "lambda":
        if not args.stack:
            raise InputError("--on lambda needs --stack NAME (the deployed stack's name)", field="stack")
        from .runtime.build_driver import LambdaBuilder  # the driver sits above the core

        builder = LambdaBuilder(args.stack, concurrency=args.workers)
    elif args.stack:
        raise InputError("--stack applies to --on lambda only", field="stack")
    try:
        summary = build_index(
            source,
            args.index_uri,
            attrs,
            opts,
            progress,
            cal_queries,
            replace=args.replace,
            workers=args.workers,
            scratch=scratch,
            builder=builder,
        )
    except IndexExistsError as exc:  # the library's advice is replace=True; here it is a flag
        raise InputError(
            f"an index already exists at {exc.uri}; add --replace to rebuild it (every vector there "
            "is replaced), or choose another --index-uri",
            field="index_uri",
        ) from exc
    print("\n".join(summary.lines()))
    if builder is not None:
        st = builder.stats
        print(
            f"on lambda    {st['invocations']} invocations of {st['function']} "
            f"({st['concurrency']} at a time); "
            f"inputs {st['input_bytes_uploaded'] / 2**20:.1f} MiB up, "
            f"segments {st['function_bytes_written'] / 2**20:.1f} MiB written by the functions"
        )
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
    result = delete(args.index_uri, ids=ids, filter=load_filter(args.filter))
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
    p.add_argument("--calibration-size", type=int, default=DEFAULT_QUERIES, help=size_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars (drawn only on a terminal anyway)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (line breaks kept), and each option's default in its help —
    except where there is nothing to show (no default, or a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


DESCRIPTION = """\
squash: build, query and update serverless vector indexes with attribute filters.

An index lives at an index URI: file:///abs/path, s3://bucket/prefix, or a plain local
path (./idx). Run `squash COMMAND --help` for a command's options.

Errors a user can cause print one line "squash: error: ..." and exit with status 2;
nothing is written when a command fails."""


def _version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    try:
        return metadata.version("squash-vector")
    except metadata.PackageNotFoundError:
        return __version__


def parser() -> argparse.ArgumentParser:
    fmt = {"formatter_class": _HelpFormatter}
    p = argparse.ArgumentParser(prog="squash", description=DESCRIPTION, **fmt)
    p.add_argument("--version", action="version", version=f"squash {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    uri_help = "file:///abs/path, s3://bucket/prefix or a local path"

    b = sub.add_parser("build", help="build an index from vectors (+ attributes)", **fmt)
    b.add_argument(
        "--vectors",
        required=True,
        help=".npy, .fvecs, .bvecs or .parquet; a folder or glob of Parquet files; or s3://bucket/key "
        "(read a block at a time: inputs larger than memory are fine)",
    )
    b.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    b.add_argument("--attributes", help="Parquet or CSV, one row per vector (optional 'id' column)")
    b.add_argument("--vector-column", help="the vectors' column in a Parquet file with several lists")
    b.add_argument("--partitions", type=int, help="number of partitions (default: about sqrt(N))")
    b.add_argument(
        "--bits-per-dim",
        type=float,
        default=BuildOptions.bits_per_dim,
        help="hot-tier code budget, bits per dimension (at most 8)",
    )
    b.add_argument(
        "--metric",
        choices=METRICS,
        default=BuildOptions.metric,
        help="l2, cosine, or dot (maximum inner product; one extra internal dimension)",
    )
    b.add_argument("--seed", type=int, default=BuildOptions.seed, help="makes builds reproducible")
    b.add_argument(
        "--sketch-bits", type=int, help="bits of the binary sign sketch (default: min(32, d), at most d)"
    )
    b.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default=BuildOptions.refine,
        help="keep the refinement tier (4 more bits per 4-bit axis, for re-ranking without "
        "float32): auto keeps it when the code's measured recall@10 is below 0.98",
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
    b.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that quantize partitions in parallel (each holds one partition at a "
        "time); with --on lambda, concurrent function invocations",
    )
    b.add_argument(
        "--on",
        choices=("local", "lambda"),
        default="local",
        help="where partitions are quantized: this machine, or the deployed worker functions of "
        "--stack (needs EnableBuilds=true and an s3:// --index-uri under the stack's bucket/prefix)",
    )
    b.add_argument("--stack", help="the deployed stack's name (its workers are <stack>-worker-<n>)")
    b.add_argument(
        "--scratch",
        metavar="DIR",
        help="folder for the spilled partitions (about the size of the float32 input; default: "
        "the system temp folder); removed when the build ends",
    )
    _calibration_options(b, "calibration queries used (0 = no calibration)")
    b.set_defaults(run=_build)

    add_query_command(sub, **fmt)

    c = sub.add_parser("calibrate", help="recalibrate an index's planner with a sample of queries", **fmt)
    c.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    c.add_argument("--queries", help="real queries (.npy/.fvecs/.parquet); default: a hard synthetic sample")
    _calibration_options(c, "at most this many queries")
    c.set_defaults(run=_calibrate)

    u = sub.add_parser("upsert", help="insert or replace vectors by id (no rebuild)", **fmt)
    u.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    u.add_argument("--vectors", required=True, help=".npy, .fvecs, .bvecs or .parquet")
    u.add_argument("--attributes", help="Parquet or CSV, one row per vector (may hold the 'id' column)")
    u.add_argument("--vector-column", help="the vectors' column in a Parquet file with several lists")
    u.add_argument("--ids", help="an integer .npy, or a text file with one id per line")
    u.set_defaults(run=_upsert)

    d = sub.add_parser("delete", help="delete vectors by id or by filter (no rebuild)", **fmt)
    d.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    d.add_argument("--ids", help="comma-separated ids, e.g. 3,17,42")
    d.add_argument("--ids-file", help="an integer .npy, or a text file with one id per line")
    d.add_argument("--filter", help="delete every vector matching this filter (JSON or @file.json)")
    d.set_defaults(run=_delete)

    k = sub.add_parser("compact", help="fold upserts and deletes into rebuilt partitions", **fmt)
    k.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    k.set_defaults(run=_compact)

    g = sub.add_parser("gc", help="delete files no live version of the index needs", **fmt)
    g.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
    g.add_argument(
        "--older-than", default="1h", help="grace period for unreferenced files (30m, 2h, 7d or seconds)"
    )
    g.set_defaults(run=_gc)

    i = sub.add_parser("info", help="print an index's manifest summary", **fmt)
    i.add_argument("--index-uri", required=True, metavar="URI", help=uri_help)
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
