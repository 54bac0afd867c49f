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
from .sources import CHUNK_ROWS

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
_CHUNK_ELEMENTS = 1 << 22  # (queries x rows) distance block during ground truth (16 MB)


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
    fine: dict[str, float] | None = None  # recall@k after a re-rank on the refinement tier
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # threshold() answers

    def _at(self, table: np.ndarray, selectivity: float, k: int, level: int, log: bool) -> float:
        by_band = np.array([_interp_log(k, self.ks, row) for row in table[:, :, level]])
        if log:
            with np.errstate(divide="ignore"):
                return float(np.exp(_interp_band(selectivity, self.bands, np.log(by_band))))
        return _interp_band(selectivity, self.bands, by_band)

    def ranking_recall(self, k: int, kind: str = "code") -> float | None:
        """Recall@k the final ranking reaches with perfect routing: on the code alone
        (``kind="code"``) or re-ranked on the refinement tier (``"fine"``); None when not
        measured (an index built before the refinement tier has no "fine")."""
        table = self.ranking if kind == "code" else self.fine
        if not table:
            return None
        ks = sorted(int(key) for key in table)
        values = np.array([table[str(key)] for key in ks])
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
            "fine": self.fine,
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
                fine=_ranking(doc.get("fine")),
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


def band_u(seed: int, first_row: int, rows: int) -> np.ndarray:
    """Each row's uniform draw that puts it in the selectivity bands (``u < band``): one
    stream per build seed, cut at any row (so every pass over the rows sees the same)."""
    gen = np.random.PCG64(seed + 7919)
    gen.advance(first_row)
    return np.random.Generator(gen).random(rows)


