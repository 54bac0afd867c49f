"""A LlamaIndex vector store on squash (``pip install 'squash-vector[llamaindex]'``).

>>> store = SquashVectorStore(uri="file:///tmp/nodes", metadata_fields={"author": "str"})
>>> ctx = StorageContext.from_defaults(vector_store=store)
>>> index = VectorStoreIndex.from_documents(docs, storage_context=ctx)

Design (the row layout and its reasons are in :mod:`squash.integrations.core`, the LangChain
store's docstring says the same for ids, first build and compaction):

- **Ids.** A node's ``node_id`` (a string) is kept in ``_id``; its squash id is the 63-bit
  BLAKE2b hash of it. ``ref_doc_id`` is the string column ``_ref_doc_id``, so
  ``delete(ref_doc_id)`` is one squash delete by filter.
- **Text and metadata.** The text is ``_text``; the node itself (metadata, relationships,
  node type: LlamaIndex's ``node_to_metadata_dict`` without the text) is JSON in ``_meta``,
  and comes back through ``metadata_dict_to_node``.
- **Filters.** ``MetadataFilters`` become squash filters on the fields declared at
  construction (``metadata_fields``; a store opened on an existing index takes the index's):
  ``== != > >= < <=``, ``in``/``nin``, ``any`` (a list holding one of the values), ``all``
  (``$all``), ``contains`` (a list holding the value), ``is_empty`` (null or an empty list:
  declared list fields store an empty list as null), conditions ``and``/``or``/``not``.
  ``text_match``/``text_match_insensitive`` raise :class:`UnsupportedFilterError`: squash has
  no substring matching. ``doc_ids`` and ``node_ids`` of a query restrict it too.
- **Query modes.** Only ``default`` (dense k-NN); the others (sparse, hybrid, MMR, ...) raise.
  Similarities are squash's scores (larger is better: cos, q·x, or −squared L2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "squash.integrations.llamaindex needs llama-index-core: pip install 'squash-vector[llamaindex]'"
    ) from exc

from ..params import MAX_K, SearchParams
from .backends import Backend, ClientBackend, IndexBackend, SquashClient
from .core import DOC_COL, ID_COL, Hit, Row, StoreCore, UnsupportedFilterError

__all__ = ["SquashVectorStore", "UnsupportedFilterError", "translate_filters"]

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",
    FilterOperator.ALL: "$all",
    FilterOperator.CONTAINS: "$eq",  # on a list field: holds the value
}


def translate_filters(filters: MetadataFilters, fields: Mapping[str, str]) -> dict[str, Any]:
    """LlamaIndex ``MetadataFilters`` as a squash filter; every key must be declared."""
    parts = [
        translate_filters(f, fields) if isinstance(f, MetadataFilters) else _one(f, fields)
        for f in filters.filters
    ]
    if not parts:
        raise UnsupportedFilterError("MetadataFilters holds no filter")
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    both = parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.NOT:
        return {"$not": both}
    return both


def _one(flt: MetadataFilter, fields: Mapping[str, str]) -> dict[str, Any]:
    if flt.key not in fields:
        raise UnsupportedFilterError(
            f"metadata field {flt.key!r} is not filterable: declare it in metadata_fields when the "
            f"index is built (filterable: {sorted(fields) or 'none'})"
        )
    op = FilterOperator(flt.operator)
    if op == FilterOperator.IS_EMPTY:
        return {flt.key: {"$exists": False}}
    if op not in _OPS:
        raise UnsupportedFilterError(f"{flt.key}: squash filters have no {op.value!r} (no text matching)")
    value = flt.value
    if op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL):
        value = list(value) if isinstance(value, list | tuple) else [value]
    return {flt.key: {_OPS[op]: _value(value)}}


def _value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


class SquashVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a squash index, in process (``uri``) or over HTTP
    (``client`` + ``index_name``); or any :class:`~squash.integrations.backends.Backend`."""

    stores_text: bool = True
    flat_metadata: bool = False

    _core: StoreCore = PrivateAttr()

    def __init__(
        self,
        uri: str | None = None,
        *,
        client: SquashClient | None = None,
        index_name: str | None = None,
        backend: Backend | None = None,
        metric: str = "cosine",
        metadata_fields: Mapping[str, Any] | None = None,
        search_params: SearchParams | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if sum(x is not None for x in (uri, client, backend)) != 1:
            raise ValueError("give exactly one of uri, client (with index_name) or backend")
        if client is not None:
            if not index_name:
                raise ValueError("a client needs the index_name")
            backend = ClientBackend(client, index_name, search_params)
        elif uri is not None:
            backend = IndexBackend(uri, search_params)
        self._core = StoreCore(backend, metric, metadata_fields)

    @classmethod
    def class_name(cls) -> str:
        return "SquashVectorStore"

    @property
    def client(self) -> Backend:
        return self._core.backend

    # -- writes -----------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Upsert nodes (they must carry embeddings); returns their node ids."""
        rows = []
        for node in nodes:
            embedding = node.get_embedding()  # raises when the node has none
            meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            rows.append(
                Row(
                    node.node_id,
                    embedding,
                    node.get_content(metadata_mode=MetadataMode.NONE),
                    node.metadata,
                    json.dumps(meta, ensure_ascii=False),
                    node.ref_doc_id,
                )
            )
        return self._core.add(rows)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._core.delete(filter={DOC_COL: ref_doc_id})

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id, by filters, or by both (the ids that match the filters)."""
        if node_ids is None and filters is None:
            raise ValueError("give node_ids or filters to delete")
        if filters is None:
            self._core.delete(keys=node_ids)
            return
        flt = self._filter(filters, node_ids)
        self._core.delete(filter=flt)

    def clear(self) -> None:
        self._core.delete_all()

    # -- reads ------------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (in that order), optionally filtered; by filters alone: at most
        1,000 (squash's largest k), an error if more match."""
        if node_ids is not None:
            flt = None if filters is None else translate_filters(filters, self._core.fields)
            return [_node(h) for h in self._core.get(node_ids, flt)]
        if filters is None:
            raise ValueError("give node_ids or filters")
        hits = self._core._probe(self._filter(filters, None), MAX_K)
        if len(hits) == MAX_K:
            raise ValueError(f"more than {MAX_K - 1} nodes may match: fetch them by node_ids")
        return [_node(h) for h in hits]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise NotImplementedError(f"squash answers dense k-NN only, not query mode {query.mode.value!r}")
        if query.query_embedding is None:
            raise ValueError("squash queries need a query_embedding")
        parts = []
        if query.filters is not None:
            parts.append(translate_filters(query.filters, self._core.fields))
        if query.node_ids:
            parts.append({ID_COL: {"$in": list(query.node_ids)}})
        if query.doc_ids:
            parts.append({DOC_COL: {"$in": list(query.doc_ids)}})
        flt = None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        hits = self._core.search(query.query_embedding, query.similarity_top_k, flt)
        return VectorStoreQueryResult(
            nodes=[_node(h) for h in hits], similarities=[h.score for h in hits], ids=[h.key for h in hits]
        )

    def _filter(self, filters: MetadataFilters, node_ids: list[str] | None) -> dict[str, Any]:
        flt = translate_filters(filters, self._core.fields)
        return flt if node_ids is None else {"$and": [{ID_COL: {"$in": list(node_ids)}}, flt]}


def _node(hit: Hit) -> BaseNode:
    return metadata_dict_to_node(hit.metadata, text=hit.text)
