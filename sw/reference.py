"""L0 reference: plain exact integer matrix products, and operand validation.

Everything above this level (the golden model, the RTL) is checked against
:func:`matmul_reference`, so it is deliberately the most boring code in the project: one
``int64`` matmul, guarded so that it can never overflow silently.
"""

from __future__ import annotations

import numpy as np

__all__ = ["matmul_reference", "check_int_matrix", "check_in_range"]


def check_int_matrix(name: str, a, bits: int) -> np.ndarray:
    """Check that ``a`` is a 2-D matrix of signed ``bits``-bit integers; return it as ``int64``.

    Parameters
    ----------
    name : str
        How the operand is called in error messages (``"x"``, ``"w"``).
    a : array_like
        The operand. Any integer dtype (signed or unsigned, any width) is accepted; bool and
        floating-point dtypes are not, even when their values are whole numbers.
    bits : int
        Signed width the values must fit, 1 to 64: ``-2**(bits-1) .. 2**(bits-1)-1``.

    Returns
    -------
    ndarray
        A new ``int64`` array of the same shape and values (never a view of ``a``).

    Raises
    ------
    ValueError
        If ``bits`` is not an integer from 1 to 64; if ``a`` is not 2-D or not of an integer
        dtype; or if a value is out of range, in which case the message names the first
        offending value in row-major order and its index, as
        ``"w[1, 0] must be in -128..127 (8-bit signed), not 128"``.
    """
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an integer from 1 to 64, not {bits!r}")
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, not an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, not {arr.dtype}")
    lo, hi = -(2 ** (int(bits) - 1)), 2 ** (int(bits) - 1) - 1
    return check_in_range(name, arr, lo, hi, f" ({bits}-bit signed)")


def check_in_range(name: str, arr: np.ndarray, lo: int, hi: int, note: str = "", *,
                   must: str | None = None) -> np.ndarray:
    """``arr`` (an integer array) as a new ``int64`` array once every value is in
    ``lo..hi``; else a ``ValueError`` naming the first offending value in row-major order
    and its index, as ``"w[1, 0] must be in -128..127 (8-bit signed), not 128"`` (``note``
    follows the range; ``must`` replaces ``"be in lo..hi<note>"``)."""
    # Compare in the operand's own dtype before any cast: a uint64 above 2**63 - 1 would
    # otherwise wrap to a negative int64 and slip through.
    bad = np.argwhere((arr < lo) | (arr > hi))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        must = must or f"be in {lo}..{hi}{note}"
        raise ValueError(f"{name}{list(index)} must {must}, not {int(arr[index])}")
    return arr.astype(np.int64)


def matmul_reference(x, w) -> np.ndarray:
    """Exact integer product ``x · w`` of a ``(tokens, K)`` and a ``(K, N)`` matrix.

    Parameters
    ----------
    x, w : array_like
        Integer matrices (any integer dtype, values within ``int64``).

    Returns
    -------
    ndarray
        ``(tokens, N)`` ``int64``; no wrapping at any accumulator width (that is the point of
        a reference: the hardware must equal it whenever the scheduler accepted the operands).

    Raises
    ------
    ValueError
        If an operand is not a 2-D integer matrix, if the inner dimensions differ, or if a
        dot product could exceed ``int64`` (``K · max|x| · max|w| >= 2**63``).
    """
    x = check_int_matrix("x", x, 64)
    w = check_int_matrix("w", w, 64)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"shapes must be (tokens, K) and (K, N), not {x.shape} and {w.shape}")
    if x.size and w.size:
        # Python ints: the bound itself must not overflow (abs(-2**63) does in int64).
        x_max = max(-int(x.min()), int(x.max()))
        w_max = max(-int(w.min()), int(w.max()))
        if x.shape[1] * x_max * w_max >= 2 ** 63:
            raise ValueError(f"K · max|x| · max|w| must be below 2**63 for an exact int64 "
                             f"product, not {x.shape[1]} · {x_max} · {w_max}")
    return x @ w
