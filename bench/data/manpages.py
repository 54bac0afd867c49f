"""Paragraphs of the installed manual pages (documents) and page names / NAME lines (queries).

Pages are rendered with groff itself (``-man``, tbl, preconv) at a 3000-column line length,
so each paragraph comes out as one line and no hyphenation or wrapping has to be undone; a
hand-written roff stripper mangles pod2man and mdoc pages. About 20 ms per page on one core.
"""

from __future__ import annotations

import gzip
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
MIN_CHARS = 40
_YEAR = re.compile(r"\b(19[7-9]\d|20[0-4]\d)\b")
# gcloud's alpha and beta reference pages repeat its GA pages nearly word for word (16.6k of
# the 17.8k man1 pages on this machine are gcloud's): only the GA ones are kept.
_CHANNEL_COPIES = re.compile(r"^gcloud_(alpha|beta|preview)_")
_GROFF = ["groff", "-Tutf8", "-man", "-t", "-k", "-P-cbou", "-rLL=3000n", "-rHY=0"]
# Headings every page has: as "page: heading" queries they would say nothing about the page.
_COMMON_HEADINGS = {
    "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO", "AUTHOR", "AUTHORS", "BUGS",
    "EXIT STATUS", "RETURN VALUE", "ERRORS", "EXAMPLES", "EXAMPLE", "FILES", "ENVIRONMENT",
    "COPYRIGHT", "NOTES", "HISTORY", "STANDARDS", "LIBRARY", "ATTRIBUTES", "VERSIONS",
    "REPORTING BUGS", "CONFORMING TO", "LICENSE", "DIAGNOSTICS", "AVAILABILITY", "COLOPHON",
}  # fmt: skip


@dataclass
class Page:
    section: str  # "1", "3", ... (the man directory)
    page: str  # file name without section suffix and .gz
    year: int  # from .TH, 0 when the page gives none
    name_line: str  # the NAME paragraph, e.g. "tar - an archiving utility"
    headings: list[str]  # section and subsection titles, in order
    paragraphs: list[tuple[str, str]]  # (heading, text), NAME section excluded


def page_files(root: Path = MAN_ROOT) -> list[tuple[str, Path]]:
    """(section, path) of every page file under man1..man9, sorted; symlinks (aliases) and
    gcloud's alpha/beta copies are left out."""
    out = []
    for sec_dir in sorted(root.glob("man[1-9]")):
        section = sec_dir.name[3:]
        out += [
            (section, p)
            for p in sorted(sec_dir.iterdir())
            if p.is_file() and not p.is_symlink() and not _CHANNEL_COPIES.match(p.name)
        ]
    return out


def _read_source(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def _page_name(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.rsplit(".", 1)[0] if "." in name else name


def _th_year(source: bytes) -> int:
    """Year from the ``.TH name section date ...`` line (fields after the second), else 0."""
    for line in source.decode("utf-8", "replace").splitlines():
        if line.startswith(".TH"):
            try:
                fields = shlex.split(line)
            except ValueError:
                fields = line.split()
            m = _YEAR.search(" ".join(fields[3:]))
            return int(m.group(1)) if m else 0
    return 0


def _is_redirect(source: bytes) -> bool:
    """A ``.so other.1`` stub (an alias of another page)."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.startswith((b'.\\"', b"'\\\""))]
    return bool(lines) and lines[0].startswith(b".so ")


def parse_rendered(text: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """Split groff's tty output into (NAME line, headings, [(heading, paragraph)]).

    Blank lines separate paragraphs; a line at indent 0 is a section title and one at
    indent < 7 a subsection title (groff's man defaults), both taken out of the text.
    """
    lines = text.splitlines()
    # The page header and footer are the first and last non-blank lines.
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(nonblank) < 3:
        return "", [], []
    lines = lines[nonblank[0] + 1 : nonblank[-1]]
    heading, headings, name_line = "", [], ""
    paragraphs: list[tuple[str, str]] = []
    block: list[str] = []

    def flush() -> None:
        nonlocal name_line
        if not block:
            return
        para = " ".join(" ".join(block).split())
        block.clear()
        if heading == "NAME":
            name_line = name_line or para
        elif len(para) >= MIN_CHARS:
            paragraphs.append((heading, para))

    for line in lines:
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        indent = len(line) - len(line.lstrip())
        if indent < 7:
            flush()
            if indent == 0:
                heading = " ".join(stripped.split())
            headings.append(" ".join(stripped.split()))
            continue
        block.append(stripped)
    flush()
    return name_line, headings, paragraphs


def render(path: Path) -> str | None:
    source = _read_source(path)
    if _is_redirect(source):
        return None
    try:
        res = subprocess.run(
            _GROFF, input=source, capture_output=True, timeout=30, cwd=path.parent.parent, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    return res.stdout.decode("utf-8", "replace")


def iter_pages(root: Path = MAN_ROOT, log_every: int = 2000) -> Iterator[Page]:
    """Every renderable page, in sorted (section, file) order."""
    files = page_files(root)
    t0 = time.perf_counter()
    for i, (section, path) in enumerate(files):
        if log_every and i and i % log_every == 0:
            print(
                f"  manpages: rendered {i}/{len(files)} pages, {time.perf_counter() - t0:.0f} s", flush=True
            )
        try:
            text = render(path)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            print(f"  manpages: skip {path}: {exc}", file=sys.stderr)
            continue
        if not text:
            continue
        name_line, headings, paragraphs = parse_rendered(text)
        if paragraphs:
            year = _th_year(_read_source(path))
            yield Page(section, _page_name(path), year, name_line, headings, paragraphs)


def query_candidates(page: Page, common: set[str], max_titles: int = 3) -> list[tuple[str, str]]:
    """(kind, text) queries a person would type about this page: its name (gcloud's as the
    command, "gcloud compute ssh"), its NAME line and its section titles that are not
    ``common`` ("tar: Operation modifiers")."""
    name = page.page.replace("_", " ") if page.page.startswith("gcloud_") else page.page
    out = [("name", name)]
    if page.name_line:
        out.append(("name_line", page.name_line))
    titles = [
        h
        for h in dict.fromkeys(page.headings)
        if h.upper() not in _COMMON_HEADINGS and h not in common and 3 <= len(h) <= 60
    ]
    # Evenly spaced, at most ``max_titles``: cmake-variables(7) alone has ~1,000 titles.
    step = max(1, -(-len(titles) // max_titles))
    return out + [("heading", f"{name}: {h}") for h in titles[::step][:max_titles]]


def common_headings(pages: list[Page], max_pages: int = 20) -> set[str]:
    """Titles found on more than ``max_pages`` pages ("GCLOUD WIDE FLAGS"): not page-specific."""
    counts = Counter(h for p in pages for h in set(p.headings))
    return {h for h, c in counts.items() if c > max_pages}
