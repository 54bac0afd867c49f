"""JSON text from users (request bodies, ``--filter``), parsed so that bad text is an
:class:`~squash.errors.InputError` naming the problem — never a ``ValueError``,
``UnicodeDecodeError`` or ``RecursionError`` further down.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InputError


def loads(text: str | bytes, what: str, *, field: str, error: type[InputError] = InputError) -> Any:
    """Parse ``text`` (bytes must be UTF-8); errors are ``error(message, field=field)``."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} is not UTF-8 text (byte {exc.start} is {text[exc.start : exc.start + 1]!r}); "
                "send JSON encoded as UTF-8",
                field=field,
            ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}", field=field) from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise error(f"{what} is not valid JSON ({exc})", field=field) from exc
