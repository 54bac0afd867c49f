"""squash.Client against a scripted loopback server: retries only on 429/503, errors mapped to
the library's classes with the server's field, and SigV4 signatures the local API verifies."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest

import squash
from squash.client import AuthError, Client, HTTPError, Signer, pack, unpack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
import sigv4


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, body) of ``script``; records requests."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, dict]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script, self.seen = list(script), []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        status, doc = self.server.script.pop(0) if self.server.script else (500, {"message": "script ended"})
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve():
    servers = []

    def start(script: list[tuple[int, dict]]) -> Scripted:
        server = Scripted(script)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


HEALTH = (200, {"status": "ok"})


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_retried_then_succeed(serve, status):
    server = serve([(status, {"message": "slow down"}), (status, {"message": "slow down"}), HEALTH])
    client = Client(server.url, auth="none", backoff=0.001)
    assert client.health() == {"status": "ok"}
    assert len(server.seen) == 3


def test_retries_stop_and_raise_with_the_status(serve):
    server = serve([(503, {"message": "Service Unavailable"})] * 5)
    client = Client(server.url, auth="none", retries=2, backoff=0.001)
    with pytest.raises(squash.SquashError) as err:
        client.health()
    assert err.value.status == 503 and len(server.seen) == 3


@pytest.mark.parametrize("status", [500, 502, 504, 400, 404, 409])
def test_other_statuses_are_not_retried(serve, status):
    server = serve([(status, {"message": "no"}), HEALTH])
    with pytest.raises(squash.SquashError) as err:
        Client(server.url, auth="none", backoff=0.001).health()
    assert err.value.status == status and len(server.seen) == 1


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_input", squash.InputError),
        (400, "invalid_filter", squash.FilterError),
        (404, "index_not_found", squash.IndexNotFoundError),
        (409, "write_conflict", squash.WriteConflictError),
        (500, "index_corrupt", squash.IndexFormatError),
        (503, "storage_error", squash.StorageError),
        (502, "worker_failed", squash.SquashError),
        (418, "something_new", HTTPError),
    ],
)
def test_server_errors_become_library_exceptions(serve, status, code, kind):
    doc = {"error": {"code": code, "message": "what went wrong", "field": "filter"}}
    server = serve([(status, doc)])
    with pytest.raises(kind) as err:
        Client(server.url, auth="none", retries=0).health()
    assert (err.value.code, err.value.message, err.value.field, err.value.status) == (
        code,
        "what went wrong",
        "filter",
        status,
    )


def test_api_gateway_403_is_an_auth_error(serve):
    server = serve([(403, {"message": "Forbidden"})])
    with pytest.raises(AuthError) as err:
        Client(server.url, auth="none").health()
    assert err.value.status == 403 and err.value.message == "Forbidden"


def test_binary_query_body_and_answer(serve):
    ids = np.array([[3, 1, -1]], dtype=np.int64)
    dist = np.array([[0.5, 2.0, np.inf]], dtype=np.float32)
    info = (200, {"metric": "l2", "n": 10, "dims": 4})
    server = serve([(200, {"ids": pack(ids), "distances": pack(dist), "stats": {"queries": 1}}), info])
    q = np.arange(4, dtype=np.float32)
    got = Client(server.url, auth="none").query("idx", q, k=3)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.distances, dist)
    np.testing.assert_array_equal(got.scores[0, :2], -dist[0, :2])
    body = json.loads(server.seen[0][3])
    assert body["encoding"] == "binary" and body["k"] == 3
    np.testing.assert_array_equal(unpack(body["vectors"] | {"dtype": "float32"}, "vectors"), q[None, :])


def test_json_query_pads_short_rows(serve):
    results = [[{"id": 4, "distance": 0.25}], []]
    server = serve([(200, {"results": results, "stats": {}}), (200, {"metric": "cosine"})])
    got = Client(server.url, auth="none", wire="json").query("idx", np.zeros((2, 3)), k=2)
    np.testing.assert_array_equal(got.ids, [[4, -1], [-1, -1]])
    assert got.distances[0, 0] == 0.25 and np.isinf(got.distances[0, 1]) and got.metric == "cosine"
    assert json.loads(server.seen[0][3])["vectors"] == [[0.0] * 3] * 2


def test_bad_arguments_are_input_errors_before_any_request(serve):
    server = serve([])
    client = Client(server.url, auth="none")
    with pytest.raises(squash.InputError) as err:
        client.query("idx", np.zeros((2, 2, 2)))
    assert err.value.field == "vectors"
    with pytest.raises(squash.InputError):
        client.delete("idx")
    with pytest.raises(squash.InputError):
        Client("ftp://x")
    assert server.seen == []


KEYS = {"AKIDLOCAL": "s3cr3t"}
SESSION = boto3.Session(
    aws_access_key_id="AKIDLOCAL", aws_secret_access_key="s3cr3t", region_name="eu-west-1"
)


def _signed(method: str, url: str, body: bytes, session=SESSION) -> list[tuple[str, str]]:
    headers = Signer(url, None, session).sign(method, url, body, {"content-type": "application/json"})
    host = url.split("/")[2]
    return [("Host", host), *headers.items()]


def test_sigv4_round_trip_with_the_local_verifier():
    url = "http://127.0.0.1:8080/indexes/my%20index/query?x=1"
    body = b'{"vector": [1, 2]}'
    headers = _signed("POST", url, body)
    target = url.split("8080", 1)[1]
    assert sigv4.verify("POST", target, headers, body, KEYS, "eu-west-1") is None
    assert sigv4.verify("POST", target, headers, body + b" ", KEYS, "eu-west-1") == sigv4.MISMATCH
    assert sigv4.verify("GET", target, headers, body, KEYS, "eu-west-1") == sigv4.MISMATCH
    assert sigv4.verify("POST", target, headers, body, {"OTHER": "x"}, "eu-west-1") == sigv4.UNKNOWN_KEY
    assert "region" in sigv4.verify("POST", target, headers, body, KEYS, "us-east-1")
    later = datetime.now(UTC) + timedelta(minutes=6)
    assert "expired" in sigv4.verify("POST", target, headers, body, KEYS, "eu-west-1", now=later)
    unsigned = [(k, v) for k, v in headers if k.lower() != "authorization"]
    assert sigv4.verify("POST", target, unsigned, body, KEYS, "eu-west-1") == sigv4.MISSING


def test_signing_needs_a_region():
    session = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b")
    if session.region_name:
        pytest.skip("a region is configured in this environment")
    with pytest.raises(squash.InputError) as err:
        Client("http://127.0.0.1:1", session=session)
    assert err.value.field == "region"
    signer = Signer("https://abc.execute-api.eu-central-1.amazonaws.com/prod", None, session)
    assert signer.region == "eu-central-1"


def test_a_dot_index_answers_scores_which_become_distances(serve):
    info = (200, {"metric": "dot"})
    scores = np.array([[5.0, 2.0]], dtype=np.float32)
    binary = {"ids": pack(np.array([[1, 2]], dtype=np.int64)), "scores": pack(scores), "stats": {}}
    server = serve([(200, binary), info, (200, {"results": [[{"id": 1, "score": 5.0}]], "stats": {}})])
    client = Client(server.url, auth="none")
    got = client.query("dot-idx", np.ones(3), k=2)
    np.testing.assert_array_equal(got.distances, -scores)
    np.testing.assert_array_equal(got.scores, scores)
    client.wire = "json"
    got = client.query("dot-idx", np.ones(3), k=2)
    assert got.ids.tolist() == [[1, -1]] and got.scores[0, 0] == 5.0


def test_the_local_verifier_binds_the_body_and_the_path():
    import hashlib

    url = "http://127.0.0.1:8080/indexes/a/query"
    body = b'{"vector": [1, 2]}'
    session_headers = {
        "content-type": "application/json",
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    headers = Signer(url, None, SESSION).sign("POST", url, body, session_headers)
    signed = [("Host", "127.0.0.1:8080"), *headers.items()]
    assert sigv4.verify("POST", "/indexes/a/query", signed, body, KEYS, "eu-west-1") is None
    # a claimed payload hash that is not the body's: refused, whatever the signature says
    assert (
        sigv4.verify("POST", "/indexes/a/query", signed, b'{"vector": [9]}', KEYS, "eu-west-1")
        == sigv4.MISMATCH
    )
    sneaky = "http://127.0.0.1:8080/x/../indexes/a/query"
    headers = _signed("POST", sneaky, body)
    assert sigv4.verify("POST", "/x/../indexes/a/query", headers, body, KEYS, "eu-west-1") == sigv4.MISMATCH


def test_the_answers_metric_spares_the_info_request(serve):
    answer = {"results": [[{"id": 4, "distance": 0.25}]], "stats": {"metric": "cosine"}}
    server = serve([(200, answer)])
    got = Client(server.url, auth="none", wire="json").query("idx", np.zeros(3), k=1)
    assert got.metric == "cosine" and len(server.seen) == 1  # POST …/query only
