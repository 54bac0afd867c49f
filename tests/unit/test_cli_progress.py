"""Progress bars are for terminals: logs (stderr not a TTY) get none."""

import io
import sys

import pytest

from squash.progress import TqdmProgress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draw(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    with TqdmProgress().step("quantize partitions", 3) as advance:
        advance(3)
    return stream.getvalue()


def test_no_bar_when_stderr_is_not_a_tty(monkeypatch):
    assert _draw(monkeypatch, io.StringIO()) == ""


def test_bar_on_a_terminal(monkeypatch):
    assert "quantize partitions" in _draw(monkeypatch, _Tty())
