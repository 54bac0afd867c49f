"""Progress reporting hook: the core reports steps, the CLI decides how to show them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """``with progress.step("name", total) as advance: advance(1)``."""

    def step(self, name: str, total: int): ...


class NoProgress:
    """Default: report nothing (library use, Lambda)."""

    @contextmanager
    def step(self, name: str, total: int) -> Iterator:
        yield lambda n=1: None


class TqdmProgress:
    """One tqdm bar per step, on stderr when it is a terminal (``disable=None``: a log file
    or CI output gets no bar redrawn into it); falls back to plain lines without tqdm."""

    @contextmanager
    def step(self, name: str, total: int) -> Iterator:
        try:
            from tqdm import tqdm
        except ImportError:  # the cli extra is optional
            import sys

            print(f"{name} ...", file=sys.stderr, flush=True)
            yield lambda n=1: None
            return
        bar = tqdm(
            total=total, desc=f"{name:<20}", leave=True, dynamic_ncols=True, mininterval=1.0, disable=None
        )
        try:
            yield bar.update
        finally:
            bar.close()
