"""squash: serverless OSQ vector search with native attribute filtering.

Build with :func:`build_index` (or ``squash build``), search with :func:`open_index`.
"""

from .build import BuildOptions, BuildSummary, build_index
from .client import Client
from .compact import CompactResult, compact
from .deletes import WriteResult, delete
from .errors import (
    FilterError,
    IndexExistsError,
    IndexFormatError,
    IndexNotFoundError,
    InputError,
    SquashError,
    StorageError,
    WriteConflictError,
)
from .index import Index, SearchResult, open_index
from .params import SearchParams
from .upserts import UpsertResult, upsert

__all__ = [
    "BuildOptions",
    "BuildSummary",
    "Client",
    "CompactResult",
    "FilterError",
    "Index",
    "IndexExistsError",
    "IndexFormatError",
    "IndexNotFoundError",
    "InputError",
    "SearchParams",
    "SearchResult",
    "SquashError",
    "StorageError",
    "UpsertResult",
    "WriteConflictError",
    "WriteResult",
    "build_index",
    "compact",
    "delete",
    "open_index",
    "upsert",
]
__version__ = "0.1.0"
