"""Docstring paragraphs of the standard library and an installed venv (documents) and the
qualified names / signatures they document (queries).

Sources are read with ``ast`` and never imported: importing thousands of modules runs their
side effects and is slow; the syntax tree has every docstring and signature we need.
"""

from __future__ import annotations

import ast
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_CHARS = 40
MAX_SIGNATURE = 160  # longer signatures become plain qualified names as queries
_SKIP_DIRS = {"test", "tests", "testing", "idle_test", "__pycache__", "site-packages", "dist-packages"}
_PARA_SPLIT = re.compile(r"\n\s*\n")


@dataclass
class Paragraph:
    package: str  # top-level package or module ("json", "numpy")
    origin: str  # "stdlib" or "site-packages"
    kind: str  # module, class, function, method
    qualname: str  # e.g. "collections.OrderedDict.move_to_end"
    lineno: int  # line of the documented definition (of the docstring for a module)
    position: int  # paragraph index within its docstring
    text: str


@dataclass
class Definition:
    """A documented public class, function or method: where the queries come from."""

    kind: str
    qualname: str
    signature: str | None


def default_roots(venv: Path) -> list[tuple[str, Path]]:
    """(origin, directory): this interpreter's standard library and ``venv``'s site-packages."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = sorted(venv.glob("lib/python3*/site-packages"))
    return [("stdlib", stdlib), *(("site-packages", s) for s in site[:1])]


def source_files(root: Path) -> list[Path]:
    """Every .py file under ``root`` outside test folders and nested site-packages, sorted."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).parts
        names = path.relative_to(root).with_suffix("").parts
        if any(part in _SKIP_DIRS for part in rel[:-1]) or not all(p.isidentifier() for p in names):
            continue
        out.append(path)
    return sorted(out)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _paragraphs(doc: str) -> list[str]:
    paras = (" ".join(p.split()) for p in _PARA_SPLIT.split(doc))
    return [p for p in paras if len(p) >= MIN_CHARS]


def _public(qualname: str) -> bool:
    return not any(part.startswith("_") for part in qualname.split("."))


def _signature(qualname: str, node: ast.AST) -> str | None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        sig = f"{qualname}({ast.unparse(node.args)})"
        return sig if len(sig) <= MAX_SIGNATURE else None
    return None


def parse_file(origin: str, root: Path, path: Path) -> tuple[list[Paragraph], list[Definition]] | None:
    """Docstring paragraphs and documented public definitions of one file (None if unparsable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old sources
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, RecursionError, OSError):
        return None
    module = module_name(root, path)
    package = module.split(".")[0]
    paragraphs: list[Paragraph] = []
    definitions: list[Definition] = []

    def add(kind: str, qualname: str, lineno: int, doc: str | None, node: ast.AST) -> None:
        paras = _paragraphs(doc) if doc else []
        for i, text in enumerate(paras):
            paragraphs.append(Paragraph(package, origin, kind, qualname, lineno, i, text))
        if paras and kind != "module" and _public(qualname):
            definitions.append(Definition(kind, qualname, _signature(qualname, node)))

    doc = ast.get_docstring(tree, clean=True)
    if doc:
        add("module", module, tree.body[0].lineno, doc, tree)

    def walk(body: list[ast.stmt], prefix: str, in_class: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                qual = f"{prefix}.{node.name}"
                add("class", qual, node.lineno, ast.get_docstring(node, clean=True), node)
                walk(node.body, qual, True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = f"{prefix}.{node.name}"
                kind = "method" if in_class else "function"
                add(kind, qual, node.lineno, ast.get_docstring(node, clean=True), node)
                walk(node.body, qual, False)

    walk(tree.body, module, False)
    return paragraphs, definitions


def iter_files(
    roots: list[tuple[str, Path]], log_every: int = 2000
) -> Iterator[tuple[list[Paragraph], list[Definition]]]:
    """Parsed files of every root, in sorted order."""
    files = [(origin, root, p) for origin, root in roots for p in source_files(root)]
    t0 = time.perf_counter()
    for i, (origin, root, path) in enumerate(files):
        if log_every and i and i % log_every == 0:
            print(
                f"  docstrings: parsed {i}/{len(files)} files, {time.perf_counter() - t0:.0f} s", flush=True
            )
        parsed = parse_file(origin, root, path)
        if parsed is None:
            print(f"  docstrings: skip unparsable {path}", file=sys.stderr)
            continue
        yield parsed
