"""The framework stores over the real squash.Client and a local stack (IAM auth, writes on):
LangChain's standard suite and a LlamaIndex round trip, through HTTP → coordinator → workers."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests
from signed import LOCAL_SESSION

from squash import Client
from squash.integrations import create_index
from squash.integrations.langchain import SquashVectorStore

STACK = Path(__file__).resolve().parents[2] / "infra" / "local" / "stack.py"
EMBEDDING_SIZE = 6  # langchain_tests' DeterministicFakeEmbedding size


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("stores-stack")
    up = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", "2", "--depth", "1"]
    subprocess.run(up, check=True, timeout=120, capture_output=True)
    endpoints = json.loads((folder / "endpoints.json").read_text())
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL_S3", endpoints["s3_endpoint"])
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        mp.setenv(key, value)
    mp.setenv("AWS_DEFAULT_REGION", endpoints["region"])
    try:
        yield endpoints
    finally:
        mp.undo()
        subprocess.run([sys.executable, str(STACK), "down", "--dir", str(folder)], check=True, timeout=60)


class TestSquashOverHttpStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, stack) -> Generator[VectorStore, None, None]:
        # Over HTTP the index must exist first: an empty one made with create_index in S3.
        name = f"lc-{uuid.uuid4().hex[:10]}"
        create_index(f"{stack['index_uri_prefix']}{name}", EMBEDDING_SIZE)
        with Client(stack["api_url"], session=LOCAL_SESSION) as client:
            yield SquashVectorStore(self.get_embeddings(), client=client, index_name=name)
