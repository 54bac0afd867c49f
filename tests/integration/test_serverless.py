"""HTTP -> coordinator -> worker tree -> S3, through the real Lambda Invoke path.

Endpoints come from the file named by ``SQUASH_ENDPOINTS`` (LocalStack, a deployed stack);
without it each tree shape starts its own local stack (infra/local) and stops it after.
The in-process engine over the same S3 index is the reference: answers must be identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import datamodel
import numpy as np
import pytest
from positions import working_positions
from signed import LOCAL_SESSION, sign

import squash
from squash.build import BuildOptions, build_index
from squash.client import AuthError, Client
from squash.datasets import synthetic_mixture
from squash.runtime.tree import TreeLayout

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "local" / "stack.py"
INDEX = "itest"
DM_INDEX = "dm"  # nulls, lists, timestamps, dates, custom ids (tests/helpers/datamodel.py)
SHAPES = [(2, 2), (4, 1)]


def _request(method: str, url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    """One SigV4-signed request (the local stack's HTTP API runs with IAM auth, as deployed)."""
    headers = {"content-type": "application/json"}
    if "/_local/" not in url:  # the Lambda router's own status routes are not behind the API
        headers = sign(method, url, body, headers)
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="module")
def data():
    return synthetic_mixture(n=4000, d=32, n_queries=30, clusters=16, seed=5)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"b{s[0]}l{s[1]}")
def stack(request, tmp_path_factory, data):
    """Endpoints of a running stack with the test index built into its bucket."""
    branching, depth = request.param
    given = os.environ.get("SQUASH_ENDPOINTS")
    folder = tmp_path_factory.mktemp(f"stack-b{branching}l{depth}")
    if given:
        endpoints = json.loads(Path(given).read_text())
        if (endpoints.get("branching"), endpoints.get("depth")) not in ((branching, depth), (None, None)):
            pytest.skip(f"the stack in {given} is deployed with another tree shape")
    else:
        cmd = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", str(branching)]
        cmd += ["--local-max-mb", "0"]  # these indexes are tiny: make them use the tree
        subprocess.run([*cmd, "--depth", str(depth)], check=True, timeout=120, capture_output=True)
        endpoints = json.loads((folder / "endpoints.json").read_text())
    env = {
        "AWS_ENDPOINT_URL_S3": endpoints["s3_endpoint"],
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": endpoints.get("region", "us-east-1"),
    }
    mp = pytest.MonkeyPatch()
    for key, val in env.items():
        mp.setenv(key, val)
    try:
        uri = f"s3://{endpoints['bucket']}/indexes/{INDEX}"
        build_index(data.base, uri, data.attributes, BuildOptions(partitions=24, seed=3))
        base, _, table = datamodel.dataset()
        dm_uri = f"s3://{endpoints['bucket']}/indexes/{DM_INDEX}"
        build_index(base, dm_uri, table, BuildOptions(partitions=24, seed=2))
        yield endpoints | {"branching": branching, "depth": depth, "uri": uri, "dm_uri": dm_uri}
    finally:
        mp.undo()
        if not given:
            _stop_and_check(folder, endpoints)


def _stop_and_check(folder: Path, endpoints: dict) -> None:
    pids = [int(p.read_text()) for p in (folder / "pids").glob("*.pid")]
    pids += _function_pids(endpoints)
    subprocess.run([sys.executable, str(STACK), "down", "--dir", str(folder)], check=True, timeout=60)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "local-down left processes behind"


def _functions(endpoints: dict) -> dict | None:
    """The local router's view of functions and processes; None elsewhere (LocalStack, AWS)."""
    try:
        code, doc = _request("GET", f"{endpoints['lambda_endpoint']}/_local/functions", timeout=10)
    except (OSError, ValueError):
        return None
    return doc if code == 200 else None


def _function_pids(endpoints: dict) -> list[int]:
    doc = _functions(endpoints) or {}
    return [proc["pid"] for fn in doc.values() for proc in fn["processes"]]


def _query(stack: dict, body: dict | bytes, index: str = INDEX) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _request("POST", f"{stack['api_url']}/indexes/{index}/query", raw)


