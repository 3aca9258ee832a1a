"""Symmetric integer quantization of a linear layer's weights and activations for the macro.

The macro multiplies signed integers exactly (``act_bits`` × ``weight_bits`` into wide
accumulators). A float layer ``y = x @ w.T`` runs on it as ``y ≈ s_x · s_w · (q_x @ q_w.T)``,
which is exact in the integer part only if the scales factor out of the sum over inputs. Two
granularities keep that property and are what this module offers:

- weights: one scale per **output channel** (row of ``w``), ``s_w[o] = max_i |w[o, i]| / qmax``;
- activations: one scale for the **whole tensor** (default), or one per **token** (row of
  ``x``), ``s_x[t] = max_i |x[t, i]| / qmax``.

Both are symmetric (no zero point) with ``qmax = 2**(bits-1) - 1``: values round to the nearest
integer (ties to even, :func:`numpy.rint`) in ``-qmax .. qmax``, so ``-2**(bits-1)`` is never
used and ``q`` of ``-w`` is ``-q`` of ``w``. A row or tensor that is all zero gets scale 1
(every positive scale represents it exactly), so every scale is positive and can be divided by.

Structured sparsity survives: a zero weight quantizes to exactly 0, so a matrix that obeys an
N:M pattern still obeys it after :func:`quantize_weights`. A kept weight smaller than half a
step also rounds to 0; its group then holds fewer than ``n`` non-zeros, which the pattern allows.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "dequantize_acts",
    "dequantize_matmul",
    "dequantize_weights",
    "qmax",
    "quantize_acts",
    "quantize_weights",
]


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed ``bits``-bit code, ``2**(bits-1) - 1``.

    Raises
    ------
    ValueError
        If ``bits`` is not an integer from 2 to 32, as ``"bits must be an integer from 2 to
        32, not 1"``.
    """
    if not isinstance(bits, numbers.Integral) or isinstance(bits, bool) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer from 2 to 32, not {bits!r}")
    return 2 ** (int(bits) - 1) - 1


