"""The README's "Framework integrations" examples run as written (on a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Framework integrations\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_there_are_two_examples():
    assert len(examples()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_example_runs(index, tmp_path, capsys):
    code = examples()[index].replace("file:///tmp/", f"file://{tmp_path}/")
    exec(compile(code, f"README example {index}", "exec"), {})
    printed = capsys.readouterr().out.strip()
    expected = re.search(r"# (.*)$", code.split("print(", 1)[1].splitlines()[0]).group(1)
    assert printed == expected
