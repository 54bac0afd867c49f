"""Upserts without a rebuild, checked against an in-memory reference: a stateful model test
(random upserts, deletes and queries; exact answers equal the reference's exact top-k on
the live set, never a deleted id, always the latest attributes), crash injection at every
file of a write, concurrent writers, and bad input that writes nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from writers import crash_at_write, run_together

import squash
from squash.build import BuildOptions, build_index
from squash.errors import InputError
from squash.manifest import MANIFEST_KEY
from squash.params import SearchParams
from squash.storage import open_storage

D = 8
EXACT = SearchParams(target_recall=1.0)


def _base(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32) + rng.integers(0, 4, size=(n, 1)).astype(np.float32) * 3
    attrs = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64) * 2),
            "label": pa.array(rng.choice(["a", "b", "c"], n)),
            "price": pa.array(rng.uniform(0, 10, n)),
            "tags": pa.array(
                [list(rng.choice(["x", "y", "z"], rng.integers(0, 3), replace=False)) for _ in range(n)]
            ),
        }
    )
    return x, attrs


class Reference:
    """The live set as a dict: id -> (vector, attributes)."""

    def __init__(self, x: np.ndarray, attrs: pa.Table) -> None:
        rows = attrs.to_pylist()
        self.rows = {r.pop("id"): (x[i], r) for i, r in enumerate(rows)}

    def topk(self, q: np.ndarray, k: int, keep=lambda a: True) -> list[list[int]]:
        ids = [i for i, (_, a) in self.rows.items() if keep(a)]
        if not ids:
            return [[] for _ in range(q.shape[0])]
        x = np.stack([self.rows[i][0] for i in ids]).astype(np.float64)
        d = (q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * q @ x.T + (x**2).sum(1)[None, :]
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return [[ids[j] for j in row] for row in order]


def _hits(res) -> list[list[int]]:
    return [[i for i in row if i >= 0] for row in res.ids.tolist()]


@settings(max_examples=15, stateful_step_count=8, deadline=None, suppress_health_check=list(HealthCheck))
class UpsertModel(RuleBasedStateMachine):
    """Random writes against the reference; every query is checked exactly."""

    @initialize()
    def build(self):
        import tempfile

        x, attrs = _base()
        self.uri = f"file://{tempfile.mkdtemp()}/idx"
        build_index(x, self.uri, attrs, BuildOptions(partitions=6, seed=1, calibration_queries=0))
        self.index = squash.open_index(self.uri)
        self.ref = Reference(x, attrs)
        self.rng = np.random.default_rng(7)
        self.version = 0

    @rule(count=st.integers(1, 40), fresh=st.floats(0, 1), with_attrs=st.booleans())
    def upsert(self, count, fresh, with_attrs):
        pool = np.array(list(self.ref.rows))
        n_fresh = round(count * fresh)
        ids = np.unique(np.concatenate([
            self.rng.choice(pool, count - n_fresh, replace=False) if count - n_fresh <= pool.size else pool,
            10_000 + self.rng.choice(5_000, n_fresh, replace=False),
        ]))  # fmt: skip
        x = (self.rng.normal(size=(ids.size, D)) * 3).astype(np.float32)
        labels = self.rng.choice(["a", "b", "new"], ids.size).tolist()
        attrs = [{"label": lab, "price": float(p), "tags": ["w"] if lab == "new" else []}
                 for lab, p in zip(labels, self.rng.uniform(-5, 20, ids.size), strict=True)]  # fmt: skip
        result = self.index.upsert(ids, x, attrs if with_attrs else None)
        self.version += 1
        assert result.version == self.version
        for i, (v, a) in zip(ids.tolist(), zip(x, attrs, strict=True), strict=True):
            self.ref.rows[i] = (v, a if with_attrs else {"label": None, "price": None, "tags": None})

    @rule(count=st.integers(1, 30))
    def delete(self, count):
        pool = np.array(list(self.ref.rows))
        ids = self.rng.choice(pool, min(count, pool.size - 20), replace=False)
        result = self.index.delete(ids=ids.tolist())
        self.version += 1
        assert result.deleted == ids.size
        for i in ids.tolist():
            del self.ref.rows[i]

    @rule()
    def compact(self):
        result = self.index.compact()
        self.version = result.version
        m = self.index.manifest
        assert not m.parents and m.deleted is None and m.n == len(self.ref.rows)

    @invariant()
    def answers_equal_the_reference(self):
        if not hasattr(self, "index"):
            return
        q = (self.rng.normal(size=(6, D)) * 3).astype(np.float32)
        assert _hits(self.index.search(q, k=5, params=EXACT)) == self.ref.topk(q, 5)
        res = self.index.search(
            q, k=5, filter={"label": {"$in": ["b", "new"]}}, params=EXACT, include=["attributes"]
        )
        assert _hits(res) == self.ref.topk(q, 5, lambda a: a.get("label") in ("b", "new"))
        for row_ids, row_attrs in zip(_hits(res), res.attributes, strict=True):
            for i, got in zip(row_ids, row_attrs, strict=True):
                want = self.ref.rows[i][1]
                assert got["label"] == want["label"] and got["tags"] == want["tags"]
                assert (
                    got["price"] == pytest.approx(want["price"])
                    if want["price"] is not None
                    else got["price"] is None
                )
        default = self.index.search(q, k=5)
        assert set(default.ids[default.ids >= 0].tolist()) <= set(self.ref.rows), "a deleted id came back"


TestUpsertModel = UpsertModel.TestCase


@pytest.fixture
def small(tmp_path):
    x, attrs = _base()
    uri = (tmp_path / "idx").as_uri()
    build_index(x, uri, attrs, BuildOptions(partitions=6, seed=1))
    return uri, x, attrs


def test_upserted_rows_serve_filters_and_new_values(small):
    uri, x, _ = small
    index = squash.open_index(uri)
    q = x[:4] + 0.01
    result = index.upsert(
        [5000, 5001, 2],
        q[:3],
        {"label": ["new", None, "a"], "price": [99.0, None, -3.0], "tags": [["q"], None, []]},
    )
    assert (result.version, result.upserted, result.replaced) == (1, 3, 1)  # id 2 replaced
    assert _hits(index.search(q[:1], k=1, filter={"label": "new"})) == [[5000]]
    assert _hits(index.search(q[:1], k=2, filter={"price": {"$gt": 50}})) == [[5000]]
    assert _hits(index.search(q[:1], k=2, filter={"price": {"$lt": -1}})) == [[2]]
    assert _hits(index.search(q[:1], k=2, filter={"tags": "q"})) == [[5000]]
    assert 5001 in _hits(index.search(q[1:2], k=3, filter={"label": {"$exists": False}}))[0]
    info = squash.open_index(uri).info()
    assert info["version"] == 1 and {a["name"]: a for a in info["attributes"]}["label"]["nullable"]


@pytest.mark.parametrize("scale", [3.0, 10.0, -10.0])
def test_an_upserted_outlier_is_its_own_nearest_neighbour(small, scale):
    """A new row far outside its partition's cells is not clipped to the edge cell (which
    made its estimated distance to itself larger than to other rows): the delta widens them."""
    uri, x, _ = small
    index = squash.open_index(uri)
    far = (x.max(axis=0) * scale).astype(np.float32)
    near = x[3] + 0.001  # in the same write: it keeps its partition's exact cells
    index.upsert([7777, 7778], np.stack([far, near]))
    for params in (None, SearchParams(rerank="none")):
        top = index.search(np.stack([far, far * 1.01, near]), k=3, params=params)
        assert top.ids[:2, 0].tolist() == [7777, 7777]
        assert 7778 in top.ids[2, :2]  # beside x[3], 0.001 per axis away


def test_cover_widens_only_axes_rows_fall_far_outside():
    from squash.osq.scalar import cover, encode, fit_code, reconstruct

    rng = np.random.default_rng(3)
    v = rng.normal(size=(500, 12))
    code = fit_code(v, 40)
    assert cover(code, v[:50]) is code  # the partition's own rows: the cells as they are
    out = v[:3] * 25.0
    wide = cover(code, out)
    dims = code.dims
    moved = (wide.lo != code.lo) | (wide.step != code.step)
    assert moved.any() and np.all(wide.lo <= code.lo) and np.all(wide.step >= code.step)
    c8, c4, _ = encode(out, wide)
    back = reconstruct(wide, c8, c4, np.zeros(12, np.float32))
    # on every coded axis the new rows are within one cell of their value: nothing clipped
    assert np.all(np.abs(back[:, dims] - out[:, dims]) <= wide.step + 1e-5)


def test_a_crash_at_any_file_of_a_write_changes_nothing(small):
    uri, x, _ = small
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    q = x[:3]
    expected = _hits(squash.open_index(uri).search(q, k=5, params=EXACT))
    for crash_at in range(6):  # hot, cold, router rows, dictionaries, deletions, commit
        with crash_at_write(storage, crash_at), pytest.raises((OSError, squash.StorageError)):
            squash.upsert(uri, [0, 999_999], x[:2] * 2, [{"label": "brand-new"}, {"label": "a"}])
        assert storage.read(MANIFEST_KEY) == before, crash_at
        assert _hits(squash.open_index(uri).search(q, k=5, params=EXACT)) == expected


def test_concurrent_upserts_all_land(small):
    uri, x, _ = small
    groups = [np.arange(7000, 7030), np.arange(7020, 7050), np.arange(0, 20, 2)]
    run_together(
        lambda ids: squash.upsert(uri, ids, np.tile(x[:1], (ids.size, 1)) + ids[:, None] / 1e3), groups
    )
    index = squash.open_index(uri)
    assert index.manifest.version == 3
    want = np.unique(np.concatenate(groups))
    rows, found = index.rows_of_ids(want)
    assert found.all() and rows.size == want.size  # one live row per id
    assert int((~index.deleted).sum()) == 600 + 50  # 10 replaced base ids, 10 overlapping ids once


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1], np.zeros((1, D + 1))), "dimension 9, the index 8"),
        (([1], np.full((1, D), np.nan)), "NaN or infinite"),
        (([1, 1], np.zeros((2, D))), "id 1 is given twice"),
        (([1, 2], np.zeros((1, D))), "2 ids for 1 vectors"),
        (([1], np.zeros((1, D)), {"colour": ["red"]}), "'colour' is not in the index"),
        (([1], np.zeros((1, D)), {"price": ["cheap"]}), "'price' is category here but float"),
        (([1], np.zeros((1, D)), {"tags": [[1, 2]]}), "list column 'tags' holds int"),
        (([1], np.zeros((1, D)), {"label": ["a", "b"]}), "attributes have 2 rows for 1 vectors"),
    ],
)
def test_bad_upserts_write_nothing(small, args, message):
    uri, _, _ = small
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    files = sorted(p for p in (storage.root).rglob("*"))
    with pytest.raises(InputError, match=message):
        squash.upsert(uri, *args)
    assert storage.read(MANIFEST_KEY) == before
    assert sorted(p for p in (storage.root).rglob("*")) == files


def test_upsert_to_a_missing_index(tmp_path):
    with pytest.raises(squash.IndexNotFoundError):
        squash.upsert((tmp_path / "nothing").as_uri(), [1], np.zeros((1, D)))


def test_cli_upsert(small, tmp_path, capsys):
    from squash.cli import main

    uri, x, _ = small
    np.save(tmp_path / "v.npy", x[:3] + 1)
    np.save(tmp_path / "ids.npy", np.array([4, 8000, 8001]))
    pa.csv.write_csv(pa.table({"id": [4, 8000, 8001], "label": ["a", "n", "n"]}), tmp_path / "a.csv")
    argv = ["upsert", "--index-uri", uri, "--vectors", str(tmp_path / "v.npy")]
    assert main([*argv, "--ids", str(tmp_path / "ids.npy")]) == 0
    assert "upserted     3 vectors (1 replaced); index version 1" in capsys.readouterr().out
    assert main([*argv, "--attributes", str(tmp_path / "a.csv")]) == 0
    assert "(3 replaced); index version 2" in capsys.readouterr().out
    assert main(argv) == 2 and "give the ids" in capsys.readouterr().err
    hits = squash.open_index(uri).search(x[:1] + 1, k=1, filter={"label": "n"})
    assert hits.ids[0, 0] in (8000, 8001)


def test_compact_keeps_every_answer_and_folds_the_writes(small, monkeypatch):
    uri, x, _ = small
    index = squash.open_index(uri)
    rng = np.random.default_rng(3)
    index.upsert(
        np.arange(20_000, 20_060), rng.normal(size=(60, D)).astype(np.float32) * 3, {"label": ["w"] * 60}
    )
    index.upsert(np.arange(0, 40, 2), x[:20] + 0.3)
    index.delete(ids=list(range(100, 200, 2)))
    q = rng.normal(size=(20, D)).astype(np.float32) * 3
    before = _hits(index.search(q, k=7, params=EXACT))
    filtered = _hits(index.search(q, k=7, filter={"label": "w"}, params=EXACT))
    storage = open_storage(uri)
    manifest = storage.read(MANIFEST_KEY)

    def crash(self, key, data, expected):
        raise OSError("killed before the commit")

    monkeypatch.setattr(type(storage), "write_if", crash)
    with pytest.raises(OSError):
        squash.compact(uri)
    monkeypatch.undo()
    assert storage.read(MANIFEST_KEY) == manifest
    deltas = len(index.manifest.parents)
    result = index.compact()
    assert deltas > 0 and result.delta_partitions_folded == deltas
    m = index.manifest
    assert m.partitions == 6 and not m.parents and m.deleted is None and m.n == 600 + 60 - 50
    assert result.partitions_rebuilt >= 1 and result.rows_dropped == 70
    assert _hits(index.search(q, k=7, params=EXACT)) == before
    assert _hits(index.search(q, k=7, filter={"label": "w"}, params=EXACT)) == filtered
    assert index.compact().partitions_rebuilt == 0  # nothing left to fold


@pytest.mark.parametrize("where", ["file", "s3"])
def test_gc_deletes_only_unreferenced_old_files(small, where, request):
    uri, x, attrs = small
    if where == "s3":
        import boto3

        request.getfixturevalue("moto_s3")
        boto3.client("s3").create_bucket(Bucket="gc-test")
        uri = "s3://gc-test/idx"
        build_index(x, uri, attrs, BuildOptions(partitions=6, seed=1))
    from squash.garbage import collect, referenced_keys

    index = squash.open_index(uri)
    index.upsert([1, 3], x[:2] + 1)
    index.delete(ids=[4, 6])
    index.compact()
    storage = open_storage(uri)
    assert collect(uri, older_than_s=3600).deleted == 0  # everything is recent: kept for readers
    q = x[:5]
    before = _hits(squash.open_index(uri).search(q, k=5, params=EXACT))
    result = collect(uri, older_than_s=0)
    live = referenced_keys(squash.open_index(uri).manifest)
    keys = {k for k, _ in storage.listing()}
    assert result.deleted > 0 and keys == live | {MANIFEST_KEY, "gc-marks.json"} | (
        {".squash-write.lock"} & keys
    )
    assert _hits(squash.open_index(uri).search(q, k=5, params=EXACT)) == before


def test_cli_compact_and_gc(small, capsys):
    from squash.cli import main

    uri, x, _ = small
    squash.upsert(uri, [11], x[:1])
    assert main(["compact", "--index-uri", uri]) == 0
    assert "1 delta partitions folded" in capsys.readouterr().out
    assert main(["compact", "--index-uri", uri]) == 0 and "nothing to fold" in capsys.readouterr().out
    assert main(["gc", "--index-uri", uri, "--older-than", "0s"]) == 0
    assert "gc           deleted" in capsys.readouterr().out
    assert main(["gc", "--index-uri", uri, "--older-than", "soon"]) == 2


def test_a_crash_at_any_file_of_a_compaction_changes_nothing(small):
    uri, x, _ = small
    squash.upsert(uri, [1, 3, 5], x[:3] + 2)
    squash.delete(uri, ids=[10, 12])
    storage = open_storage(uri)
    before = storage.read(MANIFEST_KEY)
    q = x[:4]
    expected = _hits(squash.open_index(uri).search(q, k=5, params=EXACT))
    for crash_at in range(0, 12, 3):  # partitions' hot/cold files, the router, then the commit
        with (
            crash_at_write(storage, crash_at, "killed mid-compaction"),
            pytest.raises((OSError, squash.StorageError)),
        ):
            squash.compact(uri)
        assert storage.read(MANIFEST_KEY) == before, crash_at
        assert _hits(squash.open_index(uri).search(q, k=5, params=EXACT)) == expected


def test_concurrent_upserts_on_s3_all_land(moto_s3):
    import boto3

    boto3.client("s3").create_bucket(Bucket="upserts")
    x, attrs = _base(300)
    uri = "s3://upserts/idx"
    build_index(x, uri, attrs, BuildOptions(partitions=4, seed=1))
    groups = [np.arange(9000, 9020), np.arange(9010, 9030)]
    run_together(lambda ids: squash.upsert(uri, ids, np.tile(x[:1], (ids.size, 1))), groups)
    index = squash.open_index(uri)
    rows, found = index.rows_of_ids(np.arange(9000, 9030))
    assert index.manifest.version == 2 and found.all() and rows.size == 30


def test_gc_never_touches_foreign_files_nor_files_it_has_not_seen_unused_for_the_grace(small, tmp_path):
    from squash.garbage import collect

    uri, x, attrs = small
    root = open_storage(uri).root
    (root / "NOTES.txt").write_text("mine")
    build_index(x[:50], (root / "nested").as_uri(), attrs.slice(0, 50), BuildOptions(partitions=2, seed=1))
    squash.delete(uri, ids=[0])
    squash.compact(uri)
    first = collect(uri, older_than_s=3600)  # marks what compact left unused, deletes nothing
    assert first.deleted == 0 and first.marked > 0
    assert collect(uri, older_than_s=3600).deleted == 0  # marked just now: still in its grace
    assert collect(uri, older_than_s=0).deleted == first.marked
    assert (root / "NOTES.txt").read_text() == "mine"
    assert squash.open_index((root / "nested").as_uri()).manifest.n == 50
    with pytest.raises(InputError, match="negative"):
        collect(uri, older_than_s=-1)


def test_review_regressions(small, tmp_path):
    """Bugs a review found in the first cut of writes, each pinned."""
    uri, x, attrs = small
    index = squash.open_index(uri)
    # a list built with few values keeps its bits when writes push it past 64 values
    tags = [[f"v{i:03d}"] for i in range(80)]
    index.upsert(np.arange(30_000, 30_080), x[:80] + 0.5, {"tags": tags})
    want = {r["id"] for r in attrs.to_pylist() if r["tags"] and "x" in r["tags"]}
    got = set(_hits(index.search(x[:1], k=700, filter={"tags": "x"}, params=EXACT))[0])
    assert got == want and _hits(index.search(x[:1], k=5, filter={"tags": "v079"}))[0] == [30_079]
    # delta partitions are visited with their parent, even with max_partitions=1
    one = SearchParams(max_partitions=1, target_recall=0.5)
    assert _hits(index.search(x[79:80] + 0.5, k=1, params=one))[0] == [30_079]
    # compact refuses to leave fewer vectors than partitions
    small_uri = (tmp_path / "tiny").as_uri()
    build_index(x[:60], small_uri, attrs.slice(0, 60), BuildOptions(partitions=6, seed=1))
    squash.delete(small_uri, ids=list(range(0, 114, 2)))
    before = open_storage(small_uri).read(MANIFEST_KEY)
    with pytest.raises(InputError, match="would leave 3 vectors in 6 partitions"):
        squash.compact(small_uri)
    assert open_storage(small_uri).read(MANIFEST_KEY) == before
    # ragged vectors and numbers beyond int64 are InputErrors, not crashes
    with pytest.raises(InputError, match="not a rectangular array"):
        squash.upsert(uri, [1, 3], [[0.0] * D, [0.0] * 3])
    with pytest.raises(InputError):
        squash.upsert(uri, [1], np.zeros((1, D)), [{"price": 2**64}])
