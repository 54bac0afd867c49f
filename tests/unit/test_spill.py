"""The build's partition spill: rows come back per partition, in row order, byte-exact;
a full disk is an InputError naming --scratch, not a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from squash.errors import InputError
from squash.spill import PartitionSpill


def test_rows_come_back_per_partition_in_row_order(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 7)).astype(np.float32)
    parts = rng.integers(0, 9, 5000)
    spill = PartitionSpill(tmp_path, 9, 7, buffer_bytes=10_000)  # many flushes
    for start in range(0, 5000, 700):
        end = min(start + 700, 5000)
        spill.add(parts[start:end], np.arange(start, end), x[start:end])
    spill.flush()
    for p in range(9):
        rows, got = spill.read(p)
        want = np.flatnonzero(parts == p)
        np.testing.assert_array_equal(rows, want)
        assert got.tobytes() == x[want].tobytes()


def test_a_full_disk_names_the_scratch_folder(tmp_path, monkeypatch):
    spill = PartitionSpill(tmp_path, 2, 3)
    spill.add(np.array([0, 1]), np.arange(2), np.ones((2, 3), np.float32))

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(InputError, match=r"No space left on device.*scratch folder with room") as err:
        spill.flush()
    assert err.value.field == "scratch"
