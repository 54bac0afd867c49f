"""Ground-truth helpers shared by tests and benchmarks."""

from __future__ import annotations

import numpy as np


def exact_knn(base: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int) -> list[np.ndarray]:
    """Exact filtered k-NN ids (ties broken by id) — the ground truth of every recall test."""
    rows = np.flatnonzero(mask)
    sub = base[rows].astype(np.float64)
    q = queries.astype(np.float64)
    d = (q * q).sum(1)[:, None] - 2 * q @ sub.T + (sub * sub).sum(1)[None, :]
    kk = min(k, rows.size)
    out = []
    for i in range(q.shape[0]):
        order = np.lexsort((rows, d[i]))[:kk]
        out.append(rows[order])
    return out


def recall(found: np.ndarray, truth: list[np.ndarray]) -> float:
    hits = [np.isin(t, f[f >= 0]).sum() / max(len(t), 1) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
