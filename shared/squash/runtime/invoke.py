"""Synchronous Lambda invocation of a tree node, with bounded retries and clear failures.

A child that crashes, times out or is throttled is retried with exponential backoff. A
child that answers with a structured error (its own subtree failed after *its* retries)
is not retried again: that would multiply attempts by the depth of the tree. When the
retries are spent the caller gets an :class:`UpstreamError` (502 or 503), never a
silently smaller answer.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from ..errors import DeadlineExceededError, PayloadTooLargeError, UpstreamError
from .codec import MAX_PAYLOAD_BYTES, dumps

#: Lambda error types that mean "try again later" rather than "this request is broken".
_THROTTLED = {
    "TooManyRequestsException",
    "ServiceException",
    "EC2ThrottledException",
    "ResourceNotReadyException",
}


class Invoker(Protocol):
    def __call__(self, function: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class LambdaInvoker:
    """Invoke a function with RequestResponse through a plain boto3 Lambda client.

    ``AWS_ENDPOINT_URL_LAMBDA`` points the client at the local stack or LocalStack.
    """

    def __init__(self, retries: int = 2, backoff_s: float = 0.05, timeout_s: float = 30.0, client=None):
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "lambda",
                config=Config(
                    connect_timeout=5,
                    read_timeout=self.timeout_s + 5,
                    retries={"max_attempts": 0},  # retried here, with our own accounting
                    max_pool_connections=64,
                ),
            )
        return self._client

    def __call__(self, function: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            body = dumps(payload)
        except (TypeError, ValueError) as exc:  # NaN or a foreign type in what a caller sent us
            raise UpstreamError(f"request to {function} cannot be encoded as JSON: {exc}") from exc
        if len(body) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError(
                f"request to {function} is {len(body) / 2**20:.1f} MiB, over Lambda's 6 MiB limit"
            )
        deadline = payload.get("deadline")  # retries stop when the request's time is up
        last, status = "", 502
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2 ** (attempt - 1)
                if isinstance(deadline, float | int) and time.time() + pause >= deadline:
                    raise DeadlineExceededError(
                        f"worker {function}: no time left for a retry after {attempt} attempt(s): {last}"
                    )
                time.sleep(pause)
            try:
                resp = self.client.invoke(
                    FunctionName=function, InvocationType="RequestResponse", Payload=body
                )
            except Exception as exc:  # botocore raises many unrelated types
                last, status, retry = _classify(exc)
                if status == 413:
                    raise PayloadTooLargeError(f"request to {function} rejected: {last}") from exc
                if not retry:
                    break
                continue
            raw = resp["Payload"].read()
            if resp.get("FunctionError"):
                last, status = _function_error(raw), 502
                if "timed out" in last.lower():
                    status = 503
                continue
            try:
                out = json.loads(raw)
            except ValueError:
                last, status = f"{function} returned a payload that is not JSON", 502
                continue
            if isinstance(out, dict) and "error" in out:
                raise child_error(out["error"])  # a descendant failed after its own retries: pass it up
            return out
        raise UpstreamError(
            f"worker {function} failed after {attempt + 1} attempt(s): {last}",
            status=status,
        )


def child_error(err: Any) -> UpstreamError:
    """The exception for a child's structured ``{"error": {...}}`` answer, code kept."""
    if not isinstance(err, dict):
        return UpstreamError("a worker answered a malformed error", status=502)
    message = str(err.get("message", "worker failed"))
    if err.get("code") == "deadline_exceeded":
        return DeadlineExceededError(message)
    code = err.get("code")
    if code in _PASSED_CODES and err.get("status") == _PASSED_CODES[code]:
        return UpstreamError(message, status=err["status"], code=code)
    return UpstreamError(message, status=err.get("status") if err.get("status") in (502, 503) else 502)


#: Error codes (and their statuses) of a child's answer that reach the client unchanged.
_PASSED_CODES = {"worker_failed": 502, "worker_unavailable": 503, "storage_error": 503, "index_corrupt": 500}


def _classify(exc: Exception) -> tuple[str, int, bool]:
    """(message, HTTP status, retry?) for an exception raised by ``invoke``."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        msg = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in _THROTTLED:
            return f"{code}: {msg}", 503, True
        if code == "ResourceNotFoundException":
            return f"{msg} (is the worker tree deployed for this shape?)", 502, False
        if code == "RequestEntityTooLargeException":
            return f"{code}: {msg}", 413, False
        return f"{code}: {msg}", 502, False
    return f"{type(exc).__name__}: {exc}", 503, True  # timeouts, refused connections


def _function_error(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        return f"{doc.get('errorType', 'Error')}: {doc.get('errorMessage', '')}".strip()
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")
