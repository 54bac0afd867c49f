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
