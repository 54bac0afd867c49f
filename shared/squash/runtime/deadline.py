"""Request deadlines that travel down the worker tree.

A deadline is an absolute wall-clock time (``time.time()`` seconds, so it means the same in
every function of the tree). The coordinator takes it from its remaining Lambda time (or the
configured function timeout) minus a safety margin; each node gives its children a slightly
earlier one, and every node answers a structured ``deadline_exceeded`` error (504) when the
time is up, instead of being killed by Lambda with nothing to say.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ..errors import DeadlineExceededError, InputError

T = TypeVar("T")

#: API Gateway's HTTP API gives up after 30 s whatever the function timeout.
API_GATEWAY_LIMIT_S = 30.0
#: What each level of the tree keeps for itself (merge, answer) below its own deadline.
HOP_S = 0.5

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="deadline")


def now() -> float:
    return time.time()


def remaining_s(context: Any, fallback_s: float) -> float:
    """Seconds this invocation has left: Lambda's ``get_remaining_time_in_millis`` when the
    context has it, else ``fallback_s`` (the configured function timeout)."""
    get = getattr(context, "get_remaining_time_in_millis", None)
    if callable(get):
        try:
            left = float(get()) / 1000.0
        except Exception:  # a context that is not Lambda's: use the configured timeout
            left = math.nan
        if math.isfinite(left) and left > 0:
            return left
    return float(fallback_s)


def from_remaining(left_s: float, margin_s: float) -> float:
    """The deadline for an invocation with ``left_s`` seconds left: a margin (at most a
    fifth of the time) is kept to answer before the platform kills the function."""
    return now() + left_s - min(margin_s, 0.2 * left_s)


def api_gateway(time_epoch_ms: Any, margin_s: float) -> float:
    """The deadline API Gateway's 30 s sets for an HTTP request it received at
    ``requestContext.timeEpoch`` (ms): a cold start's init counts against it too. A missing
    or implausible time (in the future, or older than 30 s: a replayed sample event) counts
    from now."""
    received = now()
    if isinstance(time_epoch_ms, int | float) and not isinstance(time_epoch_ms, bool):
        t = float(time_epoch_ms) / 1000.0
        if received - API_GATEWAY_LIMIT_S < t <= received + 1.0:
            received = min(t, received)
    return received + API_GATEWAY_LIMIT_S - margin_s


def for_child(deadline: float) -> float:
    """A child's deadline: ``HOP_S`` (at most a tenth of what is left) before ours, so our
    answer, merge included, still arrives in time."""
    return deadline - min(HOP_S, 0.1 * max(0.0, deadline - now()))


def parse(value: Any) -> float | None:
    """The ``deadline`` member of a worker event: absent (None) or finite epoch seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"deadline must be a finite number (epoch seconds), got {value!r}", field="deadline")
    return float(value)


def earliest(*deadlines: float | None) -> float | None:
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None


def check(deadline: float | None, what: str) -> None:
    """DeadlineExceededError when ``deadline`` has already passed: a node must not start
    work (nor invoke children, each a request fee) for an answer no one will wait for."""
    if deadline is not None and deadline - now() <= 0:
        raise DeadlineExceededError(f"{what}: the request's deadline had passed before it started")


def run_until(deadline: float | None, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, but give up with DeadlineExceededError at ``deadline``.

    The work runs on a pool thread so that a call blocked in storage or in an invocation
    cannot hold the answer; abandoned work finishes (or fails) in the background.
    """
    if deadline is None:
        return fn(*args)
    check(deadline, what)
    budget = deadline - now()
    fut = _POOL.submit(fn, *args)
    try:
        return fut.result(timeout=budget)
    except FutureTimeout as exc:
        fut.cancel()
        msg = f"{what} did not finish within the request's deadline ({budget:.1f} s)"
        raise DeadlineExceededError(msg) from exc


def wait(fut: Any, deadline: float | None, what: str) -> Any:
    """``fut.result()`` bounded by ``deadline``."""
    if deadline is None:
        return fut.result()
    try:
        return fut.result(timeout=max(0.0, deadline - now()))
    except FutureTimeout as exc:
        raise DeadlineExceededError(f"{what} did not answer within the request's deadline") from exc
