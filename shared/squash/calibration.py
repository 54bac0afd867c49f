"""Recall calibration: how much routing a recall target needs on *this* index's data.

At build time (or later, with ``squash calibrate``) a sample of queries is searched by
brute force, and for every true neighbour we record the routing *score* of the partition
holding it: how much farther that partition's centroid is from the query than the nearest
centroid that may hold a match, in units of the index's typical partition radius,

    score = (‖q − c_p‖ − ‖q − c_nearest‖) / radius.

and the *coverage* it needs: how many matching rows lie in that partition and in every
valid partition nearer in centroid order. A query visits every partition whose score is at
most a threshold (the per-query adaptivity: a query whose nearest centroids are nearly
equidistant gets many partitions, one with a clear winner few) and, in centroid order,
partitions until a coverage threshold of matches is reached (which keeps filters whose
matches lie away from the query's nearest partitions covered). Sorting the scores of all
(query, neighbour) pairs gives the recall curve of each rule; the calibration stores, per
filter-selectivity band and per k, both thresholds at a grid of recall levels. Bands use
uncorrelated random filters (nested masks); each rule alone reaches the level on them.

Calibration queries are the user's (``--calibration-queries``), or, when none are given, a
sample made deliberately harder than the data itself (see :func:`hard_queries`), since real
queries (short text, other users' photos) usually lie farther from the data than the data
lies from itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import IndexFormatError

CALIBRATION_VERSION = 2
#: Filter selectivities calibrated (uncorrelated masks); below the last one the plan is exact.
BANDS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
#: k values calibrated; other k interpolate in log k (k below the first use the first).
KS = (10, 100)
#: Recall levels whose thresholds are stored.
LEVELS = (0.5, 0.8, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)
DEFAULT_QUERIES = 500
#: A band needs this many matches per requested neighbour to be calibrated at all.
MIN_MATCHES_PER_K = 3
#: Planning aims this much closer to 1 than the target (calibration queries are a sample).
MARGIN = 0.5
_CHUNK_ELEMENTS = 1 << 24  # (queries x rows) distance block during ground truth (64 MB)


@dataclass(frozen=True)
class Calibration:
    """Routing thresholds per (band, k, recall level); ``inf`` = visit all (uncalibrated)."""

    source: str  # "queries" (the user's) or "synthetic-hard"
    n_queries: int
    radius: float
    bands: tuple[float, ...]
    ks: tuple[int, ...]
    levels: tuple[float, ...]
    score: np.ndarray  # (bands, ks, levels) score thresholds, non-decreasing along levels
    coverage: np.ndarray  # (bands, ks, levels) matching rows to cover, likewise
    seconds: float = 0.0
    ranking: dict[str, float] | None = None  # recall@k of the code ranking (squash.ranking)
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # threshold() answers

    def _at(self, table: np.ndarray, selectivity: float, k: int, level: int, log: bool) -> float:
        by_band = np.array([_interp_log(k, self.ks, row) for row in table[:, :, level]])
        if log:
            with np.errstate(divide="ignore"):
                return float(np.exp(_interp_band(selectivity, self.bands, np.log(by_band))))
        return _interp_band(selectivity, self.bands, by_band)

    def ranking_recall(self, k: int) -> float | None:
        """Recall@k the code ranking reaches on its own (None when not measured)."""
        if not self.ranking:
            return None
        ks = sorted(int(key) for key in self.ranking)
        values = np.array([self.ranking[str(key)] for key in ks])
        return _interp_log(k, tuple(ks), values)

    def threshold(self, selectivity: float, k: int, target: float) -> tuple[float, float, float]:
        """(score threshold, matches to cover, calibrated recall) for ``target`` plus the
        margin; thresholds are inf (visit every partition that may match) past the levels."""
        key = (selectivity, k, target)
        if key not in self._memo:
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[key] = self._threshold(selectivity, k, target)
        return self._memo[key]

    def _threshold(self, selectivity: float, k: int, target: float) -> tuple[float, float, float]:
        aim = 1.0 - (1.0 - target) * (1.0 - MARGIN)
        li = int(np.searchsorted(self.levels, aim - 1e-12))
        if li >= len(self.levels):
            return math.inf, math.inf, 1.0
        score = self._at(self.score, selectivity, k, li, log=False)
        cover = self._at(self.coverage, selectivity, k, li, log=True)
        exact = math.isinf(score) or math.isinf(cover)
        return score, cover, (1.0 if exact else self.levels[li])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CALIBRATION_VERSION,
            "source": self.source,
            "n_queries": self.n_queries,
            "radius": self.radius,
            "bands": list(self.bands),
            "ks": list(self.ks),
            "levels": list(self.levels),
            "score": _table_json(self.score),
            "coverage": _table_json(self.coverage),
            "seconds": round(self.seconds, 3),
            "ranking": self.ranking,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str = "calibration") -> Calibration:
        try:
            if doc["version"] != CALIBRATION_VERSION:
                raise IndexFormatError(
                    f"{where}: calibration version {doc['version']} is not supported; "
                    "run `squash calibrate` again"
                )
            cal = cls(
                source=str(doc["source"]),
                n_queries=int(doc["n_queries"]),
                radius=float(doc["radius"]),
                bands=tuple(float(b) for b in doc["bands"]),
                ks=tuple(int(k) for k in doc["ks"]),
                levels=tuple(float(v) for v in doc["levels"]),
                score=_table_array(doc["score"]),
                coverage=_table_array(doc["coverage"]),
                seconds=float(doc.get("seconds", 0.0)),
                ranking=_ranking(doc.get("ranking")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where}: malformed calibration ({exc})") from exc
        shape = (len(cal.bands), len(cal.ks), len(cal.levels))
        if cal.score.shape != shape or cal.coverage.shape != shape:
            raise IndexFormatError(f"{where}: calibration tables have the wrong shape")
        return cal


def _ranking(doc: Any) -> dict[str, float] | None:
    if doc is None:
        return None
    out = {str(int(k)): float(v) for k, v in dict(doc).items()}
    if not all(0.0 <= v <= 1.0 for v in out.values()) or not all(int(k) > 0 for k in out):
        raise ValueError("ranking recall must map positive k to a recall in [0, 1]")
    return out


def _table_json(table: np.ndarray) -> list:
    """JSON has no infinity: an uncalibrated cell is null."""
    return [[[None if math.isinf(v) else round(float(v), 6) for v in row] for row in band] for band in table]


def _table_array(doc: Any) -> np.ndarray:
    return np.array([[[math.inf if v is None else float(v) for v in row] for row in b] for b in doc])


def _interp_log(k: int, ks: tuple[int, ...], values: np.ndarray) -> float:
    """Linear in log k between calibrated ks; clamped below the first, extrapolated never."""
    if k <= ks[0] or len(ks) == 1:
        return float(values[0])
    if k >= ks[-1]:
        return float(values[-1])
    return float(np.interp(math.log(k), np.log(ks), values))


def _interp_band(selectivity: float, bands: tuple[float, ...], values: np.ndarray) -> float:
    """Linear in log selectivity between bands (bands descend); inf below the last band."""
    s = min(max(selectivity, 0.0), 1.0)
    if s < bands[-1]:
        return math.inf
    for i in range(len(bands) - 1):
        hi, lo = bands[i], bands[i + 1]
        if s >= lo:
            a, b = values[i], values[i + 1]
            if math.isinf(a) or math.isinf(b):
                return math.inf
            w = (math.log(hi) - math.log(s)) / (math.log(hi) - math.log(lo))
            return float(a + w * (b - a))
    return float(values[-1])


def hard_queries(
    x: np.ndarray, n: int, rng: np.random.Generator, normalise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` queries spanning in- and out-of-distribution, and the row each must not find.

    A third are rows of the data left out of their own ground truth (held-out queries, as
    when queries come from the same source as the data); a third are mixes of two random
    rows, which sit between the data's clusters where routing is hardest; a third are rows
    plus noise of half the data's standard deviation per coordinate, far from every row
    (short text queries against paragraphs lie out there). Returns ``(queries, exclude)``
    where ``exclude[i]`` is the row query ``i`` was made from (−1: none).
    """
    m = x.shape[0]
    ia, ib = rng.integers(0, m, n), rng.integers(0, m, n)
    a, b = x[ia].astype(np.float64), x[ib].astype(np.float64)
    kind = query_family(n)
    beta = np.where(kind == 1, rng.uniform(0.25, 0.5, n), 0.0)[:, None]
    std = x[rng.integers(0, m, min(m, 10_000))].std(axis=0)
    noise = np.where((kind == 2)[:, None], 0.5, 0.0) * rng.normal(size=a.shape) * std
    q = (1 - beta) * a + beta * b + noise
    if normalise:
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q.astype(np.float32), np.where(kind == 0, ia, -1)


