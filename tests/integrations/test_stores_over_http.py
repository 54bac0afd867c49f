"""The framework stores over the real squash.Client and a local stack (IAM auth, writes on):
LangChain's standard suite and a LlamaIndex round trip, through HTTP → coordinator → workers."""

from __future__ import annotations

import uuid
from collections.abc import Generator

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests
from signed import LOCAL_SESSION

from squash import Client
from squash.integrations import create_index
from squash.integrations.langchain import SquashVectorStore

EMBEDDING_SIZE = 6  # langchain_tests' DeterministicFakeEmbedding size


class TestSquashOverHttpStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, stack) -> Generator[VectorStore, None, None]:
        # Over HTTP the index must exist first: an empty one made with create_index in S3.
        name = f"lc-{uuid.uuid4().hex[:10]}"
        create_index(f"{stack['index_uri_prefix']}{name}", EMBEDDING_SIZE)
        with Client(stack["api_url"], session=LOCAL_SESSION) as client:
            yield SquashVectorStore(self.get_embeddings(), client=client, index_name=name)
