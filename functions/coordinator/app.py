"""Coordinator Lambda: HTTP API routes and direct invocation, thin over squash.runtime.

Routes (API Gateway HTTP API, payload 2.0):
  POST /indexes/{index}/query   search (body: vector|vectors, k, filter, include, params)
  GET  /indexes/{index}         manifest summary
  GET  /health                  liveness, no storage access
A direct invocation carries the query body plus ``"index"`` and gets the same JSON back.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit

from squash.errors import InputError, SquashError
from squash.runtime import deadline
from squash.runtime.codec import dumps
from squash.runtime.config import RuntimeConfig
from squash.runtime.coordinator import Coordinator
from squash.runtime.http import ALLOWED_ACTIONS, check_http_event, error_body, is_http_event, status_of
from squash.runtime.invoke import LambdaInvoker
from squash.runtime.requests import parse_body, parse_delete, parse_query, parse_upsert

logger = Logger()
metrics = Metrics()
tracer = Tracer()
app = APIGatewayHttpResolver()

CONFIG = RuntimeConfig.from_env()
COORDINATOR = Coordinator(
    CONFIG, LambdaInvoker(CONFIG.retries, CONFIG.backoff_s, timeout_s=CONFIG.invoke_timeout_s)
)


def _json(status: int, doc: Any) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=dumps(doc).decode())


@app.get("/health")
def health() -> Response:
    tree = CONFIG.tree
    return _json(
        200, {"status": "ok", "tree": {"branching": tree.branching, "depth": tree.depth, "nodes": tree.size}}
    )


@app.get("/indexes/<index>")
def index_info(index: str) -> Response:
    return _json(200, COORDINATOR.info(index, _deadline(app.lambda_context, http=True)))


@app.post("/indexes/<index>/delete")
def delete(index: str) -> Response:
    body = parse_delete(parse_body(_raw_body(app.current_event)))
    out = COORDINATOR.delete(index, body, _deadline(app.lambda_context, http=True))
    metrics.add_metric(name="RowsDeleted", unit=MetricUnit.Count, value=out["deleted"])
    return _json(200, out)


@app.post("/indexes/<index>/upsert")
def upsert(index: str) -> Response:
    body = parse_upsert(parse_body(_raw_body(app.current_event)))
    out = COORDINATOR.upsert(index, body, _deadline(app.lambda_context, http=True))
    metrics.add_metric(name="RowsUpserted", unit=MetricUnit.Count, value=len(body["ids"]))
    return _json(200, out)


@app.post("/indexes/<index>/query")
def query(index: str) -> Response:
    body = parse_body(_raw_body(app.current_event))
    return _json(200, _search(index, body, _deadline(app.lambda_context, http=True)))


def _deadline(context: Any, http: bool) -> float:
    """When this invocation must have answered: the function's time left (or its configured
    timeout) minus a margin, for HTTP also within API Gateway's 30 s from when it received
    the request; the tree gets less."""
    left = deadline.remaining_s(context, CONFIG.invoke_timeout_s)
    until = deadline.from_remaining(left, CONFIG.deadline_margin_s)
    if http:
        received = app.current_event.raw_event["requestContext"].get("timeEpoch")  # checked: a dict
        until = min(until, deadline.api_gateway(received, CONFIG.deadline_margin_s))
    return until


def _raw_body(event: Any) -> str | bytes | None:
    """The body as sent: base64-encoded bodies are decoded to bytes (not to text), so a
    body that is not UTF-8 is a 400 from parse_body, whatever its content type."""
    body = event.body
    if not event.is_base64_encoded or not body:
        return body
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("request body is marked base64 but is not valid base64", field="body") from exc


@app.not_found
def not_found(_exc: Exception) -> Response:
    method, path = app.current_event.http_method, app.current_event.path
    return _json(404, error_body(InputError(f"no route for {method} {path}", field="path")))


@app.exception_handler(SquashError)
def squash_error(exc: SquashError) -> Response:
    status = status_of(exc)
    (logger.warning if status < 500 else logger.error)(
        "request failed", extra={"status": status, "error": exc.message}
    )
    return _json(status, error_body(exc))


def _search(index: str, body: Any, until: float) -> dict[str, Any]:
    out = COORDINATOR.query(index, parse_query(body), until)
    stats = out["stats"]
    metrics.add_metric(name="Queries", unit=MetricUnit.Count, value=stats["queries"])
    metrics.add_metric(name="NodesInvoked", unit=MetricUnit.Count, value=stats["nodes"]["invoked"])
    metrics.add_metric(name="S3BytesRead", unit=MetricUnit.Bytes, value=stats["s3"]["bytes_read"])
    metrics.add_metric(name="QueryLatency", unit=MetricUnit.Milliseconds, value=stats["timings_ms"]["total"])
    return out


def _direct(event: Any, context: Any) -> dict[str, Any]:
    """Batch jobs invoke the function with the query body plus "index"; errors come back as JSON."""
    until = _deadline(context, http=False)
    try:
        if not isinstance(event, dict):
            raise InputError("event must be a JSON object", field="body")
        body = dict(event)
        name = body.pop("index", None)
        if name is None:
            raise InputError('direct invocation needs "index" (the index name)', field="index")
        if not isinstance(name, str):
            raise InputError(f"index must be a string (the index name), got {name!r}", field="index")
        action = body.pop("action", "query")
        if action not in ALLOWED_ACTIONS:  # not str? `in` on a tuple of str is simply False
            raise InputError(
                f"unknown action {action!r}; allowed: {', '.join(ALLOWED_ACTIONS)}", field="action"
            )
        if action == "info":
            if body:
                raise InputError(
                    f'action info takes only "index", not {", ".join(sorted(map(str, body)))}',
                    field=str(next(iter(body))),
                )
            return COORDINATOR.info(name, until)
        if action == "delete":
            return COORDINATOR.delete(name, parse_delete(body), until)
        if action == "upsert":
            return COORDINATOR.upsert(name, parse_upsert(body), until)
        return _search(name, body, until)
    except SquashError as exc:
        return error_body(exc) | {"status": status_of(exc)}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: Any, context: Any) -> dict[str, Any]:
    if is_http_event(event):
        try:
            check_http_event(event)
        except InputError as exc:  # a hand-made partial envelope: answered like a direct call
            return error_body(exc) | {"status": status_of(exc)}
        return app.resolve(event, context)
    return _direct(event, context)
