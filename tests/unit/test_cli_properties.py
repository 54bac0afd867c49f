"""Property tests over the CLI: ``squash.cli.main`` with arbitrary argv and small arbitrary
files exits 0, or 2 with one ``squash: error:`` line (``squash build: error:`` for argparse's
usage errors) — never a traceback or another status.

Bounded: 150 examples, a deadline per example, file:// indexes only (no network).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squash.build import BuildOptions, build_index
from squash.cli import main

SETTINGS = settings(
    max_examples=150,
    deadline=8000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
COMMANDS = ["build", "search", "query", "calibrate", "info", "bogus", "--help", "--version", ""]
FLAGS = ["--vectors", "--index-uri", "--attributes", "--vector-column", "--partitions", "--bits-per-dim"]
FLAGS += ["--metric", "--seed", "--sketch-bits", "--calibration-queries", "--calibration-size", "--queries"]
FLAGS += ["--k", "--filter", "--output", "--target-recall", "--plan", "--routing-factor", "--min-candidates"]
FLAGS += ["--sketch-keep", "--rerank-factor", "--min-partitions", "--max-partitions", "--levels", "--quiet"]
FLAGS += ["--replace", "--rerank"]
SWITCHES = ("--quiet", "--replace")  # flags without a value
ERROR_LINE = re.compile(r"^squash( [a-z]+)?: error: \S")
EXTS = [".npy", ".fvecs", ".bvecs", ".parquet", ".csv", ".json", ".npz", ""]
numbers = st.sampled_from(
    ["0", "1", "-1", "2", "3", "7", "0.5", "1.5", "nan", "inf", "-inf", "1e400", "10" * 30]
)
words = st.sampled_from(["l2", "cosine", "auto", "exact", "routed", "all", "{}", "[]", '{"label": "a"}'])
json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
).map(lambda v: json.dumps(v))


@pytest.fixture(scope="module")
def index_uri(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("cli-index")
    table = pa.table({"label": pa.array(rng.choice(["a", "b"], 300)), "price": rng.uniform(0, 9, 300)})
    uri = (root / "idx").as_uri()
    build_index(rng.normal(size=(300, 8)).astype(np.float32), uri, table, BuildOptions(partitions=4))
    return uri


@st.composite
def small_file(draw, folder: Path, n: int):
    """Write a small arbitrary file into ``folder``; return its path."""
    path = folder / f"f{n}{draw(st.sampled_from(EXTS))}"
    kind = draw(st.sampled_from(["bytes", "npy", "fvecs", "csv", "parquet", "json", "good", "good"]))
    if kind == "good":  # float32 vectors the index (d=8) or a small build accepts
        path = path.with_suffix(".npy")
        rows, dims = draw(st.integers(1, 60)), draw(st.sampled_from([8, 8, 4]))
        np.save(path, np.random.default_rng(rows).normal(size=(rows, dims)).astype(np.float32))
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif kind == "npy":
        dtype = draw(st.sampled_from(["float32", "float64", "int8", "uint8", "bool", "complex64", "float16"]))
        shape = tuple(draw(st.lists(st.integers(0, 12), min_size=0, max_size=3)))
        values = draw(st.sampled_from([0.0, 1.0, np.nan, np.inf, 1e39]))
        arr = np.random.default_rng(len(shape)).normal(size=shape) + values
        with contextlib.suppress(Exception), np.errstate(invalid="ignore"), open(path, "wb") as fh:
            np.save(fh, arr.astype(dtype))
    elif kind == "fvecs":
        dims = draw(st.integers(-2, 8))
        rows = draw(st.integers(0, 4))
        with open(path, "wb") as fh:
            for _ in range(rows):
                np.array([dims], np.int32).tofile(fh)
                np.ones(max(dims, 0) + draw(st.integers(0, 1)), np.float32).tofile(fh)
    elif kind == "csv":
        path.write_text(draw(st.text(max_size=80)), errors="surrogatepass")
    elif kind == "parquet":
        rows = draw(st.integers(0, 20))
        cols = draw(
            st.lists(st.sampled_from(["id", "label", "price", "v", "", "$x"]), max_size=3, unique=True)
        )
        rng = np.random.default_rng(rows)
        table = pa.table({c: rng.normal(size=rows) for c in cols}) if cols else pa.table({"x": [1] * rows})
        pq.write_table(table, path)
    else:
        path.write_text(draw(json_text))
    return path


REQUIRED = {
    "build": ["--vectors", "--index-uri"],
    "search": ["--index-uri", "--queries", "--output"],
    "query": ["--index-uri", "--queries"],
    "calibrate": ["--index-uri"],
    "info": ["--index-uri"],
}
OPTIONAL = {
    "build": [
        *("--attributes", "--vector-column", "--partitions", "--bits-per-dim", "--metric", "--seed"),
        *("--sketch-bits", "--calibration-queries", "--calibration-size", "--replace"),
    ],
    "search": [
        *("--k", "--filter", "--target-recall", "--plan", "--routing-factor", "--min-candidates"),
        *("--sketch-keep", "--rerank-factor", "--min-partitions", "--max-partitions", "--levels"),
    ],
    "query": [
        *("--k", "--filter", "--output", "--attributes", "--target-recall", "--plan", "--rerank"),
        *("--max-partitions", "--min-partitions", "--levels"),
    ],
    "calibrate": ["--queries", "--calibration-size"],
    "info": [],
}


def _value(draw, flag: str, index_uri: str, folder: Path, n: int, command: str) -> str:
    if flag == "--index-uri":
        choices = [
            index_uri,
            (folder / "new").as_uri(),
            "file:///",
            "s3://",
            "x://y",
            "rel",
            "file:///dev/null",
        ]
        return draw(st.sampled_from(choices) | st.text(max_size=6))
    if flag == "--output":
        outs = [str(folder / f"out{n}{ext}") for ext in (".npz", ".json", ".parquet", ".txt")]
        return draw(st.sampled_from([*outs, str(folder), "/dev/full", "/proc/x.npz"]))
    if flag == "--attributes" and command in ("query", "search"):
        return draw(st.sampled_from(["all", "none", "label", "label,price", "nope", ",", "id"]))
    if flag in ("--vectors", "--queries", "--attributes", "--calibration-queries"):
        return str(draw(small_file(folder, n)))
    if flag == "--filter":
        return draw(json_text | small_file(folder, n).map(lambda p: "@" + str(p)) | st.text(max_size=8))
    return draw(numbers | words | st.text(max_size=6))


@st.composite
def argvs(draw, index_uri: str, folder: Path):
    """Mostly well-formed command lines (the command's own flags, its required ones usually
    present) with arbitrary values and files; sometimes arbitrary flags."""
    command = draw(st.sampled_from([*REQUIRED, "bogus", "--help", "--version", ""]))
    argv = [command]
    if command in REQUIRED:
        flags = [f for f in REQUIRED[command] if draw(st.integers(0, 9))]  # each present 90 %
        flags += draw(st.lists(st.sampled_from(OPTIONAL[command] or ["--quiet"]), max_size=4, unique=True))
    else:
        flags = draw(st.lists(st.sampled_from(FLAGS), max_size=4))
    if draw(st.booleans()):
        flags.append(draw(st.sampled_from(FLAGS)))  # maybe foreign to the command
    for n, flag in enumerate(flags):
        argv.append(flag)
        if flag not in SWITCHES:
            argv.append(_value(draw, flag, index_uri, folder, n, argv[0]))
    if command in ("build", "calibrate") and draw(st.booleans()):
        argv.append("--quiet")
    return [a for a in argv if a]


@SETTINGS
@given(data=st.data())
def test_cli_exits_0_or_2_with_one_error_line(index_uri, tmp_path, data):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        argv = data.draw(argvs(index_uri, Path(tmp)))
        out, err = io.StringIO(), io.StringIO()
        # a plain --index-uri (e.g. "rel") is a path relative to the working directory
        with contextlib.chdir(tmp), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
                code = exc.code
        text = err.getvalue()
        assert code in (0, 2), (argv, code, text)
        assert "Traceback" not in text, (argv, text)
        # argparse's usage errors name the subcommand: "squash build: error: ..."
        errors = [line for line in text.splitlines() if ERROR_LINE.match(line)]
        assert len(errors) == (1 if code == 2 else 0), (argv, code, text)