def _check_float_matrix(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, not an array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must have an integer or floating-point dtype, not {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name}{list(index)} must be finite, not {arr[index]}")
    return arr


def _quantize_rows(values: np.ndarray, peak: np.ndarray, bits: int):
    """Codes and scales for ``values`` whose scale is ``peak / qmax`` (broadcast per row)."""
    top = qmax(bits)
    # All-zero rows: any positive scale is exact; 1 keeps every scale divisible.
    scale = np.where(peak > 0, peak / top, 1.0)
    codes = np.clip(np.rint(values / scale), -top, top).astype(np.int64)
    return codes, scale


def quantize_weights(w, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a weight matrix symmetrically with one scale per output channel.

    Parameters
    ----------
    w : array_like
        ``(out_features, in_features)`` weights (``y = x @ w.T``), integer or floating, finite.
    bits : int
        Signed code width, 2 to 32 (8 for the macro's INT8 cells).

    Returns
    -------
    q : ndarray of int64
        Same shape, ``q[o, i] = rint(w[o, i] / scale[o])`` in ``-qmax .. qmax``. Zeros of
        ``w`` are zeros of ``q``, so an N:M pattern is preserved.
    scale : ndarray of float64
        ``(out_features,)``, ``max_i |w[o, i]| / qmax``, or 1 for an all-zero row. The row's
        largest magnitude maps to exactly ``±qmax``; ``|q · scale - w| <= scale / 2``.

    Raises
    ------
    ValueError
        If ``w`` is not a 2-D integer or floating-point matrix of finite values, or ``bits`` is
        out of range.
    """
    w = _check_float_matrix("w", w)
    q, scale = _quantize_rows(w, np.abs(w).max(axis=1, initial=0.0)[:, None], bits)
    return q, scale[:, 0]


def quantize_acts(x, bits: int = 8, *, per_token: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | float]:
    """Quantize activations symmetrically, per tensor (default) or per token.

    Parameters
    ----------
    x : array_like
        ``(tokens, in_features)`` activations, integer or floating, finite.
    bits : int
        Signed code width, 2 to 32 (8 for the macro's INT8 activations).
    per_token : bool
        ``False``: one scale ``max |x| / qmax`` for the whole tensor, as a static INT8
        deployment does. ``True``: one scale per row, ``max_i |x[t, i]| / qmax`` (dynamic
        per-token quantization; finer when token magnitudes differ, as around outlier tokens).

    Returns
    -------
    q : ndarray of int64
        Same shape as ``x``, codes in ``-qmax .. qmax``.
    scale : float or ndarray of float64
        A positive float (per tensor), or ``(tokens,)`` positive scales (per token); an
        all-zero tensor or row gets scale 1.

    Raises
    ------
    ValueError
        If ``x`` is not a 2-D integer or floating-point matrix of finite values, ``bits`` is out
        of range, or ``per_token`` is not a bool.
    """
    if not isinstance(per_token, bool):
        raise ValueError(f"per_token must be a bool, not {per_token!r}")
    x = _check_float_matrix("x", x)
    magnitude = np.abs(x)
    if per_token:
        q, scale = _quantize_rows(x, magnitude.max(axis=1, initial=0.0)[:, None], bits)
        return q, scale[:, 0]
    q, scale = _quantize_rows(x, np.asarray(magnitude.max(initial=0.0)), bits)
    return q, float(scale)


def dequantize_weights(q, scale) -> np.ndarray:
    """Float weights ``q[o, i] · scale[o]`` (float64) from :func:`quantize_weights`' output.

    Raises
    ------
    ValueError
        If ``q`` is not a 2-D matrix or ``scale`` is not ``(out_features,)``.
    """
    q = _check_float_matrix("q", q)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != (q.shape[0],):
        raise ValueError(f"scale must have shape ({q.shape[0]},) to match q {q.shape}, "
                         f"not {scale.shape}")
    return q * scale[:, None]


def _act_scale_column(scale, tokens: int) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 0:
        return scale
    if scale.shape != (tokens,):
        raise ValueError(f"activation scale must be a scalar or have shape ({tokens},), "
                         f"not {scale.shape}")
    return scale[:, None]


def dequantize_acts(q, scale) -> np.ndarray:
    """Float activations (float64) from :func:`quantize_acts`' output, either granularity.

    Raises
    ------
    ValueError
        If ``q`` is not a 2-D matrix or ``scale`` is neither a scalar nor ``(tokens,)``.
    """
    q = _check_float_matrix("q", q)
    return q * _act_scale_column(scale, q.shape[0])


def dequantize_matmul(acc, act_scale, weight_scale) -> np.ndarray:
    """Float outputs of a layer from the integer products ``acc = q_x @ q_w.T``.

    ``y[t, o] = acc[t, o] · act_scale[t] · weight_scale[o]``: both scales factor out of the
    sum over inputs, so this equals ``dequantize_acts(q_x, s_x) @ dequantize_weights(q_w,
    s_w).T`` up to float64 rounding.

    Parameters
    ----------
    acc : array_like
        ``(tokens, out_features)`` integer products (from the golden model, the RTL or
        :func:`~sparsecim.sw.reference.matmul_reference`).
    act_scale : float or array_like
        The activation scale: a scalar, or ``(tokens,)`` per token.
    weight_scale : array_like
        ``(out_features,)`` per output channel.

    Returns
    -------
    ndarray of float64
        ``(tokens, out_features)``.

    Raises
    ------
    ValueError
        If a shape does not match ``acc``.
    """
    acc = _check_float_matrix("acc", acc)
    weight_scale = np.asarray(weight_scale, dtype=np.float64)
    if weight_scale.shape != (acc.shape[1],):
        raise ValueError(f"weight_scale must have shape ({acc.shape[1]},) to match acc "
                         f"{acc.shape}, not {weight_scale.shape}")
    return acc * _act_scale_column(act_scale, acc.shape[0]) * weight_scale[None, :]
