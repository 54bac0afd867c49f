"""A stand-in for :class:`squash.client.Client`: its interface, served by in-process indexes.

Each call reopens the index (as a coordinator re-reads the manifest per request) and answers
what the HTTP client does, so the framework stores' client backend is tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import squash
from squash.index import SearchResult


class FakeClient:
    """``Client(url)`` whose index ``NAME`` is the ``file://`` index ``<root>/NAME``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.calls: list[str] = []

    def uri(self, index_name: str) -> str:
        return f"file://{self.root / index_name}"

    def _open(self, index_name: str) -> squash.Index:
        return squash.open_index(self.uri(index_name))

    def query(
        self,
        index_name: str,
        vectors: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        include: Sequence[str] = (),
        params: dict[str, Any] | None = None,
    ) -> SearchResult:
        self.calls.append("query")
        params_obj = None if params is None else squash.SearchParams.from_dict(params)
        return self._open(index_name).search(
            np.asarray(vectors), k=k, filter=filter, include=list(include), params=params_obj
        )

    def upsert(
        self, index_name: str, ids: Any, vectors: Any, attributes: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        self.calls.append("upsert")
        result = self._open(index_name).upsert(list(map(int, ids)), np.asarray(vectors), attributes)
        return {"index": index_name, **result.to_dict()}

    def delete(
        self, index_name: str, ids: Any = None, filter: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append("delete")
        result = self._open(index_name).delete(ids=ids, filter=filter)
        return {"index": index_name, **result.__dict__}

    def info(self, index_name: str) -> dict[str, Any]:
        self.calls.append("info")
        return self._open(index_name).info()