def query_family(n: int) -> np.ndarray:
    """Family of each synthetic query (0 held-out rows, 1 mixes, 2 noisy rows)."""
    return np.arange(n) % 3


def partition_radius(x: np.ndarray, assign: np.ndarray, centroids: np.ndarray) -> float:
    """Median over partitions of the RMS distance of their rows to the centroid."""
    sq = np.einsum("ij,ij->i", x - centroids[assign], x - centroids[assign])
    p = centroids.shape[0]
    per = np.sqrt(np.bincount(assign, sq, p) / np.maximum(np.bincount(assign, minlength=p), 1))
    return float(max(np.median(per), 1e-12))


def routing_scores(d2: np.ndarray, valid: np.ndarray, radius: float) -> np.ndarray:
    """Scores (Q, P) of every partition from squared centroid distances (Q, P); inf where
    ``valid`` (P,) or (Q, P) is False."""
    dist = np.sqrt(np.maximum(d2, 0.0))
    dist = np.where(valid, dist, np.inf)
    nearest = dist.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(dist), (dist - nearest) / radius, np.inf)


def calibrate(
    x: np.ndarray,
    assign: np.ndarray,
    centroids: np.ndarray,
    queries: np.ndarray,
    source: str,
    seed: int = 0,
    exclude: np.ndarray | None = None,
    families: np.ndarray | None = None,
) -> Calibration:
    """Measure the recall curves of ``queries`` on rows ``x`` (N, d) partitioned by ``assign``.

    ``x`` and ``queries`` are in the search space (normalised for cosine, augmented for dot:
    L2 there ranks as the metric does). One GEMM per chunk of queries serves every band:
    band masks are nested (``u < s``). ``exclude[i]`` is a row query ``i`` must not count
    as a neighbour (a held-out query's own row), or −1.
    With ``families`` (Q,) each family of queries must reach a level on its own: the stored
    threshold is the largest of the families' (a mean would let easy queries hide hard ones).
    """
    import time

    started = time.perf_counter()
    n, q = x.shape[0], queries.shape[0]
    p = centroids.shape[0]
    radius = partition_radius(x, assign, centroids)
    u = np.random.default_rng(seed + 7919).random(n)
    x_sq = np.einsum("ij,ij->i", x, x)
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    q_sq = np.einsum("ij,ij->i", queries, queries)
    d2c = q_sq[:, None] - 2.0 * (queries @ centroids.T) + c_sq[None, :]
    scores: list[list[list[np.ndarray]]] = [[[] for _ in KS] for _ in BANDS]
    covers: list[list[list[np.ndarray]]] = [[[] for _ in KS] for _ in BANDS]
    masks = [u < s for s in BANDS]
    band_rows = [np.flatnonzero(m) for m in masks]
    band_counts = [np.bincount(assign[r], minlength=p) for r in band_rows]
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, q, step):
        qs = queries[start : start + step]
        dist = q_sq[start : start + step, None] - 2.0 * (qs @ x.T) + x_sq[None, :]
        if exclude is not None:
            own = exclude[start : start + step]
            dist[np.flatnonzero(own >= 0), own[own >= 0]] = np.inf
        for bi, rows in enumerate(band_rows):
            if rows.size < MIN_MATCHES_PER_K * KS[0]:
                continue
            sub = dist if rows.size == n else dist[:, rows]
            kk = [min(k, rows.size) for k in KS]
            top = np.argpartition(sub, sorted({k - 1 for k in kk}), axis=1)[:, : max(kk)]
            top_d = np.take_along_axis(sub, top, axis=1)
            order = np.argsort(top_d, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            part = assign[top if rows.size == n else rows[top]]  # (chunk, kmax)
            sc = routing_scores(d2c[start : start + step], band_counts[bi][None, :] > 0, radius)
            truth_scores = np.take_along_axis(sc, part, axis=1)
            truth_cover = _coverage_through(sc, band_counts[bi], part)
            for ki, k in enumerate(kk):
                if rows.size < MIN_MATCHES_PER_K * KS[ki]:
                    continue
                scores[bi][ki].append(truth_scores[:, :k])
                covers[bi][ki].append(truth_cover[:, :k])
        del dist
    fam = np.zeros(q, dtype=np.int64) if families is None else np.asarray(families)
    tables = []
    for found in (scores, covers):
        table = np.full((len(BANDS), len(KS), len(LEVELS)), np.inf)
        for bi in range(len(BANDS)):
            for ki in range(len(KS)):
                if found[bi][ki]:
                    per_query = np.concatenate(found[bi][ki])  # (Q, k): each query's truths
                    table[bi, ki] = np.max(
                        [_curve_thresholds(per_query[fam == f]) for f in np.unique(fam)], axis=0
                    )
        tables.append(np.maximum.accumulate(table, axis=1))  # a larger k never needs less
    # A rarer filter never needs a smaller score (coverage, in matches, may shrink).
    score = np.maximum.accumulate(tables[0], axis=0)
    return Calibration(
        source=source,
        n_queries=q,
        radius=radius,
        bands=BANDS,
        ks=KS,
        levels=LEVELS,
        score=score,
        coverage=tables[1],
        seconds=time.perf_counter() - started,
    )


def _coverage_through(scores: np.ndarray, counts: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Matching rows covered once partition ``part`` (Q, t) is reached in centroid order."""
    order = np.argsort(scores, axis=1, kind="stable")  # score order == centroid order
    cum = np.cumsum(counts[order], axis=1)
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    return np.take_along_axis(cum, np.take_along_axis(pos, part, axis=1), axis=1).astype(np.float64)


def _curve_thresholds(table: np.ndarray) -> np.ndarray:
    """Smallest threshold per recall level, where recall(t) is the mean over queries (rows of
    ``table``) of the share of their truths scoring ≤ t."""
    s = np.sort(table.ravel(), kind="stable")
    cum = np.arange(1, s.size + 1) / s.size  # every query has the same number of truths
    out = np.empty(len(LEVELS))
    for i, level in enumerate(LEVELS):
        j = int(np.searchsorted(cum, level - 1e-12))
        out[i] = s[j] if j < s.size else np.inf
    return out
