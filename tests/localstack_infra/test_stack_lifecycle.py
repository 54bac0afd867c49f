"""`stack.py up` / `status` / `down`: ports, files, loopback only, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from lstack_util import wait_until
from procs import pid_alive, session_members, stop_session

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STACK), *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


@pytest.fixture
def stack_dir(rie, tmp_path):
    """A stack folder; whatever was started in it is killed afterwards, even when a test failed."""
    root = tmp_path / "stack"
    seen: set[int] = set()

    def remember() -> None:
        for pid_file in (root / "pids").glob("*.pid"):
            seen.add(int(pid_file.read_text()))

    yield root, remember
    remember()
    run("down", "--dir", str(root))
    leftovers = {sid: stop_session(sid) for sid in seen if session_members(sid)}
    assert not leftovers, f"left behind: {leftovers}"


def listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state owned by ``pids``."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                out.add(fields[1].split(":")[0])
    return out


def get(url: str) -> tuple[int, bytes]:
    """GET, SigV4-signed with the stack's local key (its HTTP API runs with IAM auth)."""
    from signed import sign

    headers = sign("GET", url, None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_up_status_down_leaves_nothing(stack_dir):
    root, remember = stack_dir
    up = run("up", "--dir", str(root), "--branching", "2", "--depth", "1", "--bucket", "lifecycle")
    remember()
    assert up.returncode == 0, up.stderr + up.stdout
    e = json.loads((root / "endpoints.json").read_text())
    assert f"export AWS_ENDPOINT_URL_S3={e['s3_endpoint']}" in up.stdout
    assert e["functions"] == ["squash-coordinator", "squash-worker-0", "squash-worker-1", "squash-worker-2"]
    assert (e["bucket"], e["branching"], e["depth"], e["region"]) == ("lifecycle", 2, 1, "us-east-1")
    urls = [e["api_url"], e["lambda_endpoint"], e["s3_endpoint"]]
    assert all(u.startswith("http://127.0.0.1:") for u in urls) and len(set(urls)) == 3

    s3 = boto3.client(
        "s3", endpoint_url=e["s3_endpoint"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.head_bucket(Bucket="lifecycle")
    spec = json.loads((root / "functions.json").read_text())[1]
    assert spec["env"]["SQUASH_TREE_BRANCHING"] == "2" and spec["memory_mb"] == 2048

    get(e["api_url"] + "/health")  # starts a coordinator process (whatever the handler answers)
    pids = list(e["pids"].values())
    members = [p for sid in pids for p in session_members(sid)]
    assert len(members) >= 3
    assert listening_addresses(members) == {"0100007F"}  # 127.0.0.1 only

    again = run("up", "--dir", str(root), "--branching", "2", "--depth", "1", "--bucket", "lifecycle")
    assert again.returncode == 0 and "already up" in again.stdout
    assert json.loads((root / "endpoints.json").read_text())["pids"] == e["pids"]
    status = run("status", "--dir", str(root))
    assert status.returncode == 0 and "squash-worker-2" in status.stdout

    down = run("down", "--dir", str(root))
    assert down.returncode == 0, down.stderr
    assert not [p for p in members if pid_alive(p)]
    assert not [sid for sid in pids if session_members(sid)]
    assert not list((root / "pids").glob("*.pid")) and not (root / "endpoints.json").exists()
    assert (root / "logs" / "lambda.log").exists() and (root / "logs" / "s3.log").exists()
    assert run("down", "--dir", str(root)).returncode == 0  # idempotent
    assert run("status", "--dir", str(root)).returncode == 1


def test_reshape_restarts_and_down_survives_a_killed_router(stack_dir):
    root, remember = stack_dir
    assert run("up", "--dir", str(root), "--branching", "1", "--depth", "0").returncode == 0
    remember()
    first = json.loads((root / "endpoints.json").read_text())
    reshaped = run("up", "--dir", str(root), "--branching", "2", "--depth", "0")
    remember()
    assert reshaped.returncode == 0 and "restarting" in reshaped.stdout
    second = json.loads((root / "endpoints.json").read_text())
    assert not [p for p in first["pids"].values() if pid_alive(p)]
    assert second["functions"] == ["squash-coordinator", "squash-worker-0"]

    get(second["api_url"] + "/health")
    router = second["pids"]["lambda"]
    os.kill(router, signal.SIGKILL)  # its RIE processes are orphaned, but stay in its session
    assert wait_until(lambda: not pid_alive(router))
    assert run("down", "--dir", str(root)).returncode == 0
    assert not [sid for sid in second["pids"].values() if session_members(sid)]


def test_missing_rie_is_a_clear_error(stack_dir):
    root, _ = stack_dir
    env = {**os.environ, "SQUASH_RIE": "/nonexistent/aws-lambda-rie"}
    out = subprocess.run(
        [sys.executable, str(STACK), "up", "--dir", str(root)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 1 and "/nonexistent/aws-lambda-rie" in out.stderr
    assert not list((root / "pids").glob("*.pid"))  # nothing was started


def test_a_component_that_fails_to_start_stops_the_others(stack_dir, monkeypatch):
    import stack

    root, remember = stack_dir
    real_spawn = stack._spawn
    started: list[int] = []

    def spawn(where, name, argv):
        if name == "api":
            argv = [sys.executable, "-c", "import sys; sys.exit('api boom')"]
        popen = real_spawn(where, name, argv)
        started.append(popen.pid)
        remember()
        return popen

    monkeypatch.setattr(stack, "_spawn", spawn)
    with pytest.raises(stack.StackError) as err:
        stack.up(root, branching=1, depth=0, say=lambda _msg: None)
    assert "api did not start" in str(err.value) and str(root / "logs" / "api.log") in str(err.value)
    assert "api boom" in str(err.value)
    assert len(started) == 3 and not [sid for sid in started if session_members(sid)]
    assert not list((root / "pids").glob("*.pid"))
