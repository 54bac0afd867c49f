"""Lambda execution environments as processes: one AWS Lambda RIE (+ awslambdaric runtime) each.

An RIE process serves one invocation at a time, like a Lambda execution environment, so each
function gets a pool: an idle live process is reused (warm start), otherwise a new one is started
(cold start) up to the function's concurrency; beyond it callers wait briefly, then are throttled.
The RIE's raw replies are translated into what the Lambda Invoke API returns on AWS (the RIE
sets no ``X-Amz-Function-Error`` header and reports timeouts as plain text).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fnspec import FunctionSpec
from procs import (
    LOOPBACK,
    children,
    connection_usable,
    free_port,
    owns_listener,
    pid_alive,
    port_open,
    proc_stat,
    signal_quietly,
)

PAYLOAD_LIMIT = 6_291_456  # synchronous request and response payloads, bytes
RIE_READY_TIMEOUT_S = 5.0
TIMEOUT_GRACE_S = 3.0  # the RIE enforces the function timeout; this is only our backstop
LOG_TAIL_BYTES = 4096
RIE_INVOKE_PATH = "/2015-03-31/functions/function/invocations"
_ERROR_KEYS = {"errorMessage", "errorType", "requestId", "stackTrace", "cause"}


class ThrottledError(Exception):
    """Every process of the function is busy and the concurrency cap is reached."""


class ProcessGoneError(OSError):
    """The RIE refused the connection: it died before this invocation reached it (safe to retry)."""


class LaunchError(Exception):
    """An RIE process could not be started (bad code dir, missing binary, port trouble)."""


def find_rie(repo: Path) -> str:
    """The RIE binary: ``$SQUASH_RIE``, else the one inside the aws-sam-cli wheel of .venv-tools."""
    override = os.environ.get("SQUASH_RIE")
    if override:
        return override
    arch = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    pattern = f"lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}"
    for venv in (Path(repo) / ".venv-tools", Path(repo) / ".venv"):
        found = sorted(glob.glob(str(venv / pattern)))
        if found:
            return found[-1]
    on_path = shutil.which("aws-lambda-rie")
    if on_path:
        return on_path
    raise LaunchError(
        f"aws-lambda-rie not found under {repo}/.venv-tools (run `make tools`) or set SQUASH_RIE"
    )


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def handler_error_type(body: bytes, request_id: str) -> str | None:
    """errorType when ``body`` is awslambdaric's error document for this request, else None.

    The RIE answers 200 for handler exceptions without any marker header; awslambdaric's error
    document is recognisable by its keys and by carrying this invocation's request id.
    """
    if not body.startswith(b'{"errorMessage"'):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not {"errorMessage", "errorType"} <= doc.keys() <= _ERROR_KEYS:
        return None
    if doc.get("requestId", request_id) not in (request_id, ""):
        return None
    return str(doc["errorType"])


@dataclass
class Outcome:
    """What the Invoke API returns for one invocation."""

    body: bytes
    error_type: str | None = None  # set => X-Amz-Function-Error: Unhandled
    log_tail: bytes | None = None


class RieProcess:
    """One RIE process (and the runtime it spawns on first invoke): a Lambda execution environment."""

    def __init__(self, spec: FunctionSpec, seq: int, popen: subprocess.Popen, port: int, log_path: Path):
        self.spec, self.seq, self.popen, self.port, self.log_path = spec, seq, popen, port, log_path
        self.started = time.time()
        self.last_used = time.monotonic()
        self.busy = False
        self.invocations = 0
        self.runtime_pid: int | None = None
        # One invocation at a time per process, so one kept-alive connection to its RIE: a
        # new TCP connection per invocation cost ~1-3 ms of the router's time on a loaded VM.
        self._conn: http.client.HTTPConnection | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def healthy(self) -> bool:
        """False once the RIE exited or its runtime died (the RIE would fail the next invoke)."""
        if self.popen.poll() is not None:
            return False
        stat = proc_stat(self.pid)  # a SIGKILLed Go program is a zombie before it can be reaped
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return self.runtime_pid is None or pid_alive(self.runtime_pid)

    def call(
        self, payload: bytes, request_id: str, client_context: str | None, timeout_s: float, tail: bool
    ) -> tuple[int, bytes, bytes | None]:
        """POST the payload to the RIE; (status, body, log tail if asked). Raises OSError/HTTPException."""
        offset = self.log_path.stat().st_size if tail else 0
        headers = {"Content-Type": "application/json", "X-Amzn-RequestId": request_id}
        if client_context:
            headers["X-Amz-Client-Context"] = client_context
        conn, self._conn = self._conn, None
        if conn is not None and not connection_usable(conn):
            conn.close()
            conn = None
        keep = False
        try:
            if conn is None:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout_s)
                try:
                    conn.connect()
                except ConnectionRefusedError as exc:
                    raise ProcessGoneError(f"{self.spec.name}: RIE {self.pid} is gone") from exc
            else:
                conn.sock.settimeout(timeout_s)
            conn.request("POST", RIE_INVOKE_PATH, body=payload, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            # after anything but a 200 the RIE resets itself: start afresh next time
            keep = resp.status == 200 and not resp.will_close
        finally:
            if keep:
                self._conn = conn
            elif conn is not None:
                conn.close()
        self._find_runtime()
        log_tail = None
        if tail:
            with open(self.log_path, "rb") as f:
                f.seek(max(offset, self.log_path.stat().st_size - LOG_TAIL_BYTES))
                log_tail = f.read(LOG_TAIL_BYTES)
        return resp.status, body, log_tail

    def _find_runtime(self) -> None:
        kids = children(self.pid)
        if kids:
            self.runtime_pid = kids[0]

    def stop(self) -> None:
        """Kill the RIE and its runtime's process group at once (Lambda gives no shutdown grace here)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        runtimes = set(children(self.pid))
        if self.runtime_pid is not None:
            runtimes.add(self.runtime_pid)
        session = os.getsid(0)
        for pid in runtimes:
            stat = proc_stat(pid)
            if stat is None or stat[3] != session:  # gone, or its PID already reused elsewhere
                continue
            if stat[2] == pid:  # the RIE makes its runtime a group leader: take its children too
                signal_quietly(pid, signal.SIGKILL, group=True)
            signal_quietly(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def info(self) -> dict:
        return {
            "pid": self.pid,
            "runtime_pid": self.runtime_pid,
            "busy": self.busy,
            "invocations": self.invocations,
            "started": self.started,
            "idle_s": None if self.busy else round(time.monotonic() - self.last_used, 3),
            "port": self.port,
            "log": str(self.log_path),
        }


@dataclass
class Launcher:
    """Starts RIE processes with a Lambda-like environment (not the router's own)."""

    rie: str
    python: str
    shared_dir: str
    log_dir: Path
    tmp_dir: Path
    region: str = "us-east-1"
    s3_endpoint: str | None = None
    lambda_endpoint: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: set[int] = set()  # ports handed out but not yet bound by their RIE

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        tmp = self.tmp_dir / spec.name
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "PYTHONPATH": f"{spec.code_dir}:{self.shared_dir}",  # /var/task + the /opt/python layer
            "PYTHONUNBUFFERED": "1",
            "LAMBDA_TASK_ROOT": spec.code_dir,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_endpoint,
        }
        if self.s3_endpoint:
            env["AWS_ENDPOINT_URL_S3"] = self.s3_endpoint
        env.update(spec.env)
        env.update(  # reserved on Lambda: the function's env cannot override these
            AWS_LAMBDA_FUNCTION_NAME=spec.name,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(spec.memory_mb),
            AWS_LAMBDA_FUNCTION_TIMEOUT=str(spec.timeout_s),
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        )
        return env

    def start(self, spec: FunctionSpec, seq: int) -> RieProcess:
        """Start an RIE and return once it accepts connections (the runtime itself starts lazily,
        inside the first invocation, so init time lands in the cold invocation as on Lambda)."""
        if not Path(spec.code_dir).is_dir():
            raise LaunchError(f"{spec.name}: code dir {spec.code_dir} does not exist")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.{seq}.log"
        env = self.environment(spec)
        for _ in range(3):  # a port picked as free can be taken before the RIE binds it: retry
            with self._lock:
                port = free_port(self._reserved)
                api_port = free_port(self._reserved | {port})
                self._reserved |= {port, api_port}
            argv = [
                self.rie,
                "--runtime-interface-emulator-address",
                f"{LOOPBACK}:{port}",
                "--runtime-api-address",
                f"{LOOPBACK}:{api_port}",
                self.python,
                "-m",
                "awslambdaric",
                spec.handler,
            ]
            try:
                with open(log_path, "ab") as log:
                    popen = subprocess.Popen(
                        argv, cwd=spec.code_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                    )
                ready = self._wait_ready(popen, port)
            except OSError as exc:
                raise LaunchError(f"{spec.name}: cannot start {self.rie}: {exc}") from exc
            finally:
                with self._lock:
                    self._reserved -= {port, api_port}
            if ready:
                return RieProcess(spec, seq, popen, port, log_path)
            with contextlib.suppress(OSError):
                popen.kill()
            popen.wait()
        raise LaunchError(f"{spec.name}: the RIE did not start; see {log_path}")

    @staticmethod
    def _wait_ready(popen: subprocess.Popen, port: int) -> bool:
        deadline = time.monotonic() + RIE_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                return False
            if port_open(port):
                return owns_listener(popen.pid, port)
            time.sleep(0.003)
        return False


