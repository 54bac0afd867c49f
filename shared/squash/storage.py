"""Object storage adapters: the core reads and writes bytes through these, never boto3.

``file:///abs/path`` and ``s3://bucket/prefix`` are supported, and a plain local path
(``./idx``, ``/srv/idx``) means the ``file://`` URI of its absolute path. The S3 adapter uses a plain
boto3 client, so ``AWS_ENDPOINT_URL_S3`` points it at moto or LocalStack unchanged.
Writes are whole-object and atomic (rename on local disk, single PUT on S3): a reader sees
either the old object or the new one, never half of it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from .errors import AccessDeniedError, IndexNotFoundError, InputError, StorageError, WriteConflictError


class Storage(Protocol):
    """Minimal key/bytes store rooted at an index URI."""

    uri: str

    def read(self, key: str) -> bytes:
        """Return the whole object; raise IndexNotFoundError when it does not exist."""
        ...

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (fewer if the object is shorter)."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` atomically under ``key``."""
        ...

    def write_if(self, key: str, data: bytes, expected: str) -> None:
        """Store ``data`` under ``key`` only if its :meth:`version` is still ``expected``
        (an S3 conditional write, ``If-Match``); else raise WriteConflictError."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def version(self, key: str) -> str:
        """A cheap token that changes when ``key`` is rewritten (no body is read)."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (best effort, used to drop old builds)."""
        ...

    def listing(self) -> list[tuple[str, float]]:
        """Every object of the index: (key, last-modified epoch seconds)."""
        ...

    def delete_keys(self, keys: list[str]) -> None:
        """Remove these objects (used by gc)."""
        ...

    def check_writable(self) -> None:
        """Raise StorageError early when the location cannot be written."""
        ...


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically (a temporary file in the same folder, fsync, rename).

    The file gets the mode an ordinary ``open(path, "w")`` would (0666 minus the umask,
    typically 0644), not mkstemp's 0600, so other readers (a web server, another user) can
    read the index. ``data`` is the bytes, or a function writing them to the open file.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LocalStorage:
    """``file://`` index: a directory on local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise IndexNotFoundError(f"{self.uri}/{key} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri}/{key}: {exc.strerror}") from exc

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with self._path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(max(end - start, 0))
        except FileNotFoundError as exc:
            raise IndexNotFoundError(f"{self.uri}/{key} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri}/{key}: {exc.strerror}") from exc

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri}/{key}: {exc.strerror}") from exc

    def write_if(self, key: str, data: bytes, expected: str) -> None:
        """Compare-and-swap under an exclusive lock on the index folder's lock file (writers
        on one machine or a shared POSIX filesystem serialise on it; readers never lock)."""
        import fcntl

        lock = self.root / ".squash-write.lock"
        try:
            with lock.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                if self.version(key) != expected:
                    raise WriteConflictError(f"{self.uri}/{key} changed since it was read (another writer)")
                self.write(key, data)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri}/{key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def version(self, key: str) -> str:
        try:
            st = self._path(key).stat()
        except FileNotFoundError as exc:
            raise IndexNotFoundError(f"{self.uri}/{key} does not exist") from exc
        except OSError as exc:  # e.g. a path through a file (file:///dev/null/manifest.json)
            raise StorageError(f"cannot read {self.uri}/{key}: {exc.strerror}") from exc
        return f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}"

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def listing(self) -> list[tuple[str, float]]:
        if not self.root.is_dir():
            return []
        return [
            (p.relative_to(self.root).as_posix(), p.stat().st_mtime)
            for p in self.root.rglob("*")
            if p.is_file()
        ]

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise StorageError(f"cannot write index to {self.uri}: {probe} is not a writable directory")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0 < value < 3600 else default


def s3_timeouts() -> tuple[float, float, int]:
    """(connect timeout s, read timeout s, total attempts) of S3 calls.

    Defaults 2 s, 5 s, 3 attempts: a call against an unresponsive S3 gives up after
    3 x (2 + 5) s plus standard-mode backoff, about 24 s, inside Lambda's 30 s function
    timeout (and the request deadline answers first anyway). ``SQUASH_S3_CONNECT_TIMEOUT``,
    ``SQUASH_S3_READ_TIMEOUT`` and ``SQUASH_S3_MAX_ATTEMPTS`` override them. The read timeout
    bounds each wait for bytes, not a whole download.
    """
    return (
        _env_number("SQUASH_S3_CONNECT_TIMEOUT", 2.0),
        _env_number("SQUASH_S3_READ_TIMEOUT", 5.0),
        int(_env_number("SQUASH_S3_MAX_ATTEMPTS", 3)),
    )


_CLIENT_LOCK = threading.Lock()  # boto3's default session is not safe to use from threads at once


class S3Storage:
    """``s3://bucket/prefix`` index, through boto3."""

    def __init__(self, bucket: str, prefix: str, client: object | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3  # imported lazily: file:// users never pay for it
            from botocore.config import Config

            connect, read, attempts = s3_timeouts()
            config = Config(
                connect_timeout=connect,
                read_timeout=read,
                retries={"total_max_attempts": attempts, "mode": "standard"},  # first try included
            )
            with _CLIENT_LOCK:
                if self._client is None:
                    self._client = boto3.client("s3", config=config)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, action: str, key: str) -> StorageError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return IndexNotFoundError(f"{self.uri}/{key} does not exist")
            if code == "NoSuchBucket":
                return StorageError(f"bucket {self.bucket!r} does not exist")
            if code in ("403", "AccessDenied", "Forbidden"):
                return AccessDeniedError(f"access to {self.uri}/{key} denied")
            return StorageError(f"cannot {action} {self.uri}/{key}: {code or exc}")
        return StorageError(f"cannot {action} {self.uri}/{key}: {exc}")

    def read(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:  # botocore raises many unrelated types
            raise self._error(exc, "read", key) from exc

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            obj = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}"
            )
            return obj["Body"].read()
        except Exception as exc:  # botocore raises many unrelated types
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""  # the object is shorter than the range: the caller sees a short read
            raise self._error(exc, "read", key) from exc

    def write(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._error(exc, "write", key) from exc

    def write_if(self, key: str, data: bytes, expected: str) -> None:
        """``PutObject`` with ``If-Match`` on the ETag read before: S3 refuses the write
        (412, or 409 when writes race) once someone else has replaced the object."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=expected)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise WriteConflictError(
                    f"{self.uri}/{key} changed since it was read (another writer)"
                ) from exc
            raise self._error(exc, "write", key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            err = self._error(exc, "check", key)
            if isinstance(err, IndexNotFoundError):
                return False
            raise err from exc

    def version(self, key: str) -> str:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"]
        except Exception as exc:
            raise self._error(exc, "check", key) from exc

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) + "/"):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def listing(self) -> list[tuple[str, float]]:
        out = []
        start = len(self._key(""))
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key("")
            ):
                out += [(o["Key"][start:], o["LastModified"].timestamp()) for o in page.get("Contents", [])]
        except Exception as exc:
            raise self._error(exc, "list", "") from exc
        return out

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            except Exception as exc:
                raise self._error(exc, "delete", keys[start]) from exc

    def check_writable(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError):
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise StorageError(f"bucket {self.bucket!r} does not exist") from exc
                if code in ("403", "AccessDenied"):
                    raise StorageError(f"access to bucket {self.bucket!r} denied") from exc
            raise StorageError(f"bucket {self.bucket!r} is unreachable: {exc}") from exc


def _resolves_to_root(path: Path) -> bool:
    """Whether ``path`` (e.g. a symlink) resolves to the filesystem root."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: not the root, and reads will say so
        return False
    return real == Path(real.anchor)


_SCHEMES = ("file", "s3")


def resolve_uri(uri: str) -> str:
    """An index location as a URI: ``file://`` and ``s3://`` URIs unchanged; a plain path
    (``./idx``, ``idx``, ``/tmp/idx``; like ``open()``, no ``~`` expansion) as the ``file://``
    URI of its absolute path, so every entry point (CLI, ``open_index``, ``build_index``,
    writes) takes both. Any other scheme is an InputError rather than a folder named ``http:``."""
    if not isinstance(uri, str) or not uri.strip() or "\0" in uri:
        raise InputError(f"index URI must be a non-empty path or URI, got {uri!r}", field="index_uri")
    scheme = urlparse(uri).scheme
    if scheme in _SCHEMES:
        return uri
    if scheme or "://" in uri:
        raise InputError(
            f"unsupported index URI {uri!r}: use file:///absolute/path, s3://bucket/prefix or a local "
            "path (write ./NAME for a relative folder whose name holds a colon)",
            field="index_uri",
        )
    return Path(os.path.abspath(uri)).as_uri()


def open_storage(uri: str) -> Storage:
    """Return the adapter for an index URI (``file:///abs/path``, ``s3://bucket/prefix``, or a
    local path: see :func:`resolve_uri`)."""
    uri = resolve_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file URI must be file:///absolute/path, got {uri!r}", field="index_uri")
        path = Path(unquote(parsed.path))
        if not path.is_absolute():
            raise InputError(f"file URI must hold an absolute path, got {uri!r}", field="index_uri")
        path = Path(os.path.normpath(path))  # "/tmp/..", "//", "/./" name the root too
        if path == Path(path.anchor) or _resolves_to_root(path):
            raise InputError(
                f"index URI {uri!r} is the filesystem root; name a folder for the index, "
                "e.g. file:///srv/indexes/NAME",
                field="index_uri",
            )
        return LocalStorage(path)
    if not parsed.netloc:  # s3, the only scheme left
        raise InputError(f"s3 URI must name a bucket: s3://bucket/prefix, got {uri!r}", field="index_uri")
    return S3Storage(parsed.netloc, parsed.path)
