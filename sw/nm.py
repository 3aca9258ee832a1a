"""N:M structured sparsity along the input dimension, per output channel.

A weight matrix is shaped ``(out_features, in_features)`` like a PyTorch ``Linear``. Each
row (output channel) is cut into groups of ``m`` consecutive inputs: group ``g`` of row ``o``
is ``W[o, g*m:(g+1)*m]``. Pattern ``n:m`` keeps at most ``n`` non-zero weights per group, the
mask being chosen independently for every row (this is what per-cell selection in the macro
runs in one pass, see DESIGN §3). When ``in_features`` is not a multiple of ``m`` the last
group is partial: its ``r < m`` inputs are conceptually followed by ``m - r`` zero padding
inputs, so it keeps at most ``min(n, r)`` weights.

Everything here is a pure function over numpy arrays: scoring (magnitude, Wanda), masking,
checking, and the compressed ``values`` + ``positions`` form the hardware stores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..hw.pattern import Pattern, _check_count, _is_int

__all__ = [
    "NMPattern",
    "NMPatternError",
    "NMCompressed",
    "nm_mask",
    "wanda_scores",
    "activation_norms",
    "prune_by_score",
    "prune_magnitude",
    "prune_wanda",
    "check_nm",
    "compress",
    "decompress",
    "memory_bits",
]

# The pattern type is the contract layer's; ``NMPattern`` is its name in this module.
NMPattern = Pattern


class NMPatternError(ValueError):
    """A group of a weight matrix has more non-zero weights than its pattern allows.

    Attributes
    ----------
    row, group : int
        The offending output channel and group index within it.
    first_input, last_input : int
        Indices of the group's first input, ``group * pattern.m``, and last real input (the
        last group may be partial).
    count : int
        Non-zero weights in the group.
    allowed : int
        Non-zero weights the group may hold, ``min(pattern.n, group size)``.
    pattern : NMPattern
    name : str
        How the matrix is called in the message (``"weights"``).
    """

    def __init__(self, row: int, group: int, first_input: int, count: int, allowed: int,
                 pattern: NMPattern, name: str = "weights", last_input: int | None = None):
        self.row, self.group, self.first_input = row, group, first_input
        self.count, self.allowed, self.pattern, self.name = count, allowed, pattern, name
        self.last_input = first_input + pattern.m - 1 if last_input is None else last_input
        super().__init__(f"{name} row {row}, inputs {first_input}..{self.last_input} "
                         f"(group {group}) have {count} non-zero weights; pattern {pattern} "
                         f"allows at most {allowed}")

    def __reduce__(self):
        # The default would call __init__ with the message alone; keep the attributes.
        return (type(self), (self.row, self.group, self.first_input, self.count, self.allowed,
                             self.pattern, self.name, self.last_input))


def _check_pattern(pattern) -> NMPattern:
    if not isinstance(pattern, NMPattern):
        raise ValueError(f"pattern must be an NMPattern, not {pattern!r}")
    return pattern


def _check_real(name: str, a, ndim: int) -> np.ndarray:
    """``a`` as an array of ``ndim`` dimensions, integer or floating dtype, finite values."""
    arr = np.asarray(a)
    if arr.ndim != ndim:
        what = "a 2-D matrix" if ndim == 2 else f"a {ndim}-D array"
        raise ValueError(f"{name} must be {what}, not an array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must have an integer or floating-point dtype, not {arr.dtype}")
    # all() first: argwhere over a large matrix costs more than the check itself.
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name}{list(index)} must be finite, not {float(arr[index])}")
    return arr


def _grouped(arr: np.ndarray, m: int, fill) -> np.ndarray:
    """``(rows, groups, m)`` view or copy of a 2-D array, a partial last group padded."""
    rows, cols = arr.shape
    pad = -cols % m
    if pad:
        arr = np.concatenate([arr, np.full((rows, pad), fill, dtype=arr.dtype)], axis=1)
    return arr.reshape(rows, (cols + pad) // m, m)


# Up to this group size nm_mask ranks by pairwise comparison (m·(m-1) passes over contiguous
# planes, ~8x faster than argsort at m = 4); beyond it a per-group argsort is faster. Both
# give the same mask.
_RANK_MAX_M = 16


def _top_n_by_rank(grouped: np.ndarray, n: int) -> np.ndarray:
    """Mask of the ``n`` highest of each ``(..., m)`` group, ties to the lower index."""
    m = grouped.shape[-1]
    planes = np.moveaxis(grouped, -1, 0).copy()  # (m, rows, groups): contiguous per position
    mask = np.empty(planes.shape, dtype=bool)
    for j in range(m):
        # Entries that beat j: higher scores, and equal scores at lower indices.
        rank = np.zeros(planes.shape[1:], dtype=np.uint8)
        for k in range(m):
            if k != j:
                rank += planes[k] >= planes[j] if k < j else planes[k] > planes[j]
        np.less(rank, n, out=mask[j])
    return np.moveaxis(mask, 0, -1)


def nm_mask(scores: np.ndarray, pattern: NMPattern) -> np.ndarray:
    """Mask keeping the ``n`` highest scores of every group of every row.

    Parameters
    ----------
    scores : array_like
        ``(out_features, in_features)``, integer or floating, finite. Higher means more
        important; signs are not removed (pass ``|W|`` for magnitude).
    pattern : NMPattern

    Returns
    -------
    ndarray of bool
        Same shape as ``scores``: ``True`` for exactly ``n`` entries per full group and
        ``min(n, r)`` in a partial last group of ``r`` inputs. Among equal scores the lower
        input index is kept, so the mask is deterministic.

    Raises
    ------
    ValueError
        If ``scores`` is not a 2-D integer or floating-point matrix of finite values, or
        ``pattern`` is not an :class:`NMPattern`.
    """
    pattern = _check_pattern(pattern)
    scores = _check_real("scores", scores, 2)
    n, m = pattern.n, pattern.m
    rows, cols = scores.shape
    if pattern.is_dense:
        return np.ones(scores.shape, dtype=bool)
    # Padding sorts below every real score and, being at higher indices, loses ties too, so
    # a partial group of r inputs keeps min(n, r) real ones and only padding beyond that.
    if np.issubdtype(scores.dtype, np.floating):
        fill = -np.inf
    else:
        fill = np.iinfo(scores.dtype).min
    grouped = _grouped(scores, m, fill)
    if m <= _RANK_MAX_M:
        mask = _top_n_by_rank(grouped, n)
    else:
        # A stable ascending sort of each group reversed puts, among equal scores, the lower
        # original index last; the last n of that order are the n highest with ties to the
        # lower index. (Negating the scores would overflow unsigned and minimum integers.)
        order = np.argsort(grouped[..., ::-1], axis=-1, kind="stable")
        mask = np.zeros(grouped.shape, dtype=bool)
        np.put_along_axis(mask, (m - 1) - order[..., m - n:], True, axis=-1)
    return np.ascontiguousarray(mask.reshape(rows, grouped.shape[1] * m)[:, :cols])


def wanda_scores(weights, act_norms) -> np.ndarray:
    """Wanda importance ``|W[o, i]| · ‖X[:, i]‖``: magnitude scaled by the input's activation norm.

    Parameters
    ----------
    weights : array_like
        ``(out_features, in_features)``, integer or floating, finite.
    act_norms : array_like
        ``(in_features,)``, integer or floating, finite and non-negative, e.g. from
        :func:`activation_norms`.

    Returns
    -------
    ndarray of float64
        ``(out_features, in_features)``.

    Raises
    ------
    ValueError
        If an operand has the wrong shape or dtype, a value is not finite, or a norm is
        negative, as ``"act_norms[3] must be non-negative, not -1.0"``.
    """
    weights = _check_real("weights", weights, 2)
    norms = _check_real("act_norms", act_norms, 1)
    if norms.shape != (weights.shape[1],):
        raise ValueError(f"act_norms must have shape ({weights.shape[1]},) to match weights "
                         f"{weights.shape}, not {norms.shape}")
    bad = np.flatnonzero(norms < 0)
    if bad.size:
        raise ValueError(f"act_norms[{bad[0]}] must be non-negative, not {norms[bad[0]]!s}")
    # Cast before abs: abs of the most negative integer overflows in its own dtype.
    return np.abs(weights.astype(np.float64)) * norms.astype(np.float64)[None, :]


def activation_norms(x, *, mean: bool = False) -> np.ndarray:
    """L2 norm of every input channel over the calibration tokens, as Wanda uses.

    Parameters
    ----------
    x : array_like
        ``(tokens, in_features)`` activations, integer or floating, finite, at least one token.
    mean : bool
        ``False``: ``sqrt(sum_t x[t, i]**2)`` (Wanda). ``True``: ``sqrt(mean_t x[t, i]**2)``,
        the RMS, which does not grow with the number of tokens. Either ranks the same way.

    Returns
    -------
    ndarray of float64
        ``(in_features,)``, non-negative.

    Raises
    ------
    ValueError
        If ``x`` is not a 2-D integer or floating-point matrix of finite values with at least
        one row, or ``mean`` is not a bool.
    """
    if not isinstance(mean, bool):
        raise ValueError(f"mean must be a bool, not {mean!r}")
    x = _check_real("x", x, 2)
    if x.shape[0] == 0:
        raise ValueError(f"x must have at least one token (row), not shape {x.shape}")
    squares = np.square(x.astype(np.float64))
    return np.sqrt(squares.mean(axis=0) if mean else squares.sum(axis=0))


def prune_by_score(weights, scores, pattern: NMPattern) -> np.ndarray:
    """Zero all weights but the ``n`` best-scored of every group (see :func:`nm_mask`).

    Parameters
    ----------
    weights : array_like
        ``(out_features, in_features)``, integer or floating, finite.
    scores : array_like
        Same shape as ``weights``, integer or floating, finite.
    pattern : NMPattern

    Returns
    -------
    ndarray
        A new array of the shape and dtype of ``weights`` that passes :func:`check_nm`. Kept
        weights that are already zero stay zero, so a group may end with fewer than ``n``.

    Raises
    ------
    ValueError
        If an operand is invalid (see :func:`nm_mask`) or the shapes differ.
    """
    pattern = _check_pattern(pattern)
    weights = _check_real("weights", weights, 2)
    scores = _check_real("scores", scores, 2)
    if scores.shape != weights.shape:
        raise ValueError(f"scores must have the shape of weights {weights.shape}, "
                         f"not {scores.shape}")
    mask = nm_mask(scores, pattern)
    # where, not multiply: w * False gives -0.0 for negative floats.
    return np.where(mask, weights, np.zeros((), dtype=weights.dtype))


def prune_magnitude(weights, pattern: NMPattern) -> np.ndarray:
    """:func:`prune_by_score` with ``|weights|`` as the score (exact for every dtype)."""
    weights = _check_real("weights", weights, 2)
    magnitude = np.abs(weights)
    if np.issubdtype(weights.dtype, np.signedinteger):
        # abs(-128) wraps to -128 in int8, whose bits read as unsigned are 128: exact.
        magnitude = magnitude.view(magnitude.dtype.str.replace("i", "u"))
    return prune_by_score(weights, magnitude, pattern)


def prune_wanda(weights, act_norms, pattern: NMPattern) -> np.ndarray:
    """:func:`prune_by_score` with :func:`wanda_scores` as the score (Sun et al., 2023)."""
    return prune_by_score(weights, wanda_scores(weights, act_norms), pattern)


def check_nm(weights, pattern: NMPattern, *, name: str = "weights") -> None:
    """Check that every group of every row has at most ``n`` non-zero weights.

    Parameters
    ----------
    weights : array_like
        ``(out_features, in_features)``, integer or floating, finite.
    pattern : NMPattern
    name : str
        How the matrix is called in error messages.

    Raises
    ------
    NMPatternError
        For the first offending group in row-major order (row, then group), as
        ``"weights row 3, inputs 8..11 (group 2) have 3 non-zero weights; pattern 2:4
        allows at most 2"``. It is a ``ValueError``.
    ValueError
        If ``weights`` is not a 2-D integer or floating-point matrix of finite values, or
        ``pattern`` is not an :class:`NMPattern`.
    """
    pattern = _check_pattern(pattern)
    weights = _check_real(name, weights, 2)
    if pattern.is_dense:
        return
    counts = _grouped(weights != 0, pattern.m, False).sum(axis=-1)
    # A partial group of r inputs cannot hold more than r non-zeros, so exceeding n is
    # exceeding min(n, r): one threshold serves every group.
    over = counts > pattern.n
    if over.any():
        row, group = (int(i) for i in np.argwhere(over)[0])
        first = group * pattern.m
        last = min(first + pattern.m, weights.shape[1]) - 1
        raise NMPatternError(row, group, first, int(counts[row, group]),
                             min(pattern.n, last - first + 1), pattern, name, last)


@dataclass(frozen=True)
class NMCompressed:
    """An N:M weight matrix as the hardware stores it: ``n`` values and positions per group.

    Every group of every row has exactly ``n`` slots. Slot ``j`` holds a value and its
    position (``0 .. m-1``) within the group; the positions of a group are distinct and
    strictly ascending. Unused slots hold the value 0 at the lowest positions not otherwise
    used. In a partial last group of ``r < m`` inputs, positions ``>= r`` may appear, always
    with the value 0: they address the zero padding inputs the hardware feeds there.

    Attributes
    ----------
    pattern : NMPattern
    in_features : int
        Inputs of the original matrix (the last group is partial if not a multiple of ``m``).
    values : ndarray
        ``(out_features, pattern.groups(in_features), n)``, the dtype of the weights.
    positions : ndarray of uint8
        Same shape as ``values``.

    Raises
    ------
    ValueError
        On construction, if the fields break any of the invariants above.
    """
    pattern: NMPattern
    in_features: int
    values: np.ndarray
    positions: np.ndarray

    def __post_init__(self):
        _check_pattern(self.pattern)
        object.__setattr__(self, "in_features", _check_count("in_features", self.in_features))
        object.__setattr__(self, "values", _check_real("values", self.values, 3))
        object.__setattr__(self, "positions", np.asarray(self.positions))
        self._check()

    @property
    def out_features(self) -> int:
        """Rows (output channels) of the original matrix."""
        return self.values.shape[0]

    def _check(self) -> None:
        n, m = self.pattern.n, self.pattern.m
        values, positions = self.values, self.positions
        groups = self.pattern.groups(self.in_features)
        if values.ndim != 3 or values.shape[1:] != (groups, n):
            raise ValueError(f"values must have shape (out_features, {groups}, {n}), "
                             f"not {values.shape}")
        if positions.shape != values.shape:
            raise ValueError(f"positions must have the shape of values {values.shape}, "
                             f"not {positions.shape}")
        if positions.dtype != np.uint8:
            raise ValueError(f"positions must have dtype uint8, not {positions.dtype}")
        if positions.size and int(positions.max()) >= m:
            index = tuple(int(i) for i in np.argwhere(positions >= m)[0])
            raise ValueError(f"positions{list(index)} must be below m={m}, "
                             f"not {positions[index]}")
        unordered = np.diff(positions.astype(np.int16), axis=-1) <= 0
        if unordered.any():
            o, g, _ = (int(i) for i in np.argwhere(unordered)[0])
            raise ValueError(f"positions[{o}, {g}] must be strictly ascending, "
                             f"not {positions[o, g].tolist()}")
        r = self.in_features - (groups - 1) * m
        if groups and r < m:
            last = (positions[:, -1] >= r) & (values[:, -1] != 0)
            if last.any():
                o, j = (int(i) for i in np.argwhere(last)[0])
                raise ValueError(f"values[{o}, {groups - 1}, {j}] at padding position "
                                 f"{positions[o, -1, j]} (group of {r} inputs) must be 0, "
                                 f"not {values[o, -1, j]!s}")


def compress(weights, pattern: NMPattern, *, name: str = "weights") -> NMCompressed:
    """Compress an N:M weight matrix to ``n`` values and positions per group.

    Non-zero weights keep their positions. A group with fewer than ``n`` non-zeros is filled
    with zero values at its lowest unused positions in ``0 .. m-1``; in a partial last group
    those may be padding positions ``>= r`` (see :class:`NMCompressed`). A dense pattern
    stores every weight.

    Parameters
    ----------
    weights : array_like
        ``(out_features, in_features)``, integer or floating, finite, obeying ``pattern``.
    pattern : NMPattern
        ``m`` at most 256, so that positions fit ``uint8``.
    name : str
        How the matrix is called in error messages.

    Returns
    -------
    NMCompressed
        ``decompress(compress(w, p))`` equals ``w`` (same shape, dtype and values).

    Raises
    ------
    NMPatternError
        If a group breaks the pattern (from :func:`check_nm`).
    ValueError
        If ``weights`` or ``pattern`` is invalid, or ``pattern.m > 256``.
    """
    pattern = _check_pattern(pattern)
    weights = _check_real(name, weights, 2)
    n, m = pattern.n, pattern.m
    if m > 256:
        raise ValueError(f"pattern.m must be at most 256 for uint8 positions, not {m}")
    grouped = _grouped(weights, m, 0)
    nonzero = grouped != 0
    if m <= 16 and not pattern.is_dense:
        slots = stored_slots(grouped, n, m, axis=-1)
        if slots is None:
            check_nm(weights, pattern, name=name)  # raises, naming the first bad group
        values, positions = (np.stack(part, axis=-1) for part in slots)
        return NMCompressed(pattern, weights.shape[1], values, positions)
    check_nm(weights, pattern, name=name)
    # Keep every non-zero (at most n) and the lowest n - count zeros, padding included:
    # exactly n slots per group, which np.nonzero lists in ascending position order.
    zero_rank = np.cumsum(~nonzero, axis=-1, dtype=np.int16)  # 1-based, among the zeros
    fill = n - nonzero.sum(axis=-1, keepdims=True)
    stored = nonzero | (zero_rank <= fill)
    positions = np.nonzero(stored.reshape(-1, m))[1].reshape(*grouped.shape[:2], n)
    values = np.take_along_axis(grouped, positions, axis=-1)
    return NMCompressed(pattern, weights.shape[1], values, positions.astype(np.uint8))


def stored_slots(grouped: np.ndarray, n: int, m: int, axis: int = -1):
    """The ``n`` slots :func:`compress` stores for every group of ``m`` weights laid along
    ``axis`` of ``grouped`` (``m <= 16``): every non-zero and the lowest unused positions,
    ascending. Each group's non-zero mask as an integer (bit ``p`` for position ``p``) picks
    its slots from a table: no per-element count, sort or search.

    Returns
    -------
    (list of ndarray, list of ndarray) or None
        Values and ``uint8`` positions of slot ``j`` for ``j < n``, each shaped like
        ``grouped`` without ``axis``; None if a group has more than ``n`` non-zeros.
    """
    planes = np.moveaxis(np.asarray(grouped), axis, 0)   # planes[p]: position p of every group
    code = np.zeros(planes.shape[1:], dtype=np.uint16 if m > 8 else np.uint8)
    for position in range(m):
        # A bool array viewed as bytes is its 0/1 mask: no cast of the whole plane.
        code |= (planes[position] != 0).view(np.uint8).astype(code.dtype, copy=False) \
            << code.dtype.type(position)
    if code.size and int(np.bitwise_count(code).max()) > n:
        return None
    positions, _ = _stored_positions(n, m)
    index = code.astype(np.intp)                     # converted once, for every slot's table
    slot_positions = [np.take(positions[:, j], index) for j in range(n)]
    return [_slot_values(planes, chosen, range(j, m - n + j + 1))
            for j, chosen in enumerate(slot_positions)], slot_positions


def _slot_values(planes: np.ndarray, chosen: np.ndarray, candidates) -> np.ndarray:
    """``planes[chosen]`` element by element, where ``chosen`` only takes the ``candidates``
    positions (slot j of n ascending distinct slots of m lies in ``j .. m-n+j``): each
    candidate plane masked where it is the chosen one, no index array per element. Integers
    through AND with an all-ones mask (a masked ``copyto`` was 20x slower)."""
    if planes.dtype.kind not in "iu":
        value = np.zeros(planes.shape[1:], dtype=planes.dtype)
        for position in candidates:
            value = np.where(chosen == position, planes[position], value)
        return value
    value = np.zeros(planes.shape[1:], dtype=planes.dtype)
    for position in candidates:
        ones = (chosen == position).view(np.uint8).astype(planes.dtype, copy=False)
        np.negative(ones, out=ones)                 # 1 -> all ones (two's complement)
        value |= planes[position] & ones
    return value


@functools.cache
def _stored_positions(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables by non-zero mask (row index ``code``: bit ``p`` set if position ``p`` is
    non-zero): the ``n`` positions :func:`compress` stores, ascending (every non-zero and the
    lowest unused positions), ``(2**m, n)`` ``uint8``; and whether the mask obeys the pattern
    (at most ``n`` non-zeros), ``(2**m,)``."""
    positions = np.zeros((2 ** m, n), dtype=np.uint8)
    valid = np.zeros(2 ** m, dtype=bool)
    for code in range(2 ** m):
        used = [p for p in range(m) if code >> p & 1]
        if len(used) <= n:
            free = [p for p in range(m) if not code >> p & 1]
            slots = sorted(used + free[:n - len(used)])
            positions[code] = slots
            valid[code] = True
    return positions, valid


