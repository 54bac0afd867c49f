"""LanceDB as a peer: an IVF index (IVF_SQ by default) with a prefilter and a refine step.

Local file storage in a temporary directory, the same vectors as FAISS (unit-normalised for
cosine datasets, so L2 order is cosine order), filters translated from squash's Mongo-style
JSON to the SQL ``where`` clause LanceDB takes, searched with ``prefilter=True`` (the filter is
applied before the vector search, so every query gets min(k, matches) results), an nprobes
sweep at a fixed ``refine_factor`` (candidates re-ranked on the full vectors).

Threads: Lance sizes its compute pool from ``LANCE_CPU_THREADS`` (read once, at the first
use), so :func:`available` sets it to 1 before importing lancedb. Its I/O runtime and the
tokio threads of the Python binding are separate and cannot be sized to one
(``LANCE_IO_THREADS=1`` deadlocks index training in lancedb 0.40), so every LanceDB call runs
inside :func:`one_core`, which pins all of the process's threads to one CPU (Linux
``sched_setaffinity`` per thread) and restores them afterwards. Each point also records the
process CPU seconds per wall second (<= 1 when pinned).

A batch is one call with a (Q, d) query matrix: LanceDB answers it as Q queries, tagging each
result row with ``query_index``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pyarrow as pa

from .peers import MEASURE_UPTO, _done, score

LANCE_THREAD_VARS = {"LANCE_CPU_THREADS": "1"}
INDEX_TYPES = ("IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_FLAT")
_IMPORT_ERROR: str | None = None


def available() -> tuple[bool, str]:
    """(importable, version or the reason it is not); pins Lance's thread pools first."""
    global _IMPORT_ERROR
    for var, val in LANCE_THREAD_VARS.items():
        os.environ.setdefault(var, val)
    try:
        import lancedb
    except Exception as exc:  # missing, or a broken native extension
        _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        return False, _IMPORT_ERROR
    return True, str(getattr(lancedb, "__version__", "unknown"))


def threads() -> dict[str, str | None]:
    return {var: os.environ.get(var) for var in LANCE_THREAD_VARS}


def _tasks() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextmanager
def one_core() -> Iterator[int | None]:
    """Pin every thread of this process to one CPU (threads started inside inherit it); yields
    the CPU, or None where affinity cannot be set (then nothing is changed)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    original = os.sched_getaffinity(0)
    cpu = min(original)
    saved: dict[int, set[int]] = {}
    try:
        for tid in _tasks():
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpu})
            except OSError:  # the thread ended meanwhile
                saved.pop(tid, None)
        yield cpu
    finally:
        for tid in _tasks():
            with suppress(OSError):
                os.sched_setaffinity(tid, saved.get(tid, original))


# ------------------------------------------------------------------------------ filter -> SQL


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise ValueError(f"non-finite filter value {value!r}")
        return repr(float(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(f"unsupported filter value {value!r}")


_SQL_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _is_float(value: Any) -> bool:
    return isinstance(value, float | np.floating) and not isinstance(value, bool)


def _field(name: str, cond: Any, integer: set[str]) -> list[str]:
    """Predicates on one field. An integer column compared with a float is cast to DOUBLE
    (Lance will not coerce 571.0 to Int64), which is numpy's and squash's semantics too."""
    ops = cond if isinstance(cond, dict) else {"$eq": cond}
    out = []
    for op, val in ops.items():
        vals = list(val) if op in ("$in", "$nin") else [val]
        col = _ident(name)
        if name in integer and any(_is_float(v) for v in vals):
            col = f"CAST({col} AS DOUBLE)"
        if op in _SQL_OPS:
            out.append(f"{col} {_SQL_OPS[op]} {_literal(val)}")
        elif op in ("$in", "$nin"):
            if not vals:
                out.append("FALSE" if op == "$in" else "TRUE")
                continue
            items = ", ".join(_literal(v) for v in vals)
            out.append(f"{col} {'IN' if op == '$in' else 'NOT IN'} ({items})")
        else:
            raise ValueError(f"unsupported filter operator {op!r}")
    return out


def to_sql(filt: dict[str, Any] | None, integer: set[str] | frozenset[str] = frozenset()) -> str | None:
    """squash's filter JSON as a SQL predicate (None = no filter); ``integer``: the names of
    the integer columns."""
    if filt is None:
        return None
    parts: list[str] = []
    for key, val in filt.items():
        if key in ("$and", "$or"):
            subs = [to_sql(child, integer) or "TRUE" for child in val]
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(f"({s})" for s in subs) + ")")
        else:
            parts.extend(_field(key, val, set(integer)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else " AND ".join(f"({p})" for p in parts)


def count(table: Any, filt: dict[str, Any] | None) -> int:
    """Rows the translated filter selects (checked against the exact numpy mask)."""
    where = to_sql(filt, integer_columns(table))
    with one_core():
        return int(table.count_rows(where) if where is not None else table.count_rows())


def integer_columns(table: Any) -> set[str]:
    """Names of a LanceDB table's integer columns."""
    return {f.name for f in table.schema if pa.types.is_integer(f.type)}


# ------------------------------------------------------------------------------ index and search


