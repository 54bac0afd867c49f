"""Storage and data safety: never overwrite what is not ours, never write at the root,
read only manifests that hold together, write files other users can read."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import squash
from squash.build import BuildOptions, build_index
from squash.cli import main
from squash.errors import IndexFormatError, InputError
from squash.manifest import MANIFEST_KEY


@pytest.fixture
def vectors():
    return np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- 12: a folder holding someone else's manifest.json -------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b'{"name": "my-app", "version": "1.0"}', b"not json at all", b"[1, 2, 3]", b'{"format": "other"}'],
)
def test_build_refuses_a_foreign_manifest(tmp_path, vectors, content):
    (tmp_path / MANIFEST_KEY).write_bytes(content)
    before = _tree(tmp_path)
    with pytest.raises(InputError, match="not a squash index manifest") as err:
        build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2))
    assert err.value.field == "index_uri"
    assert (tmp_path / MANIFEST_KEY).read_bytes() == content, "the foreign file is untouched"
    assert _tree(tmp_path) == before, "nothing written"


def test_cli_build_refuses_a_foreign_manifest(tmp_path, vectors, capsys):
    np.save(tmp_path / "v.npy", vectors)
    target = tmp_path / "site"
    target.mkdir()
    (target / MANIFEST_KEY).write_text('{"short_name": "pwa"}')
    code = main(["build", "--vectors", str(tmp_path / "v.npy"), "--index-uri", target.as_uri(), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("squash: error: ") and "not a squash index manifest" in err
    assert _tree(target) == ["manifest.json"]


def test_rebuild_over_a_squash_index_still_works(tmp_path, vectors):
    build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2))
    build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=3), replace=True)
    assert squash.open_index(tmp_path.as_uri()).manifest.partitions == 3


def test_rebuild_over_a_corrupt_squash_manifest_repairs_it(tmp_path, vectors):
    build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2))
    doc = json.loads((tmp_path / MANIFEST_KEY).read_text())
    doc["dims"] = -1
    (tmp_path / MANIFEST_KEY).write_text(json.dumps(doc))
    build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2), replace=True)
    assert squash.open_index(tmp_path.as_uri()).dims == 8


# --- 13: the filesystem root -------------------------------------------------------------------


@pytest.fixture
def no_writes(monkeypatch):
    """Make any local write fail loudly: a regression must not write at the real root."""
    from squash import storage

    def refuse(self, key, data):
        raise AssertionError(f"attempted to write {self.root / key}")

    monkeypatch.setattr(storage.LocalStorage, "write", refuse)


@pytest.mark.parametrize(
    "uri", ["file:///", "file://localhost/", "file:////", "file:///tmp/..", "file:///./"]
)
def test_the_filesystem_root_is_refused(vectors, no_writes, uri):
    with pytest.raises(InputError, match="filesystem root") as err:
        build_index(vectors, uri, None, BuildOptions(partitions=2))
    assert err.value.field == "index_uri"


def test_cli_refuses_the_root(tmp_path, vectors, no_writes, capsys):
    np.save(tmp_path / "v.npy", vectors)
    code = main(["build", "--vectors", str(tmp_path / "v.npy"), "--index-uri", "file:///", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "filesystem root" in err


# --- 14: manifests validated on load -----------------------------------------------------------


@pytest.fixture
def built(tmp_path, vectors):
    import pyarrow as pa

    attrs = pa.table({"n": pa.array(np.arange(300) % 7), "c": pa.array(["a", "b", "c"] * 100)})
    build_index(vectors, tmp_path.as_uri(), attrs, BuildOptions(partitions=3))
    return tmp_path


def _tamper(root, change):
    doc = json.loads((root / MANIFEST_KEY).read_text())
    change(doc)
    (root / MANIFEST_KEY).write_text(json.dumps(doc))


def _set(*path_and_value):
    *path, value = path_and_value

    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


TAMPERED = {
    "metric bogus": (_set("metric", "bogus"), "metric"),
    "dims wrong": (_set("dims", 9), "dims"),
    "dims zero": (_set("dims", 0), "dims"),
    "dims string": (_set("dims", "8"), "dims"),
    "dims bool": (_set("dims", True), "dims"),
    "n wrong": (_set("n", 301), "n"),
    "n negative": (_set("n", -300), "n"),
    "partitions wrong": (_set("partitions", 4), "partition"),
    "partitions zero": (_set("partitions", 0), "partitions"),
    "sizes do not sum": (
        lambda d: d["partition_sizes"].__setitem__(0, d["partition_sizes"][0] + 1),
        "partition_sizes",
    ),
    "sizes negative": (_set("partition_sizes", [-1, 150, 151]), "partition_sizes"),
    "segments missing one": (lambda d: d["segments"].pop(), "segments"),
    "segment ref not object": (lambda d: d["segments"].__setitem__(0, "x"), "segments"),
    "segment key escapes": (lambda d: d["segments"][0].__setitem__("key", "../../etc/passwd"), "key"),
    "segment key absolute": (lambda d: d["segments"][0].__setitem__("key", "/etc/passwd"), "key"),
    "sha not hex": (lambda d: d["router"].__setitem__("sha256", "zz"), "sha256"),
    "size negative": (lambda d: d["router"].__setitem__("size", -1), "size"),
    "bits nan": (_set("bits_per_dim", "NaN"), "bits_per_dim"),
    "bits too many": (_set("bits_per_dim", 99), "bits_per_dim"),
    "attribute type": (lambda d: d["attributes"][0].__setitem__("type", "date"), "type"),
    "attribute name $": (lambda d: d["attributes"][0].__setitem__("name", "$and"), "name"),
    "attribute duplicate": (lambda d: d["attributes"].append(d["attributes"][0]), "twice"),
    "cells ragged": (lambda d: d["attributes"][0]["cells"]["lo"].pop(), "cells"),
    "cells lo > hi": (lambda d: d["attributes"][0]["cells"].__setitem__("lo", [10**6] * 7), "cells"),
    "cells not numbers": (lambda d: d["attributes"][0]["cells"].__setitem__("hi", ["x"] * 7), "cells"),
    "category count not a count": (
        lambda d: d["attributes"][1].__setitem__("values", "three"),
        "values must be a count",
    ),
    "categories fewer than codes": (lambda d: d["attributes"][1].__setitem__("values", 1), "categor"),
    "dictionaries missing": (lambda d: d.__setitem__("dictionaries", None), "need dictionaries"),
    "attributes not a list": (_set("attributes", {}), "attributes"),
    "params not object": (_set("params", []), "params"),
    "build id empty": (_set("build_id", ""), "build_id"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampered_manifest_is_index_corrupt_with_the_reason(built, name):
    change, reason = TAMPERED[name]
    _tamper(built, change)
    with pytest.raises(IndexFormatError, match=reason) as err:
        squash.open_index(built.as_uri()).search(np.zeros(8, np.float32), k=3)
    assert err.value.code == "index_corrupt"


def test_missing_router_is_index_corrupt_not_not_found(built):
    doc = json.loads((built / MANIFEST_KEY).read_text())
    (built / doc["router"]["key"]).unlink()
    with pytest.raises(IndexFormatError, match=r"router\.arrow.*missing") as err:
        squash.open_index(built.as_uri())
    assert err.value.code == "index_corrupt"


def test_missing_segment_is_index_corrupt(built):
    doc = json.loads((built / MANIFEST_KEY).read_text())
    (built / doc["segments"][1]["key"]).unlink()
    index = squash.open_index(built.as_uri())
    with pytest.raises(IndexFormatError, match="missing"):
        index.search(np.zeros((4, 8), np.float32), k=300, params=squash.SearchParams(min_candidates=300))


def _cold_file(built, partition: int):
    doc = json.loads((built / MANIFEST_KEY).read_text())
    return built / doc["cold"][partition]["key"]


def test_missing_cold_tier_is_index_corrupt_when_float32_is_asked_for(built):
    _cold_file(built, 1).unlink()
    index = squash.open_index(built.as_uri())
    codes = index.search(
        np.zeros((4, 8), np.float32), k=5, params=squash.SearchParams(plan="exact", rerank="none")
    )
    assert codes.stats["refine_gets"] == 0  # the code ranking never touches the cold tier
    with pytest.raises(IndexFormatError, match="missing") as err:
        index.search(np.zeros((4, 8), np.float32), k=5, params=squash.SearchParams(target_recall=1.0))
    assert err.value.code == "index_corrupt"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cold_tier_is_index_corrupt_not_a_wrong_answer(built, damage):
    path = _cold_file(built, 0)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        del data[-4:]
    path.write_bytes(bytes(data))
    index = squash.open_index(built.as_uri())
    with pytest.raises(IndexFormatError, match=r"checksum|shorter") as err:
        index.search(np.zeros((4, 8), np.float32), k=5, params=squash.SearchParams(target_recall=1.0))
    assert err.value.code == "index_corrupt"


def test_an_index_of_the_previous_format_asks_for_a_rebuild(built):
    doc = json.loads((built / MANIFEST_KEY).read_text())
    doc["format_version"] = 1
    (built / MANIFEST_KEY).write_text(json.dumps(doc))
    with pytest.raises(IndexFormatError, match=r"older squash \(format version 1\); rebuild it") as err:
        squash.open_index(built.as_uri())
    assert err.value.code == "index_corrupt"


def test_untampered_manifest_opens(built):
    assert squash.open_index(built.as_uri()).search(np.zeros(8, np.float32), k=3).ids.shape == (1, 3)


# --- 15: file modes follow the umask -----------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_index_files_follow_the_umask(tmp_path, vectors, umask, mode):
    old = os.umask(umask)
    try:
        build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2))
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}
    assert not [p for p in tmp_path.rglob(".*.tmp")], "no temporary files left behind"


def test_cli_search_output_follows_the_umask(tmp_path, vectors, capsys):
    build_index(vectors, tmp_path.as_uri(), None, BuildOptions(partitions=2))
    np.save(tmp_path / "q.npy", vectors[:3])
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.npz"
        assert (
            main(
                [
                    "search",
                    "--index-uri",
                    tmp_path.as_uri(),
                    "--queries",
                    str(tmp_path / "q.npy"),
                    "--output",
                    str(out),
                ]
            )
            == 0
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