def _size(stack: dict) -> int:
    return sum(stack["branching"] ** i for i in range(stack["depth"] + 1))


def _working(stack: dict, queries: np.ndarray, filt=None, uri: str | None = None, k: int = 10) -> list[int]:
    tree = TreeLayout(stack["branching"], stack["depth"])
    return working_positions(uri or stack["uri"], queries, filt, tree, k)


@pytest.mark.parametrize("filt", [None, {"price": {"$lt": 30}}, {"label": {"$in": ["c02", "c07"]}}])
def test_http_answers_equal_in_process(stack, data, filt):
    body = {"vectors": data.queries.tolist(), "k": 10, "include": ["distance", "attributes"]}
    if filt:
        body["filter"] = filt
    status, out = _query(stack, body)
    assert status == 200, out
    expected = squash.open_index(stack["uri"]).search(data.queries, k=10, filter=filt)
    assert [[h["id"] for h in row] for row in out["results"]] == [
        [i for i in row if i >= 0] for row in expected.ids.tolist()
    ]
    got = np.array([h["distance"] for row in out["results"] for h in row])
    np.testing.assert_allclose(got, expected.distances[expected.ids >= 0], rtol=1e-6)
    if filt and "price" in filt:
        assert all(h["attributes"]["price"] < 30 for row in out["results"] for h in row)
    working = _working(stack, data.queries, filt)
    assert out["stats"]["nodes"]["invoked"] == len(working)
    assert out["stats"]["nodes"]["positions"] == working


@pytest.mark.parametrize("name", ["ne-or-null", "list-in-rare", "list-all", "ts-iso-range", "id-nin"])
def test_http_data_model_filters_equal_in_process(stack, name):
    """Nulls, lists, timestamps and ids over HTTP: the in-process answer, every hit passing
    the reference predicate, attributes as stored (ISO-8601 timestamps, nulls as null)."""
    _, queries, table = datamodel.dataset()
    table_rows = datamodel.rows(table)
    filt = datamodel.filters(table)[name]
    body = {"vectors": queries[:10].tolist(), "k": 10, "filter": filt, "include": ["attributes"]}
    status, out = _query(stack, body, DM_INDEX)
    assert status == 200, out
    expected = squash.open_index(stack["dm_uri"]).search(queries[:10], k=10, filter=filt)
    assert [[h["id"] for h in row] for row in out["results"]] == [
        [i for i in row if i >= 0] for row in expected.ids.tolist()
    ]
    by_id = {r["id"]: r for r in table_rows}
    for hit in (h for row in out["results"] for h in row):
        assert datamodel.matches(filt, [by_id[hit["id"]]])[0]
        assert all(datamodel.same_value(v, by_id[hit["id"]][k]) for k, v in hit["attributes"].items())
    assert 0 < out["stats"]["event_bytes"] < 6 * 2**20


def test_second_identical_query_is_warm_and_reads_nothing(stack, data):
    body = {"vector": data.queries[3].tolist(), "k": 5, "filter": {"in_stock": True}}
    _, first = _query(stack, body)
    status, second = _query(stack, body)
    assert status == 200
    assert second["results"] == first["results"]
    assert second["stats"]["s3"]["bytes_read"] == 0
    assert second["stats"]["s3"]["segments_loaded"] == 0
    if second["stats"]["rerank"] == "none":  # the code ranking reads nothing at all
        assert second["stats"]["s3"]["refine_gets"] == second["stats"]["s3"]["refine_bytes_read"] == 0
    assert second["stats"]["nodes"]["cold"] == 0
    assert second["stats"]["nodes"]["warm"] == len(_working(stack, data.queries[3:4], body["filter"], k=5))
    assert second["stats"]["coordinator"]["cold"] is False