def decompress(c: NMCompressed) -> np.ndarray:
    """Rebuild the ``(out_features, in_features)`` matrix of ``c``, in the dtype of its values.

    The exact inverse of :func:`compress` on matrices that obey the pattern.

    Raises
    ------
    ValueError
        If ``c`` is not an :class:`NMCompressed` or its arrays were modified so as to break
        its invariants.
    """
    if not isinstance(c, NMCompressed):
        raise ValueError(f"c must be an NMCompressed, not {type(c).__name__}")
    c._check()
    groups, m = c.values.shape[1], c.pattern.m
    grouped = np.zeros((c.out_features, groups, m), dtype=c.values.dtype)
    # Positions are distinct within a group, so no slot overwrites another.
    np.put_along_axis(grouped, c.positions.astype(np.intp), c.values, axis=-1)
    return grouped.reshape(c.out_features, groups * m)[:, :c.in_features].copy()


def memory_bits(out_features: int, in_features: int, pattern: NMPattern, *,
                value_bits: int = 8) -> dict:
    """Storage of a weight matrix in ``pattern``, in bits.

    Sparse patterns (``n < m``) store ``n`` slots for every group, a partial last group
    included, each with a value and a ``metadata_bits`` position. A dense pattern
    (``n == m``, any ``m``) stores the plain matrix: no metadata and no padding.

    Parameters
    ----------
    out_features, in_features : int
        The matrix shape; non-negative integers.
    pattern : NMPattern
    value_bits : int
        Bits per stored weight value, a positive integer.

    Returns
    -------
    dict
        ``{"values": out · groups · n · value_bits, "metadata": out · groups · n ·
        metadata_bits, "total": values + metadata, "dense": out · in · value_bits}``
        (``values = out · in · value_bits`` and ``metadata = 0`` for a dense pattern).

    Raises
    ------
    ValueError
        If a size is not a non-negative integer, ``value_bits`` not a positive integer, or
        ``pattern`` not an :class:`NMPattern`.
    """
    pattern = _check_pattern(pattern)
    out = _check_count("out_features", out_features)
    inputs = _check_count("in_features", in_features)
    if not _is_int(value_bits) or value_bits < 1:
        raise ValueError(f"value_bits must be a positive integer, not {value_bits!r}")
    value_bits = int(value_bits)
    dense = out * inputs * value_bits
    if pattern.is_dense:
        values, metadata = dense, 0
    else:
        slots = out * pattern.groups(inputs) * pattern.n
        values, metadata = slots * value_bits, slots * pattern.metadata_bits
    return {"values": values, "metadata": metadata, "total": values + metadata, "dense": dense}
