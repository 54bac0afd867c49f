"""LangChain's standard vector-store suite over both backends: an in-process index, and the
client backend (a fake client delegating to an in-process index)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

pytest.importorskip("langchain_tests")

from fake_client import FakeClient
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from squash.integrations import create_index
from squash.integrations.langchain import SquashVectorStore

EMBEDDING_SIZE = 6  # langchain_tests' DeterministicFakeEmbedding size


class TestSquashIndexStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> Generator[VectorStore, None, None]:
        # No index at the URI yet: the store is empty and its first add builds one.
        yield SquashVectorStore(self.get_embeddings(), uri=f"file://{tmp_path}/index")


class TestSquashClientStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> Generator[VectorStore, None, None]:
        # Over HTTP the index must exist first: an empty one made with create_index.
        client = FakeClient(tmp_path)
        create_index(client.uri("docs"), EMBEDDING_SIZE)
        yield SquashVectorStore(self.get_embeddings(), client=client, index_name="docs")
