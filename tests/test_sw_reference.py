import numpy as np
import pytest
from sparsecim.sw.reference import check_int_matrix, matmul_reference


def test_matmul_reference_small_by_hand():
    x = np.array([[1, -2, 3]])
    w = np.array([[1, 0], [2, -1], [-128, 127]])
    # 1*1 - 2*2 + 3*-128 = -387 ; 0 + 2 + 381 = 383
    assert matmul_reference(x, w).tolist() == [[-387, 383]]


def test_matmul_reference_is_exact_at_int8_extremes():
    x = np.full((2, 1000), -128)
    w = np.full((1000, 3), -128)
    assert (matmul_reference(x, w) == 1000 * 16384).all()


def test_matmul_reference_rejects_mismatched_shapes():
    with pytest.raises(ValueError) as exc:
        matmul_reference(np.zeros((2, 3)), np.zeros((4, 5)))
    assert str(exc.value) == "shapes must be (tokens, K) and (K, N), not (2, 3) and (4, 5)"


@pytest.mark.parametrize("value, message", [
    (np.array([[0, 1], [128, 0]]), "w[1, 0] must be in -128..127 (8-bit signed), not 128"),
    (np.array([[0, -129]]), "w[0, 1] must be in -128..127 (8-bit signed), not -129"),
    (np.array([[0.5]]), "w must have an integer dtype, not float64"),
    (np.array([1, 2]), "w must be a 2-D matrix, not an array of shape (2,)"),
], ids=["high", "low", "float", "1-d"])
def test_check_int_matrix_names_the_first_offender(value, message):
    with pytest.raises(ValueError) as exc:
        check_int_matrix("w", value, 8)
    assert str(exc.value) == message


def test_check_int_matrix_accepts_the_full_range():
    a = check_int_matrix("x", np.array([[-128, 127]], dtype=np.int8), 8)
    assert a.dtype == np.int64 and a.tolist() == [[-128, 127]]
