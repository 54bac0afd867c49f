"""The LangChain store beyond the standard suite: filters on declared fields, relevance
scores per metric, metadata round trip, from_texts, reopening, and the errors it raises."""

from __future__ import annotations

import importlib
import sys

import pytest

pytest.importorskip("langchain_core")

from fake_client import FakeClient
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from squash.integrations import create_index, squash_id
from squash.integrations.langchain import SquashVectorStore, UnsupportedFilterError, translate_filter

FIELDS = {"year": "int", "price": "float", "label": "str", "tags": "list[str]", "ok": "bool"}
TEXTS = ["apple pie", "banana bread", "cherry tart", "date cake"]
METAS = [
    {"year": 2001, "price": 3.5, "label": "a", "tags": ["x", "y"], "ok": True, "extra": {"n": [1]}},
    {"year": 2010, "price": 7.0, "label": "b", "tags": ["y"], "ok": False},
    {"year": 2020, "price": 12.0, "label": "a", "tags": [], "ok": True},
    {"year": 2024, "label": "c"},
]


class AxisEmbedding(Embeddings):
    """Text i of TEXTS -> the i-th unit axis (a query text: its axis plus a little of the next)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._axis(t, 0.0) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._axis(text, 0.1)

    @staticmethod
    def _axis(text: str, spill: float) -> list[float]:
        i = TEXTS.index(text)
        v = [0.0] * 4
        v[i] = 1.0
        v[(i + 1) % 4] += spill
        return v


@pytest.fixture(params=["index", "client"])
def store(request, tmp_path) -> SquashVectorStore:
    if request.param == "index":
        return SquashVectorStore(AxisEmbedding(), uri=f"file://{tmp_path}/idx", metadata_fields=FIELDS)
    client = FakeClient(tmp_path)
    create_index(client.uri("docs"), 4, metadata_fields=FIELDS)
    return SquashVectorStore(AxisEmbedding(), client=client, index_name="docs")


def keys(docs) -> list[str]:
    return sorted(d.metadata.get("label", "") + d.page_content[:1] for d in docs)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"label": "a"}, ["aa", "ac"]),
        ({"label": {"$ne": "a"}}, ["bb", "cd"]),
        ({"year": {"$gt": 2005, "$lte": 2020}}, ["ac", "bb"]),
        ({"year": {"$between": [2010, 2024]}}, ["ac", "bb", "cd"]),
        ({"price": {"$lt": 10}}, ["aa", "bb"]),
        ({"label": {"$in": ["b", "c"]}}, ["bb", "cd"]),
        ({"label": {"$nin": ["b", "c"]}}, ["aa", "ac"]),
        ({"tags": "y"}, ["aa", "bb"]),
        ({"tags": {"$all": ["x", "y"]}}, ["aa"]),
        ({"price": {"$exists": False}}, ["cd"]),
        ({"ok": True}, ["aa", "ac"]),
        ({"$or": [{"label": "b"}, {"year": 2024}]}, ["bb", "cd"]),
        ({"$and": [{"label": "a"}, {"year": {"$gte": 2010}}]}, ["ac"]),
        ({"$not": {"label": "a"}}, ["bb", "cd"]),
    ],
)
def test_filters(store, flt, expected):
    store.add_texts(TEXTS, METAS)
    assert keys(store.similarity_search("apple pie", k=4, filter=flt)) == expected


def test_unsupported_filters_raise(store):
    store.add_texts(TEXTS, METAS)
    with pytest.raises(UnsupportedFilterError, match=r"\$like"):
        store.similarity_search("apple pie", filter={"label": {"$like": "a%"}})
    with pytest.raises(UnsupportedFilterError, match="not filterable"):
        store.similarity_search("apple pie", filter={"extra": 1})
    with pytest.raises(UnsupportedFilterError, match=r"\$nor"):
        translate_filter({"$nor": []}, FIELDS)


def test_scores_metadata_and_relevance(store):
    ids = store.add_texts(TEXTS, METAS, ids=["p", "q", "r", "s"])
    assert ids == ["p", "q", "r", "s"]
    (doc, dist), (doc2, dist2) = store.similarity_search_with_score("apple pie", k=2)
    assert (doc.id, doc2.id) == ("p", "q")
    assert doc.metadata == METAS[0] and doc.page_content == "apple pie"  # undeclared keys too
    assert 0 <= dist < dist2  # cosine distance, smaller is better
    rel = store.similarity_search_with_relevance_scores("apple pie", k=2)
    assert rel[0][1] == pytest.approx(1 - dist, abs=1e-6) and rel[0][1] > rel[1][1]
    by_vec = store.similarity_search_by_vector([0.0, 0.0, 1.0, 0.0], k=1)
    assert [d.id for d in by_vec] == ["r"]
    store.delete(filter={"label": "a"})
    assert [d.id for d in store.get_by_ids(["p", "q", "r", "s"])] == ["q", "s"]
    store.delete(filter={"label": "zzz"})  # matches nothing: no error


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_relevance_for_other_metrics(tmp_path, metric):
    store = SquashVectorStore.from_texts(
        TEXTS, AxisEmbedding(), METAS, uri=f"file://{tmp_path}/{metric}", metric=metric
    )
    (doc, score), (_, score2) = store.similarity_search_with_relevance_scores("banana bread", k=2)
    assert doc.page_content == "banana bread" and score > score2
    if metric == "l2":  # 1 - euclidean / sqrt(2), from squared L2 0.01
        assert score == pytest.approx(1 - 0.1 / 2**0.5, abs=1e-3)
    else:  # the inner product q·x = 1
        assert score == pytest.approx(1.0, abs=1e-3)


def test_reopen_takes_fields_from_the_index(tmp_path):
    uri = f"file://{tmp_path}/idx"
    SquashVectorStore.from_texts(TEXTS, AxisEmbedding(), METAS, uri=uri, metadata_fields=FIELDS)
    again = SquashVectorStore(AxisEmbedding(), uri=uri)
    assert [d.page_content for d in again.similarity_search("apple pie", k=1, filter={"year": 2024})] == [
        "date cake"
    ]
    with pytest.raises(ValueError, match="not a column of the existing index"):
        SquashVectorStore(AxisEmbedding(), uri=uri, metadata_fields={"color": "str"}).similarity_search(
            "apple pie"
        )


def test_compact_and_many_small_adds(tmp_path):
    emb = DeterministicFakeEmbedding(size=16)
    store = SquashVectorStore(emb, uri=f"file://{tmp_path}/idx")
    texts = [f"text {i}" for i in range(60)]
    store.add_texts(texts[:1])  # the smallest build: one row
    for start in range(1, 60, 20):
        store.add_texts(texts[start : start + 20])
    store.compact()
    for t in texts[::7]:
        assert store.similarity_search(t, k=1)[0].page_content == t


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        SquashVectorStore(AxisEmbedding())
    with pytest.raises(ValueError, match="reserved"):
        SquashVectorStore(AxisEmbedding(), uri=f"file://{tmp_path}/x", metadata_fields={"id": "int"})
    with pytest.raises(ValueError, match="not one of"):
        SquashVectorStore(AxisEmbedding(), uri=f"file://{tmp_path}/x", metadata_fields={"a": "complex"})
    store = SquashVectorStore(AxisEmbedding(), uri=f"file://{tmp_path}/y", metadata_fields={"year": int})
    with pytest.raises(ValueError, match="declared int"):
        store.add_texts(TEXTS[:1], [{"year": "2001"}])
    client_store = SquashVectorStore(AxisEmbedding(), client=FakeClient(tmp_path), index_name="absent")
    assert client_store.similarity_search("apple pie") == []
    with pytest.raises(Exception, match="cannot build"):
        client_store.add_texts(TEXTS[:1])
    assert squash_id("a") == squash_id("a") != squash_id("b")
    assert 0 <= squash_id("a") < 2**63 - 1


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "squash.integrations.langchain")
    monkeypatch.setitem(sys.modules, "langchain_core.vectorstores", None)
    with pytest.raises(ImportError, match=r"squash-vector\[langchain\]"):
        importlib.import_module("squash.integrations.langchain")
    monkeypatch.delitem(sys.modules, "squash.integrations.llamaindex", raising=False)
    monkeypatch.setitem(sys.modules, "llama_index.core.vector_stores.types", None)
    with pytest.raises(ImportError, match=r"squash-vector\[llamaindex\]"):
        importlib.import_module("squash.integrations.llamaindex")
