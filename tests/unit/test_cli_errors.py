"""Every bad input to `squash build` / `search` gets a clear message, exit 2, and no writes."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from squash.cli import main


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    vec = tmp_path / "v.npy"
    np.save(vec, rng.normal(size=(200, 8)).astype(np.float32))
    return vec


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def _fvecs(path, rows):
    with open(path, "wb") as fh:
        for r in rows:
            np.array([len(r)], np.int32).tofile(fh)
            np.asarray(r, np.float32).tofile(fh)


def bad_inputs(tmp_path, good):
    """(argv builder, expected message) for each bad input the issue names."""
    cases = {}
    cases["missing file"] = (["--vectors", str(tmp_path / "nope.npy")], "does not exist")
    np.save(tmp_path / "c.npy", np.ones((10, 4), np.complex64))
    cases["wrong dtype"] = (["--vectors", str(tmp_path / "c.npy")], "dtype complex64 is not supported")
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    cases["object (pickled) npy"] = (
        ["--vectors", str(tmp_path / "obj.npy")],
        "cannot read as a numeric .npy",
    )
    _fvecs(tmp_path / "r.fvecs", [[1, 2, 3], [1, 2]])
    cases["ragged fvecs"] = (["--vectors", str(tmp_path / "r.fvecs")], "ragged")
    pq.write_table(pa.table({"emb": pa.array([[1.0, 2.0], [1.0]])}), tmp_path / "r.parquet")
    cases["ragged parquet"] = (["--vectors", str(tmp_path / "r.parquet")], "ragged")
    np.save(tmp_path / "e.npy", np.zeros((0, 8), np.float32))
    cases["empty"] = (["--vectors", str(tmp_path / "e.npy")], "empty")
    nan = np.ones((20, 4), np.float32)
    nan[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    cases["NaN"] = (["--vectors", str(tmp_path / "nan.npy")], "row 7 contains NaN or infinite")
    inf = np.ones((20, 4), np.float64)
    inf[3, 0] = 1e300  # finite, but beyond float32: said so, not "NaN or infinite"
    np.save(tmp_path / "inf.npy", inf)
    cases["beyond float32"] = (
        ["--vectors", str(tmp_path / "inf.npy")],
        "row 3 holds 1e+300, too large for float32",
    )
    np.save(tmp_path / "big.npy", np.full((5, 4), 1e30, np.float32))
    cases["overflowing magnitude"] = (["--vectors", str(tmp_path / "big.npy")], "row 0 has norm 2e+30")
    pq.write_table(pa.table({"a": list(range(199))}), tmp_path / "short.parquet")
    cases["attribute rows"] = (
        ["--vectors", str(good), "--attributes", str(tmp_path / "short.parquet")],
        "attributes have 199 rows but there are 200 vectors",
    )
    pq.write_table(pa.table({"when": pa.array([{"x": 1}] * 200)}), tmp_path / "struct.parquet")
    cases["unsupported column"] = (
        ["--vectors", str(good), "--attributes", str(tmp_path / "struct.parquet")],
        "attribute column 'when' has unsupported type",
    )
    pq.write_table(pa.table({"a": pa.array([None] * 200, pa.float64())}), tmp_path / "null.parquet")
    cases["all-null attribute"] = (
        ["--vectors", str(good), "--attributes", str(tmp_path / "null.parquet")],
        "attribute column 'a' holds only nulls",
    )
    (tmp_path / "mixed.csv").write_text("tags\n" + '"[""a"", 1]"\n' + '"[""b""]"\n' * 199)
    cases["mixed list"] = (
        ["--vectors", str(good), "--attributes", str(tmp_path / "mixed.csv")],
        "list column 'tags' mixes element types (int, str)",
    )
    pq.write_table(pa.table({"tags": pa.array([["a", None]] + [["b"]] * 199)}), tmp_path / "nullel.parquet")
    cases["null list element"] = (
        ["--vectors", str(good), "--attributes", str(tmp_path / "nullel.parquet")],
        "list column 'tags' holds 1 null elements",
    )
    cases["partitions > N"] = (
        ["--vectors", str(good), "--partitions", "500"],
        "--partitions (500) is larger",
    )
    cases["bits per dim"] = (
        ["--vectors", str(good), "--bits-per-dim", "9"],
        "--bits-per-dim must be in (0, 8]",
    )
    (tmp_path / "v.txt").write_text("1 2 3")
    cases["unknown format"] = (["--vectors", str(tmp_path / "v.txt")], "unsupported vectors file")
    return cases


def test_every_bad_build_input_is_named_and_writes_nothing(tmp_path, good, capsys):
    out = tmp_path / "index"
    for name, (args, message) in bad_inputs(tmp_path, good).items():
        code, err = run(capsys, "build", *args, "--index-uri", out.as_uri(), "--quiet")
        assert code == 2, name
        assert err.startswith("squash: error: "), name
        assert message in err, f"{name}: {err}"
        assert not out.exists(), f"{name} wrote something"


def test_unreachable_bucket(moto_s3, good, capsys):
    code, err = run(
        capsys, "build", "--vectors", str(good), "--index-uri", "s3://no-such-bucket/x", "--quiet"
    )
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in err


def test_bad_index_uri(good, capsys):
    code, err = run(capsys, "build", "--vectors", str(good), "--index-uri", "http://x/y", "--quiet")
    assert code == 2 and "unsupported index URI" in err
    code, err = run(capsys, "build", "--vectors", str(good), "--index-uri", "file://relative/x", "--quiet")
    assert code == 2 and "file:///absolute/path" in err
    # a path through a file: one error line, not a traceback (found by the CLI property test)
    code, err = run(capsys, "calibrate", "--index-uri", "file:///dev/null")
    assert code == 2 and "Not a directory" in err and "Traceback" not in err


def test_search_errors(tmp_path, good, capsys):
    uri = (tmp_path / "idx").as_uri()
    out = tmp_path / "o.npz"
    assert run(capsys, "build", "--vectors", str(good), "--index-uri", uri, "--quiet")[0] == 0
    q = tmp_path / "q.npy"

    def search(*extra, index=uri):
        return run(capsys, "search", "--index-uri", index, "--queries", str(q), "--output", str(out), *extra)

    np.save(q, np.ones((3, 5), np.float32))
    code, err = search()
    assert code == 2 and "query dimension 5 does not match the index (8)" in err
    np.save(q, np.ones((3, 8), np.float32))
    for k in ("0", "1001"):
        code, err = search("--k", k)
        assert code == 2 and "k must be an integer from 1 to 1000" in err
    code, err = search("--filter", '{"x": 1}')
    assert code == 2 and "unknown field 'x'" in err
    code, err = search(index=(tmp_path / "none").as_uri())
    assert code == 2 and "no squash index at" in err
    code, err = search("--output", str(tmp_path / "o.txt"))
    assert code == 2 and "--output must end in .npz" in err
    code, err = search("--output", str(tmp_path / "missing" / "o.npz"))
    assert code == 2 and "output folder" in err and "does not exist" in err
    assert not out.exists()
    assert search()[0] == 0 and out.exists()
    with np.load(out) as saved:
        assert saved["ids"].shape == (3, 10) and saved["ids"].dtype == np.int64
        assert saved["distances"].dtype == np.float32


@pytest.fixture
def attr_index(tmp_path, good, capsys):
    """An index over ``good`` with an int and a float attribute; (uri, queries, output)."""
    attrs = tmp_path / "a.parquet"
    pq.write_table(pa.table({"n": pa.array(range(200), pa.int64()), "f": pa.array([0.5] * 200)}), attrs)
    uri = (tmp_path / "idx").as_uri()
    assert (
        run(capsys, "build", "--vectors", str(good), "--attributes", str(attrs), "--index-uri", uri)[0] == 0
    )
    q = tmp_path / "q.npy"
    np.save(q, np.ones((2, 8), np.float32))
    return uri, q, tmp_path / "o.npz"


def _one_line_error(code, err):
    assert code == 2, err
    assert err.startswith("squash: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "filt",
    [
        '{"n": 1' + "0" * 400 + "}",
        '{"n": {"$in": [1, 1' + "0" * 400 + "]}}",
        '{"f": {"$lt": -1' + "0" * 400 + "}}",
        '{"n": 1' + "0" * 5000 + "}",  # past Python's int-parsing digit limit
        '{"n": {"$gte": 1e400}}',
        '{"n": NaN}',
    ],
    ids=["int-400-digits", "in-400-digits", "float-field", "5000-digits", "1e400", "NaN"],
)
def test_cli_filter_with_an_unrepresentable_number_is_one_line(capsys, attr_index, filt):
    uri, q, out = attr_index
    code, err = run(
        capsys, "search", "--index-uri", uri, "--queries", str(q), "--output", str(out), "--filter", filt
    )
    _one_line_error(code, err)
    assert "filter" in err
    assert not out.exists()


@pytest.mark.parametrize("depth", [33, 1_000, 10_000, 100_000])
def test_cli_deep_filter_is_one_line(capsys, attr_index, tmp_path, depth):
    uri, q, out = attr_index
    text = '{"$and": [' * depth + '{"n": 1}' + "]}" * depth
    (tmp_path / "deep.json").write_text(text)
    for arg in (text, "@" + str(tmp_path / "deep.json")):
        code, err = run(
            capsys, "search", "--index-uri", uri, "--queries", str(q), "--output", str(out), "--filter", arg
        )
        _one_line_error(code, err)
        assert "nested" in err
    code, err = run(
        capsys,
        "search",
        "--index-uri",
        uri,
        "--queries",
        str(q),
        "--output",
        str(out),
        "--filter",
        "[" * 100_000,
    )
    _one_line_error(code, err)


def test_bad_build_options_are_named_and_write_nothing(tmp_path, good, capsys):
    """Options that were accepted silently (clamped, unfilterable) or crashed."""
    out = tmp_path / "index"
    pq.write_table(pa.table({"$and": list(range(200))}), tmp_path / "dollar.parquet")
    pq.write_table(pa.table({"": list(range(200))}), tmp_path / "empty.parquet")
    (tmp_path / "dup.csv").write_text("a,a\n" + "".join(f"{i},{i}\n" for i in range(200)))
    cases = {
        "sketch bits huge": (["--sketch-bits", "1000000000000"], "--sketch-bits must be from 1 to 8"),
        "sketch bits above dims": (["--sketch-bits", "9"], "--sketch-bits must be from 1 to 8"),
        "sketch bits zero": (["--sketch-bits", "0"], "--sketch-bits must be from 1 to 8"),
        "seed negative": (["--seed", "-1"], "--seed must be an integer from 0 to"),
        "seed huge": (["--seed", str(2**64)], "--seed must be an integer from 0 to"),
        "column $and": (["--attributes", str(tmp_path / "dollar.parquet")], "attribute column '$and'"),
        "column empty": (["--attributes", str(tmp_path / "empty.parquet")], "attribute column ''"),
        "column twice": (
            ["--attributes", str(tmp_path / "dup.csv")],
            "attribute column 'a' appears 2 times",
        ),
    }
    for name, (args, message) in cases.items():
        code, err = run(
            capsys, "build", "--vectors", str(good), *args, "--index-uri", out.as_uri(), "--quiet"
        )
        assert code == 2, f"{name}: {err}"
        assert err.startswith("squash: error: ") and err.count("\n") == 1, f"{name}: {err}"
        assert message in err, f"{name}: {err}"
        assert not out.exists(), f"{name} wrote something"


def test_sketch_bits_default_and_limit(tmp_path, good, capsys):
    """The default is min(32, d); an explicit value up to d is recorded as given."""
    import squash

    for extra, want in (([], 8), (["--sketch-bits", "5"], 5)):
        uri = (tmp_path / f"i{want}").as_uri()
        assert run(capsys, "build", "--vectors", str(good), *extra, "--index-uri", uri, "--quiet")[0] == 0
        assert squash.open_index(uri).manifest.params["sketch_bits"] == want


def test_messages_say_what_is_wrong(tmp_path, good, capsys):
    """Each message names the real problem, not a neighbouring one."""
    uri = (tmp_path / "idx").as_uri()
    assert run(capsys, "build", "--vectors", str(good), "--index-uri", uri, "--quiet")[0] == 0
    out = tmp_path / "o.npz"

    def search(queries, *extra):
        return run(
            capsys, "search", "--index-uri", uri, "--queries", str(queries), "--output", str(out), *extra
        )

    big = np.ones((2, 8), np.float64)
    big[1, 3] = 1e39  # finite in float64, beyond float32
    np.save(tmp_path / "big.npy", big)
    code, err = search(tmp_path / "big.npy")
    assert code == 2 and "row 1" in err and "too large for float32" in err and "NaN" not in err
    (tmp_path / "text.npy").write_text("1 2 3 4 5 6 7 8\n")
    code, err = search(tmp_path / "text.npy")
    assert code == 2 and "not a .npy file" in err and "pickle" not in err
    np.save(tmp_path / "q.npy", np.ones((2, 8), np.float32))
    (tmp_path / "filters").mkdir()
    code, err = search(tmp_path / "q.npy", "--filter", "@" + str(tmp_path / "filters"))
    assert code == 2 and "is a folder" in err
    code, err = search(tmp_path / "q.npy", "--filter", "@" + str(tmp_path / "nope.json"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    code, err = search(tmp_path / "q.npy", "--filter", "@" + str(tmp_path / "bin.json"))
    assert code == 2 and "not UTF-8" in err
    assert not out.exists()


def test_build_vectors_beyond_float32_say_so(tmp_path, capsys):
    x = np.ones((20, 4), np.float64)
    x[3, 0] = 1e300
    np.save(tmp_path / "v.npy", x)
    code, err = run(
        capsys, "build", "--vectors", str(tmp_path / "v.npy"), "--index-uri", (tmp_path / "i").as_uri()
    )
    assert code == 2 and "row 3" in err and "too large for float32" in err
