"""Monarch (block-diagonal) projection of dense weight matrices.

The convention, stated once for the whole project
--------------------------------------------------

A weight ``W`` is ``(m, n)`` = ``(out, in)`` like a PyTorch Linear: ``y = W · x``. A Monarch
matrix with ``k`` right blocks, ``j`` left blocks and rank ``r`` is::

    M = P_out · L · P_mid · R

- ``R`` (the first factor, applied first) is block-diagonal with ``k`` blocks
  ``right[kk]`` of shape ``(r·j, i)``, ``i = n / k``: block ``kk`` reads inputs
  ``kk·i .. kk·i + i - 1`` (the input is *block-major*, no input permutation).
- ``P_mid`` is the reshape-transpose of the ``k·r·j`` intermediate values: value
  ``(kk·r + q)·j + jj`` (output ``q·j + jj`` of right block ``kk``) becomes input
  ``kk·r + q`` of left block ``jj``, i.e. the intermediate viewed as a ``(k·r, j)`` matrix
  is transposed.
- ``L`` is block-diagonal with ``j`` blocks ``left[jj]`` of shape ``(o, k·r)``,
  ``o = m / j``; its result ``z`` is block-major, ``z[jj, c]``.
- ``P_out`` is the reshape-transpose of ``z`` viewed as ``(j, o)``: output row ``c·j + jj``
  of ``M`` is ``z[jj, c]``.

Element-wise, ``M[c·j + jj, kk·i + a] = sum_q left[jj, c, kk·r + q] · right[kk, q·j + jj, a]``.

This is the einsum form of Dao et al. 2022 ("Monarch", HazyResearch/fly,
``blockdiag_butterfly_multiply_einsum_rank``: ``'b k i, k r j i, j l k r -> b l j'``), with
``right`` as their ``w1_bfly`` and ``left`` as ``w2_bfly``. Special cases:

- *square* ``n = b²``: ``k = j = b``, ``r = 1``, all blocks ``b × b``, and ``P_out = P_mid =
  P`` (the ``b × b`` transpose is its own inverse), so ``M = P · L · Pᵀ · R``;
- *Dao's* ``MonarchLinear(nblocks)`` on a square ``d × d``: ``k = j = nblocks`` and
  ``r = d / nblocks²``, all blocks ``(d / nblocks)`` square (the paper's 64 × 64 blocks of a
  1024 × 1024 layer are ``nblocks = 16``, ``r = 4``);
- the layer of :mod:`~sparsecim.sw.schedule.monarch`: ``r = 1`` and ``i = j = o = s``:
  ``right`` *is* its ``r_blocks`` (``(b, s, s)``, ``b = k``) and ``left`` *is* its ``l_blocks``
  (``(s, s, b)``); its result ``z`` ``(tokens, s, s)`` is our ``z`` before ``P_out``, so
  ``y = z.transpose(0, 2, 1).reshape(tokens, -1)`` (:func:`output_from_blocks`) is ``x · Mᵀ``.
  :func:`schedule_factors` hands projected factors over in exactly those shapes.

Projection. Every entry of ``M`` belongs to exactly one *slice* ``(kk, jj)``:
``S[kk, jj][c, a] = M[c·j + jj, kk·i + a]`` (``o × i``), and ``S[kk, jj] = U · V`` with
``U = left[jj, :, kk·r : kk·r + r]`` and ``V = right[kk, jj::j, :]`` is any rank-``r`` matrix,
the slices independent of each other. So the Frobenius-nearest Monarch matrix takes the
truncated rank-``r`` SVD of every slice (Eckart-Young), split as ``U·√σ`` and ``√σ·Vᵀ``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["MonarchFactors", "monarch_project", "monarch_dense", "monarch_apply",
           "relative_error", "default_blocks", "random_monarch", "schedule_factors",
           "output_from_blocks"]


def _positive_int(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class MonarchFactors:
    """The two block-diagonal factors of a Monarch matrix (module docstring).

    Attributes
    ----------
    right : ndarray
        ``(k, r·j, i)``: the first factor's ``k`` blocks, each ``(out, in)``.
    left : ndarray
        ``(j, o, k·r)``: the second factor's ``j`` blocks, each ``(out, in)``.
    rank : int
        ``r``.
    """
    right: np.ndarray
    left: np.ndarray
    rank: int = 1

    def __post_init__(self):
        right, left = np.asarray(self.right), np.asarray(self.left)
        r = _positive_int("rank", self.rank)
        if right.ndim != 3 or left.ndim != 3:
            raise ValueError(f"right and left must be 3-D block stacks, not shapes "
                             f"{right.shape} and {left.shape}")
        k, rj, _ = right.shape
        j, _, kr = left.shape
        if rj != r * j or kr != k * r:
            raise ValueError(f"right (k, r·j, i) and left (j, o, k·r) must agree with rank "
                             f"{r}, not shapes {right.shape} and {left.shape}")
        object.__setattr__(self, "right", right)
        object.__setattr__(self, "left", left)

    @property
    def k(self) -> int:
        """Blocks of the first factor."""
        return self.right.shape[0]

    @property
    def j(self) -> int:
        """Blocks of the second factor."""
        return self.left.shape[0]

    @property
    def in_features(self) -> int:
        """``n = k · i``."""
        return self.right.shape[0] * self.right.shape[2]

    @property
    def out_features(self) -> int:
        """``m = j · o``."""
        return self.left.shape[0] * self.left.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)`` of the dense matrix."""
        return self.out_features, self.in_features

    @property
    def parameters(self) -> int:
        """Weights of both factors: ``r · (j·n + k·m)``."""
        return self.right.size + self.left.size

    @property
    def macs_per_token(self) -> int:
        """Multiply-accumulates of one token: one per factor weight."""
        return self.parameters


