"""The refinement tier (``NNNNN.fine``): on data of high intrinsic dimension, where the code
alone ranks short of the target, the planner re-ranks on it instead of reading float32, and
reaches the recall float32 would, with nothing read from the cold tier."""

from __future__ import annotations

import numpy as np
import pytest

import squash
from squash.build import REFINE_BELOW
from squash.datasets import synthetic_mixture
from squash.errors import IndexFormatError
from squash.evaluation import exact_knn, recall_at_k
from squash.fine import fine_key
from squash.storage import open_storage


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """30k x 128 Gaussian mixture (the 1M bench set's generator): neighbours nearly
    equidistant, so 6-bit codes rank noticeably short of exact."""
    ds = synthetic_mixture(n=30_000, d=128, n_queries=300, clusters=64, seed=1)
    uri = (tmp_path_factory.mktemp("hard") / "idx").as_uri()
    squash.build_index(ds.base, uri, ds.attributes, squash.BuildOptions(seed=0))
    truth = exact_knn(ds.base, ds.queries, np.ones(len(ds.base), bool), 10)
    return ds, uri, truth


def test_the_build_measures_the_refinement_and_it_ranks_better_than_the_code(hard):
    _, uri, _ = hard
    cal = squash.open_index(uri).calibration
    code, fine = cal.ranking_recall(10), cal.ranking_recall(10, "fine")
    print(f"code recall@10 {code:.4f}, refined {fine:.4f}")
    assert fine is not None and fine > code + 0.02


def test_a_target_beyond_the_code_re_ranks_on_the_refinement_reading_no_float32(hard):
    ds, uri, truth = hard
    index = squash.open_index(uri)
    cal = index.calibration
    code, fine = cal.ranking_recall(10), cal.ranking_recall(10, "fine")
    target = round(0.99 * fine, 3)  # what the refinement carries and the code does not
    assert target > 0.99 * code
    params = squash.SearchParams(target_recall=target)
    first = index.search(ds.queries, 10, params=params)
    assert first.stats["rerank"] == "fine" and first.stats["distances"] == "estimated"
    assert first.stats["refine_gets"] == first.stats["refine_bytes_read"] == 0
    assert first.stats["fine_loaded"] > 0
    again = index.search(ds.queries, 10, params=params)  # warm: the tier is cached
    assert again.stats["fine_loaded"] == again.stats["fine_bytes_read"] == again.stats["bytes_read"] == 0
    np.testing.assert_array_equal(again.ids, first.ids)
    got = recall_at_k(first.ids, truth)
    f32 = index.search(ds.queries, 10, params=squash.SearchParams(target_recall=target, rerank="float32"))
    codes = index.search(ds.queries, 10, params=squash.SearchParams(target_recall=target, rerank="none"))
    print(f"target {target}: fine {got:.4f}, float32 {recall_at_k(f32.ids, truth):.4f}, "
          f"code {recall_at_k(codes.ids, truth):.4f}")  # fmt: skip
    assert got >= target - 0.01
    assert got >= recall_at_k(f32.ids, truth) - 0.01  # as good as the float32 re-rank
    assert got > recall_at_k(codes.ids, truth)


def test_a_corrupt_or_missing_refinement_file_is_index_corrupt(hard, tmp_path):
    ds, uri, _ = hard
    storage = open_storage(uri)
    seg_key = squash.open_index(uri).manifest.segments[0].key
    key = fine_key(seg_key)
    data = storage.read(key)
    params = squash.SearchParams(rerank="fine", plan="exact")  # every partition visited
    try:
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        storage.write(key, bytes(flipped))
        with pytest.raises(IndexFormatError, match="checksum"):
            squash.open_index(uri).search(ds.queries[:3], 10, params=params)
        storage.delete_keys([key])
        with pytest.raises(IndexFormatError, match="missing although the manifest names it"):
            squash.open_index(uri).search(ds.queries[:3], 10, params=params)
    finally:
        storage.write(key, data)
    assert squash.open_index(uri).search(ds.queries[:3], 10, params=params).stats["rerank"] == "fine"


def _fine_files(uri: str) -> set[str]:
    return {key for key, _ in open_storage(uri).listing() if key.endswith(".fine")}


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_refine_modes_keep_or_drop_the_files(tmp_path, mode):
    """ "on" keeps one refinement file per segment, "off" none, "auto" keeps them only when
    the code's measured recall@10 is below REFINE_BELOW. Without the tier, rerank="fine" is
    an InputError naming rerank (a 400 over HTTP), not a crash further down."""
    ds = synthetic_mixture(n=3000, d=16, n_queries=20, clusters=8, seed=2)
    uri = (tmp_path / mode).as_uri()
    squash.build_index(ds.base, uri, ds.attributes, squash.BuildOptions(refine=mode))
    index = squash.open_index(uri)
    kept = index.manifest.params["refinement"]
    code = index.calibration.ranking_recall(10)
    assert kept == {"on": True, "off": False, "auto": code < REFINE_BELOW}[mode]
    files = _fine_files(uri)
    assert files == ({fine_key(s.key) for s in index.manifest.segments} if kept else set())
    assert (index.calibration.fine is not None) == kept
    if kept:
        assert (
            index.search(ds.queries, 10, params=squash.SearchParams(rerank="fine")).stats["rerank"] == "fine"
        )
    else:
        with pytest.raises(squash.InputError, match="refinement tier") as err:
            index.search(ds.queries, 10, params=squash.SearchParams(rerank="fine"))
        assert err.value.field == "rerank"


