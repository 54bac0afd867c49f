"""Coordinator Lambda: HTTP API routes and direct invocation, thin over squash.runtime.

Routes (API Gateway HTTP API, payload 2.0); bodies are validated by Powertools against the
pydantic models of squash.runtime.requests, which also give the OpenAPI document:
  POST /indexes/{index}/query    search (body: vector|vectors, k, filter, include, params, encoding)
  POST /indexes/{index}/upsert   insert or replace rows (EnableWrites=true)
  POST /indexes/{index}/delete   delete by ids or filter (EnableWrites=true)
  GET  /indexes/{index}          manifest summary
  GET  /indexes                  the index names this deployment serves
  GET  /health                   liveness, no storage access
  GET  /openapi.json             the OpenAPI document (functions/coordinator/openapi.json)
  GET  /swagger                  Swagger UI, when SQUASH_SWAGGER_UI=true (EnableSwaggerUI)
A direct invocation carries the query body plus ``"index"`` and gets the same JSON back.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.metrics import MetricUnit

from squash.errors import InputError, SquashError
from squash.runtime import deadline
from squash.runtime import responses as docs
from squash.runtime.codec import dumps
from squash.runtime.config import RuntimeConfig
from squash.runtime.coordinator import Coordinator
from squash.runtime.http import ALLOWED_ACTIONS, check_http_event, error_body, is_http_event, status_of
from squash.runtime.invoke import LambdaInvoker
from squash.runtime.requests import (
    DeleteBody,
    QueryBody,
    QueryRequest,
    UpsertBody,
    input_error,
    parse_body,
    parse_delete,
    parse_query,
    parse_upsert,
)

TITLE = "SQUASH vector search"
API_VERSION = "0.1.0"
SWAGGER_UI = os.environ.get("SQUASH_SWAGGER_UI", "").strip().lower() in ("true", "1")


class _Bodies(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with the body parsed our way: JSON whatever the
    content type (curl -d sends form-urlencoded), base64 bodies decoded to bytes, and the
    hardened parser (UTF-8, depth, duplicate keys) instead of json.loads."""

    def _get_body(self, app: Any) -> Any:
        return parse_body(_raw_body(app.current_event))


logger = Logger()
metrics = Metrics()
tracer = Tracer()
app = APIGatewayHttpResolver(enable_validation=True)
app._request_validation_middleware = _Bodies()  # read when the route's middleware stack is built

CONFIG = RuntimeConfig.from_env()
COORDINATOR = Coordinator(
    CONFIG, LambdaInvoker(CONFIG.retries, CONFIG.backoff_s, timeout_s=CONFIG.invoke_timeout_s)
)


def _json(status: int, doc: Any) -> Response[str]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=dumps(doc).decode())


@app.get(
    "/health",
    operation_id="health",
    summary="Liveness and tree shape (no storage access)",
    responses=docs.responses(docs.Health, "Alive"),
)
def health() -> Response[str]:
    tree = CONFIG.tree
    return _json(
        200, {"status": "ok", "tree": {"branching": tree.branching, "depth": tree.depth, "nodes": tree.size}}
    )


@app.get(
    "/indexes",
    operation_id="listIndexes",
    summary="The index names this deployment serves",
    responses=docs.responses(docs.IndexList, "Index names, sorted", 503),
)
def list_indexes() -> Response[str]:
    return _json(200, COORDINATOR.list_indexes(_deadline(app.lambda_context, http=True)))


@app.get(
    "/indexes/<index>",
    operation_id="describeIndex",
    summary="Manifest summary of an index",
    responses=docs.responses(docs.IndexInfo, "The summary", 400, 404, 500, 503, 504),
)
def index_info(index: str) -> Response[str]:
    return _json(200, COORDINATOR.info(index, _deadline(app.lambda_context, http=True)))