def test_warm_code_ranking_reads_nothing_and_float32_rerank_one_get_per_partition(stack, data):
    body = {"vectors": data.queries[:6].tolist(), "k": 10, "params": {"rerank": "none"}}
    _query(stack, body)
    status, warm = _query(stack, body)
    assert status == 200 and warm["stats"]["distances"] == "estimated"
    s3 = warm["stats"]["s3"]
    assert s3["bytes_read"] == s3["refine_gets"] == s3["refine_bytes_read"] == 0
    assert s3["hot_bytes_resident"] > 0
    body["params"] = {"rerank": "float32"}
    status, f32 = _query(stack, body)
    assert status == 200 and f32["stats"]["distances"] == "exact"
    assert 0 < f32["stats"]["s3"]["refine_gets"] <= f32["stats"]["partitions_visited"]
    assert f32["stats"]["s3"]["bytes_read"] == 0  # the hot tier stayed warm
    expected = squash.open_index(stack["uri"]).search(
        data.queries[:6], k=10, params=squash.SearchParams(rerank="float32")
    )
    assert [[h["id"] for h in row] for row in f32["results"]] == expected.ids.tolist()


@pytest.mark.parametrize("filt", [None, {"id": {"$in": [11, 12]}}])
def test_only_nodes_with_work_are_invoked_once_per_request(stack, data, filt):
    """Each working node once, idle ones not at all: a selective filter leaves most of the
    tree uninvoked (no request fee, no latency for a node with nothing to search)."""
    before = _functions(stack)
    if before is None:
        pytest.skip("invocation counts come from the local stack's router")
    body = {"vectors": data.queries[:5].tolist(), "k": 10} | ({"filter": filt} if filt else {})
    status, _ = _query(stack, body)
    assert status == 200
    after = _functions(stack)
    working = _working(stack, data.queries[:5], filt)
    if filt:
        assert len(working) < _size(stack)
    for i in range(_size(stack)):
        name = f"squash-worker-{i}"
        assert after[name]["invocations"] - before[name]["invocations"] == int(i in working), name
    assert after["squash-coordinator"]["invocations"] - before["squash-coordinator"]["invocations"] == 1


def test_killed_worker_is_replaced_cold_and_the_query_succeeds(stack, data):
    if _functions(stack) is None:
        pytest.skip("needs the local stack's process list")
    body = {"vectors": data.queries[:8].tolist(), "k": 10}
    _, reference = _query(stack, body)  # everything warm
    victim = f"squash-worker-{_working(stack, data.queries[:8])[-1]}"
    procs = _functions(stack)[victim]["processes"]
    assert procs, f"{victim} has no process to kill"
    for proc in procs:
        os.kill(proc["pid"], signal.SIGKILL)
    status, out = _query(stack, body)
    assert status == 200, out
    assert out["results"] == reference["results"]
    assert out["stats"]["nodes"]["cold"] >= 1
    assert out["stats"]["s3"]["segments_loaded"] >= 1  # the new container loaded its partitions again
    assert {p["pid"] for p in _functions(stack)[victim]["processes"]}.isdisjoint(p["pid"] for p in procs)