class GroundTruth:
    """Exact top-``max(KS)`` rows of each calibration query in every band, over row blocks.

    ``queries`` and the blocks are in the search space (normalised for cosine, augmented
    for dot: L2 there ranks as the metric does). ``exclude[i]`` is a row query ``i`` must
    not count as a neighbour (a held-out query's own row), or −1. ``bounds`` (bands, Q):
    an upper bound on each query's ``max(KS)``-th distance in each band (from a sample of
    the rows, :func:`sample_bounds`), so a block keeps only the few rows under it; without
    them (None) every chunk of rows bounds itself by its own ``max(KS)``-th distance (exact
    as well; cheaper than a sample pass when the data is one block). Blocks are independent
    (:meth:`block` can run in another process) and the result does not depend on the order
    they are merged in: ties are broken by row number."""

    def __init__(
        self,
        queries: np.ndarray,
        seed: int,
        exclude: np.ndarray | None = None,
        bounds: np.ndarray | None = None,
    ) -> None:
        self.queries, self.seed, self.exclude = queries, seed, exclude
        self.q_sq = np.einsum("ij,ij->i", queries, queries)
        self.width = max(KS)
        self.bounds = np.full((len(BANDS), queries.shape[0]), np.inf) if bounds is None else bounds
        self.self_bound = bounds is None
        self._truths: dict[int, np.ndarray] = {}
        self.rows = np.zeros(len(BANDS), np.int64)  # rows seen per band
        self._found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in BANDS]

    def add(self, first_row: int, x: np.ndarray) -> None:
        self.merge(self.block(first_row, x))

    def block(self, first_row: int, x: np.ndarray) -> tuple[np.ndarray, list]:
        """One block's contribution: rows per band, and per band the (query, distance, row)
        entries under the bounds."""
        u = band_u(self.seed, first_row, x.shape[0])
        # rows in order of u: every band's rows are then a prefix (views, no gathers)
        order = np.argsort(u, kind="stable")
        at = np.empty_like(order)
        at[order] = np.arange(order.size)
        in_band = np.searchsorted(u[order], BANDS, side="left")
        counts = in_band.astype(np.int64)
        step = max(1, _CHUNK_ELEMENTS // max(self.queries.shape[0], 1))
        found: list[list] = [[] for _ in BANDS]
        limit = _slack(self.bounds)[:, :, None]
        own = (
            np.zeros(0, np.int64)
            if self.exclude is None
            else np.flatnonzero((self.exclude >= first_row) & (self.exclude < first_row + x.shape[0]))
        )
        for start in range(0, x.shape[0], step):  # bounded (queries x rows) blocks
            mine = order[start : start + step]
            xs = x[mine]
            dist = self.q_sq[:, None] - 2.0 * (self.queries @ xs.T)
            dist += np.einsum("ij,ij->i", xs, xs)[None, :]
            if own.size:
                pos = at[self.exclude[own] - first_row] - start
                here = (pos >= 0) & (pos < mine.size)
                dist[own[here], pos[here]] = np.inf
            rows = first_row + mine
            for bi, cols in enumerate(in_band.tolist()):
                if cols > start:
                    sub = dist[:, : cols - start]
                    if self.self_bound and sub.shape[1] >= self.width:  # these rows' own bound
                        own_kth = np.partition(sub, self.width - 1, axis=1)[:, self.width - 1]
                        limit[bi] = np.minimum(limit[bi], _slack(own_kth)[:, None])
                    q, c = np.nonzero(sub <= limit[bi])
                    found[bi].append((q, dist[q, c].astype(np.float32), rows[c]))
        return counts, [
            tuple(np.concatenate(part) for part in zip(*f, strict=True)) if f else _no_entries()
            for f in found
        ]

    def merge(self, part: tuple[np.ndarray, list]) -> None:
        counts, found = part
        self.rows += counts
        self._truths.clear()
        for bi, entries in enumerate(found):
            self._found[bi].append(entries)
            if sum(e[0].size for e in self._found[bi]) > 4 * self.width * self.queries.shape[0]:
                self._found[bi] = [self._best(bi)]  # bounded: keep each query's best only

    def _best(self, bi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q, d, r = (np.concatenate(c) for c in zip(*self._found[bi], strict=True))
        order = np.lexsort((r, d, q))
        q, d, r = q[order], d[order], r[order]
        rank = np.arange(q.size) - np.searchsorted(q, q, side="left")
        keep = rank < self.width
        return q[keep], d[keep], r[keep]

    def truths(self, bi: int) -> np.ndarray:
        """(Q, min(max(KS), rows in band)) row numbers of band ``bi``, nearest first."""
        if bi not in self._truths:
            self._truths[bi] = self._truths_of(bi)
        return self._truths[bi]

    def _truths_of(self, bi: int) -> np.ndarray:
        if not self._found[bi]:
            return np.zeros((self.queries.shape[0], 0), np.int64)
        q, _, r = self._best(bi)
        per = np.bincount(q, minlength=self.queries.shape[0])
        width = int(per.min())  # every query has the same rows, hence the same count
        rank = np.arange(q.size) - np.searchsorted(q, q, side="left")
        out = np.full((self.queries.shape[0], width), -1, np.int64)
        keep = rank < width
        out[q[keep], rank[keep]] = r[keep]
        return out


#: sample rows :func:`sample_bounds` looks at per band, at most (a uniform subset of the
#: band's sample rows: the bound gets looser, never wrong, and costs queries x this)
BOUND_ROWS = 8_192


def _slack(bound: np.ndarray) -> np.ndarray:
    """A distance bound widened so that float noise between two products never drops a truth."""
    return bound * (1 + 1e-5) + 1e-6


def _no_entries() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)


def sample_bounds(
    queries: np.ndarray, x: np.ndarray, u: np.ndarray, rows: np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(bands, Q) each query's ``max(KS)``-th smallest distance among sample rows ``x``
    (global numbers ``rows``, band draws ``u``) in each band, or inf where the sample holds
    fewer: an upper bound on the same over all rows, since those include the sample's.

    Rows are taken in order of ``u``, so every band's rows are a prefix and its first
    ``BOUND_ROWS`` a uniform subset of them: one product of at most ``BOUND_ROWS`` columns
    serves every band, with no gathers."""
    width = max(KS)
    order = np.argsort(u, kind="stable")[:BOUND_ROWS]
    xs, mine = x[order], rows[order]
    xs_sq = np.einsum("ij,ij->i", xs, xs)
    in_band = np.searchsorted(u[order], BANDS, side="left")  # u < band: a prefix of the order
    out = np.full((len(BANDS), queries.shape[0]), np.inf)
    step = max(1, _CHUNK_ELEMENTS // max(xs.shape[0], 1))
    for start in range(0, queries.shape[0], step):  # bounded (queries x rows) blocks
        qs = queries[start : start + step]
        dist = np.einsum("ij,ij->i", qs, qs)[:, None] - 2.0 * (qs @ xs.T)
        dist += xs_sq[None, :]
        if exclude is not None:
            q, c = np.nonzero(exclude[start : start + step, None] == mine[None, :])
            dist[q, c] = np.inf
        done: dict[int, np.ndarray] = {}
        for bi, cols in enumerate(in_band.tolist()):
            if cols >= width:
                if cols not in done:  # bands holding BOUND_ROWS or more share one prefix
                    done[cols] = np.partition(dist[:, :cols], width - 1, axis=1)[:, width - 1]
                out[bi, start : start + step] = done[cols]
    return out


def band_counts(seed: int, assign: np.ndarray, p: int) -> np.ndarray:
    """(bands, P) rows per partition in each selectivity band."""
    u = band_u(seed, 0, assign.shape[0])
    return np.stack([np.bincount(assign[u < s] if s < 1 else assign, minlength=p) for s in BANDS])


def exact_truth(
    x: np.ndarray, queries: np.ndarray, seed: int = 0, exclude: np.ndarray | None = None
) -> GroundTruth:
    """The exact neighbours of ``queries`` among rows ``x`` (all in memory) in every band."""
    n = x.shape[0]
    bounds = None  # one block bounds itself
    if n > CHUNK_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(n, min(n, BOUND_ROWS), replace=False))
        bounds = sample_bounds(queries, x[rows], band_u(seed, 0, n)[rows], rows, exclude)
    truth = GroundTruth(queries, seed, exclude, bounds)
    for start in range(0, n, CHUNK_ROWS):  # the blocks a streaming build feeds
        truth.add(start, x[start : start + CHUNK_ROWS])
    return truth


def calibrate_from(
    truth: GroundTruth,
    assign: np.ndarray,
    centroids: np.ndarray,
    counts: np.ndarray,
    radius: float,
    source: str,
    families: np.ndarray | None = None,
    started: float | None = None,
) -> Calibration:
    """The recall curves from exact neighbours ``truth``, the rows' partitions ``assign``,
    the rows per partition per band ``counts`` and the median partition ``radius``.

    With ``families`` (Q,) each family of queries must reach a level on its own: the stored
    threshold is the largest of the families' (a mean would let easy queries hide hard ones).
    """
    import time

    started = time.perf_counter() if started is None else started
    queries = truth.queries
    q = queries.shape[0]
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    d2c = truth.q_sq[:, None] - 2.0 * (queries @ centroids.T) + c_sq[None, :]
    scores: list[list[np.ndarray | None]] = [[None for _ in KS] for _ in BANDS]
    covers: list[list[np.ndarray | None]] = [[None for _ in KS] for _ in BANDS]
    for bi in range(len(BANDS)):
        matches = int(truth.rows[bi])
        if matches < MIN_MATCHES_PER_K * KS[0]:
            continue
        part = assign[truth.truths(bi)]  # (Q, kmax)
        sc = routing_scores(d2c, counts[bi][None, :] > 0, radius)
        truth_scores = np.take_along_axis(sc, part, axis=1)
        truth_cover = _coverage_through(sc, counts[bi], part)
        for ki, k in enumerate(KS):
            if matches < MIN_MATCHES_PER_K * k:
                continue
            kk = min(k, part.shape[1])
            scores[bi][ki], covers[bi][ki] = truth_scores[:, :kk], truth_cover[:, :kk]
    fam = np.zeros(q, dtype=np.int64) if families is None else np.asarray(families)
    tables = []
    for found in (scores, covers):
        table = np.full((len(BANDS), len(KS), len(LEVELS)), np.inf)
        for bi in range(len(BANDS)):
            for ki in range(len(KS)):
                per_query = found[bi][ki]  # (Q, k): each query's truths
                if per_query is not None:
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
