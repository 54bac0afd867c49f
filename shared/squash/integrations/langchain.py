"""A LangChain ``VectorStore`` on squash (``pip install 'squash-vector[langchain]'``).

>>> store = SquashVectorStore(embeddings, uri="file:///tmp/docs", metadata_fields={"year": "int"})
>>> store.add_texts(["a", "b"], [{"year": 2020}, {"year": 2024}])
>>> store.similarity_search("a", k=1, filter={"year": {"$gte": 2021}})

Design (see :mod:`squash.integrations.core` for the row layout):

- **Ids.** LangChain ids are strings; squash ids are int64. A row's squash id is a stable
  63-bit BLAKE2b hash of the string (:func:`~squash.integrations.core.squash_id`), and the
  string is kept in the ``_id`` column: it is what comes back, and a hash collision is
  detected on read instead of returning another document. Ids not given are UUID4s.
- **Text and metadata.** The text is the string column ``_text``; the whole metadata is JSON
  in ``_meta``, so any JSON-able metadata round-trips (datetimes come back as ISO text).
- **Filterable metadata.** squash attributes are a typed schema fixed at build and upserts
  with unknown columns are refused, so filters can only name fields *declared* at
  construction (``metadata_fields={"year": "int", "tags": "list[str]"}``), which are also
  written as typed columns; a store opened on an existing index reads them from it. A
  filter on another key raises :class:`UnsupportedFilterError`.
- **First write builds.** An index must be built before it takes upserts, so the first
  ``add_texts`` on an empty URI builds it from that batch (any size: one row works, plus a
  schema row deleted at once, because a build refuses all-null columns). Such an index is
  uncalibrated and re-ranks on float32, so ranking stays exact while later rows are coded
  with the first batch's code; call :meth:`SquashVectorStore.compact` (or rebuild with
  ``from_texts``) once the data has grown. Over HTTP the index must exist first
  (:func:`squash.integrations.create_index`).
- **Filters.** LangChain's Mongo-like dict filters are squash's language: ``{"k": v}``,
  ``$eq $ne $gt $gte $lt $lte $in $nin $exists $all $not``, ``$and``/``$or``; ``$between
  [a, b]`` becomes ``$gte``/``$lte``. Pattern operators (``$like``, ``$ilike``, ``$contains``,
  ``$regex``, ``$text``) raise. squash's nulls never match a comparison, ``$ne`` included.
- **Scores.** ``similarity_search_with_score`` returns squash's distance (smaller is better:
  squared L2, 1 − cos, or −q·x); relevance scores use LangChain's function for the metric
  (euclidean on √distance, cosine, max inner product).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from typing import Any

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "squash.integrations.langchain needs langchain-core: pip install 'squash-vector[langchain]'"
    ) from exc

from ..params import SearchParams
from .backends import Backend, ClientBackend, IndexBackend, SquashClient
from .core import Hit, Row, StoreCore, UnsupportedFilterError, new_key

__all__ = ["SquashVectorStore", "UnsupportedFilterError", "translate_filter"]

_FIELD_OPS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$all", "$not"})
_PATTERN_OPS = frozenset({"$like", "$ilike", "$contains", "$contain", "$regex", "$text", "$nlike"})


def translate_filter(filter: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """A LangChain dict filter as a squash filter; every field must be declared (``fields``)."""
    if not isinstance(filter, Mapping):
        raise UnsupportedFilterError(f"a filter is a dict, got {type(filter).__name__}")
    out: dict[str, Any] = {}
    for key, value in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple) or not value:
                raise UnsupportedFilterError(f"{key} takes a non-empty list of filters")
            out[key] = [translate_filter(v, fields) for v in value]
        elif key == "$not":
            out[key] = translate_filter(value, fields)
        elif key.startswith("$"):
            raise UnsupportedFilterError(f"unsupported filter operator {key!r} (squash has $and, $or, $not)")
        else:
            if key not in fields:
                raise UnsupportedFilterError(
                    f"metadata field {key!r} is not filterable: declare it in metadata_fields "
                    f"when the index is built (filterable: {sorted(fields) or 'none'})"
                )
            out[key] = _translate_operand(key, value)
    return out


def _translate_operand(field: str, value: Any) -> Any:
    if not (isinstance(value, Mapping) and value and all(str(k).startswith("$") for k in value)):
        return _value(value)
    out: dict[str, Any] = {}
    for op, operand in value.items():
        if op == "$between":
            if not isinstance(operand, list | tuple) or len(operand) != 2:
                raise UnsupportedFilterError(f"{field}: $between takes [low, high]")
            out["$gte"], out["$lte"] = _value(operand[0]), _value(operand[1])
        elif op == "$not":
            out[op] = _translate_operand(field, operand)
        elif op in _PATTERN_OPS:
            raise UnsupportedFilterError(f"{field}: squash filters have no text pattern matching ({op})")
        elif op in _FIELD_OPS:
            out[op] = _value(operand)
        else:
            raise UnsupportedFilterError(f"{field}: unsupported filter operator {op!r}")
    return out


def _value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return value


class SquashVectorStore(VectorStore):
    """A LangChain vector store over a squash index, in process (``uri``) or over HTTP
    (``client`` + ``index_name``); or any :class:`~squash.integrations.backends.Backend`."""

    def __init__(
        self,
        embedding: Embeddings,
        *,
        uri: str | None = None,
        client: SquashClient | None = None,
        index_name: str | None = None,
        backend: Backend | None = None,
        metric: str = "cosine",
        metadata_fields: Mapping[str, Any] | None = None,
        search_params: SearchParams | dict[str, Any] | None = None,
    ) -> None:
        if sum(x is not None for x in (uri, client, backend)) != 1:
            raise ValueError("give exactly one of uri, client (with index_name) or backend")
        if client is not None:
            if not index_name:
                raise ValueError("a client needs the index_name")
            backend = ClientBackend(client, index_name, search_params)
        elif uri is not None:
            backend = IndexBackend(uri, search_params)
        self._embedding = embedding
        self._core = StoreCore(backend, metric, metadata_fields)

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def backend(self) -> Backend:
        return self._core.backend

    # -- writes -----------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert texts (same id: replaced); returns their ids."""
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        ids = list(ids) if ids is not None else [None] * len(texts)
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids")
        if not texts:
            return []
        vectors = self._embedding.embed_documents(texts)
        rows = [
            Row(key or new_key(), vec, text, meta or {})
            for key, vec, text, meta in zip(ids, vectors, texts, metadatas, strict=True)
        ]
        return self._core.add(rows)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids (missing ones ignored), or by ``filter=`` (a LangChain filter)."""
        flt = kwargs.pop("filter", None)
        if ids is None and flt is None:
            raise ValueError("give ids or filter= to delete")
        if ids is not None:
            self._core.delete(keys=ids)
        else:
            self._core.delete(filter=self._filter(flt))
        return True

    def compact(self) -> None:
        """Fold the writes into rebuilt partitions (in-process backend only)."""
        if not isinstance(self.backend, IndexBackend):
            raise NotImplementedError("compact runs on the index itself: the squash compact command")
        self.backend.compact()

    # -- reads ------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(h) for h in self._core.get(list(ids))]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with squash's distance (smaller is better)."""
        return self.similarity_search_with_score_by_vector(
            self._embedding.embed_query(query), k, filter=filter, **kwargs
        )

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [
            d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter, **kwargs)
        ]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self._core.search(embedding, k, None if filter is None else self._filter(filter))
        return [(_document(h), h.distance) for h in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self._core.metric
        if metric == "cosine":
            return self._cosine_relevance_score_fn
        if metric == "dot":
            return self._max_inner_product_relevance_score_fn
        return lambda d: self._euclidean_relevance_score_fn(math.sqrt(max(d, 0.0)))  # squared L2

    def _filter(self, flt: Mapping[str, Any]) -> dict[str, Any]:
        return translate_filter(flt, self._core.fields)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> SquashVectorStore:
        """A store (``uri=``, ``client=``/``index_name=`` or ``backend=`` in ``kwargs``, plus
        ``metric``, ``metadata_fields``, ``search_params``) holding these texts."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _document(hit: Hit) -> Document:
    return Document(page_content=hit.text, metadata=hit.metadata, id=hit.key)
