"""SigV4 headers for requests to a local stack's HTTP API (IAM auth, the stack's local key)."""

from __future__ import annotations

import boto3

from squash.client import Signer

#: The key ``infra/local/stack.py`` makes its HTTP API accept (``stack.LOCAL_KEY``).
LOCAL_SESSION = boto3.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


def sign(method: str, url: str, body: bytes | None, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the SigV4 ones for ``method url body``."""
    return Signer(url, "us-east-1", LOCAL_SESSION).sign(method, url, body, dict(headers or {}))


def local_lambda_client(endpoint: str, read_timeout: float = 30):
    """A boto3 Lambda client for the local stack's router (its key, no retries: callers count)."""
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=5)
    return LOCAL_SESSION.client("lambda", endpoint_url=endpoint, config=config)