def build(
    base: np.ndarray, attributes: pa.Table, path: str, index_type: str, num_partitions: int
) -> tuple[Any, dict[str, Any]]:
    """A LanceDB table of (id, vector, attributes) at ``path`` with a vector index on it."""
    import lancedb
    from lancedb import index as lindex

    n, d = base.shape
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(base).ravel()), d)
    cols = {"id": pa.array(np.arange(n, dtype=np.int64)), "vector": vectors}
    for name in attributes.column_names:
        if name not in cols:
            cols[name] = attributes.column(name)
    configs = {
        "IVF_SQ": lambda: lindex.IvfSq(distance_type="l2", num_partitions=num_partitions),
        "IVF_PQ": lambda: lindex.IvfPq(
            distance_type="l2", num_partitions=num_partitions, num_sub_vectors=_sub_vectors(d)
        ),
        "IVF_RQ": lambda: lindex.IvfRq(distance_type="l2", num_partitions=num_partitions),
        "IVF_FLAT": lambda: lindex.IvfFlat(distance_type="l2", num_partitions=num_partitions),
    }
    with one_core() as core:
        start, cpu = time.perf_counter(), time.process_time()
        db = lancedb.connect(path)
        table = db.create_table("vectors", pa.table(cols))
        loaded = time.perf_counter()
        table.create_index("vector", config=configs[index_type]())
        done = time.perf_counter()
        cpu_s = time.process_time() - cpu
    info = {
        "index_type": index_type,
        "num_partitions": num_partitions,
        "load_seconds": round(loaded - start, 3),
        "index_seconds": round(done - loaded, 3),
        "cpu_per_wall": round(cpu_s / max(done - start, 1e-9), 2),
        "pinned_cpu": core,
    }
    return table, info


def _sub_vectors(d: int) -> int:
    """PQ sub-vectors: d/8 dims each when it divides (Lance needs d % m == 0), else d/4, d/2."""
    for per in (8, 4, 2, 1):
        if d % per == 0:
            return d // per
    return d


def search(
    table: Any, queries: np.ndarray, k: int, where: str | None, nprobes: int, refine: int
) -> np.ndarray:
    """Ids (Q, k), -1 padded: the whole batch in one LanceDB call."""
    out = np.full((queries.shape[0], k), -1, dtype=np.int64)
    q = table.search(np.ascontiguousarray(queries)).nprobes(nprobes).limit(k).select(["id", "_distance"])
    if refine > 1:
        q = q.refine_factor(refine)
    if where is not None:
        q = q.where(where, prefilter=True)
    res = q.to_arrow()
    if queries.shape[0] == 1 and "query_index" not in res.column_names:
        qi = np.zeros(res.num_rows, dtype=np.int64)
    else:
        qi = res.column("query_index").to_numpy().astype(np.int64)
    ids = res.column("id").to_numpy()
    dist = res.column("_distance").to_numpy()
    order = np.lexsort((dist, qi))  # by query, then by distance
    qi, ids = qi[order], ids[order]
    rank = np.arange(qi.size) - np.searchsorted(qi, qi, side="left")
    keep = rank < k
    out[qi[keep], rank[keep]] = ids[keep]
    return out


def single_latency(
    table: Any, queries: np.ndarray, k: int, filt: dict | None, nprobes: int, refine: int, n: int
) -> dict[str, float]:
    """p50/p95 of one query per call."""
    from .timing import latencies_ms

    where = to_sql(filt, integer_columns(table))
    with one_core():
        return latencies_ms(
            lambda i: search(table, queries[i % len(queries)][None, :], k, where, nprobes, refine), n
        )


def sweep(
    table: Any,
    queries: np.ndarray,
    k: int,
    filt: dict | None,
    mask: np.ndarray,
    truth: np.ndarray,
    repeats: int,
    nprobes: tuple[int, ...],
    refine: int,
    num_partitions: int,
) -> list[dict[str, Any]]:
    """Recall and QPS per nprobes (stopping like the FAISS sweeps: recall reached or flat)."""
    from .timing import timed

    where = to_sql(filt, integer_columns(table))
    matches = int(mask.sum())
    points = []
    for nprobe in (p for p in nprobes if p <= num_partitions):
        calls: list[tuple[float, float]] = []  # (wall, process CPU) seconds of each call

        def run(p: int = nprobe, calls: list = calls) -> np.ndarray:
            wall, cpu = time.perf_counter(), time.process_time()
            ids = search(table, queries, k, where, p, refine)
            calls.append((time.perf_counter() - wall, time.process_time() - cpu))
            return ids

        with one_core():
            t = timed(run, repeats)
        timed_calls = calls[1:]  # the warm-up call is not timed
        cpu_per_wall = sum(c for _, c in timed_calls) / max(sum(w for w, _ in timed_calls), 1e-9)
        points.append(
            {
                "nprobe": nprobe,
                "refine_factor": refine,
                "qps": t.qps(len(queries)),
                "seconds": t.seconds,
                "runs": t.runs,
                "cpu_per_wall": round(cpu_per_wall, 2),
            }
            | score(t.result, truth, k, matches)
        )
        if nprobe >= MEASURE_UPTO and _done([p["recall"] for p in points]):
            break
    return points
