"""boto3 sessions against LocalStack, through ``localstack-client`` (pinned in the dev extra).

localstack-client resolves where LocalStack listens the way LocalStack's own tools do —
``AWS_ENDPOINT_URL``, else ``LOCALSTACK_HOST`` (``host:port``), else ``localhost:4566`` — and
points every service's client there, so the scripts in this folder carry no endpoint URLs of
their own. An explicit endpoint (``--endpoint``, ``LOCALSTACK_URL``) still wins. Credentials are
LocalStack's conventional ``test``/``test``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from localstack_client import config
from localstack_client.session import Session

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def endpoint_url(explicit: str | None = None) -> str:
    """``explicit`` (checked), else the edge URL localstack-client resolves from the environment."""
    if explicit:
        url = urlparse(explicit)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL of LocalStack: {explicit!r}")
        return explicit.rstrip("/")
    return config.get_service_endpoint("edge").rstrip("/")


@contextmanager
def _endpoint_env(url: str) -> Iterator[None]:
    """localstack-client reads the endpoint from ``AWS_ENDPOINT_URL`` when a session is made."""
    before = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = before


def session(endpoint: str | None = None, region: str = REGION) -> Session:
    """A localstack-client session (``.client(name)`` as boto3's) for LocalStack at ``endpoint``."""
    url = endpoint_url(endpoint)
    with _endpoint_env(url):
        return Session(region_name=region, **CREDENTIALS)
