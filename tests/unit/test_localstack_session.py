"""localstack/: boto3 sessions come from localstack-client, and ``make localstack-test`` fails fast.

No LocalStack runs here (it needs Docker), so a tiny stand-in on 127.0.0.1 answers the two
requests ``localstack/check.py`` makes: the health document and a HEAD of the index bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "localstack"))

import check  # noqa: E402
import ls_session  # noqa: E402

CLOSED = "http://127.0.0.1:9"  # the discard port: refused at once


class FakeEdge(BaseHTTPRequestHandler):
    """LocalStack's edge as check.py sees it: health, and bucket ``squash-index``."""

    def do_GET(self) -> None:
        if self.path == "/_localstack/health":
            body = json.dumps({"services": {"s3": "running"}, "edition": "community", "version": "4.0"})
            self._answer(200, body.encode())
        else:
            self._answer(404, b"")

    def do_HEAD(self) -> None:
        self._answer(200 if self.path.strip("/") == "squash-index" else 404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def edge() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEdge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ("AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "LOCALSTACK_URL", "USE_SSL"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_explicit_endpoint_reaches_every_client(clean_env) -> None:
    s = ls_session.session("http://127.0.0.1:4599/", region="eu-west-1")
    for service in ("cloudformation", "s3", "lambda"):
        client = s.client(service)
        assert client.meta.endpoint_url == "http://127.0.0.1:4599"
        assert client.meta.region_name == "eu-west-1"
    assert s.client("s3")._request_signer._credentials.access_key == "test"
    assert "AWS_ENDPOINT_URL" not in os.environ  # the session left no trace


def test_default_endpoint_follows_localstack_conventions(clean_env) -> None:
    assert ls_session.endpoint_url() == "http://localhost:4566"
    clean_env.setenv("LOCALSTACK_HOST", "127.0.0.1:4510")
    assert ls_session.session().client("cloudformation").meta.endpoint_url == "http://127.0.0.1:4510"
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4520")
    assert ls_session.endpoint_url() == "http://127.0.0.1:4520"


def test_bad_endpoint_is_refused(clean_env) -> None:
    with pytest.raises(ValueError, match="not an http"):
        ls_session.endpoint_url("localhost:4566")


def test_check_fails_fast_without_localstack(clean_env, tmp_path: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "localstack" / "check.py"), "--endpoint", CLOSED],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert f"no LocalStack is reachable at {CLOSED}" in proc.stderr
    assert time.monotonic() - start < 10


def test_check_against_a_running_edge(clean_env, edge: str, tmp_path: Path) -> None:
    assert check.check(edge, None) is None
    missing = tmp_path / "localstack-endpoints.json"
    assert "run make localstack-up" in check.check(edge, missing)
    missing.write_text(json.dumps({"bucket": "squash-index"}))
    assert check.check(edge, missing) is None
    missing.write_text(json.dumps({"bucket": "other"}))
    assert "does not answer" in check.check(edge, missing)
    clean_env.setenv("LOCALSTACK_HOST", edge.removeprefix("http://"))
    assert check.check(None, None) is None  # found through localstack-client's convention
