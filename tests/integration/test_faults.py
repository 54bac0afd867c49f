"""Fault injection on the local stack (a smaller `make bench` faults run: bench/faults.py).

One stack (b=2, l=1, concurrency cap 2, function timeout 10 s), each fault injected once:
worker killed mid-request, worker stalled (SIGSTOP), throttled bursts, segment and router
missing/corrupt, S3 frozen (SIGSTOP of moto), manifest replaced under running queries,
coordinator killed. Every answer is right (the in-process answer) or an explicit error, in
time; never a wrong answer, never a hang or a bare 503. About a minute and a half.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import faults

TIMEOUT_S = 10


@pytest.fixture(scope="module")
def report():
    return faults.run_suite(runs=1, timeout_s=TIMEOUT_S, say=lambda _line: None)["faults"]


def test_every_fault_was_run(report):
    assert set(report) == set(faults.FAULTS)


@pytest.mark.parametrize("fault", faults.FAULTS)
def test_no_wrong_answer_and_no_hang(report, fault):
    r = report[fault]
    assert r["wrong"] == 0 and r["no_answer"] == 0, r
    assert r["answers"] == sum(r[kind] for kind in faults.KINDS), r
    assert r["max_s"] < TIMEOUT_S, r  # inside the function timeout (and API Gateway's 30 s)


def test_stalled_worker_and_frozen_s3_are_504s_not_hangs(report):
    assert report["worker_stalled"]["statuses"] == {"504 deadline_exceeded": 1}, report["worker_stalled"]
    frozen = report["s3_frozen"]["statuses"]  # run 0: cold workers, manifest check due
    assert set(frozen) <= {"504 deadline_exceeded", "503 storage_error"}, frozen


def test_damaged_files_are_explicit_errors(report):
    for fault in ("segment_missing", "segment_corrupt", "router_missing", "router_corrupt"):
        r = report[fault]
        assert r["explicit"] == r["answers"], (fault, r)
    assert set(report["router_corrupt"]["statuses"]) == {"500 index_corrupt"}, report["router_corrupt"]


def test_recoverable_faults_answer_right(report):
    assert report["worker_killed"]["right"] == report["worker_killed"]["answers"], report["worker_killed"]
    swapped = report["manifest_replaced"]
    assert swapped["right"] == swapped["answers"], swapped  # each answer is one build's, never a mix
    assert report["coordinator_killed"]["right"] >= 1  # the client's retry after the crash
    assert report["throttled"]["right"] >= 1
