"""README.md's fenced code blocks, the section each sits in, and its ``readme-test`` marker.

A marker is an HTML comment on the line right before a block (blank lines between are allowed):

    <!-- readme-test: setup=sample-data,index -->
    <!-- readme-test: after="Library API" -->
    <!-- readme-test: skip reason="deploys to AWS" -->

Keys: ``setup`` (comma-separated names from :data:`SETUPS`), ``after`` (the heading of a section
whose earlier runnable blocks of the same language run first, in the same process), ``timeout``
(seconds, default :data:`DEFAULT_TIMEOUT_S`), ``skip`` with a mandatory ``reason``. A marker that
is malformed, names an unknown key or setup, or is not followed by a runnable block is an error
reported by the test suite, never ignored: the point is that no block stops running unnoticed.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
PYTHON_LANGS = frozenset({"python", "py", "python3"})
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
RUNNABLE_LANGS = PYTHON_LANGS | SHELL_LANGS
# What each setup gives a block (documented in tests/docs/README.md; built in conftest.py).
SETUPS = {
    "sample-data": "v.npy, q.npy, a.parquet in the working directory",
    "index": "a file:// index of the sample data; $INDEX_URI names it",
    "local-stack": "the local stack with index fashion-mnist; $API, AWS_ENDPOINT_URL_S3, $BUCKET",
}
KEYS = frozenset({"setup", "after", "timeout", "skip", "reason"})
DEFAULT_TIMEOUT_S = 120.0

MARKER = re.compile(r"^\s*<!--\s*readme-test:(?P<body>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


class MarkerError(ValueError):
    """A ``readme-test`` marker the suite cannot act on (its message says which line and why)."""


@dataclass(frozen=True)
class Marker:
    line: int
    setup: tuple[str, ...] = ()
    after: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    skip_reason: str | None = None


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    heading: str
    marker: Marker | None
    test_id: str = ""

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE_LANGS

    @property
    def skip_reason(self) -> str | None:
        return self.marker.skip_reason if self.marker else None


def parse_marker(body: str, line: int) -> Marker:
    """``key=value`` tokens (shell quoting) and the bare flag ``skip``."""
    try:
        tokens = shlex.split(body)
    except ValueError as exc:
        raise MarkerError(f"line {line}: cannot parse marker: {exc}") from None
    values: dict[str, str] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if key not in KEYS:
            raise MarkerError(f"line {line}: unknown marker key {key!r} (known: {', '.join(sorted(KEYS))})")
        if key in values:
            raise MarkerError(f"line {line}: marker key {key!r} given twice")
        if key != "skip" and not eq:
            raise MarkerError(f"line {line}: marker key {key!r} needs a value")
        values[key] = value
    setup = tuple(s for s in values.get("setup", "").split(",") if s)
    unknown = [s for s in setup if s not in SETUPS]
    if unknown:
        raise MarkerError(f"line {line}: unknown setup {unknown} (known: {', '.join(SETUPS)})")
    if ("skip" in values) != bool(values.get("reason", "").strip()):
        raise MarkerError(f'line {line}: skip needs reason="..." and reason belongs to skip')
    try:
        timeout_s = float(values.get("timeout", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise MarkerError(f"line {line}: timeout must be a number of seconds") from None
    return Marker(
        line=line,
        setup=setup,
        after=values.get("after") or None,
        timeout_s=timeout_s,
        skip_reason=values["reason"].strip() if "skip" in values else None,
    )


def slug(text: str) -> str:
    text = re.sub(r"[`*_\[\]()]", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "top"


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Every fenced block of ``text`` in order, and the marker errors found (as messages)."""
    blocks: list[Block] = []
    errors: list[str] = []
    heading = "top"
    pending: Marker | None = None  # a marker waiting for its block
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        fence = FENCE.match(line)
        if m:
            if pending:
                errors.append(f"line {pending.line}: marker is not followed by a code block")
            try:
                pending = parse_marker(m.group("body"), i + 1)
            except MarkerError as exc:
                errors.append(str(exc))
                pending = None
        elif fence:
            indent, mark = fence.group("indent"), fence.group("fence")
            lang = (fence.group("info").split() or [""])[0].lower()
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not re.match(rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[j]):
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            blocks.append(Block(lang, "\n".join(body) + "\n", i + 1, heading, pending))
            if pending and lang not in RUNNABLE_LANGS:
                kind = lang or "plain"
                errors.append(f"line {pending.line}: marker before a {kind} block, which never runs")
            pending = None
            i = j
        elif HEADING.match(line):
            heading = HEADING.match(line).group("text")
        elif line.strip() and pending:
            errors.append(f"line {pending.line}: marker is not followed by a code block")
            pending = None
        i += 1
    if pending:
        errors.append(f"line {pending.line}: marker is not followed by a code block")
    return _with_ids(blocks), errors


def _with_ids(blocks: list[Block]) -> list[Block]:
    """Ids ``<heading slug>-<n>``: n counts the runnable blocks of that section, from 1."""
    counts: dict[str, int] = {}
    out = []
    for b in blocks:
        if b.runnable:
            key = slug(b.heading)
            counts[key] = counts.get(key, 0) + 1
            b = Block(b.lang, b.code, b.line, b.heading, b.marker, f"{key}-{counts[key]}")
        out.append(b)
    return out


def runnable_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """The runnable blocks of ``path`` and every marker error, ``after`` references included."""
    blocks, errors = parse(path.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b.runnable]
    headings = {b.heading for b in runnable}
    for b in runnable:
        if b.marker and b.marker.after and b.marker.after not in headings:
            where = f"line {b.marker.line}: after={b.marker.after!r}"
            errors.append(f"{where} names no section with a runnable block")
    return runnable, errors


def chain(block: Block, blocks: list[Block]) -> list[Block]:
    """The blocks to run in one process for ``block``: its ``after`` section's earlier blocks of
    the same kind (recursively), then itself."""
    if not block.marker or not block.marker.after:
        return [block]
    kind = PYTHON_LANGS if block.lang in PYTHON_LANGS else SHELL_LANGS
    before = [b for b in blocks if b.heading == block.marker.after and b.line < block.line and b.lang in kind]
    out: list[Block] = []
    for b in before:
        for c in chain(b, blocks):
            if c not in out:
                out.append(c)
    return [*out, block]


def console_commands(code: str) -> str:
    """A ``console`` block's commands: lines after a ``$ `` prompt (output lines are dropped)."""
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"


def prepare(setups: tuple[str, ...], request: pytest.FixtureRequest, cwd: Path) -> dict[str, str]:
    """Lay out ``setups`` in ``cwd``; returns the environment variables they add."""
    env: dict[str, str] = {}
    if "sample-data" in setups:
        for f in request.getfixturevalue("readme_sample_dir").iterdir():
            shutil.copy(f, cwd / f.name)
    if "index" in setups:
        shutil.copytree(request.getfixturevalue("readme_sample_index"), cwd / "index")
        env["INDEX_URI"] = (cwd / "index").as_uri()
    if "local-stack" in setups:
        env.update(request.getfixturevalue("readme_stack"))
    return env
