"""``squash query`` (alias ``squash search``): k-NN search for a file of queries, shown as a
table or written to .npz / .json / .parquet.

The results come from one function, :func:`_run_query`: in-process through ``--index-uri``,
or a deployed API through ``--url`` (:class:`squash.Client`); everything else only formats
a :class:`~squash.index.SearchResult`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .index import SearchResult, open_index
from .inputs import read_queries
from .params import LEVELS, MAX_K, PLANS, RERANKS, SearchParams
from .storage import atomic_write

OUTPUTS = (".npz", ".json", ".parquet")
#: SearchParams fields the command exposes as --flags (same name, dashes for underscores).
KNOBS = tuple(f.name for f in fields(SearchParams))
_DEFAULTS = SearchParams()
DESCRIPTION = """\
k-NN search for a file of queries (one query per row; a 1-D .npy is one query).

Without --output it prints one row per hit: query, rank (0 = nearest), id, distance
(smaller is better), score (larger is better) and the attributes asked for, then a summary
of the plan on stderr. With --output it writes the results and prints the summary."""
_TEXT_WIDTH = 40  # longer attribute values are cut on the table (files keep them whole)


def add_query_command(sub: Any, **parser_options: Any) -> argparse.ArgumentParser:
    """Register ``query`` (and its alias ``search``) on the subparsers ``sub``."""
    q = sub.add_parser(
        "query",
        aliases=["search"],
        help="k-NN search for a file of queries; prints a table or writes a file",
        description=DESCRIPTION,
        **parser_options,
    )
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--index-uri",
        metavar="URI",
        help="search in-process: file:///abs/path, s3://bucket/prefix or a local path",
    )
    where.add_argument(
        "--url",
        metavar="URL",
        help="search a deployed API (squash.Client; SigV4 with the standard credential chain)",
    )
    remote = q.add_argument_group("with --url")
    remote.add_argument("--index", metavar="NAME", help="the index's name in the API (needed with --url)")
    remote.add_argument("--auth", choices=("iam", "none"), default="iam", help="request signing")
    remote.add_argument("--region", help="signing region (default: from the URL or the AWS config)")
    q.add_argument(
        "--queries",
        required=True,
        metavar="PATH",
        help=".npy (Q×d, or d for one query), .fvecs, .bvecs, .parquet",
    )
    q.add_argument("--k", type=int, default=10, help=f"neighbours per query, 1 to {MAX_K}")
    q.add_argument("--filter", metavar="JSON", help='JSON, e.g. \'{"label": "Bag"}\', or @file.json')
    q.add_argument(
        "--attributes",
        metavar="NAMES",
        help="attributes to show or write with each hit: comma-separated names, 'all' or 'none' "
        "(default: none on the table, all in a .json/.parquet file)",
    )
    q.add_argument(
        "--output",
        metavar="PATH",
        help="OUT.npz (ids int64; distances float32, or scores for dot), OUT.json (the HTTP API's "
        "answer: results and stats) or OUT.parquet (one row per hit: query, rank, id, distance, "
        "score, attr.NAME columns); default: print a table",
    )
    knobs = q.add_argument_group("search knobs (squash.SearchParams; see README, Search knobs)")
    knobs.add_argument(
        "--target-recall",
        type=float,
        default=_DEFAULTS.target_recall,
        help="expected recall@k the planner aims for, in (0, 1]",
    )
    knobs.add_argument(
        "--plan",
        choices=PLANS,
        default=_DEFAULTS.plan,
        help="auto (cheaper by the cost model), routed or exact",
    )
    knobs.add_argument(
        "--routing-factor",
        type=float,
        help="expert: the fixed rule's routing factor (any routing knob replaces the calibrated rule; "
        "unset ones take 1.12 / 2000 / 8)",
    )
    knobs.add_argument("--min-candidates", type=int, help="expert: the fixed rule's minimum matches covered")
    knobs.add_argument(
        "--min-partitions", type=float, help="expert: the fixed rule's minimum coverage, in partitions' worth"
    )
    knobs.add_argument(
        "--max-partitions",
        type=int,
        default=_DEFAULTS.max_partitions,
        help="cap on the partitions a query's distance rule visits (coverage may add more for a "
        "full k); 0 = no cap",
    )
    knobs.add_argument(
        "--rerank",
        choices=RERANKS,
        default=_DEFAULTS.rerank,
        help="final ranking: none (the hot tier's code), fine (re-rank the best on the refinement "
        "tier, resident), float32 (re-rank the best on float32 rows from the cold tier: exact "
        "distances), exact (every candidate on float32), auto (by target)",
    )
    knobs.add_argument(
        "--rerank-factor",
        type=int,
        default=_DEFAULTS.rerank_factor,
        help="float32 re-ranking re-scores k × this many per query and partition",
    )
    knobs.add_argument(
        "--sketch-keep",
        type=float,
        default=_DEFAULTS.sketch_keep,
        help="with --levels all: fraction of a partition's candidates the sign sketch keeps",
    )
    knobs.add_argument(
        "--levels",
        choices=LEVELS,
        default=_DEFAULTS.levels,
        help="auto (every candidate scored on the code), all (sign sketch first), exact",
    )
    q.set_defaults(run=query)
    return q


def query(args: argparse.Namespace) -> int:
    output = None if args.output is None else _check_output(Path(args.output))
    wanted_attributes(args.attributes, args.output)  # a bad --attributes fails before any work
    started = time.perf_counter()
    res = _run_query(args)
    seconds = time.perf_counter() - started
    names = _attribute_names(res, args.attributes, output)
    if output is None:
        sys.stdout.write(format_table(res, names))
        sys.stdout.flush()  # the table before the summary, on a terminal showing both
        _print_summary(res, args.k, seconds, None, file=sys.stderr, brief=True)
        return 0
    if output.suffix == ".parquet":
        write_parquet(output, res, names)
    elif output.suffix == ".json":
        write_json(output, res, names)
    else:
        write_npz(output, res)
    _print_summary(res, args.k, seconds, output, file=sys.stdout)
    return 0


def _run_query(args: argparse.Namespace) -> SearchResult:
    """The results of the command's search: in-process on the index at ``--index-uri``, or
    through the HTTP API at ``--url`` (:class:`squash.Client`). With attributes asked for
    (``--attributes``, or a .json/.parquet output), ``attributes`` holds every attribute of
    each hit; the caller picks the columns."""
    queries = read_queries(args.queries)
    wanted = wanted_attributes(args.attributes, args.output)
    params = SearchParams(**{n: getattr(args, n) for n in KNOBS if getattr(args, n, None) is not None})
    include = ["attributes"] if wanted else []
    filt = load_filter(args.filter)
    if args.url is not None:
        if isinstance(filt, bytes | str):  # JSON text (or an @file's bytes): the object itself
            from .jsontext import loads

            filt = loads(filt, "--filter", field="filter")
        from .client import Client

        if not args.index:
            raise InputError("--url needs --index NAME (the index's name in the API)", field="index")
        with Client(args.url, auth=args.auth, region=args.region) as client:
            if wanted:
                check_attribute_names(wanted, [a["name"] for a in client.info(args.index)["attributes"]])
            return client.query(args.index, queries, k=args.k, filter=filt, include=include, params=params)
    index = open_index(args.index_uri)
    if wanted:
        check_attribute_names(wanted, [a.name for a in index.manifest.attributes])
    return index.search(queries, k=args.k, filter=filt, params=params, include=include)


def wanted_attributes(text: str | None, output: str | None) -> list[str] | bool:
    """``--attributes`` as names, True (all) or False (none); unset: all for a .json or
    .parquet output, none otherwise."""
    suffix = None if output is None else Path(output).suffix
    if text is None:
        return suffix in (".json", ".parquet")
    if text.strip() in ("all", "none"):
        wanted: list[str] | bool = text.strip() == "all"
    else:
        wanted = [n.strip() for n in text.split(",") if n.strip()]
        if not wanted:
            raise InputError("--attributes takes comma-separated names, 'all' or 'none'", field="attributes")
    if wanted and suffix == ".npz":
        raise InputError(
            "--attributes: a .npz output holds ids and distances only; write .json or .parquet",
            field="attributes",
        )
    return wanted


def check_attribute_names(wanted: list[str] | bool, available: list[str]) -> None:
    """Fail before searching when ``--attributes`` names a column the index does not have."""
    if wanted is True:
        return
    unknown = [n for n in wanted if n not in available]
    if unknown:
        have = ", ".join(available) or "none"
        raise InputError(
            f"--attributes: the index has no attribute {', '.join(map(repr, unknown))} (it has: {have})",
            field="attributes",
        )


def _attribute_names(res: SearchResult, text: str | None, output: Path | None) -> list[str]:
    """The attribute columns to show or write, in the order asked for (all: the index's)."""
    wanted = wanted_attributes(text, None if output is None else str(output))
    if wanted is False or res.attributes is None:
        return []
    if wanted is True:
        first = next((hit for row in res.attributes for hit in row), {})
        return list(first)
    return wanted


def _check_output(path: Path) -> Path:
    """Fail before searching, not after, when the results could not be written."""
    if path.suffix not in OUTPUTS:
        raise InputError(f"--output must end in .npz, .json or .parquet, got {str(path)!r}", field="output")
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist", field="output")
    return path


def _hits(res: SearchResult) -> tuple[np.ndarray, np.ndarray]:
    """(query, rank) of every real hit (ids of -1 are padding), row-major."""
    return np.nonzero(res.ids >= 0)


def format_table(res: SearchResult, names: list[str]) -> str:
    """One aligned row per hit: query, rank (0 = nearest), id, distance, score, attributes;
    a query with no hit (its filter matched nothing) gets one row saying so."""
    header = ["query", "rank", "id", "distance", "score", *names]
    scores = res.scores
    rows: list[list[str]] = []
    for q in range(res.ids.shape[0]):
        found = np.flatnonzero(res.ids[q] >= 0)
        if not found.size:
            rows.append([str(q), "-", "-", "(no results)", "", *([""] * len(names))])
        for j in found.tolist():
            attrs = res.attributes[q][j] if names and res.attributes else {}
            cells = [_cell(attrs.get(n)) for n in names]
            dist, score = float(res.distances[q, j]), float(scores[q, j])
            rows.append([str(q), str(j), str(res.ids[q, j]), f"{dist:.6g}", f"{score:.6g}", *cells])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    numeric = 5  # query, rank, id, distance, score: right-aligned
    lines = [
        "  ".join(
            c.rjust(w) if i < numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "null" if value is None else value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())  # a newline in a value must not break the table's rows
    return text if len(text) <= _TEXT_WIDTH else text[: _TEXT_WIDTH - 1] + "…"


def write_npz(path: Path, res: SearchResult) -> None:
    """ids and distances (a dot index: scores, the inner product, larger is better), atomically."""
    if res.metric == "dot":
        arrays = {"ids": res.ids, "scores": res.scores}
    else:
        arrays = {"ids": res.ids, "distances": res.distances}
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def write_parquet(path: Path, res: SearchResult, names: list[str]) -> None:
    """One row per hit: query, rank, id, distance, score and ``attr.NAME`` columns (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    query, rank = _hits(res)
    columns: dict[str, Any] = {
        "query": pa.array(query.astype(np.int32)),
        "rank": pa.array(rank.astype(np.int32)),
        "id": pa.array(res.ids[query, rank]),
        "distance": pa.array(res.distances[query, rank]),
        "score": pa.array(res.scores[query, rank]),
    }
    hits = [hit for row in res.attributes or [] for hit in row]
    for name in names:
        columns[f"attr.{name}"] = pa.array([h.get(name) for h in hits])
    atomic_write(path, lambda fh: pq.write_table(pa.table(columns), fh))


def write_json(path: Path, res: SearchResult, names: list[str]) -> None:
    """The HTTP API's answer shape: ``{"results": [[{"id", "distance", "score",
    "attributes"}]], "stats": {...}}``, nearest first (atomically)."""
    scores = res.scores
    results = []
    for q in range(res.ids.shape[0]):
        row = []
        for j in np.flatnonzero(res.ids[q] >= 0).tolist():
            hit: dict[str, Any] = {
                "id": int(res.ids[q, j]),
                "distance": float(res.distances[q, j]),
                "score": float(scores[q, j]),
            }
            if names and res.attributes:
                hit["attributes"] = {n: res.attributes[q][j].get(n) for n in names}
            row.append(hit)
        results.append(row)
    doc = {"results": results, "stats": res.stats}
    text = json.dumps(doc, default=_jsonable, allow_nan=False, indent=1)
    atomic_write(path, text.encode() + b"\n")


def _jsonable(value: Any) -> Any:
    """numpy values in the stats (per-query counts) as JSON numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_summary(
    res: SearchResult, k: int, seconds: float, output: Path | None, file: Any, brief: bool = False
) -> None:
    """What ran: counts, speed, plan, expected recall and (unless ``brief``) the filter's
    matches, the bytes read and the per-level counts. Keys a source lacks are skipped."""
    n = res.ids.shape[0]
    found = (res.ids >= 0).sum(axis=1)
    stats = res.stats
    rate = n / max(seconds, 1e-9)
    what = "1 query" if n == 1 else f"{n:,} queries"
    print(f"searched     {what}, k={k}, in {seconds:.3f} s ({rate:,.0f} queries/s)", file=file)
    expected = stats.get("expected_recall")
    recall = "unknown (uncalibrated index: run squash calibrate)" if expected is None else expected
    plan = (
        f"plan         {stats.get('plan')} ({stats.get('rule')} rule), rerank {stats.get('rerank')} "
        f"(distances {stats.get('distances')}), expected recall {recall}"
    )
    if brief:
        print(plan, file=file)
        return
    where = f" -> {output}" if output is not None else ""
    print(f"results      {found.min()}..{found.max()} per query{where}", file=file)
    if "matches_maybe" in stats:
        print(
            f"filter       may match {stats['matches_maybe']:,}, surely {stats['matches_sure']:,}", file=file
        )
    print(plan, file=file)
    if "bytes_read" in stats:
        cold, gets = stats.get("refine_bytes_read", 0), stats.get("refine_gets", 0)
        print(
            f"storage      read {stats['bytes_read']:,} bytes of hot tier, "
            f"{cold:,} bytes of float32 in {gets} range reads",
            file=file,
        )
    for name in ("partitions", "l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored"):
        if name in stats:
            print(f"  {name:<14} mean {np.mean(stats[name]):,.1f} per query", file=file)


def load_filter(text: str | None) -> Any:
    """``--filter``: JSON text, or ``@file.json`` (read as bytes: the parser checks UTF-8)."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if path.is_dir():
            raise InputError(f"filter file {str(path)!r} is a folder, not a JSON file", field="filter")
        if not path.is_file():
            raise InputError(f"filter file {str(path)!r} does not exist", field="filter")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read filter file {str(path)!r}: {exc.strerror}", field="filter"
            ) from exc
    return text  # parsed (with a clear error) against the index schema
