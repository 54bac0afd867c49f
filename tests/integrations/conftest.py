"""A local stack (IAM auth, writes on) shared by the framework stores' HTTP tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

STACK = Path(__file__).resolve().parents[2] / "infra" / "local" / "stack.py"


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[dict]:
    """Endpoints of a b=2, l=1 local stack; S3 env pointed at it while it runs."""
    folder = tmp_path_factory.mktemp("stores-stack")
    up = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", "2", "--depth", "1"]
    subprocess.run(up, check=True, timeout=120, capture_output=True)
    endpoints = json.loads((folder / "endpoints.json").read_text())
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL_S3", endpoints["s3_endpoint"])
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        mp.setenv(key, value)
    mp.setenv("AWS_DEFAULT_REGION", endpoints["region"])
    try:
        yield endpoints
    finally:
        mp.undo()
        subprocess.run([sys.executable, str(STACK), "down", "--dir", str(folder)], check=True, timeout=60)
