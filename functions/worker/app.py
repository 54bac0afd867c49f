"""Worker Lambda: one node of the search tree, thin over squash.runtime.worker.

The segment cache lives at module level, so a warm container answers from memory and
reads nothing from S3; the node and cache statistics travel back in the response.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from squash.runtime import deadline
from squash.runtime.config import RuntimeConfig
from squash.runtime.invoke import LambdaInvoker
from squash.runtime.worker import WorkerNode

logger = Logger()
metrics = Metrics()
tracer = Tracer()

CONFIG = RuntimeConfig.from_env()
NODE = WorkerNode(
    LambdaInvoker(CONFIG.retries, CONFIG.backoff_s, timeout_s=CONFIG.invoke_timeout_s), CONFIG.cache_bytes
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # This function's own limit; the event's deadline (the caller's) is usually earlier.
    left = deadline.remaining_s(context, CONFIG.invoke_timeout_s)
    own = deadline.from_remaining(left, CONFIG.deadline_margin_s)
    out = NODE.handle(event, own)
    if "error" in out:
        err = out["error"]
        logger.error(
            "subtree failed", extra={"status": err["status"], "code": err["code"], "detail": err["message"]}
        )
    elif out.get("warmed"):  # the warm job: segments loaded, no search
        metrics.add_metric(name="SegmentsLoaded", unit=MetricUnit.Count, value=out["s3"]["segments_loaded"])
    elif "built" in out:  # a fanned-out build's partitions (squash build --on lambda)
        metrics.add_metric(name="PartitionsBuilt", unit=MetricUnit.Count, value=len(out["built"]))
    else:
        s3 = out["stats"]["s3"]
        metrics.add_metric(name="SegmentsLoaded", unit=MetricUnit.Count, value=s3["segments_loaded"])
        metrics.add_metric(name="CacheHits", unit=MetricUnit.Count, value=s3["cache_hits"])
        logger.debug("node done", extra={"position": event["position"], "cache_bytes": NODE.cache.nbytes})
    return out
