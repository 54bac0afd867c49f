"""Shared fixtures: datasets, a moto S3 server on 127.0.0.1, small indexes."""

from __future__ import annotations

import os
import socket

import pytest

from squash.datasets import fashion_mnist_available, load_fashion_mnist, synthetic_mixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_s3():
    """A moto S3 server on loopback; yields its endpoint URL and stops it afterwards."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_s3):
    """A fresh bucket name on the moto server."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def small_data():
    return synthetic_mixture(n=3000, d=32, n_queries=50, clusters=12, seed=1)


@pytest.fixture(scope="session")
def fashion():
    if not fashion_mnist_available():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is missing: .ci/run must apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    return load_fashion_mnist(n_queries=1000)
