"""Process and port helpers shared by the local stack (Linux /proc based, stdlib only).

Every server of the stack runs in its own session, and the RIE processes plus their runtimes stay
in the Lambda router's session, so "everything the stack started" is exactly "every process
whose session id is one of the recorded PIDs". That is what `stack.py down` kills and verifies.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A currently free TCP port on loopback (the kernel picks it; ``avoid`` skips ours in flight)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError("no free port found on 127.0.0.1")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connection_usable(conn: http.client.HTTPConnection | None) -> bool:
    """Whether a kept-alive connection can carry another request: connected, and the peer has
    neither closed it nor sent anything unasked (an idle HTTP/1.1 socket is never readable)."""
    sock = getattr(conn, "sock", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def owns_listener(pid: int, port: int) -> bool:
    """True when ``pid`` holds the socket listening on ``port`` (not another process that won the
    race for a port we picked as free)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process from /proc, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie (reaping it when it is our child)."""
    stat = proc_stat(pid)
    if stat is None:
        return False
    if stat[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads: the RIE is a multi-threaded Go program)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session ``sid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if stat is not None and stat[3] == sid and stat[0] not in ("Z", "X"):
            out.append(pid)
    return out


def signal_quietly(pid: int, sig: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_session(sid: int, grace_s: float = 5.0) -> list[int]:
    """SIGTERM the session leader's group, wait, SIGKILL every straggler of the session.

    Returns the PIDs still alive afterwards (empty on success).
    """
    signal_quietly(sid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        pid_alive(sid)  # reaps it when it is our child
        if not session_members(sid):
            return []
        time.sleep(0.05)
    for pid in session_members(sid):
        signal_quietly(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        pid_alive(sid)
        left = session_members(sid)
        if not left:
            return []
        time.sleep(0.05)
    return session_members(sid)


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file (port files, PID files, endpoints.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for_file(path: Path, timeout_s: float, alive: Callable[[], bool] | None = None) -> str | None:
    """Contents of ``path`` once it exists, or None on timeout or when ``alive()`` turns False."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if alive is not None and not alive():
            return None
        time.sleep(0.02)
    return None