class FunctionPool:
    """The execution environments of one function."""

    def __init__(self, spec: FunctionSpec, launcher: Launcher, concurrency: int, idle_s: float):
        self.spec, self.launcher = spec, launcher
        self.concurrency, self.idle_s = max(1, concurrency), idle_s
        self.cond = threading.Condition()
        self.procs: list[RieProcess] = []
        self.starting = 0
        self.seq = 0
        self.closed = False
        self.invocations = self.cold_starts = self.throttles = self.errors = 0

    def invoke(
        self,
        payload: bytes,
        request_id: str,
        client_context: str | None = None,
        wait_s: float = 3.0,
        tail: bool = False,
    ) -> Outcome:
        """Run one invocation on a warm process, or a new one; raises ThrottledError or LaunchError.

        A process that turns out to be dead before the invocation reached it (killed between the
        checkout and the connect) is replaced and the invocation retried: its handler never ran.
        """
        for attempt in range(3):
            proc = self._acquire(wait_s)
            keep = False
            try:
                outcome, keep = self._run(proc, payload, request_id, client_context, tail)
                break
            except ProcessGoneError:
                if attempt == 2:
                    msg = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
                    outcome = Outcome(error_body("Runtime.ExitError", msg), "Runtime.ExitError")
                    break
                with self.cond:
                    self.invocations -= 1  # counted again by the next checkout
            finally:
                self._checkin(proc, keep)
        if outcome.error_type:
            with self.cond:
                self.errors += 1
        return outcome

    def _acquire(self, wait_s: float) -> RieProcess:
        """A busy-marked process: an idle warm one, or a freshly started one (cold start)."""
        proc, seq = self._checkout(wait_s)
        if proc is not None:
            return proc
        try:
            proc = self.launcher.start(self.spec, seq)
        except BaseException:
            with self.cond:
                self.starting -= 1
                self.cond.notify()
            raise
        proc.busy = True
        with self.cond:
            self.starting -= 1
            self.cold_starts += 1
            self.procs.append(proc)
        return proc

    def _checkout(self, wait_s: float) -> tuple[RieProcess | None, int]:
        deadline = time.monotonic() + wait_s
        dead: list[RieProcess] = []
        try:
            with self.cond:
                while True:
                    if self.closed:
                        raise LaunchError(f"{self.spec.name}: the router is shutting down")
                    for p in [p for p in self.procs if not p.busy and not p.healthy()]:
                        self.procs.remove(p)
                        dead.append(p)
                    idle = [p for p in self.procs if not p.busy]
                    if idle:
                        proc = max(idle, key=lambda p: p.last_used)  # most recent: the rest can age out
                        proc.busy = True
                        self.invocations += 1
                        return proc, 0
                    if len(self.procs) + self.starting < self.concurrency:
                        self.starting += 1
                        self.seq += 1
                        self.invocations += 1
                        return None, self.seq
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.throttles += 1
                        raise ThrottledError(self.spec.name)
                    self.cond.wait(remaining)
        finally:
            for p in dead:
                p.stop()

    def _run(
        self, proc: RieProcess, payload: bytes, request_id: str, client_context: str | None, tail: bool
    ) -> tuple[Outcome, bool]:
        """(outcome, keep the process?)."""
        timeout = self.spec.timeout_s
        message = f"Task timed out after {timeout:.2f} seconds"
        timed_out = Outcome(error_body("Sandbox.Timedout", message), "Sandbox.Timedout")
        try:
            status, body, log_tail = proc.call(
                payload, request_id, client_context, timeout + TIMEOUT_GRACE_S, tail
            )
        except TimeoutError:
            return timed_out, False
        except ProcessGoneError:
            raise
        except (OSError, http.client.HTTPException):
            msg = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
            return Outcome(error_body("Runtime.ExitError", msg), "Runtime.ExitError"), False
        finally:
            proc.invocations += 1
        if status == 200 and body.startswith(b"Task timed out after "):
            timed_out.log_tail = log_tail
            return timed_out, False
        if status != 200:  # runtime exit, init error, oversized response: the RIE resets itself
            try:
                error_type = str(json.loads(body)["errorType"])
            except (ValueError, KeyError, TypeError):
                error_type = "Runtime.ExitError"
                body = error_body(error_type, body.decode("utf-8", "replace"))
            return Outcome(body, error_type, log_tail), False
        if len(body) > PAYLOAD_LIMIT:
            msg = (
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({PAYLOAD_LIMIT} bytes)."
            )
            error_type = "Function.ResponseSizeTooLarge"
            return Outcome(error_body(error_type, msg), error_type), True
        return Outcome(body, handler_error_type(body, request_id), log_tail), proc.healthy()

    def _checkin(self, proc: RieProcess, keep: bool) -> None:
        with self.cond:
            proc.last_used = time.monotonic()
            proc.busy = False
            if not keep and proc in self.procs:
                self.procs.remove(proc)
            self.cond.notify()
        if not keep:
            proc.stop()

    def reap(self) -> int:
        """Stop processes idle longer than ``idle_s`` or found dead; returns how many."""
        now = time.monotonic()
        with self.cond:
            gone = [
                p for p in self.procs if not p.busy and (now - p.last_used > self.idle_s or not p.healthy())
            ]
            for p in gone:
                self.procs.remove(p)
        for p in gone:
            p.stop()
        return len(gone)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            procs, self.procs = self.procs, []
            self.cond.notify_all()
        for p in procs:
            p.stop()

    def info(self) -> dict:
        with self.cond:
            return {
                "name": self.spec.name,
                "invocations": self.invocations,
                "cold_starts": self.cold_starts,
                "throttles": self.throttles,
                "errors": self.errors,
                "concurrency": self.concurrency,
                "timeout_s": self.spec.timeout_s,
                "memory_mb": self.spec.memory_mb,
                "processes": [p.info() for p in self.procs],
            }


def encode_log_tail(tail: bytes | None) -> str | None:
    return base64.b64encode(tail).decode() if tail is not None else None