BAD = [
    (b'{"vector": [1, 2,', 400, "body"),
    (b"{}", 400, "vector"),
    (b'{"vector": [1.0, 2.0, 3.0]}', 400, "vector"),
    (b'{"vector": [NaN' + b", 0.0" * 31 + b"]}", 400, "vector"),
    (b'{"vector": [1e999' + b", 0.0" * 31 + b"]}", 400, "vector"),
    (b'{"vector": [0.0' + b", 0.0" * 31 + b'], "k": 0}', 400, "k"),
    (b'{"vector": [0.0' + b", 0.0" * 31 + b'], "k": 1001}', 400, "k"),
    (b'{"vector": [0.0' + b", 0.0" * 31 + b'], "filter": {"colour": "red"}}', 400, "filter"),
    (b'{"vector": [0.0' + b", 0.0" * 31 + b'], "filter": {"price": {"$near": 3}}}', 400, "filter"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_requests_are_4xx_naming_the_problem(stack, body, status, field):
    code, out = _query(stack, body)
    assert code == status, out
    assert out["error"]["field"] == field and out["error"]["message"]


def test_unknown_index_oversized_body_and_still_serving(stack, data):
    code, out = _query(stack, {"vector": data.queries[0].tolist()}, index="no-such-index")
    assert code == 404 and out["error"]["code"] == "index_not_found"
    huge = b'{"vectors": [' + b",".join([b"[" + b"1.0," * 31 + b"1.0]"] * 50_000) + b"]}"
    assert len(huge) > 6 * 1024 * 1024
    code, out = _query(stack, huge)
    assert code == 413, out
    code, out = _query(stack, {"vector": data.queries[0].tolist(), "k": 3})
    assert code == 200 and len(out["results"][0]) == 3


def test_index_info_and_health(stack, data):
    code, info = _request("GET", f"{stack['api_url']}/indexes/{INDEX}")
    assert code == 200 and info["n"] == data.base.shape[0] and info["dims"] == 32
    code, health = _request("GET", f"{stack['api_url']}/health")
    assert code == 200 and health["tree"] == {
        "branching": stack["branching"],
        "depth": stack["depth"],
        "nodes": _size(stack),
    }


def _client(stack: dict, **kw) -> Client:
    kw.setdefault("session", LOCAL_SESSION)
    return Client(stack["api_url"], region=stack.get("region", "us-east-1"), **kw)


@pytest.mark.parametrize("wire", ["binary", "json"])
def test_client_answers_equal_in_process(stack, data, wire):
    """squash.Client over the signed HTTP API returns what Index.search returns in-process:
    ids, distances, scores and attributes, on either wire format."""
    filt = {"price": {"$lt": 30}}
    with _client(stack, wire=wire) as client:
        got = client.query(INDEX, data.queries, k=10, filter=filt, include=["attributes"])
    expected = squash.open_index(stack["uri"]).search(data.queries, k=10, filter=filt, include=["attributes"])
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.distances, expected.distances, rtol=1e-6)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
    assert got.attributes == expected.attributes
    assert all(a["price"] < 30 for row in got.attributes for a in row)
    assert got.stats["nodes"]["invoked"] == len(_working(stack, data.queries, filt))


def test_client_info_list_health(stack, data):
    with _client(stack) as client:
        info = client.info(INDEX)
        assert info["n"] == data.base.shape[0] and info["dims"] == 32
        names = [entry["name"] for entry in client.list_indexes()]
        assert {INDEX, DM_INDEX} <= set(names)
        assert client.health()["tree"]["nodes"] == _size(stack)


@pytest.mark.parametrize(
    ("call", "kind", "field"),
    [
        (lambda c, q: c.query(INDEX, q[:, :5]), squash.InputError, "vectors"),
        (lambda c, q: c.query(INDEX, q, filter={"colour": "red"}), squash.FilterError, "filter"),
        (lambda c, q: c.query(INDEX, q, k=0), squash.InputError, "k"),
        (lambda c, q: c.query("no-such-index", q), squash.IndexNotFoundError, "index"),
        (lambda c, q: c.delete(INDEX, filter={"price": {"$lt": -1}}), squash.InputError, "filter"),
    ],
)
def test_client_raises_the_library_errors_with_the_servers_field(stack, data, call, kind, field):
    with _client(stack) as client, pytest.raises(kind) as err:
        call(client, data.queries[:3])
    assert err.value.field == field and err.value.message
    assert 400 <= err.value.status < 500


def test_unsigned_or_wrongly_signed_requests_are_403(stack):
    url = f"{stack['api_url']}/indexes/{INDEX}"
    req = urllib.request.Request(url, method="GET")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403 and json.loads(err.value.read()) == {"message": "Forbidden"}

    import boto3

    wrong = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="not-the-secret")
    with _client(stack, session=wrong) as client, pytest.raises(AuthError) as denied:
        client.info(INDEX)
    assert denied.value.status == 403 and "signature" in denied.value.message

    # a body changed after signing: the signature covers the payload's hash
    body = json.dumps({"vector": [0.0] * 32}).encode()
    qurl = f"{stack['api_url']}/indexes/{INDEX}/query"
    headers = sign("POST", qurl, body, {"content-type": "application/json"})
    tampered = urllib.request.Request(qurl, data=body.replace(b"0.0", b"1.0"), method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403


def test_client_writes_are_visible_to_the_next_query(stack, data):
    uri = f"s3://{stack['bucket']}/indexes/client-writes"
    build_index(data.base[:1000], uri, None, BuildOptions(partitions=8, seed=1))
    probe = np.full(32, 40.0, dtype=np.float32)  # far from every stored vector
    with _client(stack) as client:
        out = client.upsert("client-writes", [10_000], probe[None, :])
        assert out["upserted"] == 1
        hit = client.query("client-writes", probe, k=1)
        assert hit.ids[0, 0] == 10_000
        out = client.delete("client-writes", ids=[10_000])
        assert out["deleted"] == 1
        assert client.query("client-writes", probe, k=1).ids[0, 0] != 10_000


def test_cli_query_over_http_prints_the_in_process_answer(stack, data, tmp_path, capsys):
    from squash.cli import main

    path = tmp_path / "q.npy"
    np.save(path, data.queries[:3])
    out_json = tmp_path / "hits.json"
    argv = ["query", "--url", stack["api_url"], "--index", INDEX, "--queries", str(path), "--k", "4"]
    assert main([*argv, "--attributes", "price"]) == 0
    table = capsys.readouterr().out
    expected = squash.open_index(stack["uri"]).search(data.queries[:3], k=4)
    lines = table.splitlines()
    assert lines[0].split() == ["query", "rank", "id", "distance", "score", "price"]
    printed = [[int(f) for f in line.split()[:3]] for line in lines[1:13]]
    assert [row[2] for row in printed] == expected.ids.ravel().tolist()
    assert main([*argv, "--output", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert [[h["id"] for h in row] for row in doc["results"]] == expected.ids.tolist()
    (tmp_path / "f.json").write_text('{"price": {"$lt": 30}}')
    assert main([*argv, "--filter", f"@{tmp_path / 'f.json'}", "--output", str(out_json)]) == 0
    filtered = squash.open_index(stack["uri"]).search(data.queries[:3], k=4, filter={"price": {"$lt": 30}})
    rows = json.loads(out_json.read_text())["results"]
    assert [[h["id"] for h in row] for row in rows] == filtered.ids.tolist()
    assert main([*argv[:-4], "--queries", str(path), "--attributes", "nope"]) != 0
    assert "nope" in capsys.readouterr().err


def test_build_fanned_out_over_the_stack_writes_the_local_builds_bytes(stack, data, tmp_path, monkeypatch):
    """`squash build --on lambda`: the stack's worker functions quantize the partitions
    (through the real Invoke path); the files equal a local build's, byte for byte."""
    if (stack["branching"], stack["depth"]) != SHAPES[-1]:
        pytest.skip("one tree shape is enough: the build invokes worker 0 only")
    if "lambda_endpoint" not in stack:
        pytest.skip("needs the stack's Lambda endpoint")
    import pyarrow.parquet as pq
    from build_files import assert_same_index, local_files, s3_files

    from squash.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", stack["lambda_endpoint"])
    np.save(tmp_path / "v.npy", data.base)
    pq.write_table(data.attributes, tmp_path / "a.parquet")
    common = ["--vectors", str(tmp_path / "v.npy"), "--attributes", str(tmp_path / "a.parquet")]
    common += ["--partitions", "24", "--seed", "3", "--calibration-size", "60", "--quiet"]
    uri = f"s3://{stack['bucket']}/indexes/fanout"
    assert main(["build", *common, "--index-uri", str(tmp_path / "local")]) == 0
    assert (
        main(["build", *common, "--index-uri", uri, "--on", "lambda", "--stack", "squash", "--workers", "2"])
        == 0
    )
    fanned = s3_files(stack["bucket"], "indexes/fanout/")
    assert not [k for k in fanned if "/inputs/" in k]
    assert_same_index(local_files(tmp_path / "local"), fanned)
    ids = squash.open_index(uri).search(data.queries, k=10).ids
    np.testing.assert_array_equal(
        ids, squash.open_index(str(tmp_path / "local")).search(data.queries, k=10).ids
    )
