"""The anchors squash is measured against, on the same data, queries and core.

Exact numpy brute force (one BLAS product over the matching rows), FAISS ``IndexFlatL2``, and
FAISS ``IVF{nlist},Flat`` / ``IVF{nlist},SQ8`` over an nprobe sweep. Filters reach FAISS as an
``IDSelectorBitmap`` over the exact mask, the fairest form FAISS offers: it skips rows that
fail before scoring them, but it does not probe more lists when few matches are near.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .timing import Timing, timed

# Powers of two plus midpoints, so "the cheapest setting reaching a recall" is not a 2x step.
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
STOP_RECALL = 0.999  # a sweep stops at the first nprobe reaching this ...
MEASURE_UPTO = 8  # ... but always measures up to nprobe 8 (FAISS's unfiltered tuning, the anchor)
PLATEAU = 0.0005  # ... or once recall >= 0.95 gains less than this over two steps (SQ8's ceiling)
EXACT_CHUNK = 1 << 26  # distance-matrix elements per query chunk (256 MB of float32)


def _faiss() -> Any:
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


def exact_search(
    base: np.ndarray, base_sq: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int
) -> np.ndarray:
    """Brute-force filtered k-NN ids (Q, min(k, matches)) in float32: the baseline to beat."""
    rows = None if mask.all() else np.flatnonzero(mask)
    sub = base if rows is None else base[rows]
    sq = base_sq if rows is None else base_sq[rows]
    kk = min(k, sub.shape[0])
    out = np.empty((queries.shape[0], kk), dtype=np.int64)
    step = max(1, EXACT_CHUNK // max(1, sub.shape[0]))
    for start in range(0, queries.shape[0], step):
        d = sq[None, :] - 2.0 * (queries[start : start + step] @ sub.T)
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < d.shape[1] else np.argsort(d, axis=1)
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1)
        local = np.take_along_axis(part, order, axis=1)
        out[start : start + d.shape[0]] = local if rows is None else rows[local]
    return out


def short_queries(ids: np.ndarray, k: int, matches: int) -> int:
    """Queries returning fewer than min(k, matches) results (the 'full k' requirement)."""
    return int(((ids >= 0).sum(axis=1) < min(k, matches)).sum())


def score(ids: np.ndarray, truth: np.ndarray, k: int, matches: int) -> dict[str, float | int]:
    from squash.evaluation import recall_at_k

    return {"recall": recall_at_k(ids, truth), "short_queries": short_queries(ids, k, matches)}


class Selector:
    """A FAISS ``IDSelectorBitmap`` over a boolean mask (None when the mask is all true).

    Keeps the packed bitmap alive: FAISS holds only a raw pointer to it.
    """

    def __init__(self, mask: np.ndarray) -> None:
        faiss = _faiss()
        self.bits = np.packbits(mask, bitorder="little")
        self.sel = None if mask.all() else faiss.IDSelectorBitmap(mask.size, faiss.swig_ptr(self.bits))

    def flat_params(self) -> Any:
        return None if self.sel is None else _faiss().SearchParameters(sel=self.sel)

    def ivf_params(self, nprobe: int) -> Any:
        faiss = _faiss()
        if self.sel is None:
            return faiss.SearchParametersIVF(nprobe=nprobe)
        return faiss.SearchParametersIVF(nprobe=nprobe, sel=self.sel)


FAISS_KINDS = ("faiss_flat", "ivf_flat", "ivf_sq8")


def build_faiss(
    base: np.ndarray, nlist: int, kinds: tuple[str, ...] = FAISS_KINDS
) -> tuple[dict[str, Any], dict[str, float]]:
    """IndexFlatL2, IVF{nlist},Flat and IVF{nlist},SQ8 over ``base`` (or those of them named in
    ``kinds``); build seconds of each."""
    faiss = _faiss()
    d = base.shape[1]
    specs = {"faiss_flat": "Flat", "ivf_flat": f"IVF{nlist},Flat", "ivf_sq8": f"IVF{nlist},SQ8"}
    indexes, seconds = {}, {}
    for name in kinds:
        spec = specs[name]
        start = time.perf_counter()
        index = faiss.index_factory(d, spec)
        index.train(base)
        index.add(base)
        indexes[name] = index
        seconds[name] = round(time.perf_counter() - start, 3)
    return indexes, seconds


def flat_point(
    index: Any, queries: np.ndarray, k: int, mask: np.ndarray, truth: np.ndarray, repeats: int
) -> dict[str, Any]:
    """FAISS exact search with the filter as a selector."""
    sel = Selector(mask)
    t = timed(lambda: index.search(queries, k, params=sel.flat_params())[1], repeats)
    return {"qps": t.qps(len(queries)), "seconds": t.seconds, "runs": t.runs} | score(
        t.result, truth, k, int(mask.sum())
    )


def exact_point(
    base: np.ndarray,
    base_sq: np.ndarray,
    queries: np.ndarray,
    k: int,
    mask: np.ndarray,
    truth: np.ndarray,
    repeats: int,
) -> dict[str, Any]:
    """The numpy brute-force baseline, timed like everything else."""
    t = timed(lambda: exact_search(base, base_sq, queries, mask, k), repeats)
    return point_of(t, len(queries), k, truth, int(mask.sum()))


def point_of(t: Timing, n_queries: int, k: int, truth: np.ndarray, matches: int) -> dict[str, Any]:
    """A peer's point from a timing whose result is the last run's ids."""
    return {
        "qps": t.qps(n_queries),
        "seconds": t.seconds,
        "runs": t.runs,
        "cpu_seconds": t.cpu_seconds,
    } | score(t.result, truth, k, matches)


def ivf_sweep(
    index: Any,
    queries: np.ndarray,
    k: int,
    mask: np.ndarray,
    truth: np.ndarray,
    repeats: int,
    nprobes: tuple[int, ...] = NPROBES,
) -> list[dict[str, Any]]:
    """Recall and QPS of an IVF index per nprobe, until recall reaches STOP_RECALL or plateaus."""
    sel = Selector(mask)
    matches = int(mask.sum())
    points = []
    for nprobe in (p for p in nprobes if p <= index.nlist):
        params = sel.ivf_params(nprobe)
        t = timed(lambda p=params: index.search(queries, k, params=p)[1], repeats)
        points.append(
            {"nprobe": nprobe, "qps": t.qps(len(queries)), "seconds": t.seconds, "runs": t.runs}
            | score(t.result, truth, k, matches)
        )
        if nprobe >= MEASURE_UPTO and _done([p["recall"] for p in points]):
            break
    return points


def _done(recalls: list[float]) -> bool:
    """Stop the sweep: recall high enough, or flat (quantization error caps it) at a useful level."""
    last = recalls[-1]
    plateau = len(recalls) >= 3 and last >= 0.95 and last - recalls[-3] < PLATEAU
    return last >= STOP_RECALL or plateau


def single_latency(index: Any, queries: np.ndarray, k: int, mask: np.ndarray, nprobe: int, n: int) -> dict:
    """p50/p95 of one query at a time (the interactive case), FAISS IVF at ``nprobe``."""
    from .timing import latencies_ms

    sel = Selector(mask)
    params = sel.ivf_params(nprobe)
    return latencies_ms(lambda i: index.search(queries[i % len(queries)][None, :], k, params=params), n)
