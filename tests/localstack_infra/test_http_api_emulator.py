"""The HTTP API emulator: payload-2.0 events in, API Gateway's response mapping out."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request

import pytest


@pytest.fixture(scope="module")
def api(start_router, start_api):
    router = start_router({"api-echo": ("app.api_handler", 10)})
    return start_api(router.url, "api-echo")


def request(api, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(api.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_event_shape(api):
    body = json.dumps({"k": 10}).encode()
    headers = {"Content-Type": "application/json", "X-Custom": "v", "Cookie": "c1=v1; c2=v2"}
    status, resp_headers, raw = request(api, "POST", "/indexes/x/query?a=1&b=2&a=3", body, headers)
    assert status == 200 and resp_headers["apigw-requestid"]
    event = json.loads(raw)
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/indexes/x/query"
    assert event["rawQueryString"] == "a=1&b=2&a=3"
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-custom"] == "v" and event["headers"]["content-type"] == "application/json"
    assert "cookie" not in event["headers"] and all(k == k.lower() for k in event["headers"])
    assert event["body"] == body.decode() and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["http"]["method"] == "POST" and ctx["http"]["path"] == "/indexes/x/query"
    assert ctx["http"]["sourceIp"] == "127.0.0.1" and ctx["http"]["userAgent"].startswith("Python-urllib")
    assert ctx["http"]["protocol"] == "HTTP/1.1"
    assert ctx["stage"] == "$default" and ctx["routeKey"] == "$default"
    assert ctx["accountId"] == "000000000000" and ctx["apiId"] and ctx["requestId"]
    assert ctx["domainName"] == api.url.removeprefix("http://")
    assert abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    time.strptime(ctx["time"], "%d/%b/%Y:%H:%M:%S +0000")


def test_get_without_body_or_query(api):
    status, _, raw = request(api, "GET", "/health")
    event = json.loads(raw)
    assert status == 200 and event["requestContext"]["http"]["method"] == "GET"
    assert "body" not in event and "queryStringParameters" not in event and "cookies" not in event


def test_binary_body_is_base64(api):
    payload = bytes(range(256))
    _, _, raw = request(api, "PUT", "/blob", payload, {"Content-Type": "application/octet-stream"})
    event = json.loads(raw)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == payload


@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8", None])
def test_text_body_that_is_not_utf8_is_passed_base64(api, content_type):
    """The handler must see the bytes the client sent (and answer 400), not U+FFFD."""
    payload = b'{"k": "\xff\xfe"}'
    headers = {"Content-Type": content_type} if content_type else {}
    _, _, raw = request(api, "POST", "/blob", payload, headers)
    event = json.loads(raw)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == payload


def test_response_mapping(api):
    status, headers, raw = request(api, "GET", "/status")
    assert (status, raw, headers["X-Reply"]) == (201, b"created", "yes")
    assert headers["Content-Type"] == "text/plain"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]

    status, headers, raw = request(api, "GET", "/plain")  # no statusCode: 200 + the JSON
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {"hello": "world"}

    status, _, raw = request(api, "GET", "/string")
    assert (status, raw) == (200, b"just text")

    status, headers, raw = request(api, "GET", "/bytes")
    assert (status, raw, headers["Content-Type"]) == (200, bytes([0, 1, 255]), "application/octet-stream")


@pytest.mark.parametrize("path", ["/boom", "/bad"])
def test_function_error_or_bad_result_is_500(api, path):
    status, _, raw = request(api, "GET", path)
    assert (status, json.loads(raw)) == (500, {"message": "Internal Server Error"})


def test_body_too_large_for_lambda_is_413(api):
    status, _, raw = request(api, "POST", "/big", b"x" * 6_500_000, {"Content-Type": "text/plain"})
    assert (status, json.loads(raw)) == (413, {"message": "Request Entity Too Large"})


def test_requests_are_served_concurrently(api):
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(request(api, "GET", "/sleep?s=0.8")[0]))
        for _ in range(3)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert statuses == [200, 200, 200]
    assert time.monotonic() - started < 2.0  # 3 x 0.8 s in sequence would be 2.4 s


def test_throttled_function_is_429(start_router, start_api):
    router = start_router(
        {"api-one": ("app.api_handler", 10)}, "--concurrency", "1", "--throttle-wait", "0.2"
    )
    api = start_api(router.url, "api-one")
    slow = threading.Thread(target=request, args=(api, "GET", "/sleep?s=1.5"))
    slow.start()
    try:
        time.sleep(0.5)
        status, _, raw = request(api, "GET", "/plain")
    finally:
        slow.join(timeout=20)
    assert (status, json.loads(raw)) == (429, {"message": "Too Many Requests"})


def _raw_exchange(api, head: bytes, body: bytes = b"", *, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes or answers; (response, seconds)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(api.url)
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return data, time.monotonic() - started


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(data) + 1


@pytest.fixture(scope="module")
def strict_api(start_router, start_api):
    """An emulator with a 1 s body read timeout, so a short body is answered quickly."""
    router = start_router({"api-strict": ("app.api_handler", 10)})
    return start_api(router.url, "api-strict", "--body-timeout", "1")


def test_body_shorter_than_content_length_is_a_400_after_the_read_timeout(strict_api):
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    data, seconds = _raw_exchange(strict_api, head, b"only ten b")
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert b'"Bad Request"' in data and seconds < 5


@pytest.mark.parametrize("value", [b"-5", b"abc", b"1e3", b"12, 13", b""])
def test_bad_content_length_is_a_400_not_a_dropped_connection(api, value):
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n"
    data, _ = _raw_exchange(api, head, b"{}")
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"message": "Bad Request"}


def test_oversized_body_is_read_then_answered_413(api):
    """An 11 MB body: the client finishes sending and reads a 413 (no broken pipe)."""
    body = b"x" * (11 * 1024 * 1024)
    status, _, raw = request(api, "POST", "/big", body, {"Content-Type": "text/plain"})
    assert (status, json.loads(raw)) == (413, {"message": "Request Entity Too Large"})


@pytest.fixture(scope="module")
def iam_api(start_router, start_api):
    router = start_router({"api-echo": ("app.api_handler", 10)})
    return start_api(router.url, "api-echo", "--auth", "iam", "--iam-key", "AKIDTEST:secret-1")


def test_iam_auth_lets_signed_requests_through_and_answers_403_otherwise(iam_api):
    import boto3

    from squash.client import Signer

    url, body = iam_api.url + "/indexes/x/query?a=1", b'{"k": 1}'
    good = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret-1")
    headers = Signer(url, "us-east-1", good).sign("POST", url, body, {"content-type": "application/json"})
    status, _, raw = request(iam_api, "POST", "/indexes/x/query?a=1", body, headers)
    assert status == 200 and json.loads(raw)["body"] == body.decode()

    status, resp_headers, raw = request(iam_api, "POST", "/indexes/x/query?a=1", body)
    assert status == 403 and json.loads(raw) == {"message": "Forbidden"} and resp_headers["apigw-requestid"]
    status, _, raw = request(iam_api, "POST", "/indexes/x/query?a=1", body + b" ", headers)
    assert status == 403 and "signature we calculated does not match" in json.loads(raw)["message"]
    wrong = boto3.Session(aws_access_key_id="AKIDOTHER", aws_secret_access_key="secret-1")
    headers = Signer(url, "us-east-1", wrong).sign("POST", url, body, {})
    status, _, raw = request(iam_api, "POST", "/indexes/x/query?a=1", body, headers)
    assert (
        status == 403
        and json.loads(raw)["message"] == "The security token included in the request is invalid."
    )
