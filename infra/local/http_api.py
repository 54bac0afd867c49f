"""A local API Gateway HTTP API ($default route, payload format 2.0) in front of one function.

Every request becomes an HTTP API v2 event, is sent through the Lambda router's Invoke API (so
the coordinator runs exactly as when boto3 invokes it), and the result is mapped back the way API
Gateway maps it. Run: ``python infra/local/http_api.py --lambda-endpoint URL --port-file PATH``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import http.client
import json
import secrets
import signal
import sys
import threading
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
import sigv4
from procs import LOOPBACK, connection_usable, write_atomic
from serving import LocalHandler, log

ACCOUNT = "000000000000"
API_ID = "local"
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # HTTP API request payload quota
INTEGRATION_TIMEOUT_S = 30.0  # HTTP API's maximum integration timeout
BODY_TIMEOUT_S = 10.0  # a body that stops arriving (Content-Length too large) is a 400 after this
MAX_DRAIN_BYTES = 64 * 1024 * 1024  # oversized bodies up to this are read before the 413
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_TEXT_SUFFIXES = ("+json", "+xml")
_TEXT_EXACT = ("application/x-www-form-urlencoded", "application/graphql", "application/x-ndjson")


def is_text(content_type: str | None, body: bytes) -> bool:
    """Text bodies are passed as-is, everything else base64-encoded (isBase64Encoded).

    A body is text only when it is valid UTF-8 (and, with a content type, a text type):
    bytes that are not UTF-8 travel base64-encoded whatever their declared type, so the
    handler sees what the client sent instead of U+FFFD replacement characters.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not content_type:
        return True
    mime = content_type.split(";")[0].strip().lower()
    return mime.startswith(_TEXT_TYPES) or mime.endswith(_TEXT_SUFFIXES) or mime in _TEXT_EXACT


def build_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    request_id: str,
    now: datetime | None = None,
) -> dict:
    """The HTTP API payload-format-2.0 event for one request (route ``$default``)."""
    now = now or datetime.now(UTC)
    url = urlsplit(target)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":  # v2 moves cookies out of the headers
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    host = merged.get("host", f"{LOOPBACK}")
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    if ":" in host:
        merged.setdefault("x-forwarded-port", host.rsplit(":", 1)[1])
    query: dict[str, str] = {}
    for k, v in parse_qsl(url.query, keep_blank_values=True):
        query[k] = f"{query[k]},{v}" if k in query else v
    path = url.path or "/"
    event: dict = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": url.query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": host,
            "domainPrefix": host.split(".")[0].split(":")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        if is_text(merged.get("content-type"), body):
            event["body"] = body.decode("utf-8")
        else:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def map_result(payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """API Gateway's mapping of a (successful) function result to an HTTP response.

    Raises ValueError for a malformed result (API Gateway answers 500 for those).
    """
    result = json.loads(payload)
    if not (isinstance(result, dict) and "statusCode" in result):
        # no statusCode: 200, JSON content type, the result as body (a string result verbatim)
        body = result.encode() if isinstance(result, str) else payload
        return 200, [("Content-Type", "application/json")], body
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"bad statusCode {status!r}")
    headers: list[tuple[str, str]] = []
    for k, v in (result.get("headers") or {}).items():
        headers.append((str(k), str(v)))
    for cookie in result.get("cookies") or []:
        headers.append(("Set-Cookie", str(cookie)))
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise ValueError("body must be a string")
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(body, validate=True)
    else:
        data = body.encode()
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return status, headers, data


