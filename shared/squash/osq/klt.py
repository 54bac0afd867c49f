"""Karhunen–Loève transform (PCA rotation): concentrates energy in the leading dimensions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KLT:
    """``rotate(x) = (x - mean) @ rotation``; columns of ``rotation`` are orthonormal."""

    mean: np.ndarray  # (d,) float32
    rotation: np.ndarray  # (d, m) float32, eigenvectors by descending eigenvalue
    eigenvalues: np.ndarray  # (m,) float64, variance along each kept axis

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Project rows of ``x`` onto the kept axes (float32)."""
        return (np.asarray(x, np.float32) - self.mean) @ self.rotation


def fit_klt(x: np.ndarray, keep: int | None = None) -> KLT:
    """Fit the KLT of ``x`` (n, d) and keep the ``keep`` highest-variance axes.

    Signs are fixed (largest component of each axis positive) so builds are reproducible
    across LAPACK versions.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    centred = x64 - mean
    cov = centred.T @ centred / max(len(x64), 1)
    eigenvalues, vectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues, kind="stable")[::-1]
    if keep is not None:
        order = order[:keep]
    vectors = vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    vectors *= np.where(signs == 0, 1.0, signs)
    return KLT(
        mean=mean.astype(np.float32),
        rotation=np.ascontiguousarray(vectors, dtype=np.float32),
        eigenvalues=np.clip(eigenvalues[order], 0.0, None),
    )
