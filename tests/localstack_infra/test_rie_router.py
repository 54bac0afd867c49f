"""The Lambda router, through a plain boto3 Lambda client, on toy handlers run by the real RIE."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time

import botocore.exceptions
import pytest
from lstack_util import wait_until
from procs import pid_alive
from signed import local_lambda_client as lambda_client

FUNCTIONS = {
    "echo": ("app.handler", 10),
    "warm": ("app.handler", 10),
    "busy": ("app.handler", 10),
    "victim": ("app.handler", 10),
    "midway": ("app.handler", 10),
    "slow": ("app.handler", 1),
    "errors": ("app.handler", 10),
}


@pytest.fixture(scope="module")
def router(start_router):
    return start_router(FUNCTIONS)


@pytest.fixture(scope="module")
def client(router):
    return lambda_client(router.url)


def invoke(client, name: str, payload: object = None, **kwargs) -> tuple[dict, object]:
    raw = json.dumps(payload if payload is not None else {})
    resp = client.invoke(FunctionName=name, Payload=raw, **kwargs)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def processes(router, name: str) -> list[dict]:
    return router.get("/_local/functions")[name]["processes"]


def test_echo_round_trip(client):
    resp, out = invoke(client, "echo", {"hello": [1, 2, 3]})
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"
    assert out["event"] == {"hello": [1, 2, 3]}
    assert out["function"] == "echo"
    assert out["memory"] == "256"
    assert out["request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert 0 < out["remaining_ms"] <= 10_000


def test_names_arns_and_qualifiers_resolve(client):
    for name in ("echo:$LATEST", "arn:aws:lambda:us-east-1:000000000000:function:echo", "000000000000:echo"):
        resp, out = invoke(client, name, {"n": 1})
        assert resp["StatusCode"] == 200 and out["function"] == "echo", name
    resp, out = invoke(client, "echo", {"n": 2}, Qualifier="$LATEST")
    assert out["event"] == {"n": 2}


def test_warm_process_is_reused(router, client):
    _, first = invoke(client, "warm")
    _, second = invoke(client, "warm")
    assert second["pid"] == first["pid"]
    assert second["count"] == first["count"] + 1  # module state survived: a warm start
    info = router.get("/_local/functions")["warm"]
    assert info["cold_starts"] == 1 and info["invocations"] == 2
    [proc] = info["processes"]
    assert proc["runtime_pid"] == first["pid"] and proc["invocations"] == 2 and not proc["busy"]


def test_concurrent_calls_cold_start_a_second_process(router, client):
    results: list[dict] = []

    def call() -> None:
        results.append(invoke(client, "busy", {"action": "sleep", "seconds": 0.6})[1])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len({r["pid"] for r in results}) == 2
    info = router.get("/_local/functions")["busy"]
    assert info["cold_starts"] == 2 and len(info["processes"]) == 2


@pytest.mark.parametrize("which", ["pid", "runtime_pid"])
def test_killed_process_is_replaced(router, client, which):
    _, before = invoke(client, "victim")
    [proc] = [p for p in processes(router, "victim") if p["runtime_pid"] == before["pid"]]
    os.kill(proc[which], signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(proc[which]))
    resp, after = invoke(client, "victim")
    assert "FunctionError" not in resp
    assert after["pid"] != before["pid"] and after["count"] == 1  # a fresh, cold process
    assert proc["pid"] not in [p["pid"] for p in processes(router, "victim")]
    assert wait_until(lambda: not pid_alive(proc["pid"]) and not pid_alive(proc["runtime_pid"]))


def test_process_killed_mid_invocation_is_an_exit_error(router, client):
    invoke(client, "midway")
    [proc] = processes(router, "midway")
    threading.Timer(0.3, os.kill, (proc["pid"], signal.SIGKILL)).start()
    resp, out = invoke(client, "midway", {"action": "sleep", "seconds": 5})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    resp, out = invoke(client, "midway")
    assert "FunctionError" not in resp and out["count"] == 1


def test_handler_exception_is_unhandled_function_error(router, client):
    resp, out = invoke(client, "errors", {"action": "raise"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError" and out["errorMessage"] == "boom"
    assert isinstance(out["stackTrace"], list)
    _, again = invoke(client, "errors")
    assert again["count"] == 2  # the process survived its handler's exception, as on Lambda


def test_os_exit_is_runtime_exit_error_and_process_replaced(router, client):
    _, before = invoke(client, "errors")
    resp, out = invoke(client, "errors", {"action": "exit"})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    _, after = invoke(client, "errors")
    assert after["pid"] != before["pid"]


def test_timeout_kills_and_replaces_the_process(router, client):
    _, before = invoke(client, "slow")
    [proc] = processes(router, "slow")
    started = time.monotonic()
    resp, out = invoke(client, "slow", {"action": "sleep", "seconds": 5})
    assert time.monotonic() - started < 3
    assert resp["FunctionError"] == "Unhandled"
    assert out == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    assert wait_until(lambda: not pid_alive(proc["pid"]) and not pid_alive(before["pid"]))
    _, after = invoke(client, "slow")
    assert after["pid"] != before["pid"] and after["count"] == 1


def test_unknown_function_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as err:
        invoke(client, "nope")
    assert err.value.response["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    )
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_request_over_6mb_is_rejected(client):
    limit = 6_291_456
    ok = json.dumps("x" * (limit - 2))  # exactly 6 MB of JSON
    resp = client.invoke(FunctionName="echo", Payload=ok)
    assert json.loads(resp["Payload"].read()) == limit - 2
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.invoke(FunctionName="echo", Payload=json.dumps("x" * (limit - 1)))
    assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


@pytest.mark.parametrize("size", [6_291_460, 7_000_000])  # caught by the router / by the RIE itself
def test_response_over_6mb_is_a_function_error(client, size):
    resp, out = invoke(client, "echo", {"action": "big", "size": size})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Function.ResponseSizeTooLarge"


def test_invalid_json_is_invalid_request_content(client):
    """Parsed once, by the runtime (the router does not parse synchronous payloads itself):
    its unmarshal error is still Lambda's 400, and the process stays warm for the next call."""
    for bad in (b"{not json", b'{"a": 1,}', b"[1, 2"):
        with pytest.raises(client.exceptions.InvalidRequestContentException) as err:
            client.invoke(FunctionName="echo", Payload=bad)
        assert "Could not parse request body into json" in str(err.value)
    resp, out = invoke(client, "echo", {"after": "bad json"})
    assert "FunctionError" not in resp and out["event"] == {"after": "bad json"}