@app.post(
    "/indexes/<index>/delete",
    operation_id="delete",
    summary="Delete rows by ids or filter (EnableWrites=true)",
    responses=docs.responses(docs.DeleteAnswer, "Committed", 400, 403, 404, 409, 500, 503),
)
def delete(index: str, body: Annotated[DeleteBody, Body()]) -> Response[str]:
    out = COORDINATOR.delete(
        index, body.model_dump(exclude_unset=True), _deadline(app.lambda_context, http=True)
    )
    metrics.add_metric(name="RowsDeleted", unit=MetricUnit.Count, value=out["deleted"])
    return _json(200, out)


@app.post(
    "/indexes/<index>/upsert",
    operation_id="upsert",
    summary="Insert or replace rows (EnableWrites=true)",
    responses=docs.responses(docs.UpsertAnswer, "Committed", 400, 403, 404, 409, 413, 500, 503),
)
def upsert(index: str, body: Annotated[UpsertBody, Body()]) -> Response[str]:
    rows = body.model_dump(exclude_unset=True)
    out = COORDINATOR.upsert(index, rows, _deadline(app.lambda_context, http=True))
    metrics.add_metric(name="RowsUpserted", unit=MetricUnit.Count, value=len(rows["ids"]))
    return _json(200, out)


@app.post(
    "/indexes/<index>/query",
    operation_id="query",
    summary="k-NN search, plain or filtered, one query or a batch",
    responses=docs.responses(
        docs.QueryAnswer | docs.BinaryQueryAnswer,
        "Hits per query (encoding json), or packed arrays (encoding binary)",
        400,
        404,
        413,
        500,
        502,
        503,
        504,
    ),
)
def query(index: str, body: Annotated[QueryBody, Body()]) -> Response[str]:
    return _json(200, _search(index, body.request(), _deadline(app.lambda_context, http=True)))


@app.get("/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_text())


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document Powertools generates from the routes and models, without its
    default 422 answers (our validation errors are 400s with the ErrorBody shape)."""
    doc = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=API_VERSION, summary=__doc__.splitlines()[0])
    )
    for item in doc.get("paths", {}).values():
        for op in item.values():
            op.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    text = json.dumps({k: v for k, v in doc.items() if k != "components"})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        if f'/{name}"' not in text:
            schemas.pop(name, None)
    return doc


_OPENAPI: list[str] = []


def openapi_text() -> str:
    """openapi_document() as the committed file holds it (sorted keys, 2-space indent)."""
    if not _OPENAPI:
        _OPENAPI.append(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    return _OPENAPI[0]


if SWAGGER_UI:
    app.enable_swagger(path="/swagger", title=TITLE, version=API_VERSION)


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
def not_found(_exc: Exception) -> Response[str]:
    method, path = app.current_event.http_method, app.current_event.path
    return _json(
        404, {"error": {"code": "not_found", "message": f"no route for {method} {path}", "field": "path"}}
    )


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response[str]:
    """What pydantic found wrong, in the documented 400 shape (field: the offending key)."""
    return squash_error(input_error(list(exc.errors())))


@app.exception_handler(SquashError)
def squash_error(exc: SquashError) -> Response[str]:
    status = status_of(exc)
    (logger.warning if status < 500 else logger.error)(
        "request failed", extra={"status": status, "error": exc.message}
    )
    return _json(status, error_body(exc))


def _search(index: str, req: QueryRequest, until: float) -> dict[str, Any]:
    out = COORDINATOR.query(index, req, until)
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
        if action in ("info", "warm"):
            if body:
                raise InputError(
                    f'action {action} takes only "index", not {", ".join(sorted(map(str, body)))}',
                    field=str(next(iter(body))),
                )
            return (COORDINATOR.info if action == "info" else COORDINATOR.warm)(name, until)
        if action == "delete":
            return COORDINATOR.delete(name, parse_delete(body), until)
        if action == "upsert":
            return COORDINATOR.upsert(name, parse_upsert(body), until)
        return _search(name, parse_query(body), until)
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
