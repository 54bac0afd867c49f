"""The SQUASH functions of the local stack: what template.yaml deploys, as the router runs them.

``stack.py up`` writes them to <dir>/functions.json for the Lambda router. The worker count comes
from ``squash.runtime.tree.TreeLayout``, the same layout the handlers use, so both always agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fnspec import FunctionSpec, dump, load

__all__ = ["COORDINATOR", "INDEX_PREFIX", "FunctionSpec", "dump", "functions", "load"]

WORKER_PREFIX = "squash"  # functions are "<prefix>-coordinator" and "<prefix>-worker-<position>"
COORDINATOR = f"{WORKER_PREFIX}-coordinator"
INDEX_PREFIX = "indexes/"


def _tree(repo: Path):
    """``squash.runtime.tree``: the layout the handlers use, so names and counts agree by construction."""
    try:
        from squash.runtime import tree
    except ImportError:  # not installed in this interpreter: use the repo's copy (the layer)
        sys.path.insert(0, str(Path(repo) / "shared"))
        from squash.runtime import tree
    return tree


def functions(
    repo: Path,
    branching: int,
    depth: int,
    bucket: str,
    index_prefix: str = INDEX_PREFIX,
    worker_prefix: str = WORKER_PREFIX,
    timeout_s: int = 30,
    local_max_mb: int | None = None,
) -> list[FunctionSpec]:
    """The coordinator and one worker function per tree position, with template.yaml's settings
    (default parameters; the worker prefix plays the role of the stack name). ``local_max_mb``
    is template.yaml's CoordinatorServesUpToMB (None: its default; 0: always the tree)."""
    repo = Path(repo).resolve()
    tree = _tree(repo)
    size = tree.TreeLayout(branching, depth).size  # raises squash.InputError for a bad shape
    common = {
        "SQUASH_INDEX_BUCKET": bucket,
        "SQUASH_INDEX_PREFIX": index_prefix,
        "SQUASH_WORKER_PREFIX": worker_prefix,
        "SQUASH_TREE_BRANCHING": str(branching),
        "SQUASH_TREE_DEPTH": str(depth),
        "SQUASH_INVOKE_TIMEOUT": str(timeout_s),  # template.yaml: FunctionTimeout
        "SQUASH_WRITES_ENABLED": "true",  # template.yaml: EnableWrites (a dev stack writes)
        "SQUASH_BUILDS_ENABLED": "true",  # template.yaml: EnableBuilds (a dev stack builds)
        "POWERTOOLS_METRICS_NAMESPACE": "squash",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
        "OPENBLAS_NUM_THREADS": "1",  # template.yaml: one BLAS thread per function
    }
    specs = [
        FunctionSpec(
            name=f"{worker_prefix}-coordinator",
            code_dir=str(repo / "functions" / "coordinator"),
            handler="app.handler",
            env={**common, "POWERTOOLS_SERVICE_NAME": "squash-coordinator"}
            | ({} if local_max_mb is None else {"SQUASH_LOCAL_MAX_MB": str(local_max_mb)}),
            timeout_s=timeout_s,
            memory_mb=1024,
        )
    ]
    for position in range(size):
        specs.append(
            FunctionSpec(
                name=tree.function_name(worker_prefix, position),
                code_dir=str(repo / "functions" / "worker"),
                handler="app.handler",
                env={
                    **common,
                    "POWERTOOLS_SERVICE_NAME": "squash-worker",
                    "SQUASH_WORKER_POSITION": str(position),
                },
                timeout_s=timeout_s,
                memory_mb=2048,
            )
        )
    return specs
