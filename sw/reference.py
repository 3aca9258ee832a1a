"""L0 reference: plain exact integer matrix products, and operand validation."""

from __future__ import annotations

import numpy as np

__all__ = ["matmul_reference", "check_int_matrix"]


def check_int_matrix(name: str, a, bits: int) -> np.ndarray:
    """Return ``a`` as an ``int64`` matrix after checking it is a 2-D signed ``bits`` operand.

    Raises
    ------
    ValueError
        If ``a`` is not 2-D, not of an integer dtype, or holds a value outside
        ``-2**(bits-1) .. 2**(bits-1)-1``; the message names the first offending value and its
        index.
    """
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, not an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, not {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    bad = np.argwhere((arr < lo) | (arr > hi))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name}{list(index)} must be in {lo}..{hi} ({bits}-bit signed), "
                         f"not {arr[index]}")
    return arr


def matmul_reference(x, w) -> np.ndarray:
    """Exact ``(tokens × K) · (K × N)`` product in ``int64`` (no wrapping for INT8 operands
    up to K of about 5·10^14)."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"shapes must be (tokens, K) and (K, N), not {x.shape} and {w.shape}")
    return x @ w
