"""Dictionaries: code lookups (binary search, hash join, appended tail) and the file format."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from squash.dictionaries import Dictionary, from_bytes, sorted_unique, to_bytes
from squash.errors import IndexFormatError


@pytest.mark.parametrize("many", [False, True], ids=["bisect", "hash"])
def test_codes_of_strings(many):
    words = sorted_unique(pa.array([f"w{i:05d}" for i in range(3000)] + ["é", "a", None]))
    d = Dictionary(words)
    probes = ["w00007", "é", "a", "nope", "w02999"] * (20 if many else 1)
    want = [words.to_pylist().index(p) if p in words.to_pylist() else -1 for p in probes]
    assert d.codes_of(probes).tolist() == want
    assert d.decode(np.array([c for c in want if c >= 0])) == [p for p in probes if p != "nope"]


def test_appended_values_round_trip_and_resolve():
    """A write appends new values after the sorted ones; codes of both resolve, through the file."""
    d = Dictionary(pa.array(["b", "d", "f", "a", "z"]), sorted_count=3)
    for got in (d, from_bytes(to_bytes({"c": d}))["c"]):
        assert got.sorted == 3
        assert got.codes_of(["a", "b", "z", "f", "q"]).tolist() == [3, 0, 4, 2, -1]
    nums = Dictionary(pa.array([1, 5, 9, 2]), sorted_count=3)
    assert from_bytes(to_bytes({"n": nums}))["n"].codes_of([2, 9, 4]).tolist() == [3, 2, -1]


def test_malformed_sorted_count_is_corrupt():
    bad = Dictionary(pa.array(["a"]))
    bad.sorted = 7
    with pytest.raises(IndexFormatError, match="malformed sorted count"):
        from_bytes(to_bytes({"c": bad}))
