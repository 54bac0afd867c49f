"""Docs that run: every Python and shell block of README.md is a test case (issue #13).

Blocks are found anew on every run, so a section added later is tested without touching this
file. Each block runs in a fresh process in a working directory of its own, with the repo's
virtualenv first on PATH (``squash`` is the CLI, ``python`` the venv's), fake AWS credentials
and, unless its setup brings a local stack, an S3 endpoint nothing listens on: no block can
reach real AWS. Shell blocks run in bash under ``set -euo pipefail``; ``console`` blocks run
their ``$ `` lines. What a block needs is declared by the marker before it
(tests/docs/README.md); a block that cannot run here is skipped with the marker's reason, which
the summary repeats.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import readme_blocks

import squash

BLOCKS, MARKER_ERRORS = readme_blocks.runnable_blocks(readme_blocks.README)
VENV_BIN = Path(sys.executable).parent
NOWHERE = "http://127.0.0.1:9"  # the discard port: refused at once


def block_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment minus anything that points at an AWS account, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SQUASH_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=NOWHERE,
        OPENBLAS_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def script(blocks: list[readme_blocks.Block]) -> tuple[list[str], str]:
    """The command and the program text that run ``blocks`` (one language) in one process."""
    if blocks[-1].lang in readme_blocks.PYTHON_LANGS:
        return [sys.executable, "block.py"], "\n".join(b.code for b in blocks)
    parts = [readme_blocks.console_commands(b.code) if b.lang == "console" else b.code for b in blocks]
    return ["bash", "block.sh"], "set -euo pipefail\n" + "\n".join(parts)


def run_block(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """Run in a session of its own, so a timeout kills what the block started too (by the
    session's process group, whose id is the child's PID); returncode None means timed out."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def test_markers_are_well_formed() -> None:
    assert not MARKER_ERRORS, "README.md readme-test markers:\n" + "\n".join(MARKER_ERRORS)
    assert BLOCKS, "README.md has no Python or shell block: is the parser broken?"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.test_id for b in BLOCKS])
def test_readme_block(block: readme_blocks.Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.skip_reason:
        pytest.skip(f"README.md:{block.line}: {block.skip_reason}")
    blocks = readme_blocks.chain(block, BLOCKS)
    setups = tuple(dict.fromkeys(s for b in blocks for s in (b.marker.setup if b.marker else ())))
    extra = readme_blocks.prepare(setups, request, tmp_path)
    argv, text = script(blocks)
    (tmp_path / argv[1]).write_text(text)
    timeout = block.marker.timeout_s if block.marker else readme_blocks.DEFAULT_TIMEOUT_S
    returncode, stdout, stderr = run_block(argv, tmp_path, block_env(extra), timeout)
    if returncode is None:
        pytest.fail(f"README.md:{block.line} ({block.heading}) still running after {timeout:g}s: killed")
    hint = ""
    if "No rule to make target" in stderr:
        hint = "blocks run in an empty temp dir, not the repo: mark a make block skip reason=...\n"
    assert returncode == 0, (
        f"README.md:{block.line} ({block.heading}) exited {returncode}\n{hint}"
        f"--- program ---\n{text}\n--- stdout ---\n{stdout[-3000:]}\n"
        f"--- stderr ---\n{stderr[-3000:]}"
    )


SAMPLE = """# A

<!-- readme-test: setup=sample-data -->
```python
x = 1
```

## B

<!-- readme-test: after="A" timeout=5 -->
```python
print(x)
```

<!-- readme-test: skip -->
```bash
true
```

<!-- readme-test: setup=nope -->
```console
$ echo hi
hi
```

<!-- readme-test: skip reason="never" -->
```json
{}
```

<!-- readme-test: after="A" -->
Some text.
"""


def test_parser_ids_chain_and_errors() -> None:
    blocks, errors = readme_blocks.parse(SAMPLE)
    runnable = [b for b in blocks if b.runnable]
    assert [b.test_id for b in runnable] == ["a-1", "b-1", "b-2", "b-3"]
    assert runnable[0].marker.setup == ("sample-data",)
    assert [b.code for b in readme_blocks.chain(runnable[1], runnable)] == ["x = 1\n", "print(x)\n"]
    assert runnable[1].marker.timeout_s == 5
    assert readme_blocks.console_commands(runnable[3].code) == "echo hi\n"
    assert len(errors) == 4, errors  # skip without reason, unknown setup, json block, no block
    assert any("skip needs reason" in e for e in errors)
    assert any("unknown setup" in e for e in errors)
    assert any("json block" in e for e in errors)
    assert any("not followed by a code block" in e for e in errors)


def test_setups_lay_out_what_they_promise(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The files and index that tests/docs/README.md promises to blocks (local-stack aside: the
    HTTP API block uses it)."""
    env = readme_blocks.prepare(("sample-data", "index"), request, tmp_path)
    assert {"v.npy", "q.npy", "a.parquet", "index"} <= {p.name for p in tmp_path.iterdir()}
    index = squash.open_index(env["INDEX_URI"])
    res = index.search(np.load(tmp_path / "q.npy"), k=5, filter={"tags": "news"}, include=["attributes"])
    assert all("news" in hit["tags"] for row in res.attributes for hit in row)
