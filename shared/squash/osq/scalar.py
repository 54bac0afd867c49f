"""The serving code: non-uniform scalar quantization of KLT coordinates in byte-aligned classes.

Every partition's rows are coded in the index's global KLT space, centred on the partition's
centroid. The bit budget goes to the axes by the 6 dB rule, in whole classes of 8 or 4 bits
(or 0: the axis is left to the residual), so that decoding is a cast (8-bit axes) or one
nibble split (4-bit axes) — numpy's fastest paths — and the scan is one BLAS product.

With uniform cells ``[lo + c s, lo + (c + 1) s]`` the decoded value of code ``c`` is
``lo + (c + 1/2) s``, hence ``q . x_hat = q . (lo + s/2) + (q * s) . c``: the product form
over codes the scan uses. What the code misses of a row is stored as one number, the squared
norm of its residual ``r = v - x_hat`` (the 0-bit axes included), which gives

* an estimate  ``|q - x_hat|^2 + |r|^2``  (the cross term ``-2 (q - x_hat) . r`` averages out);
* exact bounds ``(|q - x_hat| -/+ |r|)^2`` by the triangle inequality.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

CLASSES = (8, 4)  # bits of an axis that is coded at all
CLIP_QUANTILE = 0.0005  # cells span the central 99.9 % of an axis; outliers clip to the end cells


def allocate_classes(variance: np.ndarray, budget: int) -> np.ndarray:
    """Bits per axis in {0, 4, 8}, at most ``budget`` in total, by the 6 dB rule.

    Each axis offers two 4-bit steps: 0 -> 4 lowers its error from ``v`` to ``v 2^-8``,
    4 -> 8 from ``v 2^-8`` to ``v 2^-16``. All steps cost the same, so the greedy choice is
    the ``budget // 4`` largest gains; an axis's second step never gains more than its
    first, so every chosen 4 -> 8 step comes with its 0 -> 4 step.
    """
    v = np.clip(np.asarray(variance, np.float64), 0.0, None)
    d = v.shape[0]
    steps = min(max(int(budget) // 4, 0), 2 * d)
    gains = np.concatenate([v * (1 - 2.0**-8), v * (2.0**-8 - 2.0**-16)])
    chosen = np.argsort(-gains, kind="stable")[:steps]
    return (4 * np.bincount(chosen % d, minlength=d)).astype(np.uint8)


@dataclass(frozen=True)
class ScalarCode:
    """One partition's code: which axes are coded with how many bits, and their cells."""

    dims8: np.ndarray  # (K8,) int32 axes coded with 8 bits
    dims4: np.ndarray  # (K4,) int32 axes coded with 4 bits (K4 even): high nibbles, then low
    lo: np.ndarray  # (K,) float32 lower edge of the first cell, axes in ``dims`` order
    step: np.ndarray  # (K,) float32 cell width

    @property
    def dims(self) -> np.ndarray:
        """Axes in code order: 8-bit axes, then the axes of the high nibbles, then the low."""
        return np.concatenate([self.dims8, self.dims4])

    @property
    def bytes_per_row(self) -> int:
        return int(self.dims8.shape[0] + self.dims4.shape[0] // 2)


def fit_code(v: np.ndarray, budget: int) -> ScalarCode:
    """Choose the axes and cells for rows ``v`` (n, d) (centred KLT coordinates)."""
    n, d = v.shape
    var = v.var(axis=0) if n else np.zeros(d)
    widths = allocate_classes(var, budget)
    dims8 = np.flatnonzero(widths == 8).astype(np.int32)
    dims4 = np.flatnonzero(widths == 4).astype(np.int32)
    if dims4.shape[0] % 2:  # nibbles come in pairs
        spare = np.flatnonzero(widths == 0)
        if spare.size:  # the uncoded axis of most variance gets 4 bits (4 over the budget)
            dims4 = np.sort(np.append(dims4, spare[np.argmax(var[spare])]))
        elif dims8.size:  # every axis coded: the 8-bit axis of least variance makes do with 4
            weakest = dims8[np.argmin(var[dims8])]
            dims4, dims8 = np.sort(np.append(dims4, weakest)), dims8[dims8 != weakest]
        else:  # every axis has 4 bits, an odd number of them: the one of most variance gets 8
            strongest = dims4[np.argmax(var[dims4])]
            dims8, dims4 = np.array([strongest]), dims4[dims4 != strongest]
        dims8, dims4 = dims8.astype(np.int32), dims4.astype(np.int32)
    # Byte b of a row's nibbles holds axes dims4[b] (high) and dims4[b + half] (low).
    dims = np.concatenate([dims8, dims4])
    cells = np.concatenate([np.full(dims8.shape, 256.0), np.full(dims4.shape, 16.0)])
    if n and dims.size:
        lo, hi = np.quantile(v[:, dims], [CLIP_QUANTILE, 1 - CLIP_QUANTILE], axis=0)
    else:
        lo = hi = np.zeros(dims.shape)
    step = np.where(hi > lo, (hi - lo) / cells, 1.0)
    return ScalarCode(dims8, dims4, lo.astype(np.float32), step.astype(np.float32))


def far_rows(code: ScalarCode, v: np.ndarray) -> np.ndarray:
    """(n,) bool: rows ``v`` (centred) with a coded coordinate more than a cell outside
    ``code``'s cells — rows the cells would clip badly (see :func:`cover`)."""
    dims = code.dims
    if v.shape[0] == 0 or dims.size == 0:
        return np.zeros(v.shape[0], dtype=bool)
    vals = v[:, dims]
    lo, step = code.lo.astype(np.float64), code.step.astype(np.float64)
    hi = lo + _cells(code) * step
    return ((vals < lo - step) | (vals > hi + step)).any(axis=1)


def cover(code: ScalarCode, v: np.ndarray) -> ScalarCode:
    """``code`` with the cells of each coded axis widened to hold rows ``v`` (centred), on
    the axes where some row lies more than a cell outside them; ``code`` itself when none does.

    A write codes new rows with their partition's cells (fitted to the partition's own rows,
    tails clipped). A new row far outside them would be clipped to the edge cell and its
    estimated distance badly off, even to itself. So a write puts such rows
    (:func:`far_rows`) in a delta segment of their own, whose header carries these widened
    cells; the other new rows keep the partition's exact cells.
    """
    if not far_rows(code, v).any():
        return code
    vals = v[:, code.dims]
    cells = _cells(code)
    lo, step = code.lo.astype(np.float64), code.step.astype(np.float64)
    hi = lo + cells * step
    low, high = vals.min(axis=0), vals.max(axis=0)
    far = (lo - low > step) | (high - hi > step)
    new_lo = np.where(far, np.minimum(lo, low), lo)
    new_step = np.where(far, (np.maximum(hi, high) - new_lo) * (1 + 1e-6) / cells, step)
    return ScalarCode(code.dims8, code.dims4, new_lo.astype(np.float32), new_step.astype(np.float32))


def _cells(code: ScalarCode) -> np.ndarray:
    return np.concatenate([np.full(code.dims8.shape, 256.0), np.full(code.dims4.shape, 16.0)])


def as_float16(code: ScalarCode) -> ScalarCode | None:
    """The code with its cells rounded to float16 (half the header), or None when float16
    cannot hold a cell width within 1 % (huge or tiny values). A rounded first edge only
    shifts the grid a little: rows are coded against the rounded values."""
    with np.errstate(over="ignore", under="ignore"):
        lo, step = code.lo.astype(np.float16), code.step.astype(np.float16)
    if not (np.isfinite(lo).all() and np.isfinite(step).all() and (step > 0).all()):
        return None
    if np.any(np.abs(step.astype(np.float32) - code.step) > 0.01 * code.step):
        return None
    return dataclasses.replace(code, lo=lo.astype(np.float32), step=step.astype(np.float32))


def encode(v: np.ndarray, code: ScalarCode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes8 (n, K8) uint8, codes4 (n, K4/2) uint8 nibble pairs, residual_sq (n,) float32)."""
    dims = code.dims
    k8 = code.dims8.shape[0]
    cells = np.concatenate([np.full(k8, 255), np.full(code.dims4.shape[0], 15)])
    c = np.floor((v[:, dims] - code.lo) / code.step)
    c = np.clip(c, 0, cells).astype(np.uint8)
    codes8 = np.ascontiguousarray(c[:, :k8])
    half = code.dims4.shape[0] // 2
    codes4 = np.ascontiguousarray((c[:, k8 : k8 + half] << 4) | c[:, k8 + half :]).astype(np.uint8)
    x_hat = np.zeros_like(v, dtype=np.float64)
    x_hat[:, dims] = code.lo + (c + 0.5) * code.step.astype(np.float64)
    residual_sq = np.einsum("ij,ij->i", v - x_hat, v - x_hat)
    return codes8, codes4, residual_sq.astype(np.float32)


def encode_fine(
    v: np.ndarray, code: ScalarCode, codes8: np.ndarray, codes4: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(fine4 (n, K4/2) uint8, fine_sq (n,) float32): the refinement of rows ``v`` (centred)
    coded with ``code`` into ``codes8``/``codes4`` (:func:`encode`). Nibble layout as
    ``codes4``: byte b holds the sub-cell of axis dims4[b] (high) and of dims4[b + half] (low)."""
    k8, k4 = code.dims8.shape[0], code.dims4.shape[0]
    half = k4 // 2
    coarse = np.concatenate([codes4 >> 4, codes4 & 15], axis=1).astype(np.float64)
    step = code.step[k8:].astype(np.float64)
    within = (v[:, code.dims4] - code.lo[k8:] - coarse * step) / (step / 16.0)
    sub = np.clip(np.floor(within), 0, 15).astype(np.uint8)
    fine4 = np.ascontiguousarray((sub[:, :half] << 4) | sub[:, half:]).astype(np.uint8)
    values = fine_values(code, codes8, codes4, fine4).astype(np.float64)
    x_hat = np.zeros_like(v, dtype=np.float64)
    x_hat[:, code.dims] = values
    diff = v - x_hat
    return fine4, np.einsum("ij,ij->i", diff, diff).astype(np.float32)


def fine_values(code: ScalarCode, codes8: np.ndarray, codes4: np.ndarray, fine4: np.ndarray) -> np.ndarray:
    """x_hat of the refined code on the coded axes (n, K) float32, [dims8, dims4] order: the
    8-bit axes as :func:`decoded_values`, each 4-bit axis at the centre of its sub-cell."""
    k8, k4 = codes8.shape[1], 2 * codes4.shape[1]
    out = np.empty((codes8.shape[0], k8 + k4), dtype=np.float32)
    decode_codes(codes8, codes4, out=out)
    out[:, k8:] *= 16.0
    sub = decode_codes(np.empty((codes8.shape[0], 0), np.uint8), fine4)
    out[:, k8:] += sub
    out += 0.5
    step = code.step.astype(np.float32).copy()
    step[k8:] /= 16.0
    out *= step
    out += code.lo
    return out


def decode_codes(codes8: np.ndarray, codes4: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Code values (n, K) float32 in ``dims`` order: a cast and a nibble split, each into
    a contiguous block of columns."""
    n, k8 = codes8.shape
    half = codes4.shape[1]
    if out is None:
        out = np.empty((n, k8 + 2 * half), dtype=np.float32)
    out[:, :k8] = codes8
    np.right_shift(codes4, 4, out=out[:, k8 : k8 + half], casting="unsafe")
    np.bitwise_and(codes4, 15, out=out[:, k8 + half :], casting="unsafe")
    return out


def decoded_values(code: ScalarCode, codes8: np.ndarray, codes4: np.ndarray) -> np.ndarray:
    """x_hat restricted to the coded axes (n, K) float32, [dims8, dims4] order."""
    c = decode_codes(codes8, codes4)
    c += 0.5
    c *= code.step
    c += code.lo
    return c


def reconstruct(code: ScalarCode, codes8: np.ndarray, codes4: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Rows (n, d) float32 as the code holds them, in the space of ``centre``: centre + x_hat
    (uncoded axes at the centre). For scans that pool rows of several partitions."""
    centre = centre.astype(np.float32, copy=False)
    values = decoded_values(code, codes8, codes4)
    values += centre[code.dims]  # (a column assignment, not `+=` through the index: 2x faster)
    out = np.empty((codes8.shape[0], centre.shape[0]), dtype=np.float32)
    out[:] = centre
    out[:, code.dims] = values
    return out


@dataclass(frozen=True)
class QueryTerms:
    """What the product form needs of queries ``q`` (m, d), centred on the partition."""

    scaled: np.ndarray  # (m, K) q * step on the coded axes
    offset: np.ndarray  # (m,) q . (lo + step / 2) on the coded axes
    sq: np.ndarray  # (m,) |q|^2 over every axis

    @classmethod
    def of(cls, q: np.ndarray, code: ScalarCode) -> QueryTerms:
        qd = q[:, code.dims]
        return cls(qd * code.step, qd @ (code.lo + 0.5 * code.step), np.einsum("ij,ij->i", q, q))


def hat_distances(terms: QueryTerms, values: np.ndarray, hat_sq: np.ndarray) -> np.ndarray:
    """|q - x_hat|^2 (m, n) from decoded code values (n, K) and |x_hat|^2 (n,)."""
    dist = terms.scaled @ values.T
    dist += terms.offset[:, None]
    dist *= -2.0
    dist += terms.sq[:, None]
    dist += hat_sq[None, :]
    return np.maximum(dist, 0.0, out=dist)


def estimate(hat_d2: np.ndarray, residual_sq: np.ndarray) -> np.ndarray:
    """Distance estimate |q - x_hat|^2 + |r|^2."""
    return hat_d2 + residual_sq


def bounds(hat_d2: np.ndarray, residual_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the true squared distance (triangle inequality)."""
    a = np.sqrt(hat_d2)
    r = np.sqrt(residual_sq)
    lower = np.maximum(a - r, 0.0)
    return lower * lower, (a + r) * (a + r)
