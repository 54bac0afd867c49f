"""A plain local path is an index URI everywhere: ``./idx`` and ``/tmp/idx`` mean ``file://``."""

import contextlib
from pathlib import Path

import numpy as np
import pytest

import squash
from squash.cli import main
from squash.errors import InputError
from squash.storage import resolve_uri


def test_plain_paths_become_file_uris(tmp_path):
    with contextlib.chdir(tmp_path):
        assert resolve_uri("./idx") == (tmp_path / "idx").as_uri()
        assert resolve_uri("idx/") == (tmp_path / "idx").as_uri()
        assert resolve_uri("a/../b") == (tmp_path / "b").as_uri()
    assert resolve_uri("/tmp/idx") == "file:///tmp/idx"
    assert resolve_uri("/tmp/with space") == Path("/tmp/with space").as_uri()


def test_uris_are_kept():
    for uri in ("file:///srv/idx", "s3://bucket/prefix", "s3://bucket"):
        assert resolve_uri(uri) == uri


@pytest.mark.parametrize("uri", ["http://x/y", "gs://bucket/p", "x:y", "", "  ", "a\0b"])
def test_other_schemes_and_empty_are_rejected(uri):
    with pytest.raises(InputError) as exc:
        resolve_uri(uri)
    assert exc.value.field == "index_uri"


def test_library_and_cli_take_plain_paths(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    with contextlib.chdir(tmp_path):
        summary = squash.build_index(
            x, "idx", options=squash.BuildOptions(partitions=2, calibration_queries=0)
        )
        assert summary.uri == (tmp_path / "idx").as_uri()
        assert squash.open_index("./idx").manifest.n == 60
        assert squash.open_index(str(tmp_path / "idx")).search(x[:1], k=1).ids[0, 0] == 0
        np.save("v.npy", x)
        args = ["build", "--vectors", "v.npy", "--index-uri", "./cli-idx", "--partitions", "2", "--quiet"]
        assert main([*args, "--calibration-size", "0"]) == 0
        assert main(["info", "--index-uri", "cli-idx"]) == 0
    assert '"n": 60' in capsys.readouterr().out
    assert (tmp_path / "cli-idx" / "manifest.json").is_file()
