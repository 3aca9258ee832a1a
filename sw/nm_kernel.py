"""The golden model's N:M passes as one compiled loop (numba), for the shapes numpy is slow at.

An N:M pass gives every weight cell its own activation (the metadata picks one of the ``m``
inputs of its row's group), so numpy needs several passes over every cell: decode the 3-bit
positions, select, convert, multiply, sum. :func:`nm_pass_sums` does it in one loop per
weight row: decode the row's positions from the beat's bytes, then for each of the ``m``
positions add ``weight × activation`` to the columns that hold it. The result is the same
integer sums, about 2x the numpy formulation's speed on the LLaMA shapes (``make bench``);
that formulation stays in :mod:`sparsecim.sw.golden` for the configurations the kernel does
not cover, for short runs, and as the kernel's test oracle (``tests/test_sw_nm_kernel.py``).

Loading the kernel costs a process about half a second (importing numba, reading the compiled
code from numba's disk cache beside this file; compiling it the first time, about 2 s), what
numpy takes for some 4 million N:M weight rows. So a process runs its N:M passes in numpy
until it has run :data:`LOAD_AFTER_ROWS` of them, then loads the kernel (the ski-rental rule:
a run never pays more than about twice the better choice made in hindsight); :func:`activate`
loads it at once. ``SPARSECIM_NO_JIT=1`` in the environment turns it off (numpy only).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

__all__ = ["LOAD_AFTER_ROWS", "activate", "available", "chosen", "covers", "nm_pass_sums"]

#: N:M weight rows a process runs through numpy before it loads the kernel: about what numpy
#: does (at 100 to 150 ns a row on ``flexcim``) in the kernel's load time.
LOAD_AFTER_ROWS = 4_000_000

_state = {"active": False, "numpy_rows": 0}


def covers(cfg, layout) -> bool:
    """True if :func:`nm_pass_sums` covers ``cfg``'s weight rows: positions of at most 8 bits
    starting on a byte (``layout``: :func:`~sparsecim.hw.isa.weight_row_layout`), a whole
    number of them in at most 8 bytes. Imports nothing."""
    if not cfg.meta_bits or "meta" not in layout.members:
        return False
    return (cfg.meta_bits <= 8 and layout["meta"].offset % 8 == 0
            and math.lcm(cfg.meta_bits, 8) <= 64)


def available() -> bool:
    """True if the kernel can run: numba importable (imported here, once) and not turned off
    by ``SPARSECIM_NO_JIT``."""
    return _jit() is not None


def chosen(rows: int) -> bool:
    """Whether a batch of ``rows`` N:M weight rows (passes × weight rows) runs in the kernel:
    once it is active, or once the process's numpy rows, these included, reach
    :data:`LOAD_AFTER_ROWS` (then it becomes active). Rows left to numpy are counted."""
    if not _state["active"]:
        _state["numpy_rows"] += rows
        if _state["numpy_rows"] < LOAD_AFTER_ROWS:
            return False
        _state["active"] = True
    return True


def activate() -> bool:
    """Use the kernel from now on in this process (benchmarks, long runs); False if numba is
    missing or turned off."""
    if _jit() is None:
        return False
    _state["active"] = True
    return True


def nm_pass_sums(cfg, layout, weights: np.ndarray, raw: np.ndarray, rows: np.ndarray,
                 entries: np.ndarray, base: np.ndarray, m: int, dtype) -> np.ndarray:
    """Pass sums of N:M passes: ``(passes, count, cols)`` in ``dtype``.

    Parameters
    ----------
    cfg : MacroConfig
        The macro (``covers(cfg, layout)`` and :func:`available` must hold).
    layout : StructLayout
        :func:`~sparsecim.hw.isa.weight_row_layout` of ``cfg``.
    weights : ndarray
        Every weight beat's weights, ``(beats, cols)``, any integer dtype (a view of
        ``raw``'s bytes for byte-wide weights).
    raw : ndarray
        The data stream's bytes, ``(beats, >= bytes of a weight row)`` ``uint8``.
    rows : ndarray
        ``(passes, weight_rows)``: the beat that holds each weight row of each pass.
    entries : ndarray
        ``(passes, count, >= inputs)``: each pass's activation entries, from its part on.
    base : ndarray
        ``(weight_rows,)``: the first entry element of each row's group.
    m : int
        The pattern's group size: position ``p`` selects element ``base + p``; a position
        ``>= m`` selects 0.
    dtype : dtype
        The integer type the sums are formed in: every partial sum of a pass must fit it
        (the golden model's ``_kernel_dtype``: ``int32`` for ``flexcim``, whose bound is
        2**21), so that the sums are exact.
    """
    out = np.empty((rows.shape[0], entries.shape[1], cfg.cols), dtype=dtype)
    loop = _kernel(layout["meta"].offset // 8, cfg.meta_bits, cfg.cols)
    loop(weights, raw, np.ascontiguousarray(rows, dtype=np.int64), entries.astype(dtype),
         np.ascontiguousarray(base, dtype=np.int64), m, out)
    return out


def _jit():
    """numba's ``njit``, or None if numba is missing or ``SPARSECIM_NO_JIT`` is set."""
    if os.environ.get("SPARSECIM_NO_JIT", "") not in ("", "0"):
        return None
    return _numba_njit()


@functools.cache
def _numba_njit():
    try:
        import numba
    except ImportError:
        return None
    return numba.njit


@functools.cache
def _kernel(meta_byte: int, meta_bits: int, cols: int):
    """The compiled loop for one weight-row geometry: the positions' first byte, width and
    count are constants of the compiled code (numba keys its disk cache on them too), so
    their decoding unrolls."""
    jit = _jit()
    if jit is None:
        return None
    mask = (1 << meta_bits) - 1
    period_bytes = math.lcm(meta_bits, 8) // 8
    per = period_bytes * 8 // meta_bits           # positions in a period of bytes
    periods = -(-cols // per)

    @jit(cache=True, nogil=True, boundscheck=False)
    def loop(weights, raw, rows, entries, base, m, out):
        passes, weight_rows = rows.shape
        count = entries.shape[1]
        nbytes = raw.shape[1]
        pos = np.empty(cols, out.dtype)
        w = np.empty(cols, out.dtype)
        acc = np.zeros((count, cols), out.dtype)
        for b in range(passes):
            acc[:] = 0
            for g in range(weight_rows):
                beat = rows[b, g]
                row = raw[beat]
                row_w = weights[beat]
                for c in range(cols):
                    w[c] = row_w[c]
                # The row's positions: each period of bytes read as one integer.
                for k in range(periods):
                    word = np.int64(0)
                    at = meta_byte + k * period_bytes
                    for i in range(period_bytes):
                        if at + i < nbytes:  # a last, partial period may end the row
                            word |= np.int64(row[at + i]) << (8 * i)
                    for j in range(min(per, cols - k * per)):
                        pos[k * per + j] = (word >> (meta_bits * j)) & mask
                # Each position in turn, over all columns (no gather: the loop vectorizes).
                first = base[g]
                for t in range(count):
                    for p in range(m):
                        a = entries[b, t, first + p]
                        for c in range(cols):
                            acc[t, c] += w[c] * a * (pos[c] == p)
            out[b] = acc
    return loop