def default_blocks(n: int) -> int:
    """The divisor of ``n`` closest to ``√n`` (the smaller one on a tie): ``b`` for ``n = b²``,
    24 for 576, 32 for 1536, 12 for 192.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    n = _positive_int("n", n)
    return min((d for d in range(1, n + 1) if n % d == 0),
               key=lambda d: (abs(d - n ** 0.5), d))


def _check_blocks(m: int, n: int, k, j, rank) -> tuple[int, int, int]:
    k = default_blocks(n) if k is None else _positive_int("k", k)
    j = default_blocks(m) if j is None else _positive_int("j", j)
    rank = _positive_int("rank", rank)
    if n % k:
        raise ValueError(f"k must divide the {n} inputs, not {k}")
    if m % j:
        raise ValueError(f"j must divide the {m} outputs, not {j}")
    if rank > min(m // j, n // k):
        raise ValueError(f"rank must be at most min(o, i) = {min(m // j, n // k)} for slices "
                         f"of {m // j} x {n // k}, not {rank}")
    return k, j, rank


def monarch_project(w, *, k: int | None = None, j: int | None = None,
                    rank: int = 1) -> MonarchFactors:
    """The Frobenius-nearest Monarch matrix to ``w``, as its factors.

    Parameters
    ----------
    w : array_like
        ``(m, n)`` real matrix, ``(out, in)``.
    k, j : int, optional
        Blocks of the first and second factor; must divide ``n`` and ``m``. By default
        :func:`default_blocks` of ``n`` and ``m`` (``k = j = b`` for a square ``n = b²``).
    rank : int
        ``r``, at most ``min(m / j, n / k)``.

    Returns
    -------
    MonarchFactors
        float64; ``monarch_dense(result)`` minimizes ``‖w − M‖_F`` over Monarch matrices of
        this ``(k, j, r)`` (module docstring), and equals ``w`` when ``w`` is one.

    Raises
    ------
    ValueError
        If ``w`` is not a finite 2-D real matrix, or ``k``, ``j``, ``rank`` do not fit, as
        ``"k must divide the 576 inputs, not 7"``.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0 or not np.issubdtype(w.dtype, np.number) \
            or np.iscomplexobj(w):
        raise ValueError(f"w must be a non-empty real 2-D matrix, not an array of shape "
                         f"{w.shape} and dtype {w.dtype}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise ValueError("w must be finite")
    m, n = w.shape
    k, j, rank = _check_blocks(m, n, k, j, rank)
    o, i = m // j, n // k
    slices = w.reshape(o, j, k, i).transpose(2, 1, 0, 3)           # (kk, jj, c, a)
    u, sigma, vt = np.linalg.svd(slices, full_matrices=False)
    root = np.sqrt(sigma[..., :rank])
    u = u[..., :rank] * root[..., None, :]                          # (kk, jj, c, q)
    v = vt[..., :rank, :] * root[..., :, None]                      # (kk, jj, q, a)
    right = v.transpose(0, 2, 1, 3).reshape(k, rank * j, i)         # row q·j + jj
    left = u.transpose(1, 2, 0, 3).reshape(j, o, k * rank)          # column kk·r + q
    return MonarchFactors(right, left, rank)


def monarch_dense(f: MonarchFactors) -> np.ndarray:
    """The dense ``(m, n)`` matrix of ``f``: ``P_out · L · P_mid · R`` (module docstring)."""
    k, j, r = f.k, f.j, f.rank
    i, o = f.right.shape[2], f.left.shape[1]
    right = f.right.reshape(k, r, j, i)
    left = f.left.reshape(j, o, k, r)
    dense = np.einsum("jckq,kqja->cjka", left, right)
    return dense.reshape(o * j, k * i)


def monarch_apply(f: MonarchFactors, x) -> np.ndarray:
    """``x · Mᵀ`` for ``x`` of shape ``(tokens, n)``, factor by factor (never densified):
    ``(tokens, m)``, in ``x``'s and the factors' common dtype.

    Raises
    ------
    ValueError
        If ``x`` is not ``(tokens, n)``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != f.in_features:
        raise ValueError(f"x must have shape (tokens, {f.in_features}), not {x.shape}")
    t = x.shape[0]
    k, j, r = f.k, f.j, f.rank
    u = np.einsum("kpa,tka->tkp", f.right, x.reshape(t, k, -1))      # (t, kk, q·j + jj)
    v = u.reshape(t, k * r, j).transpose(0, 2, 1)                     # P_mid: (t, jj, kk·r+q)
    z = np.einsum("jcb,tjb->tjc", f.left, v)                          # (t, jj, c)
    return output_from_blocks(z)


def output_from_blocks(z) -> np.ndarray:
    """``P_out``: block-major ``z`` ``(tokens, j, o)`` (as :func:`~sparsecim.sw.schedule.
    monarch.monarch_reference` and :meth:`MonarchSchedule.assemble` return it) to
    the layer output ``(tokens, o·j)``, element ``c·j + jj`` = ``z[:, jj, c]``. An index map
    only: on the macro it is the read-out address order."""
    z = np.asarray(z)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (tokens, j, o), not {z.shape}")
    return z.transpose(0, 2, 1).reshape(z.shape[0], -1)


def relative_error(w, f: MonarchFactors) -> float:
    """``‖w − M‖_F / ‖w‖_F`` (0 for ``w = 0`` equal to ``M``)."""
    w = np.asarray(w, dtype=np.float64)
    diff = np.linalg.norm(w - monarch_dense(f))
    norm = np.linalg.norm(w)
    return float(diff / norm) if norm else float(diff)


def random_monarch(m: int, n: int, *, k: int, j: int, rank: int = 1, seed: int = 0,
                   integer: int | None = None) -> MonarchFactors:
    """Random factors of an ``(m, n)`` Monarch matrix: standard normal, or integers in
    ``[-integer, integer]`` when ``integer`` is given (for exact checks).

    Raises
    ------
    ValueError
        As :func:`monarch_project` for the shapes.
    """
    m, n = _positive_int("m", m), _positive_int("n", n)
    k, j, rank = _check_blocks(m, n, k, j, rank)
    rng = np.random.default_rng(seed)
    shapes = ((k, rank * j, n // k), (j, m // j, k * rank))
    if integer is None:
        right, left = (rng.standard_normal(s) for s in shapes)
    else:
        right, left = (rng.integers(-integer, integer + 1, s) for s in shapes)
    return MonarchFactors(right, left, rank)


def schedule_factors(f: MonarchFactors) -> tuple[np.ndarray, np.ndarray]:
    """``(r_blocks, l_blocks)`` for :func:`~sparsecim.sw.schedule.monarch.schedule_monarch`:
    ``(b, s, s)`` and ``(s, s, b)`` with ``b = k``, ``s = i = j = o`` (module docstring).
    The arrays are ``f.right`` and ``f.left`` themselves (quantize them to integers first).

    Raises
    ------
    ValueError
        If ``f`` is not of that layer's form (rank 1 and ``i = j = o``).
    """
    j, r = f.j, f.rank
    i, o = f.right.shape[2], f.left.shape[1]
    if r != 1 or not i == j == o:
        raise ValueError(f"schedule_monarch takes rank 1 with i = j = o, not rank {r}, "
                         f"i={i}, j={j}, o={o}")
    return f.right, f.left
