"""Greedy non-uniform bit allocation under a per-vector bit budget (the 6 dB rule)."""

from __future__ import annotations

import numpy as np

MAX_BITS = 8


def allocate_bits(energy: np.ndarray, budget: int, max_bits: int = MAX_BITS) -> np.ndarray:
    """Bits per dimension (0..max_bits) summing to ``min(budget, d * max_bits)``.

    Greedy: each bit goes to the dimension with the largest remaining energy, whose energy
    is then divided by 4. Because each dimension's sequence of remaining energies is
    decreasing, the greedy choice equals taking the ``budget`` largest values of
    ``energy[j] / 4**t`` over all (j, t) — one vectorised top-k instead of a loop over bits.
    """
    energy = np.clip(np.asarray(energy, dtype=np.float64), 0.0, None)
    d = energy.shape[0]
    budget = int(min(max(budget, 0), d * max_bits))
    gains = energy[:, None] / 4.0 ** np.arange(max_bits)  # (d, max_bits)
    # Ties are broken by (dimension, bit) order, which keeps every dimension a prefix.
    order = np.argsort(-gains.ravel(), kind="stable")[:budget]
    return np.bincount(order // max_bits, minlength=d).astype(np.uint8)
