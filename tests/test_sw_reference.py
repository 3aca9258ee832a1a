"""The L0 reference matmul and the operand checks the scheduler relies on."""

import numpy as np
import pytest
from sparsecim.sw.reference import check_int_matrix, matmul_reference


def test_matmul_reference_small_by_hand():
    x = np.array([[1, -2, 3]])
    w = np.array([[1, 0], [2, -1], [-128, 127]])
    # 1*1 - 2*2 + 3*-128 = -387 ; 0 + 2 + 381 = 383
    assert matmul_reference(x, w).tolist() == [[-387, 383]]


def test_matmul_reference_is_exact_at_int8_extremes():
    x = np.full((2, 1000), -128, dtype=np.int8)
    w = np.full((1000, 3), -128, dtype=np.int8)
    out = matmul_reference(x, w)
    assert out.dtype == np.int64
    assert (out == 1000 * 16384).all()


def test_matmul_reference_matches_python_integers():
    rng = np.random.default_rng(11)
    x = rng.integers(-(2 ** 15), 2 ** 15, size=(3, 50))
    w = rng.integers(-(2 ** 15), 2 ** 15, size=(50, 4))
    expected = [[sum(int(x[t, j]) * int(w[j, c]) for j in range(50)) for c in range(4)]
                for t in range(3)]
    assert matmul_reference(x, w).tolist() == expected


@pytest.mark.parametrize("x, w, message", [
    (np.zeros((2, 3), dtype=int), np.zeros((4, 5), dtype=int),
     "shapes must be (tokens, K) and (K, N), not (2, 3) and (4, 5)"),
    (np.zeros((2, 3)), np.zeros((3, 5), dtype=int), "x must have an integer dtype, not float64"),
    (np.zeros((2, 3), dtype=int), np.zeros(3, dtype=int),
     "w must be a 2-D matrix, not an array of shape (3,)"),
    (np.full((1, 2), 2 ** 31), np.full((2, 1), -(2 ** 31)),
     "K · max|x| · max|w| must be below 2**63 for an exact int64 product, "
     "not 2 · 2147483648 · 2147483648"),
], ids=["mismatch", "float", "1-d", "int64-overflow"])
def test_matmul_reference_refuses_what_it_cannot_do_exactly(x, w, message):
    with pytest.raises(ValueError) as exc:
        matmul_reference(x, w)
    assert str(exc.value) == message


@pytest.mark.parametrize("value, bits, message", [
    (np.array([[0, 1], [128, 0]]), 8, "w[1, 0] must be in -128..127 (8-bit signed), not 128"),
    (np.array([[0, -129]]), 8, "w[0, 1] must be in -128..127 (8-bit signed), not -129"),
    (np.array([[7, 8, 9]]), 4, "w[0, 1] must be in -8..7 (4-bit signed), not 8"),
    (np.array([[2 ** 64 - 1]], dtype=np.uint64), 64,
     "w[0, 0] must be in -9223372036854775808..9223372036854775807 (64-bit signed), "
     "not 18446744073709551615"),
    (np.array([[200]], dtype=np.uint8), 8, "w[0, 0] must be in -128..127 (8-bit signed), "
                                           "not 200"),
    (np.array([[0.5]]), 8, "w must have an integer dtype, not float64"),
    (np.array([[True]]), 8, "w must have an integer dtype, not bool"),
    (np.array([1, 2]), 8, "w must be a 2-D matrix, not an array of shape (2,)"),
    (np.array([[1]]), 0, "bits must be an integer from 1 to 64, not 0"),
    (np.array([[1]]), 65, "bits must be an integer from 1 to 64, not 65"),
], ids=["high", "low", "4-bit", "uint64-above-int64", "uint8", "float", "bool", "1-d",
        "bits-0", "bits-65"])
def test_check_int_matrix_names_the_first_offender(value, bits, message):
    with pytest.raises(ValueError) as exc:
        check_int_matrix("w", value, bits)
    assert str(exc.value) == message


def test_check_int_matrix_accepts_the_full_range_and_copies():
    source = np.array([[-128, 127]], dtype=np.int64)
    a = check_int_matrix("x", source, 8)
    assert a.dtype == np.int64 and a.tolist() == [[-128, 127]]
    a[0, 0] = 0
    assert source[0, 0] == -128


def test_check_int_matrix_accepts_lists_and_narrow_dtypes():
    assert check_int_matrix("x", [[1, -2]], 2).tolist() == [[1, -2]]
    assert check_int_matrix("x", np.array([[-8]], dtype=np.int8), 4).dtype == np.int64
