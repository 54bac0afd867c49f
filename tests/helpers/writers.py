"""Helpers for write tests: writers started together on threads, and a storage whose
``write`` dies at the n-th file."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def run_together(write: Callable[[Any], Any], groups: list, timeout: float = 120) -> list:
    """``write(group)`` for every group, on threads released at once; their results (every
    write must succeed: an exception fails the test)."""
    results, errors = [], []
    start = threading.Barrier(len(groups))

    def run(group):
        start.wait()
        try:
            results.append(write(group))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    return results


@contextlib.contextmanager
def crash_at_write(storage: Any, crash_at: int, why: str = "killed mid-write") -> Iterator[None]:
    """Within the block, the ``crash_at``-th file ``storage`` writes (0-based) raises OSError
    instead, as a process killed between uploads would leave things."""
    real_write = type(storage).write
    calls = [0]

    def write(self, key, data):
        if calls[0] == crash_at:
            raise OSError(why)
        calls[0] += 1
        return real_write(self, key, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(storage), "write", write)
        yield
