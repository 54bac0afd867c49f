#!/usr/bin/env python3
"""Fail fast, and say why, when no LocalStack with SQUASH deployed is reachable.

``make localstack-test`` runs this before the integration suite, so a missing LocalStack is one
clear line after a few seconds instead of a suite of connection errors. Checks, in order:
LocalStack's health endpoint answers at the configured endpoint (``--endpoint``,
``$LOCALSTACK_URL``, else localstack-client's ``$AWS_ENDPOINT_URL`` / ``$LOCALSTACK_HOST`` /
``localhost:4566``); the endpoints file written by ``make localstack-up`` exists; its index
bucket answers through a localstack-client S3 session.

    python localstack/check.py [--endpoint URL] [--endpoints .local/localstack-endpoints.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from botocore.config import Config
from ls_session import endpoint_url, session

TIMEOUT_S = 3.0


def health(endpoint: str, timeout_s: float = TIMEOUT_S) -> dict:
    """LocalStack's ``/_localstack/health`` document; raises OSError/ValueError when there is none."""
    with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=timeout_s) as resp:
        doc = json.loads(resp.read())
    if not isinstance(doc, dict) or "services" not in doc:
        raise ValueError("the answer is not LocalStack's health document")
    return doc


def check(endpoint: str | None, endpoints_file: Path | None) -> str | None:
    """None when LocalStack (and the deployed stack, with ``endpoints_file``) answers; else why not."""
    try:
        url = endpoint_url(endpoint)
    except ValueError as exc:
        return str(exc)
    try:
        doc = health(url)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code} on /_localstack/health: not LocalStack?"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return (
            f"no LocalStack is reachable at {url} ({reason}). Start it with make localstack-up "
            "(needs Docker), or point LOCALSTACK_URL (or LOCALSTACK_HOST) at a running one"
        )
    print(f"check: LocalStack {doc.get('version', '?')} ({doc.get('edition', '?')}) at {url}")
    if endpoints_file is None:
        return None
    if not endpoints_file.is_file():
        return f"{endpoints_file} is missing: SQUASH is not deployed there yet; run make localstack-up"
    try:
        bucket = json.loads(endpoints_file.read_text())["bucket"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"{endpoints_file} is not an endpoints file ({exc!r}); run make localstack-up again"
    quick = Config(connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"total_max_attempts": 1})
    try:
        session(url).client("s3", config=quick).head_bucket(Bucket=bucket)
    except Exception as exc:  # any failure means the same: the deployment is not there
        return f"the index bucket {bucket} does not answer through {url} ({exc}); run make localstack-up"
    print(f"check: index bucket {bucket} answers")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=os.environ.get("LOCALSTACK_URL") or None)
    ap.add_argument("--endpoints", type=Path, default=None, help="endpoints file of make localstack-up")
    args = ap.parse_args(argv)
    why = check(args.endpoint, args.endpoints)
    if why:
        print(f"localstack-test: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
