"""``squash --version``; ``--help`` in plain text, with each option's default."""

import re

import pytest

from squash import __version__
from squash.cli import main, parser

COMMANDS = ["build", "query", "search", "calibrate", "upsert", "delete", "compact", "gc", "info"]


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"squash {__version__}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_text(capsys, command):
    text = _help(capsys, *([command] if command else []))
    assert "``" not in text and not re.search(r":(class|func|mod|meth|attr):", text)
    assert "(default: None)" not in text and "(default: False)" not in text


def test_top_level_help_says_what_an_index_uri_is(capsys):
    text = _help(capsys)
    assert "./idx" in text and "s3://bucket/prefix" in text and "query (search)" in text


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("build", ["(default: 6.0)", "(default: l2)", "(default: 500)"]),
        ("query", ["(default: 10)", "(default: 0.95)", "(default: auto)", "(default: 0)", "(default: 4)"]),
        ("gc", ["(default: 1h)"]),
    ],
)
def test_help_shows_defaults(capsys, command, shown):
    text = " ".join(_help(capsys, command).split())  # argparse wraps lines
    for piece in shown:
        assert piece in text, piece


def test_every_option_has_help():
    sub = next(a for a in parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"squash {name} {action.option_strings} has no help"
