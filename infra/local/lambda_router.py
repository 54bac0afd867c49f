"""The local Lambda service: the Invoke API on 127.0.0.1, each function run by AWS's RIE.

``boto3.client("lambda", endpoint_url=...)`` talks to it exactly as to AWS:
``POST /2015-03-31/functions/{name|arn}[:qualifier]/invocations``. Admin endpoints for tests and
the demo: ``GET /_local/functions`` (per-function counters and processes), ``GET /_local/health``.

Run: ``python infra/local/lambda_router.py --functions functions.json --port-file PATH ...``
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from fnspec import FunctionSpec, load
from procs import LOOPBACK, write_atomic
from rie_pool import (
    PAYLOAD_LIMIT,
    FunctionPool,
    Launcher,
    LaunchError,
    ThrottledError,
    encode_log_tail,
    find_rie,
)
from serving import LocalHandler, log

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "000000000000"
ASYNC_PAYLOAD_LIMIT = 1_048_576  # Event invocations (1 MB since 2025; 256 KB before)
ASYNC_WAIT_S = 600.0  # queued Event invocations wait this long for a free process
_INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
UNMARSHAL_ERROR = "Runtime.UnmarshalError"  # awslambdaric's errorType for an event it cannot parse
_DISCARD_LIMIT = 64 * 1024 * 1024  # oversized bodies up to this are drained, larger ones drop the connection


def parse_function_name(raw: str) -> str:
    """Function name from a name, ``name:qualifier``, ``account:name`` or a function ARN.

    There are no versions or aliases locally: every qualifier runs ``$LATEST``.
    """
    raw = unquote(raw)
    parts = raw.split(":")
    if raw.startswith("arn:") and len(parts) >= 7 and parts[5] == "function":
        return parts[6]
    if len(parts) == 3:  # account:name:qualifier
        return parts[1]
    if len(parts) == 2:
        return parts[1] if parts[0].isdigit() and len(parts[0]) == 12 else parts[0]
    return raw


class Router:
    """Function pools plus an idle reaper."""

    def __init__(
        self,
        specs: list[FunctionSpec],
        launcher: Launcher,
        concurrency: int = 4,
        idle_s: float = 300.0,
        throttle_wait_s: float = 3.0,
    ):
        self.launcher = launcher
        self.region = launcher.region
        self.throttle_wait_s = throttle_wait_s
        self.pools = {s.name: FunctionPool(s, launcher, concurrency, idle_s) for s in specs}
        self.started = time.time()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, args=(idle_s,), daemon=True)
        self._reaper.start()

    def _reap_loop(self, idle_s: float) -> None:
        period = max(0.2, min(5.0, idle_s / 4))
        while not self._stop.wait(period):
            for pool in self.pools.values():
                n = pool.reap()
                if n:
                    log(f"reaped {n} idle process(es) of {pool.spec.name}")

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"

    def info(self) -> dict:
        return {name: pool.info() for name, pool in self.pools.items()}

    def close(self) -> None:
        self._stop.set()
        for pool in self.pools.values():
            pool.close()


class InvokeHandler(LocalHandler):
    server: RouterServer

    # -- responses ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body or status != 204:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str, **extra: str) -> None:
        kind = "Service" if status >= 500 else "User"
        body = json.dumps({"Type": kind, "message": message, **extra}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())})

    def _json(self, doc: object) -> None:
        self._send(200, json.dumps(doc, indent=1).encode())

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server names)
        path = urlsplit(self.path).path
        router = self.server.router
        if path == "/_local/health":
            self._json({"status": "ok", "functions": len(router.pools), "started": router.started})
        elif path == "/_local/functions":
            self._json(router.info())
        else:
            self._error(404, "UnknownOperationException", f"Unknown operation GET {path}")

    def do_POST(self) -> None:  # noqa: N802 (http.server names)
        url = urlsplit(self.path)
        match = _INVOKE.match(url.path)
        if not match:
            self._drain()
            self._error(404, "UnknownOperationException", f"Unknown operation POST {url.path}")
            return
        router = self.server.router
        name = parse_function_name(match.group(1))
        pool = router.pools.get(name)
        if pool is None:
            self._drain()
            self._error(404, "ResourceNotFoundException", f"Function not found: {router.arn(name)}")
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            self._drain()
            self._error(400, "InvalidParameterValueException", f"Invalid invocation type {invocation_type}")
            return
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else PAYLOAD_LIMIT
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:  # AWS's error code; botocore has no class for it (it models RequestTooLarge...)
            self._drain()
            message = (
                f"{length} byte payload is too large for the Event invocation type (limit {limit} bytes)"
                if invocation_type == "Event"
                else f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )
            self._error(413, "RequestEntityTooLargeException", message)
            return
        payload = self.rfile.read(length) if length else b""
        if not payload.strip():
            payload = b"{}"  # an empty payload reaches the handler as {} on Lambda
        # A synchronous payload is parsed once, by the runtime: its Runtime.UnmarshalError is
        # answered as Lambda answers JSON it cannot parse (_invoke). Parsing it here as well
        # cost ~8 ms per 4 MB event at every hop of the tree.
        if invocation_type != "RequestResponse":
            try:
                json.loads(payload)
            except ValueError as exc:
                self._invalid_json(str(exc))
                return
        if invocation_type == "DryRun":
            self._send(204, b"", {"x-amzn-RequestId": str(uuid.uuid4())})
            return
        request_id = str(uuid.uuid4())
        client_context = self.headers.get("X-Amz-Client-Context")
        if invocation_type == "Event":
            threading.Thread(
                target=_run_async, args=(pool, payload, request_id, client_context), daemon=True
            ).start()
            self._send(202, b"", {"x-amzn-RequestId": request_id})
            return
        self._invoke(pool, payload, request_id, client_context)

    def _invoke(
        self, pool: FunctionPool, payload: bytes, request_id: str, client_context: str | None
    ) -> None:
        tail = self.headers.get("X-Amz-Log-Type", "None") == "Tail"
        qs = parse_qs(urlsplit(self.path).query)
        started = time.monotonic()
        try:
            outcome = pool.invoke(
                payload, request_id, client_context, self.server.router.throttle_wait_s, tail
            )
        except ThrottledError:
            self._error(
                429,
                "TooManyRequestsException",
                "Rate Exceeded.",
                Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
            return
        except LaunchError as exc:
            log(f"launch failed: {exc}")
            self._error(500, "ServiceException", str(exc))
            return
        if outcome.error_type == UNMARSHAL_ERROR:  # never a handler's: a class name has no dot
            try:
                detail = str(json.loads(outcome.body).get("errorMessage", ""))
            except (ValueError, AttributeError):
                detail = ""
            self._invalid_json(detail.removeprefix("Unable to unmarshal input: "))
            return
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": request_id}
        if outcome.error_type:
            headers["X-Amz-Function-Error"] = "Unhandled"
        log_result = encode_log_tail(outcome.log_tail)
        if log_result is not None:
            headers["X-Amz-Log-Result"] = log_result
        log(
            f"invoke {pool.spec.name} {request_id} {(time.monotonic() - started) * 1000:.1f} ms"
            f" {outcome.error_type or 'ok'} qualifier={qs.get('Qualifier', ['$LATEST'])[0]}"
        )
        self._send(200, outcome.body, headers)

    def _invalid_json(self, detail: str) -> None:
        message = f"Could not parse request body into json: {detail}"
        self._error(400, "InvalidRequestContentException", message)

    def _drain(self) -> None:
        """Read (or, past a sanity bound, refuse) the request body so the connection stays usable."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > _DISCARD_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)


