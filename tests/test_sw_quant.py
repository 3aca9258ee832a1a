"""Symmetric INT8 quantization: hand arithmetic, granularity, N:M preservation, errors."""

import numpy as np
import pytest
from sparsecim.sw.nm import NMPattern, check_nm, prune_magnitude
from sparsecim.sw.quant import (
    dequantize_acts,
    dequantize_matmul,
    dequantize_weights,
    qmax,
    quantize_acts,
    quantize_weights,
)
from sparsecim.sw.reference import matmul_reference


def test_qmax_is_symmetric_signed_range():
    assert qmax(8) == 127
    assert qmax(4) == 7
    assert qmax(2) == 1


@pytest.mark.parametrize("bits", [1, 33, 8.0, True])
def test_qmax_rejects_bad_bits(bits):
    with pytest.raises(ValueError, match=f"^bits must be an integer from 2 to 32, not {bits!r}$"):
        qmax(bits)


def test_quantize_weights_per_row_by_hand():
    w = np.array([[1.27, -0.5, 0.0, 0.005],
                  [-2.54, 1.0, 0.01, 0.03]])
    q, scale = quantize_weights(w)
    # Row 0: scale 1.27/127 = 0.01; -0.5 -> -50, 0.005 -> 0.5 -> 0 (ties to even).
    # Row 1: scale 0.02; 1.0 -> 50, 0.01 -> 0.5 -> 0, 0.03 -> 1.5 -> 2.
    np.testing.assert_allclose(scale, [0.01, 0.02])
    np.testing.assert_array_equal(q, [[127, -50, 0, 0], [-127, 50, 0, 2]])
    assert q.dtype == np.int64


def test_quantize_weights_error_bounded_by_half_step():
    w = np.random.default_rng(0).normal(size=(16, 40))
    q, scale = quantize_weights(w)
    assert np.abs(q).max() == 127
    assert (np.abs(dequantize_weights(q, scale) - w) <= scale[:, None] / 2 + 1e-12).all()


def test_quantize_weights_zero_row_gets_scale_one():
    q, scale = quantize_weights(np.array([[0.0, 0.0], [0.5, -0.25]]))
    np.testing.assert_array_equal(q, [[0, 0], [127, -64]])
    assert scale[0] == 1.0


def test_quantize_weights_keeps_nm_pattern():
    pattern = NMPattern(2, 4)
    w = prune_magnitude(np.random.default_rng(1).normal(size=(8, 32)), pattern)
    q, _ = quantize_weights(w)
    check_nm(q, pattern)
    assert ((w == 0) <= (q == 0)).all()


def test_quantize_weights_narrow_bits():
    q, scale = quantize_weights(np.array([[0.7, -0.35, 0.1]]), bits=4)
    # scale 0.1: 7, -3.5 -> -4 (ties to even), 1.
    np.testing.assert_array_equal(q, [[7, -4, 1]])
    np.testing.assert_allclose(scale, [0.1])


def test_quantize_acts_per_tensor_by_hand():
    x = np.array([[0.5, -2.54], [0.02, 1.0]])
    q, scale = quantize_acts(x)
    assert scale == pytest.approx(0.02)
    np.testing.assert_array_equal(q, [[25, -127], [1, 50]])


def test_quantize_acts_per_token_by_hand():
    x = np.array([[0.5, -2.54], [0.02, 1.0], [0.0, 0.0]])
    q, scale = quantize_acts(x, per_token=True)
    np.testing.assert_allclose(scale, [0.02, 1 / 127, 1.0])
    np.testing.assert_array_equal(q, [[25, -127], [3, 127], [0, 0]])
    np.testing.assert_allclose(dequantize_acts(q, scale)[1], [3 / 127, 1.0])


def test_dequantize_matmul_equals_float_product_of_dequantized_operands():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(3, 20)), rng.normal(size=(5, 20))
    for per_token in (False, True):
        qx, sx = quantize_acts(x, per_token=per_token)
        qw, sw = quantize_weights(w)
        y = dequantize_matmul(matmul_reference(qx, qw.T), sx, sw)
        expected = dequantize_acts(qx, sx) @ dequantize_weights(qw, sw).T
        np.testing.assert_allclose(y, expected, rtol=1e-12)
        assert np.linalg.norm(y - x @ w.T) / np.linalg.norm(x @ w.T) < 0.02


def test_quantize_rejects_non_finite():
    with pytest.raises(ValueError, match=r"^w\[0, 1\] must be finite, not nan$"):
        quantize_weights(np.array([[1.0, np.nan]]))


def test_quantize_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"^x must be a 2-D matrix, not an array of shape "
                                         r"\(3,\)$"):
        quantize_acts(np.zeros(3))


def test_quantize_acts_rejects_non_bool_per_token():
    with pytest.raises(ValueError, match="^per_token must be a bool, not 1$"):
        quantize_acts(np.zeros((1, 1)), per_token=1)


def test_dequantize_rejects_mismatched_scales():
    with pytest.raises(ValueError, match=r"^scale must have shape \(2,\) to match q \(2, 3\), "
                                         r"not \(3,\)$"):
        dequantize_weights(np.zeros((2, 3), dtype=np.int64), np.ones(3))
    with pytest.raises(ValueError, match=r"^activation scale must be a scalar or have shape "
                                         r"\(2,\), not \(3,\)$"):
        dequantize_matmul(np.zeros((2, 4), dtype=np.int64), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"^weight_scale must have shape \(4,\) to match acc "
                                         r"\(2, 4\), not \(2,\)$"):
        dequantize_matmul(np.zeros((2, 4), dtype=np.int64), 1.0, np.ones(2))
