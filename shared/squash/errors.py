"""Exceptions raised by squash.

Every error a user can cause is a :class:`SquashError`; its message names the offending
input (file, field, operator) so the CLI and the HTTP handlers can show it verbatim.
"""

from __future__ import annotations


class SquashError(Exception):
    """Base class of errors caused by input or environment, never by a bug."""

    #: Short machine-readable category used by the HTTP layer.
    code: str = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InputError(SquashError):
    """Bad vectors, attributes or parameters handed to build or search."""

    code = "invalid_input"


class IndexExistsError(InputError):
    """A build into a URI that already holds an index, without ``replace=True``: rebuilding
    replaces every vector there, so it is asked for, never implied."""

    code = "index_exists"

    def __init__(self, uri: str) -> None:
        super().__init__(
            f"an index already exists at {uri}; pass replace=True to rebuild it (every vector there "
            "is replaced), or build into another URI",
            field="index_uri",
        )
        self.uri = uri


class FilterError(InputError):
    """A filter expression that cannot be parsed or does not fit the schema."""

    code = "invalid_filter"

    def __init__(self, message: str, *, field: str | None = "filter") -> None:
        super().__init__(message, field=field)


class StorageError(SquashError):
    """An index URI that cannot be read or written (missing bucket, no permission)."""

    code = "storage_error"


class AccessDeniedError(StorageError):
    """Storage refused the read. Without ``s3:ListBucket`` S3 answers 403 for a missing key too."""

    code = "access_denied"


class IndexNotFoundError(StorageError):
    """No readable index (no manifest) at the URI."""

    code = "index_not_found"


class IndexFormatError(SquashError):
    """A stored index that is corrupt, truncated or of an unknown format version."""

    code = "index_corrupt"


class WriteConflictError(StorageError):
    """A write lost the race for the manifest (another writer committed first) and its
    retries: nothing of it is visible; retry the write."""

    code = "write_conflict"


class WritesDisabledError(SquashError):
    """A write sent to a deployment that does not allow writes (HTTP 403)."""

    code = "writes_disabled"


class PayloadTooLargeError(SquashError):
    """A request or response that cannot fit Lambda's 6 MB synchronous payload limit."""

    code = "payload_too_large"


class UpstreamError(SquashError):
    """A worker of the tree failed (after retries) or could not be reached.

    ``status`` is 502 when a worker answered with an error and 503 when it was throttled,
    timed out or unreachable, so a client can tell "retry later" from "broken".
    """

    code = "worker_failed"

    def __init__(self, message: str, *, status: int = 502, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ("worker_failed" if status == 502 else "worker_unavailable")


class DeadlineExceededError(UpstreamError):
    """The request's deadline passed before the answer was complete (a stalled worker, frozen
    storage, a tree too slow for the function timeout). Always a 504 ``deadline_exceeded``,
    answered before Lambda would kill the function: never a partial answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=504, code="deadline_exceeded")
