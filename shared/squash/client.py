"""A Python client for a deployed squash HTTP API (API Gateway + the coordinator function).

>>> client = Client("https://abc123.execute-api.eu-west-1.amazonaws.com")  # doctest: +SKIP
>>> hits = client.query("products", queries, k=10, filter={"price": {"$lt": 20}})  # doctest: +SKIP
>>> hits.ids, hits.distances  # (Q, k) numpy arrays, as from Index.search  # doctest: +SKIP

Requests are SigV4-signed (service ``execute-api``) with botocore's signer and the standard
credential chain, as API Gateway's IAM auth expects; ``auth="none"`` sends them unsigned.
Query vectors travel in the binary wire format by default (base64 little-endian float32, see
README "HTTP API"), which is several times cheaper to encode and parse than JSON numbers.
Only 429 and 503 answers are retried (with jittered exponential backoff): both mean "nothing
happened, try later"; any other error is raised at once as the library's own
:class:`~squash.errors.SquashError` subclass, carrying the server's ``code`` and ``field``.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import pybase64
import urllib3

from .errors import (
    AccessDeniedError,
    FilterError,
    IndexFormatError,
    IndexNotFoundError,
    InputError,
    PayloadTooLargeError,
    SquashError,
    StorageError,
    UpstreamError,
    WriteConflictError,
    WritesDisabledError,
)
from .index import SearchResult
from .params import SearchParams
from .runtime.wire import encode_array as pack  # the binary wire's one encoder

__all__ = ["AuthError", "Client", "HTTPError", "Signer"]

#: Answers that mean "not done, try again later": throttled (429) or unavailable (503).
RETRY_STATUSES = frozenset({429, 503})
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


class AuthError(SquashError):
    """API Gateway refused the request before it reached squash (HTTP 403): no or bad
    signature, unknown credentials, or a caller without ``execute-api:Invoke``."""

    code = "forbidden"


class HTTPError(SquashError):
    """An HTTP answer that is not one of squash's own errors (e.g. API Gateway's 500)."""

    code = "http_error"


#: Server error codes → the library's exception classes.
_ERRORS: dict[str, type[SquashError]] = {
    "invalid_input": InputError,
    "invalid_filter": FilterError,
    "not_found": InputError,
    "index_not_found": IndexNotFoundError,
    "index_corrupt": IndexFormatError,
    "storage_error": StorageError,
    "access_denied": AccessDeniedError,
    "write_conflict": WriteConflictError,
    "writes_disabled": WritesDisabledError,
    "payload_too_large": PayloadTooLargeError,
}


class Client:
    """One squash deployment's HTTP API.

    ``url`` is the API's base URL (``stack.py`` / ``sam deploy`` print it). ``auth="iam"``
    signs every request with the credentials of ``session`` (a ``boto3.Session`` or
    ``botocore.session.Session``; default: the standard chain). ``region`` defaults to the
    one in an ``execute-api`` host name, else the session's. ``timeout`` bounds each attempt
    in seconds; ``retries`` is how many times a 429/503 is retried. ``wire="json"`` sends
    vectors as JSON numbers (for debugging with a proxy); ``"binary"`` is the default.
    """

    def __init__(
        self,
        url: str,
        auth: Literal["iam", "none"] = "iam",
        region: str | None = None,
        session: Any = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.1,
        wire: Literal["binary", "json"] = "binary",
    ) -> None:
        if auth not in ("iam", "none"):
            raise InputError(f'auth must be "iam" or "none", got {auth!r}', field="auth")
        if wire not in ("binary", "json"):
            raise InputError(f'wire must be "binary" or "json", got {wire!r}', field="wire")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"url must start with http:// or https://, got {url!r}", field="url")
        self.url = url.rstrip("/")
        self.auth, self.wire = auth, wire
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self._http = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(total=timeout))
        self._metrics: dict[str, str] = {}
        self._signer = Signer(self.url, region, session) if auth == "iam" else None

    # -- the API --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: liveness and the tree's shape; touches no storage."""
        return self._call("GET", "/health")

    def list_indexes(self) -> list[dict[str, Any]]:
        """``GET /indexes``: the indexes this deployment serves."""
        return self._call("GET", "/indexes")["indexes"]

    def info(self, index: str) -> dict[str, Any]:
        """``GET /indexes/{index}``: the manifest summary (rows, dims, metric, attributes…)."""
        doc = self._call("GET", f"/indexes/{_name(index)}")
        self._metrics[index] = doc.get("metric", "l2")
        return doc

    def query(
        self,
        index: str,
        vectors: Any,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        include: Sequence[str] = (),
        params: SearchParams | Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """k nearest neighbours of each row of ``vectors`` ((Q, d) or one (d,) vector) among
        those matching ``filter``: a :class:`~squash.index.SearchResult` like
        :meth:`squash.Index.search` returns (ids -1 padded, distances +inf padded, ``stats``
        from the server; ``include=["attributes"]`` fills ``attributes``)."""
        queries = _as_queries(vectors)
        wanted = set(include) | {"distance"}
        body: dict[str, Any] = {"vectors": self._vectors(queries), "k": int(k), "include": sorted(wanted)}
        if filter is not None:
            body["filter"] = filter
        if params is not None:
            body["params"] = params.to_dict() if isinstance(params, SearchParams) else dict(params)
        if self.wire == "binary":
            body["encoding"] = "binary"
        doc = self._call("POST", f"/indexes/{_name(index)}/query", body)
        stats = doc.get("stats") or {}
        metric = stats["metric"] if isinstance(stats.get("metric"), str) else self._metric(index)
        if "ids" in doc:  # binary encoding
            ids = unpack(doc["ids"], "ids").astype(np.int64, copy=False)
            if "distances" in doc:
                dist = unpack(doc["distances"], "distances").astype(np.float32, copy=False)
            else:  # a dot index answers its score (q·x) where a distance is asked for
                score = unpack(doc["scores"], "scores").astype(np.float32, copy=False)
                dist = np.where(ids < 0, np.float32(np.inf), -score)
            attrs = doc.get("attributes")
        else:
            ids, dist, attrs = _from_hits(doc["results"], int(k), "attributes" in wanted)
        return SearchResult(
            ids=ids, distances=dist, stats=doc.get("stats", {}), attributes=attrs, metric=metric
        )

    def upsert(self, index: str, ids: Any, vectors: Any, attributes: Any = None) -> dict[str, Any]:
        """Insert or replace vectors by id (``POST /indexes/{index}/upsert``); ``attributes``
        as a pyarrow Table, a dict of columns or a list of dicts. Answers the new version
        and counts. A 429/503 is retried like any call: nothing of the write was committed
        then, and an upsert by id is idempotent anyway."""
        id_list = _as_ids(ids)
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows[None, :]
        body: dict[str, Any] = {"ids": id_list, "vectors": self._vectors(rows)}
        if attributes is not None:
            body["attributes"] = _attribute_rows(attributes)
        return self._call("POST", f"/indexes/{_name(index)}/upsert", body)

    def delete(self, index: str, ids: Any = None, filter: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Delete by ids or by filter (exactly one); answers the new version and counts."""
        if (ids is None) == (filter is None):
            raise InputError("give exactly one of ids and filter", field="ids")
        body = {"ids": _as_ids(ids)} if ids is not None else {"filter": filter}
        return self._call("POST", f"/indexes/{_name(index)}/delete", body)

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _metric(self, index: str) -> str:
        if index not in self._metrics:
            self.info(index)
        return self._metrics[index]

    def _vectors(self, rows: np.ndarray) -> Any:
        if self.wire == "binary":
            return _Packed(pack(rows.astype(np.float32, copy=False)))
        return rows.tolist()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call: sign, send, retry 429/503 with full-jitter backoff, decode."""
        data = None if body is None else _dumps(body)
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        url = self.url + path
        for attempt in range(self.retries + 1):
            sent = self._signer.sign(method, url, data, headers) if self._signer else headers
            try:
                resp = self._http.request(method, url, body=data, headers=sent, redirect=False)
            except urllib3.exceptions.HTTPError as exc:
                raise UpstreamError(f"could not reach {self.url}: {exc}", status=503) from exc
            if resp.status in RETRY_STATUSES and attempt < self.retries:
                time.sleep(random.uniform(0, min(5.0, self.backoff * 2**attempt)))
                continue
            return _decode(resp.status, resp.data)
        raise AssertionError("unreachable")  # pragma: no cover


class Signer:
    """SigV4 for ``execute-api`` with refreshable credentials (re-read on every request)."""

    def __init__(self, url: str, region: str | None, session: Any) -> None:
        import botocore.session
        from botocore.auth import SigV4Auth  # noqa: F401 (fail here, not on the first call)

        core = getattr(session, "_session", session) or botocore.session.get_session()
        host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        match = _REGION_IN_HOST.search(host)
        self.region = region or (match.group(1) if match else None) or core.get_config_variable("region")
        if not self.region:
            raise InputError(
                "no AWS region for signing: pass region=, set AWS_DEFAULT_REGION, or use the "
                "API's execute-api URL",
                field="region",
            )
        self._session = core

    def sign(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        creds = self._session.get_credentials()
        if creds is None:
            raise AuthError(
                "no AWS credentials found for signing (standard chain: env, profile, role); "
                'use auth="none" for an API without IAM auth'
            )
        req = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
        SigV4Auth(creds.get_frozen_credentials(), "execute-api", self.region).add_auth(req)
        return dict(req.headers.items())


def unpack(obj: Any, name: str) -> np.ndarray:
    """Inverse of :func:`pack` (the server's :func:`~squash.runtime.wire.encode_array`) for
    the dtypes a server sends (int64, float32)."""
    try:
        dtype = {"int64": np.dtype("<i8"), "float32": np.dtype("<f4")}[obj["dtype"]]
        shape = tuple(int(s) for s in obj["shape"])
        raw = pybase64.b64decode(obj["data"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPError(f"the server's {name!r} is not a packed array ({exc})", field=name) from exc


def _name(index: str) -> str:
    if not isinstance(index, str) or not index:
        raise InputError(f"index must be a non-empty string, got {index!r}", field="index")
    return quote(index, safe="")


def _as_queries(vectors: Any) -> np.ndarray:
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError("vectors must be a (Q, d) array of numbers", field="vectors") from exc
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"vectors must be (Q, d) or (d,), got shape {arr.shape}", field="vectors")
    return arr


def _as_ids(ids: Any) -> list[int]:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputError("ids must be a 1-D sequence of integers", field="ids")
    if arr.size and arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError("ids must fit int64", field="ids")  # not wrapped to negatives
    return arr.astype(np.int64).tolist()


def _attribute_rows(attributes: Any) -> list[dict[str, Any]]:
    if hasattr(attributes, "to_pylist"):  # pyarrow Table / RecordBatch
        return attributes.to_pylist()
    if isinstance(attributes, Mapping):
        cols = {k: list(v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attributes.items()}
        n = {len(v) for v in cols.values()}
        if len(n) > 1:
            raise InputError("attribute columns have different lengths", field="attributes")
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    if isinstance(attributes, Sequence) and all(isinstance(r, Mapping) for r in attributes):
        return [dict(r) for r in attributes]
    raise InputError(
        "attributes must be a pyarrow Table, a dict of columns or a list of dicts", field="attributes"
    )


class _Packed(dict):
    """A packed array this client made (:func:`pack`): its ``data`` is standard base64,
    which JSON holds verbatim (A-Z, a-z, 0-9, +, /, =), so :func:`_dumps` splices it in."""


def _dumps(body: Any) -> bytes:
    """Compact JSON of a request body. The base64 of packed arrays is spliced into the text
    instead of passing json.dumps' per-character escaping (~10-20 ms for the 4.2 MB of a
    1,000 x 784 batch on the 2-core VM, against a copy)."""
    spliced: dict[str, str] = {}
    if isinstance(body, dict):
        body = dict(body)
        for key, value in body.items():
            if isinstance(value, _Packed) and isinstance(value.get("data"), str):
                mark = f"squash-packed-{len(spliced)}-{random.getrandbits(64):016x}"
                spliced[mark] = value["data"]
                body[key] = dict(value) | {"data": mark}
    text = json.dumps(body, separators=(",", ":"), default=_json_default)
    if not spliced:
        return text.encode()
    parts = [text]
    for mark, data in spliced.items():
        head, sep, tail = parts.pop().partition(f'"{mark}"')
        if not sep:  # pragma: no cover (the mark is in the text by construction)
            raise AssertionError("packed array mark lost")
        parts += [head, f'"{data}"', tail]
    return "".join(parts).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise InputError(f"a {type(value).__name__} value cannot be sent as JSON", field="body")


def _from_hits(results: list, k: int, with_attrs: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    q = len(results)
    ids = np.full((q, k), -1, dtype=np.int64)
    dist = np.full((q, k), np.inf, dtype=np.float32)
    attrs: list[list[dict[str, Any]]] | None = [] if with_attrs else None
    for qi, hits in enumerate(results):
        ids[qi, : len(hits)] = [h["id"] for h in hits]
        # a dot index answers its score (q·x) where a distance is asked for: distance = −score
        dist[qi, : len(hits)] = [h["distance"] if "distance" in h else -h["score"] for h in hits]
        if attrs is not None:
            attrs.append([h.get("attributes", {}) for h in hits])
    return ids, dist, attrs


def _decode(status: int, data: bytes) -> Any:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        doc = None
    if 200 <= status < 300 and doc is not None:
        return doc
    raise error_from(status, doc, data)


def error_from(status: int, doc: Any, data: bytes = b"") -> SquashError:
    """The exception for an error answer: squash's ``{"error": {code, message, field}}``
    becomes its library class; API Gateway's ``{"message"}`` (403, 413, 429, 5xx) too."""
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        code, message, field = err["code"], str(err.get("message", "")), err.get("field")
        kind = _ERRORS.get(code)  # by code first: storage_error (503), index_corrupt (500), ...
        if kind is not None:
            exc: SquashError = kind(message, field=field)
        elif status >= 500 or code in ("worker_failed", "worker_unavailable", "deadline_exceeded"):
            exc = UpstreamError(message, status=status, code=code)
            exc.field = field
        else:
            exc = HTTPError(message, field=field)
            exc.code = code
    else:
        message = doc.get("message") if isinstance(doc, dict) else None
        message = str(message or data[:200].decode("utf-8", "replace") or f"HTTP {status}")
        if status == 403:
            exc = AuthError(message)
        elif status == 413:
            exc = PayloadTooLargeError(message, field="body")
        elif status in (429, 502, 503, 504):
            exc = UpstreamError(message, status=status, code="throttled" if status == 429 else None)
        else:
            exc = HTTPError(message)
    exc.status = status  # type: ignore[attr-defined]
    return exc