class ApiHandler(LocalHandler):
    server: ApiServer

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, request_id: str) -> None:
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("apigw-requestid", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _message(self, status: int, message: str, request_id: str) -> None:
        body = json.dumps({"message": message}).encode()
        self._reply(status, [("Content-Type", "application/json")], body, request_id)

    def _read_body(self, length: int, keep: bool = True) -> bytes | None:
        """``length`` bytes of body, or None when they do not all arrive within the server's
        body timeout (a Content-Length larger than the body must not hold the connection)."""
        self.connection.settimeout(self.server.body_timeout_s)
        parts, left = [], length
        try:
            while left:
                chunk = self.rfile.read1(min(left, 1 << 20))
                if not chunk:
                    return None
                left -= len(chunk)
                if keep:
                    parts.append(chunk)
        except TimeoutError:
            return None
        finally:
            self.connection.settimeout(None)
        return b"".join(parts)

    def _handle(self) -> None:
        request_id = base64.b64encode(secrets.token_bytes(12)).decode().rstrip("=")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._message(411, "Length Required", request_id)
            return
        length = _content_length(self.headers.get_all("Content-Length"))
        if length is None:  # negative, not a number, or several different values
            self.close_connection = True
            self._message(400, "Bad Request", request_id)
            return
        if length > MAX_REQUEST_BYTES:
            # Read (and drop) what the client is sending before answering, so it sees the 413
            # instead of a broken pipe; an absurd length is not waited for.
            self.close_connection = True
            if length <= MAX_DRAIN_BYTES:
                self._read_body(length, keep=False)
            self._message(413, "Request Entity Too Large", request_id)
            return
        body = self._read_body(length) if length else b""
        if body is None:  # the client sent less than Content-Length and stopped
            self.close_connection = True
            self._message(400, "Bad Request", request_id)
            return
        headers = list(self.headers.items())
        if self.server.iam_keys is not None:
            denied = sigv4.verify(
                self.command, self.path, headers, body, self.server.iam_keys, self.server.region
            )
            if denied:
                self._message(403, denied, request_id)
                return
        event = build_event(self.command, self.path, headers, body, self.client_address[0], request_id)
        # orjson: json.dumps escapes a 4 MB body in ~12 ms, orjson in ~4 ms (API Gateway is not
        # Python: the emulator should not add what AWS does not)
        status, fn_error, payload = self.server.invoke(orjson.dumps(event))
        if status == 413:
            self._message(413, "Request Entity Too Large", request_id)
        elif status == 429:
            self._message(429, "Too Many Requests", request_id)
        elif status == 504:
            self._message(503, "Service Unavailable", request_id)
        elif status != 200 or fn_error:
            self._message(500, "Internal Server Error", request_id)
        else:
            try:
                code, headers, data = map_result(payload)
            except (ValueError, TypeError, binascii.Error) as exc:
                log(f"{request_id}: malformed function result: {exc}")
                self._message(500, "Internal Server Error", request_id)
                return
            self._reply(code, headers, data, request_id)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle  # noqa: N815


def _content_length(values: list[str] | None) -> int | None:
    """The request's body length: 0 without the header, None when it is not one
    non-negative integer (RFC 9110: a list of identical values is allowed)."""
    if not values:
        return 0
    found = {v.strip() for value in values for v in value.split(",")}
    if len(found) != 1:
        return None
    (text,) = found
    return int(text) if text.isdigit() and text.isascii() else None


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        port: int,
        lambda_endpoint: str,
        function: str,
        timeout_s: float = INTEGRATION_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
        iam_keys: dict[str, str] | None = None,
        region: str = "us-east-1",
    ):
        """``iam_keys`` (access key id → secret) turns on IAM auth: every request must be
        SigV4-signed by one of them for ``region``, or it gets API Gateway's 403."""
        super().__init__((LOOPBACK, port), ApiHandler)
        self.iam_keys, self.region = iam_keys, region
        url = urlsplit(lambda_endpoint)
        self.lambda_host, self.lambda_port = url.hostname or LOOPBACK, url.port or 80
        self.function, self.timeout_s, self.body_timeout_s = function, timeout_s, body_timeout_s
        # Kept-alive connections to the Lambda router (API Gateway keeps its integration
        # connections too): a new TCP connection and router thread per request cost ~1-3 ms.
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        while True:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return http.client.HTTPConnection(self.lambda_host, self.lambda_port, timeout=self.timeout_s)
            if connection_usable(conn):
                return conn
            conn.close()

    def invoke(self, payload: bytes) -> tuple[int, str | None, bytes]:
        """(HTTP status from the Invoke API, X-Amz-Function-Error, body); 504 when it took too long."""
        conn = self._connection()
        keep = False
        try:
            conn.request(
                "POST",
                f"/2015-03-31/functions/{quote(self.function, safe='')}/invocations",
                body=payload,
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            out = resp.status, resp.getheader("X-Amz-Function-Error"), resp.read()
            keep = not resp.will_close
            return out
        except TimeoutError:
            return 504, None, b""
        except (OSError, http.client.HTTPException) as exc:
            log(f"invoke {self.function} failed: {exc!r}")
            return 502, None, b""
        finally:
            if keep:
                with self._idle_lock:
                    self._idle.append(conn)
            else:
                conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lambda-endpoint", required=True, help="the Lambda router, http://127.0.0.1:PORT")
    ap.add_argument("--function", default="squash-coordinator")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--timeout", type=float, default=INTEGRATION_TIMEOUT_S, help="integration timeout, s")
    ap.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S, help="wait for a body at most, s")
    ap.add_argument(
        "--auth", choices=("iam", "none"), default="none", help="iam: require SigV4 (stack.py's default)"
    )
    ap.add_argument("--iam-key", action="append", default=[], help="ACCESS_KEY_ID:SECRET accepted (iam)")
    ap.add_argument("--region", default="us-east-1", help="the region signatures must be scoped to")
    args = ap.parse_args(argv)
    if args.auth == "iam" and not args.iam_key:
        ap.error("--auth iam needs at least one --iam-key")
    keys = sigv4.parse_keys(args.iam_key) if args.auth == "iam" else None
    server = ApiServer(
        args.port, args.lambda_endpoint, args.function, args.timeout, args.body_timeout, keys, args.region
    )
    port = server.server_address[1]

    def on_signal(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.port_file:
        write_atomic(Path(args.port_file), f"{port}\n")
    via = f"{args.function} via {args.lambda_endpoint}"
    log(f"http api on http://{LOOPBACK}:{port} -> {via} (auth {args.auth})")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
