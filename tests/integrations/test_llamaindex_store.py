"""The LlamaIndex store over both backends (in-process index, fake HTTP client): k-NN with
scores, MetadataFilters, node round trip, deletes, get_nodes, and a VectorStoreIndex on top."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("llama_index.core")

from fake_client import FakeClient
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from signed import LOCAL_SESSION

from squash import Client
from squash.integrations import create_index
from squash.integrations.llamaindex import SquashVectorStore, UnsupportedFilterError

DIMS = 4
FIELDS = {"author": "str", "year": "int", "score": "float", "tags": "list[str]"}
ROWS = [
    ("n0", [1.0, 0.0, 0.0, 0.0], "alpha", {"author": "ann", "year": 2001, "score": 0.5, "tags": ["a", "b"]}),
    ("n1", [0.9, 0.1, 0.0, 0.0], "beta", {"author": "bob", "year": 2010, "score": 1.5, "tags": ["b"]}),
    ("n2", [0.0, 1.0, 0.0, 0.0], "gamma", {"author": "ann", "year": 2020, "score": 2.5, "tags": []}),
    ("n3", [0.0, 0.0, 1.0, 0.0], "delta", {"author": "cy", "year": 2024, "nested": {"x": [1, 2]}}),
]


@pytest.fixture(params=["index", "client", "http"])
def store(request, tmp_path) -> SquashVectorStore:
    if request.param == "index":
        return SquashVectorStore(f"file://{tmp_path}/idx", metadata_fields=FIELDS)
    if request.param == "http":  # the real client, over a local stack with IAM auth
        stack = request.getfixturevalue("stack")
        name = f"li-{uuid.uuid4().hex[:10]}"
        create_index(f"{stack['index_uri_prefix']}{name}", DIMS, metadata_fields=FIELDS)
        client = Client(stack["api_url"], session=LOCAL_SESSION)
        request.addfinalizer(client.close)
        return SquashVectorStore(client=client, index_name=name)
    client = FakeClient(tmp_path)
    create_index(client.uri("nodes"), DIMS, metadata_fields=FIELDS)
    return SquashVectorStore(client=client, index_name="nodes")  # fields come from the index


def nodes(doc: str = "doc-1") -> list[TextNode]:
    out = []
    for node_id, emb, text, meta in ROWS:
        node = TextNode(id_=node_id, text=text, metadata=meta, embedding=emb)
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
            node_id=doc if node_id != "n3" else "doc-2"
        )
        out.append(node)
    return out


def query(store: SquashVectorStore, k: int = 4, filters: MetadataFilters | None = None, **kw) -> list[str]:
    q = VectorStoreQuery(query_embedding=[1.0, 0.05, 0.0, 0.0], similarity_top_k=k, filters=filters, **kw)
    return store.query(q).ids


def f(key: str, value, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def test_empty_store_answers_nothing(store):
    assert query(store) == []
    assert store.get_nodes(node_ids=["n0"]) == []
    store.delete("doc-1")  # no-op
    store.delete_nodes(node_ids=["n0"])


def test_query_order_scores_and_round_trip(store):
    assert store.add(nodes()) == ["n0", "n1", "n2", "n3"]
    res = store.query(VectorStoreQuery(query_embedding=[1.0, 0.05, 0.0, 0.0], similarity_top_k=2))
    assert res.ids == ["n0", "n1"]
    assert res.similarities[0] >= res.similarities[1]  # cosine: larger is better
    assert res.similarities[0] == pytest.approx(0.9988, abs=0.01)
    node = res.nodes[0]
    assert node.node_id == "n0" and node.get_content() == "alpha"
    assert node.metadata == ROWS[0][3]
    assert node.ref_doc_id == "doc-1"
    got = store.get_nodes(node_ids=["n3", "missing", "n1"])
    assert [n.node_id for n in got] == ["n3", "n1"]
    assert got[0].metadata == {"author": "cy", "year": 2024, "nested": {"x": [1, 2]}}  # undeclared keys too


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (MetadataFilters(filters=[f("author", "ann")]), ["n0", "n2"]),
        (MetadataFilters(filters=[f("author", "ann", FilterOperator.NE)]), ["n1", "n3"]),
        (MetadataFilters(filters=[f("year", 2010, FilterOperator.GT)]), ["n2", "n3"]),
        (
            MetadataFilters(
                filters=[f("year", 2010, FilterOperator.GTE), f("score", 2.0, FilterOperator.LT)]
            ),
            ["n1"],
        ),
        (MetadataFilters(filters=[f("year", 2001, FilterOperator.LTE)]), ["n0"]),
        (MetadataFilters(filters=[f("author", ["bob", "cy"], FilterOperator.IN)]), ["n1", "n3"]),
        (MetadataFilters(filters=[f("author", ["bob", "cy"], FilterOperator.NIN)]), ["n0", "n2"]),
        (MetadataFilters(filters=[f("tags", ["a", "zz"], FilterOperator.ANY)]), ["n0"]),
        (MetadataFilters(filters=[f("tags", ["a", "b"], FilterOperator.ALL)]), ["n0"]),
        (MetadataFilters(filters=[f("tags", "b", FilterOperator.CONTAINS)]), ["n0", "n1"]),
        (MetadataFilters(filters=[f("tags", None, FilterOperator.IS_EMPTY)]), ["n2", "n3"]),
        (
            MetadataFilters(filters=[f("author", "bob"), f("year", 2024)], condition=FilterCondition.OR),
            ["n1", "n3"],
        ),
        (MetadataFilters(filters=[f("author", "ann")], condition=FilterCondition.NOT), ["n1", "n3"]),
        (
            MetadataFilters(
                filters=[
                    f("author", "ann"),
                    MetadataFilters(filters=[f("year", 2001), f("year", 2024)], condition=FilterCondition.OR),
                ]
            ),
            ["n0"],
        ),
    ],
)
def test_filters(store, filters, expected):
    store.add(nodes())
    assert sorted(query(store, filters=filters)) == expected


def test_unsupported_filters_raise(store):
    store.add(nodes())
    with pytest.raises(UnsupportedFilterError, match="text_match"):
        query(store, filters=MetadataFilters(filters=[f("author", "an", FilterOperator.TEXT_MATCH)]))
    with pytest.raises(UnsupportedFilterError, match="not filterable"):
        query(store, filters=MetadataFilters(filters=[f("nested", 1)]))
    with pytest.raises(NotImplementedError, match="hybrid"):
        query(store, mode=VectorStoreQueryMode.HYBRID)


def test_doc_and_node_id_restrictions(store):
    store.add(nodes())
    assert query(store, doc_ids=["doc-2"]) == ["n3"]
    assert query(store, node_ids=["n2", "n1"]) == ["n1", "n2"]


def test_deletes_and_upsert(store):
    store.add(nodes())
    store.delete("doc-1")
    assert query(store) == ["n3"]
    store.add(nodes())  # re-adding the same node ids replaces, never duplicates
    assert sorted(query(store)) == ["n0", "n1", "n2", "n3"]
    store.delete_nodes(node_ids=["n0", "nope"])
    assert sorted(query(store)) == ["n1", "n2", "n3"]
    store.delete_nodes(filters=MetadataFilters(filters=[f("author", "ann")]))
    assert sorted(query(store)) == ["n1", "n3"]
    store.delete_nodes(filters=MetadataFilters(filters=[f("author", "nobody")]))  # matches none: no-op
    got = store.get_nodes(filters=MetadataFilters(filters=[f("year", 2000, FilterOperator.GT)]))
    assert sorted(n.node_id for n in got) == ["n1", "n3"]
    store.clear()
    assert query(store) == []
    store.add(nodes()[:1])  # an emptied index takes writes again
    assert query(store) == ["n0"]


def test_vector_store_index_with_mock_embeddings(tmp_path):
    store = SquashVectorStore(f"file://{tmp_path}/vsi", metadata_fields={"lang": "str"})
    ctx = StorageContext.from_defaults(vector_store=store)
    docs = [
        Document(text="squash is serverless", metadata={"lang": "en"}, id_="d-en"),
        Document(text="squash ist serverlos", metadata={"lang": "de"}, id_="d-de"),
    ]
    index = VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=MockEmbedding(embed_dim=8))
    retriever = index.as_retriever(similarity_top_k=5, filters=MetadataFilters(filters=[f("lang", "de")]))
    hits = retriever.retrieve("serverless")
    assert [h.node.get_content() for h in hits] == ["squash ist serverlos"]
    assert hits[0].node.ref_doc_id == "d-de"
    index.delete_ref_doc("d-de")
    assert [h.node.ref_doc_id for h in index.as_retriever(similarity_top_k=5).retrieve("x")] == ["d-en"]
