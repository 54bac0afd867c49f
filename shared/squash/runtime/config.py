"""Deployment settings of the coordinator and the workers, read from the environment.

The same variables are set by ``template.yaml`` on AWS and by ``infra/local`` on the local
stack, so the handlers never know where they run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import InputError, StorageError
from .tree import TreeLayout

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


#: Default of SQUASH_LOCAL_MAX_MB (template CoordinatorServesUpToMB): an index whose hot tier
#: fits this is served by the coordinator alone. 64 takes in Fashion-MNIST-sized indexes
#: (60k x 784: 38 MiB). Measured on the local stack (README, "Binary wire"): their routed
#: plans cost ~2 ms for one query and ~0.25 ms a query in a batch of 1,000 on one core, less
#: than the tree's two extra invocation hops and payloads; the coordinator's peak RSS serving
#: Fashion-MNIST is ~0.25 GB of its 1,024 MB (about 1.25 bytes in memory per hot-tier byte).
#: An exact scan of every row (plan "exact", target_recall 1) is slower on one function than
#: spread over a tree: ~0.25 s for one query over Fashion-MNIST's 60k rows.
DEFAULT_LOCAL_MAX_MB = 64


def valid_name(name: object) -> bool:
    """Whether ``name`` can be an index name in a URL path (and so a key prefix)."""
    return isinstance(name, str) and bool(_NAME.match(name))


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InputError(f"environment variable {name}={raw!r} must be an integer", field=name) from exc


@dataclass(frozen=True)
class RuntimeConfig:
    """Where indexes live, how the tree is shaped and how hard to retry."""

    bucket: str
    prefix: str = "indexes/"
    worker_prefix: str = "squash"
    tree: TreeLayout = field(default_factory=lambda: TreeLayout(4, 1))
    retries: int = 2  # extra attempts per child invocation
    backoff_s: float = 0.05  # first retry delay; doubles each attempt
    invoke_timeout_s: float = 30.0  # the function timeout (Lambda does not expose it to the code)
    deadline_margin_s: float = 1.0  # answered this long before the function timeout at most
    manifest_check_s: float = 2.0  # how stale a coordinator's view of an index may be
    cache_bytes: int = 1 << 30  # worker segment cache budget
    writes_enabled: bool = False  # template.yaml EnableWrites: the coordinator may write indexes
    builds_enabled: bool = False  # template.yaml EnableBuilds: workers may write built partitions
    # Indexes whose hot tier is at most this many bytes are searched by the coordinator
    # itself, no tree (one invocation per request); 0: always the tree.
    local_max_bytes: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RuntimeConfig:
        env = dict(os.environ if env is None else env)
        memory_mb = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 2048)
        # Default budget: 60 % of the function's memory, the rest for numpy work and the runtime.
        cache_mb = _int(env, "SQUASH_CACHE_MB", max(64, int(memory_mb * 0.6)))
        # Lambda does not expose its timeout to the code (the emulator does); the template sets it.
        timeout = _int(env, "SQUASH_INVOKE_TIMEOUT", _int(env, "AWS_LAMBDA_FUNCTION_TIMEOUT", 30))
        prefix = env.get("SQUASH_INDEX_PREFIX", "indexes/").strip("/")
        return cls(
            bucket=env.get("SQUASH_INDEX_BUCKET", ""),
            prefix=f"{prefix}/" if prefix else "",
            worker_prefix=env.get("SQUASH_WORKER_PREFIX", "squash"),
            tree=TreeLayout(_int(env, "SQUASH_TREE_BRANCHING", 4), _int(env, "SQUASH_TREE_DEPTH", 1)),
            retries=_int(env, "SQUASH_INVOKE_RETRIES", 2),
            invoke_timeout_s=float(timeout),
            deadline_margin_s=_int(env, "SQUASH_DEADLINE_MARGIN_MS", 1000) / 1000.0,
            manifest_check_s=float(env.get("SQUASH_MANIFEST_CHECK_SECONDS", "2") or 2),
            writes_enabled=env.get("SQUASH_WRITES_ENABLED", "").strip().lower() in ("true", "1"),
            builds_enabled=env.get("SQUASH_BUILDS_ENABLED", "").strip().lower() in ("true", "1"),
            local_max_bytes=_int(env, "SQUASH_LOCAL_MAX_MB", DEFAULT_LOCAL_MAX_MB) << 20,
            cache_bytes=cache_mb << 20,
        )

    def index_uri(self, name: str) -> str:
        """``s3://<bucket>/<prefix><name>`` for an index name taken from a URL path."""
        if not valid_name(name):
            raise InputError(
                f"index name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-'",
                field="index",
            )
        if not self.bucket:
            raise StorageError("SQUASH_INDEX_BUCKET is not set for this function")
        return f"s3://{self.bucket}/{self.prefix}{name}"
