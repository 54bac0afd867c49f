"""Schemathesis against the local stack: requests generated from the committed OpenAPI
document (functions/coordinator/openapi.json), sent over loopback HTTP through the emulator,
coordinator and worker tree. Every answer must be a non-5xx that the document describes
(status code, content type, body schema). Bounded in examples per operation and in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"
SPEC = REPO / "functions" / "coordinator" / "openapi.json"
INDEX = "fuzz"
EXAMPLES = 15  # per operation and generation mode; 6 operations
BUDGET_S = 45.0  # fuzzing stops (passing) once this is spent, stack start-up excluded

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

schema = schemathesis.openapi.from_path(str(SPEC))
# TRACE and QUERY never reach the function: API Gateway answers them itself, and the local
# emulator's http.server says 501. The other unexpected methods go through to our 404.
schema.config.phases.coverage.unexpected_methods -= {"trace", "query"}
SEEN: dict[int, int] = {}  # status -> count, over the whole run
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> dict:
    """A b=2, l=1 local stack with a small index "fuzz" (d=8) in its bucket."""
    from squash.build import BuildOptions, build_index
    from squash.datasets import synthetic_mixture

    folder = tmp_path_factory.mktemp("fuzz-stack")
    cmd = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", "2", "--depth", "1"]
    # unsigned: the fuzz checks the function against its document (SigV4 is API Gateway's
    # part, tested in test_http_api_emulator.py and test_serverless.py)
    cmd += ["--auth", "none", "--local-max-mb", "0"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    endpoints = json.loads((folder / "endpoints.json").read_text())
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL_S3", endpoints["s3_endpoint"])
    mp.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
    mp.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    mp.setenv("AWS_DEFAULT_REGION", endpoints.get("region", "us-east-1"))
    try:
        ds = synthetic_mixture(n=600, d=8, n_queries=4, clusters=4, seed=1)
        uri = f"s3://{endpoints['bucket']}/indexes/{INDEX}"
        build_index(ds.base, uri, ds.attributes, BuildOptions(partitions=4, seed=1))
        assert endpoints["api_url"].startswith("http://127.0.0.1:")  # loopback only
        yield endpoints | {"started": time.monotonic()}
    finally:
        mp.undo()
        subprocess.run([sys.executable, str(STACK), "down", "--dir", str(folder)], check=True, timeout=60)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its request
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_answers_as_documented(case, api):
    if time.monotonic() - api["started"] > BUDGET_S:
        return  # the time bound: the remaining examples of this run are skipped
    if "index" in (case.path_parameters or {}) and len(str(case.path_parameters["index"])) % 3:
        case.path_parameters["index"] = INDEX  # mostly the real index, sometimes whatever was drawn
    response = case.call_and_validate(base_url=api["api_url"], checks=CHECKS, timeout=30)
    SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1


def test_the_fuzz_reached_the_search(api):
    """Runs after the fuzz (file order): it sent requests, some answered 200 and some 400."""
    assert sum(SEEN.values()) >= 50 and SEEN.get(200) and SEEN.get(400), SEEN
    print(f"schemathesis: {sum(SEEN.values())} requests, statuses {dict(sorted(SEEN.items()))}")