def test_event_and_dry_run_invocations(router, client):
    before = router.get("/_local/functions")["echo"]["invocations"]
    assert client.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")["StatusCode"] == 204
    assert client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert wait_until(lambda: router.get("/_local/functions")["echo"]["invocations"] == before + 1)


def test_log_tail(client):
    resp = client.invoke(FunctionName="echo", Payload=b"{}", LogType="Tail")
    assert "REPORT RequestId" in base64.b64decode(resp["LogResult"]).decode()


def test_function_environment_is_lambda_like(router, client):
    _, env = invoke(client, "echo", {"action": "env"})
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "echo"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "10"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == router.url
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9"
    assert env["TOY_SETTING"] == "echo"
    code_dir, shared = env["PYTHONPATH"].split(":")
    assert shared.endswith("/shared") and env["LAMBDA_TASK_ROOT"] == code_dir
    assert "PYTEST_CURRENT_TEST" not in env and "VIRTUAL_ENV" not in env  # not the router's environment


def test_health(router):
    assert router.get("/_local/health")["status"] == "ok"


def test_throttle_and_idle_reaping(start_router):
    small = start_router({"one": ("app.handler", 10)}, "--concurrency", "1", "--throttle-wait", "0.2")
    client = lambda_client(small.url)
    first = threading.Thread(target=invoke, args=(client, "one", {"action": "sleep", "seconds": 1.5}))
    first.start()
    try:
        assert wait_until(lambda: any(p["busy"] for p in processes(small, "one")))
        with pytest.raises(client.exceptions.TooManyRequestsException):
            invoke(client, "one")
    finally:
        first.join(timeout=20)
    assert small.get("/_local/functions")["one"]["throttles"] == 1

    reaping = start_router({"idle": ("app.handler", 10)}, "--idle-seconds", "0.5")
    client = lambda_client(reaping.url)
    _, out = invoke(client, "idle")
    assert wait_until(lambda: not processes(reaping, "idle"), timeout_s=5)
    assert wait_until(lambda: not pid_alive(out["pid"]))