def _run_async(pool: FunctionPool, payload: bytes, request_id: str, client_context: str | None) -> None:
    try:
        outcome = pool.invoke(payload, request_id, client_context, wait_s=ASYNC_WAIT_S)
        log(f"event {pool.spec.name} {request_id} {outcome.error_type or 'ok'}")
    except (ThrottledError, LaunchError) as exc:
        log(f"event {pool.spec.name} {request_id} dropped: {exc!r}")


class RouterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, router: Router | None = None):
        super().__init__((LOOPBACK, port), InvokeHandler)
        self.router = router  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=Path, required=True, help="JSON list of function specs")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    ap.add_argument("--rie", help="aws-lambda-rie binary (default: $SQUASH_RIE or .venv-tools)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs awslambdaric")
    ap.add_argument("--shared-dir", default=str(REPO / "shared"), help="the layer (/opt/python)")
    ap.add_argument("--log-dir", type=Path, default=Path(".local/logs/lambda"))
    ap.add_argument("--tmp-dir", type=Path, default=Path(".local/tmp"))
    ap.add_argument("--s3-endpoint", help="AWS_ENDPOINT_URL_S3 for the functions")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--concurrency", type=int, default=4, help="max processes per function")
    ap.add_argument("--idle-seconds", type=float, default=300.0, help="reap processes idle this long")
    ap.add_argument("--throttle-wait", type=float, default=3.0, help="wait this long before a 429")
    args = ap.parse_args(argv)

    specs = load(args.functions)
    for spec in specs:
        if not Path(spec.code_dir).is_dir():
            log(f"warning: {spec.name}: code dir {spec.code_dir} does not exist (invocations will fail)")
    launcher = Launcher(
        rie=args.rie or find_rie(REPO),
        python=args.python,
        shared_dir=args.shared_dir,
        log_dir=args.log_dir.resolve(),
        tmp_dir=args.tmp_dir.resolve(),
        region=args.region,
        s3_endpoint=args.s3_endpoint,
    )
    server = RouterServer(args.port)
    port = server.server_address[1]
    launcher.lambda_endpoint = f"http://{LOOPBACK}:{port}"
    server.router = Router(specs, launcher, args.concurrency, args.idle_seconds, args.throttle_wait)

    def on_signal(signum: int, _frame: object) -> None:
        log(f"signal {signum}: shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n")
    log(f"lambda router on {launcher.lambda_endpoint}: {len(specs)} function(s), rie={launcher.rie}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.router.close()
        server.server_close()
        log("stopped every function process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
