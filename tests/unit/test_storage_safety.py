"""Storage and data safety: never overwrite what is not ours, never write at the root,
read only manifests that hold together, write files other users can read."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from squash.build import BuildOptions, build_index
from squash.cli import main
from squash.errors import InputError


@pytest.fixture
def vectors():
    return np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


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
