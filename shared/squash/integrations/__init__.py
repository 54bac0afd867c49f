"""Framework integrations: a LangChain ``VectorStore`` (:mod:`.langchain`, extra
``langchain``) and a LlamaIndex vector store (:mod:`.llamaindex`, extra ``llamaindex``).

Both run over a :class:`~.backends.Backend`: an in-process index (``file://`` / ``s3://``)
or an HTTP client and index name. This package imports no framework; the two modules do
and say which extra to install when it is missing.
"""

from .backends import Backend, ClientBackend, IndexBackend, IndexShape
from .core import UnsupportedFilterError, create_index, squash_id

__all__ = [
    "Backend",
    "ClientBackend",
    "IndexBackend",
    "IndexShape",
    "UnsupportedFilterError",
    "create_index",
    "squash_id",
]
