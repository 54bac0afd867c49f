"""JSON text from users (request bodies, ``--filter``), parsed so that bad text is an
:class:`~squash.errors.InputError` naming the problem — never a ``ValueError``,
``UnicodeDecodeError`` or ``RecursionError`` further down.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import InputError

#: Deepest nesting of arrays and objects accepted in user JSON. Python's json module
#: recurses once per level, so depth is checked on the text before it is parsed.
MAX_JSON_DEPTH = 128
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string (may hold brackets)
_OPEN = np.array([ord("["), ord("{")], dtype=np.uint8)
_CLOSE = np.array([ord("]"), ord("}")], dtype=np.uint8)


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of JSON text, outside strings, without recursion.

    Vectorised (a regex blanks the strings, numpy counts brackets), so a 6 MB body costs
    milliseconds. For invalid JSON the figure may be off, and parsing reports the error.
    """
    raw = np.frombuffer(_STRING.sub('""', text).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    opens, closes = np.isin(raw, _OPEN), np.isin(raw, _CLOSE)
    steps = opens[opens | closes]
    if not steps.size:
        return 0
    return int(np.cumsum(np.where(steps, 1, -1), dtype=np.int64).max())


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: a key given twice is an error, not "the last one wins"."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return out


def loads(text: str | bytes, what: str, *, field: str, error: type[InputError] = InputError) -> Any:
    """Parse ``text`` (bytes must be UTF-8); errors are ``error(message, field=field)``.

    Rejected: bytes that are not UTF-8, nesting deeper than MAX_JSON_DEPTH, an object
    holding the same key twice, and anything :func:`json.loads` rejects.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} is not UTF-8 text (byte {exc.start} is {text[exc.start : exc.start + 1]!r}); "
                "send JSON encoded as UTF-8",
                field=field,
            ) from exc
    # No text can nest deeper than it has opening brackets (those inside strings included):
    # counting them is a memchr-speed scan, while nesting_depth's regex pass over a 4 MB
    # packed-array body took ~55 ms. Only bodies with many brackets pay for the exact depth.
    few = text.count("[") + text.count("{") <= MAX_JSON_DEPTH
    depth = 0 if few else nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(
            f"{what} is nested deeper than {MAX_JSON_DEPTH} levels of arrays/objects ({depth})",
            field=field,
        )
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise error(f"{what} has the key {exc.key!r} twice in one object", field=field) from exc
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}", field=field) from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise error(f"{what} is not valid JSON ({exc})", field=field) from exc
