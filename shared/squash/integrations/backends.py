"""Backends of the framework stores: one adapter over an in-process :class:`squash.Index`, one
over an HTTP :class:`squash.client.Client` and an index name.

The stores (:mod:`squash.integrations.langchain`, :mod:`squash.integrations.llamaindex`) only
ever call the five methods of :class:`Backend`, so the same store code runs on a ``file://``
or ``s3://`` index opened in the process and on a deployed SQUASH behind API Gateway.
Only the in-process backend can *build* an index (a build reads and writes the whole index;
the HTTP API has no build route): an index served over HTTP is made beforehand with
:func:`squash.integrations.create_index` (or a store's ``from_texts``) on its ``s3://`` URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from ..build import BuildOptions, build_index
from ..errors import IndexNotFoundError
from ..index import Index, SearchResult, open_index
from ..params import SearchParams

#: squash attribute kinds (``info``'s ``type``) -> the stores' field type names.
_KIND_TO_TYPE = {"category": "str", "int": "int", "float": "float", "bool": "bool", "timestamp": "datetime"}


@dataclass(frozen=True)
class IndexShape:
    """What a store needs to know of an existing index: dimension, metric, and its attribute
    columns as the stores' type names (``str``, ``int``, ``float``, ``bool``, ``datetime``,
    ``list[str]`` ...)."""

    dims: int
    metric: str
    columns: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> IndexShape:
        """From ``Index.info()`` / ``GET /indexes/{index}`` (the manifest's summary)."""
        columns = {}
        for attr in info.get("attributes", []):
            kind = attr["type"]
            if kind == "list":
                columns[attr["name"]] = f"list[{_KIND_TO_TYPE.get(attr.get('element', ''), '?')}]"
            else:
                columns[attr["name"]] = _KIND_TO_TYPE.get(kind, kind)
        return cls(int(info["dims"]), str(info["metric"]), columns)


@runtime_checkable
class Backend(Protocol):
    """What a framework store needs of squash."""

    def shape(self) -> IndexShape | None:
        """The index's shape, or None when there is no index yet."""

    def search(self, vectors: np.ndarray, k: int, filter: dict[str, Any] | None) -> SearchResult:
        """k nearest rows per query, with each hit's attributes."""

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: list[dict[str, Any]]) -> None:
        """Insert or replace rows by id."""

    def delete(self, ids: Sequence[int] | None = None, filter: dict[str, Any] | None = None) -> None:
        """Delete rows by ids (missing ones ignored) or by a filter matching at least one row."""

    def build(self, ids: np.ndarray, vectors: np.ndarray, attributes: pa.Table, metric: str) -> None:
        """Build a new index from these rows (only an in-process backend can)."""


class SquashClient(Protocol):
    """The interface of :class:`squash.client.Client` the HTTP backend uses."""

    def query(
        self,
        index_name: str,
        vectors: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        include: Sequence[str] = (),
        params: dict[str, Any] | None = None,
    ) -> SearchResult: ...

    def upsert(
        self, index_name: str, ids: Any, vectors: Any, attributes: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]: ...

    def delete(
        self, index_name: str, ids: Any = None, filter: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    def info(self, index_name: str) -> dict[str, Any]: ...


class IndexBackend:
    """An index opened in this process (``file://`` or ``s3://``). Opened lazily, so a store
    can be made for a URI that holds no index yet; the first write then builds it.

    ``build_options``: options of that first build. The default turns calibration off: an
    index bootstrapped from a handful of rows cannot calibrate meaningfully, and an
    uncalibrated index re-ranks its candidates on float32 (exact distances), which keeps
    ranking right while later upserts are coded with the first build's code. Compact
    (:meth:`compact`) or rebuild once the data has grown.
    """

    def __init__(
        self,
        uri: str,
        search_params: SearchParams | dict[str, Any] | None = None,
        build_options: BuildOptions | None = None,
    ) -> None:
        self.uri = uri
        self.params = (
            SearchParams.from_dict(search_params) if isinstance(search_params, dict) else search_params
        )
        self.build_options = build_options
        self._index: Index | None = None

    @property
    def index(self) -> Index | None:
        """The opened index, or None when the URI holds none (yet)."""
        if self._index is None:
            try:
                self._index = open_index(self.uri)
            except IndexNotFoundError:
                return None
        return self._index

    def shape(self) -> IndexShape | None:
        index = self.index
        return None if index is None else IndexShape.from_info(index.info())

    def search(self, vectors: np.ndarray, k: int, filter: dict[str, Any] | None) -> SearchResult:
        return self._require().search(vectors, k=k, filter=filter, params=self.params, include=["attributes"])

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: list[dict[str, Any]]) -> None:
        self._require().upsert(ids, vectors, attributes)

    def delete(self, ids: Sequence[int] | None = None, filter: dict[str, Any] | None = None) -> None:
        self._require().delete(ids=None if ids is None else list(ids), filter=filter)

    def build(self, ids: np.ndarray, vectors: np.ndarray, attributes: pa.Table, metric: str) -> None:
        opts = self.build_options or BuildOptions(metric=metric, calibration_queries=0)
        table = attributes.append_column("id", pa.array(ids, pa.int64()))
        build_index(vectors, self.uri, table, opts)
        self._index = None

    def compact(self) -> None:
        """Fold the writes into rebuilt partitions (refits each touched partition's code)."""
        self._require().compact()

    def _require(self) -> Index:
        index = self.index
        if index is None:
            raise IndexNotFoundError(f"no squash index at {self.uri}")
        return index


class ClientBackend:
    """An index served over HTTP: a :class:`squash.client.Client` and the index's name.
    The index must exist (see the module docstring)."""

    def __init__(
        self,
        client: SquashClient,
        index_name: str,
        search_params: SearchParams | dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.index_name = index_name
        self.params = search_params.to_dict() if isinstance(search_params, SearchParams) else search_params

    def shape(self) -> IndexShape | None:
        try:
            return IndexShape.from_info(self.client.info(self.index_name))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def search(self, vectors: np.ndarray, k: int, filter: dict[str, Any] | None) -> SearchResult:
        return self.client.query(
            self.index_name, vectors, k=k, filter=filter, include=("attributes",), params=self.params
        )

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: list[dict[str, Any]]) -> None:
        self.client.upsert(self.index_name, ids, vectors, attributes)

    def delete(self, ids: Sequence[int] | None = None, filter: dict[str, Any] | None = None) -> None:
        self.client.delete(self.index_name, ids=None if ids is None else list(ids), filter=filter)

    def build(self, ids: np.ndarray, vectors: np.ndarray, attributes: pa.Table, metric: str) -> None:
        raise IndexNotFoundError(
            f"index {self.index_name!r} does not exist: the HTTP API cannot build one; build it "
            "on its s3:// URI first, e.g. with squash.integrations.create_index(uri, dims, metric)"
        )


def _is_not_found(exc: Exception) -> bool:
    """A missing index, as the library (IndexNotFoundError) or an HTTP client (404 /
    ``index_not_found``) reports it."""
    if isinstance(exc, IndexNotFoundError):
        return True
    return getattr(exc, "status", None) == 404 or getattr(exc, "code", None) == "index_not_found"
