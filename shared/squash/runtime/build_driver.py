"""A build's per-partition stage fanned out over the deployed worker functions (issue #14).

The driver (``squash build --on lambda``) runs the global stage and the assignment where
it is, as a local build does, then for each partition uploads its input (rows, ids,
attribute arrays: :func:`squash.build_partitions.partition_input`) under the new build's
folder, and invokes the ``build`` action of a worker function with runs of partitions,
``concurrency`` at a time. The functions write the segments; the driver gathers their
refs, centroids and ranking probes, deletes the inputs, and writes the router and the
manifest itself. The files are the bytes a local build writes for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..build_partitions import PartitionJob, PartitionResult, input_key, partition_input, probe_of
from ..errors import InputError
from ..manifest import FileRef
from ..ranking import KINDS, RankingProbe
from .codec import pack_array, unpack_array
from .invoke import Invoker, LambdaInvoker
from .tree import function_name

PARTITIONS_PER_CALL = 16  # a run short enough for the function timeout on 1M-row partitions


@dataclass
class LambdaBuilder:
    """Partitions built by ``<stack>-worker-0`` invocations (Lambda runs them in parallel
    containers). ``stats`` counts invocations and bytes moved once the build is done."""

    stack: str
    concurrency: int = 4
    per_call: int = PARTITIONS_PER_CALL
    invoke: Invoker = field(default_factory=lambda: LambdaInvoker(retries=2, timeout_s=900.0))
    stats: dict[str, Any] = field(default_factory=dict)

    def __call__(
        self, job: PartitionJob, partitions: int, advance: Callable[[int], None]
    ) -> tuple[list[PartitionResult], RankingProbe | None]:
        if not job.storage.uri.startswith("s3://"):
            raise InputError(
                "a build on Lambda needs an s3:// index URI (the functions write there)", field="index_uri"
            )
        started = time.perf_counter()
        uploaded = 0
        for part in range(partitions):  # the functions' inputs, before any is invoked
            data = partition_input(job, part)
            job.storage.write(input_key(job.prefix, part), data)
            uploaded += len(data)
        uploaded_at = time.perf_counter()
        base = {
            "action": "build",
            "index": job.storage.uri,
            "build_id": job.prefix.split("/", 1)[1],
            "budget": job.budget,
            "sketch_bits": job.sketch_bits,
        }
        if job.probe_queries is not None:
            base["probe"] = {"queries": pack_array(job.probe_queries)}
            if job.probe_exclude is not None:
                base["probe"]["exclude"] = pack_array(job.probe_exclude.astype(np.int64))
        runs = [
            list(range(a, min(a + self.per_call, partitions))) for a in range(0, partitions, self.per_call)
        ]
        probe = probe_of(job)
        results: list[PartitionResult] = []
        function = function_name(self.stack, 0)
        io = {"bytes_read": 0, "bytes_written": 0}
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
                calls = pool.map(lambda run: self.invoke(function, base | {"partitions": run}), runs)
                for run, out in zip(runs, calls, strict=True):
                    results.extend(_results(out, run))
                    if probe is not None:
                        probe.merge(_probe_state(out))
                    for key in io:
                        io[key] += int(out.get("s3", {}).get(key, 0))
                    advance(len(run))
        finally:
            job.storage.delete_prefix(f"{job.prefix}/inputs")
        results.sort(key=lambda r: r.part)
        self.stats = {
            "invocations": len(runs),
            "function": function,
            "concurrency": self.concurrency,
            "input_bytes_uploaded": uploaded,
            "function_bytes_read": io["bytes_read"],
            "function_bytes_written": io["bytes_written"],
            "upload_seconds": round(uploaded_at - started, 3),
            "invoke_seconds": round(time.perf_counter() - uploaded_at, 3),
        }
        return results, probe


def _results(out: dict[str, Any], run: list[int]) -> list[PartitionResult]:
    built = out.get("built")
    if not isinstance(built, list) or [b.get("partition") for b in built] != run:
        raise InputError(f"a build function answered for other partitions than {run[0]}-{run[-1]}")
    return [
        PartitionResult(
            part=int(b["partition"]),
            segment=FileRef(**b["segment"]),
            cold=FileRef(**b["cold"]),
            centroid=unpack_array(b["centroid"], "centroid"),
            size=int(b["rows"]),
            rms=float(b["rms"]),
            fine_bytes=int(b.get("fine_bytes", 0)),
        )
        for b in built
    ]


def _probe_state(out: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    doc = out.get("probe") or {}
    missing = [kind for kind in KINDS if f"{kind}.d" not in doc or f"{kind}.i" not in doc]
    if missing:
        raise InputError(
            f"a build function answered without the ranking probe's {', '.join(missing)} lists: "
            "deploy the functions of this squash version (sam deploy) and build again"
        )
    return {
        kind: (
            unpack_array(doc[f"{kind}.d"], f"probe.{kind}.d"),
            unpack_array(doc[f"{kind}.i"], f"probe.{kind}.i"),
        )
        for kind in KINDS
    }
