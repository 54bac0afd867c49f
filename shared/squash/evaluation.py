"""Ground truth for recall: exact filtered k-NN (or inner product) by brute force, and recall@k.

Used by the tests, the demo and the benchmark so all three measure recall the same way.
"""

from __future__ import annotations

import numpy as np

_QUERY_CHUNK = 256  # bounds the (chunk x matches) float64 distance matrix


def exact_knn(base: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Ids (Q, min(k, matches)) of the exact k nearest rows of ``base`` where ``mask`` holds.

    Squared L2 in float64; ties are broken by row number (a stable sort over ascending rows),
    as squash breaks them by id.
    """
    rows = np.flatnonzero(mask)
    sub = base[rows].astype(np.float64)
    sub_sq = np.einsum("ij,ij->i", sub, sub)
    kk = min(k, rows.size)
    out = np.empty((queries.shape[0], kk), dtype=np.int64)
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        q = queries[start : start + _QUERY_CHUNK].astype(np.float64)
        d = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ sub.T) + sub_sq[None, :]
        out[start : start + q.shape[0]] = rows[np.argsort(d, axis=1, kind="stable")[:, :kk]]
    return out


def exact_mips(base: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Ids (Q, min(k, matches)) of the rows of ``base`` where ``mask`` holds with the k
    largest inner products (the dot metric's ground truth), float64, ties by row number."""
    rows = np.flatnonzero(mask)
    sub = base[rows].astype(np.float64)
    kk = min(k, rows.size)
    out = np.empty((queries.shape[0], kk), dtype=np.int64)
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        ip = queries[start : start + _QUERY_CHUNK].astype(np.float64) @ sub.T
        out[start : start + ip.shape[0]] = rows[np.argsort(-ip, axis=1, kind="stable")[:, :kk]]
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (found may be −1 padded)."""
    hits = [np.isin(t, f[f >= 0]).sum() / max(len(t), 1) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
