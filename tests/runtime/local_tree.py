"""An in-process stand-in for the Lambda Invoke API: worker nodes called as functions."""

from __future__ import annotations

import json

from squash.errors import UpstreamError
from squash.runtime.codec import dumps
from squash.runtime.invoke import child_error
from squash.runtime.worker import WorkerNode


class LocalTree:
    """Worker nodes keyed by function name; payloads cross a JSON boundary like Lambda's."""

    def __init__(self, prefix: str, size: int) -> None:
        self.nodes = {f"{prefix}-worker-{i}": WorkerNode(self, 1 << 30) for i in range(size)}
        self.calls: list[str] = []
        self.fail: dict[str, int] = {}  # function -> failures left before it answers

    def __call__(self, function: str, payload: dict) -> dict:
        self.calls.append(function)
        if self.fail.get(function):
            self.fail[function] -= 1
            raise UpstreamError(f"worker {function} failed", status=502)
        if function not in self.nodes:  # as the Invoke API's ResourceNotFoundException
            raise UpstreamError(f"Function not found: {function}", status=502)
        out = self.nodes[function].handle(json.loads(dumps(payload)))
        out = json.loads(dumps(out))
        if "error" in out:
            raise child_error(out["error"])
        return out