def test_bad_refine_mode_is_an_error_naming_it(tmp_path):
    ds = synthetic_mixture(n=500, d=8, n_queries=2, seed=1)
    with pytest.raises(squash.InputError) as err:
        squash.build_index(ds.base, (tmp_path / "x").as_uri(), None, squash.BuildOptions(refine="yes"))
    assert err.value.field == "refine"
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_writes_refine_their_rows_and_gc_keeps_the_tier(hard, tmp_path):
    """An upsert into a refined index writes its delta's refinement file; a far-off new row
    is its own nearest neighbour on the fine re-rank; gc deletes nothing the index uses."""
    import shutil

    from squash.garbage import collect
    from squash.upserts import upsert

    ds, uri, _ = hard
    copy = tmp_path / "copy"
    shutil.copytree(uri.removeprefix("file://"), copy)
    uri = copy.as_uri()
    far = (ds.base[:2] * 3).astype(np.float32)
    upsert(uri, [10**6, 10**6 + 1], far, ds.attributes.slice(0, 2))
    index = squash.open_index(uri)
    assert _fine_files(uri) >= {fine_key(s.key) for s in index.manifest.segments}
    collect(uri, older_than_s=0)
    assert _fine_files(uri) >= {fine_key(s.key) for s in squash.open_index(uri).manifest.segments}
    res = squash.open_index(uri).search(far, 1, params=squash.SearchParams(rerank="fine", target_recall=0.9))
    assert res.stats["rerank"] == "fine"
    assert res.ids[:, 0].tolist() == [10**6, 10**6 + 1]


def test_a_format_3_index_keeps_serving(hard, tmp_path):
    """An index of the previous format (5-entry segment layouts, int64 ids, no refinement
    files, manifest version 3), rewritten from a new build: it opens and answers as before
    (code or float32 re-rank), and rerank="fine" is an InputError, not a crash."""
    import json
    import shutil

    from squash.arrays import from_arrow_bytes, to_arrow_bytes
    from squash.manifest import MANIFEST_KEY, FileRef

    ds, uri, truth = hard
    root = tmp_path / "v3"
    shutil.copytree(uri.removeprefix("file://"), root)
    doc = json.loads((root / MANIFEST_KEY).read_text())
    for ref in doc["segments"]:
        path = root / ref["key"]
        arrays = dict(from_arrow_bytes(path.read_bytes()))
        arrays["layout"] = arrays["layout"][:5].copy()
        arrays["ids"] = arrays["ids"].astype(np.int64)
        data = to_arrow_bytes(arrays)
        path.write_bytes(data)
        (root / fine_key(ref["key"])).unlink()
        ref.update(FileRef.of(ref["key"], data).__dict__)
    doc["format_version"] = 3
    del doc["params"]["refinement"]
    doc["calibration"].pop("fine")
    (root / MANIFEST_KEY).write_text(json.dumps(doc))
    index = squash.open_index(root.as_uri())
    res = index.search(ds.queries, 10)
    assert res.stats["rerank"] in ("none", "float32") and recall_at_k(res.ids, truth) >= 0.95
    with pytest.raises(squash.InputError, match="refinement tier"):
        index.search(ds.queries, 10, params=squash.SearchParams(rerank="fine"))


@pytest.mark.parametrize("cut", [100.0, 20.0, 0.5, 0.01])
def test_filtered_fine_re_rank_returns_full_k_of_matching_rows(hard, cut):
    """Under filters from all rows down to a handful, the refined re-rank returns exactly
    min(k, matches) hits per query, every one matching, at the recall float32 reaches."""
    ds, uri, _ = hard
    index = squash.open_index(uri)
    price = ds.attributes.column("price").to_numpy()
    mask = price < cut
    flt = {"price": {"$lt": cut}}
    res = index.search(ds.queries, 10, flt, params=squash.SearchParams(rerank="fine"))
    assert res.stats["rerank"] == "fine" and res.stats["refine_gets"] == 0
    found = (res.ids >= 0).sum(axis=1)
    assert np.all(found == min(10, int(mask.sum())))
    assert np.all(mask[res.ids[res.ids >= 0]])
    truth = exact_knn(ds.base, ds.queries, mask, 10)
    f32 = index.search(ds.queries, 10, flt, params=squash.SearchParams(rerank="float32"))
    assert recall_at_k(res.ids, truth) >= recall_at_k(f32.ids, truth) - 0.02
