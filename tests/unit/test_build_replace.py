"""A build into a URI that already holds an index must ask to replace it."""

import numpy as np
import pytest

import squash
from squash.cli import main

OPTS = squash.BuildOptions(partitions=2, calibration_queries=0)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)


def test_library_refuses_an_existing_index_unless_replace(tmp_path, x):
    uri = (tmp_path / "idx").as_uri()
    first = squash.build_index(x, uri, options=OPTS)
    with pytest.raises(squash.IndexExistsError) as exc:
        squash.build_index(x[:20], uri, options=OPTS)
    assert exc.value.uri == uri and f"already exists at {uri}" in exc.value.message
    assert "replace=True" in exc.value.message and exc.value.field == "index_uri"
    assert isinstance(exc.value, squash.InputError)
    assert squash.open_index(uri).manifest.build_id == first.build_id  # untouched
    again = squash.build_index(x[:20], uri, options=OPTS, replace=True)
    index = squash.open_index(uri)
    assert index.manifest.build_id == again.build_id != first.build_id and index.manifest.n == 20


def test_replace_never_overwrites_a_foreign_manifest(tmp_path, x):
    (tmp_path / "manifest.json").write_text('{"something": "else"}')
    with pytest.raises(squash.InputError, match="not a squash index manifest"):
        squash.build_index(x, tmp_path.as_uri(), options=OPTS, replace=True)


def test_cli_build_needs_replace(tmp_path, x, capsys):
    np.save(tmp_path / "v.npy", x)
    argv = ["build", "--vectors", str(tmp_path / "v.npy"), "--index-uri", str(tmp_path / "idx"), "--quiet"]
    argv += ["--partitions", "2", "--calibration-size", "0"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"squash: error: an index already exists at {(tmp_path / 'idx').as_uri()}")
    assert "add --replace" in err and "replace=True" not in err
    assert main([*argv, "--replace"]) == 0
