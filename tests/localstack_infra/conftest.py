"""Fixtures for the local stack's own tests: toy handlers, a Lambda router, an HTTP API emulator.

Every server is started in its own session and its whole session is killed in a finalizer, so a
failing test leaves nothing behind; each finalizer asserts that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "infra" / "local"
sys.path.insert(0, str(LOCAL))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lstack_util

from procs import session_members, stop_session, wait_for_file  # noqa: E402
from rie_pool import LaunchError, find_rie  # noqa: E402

TOY_APP = textwrap.dedent(
    '''
    """Toy handlers: each action exercises one behaviour of the router or the HTTP API."""
    import base64
    import json
    import os
    import time

    COUNT = 0  # module level: survives between invocations of a warm process


    def handler(event, context):
        global COUNT
        COUNT += 1
        if isinstance(event, str):
            return len(event)
        action = event.get("action", "echo") if isinstance(event, dict) else "echo"
        if action == "sleep":
            time.sleep(event["seconds"])
        elif action == "raise":
            raise ValueError("boom")
        elif action == "exit":
            os._exit(3)
        elif action == "big":
            return "x" * event["size"]
        elif action == "env":
            return dict(os.environ)
        return {
            "pid": os.getpid(),
            "count": COUNT,
            "event": event,
            "request_id": context.aws_request_id,
            "function": context.function_name,
            "memory": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }


    def api_handler(event, context):
        path = event.get("rawPath", "/")
        if path == "/sleep":
            time.sleep(float(event["queryStringParameters"]["s"]))
        if path == "/status":
            return {
                "statusCode": 201,
                "headers": {"X-Reply": "yes", "Content-Type": "text/plain"},
                "cookies": ["a=1", "b=2"],
                "body": "created",
            }
        if path == "/plain":
            return {"hello": "world"}
        if path == "/string":
            return "just text"
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/bad":
            return {"statusCode": "abc"}
        if path == "/bytes":
            body = base64.b64encode(bytes([0, 1, 255])).decode()
            return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                    "body": body, "isBase64Encoded": True}
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    '''
)


@pytest.fixture(scope="session")
def rie() -> str:
    try:
        return find_rie(REPO)
    except LaunchError as exc:
        pytest.skip(f"{exc}")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    code = tmp_path_factory.mktemp("toy") / "code"
    code.mkdir()
    (code / "app.py").write_text(TOY_APP)
    return code


class Server:
    """A server script run in its own session; ``stop`` kills the session and checks it is empty."""

    def __init__(self, argv: list[str], port_file: Path, log_path: Path, timeout_s: float = 15.0):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=REPO
            )
        text = wait_for_file(port_file, timeout_s, lambda: self.popen.poll() is None)
        if text is None:
            self.stop()
            raise RuntimeError(f"{argv[1]} did not start: {log_path.read_text()[-2000:]}")
        self.url = f"http://127.0.0.1:{int(text)}"

    def stop(self) -> None:
        survivors = stop_session(self.popen.pid, grace_s=5.0)
        self.popen.wait(timeout=5)
        assert not survivors, f"processes left behind: {survivors}"
        assert not session_members(self.popen.pid)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def start_router(rie, toy_dir, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Factory: a Lambda router serving toy functions ``{name: (handler, timeout_s)}``."""
    servers: list[Server] = []

    def start(functions: dict[str, tuple[str, int]], *options: str) -> Server:
        work = tmp_path_factory.mktemp("router")
        specs = [
            {
                "name": name,
                "code_dir": str(toy_dir),
                "handler": handler,
                "env": {"TOY_SETTING": name},
                "timeout_s": timeout,
                "memory_mb": 256,
            }
            for name, (handler, timeout) in functions.items()
        ]
        (work / "functions.json").write_text(json.dumps(specs))
        argv = [sys.executable, str(LOCAL / "lambda_router.py"), "--functions", str(work / "functions.json")]
        argv += ["--port-file", str(work / "port"), "--rie", rie, "--log-dir", str(work / "logs")]
        argv += ["--tmp-dir", str(work / "tmp"), "--s3-endpoint", "http://127.0.0.1:9", *options]
        server = Server(argv, work / "port", work / "router.log")
        servers.append(server)
        return server

    try:
        yield start
    finally:
        _stop_all(servers)


@pytest.fixture(scope="module")
def start_api(tmp_path_factory) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(lambda_endpoint: str, function: str, *extra: str) -> Server:
        work = tmp_path_factory.mktemp("api")
        argv = [sys.executable, str(LOCAL / "http_api.py"), "--lambda-endpoint", lambda_endpoint]
        argv += ["--function", function, "--port-file", str(work / "port"), *extra]
        server = Server(argv, work / "port", work / "api.log")
        servers.append(server)
        return server

    try:
        yield start
    finally:
        _stop_all(servers)


def _stop_all(servers: list[Server]) -> None:
    """Stop every server even when one of them fails its own checks, then report."""
    errors = []
    for server in servers:
        try:
            server.stop()
        except AssertionError as exc:
            errors.append(exc)
    assert not errors, errors
