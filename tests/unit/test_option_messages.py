"""Library errors name the library's options; only the CLI speaks of ``--flags``."""

import ast
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import squash
from squash.cli import cli_message, main
from squash.errors import InputError
from squash.inputs import read_vectors

PACKAGE = Path(squash.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _strings_outside_docstrings(tree: ast.AST) -> list[str]:
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_no_library_module_quotes_a_cli_flag():
    offenders = [
        f"{path.relative_to(PACKAGE)}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.name.startswith("cli")  # cli.py, cli_query.py: the CLI's own words
        for text in _strings_outside_docstrings(ast.parse(path.read_text()))
        if FLAG.search(text)
    ]
    assert not offenders


def test_build_options_errors_name_the_option():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(InputError, match=r"^partitions \(5\) is larger than the number of vectors \(3\)"):
        squash.build_index(x, "file:///tmp/never-written", options=squash.BuildOptions(partitions=5))
    with pytest.raises(InputError, match=r"^bits_per_dim must be in \(0, 8\]"):
        squash.build_index(x, "file:///tmp/never-written", options=squash.BuildOptions(bits_per_dim=9))


def test_vector_column_error_names_the_parameter(tmp_path):
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"a": [[1.0, 2.0]], "b": [[3.0, 4.0]]}), path)
    with pytest.raises(InputError, match=r"name it with vector_column$") as exc:
        read_vectors(path)
    assert cli_message(exc.value).endswith("name it with --vector-column")


def test_cli_maps_option_names_to_flags(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones((3, 4), np.float32))
    argv = ["build", "--vectors", str(tmp_path / "v.npy"), "--index-uri", str(tmp_path / "i"), "--quiet"]
    assert main([*argv, "--partitions", "5"]) == 2
    assert (
        "squash: error: --partitions (5) is larger than the number of vectors (3)" in capsys.readouterr().err
    )
    assert main([*argv, "--sketch-bits", "9"]) == 2
    assert "error: --sketch-bits must be from 1 to 4" in capsys.readouterr().err


def test_cli_leaves_other_messages_alone():
    exc = InputError("unknown field 'partitions' in the filter", field="filter")
    assert cli_message(exc) == exc.message
    exc = InputError("partitions must be at least 1; see 'partitions'", field="partitions")
    assert cli_message(exc) == "--partitions must be at least 1; see 'partitions'"
