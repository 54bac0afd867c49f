"""``squash query`` (alias ``search``): a readable table, or .npz / .json / .parquet files."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import squash
from squash.cli import main
from squash.index import Index


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    table = pa.table(
        {
            "label": pa.array(rng.choice(["Bag", "Coat"], 400)),
            "price": rng.uniform(0, 9, 400),
            "note": pa.array(["line one\nline two " + "x" * 60] * 400),
        }
    )
    uri = (root / "idx").as_uri()
    squash.build_index(x, uri, table, squash.BuildOptions(partitions=4, calibration_queries=0))
    np.save(root / "q.npy", x[:3])
    np.save(root / "one.npy", x[7])  # shape (d,): one query
    return root, uri, x


def _query(capsys, idx, *extra, queries="q.npy"):
    root, uri, _ = idx
    code = main(["query", "--index-uri", uri, "--queries", str(root / queries), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_has_one_row_per_hit(idx, capsys):
    code, out, err = _query(capsys, idx, "--k", "2", "--attributes", "label,price")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["query", "rank", "id", "distance", "score", "label", "price"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("0", "0"),
        ("0", "1"),
        ("1", "0"),
        ("1", "1"),
        ("2", "0"),
        ("2", "1"),
    ]
    assert [r[2] for r in rows[::2]] == ["0", "1", "2"]  # each query finds itself first
    assert all(r[5] in ("Bag", "Coat") for r in rows)
    assert float(rows[1][4]) == pytest.approx(-float(rows[1][3]), rel=1e-5)  # l2: score = -distance
    assert "searched     3 queries, k=2" in err and "plan " in err


def test_a_1d_query_file_is_one_query(idx, capsys):
    code, out, err = _query(capsys, idx, "--k", "1", queries="one.npy")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["0", "0", "7"]


def test_attributes_all_and_long_values(idx, capsys):
    code, out, _ = _query(capsys, idx, "--k", "1", "--attributes", "all")
    assert code == 0
    assert out.splitlines()[0].split()[5:] == ["label", "price", "note"]
    row = out.splitlines()[1]
    assert "line one line two" in row and row.endswith("…") and len(out.splitlines()) == 4


def test_no_match_is_said(idx, capsys):
    code, out, _ = _query(capsys, idx, "--filter", '{"label": "Shoe"}')
    assert code == 0
    assert [line.split() for line in out.splitlines()[1:]] == [
        [q, "-", "-", "(no", "results)"] for q in "012"
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attributes", "label,nope"], "the index has no attribute 'nope' (it has: label, price, note)"),
        (["--attributes", ","], "--attributes takes comma-separated names"),
        (["--output", "o.csv"], "--output must end in .npz, .json or .parquet"),
        (["--max-partitions", "-1"], "max_partitions=-1 is out of range"),
    ],
)
def test_errors(idx, capsys, tmp_path, extra, message):
    extra = [str(tmp_path / e) if e.startswith("o.") else e for e in extra]
    code, _, err = _query(capsys, idx, *extra)
    assert code == 2 and err.startswith("squash: error: ") and message in err, err


def test_npz_with_attributes_is_refused(idx, capsys, tmp_path):
    code, _, err = _query(capsys, idx, "--output", str(tmp_path / "o.npz"), "--attributes", "label")
    assert code == 2 and ".npz output holds ids and distances only" in err
    assert not (tmp_path / "o.npz").exists()


def test_outputs(idx, capsys, tmp_path):
    assert _query(capsys, idx, "--k", "3", "--output", str(tmp_path / "o.npz"))[0] == 0
    npz = np.load(tmp_path / "o.npz")
    assert sorted(npz.files) == ["distances", "ids"] and npz["ids"].shape == (3, 3)

    code, out, _ = _query(capsys, idx, "--k", "3", "--output", str(tmp_path / "o.json"))
    assert code == 0 and f"-> {tmp_path / 'o.json'}" in out
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [h["id"] for h in doc["results"][0]] == npz["ids"][0].tolist()
    assert set(doc["results"][0][0]) == {"id", "distance", "score", "attributes"}
    assert set(doc["results"][0][0]["attributes"]) == {"label", "price", "note"}
    assert doc["stats"]["plan"] in ("routed", "exact")

    assert (
        _query(capsys, idx, "--k", "3", "--output", str(tmp_path / "o.parquet"), "--attributes", "price")[0]
        == 0
    )
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == ["query", "rank", "id", "distance", "score", "attr.price"]
    assert table.column("id").to_pylist() == npz["ids"].ravel().tolist()
    np.testing.assert_allclose(table.column("score").to_numpy(), -table.column("distance").to_numpy())


def test_search_is_an_alias(idx, capsys, tmp_path):
    root, uri, _ = idx
    argv = [
        "search",
        "--index-uri",
        uri,
        "--queries",
        str(root / "q.npy"),
        "--output",
        str(tmp_path / "s.npz"),
    ]
    assert main(argv) == 0
    assert "results      " in capsys.readouterr().out and (tmp_path / "s.npz").is_file()


def test_max_partitions_reaches_the_search(idx, capsys, monkeypatch):
    seen = []
    original = Index.search

    def spy(self, *args, **kwargs):
        seen.append(kwargs["params"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Index, "search", spy)
    assert _query(capsys, idx, "--max-partitions", "2", "--rerank-factor", "3")[0] == 0
    assert seen[-1].max_partitions == 2 and seen[-1].rerank_factor == 3
    assert _query(capsys, idx)[0] == 0
    assert seen[-1] == squash.SearchParams()  # the CLI's defaults are the library's
