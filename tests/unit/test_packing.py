import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from squash.osq.packing import extract_codes, n_segments, pack_codes


@settings(max_examples=200, deadline=None)
@given(
    widths=st.lists(st.integers(0, 8), min_size=1, max_size=40),
    n=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_then_extract_returns_exact_codes(widths, n, seed):
    rng = np.random.default_rng(seed)
    w = np.array(widths)
    codes = (rng.integers(0, 256, size=(n, w.size)) & ((1 << w) - 1)).astype(np.uint8)
    packed = pack_codes(codes, w)
    assert packed.shape == (n_segments(w), n)
    np.testing.assert_array_equal(extract_codes(packed, w), codes.T)
    # Extraction of any subset of dimensions, in any order, agrees too.
    dims = rng.permutation(w.size)[: max(1, w.size // 2)]
    np.testing.assert_array_equal(extract_codes(packed, w, dims), codes.T[dims])


def test_layout_is_msb_first_and_column_major():
    # widths 3,7,6 -> bits: 101 | 1000001 | 111111 -> 10110000 01111111 (16 bits, 2 segments)
    w = np.array([3, 7, 6])
    codes = np.array([[0b101, 0b1000001, 0b111111], [0, 0, 1]], dtype=np.uint8)
    packed = pack_codes(codes, w)
    assert packed.tolist() == [[0b10110000, 0b00000000], [0b01111111, 0b00000001]]


def test_code_too_wide_is_rejected():
    import pytest

    with pytest.raises(ValueError):
        pack_codes(np.array([[4]], dtype=np.uint8), np.array([2]))
