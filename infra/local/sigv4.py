"""SigV4 verification for the local HTTP API, as API Gateway's IAM authorization does it.

The request's signature is recomputed with botocore's own signer (service ``execute-api``)
over exactly the headers the client listed in ``SignedHeaders``, using the secret of the
access key it names, and compared in constant time. The answers mirror API Gateway's: 403
with ``{"message": ...}`` for a missing, malformed, expired or wrong signature and for an
unknown access key. Only static keys are known here (no STS session tokens are checked
against an issuer: a token the client signed is part of the signature, nothing more).
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "execute-api"
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$"
)
MISSING = "Forbidden"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."


def verify(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    keys: dict[str, str],
    region: str,
    now: datetime | None = None,
) -> str | None:
    """None when the request is signed by one of ``keys`` (access key id → secret) for
    ``region``; otherwise API Gateway's message for the 403."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    auth = merged.get("authorization")
    if not auth:
        return MISSING
    m = _AUTH.match(auth.strip())
    if not m:
        return "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."
    parts = m["cred"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        return "Credential should be scoped to a valid region, service and aws4_request terminator."
    akid, day, scope_region, service = parts[:4]
    if service != SERVICE or scope_region != region:
        return f"Credential should be scoped to correct service: '{SERVICE}' in region '{region}'."
    secret = keys.get(akid)
    if secret is None:
        return UNKNOWN_KEY
    stamp = merged.get("x-amz-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    now = now or datetime.now(UTC)
    if abs(now - when) > MAX_SKEW or stamp[:8] != day:
        return "Signature expired: the request's X-Amz-Date is more than 5 minutes from the server's time."
    signed = m["signed"].split(";")
    if "host" not in signed or any(h not in merged for h in signed):
        return MISMATCH
    # botocore takes a present x-amz-content-sha256 as the payload's hash without hashing the
    # body: it must be the body's real hash, or a signed request could carry any other body.
    claimed = merged.get("x-amz-content-sha256")
    if claimed is not None and claimed != hashlib.sha256(body).hexdigest():
        return MISMATCH
    # The signature covers the normalised path; the emulator routes on the path as sent, so
    # a path that normalises to another one (dot segments, //) is refused, not re-routed.
    path = target.split("?", 1)[0]
    if not path.startswith("/") or (path != "/" and posixpath.normpath(path) != path.rstrip("/")):
        return MISMATCH
    host = merged["host"]
    req = AWSRequest(
        method=method, url=f"http://{host}{target}", data=body, headers={h: merged[h] for h in signed}
    )
    req.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(akid, secret, merged.get("x-amz-security-token")), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    return None if hmac.compare_digest(expected, m["sig"]) else MISMATCH


def parse_keys(specs: list[str]) -> dict[str, str]:
    """``["AKID:SECRET", ...]`` → ``{AKID: SECRET}``."""
    keys = {}
    for spec in specs:
        akid, sep, secret = spec.partition(":")
        if not sep or not akid or not secret:
            raise ValueError(f"an IAM key is ACCESS_KEY_ID:SECRET, got {spec!r}")
        keys[akid] = secret
    return keys
