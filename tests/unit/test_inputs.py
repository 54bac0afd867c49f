"""Every supported input format builds the same index content and searches by the right ids."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import squash
from squash.cli import main
from squash.inputs import read_vectors


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 255, size=(300, 12)).astype(np.float32)
    attrs = pa.table(
        {
            "id": pa.array(np.arange(300, dtype=np.int64) * 10 + 5),
            "colour": pa.array(rng.choice(["red", "blue"], 300)),
            "size": pa.array(rng.integers(0, 50, 300)),
        }
    )
    return x, attrs


def _xvecs(path, x, dtype):
    with open(path, "wb") as fh:
        for row in x:
            np.array([x.shape[1]], np.int32).tofile(fh)
            row.astype(dtype).tofile(fh)


@pytest.mark.parametrize("fmt", ["npy-f16", "npy-u8", "fvecs", "bvecs", "parquet-fixed", "parquet-list"])
def test_vector_formats_read_the_same_values(tmp_path, data, fmt):
    x, _ = data
    path = tmp_path / "v"
    if fmt == "npy-f16":
        path = path.with_suffix(".npy")
        np.save(path, x.astype(np.float16))
    elif fmt == "npy-u8":
        path = path.with_suffix(".npy")
        np.save(path, x.astype(np.uint8))
    elif fmt in ("fvecs", "bvecs"):
        path = path.with_suffix("." + fmt)
        _xvecs(path, x, np.float32 if fmt == "fvecs" else np.uint8)
    else:
        path = path.with_suffix(".parquet")
        typ = pa.list_(pa.float32(), 12) if fmt == "parquet-fixed" else pa.list_(pa.float32())
        pq.write_table(pa.table({"emb": pa.array(x.tolist(), typ), "n": pa.array(range(300))}), path)
    vin = read_vectors(path)
    np.testing.assert_array_equal(vin.vectors, x)
    assert vin.vectors.dtype == np.float32
    if fmt.startswith("parquet"):
        assert vin.attributes.column_names == ["n"]


def test_cli_build_with_csv_attributes_and_id_column(tmp_path, data, capsys):
    x, attrs = data
    _xvecs(tmp_path / "v.fvecs", x, np.float32)
    pcsv.write_csv(attrs, tmp_path / "a.csv")
    uri = (tmp_path / "idx").as_uri()
    argv = ["build", "--vectors", str(tmp_path / "v.fvecs"), "--attributes", str(tmp_path / "a.csv")]
    assert main([*argv, "--index-uri", uri, "--partitions", "4", "--quiet"]) == 0
    assert "N=300" in capsys.readouterr().out
    index = squash.open_index(uri)
    assert {a["name"]: a["type"] for a in index.info()["attributes"]} == {"colour": "category", "size": "int"}
    res = index.search(x[:5], k=3, filter={"colour": "red", "size": {"$lt": 25}})
    colour = np.asarray(attrs.column("colour").to_pylist())
    size = attrs.column("size").to_numpy()
    rows = (res.ids[res.ids >= 0] - 5) // 10  # ids map back to rows
    assert np.all((colour[rows] == "red") & (size[rows] < 25))


def test_parquet_vectors_carry_their_attributes(tmp_path, data):
    x, attrs = data
    table = attrs.append_column("emb", pa.array(x.tolist(), pa.list_(pa.float32(), 12)))
    pq.write_table(table, tmp_path / "all.parquet")
    uri = (tmp_path / "idx").as_uri()
    assert main(["build", "--vectors", str(tmp_path / "all.parquet"), "--index-uri", uri, "--quiet"]) == 0
    index = squash.open_index(uri)
    res = index.search(x[7], k=2)  # the code's estimate: near 0, far below the next row's
    assert res.ids[0, 0] == 75 and res.distances[0, 0] < 0.05 * res.distances[0, 1]
    exact = index.search(x[7], k=1, params=squash.SearchParams(rerank="float32"))
    assert exact.ids[0, 0] == 75 and exact.distances[0, 0] == pytest.approx(0, abs=1e-5)


def test_duplicate_ids_are_rejected(tmp_path, data, capsys):
    x, _ = data
    np.save(tmp_path / "v.npy", x)
    pq.write_table(pa.table({"id": pa.array([1] * 300)}), tmp_path / "a.parquet")
    code = main(
        ["build", "--vectors", str(tmp_path / "v.npy"), "--attributes", str(tmp_path / "a.parquet"),
         "--index-uri", (tmp_path / "i").as_uri(), "--quiet"]
    )  # fmt: skip
    assert code == 2 and "duplicate" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_a_1d_npy_is_one_query_but_not_a_build(tmp_path):
    from squash.errors import InputError
    from squash.inputs import read_queries

    np.save(tmp_path / "one.npy", np.arange(8, dtype=np.float64))
    q = read_queries(tmp_path / "one.npy")
    assert q.shape == (1, 8) and q.dtype == np.float32
    np.save(tmp_path / "two.npy", np.ones((2, 8), np.float32))
    assert read_queries(tmp_path / "two.npy").shape == (2, 8)
    with pytest.raises(InputError, match="expected a 2-D array"):
        read_vectors(tmp_path / "one.npy")  # build vectors: (n,) is ambiguous, still an error
    (tmp_path / "q.txt").write_text("1 2 3")
    with pytest.raises(InputError, match=r"unsupported queries file 'q\.txt'"):
        read_queries(tmp_path / "q.txt")
