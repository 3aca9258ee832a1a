"""FLOW: one N:M pattern per decoder block, chosen from the block's outlier ratio and locality.

A reimplementation of the released FLOW solver (FLOW-open-project/FLOW, ``sw/solver/solver.py``,
MIT; arXiv 2504.14365), with the defects listed below fixed rather than inherited. The
pipeline, for ``L`` blocks:

1. **Scores.** For every block, the Wanda scores ``S = |W| · sqrt(mean_t x²)`` of all its
   linears (q, k, v, o, gate, up, down), each ``(out, in)`` matrix flattened row-major and the
   seven concatenated (:func:`sparsecim.sw.experiments.flow_eval.flow_statistics` builds them).
2. **Statistics** (:func:`block_outlier_stats`). An *outlier* is a score strictly above
   ``hyper_m`` × the block's mean score. The **outlier ratio** ``O`` is the fraction of the
   block's scores that are outliers, **in percent** (as OWL and the released code report it).
   The **locality** ``D`` is ``1 / mean |i − j|`` over all pairs of the flattened positions of
   the first ``subset_size`` outliers (in flattened order; the released code takes the first
   10,000), or 0 if there are fewer than two: clustered outliers give a large ``D``.
3. **Normalisation** (:func:`min_max_normalise`): ``Ô`` and ``D̂``, each min-max scaled across
   blocks to ``[0, 1]``. If every block has the same value, every normalised value is 0.5
   (the released code divides by zero there).
4. **Selection** (:func:`select_patterns`): an integer program picks one pattern ``N:M`` per
   block from the choice set (released: 2:4, 4:4, 2:8, 4:8, 8:8) minimising

   ``Σ_l |N_l − N_max·Ô_l| + 4·|M_l − M_max·(1 − D̂_l)|``

   (``N_max``, ``M_max``: the largest ``n`` and ``m`` in the choice set, 8 and 8 released),
   subject to the mean pattern sparsity ``mean_l (1 − N_l/M_l)`` equal to the target. Many
   outliers ask for a large ``N`` (few weights pruned); in the released formula, clustered
   outliers (large ``D̂``) ask for a *small* ``M``.

What differs from the released code, and why:

- **Infeasible targets are reported, never padded.** The released equality constraint has no
  solution unless the target × blocks is a sum of choice sparsities (a multiple of 0.25 for the
  released set); PuLP then leaves the variables unset and the code pads every missing block
  with 4:8, silently shifting the patterns of later blocks. Here the constraint may be relaxed
  to ``|mean − target| ≤ tolerance``, and an infeasible program raises :class:`FlowInfeasible`
  naming the target, the blocks and the nearest achievable mean sparsities.
- **Lamda is gone.** The released solver scales the min-max-normalised ratios and localities
  by ``Lamda`` and centres them, then (as they now fall outside ``[0, 1]``) min-max normalises
  them again, which undoes both: ``Lamda`` has no effect on the chosen patterns, so no such
  parameter is offered.
- **The direction of M is a choice.** The paper's figure has clustered outliers favouring a
  *larger* ``M``; the released formula, ``|M − 8·(1 − D̂)|``, does the opposite. The released
  formula is the default (``m_direction="released"``); ``m_direction="paper"`` uses
  ``|M − M_max·D̂|``.
- **First and last blocks.** The released flow keeps the first and the last block dense by
  overwriting the solver's choice for them *after* solving, so the model's mean sparsity
  ends below the target by ``(s_first + s_last) / L``. Here (``force_dense_ends=True``) they
  are fixed dense *inside* the program, so the mean over all ``L`` blocks, dense ends
  included, meets the target and the other blocks are pruned harder to make up for them.
  ``force_dense_ends="after_solve"`` reproduces the released order (the plan then reports the
  lower mean it reaches); ``False`` leaves every block free.
- **Choice set and weighting.** Any set of valid :class:`~sparsecim.sw.nm.NMPattern` can be
  offered (e.g. adding 1:2, 1:4 and 1:8, which the macro also runs), and the mean may be
  weighted per block (e.g. by parameter count) instead of one vote per block.

The program is solved exactly with scipy's :func:`scipy.optimize.milp` (HiGHS): ``blocks ×
choices`` binaries, one per block summing to one; each absolute value in the objective is a
constant for a given (block, choice), so the objective is linear.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .nm import NMPattern

__all__ = [
    "DEFAULT_HYPER_M",
    "DEFAULT_SUBSET_SIZE",
    "OWL_HYPER_M",
    "RELEASED_CHOICES",
    "FlowInfeasible",
    "FlowPlan",
    "OutlierStats",
    "block_outlier_stats",
    "mean_pairwise_distance",
    "min_max_normalise",
    "pattern_costs",
    "select_patterns",
]

#: Outlier threshold (× mean score) of the released FLOW solver (``--Hyper_m`` default 0.5).
DEFAULT_HYPER_M = 0.5
#: The threshold OWL's published LLaMA scripts use (``--Hyper_m 5``), for comparison.
OWL_HYPER_M = 5.0
#: Outliers whose pairwise distances give the locality (the released ``subset_size``).
DEFAULT_SUBSET_SIZE = 10_000
#: The released choice set: N in {2, 4, 8}, M in {4, 8}, N <= M.
RELEASED_CHOICES = (NMPattern(2, 4), NMPattern(4, 4), NMPattern(2, 8), NMPattern(4, 8),
                    NMPattern(8, 8))

_N_WEIGHT, _M_WEIGHT = 1, 4          # the released alpha and beta
_DIRECTIONS = ("released", "paper")
_ENDS = (True, False, "after_solve")
# Slack on the sparsity bounds for floating-point rounding of target × weights.
_EPS = 1e-9


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_vector(name: str, values, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, not an array of shape "
                         f"{arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be real numbers, not dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        index = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{index}] must be finite, not {arr[index]}")
    if length is not None and arr.size != length:
        raise ValueError(f"{name} must have one value per block ({length}), not {arr.size}")
    return arr


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class OutlierStats:
    """Outlier statistics of one block's scores (see :func:`block_outlier_stats`).

    Attributes
    ----------
    ratio : float
        Outliers as a **percentage** of the block's scores, ``100 · count / size``.
    locality : float
        ``1 / mean |i − j|`` over pairs of the first ``used`` outliers' flattened positions;
        0.0 if fewer than two outliers.
    count : int
        Scores strictly above ``threshold``.
    used : int
        Outliers the locality was computed from, ``min(count, subset_size)``.
    size : int
        Scores in the block.
    mean_score : float
        Mean of the block's scores.
    threshold : float
        ``hyper_m × mean_score``.
    """

    ratio: float
    locality: float
    count: int
    used: int
    size: int
    mean_score: float
    threshold: float


def mean_pairwise_distance(positions) -> float:
    """Exact mean of ``|p_i − p_j|`` over all unordered pairs ``i < j`` of ``positions``.

    Sorting makes it ``Σ_k p_(k) · (2k − n + 1) / (n(n − 1)/2)`` with ``p_(k)`` the ``k``-th
    smallest (0-based): O(n log n) time, O(n) memory, no pair matrix. Integer positions are
    summed in Python integers, so the numerator is exact.

    Parameters
    ----------
    positions : array_like
        1-D integer or real positions, at least two.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``positions`` is not 1-D real and finite or has fewer than two entries.
    """
    arr = _check_vector("positions", positions)
    if arr.size < 2:
        raise ValueError(f"positions must hold at least two values, not {arr.size}")
    raw = np.asarray(positions)
    n = arr.size
    coeff = 2 * np.arange(n, dtype=np.int64) - (n - 1)
    pairs = n * (n - 1) // 2
    if np.issubdtype(raw.dtype, np.integer):
        ordered = np.sort(raw.astype(np.int64))
        # Python ints: exact whatever the magnitudes.
        total = int(np.dot(ordered.astype(object), coeff.astype(object)))
        return float(Fraction(total, pairs))
    ordered = np.sort(arr)
    return float(np.dot(ordered, coeff.astype(np.float64)) / pairs)


def block_outlier_stats(scores, hyper_m: float, *, subset_size: int = DEFAULT_SUBSET_SIZE
                        ) -> OutlierStats:
    """Outlier ratio and locality of one block's scores, as the released FLOW solver.

    Parameters
    ----------
    scores : array_like
        The block's scores, any shape; flattened in C order (positions are indices into the
        flattened array).
    hyper_m : float
        Outlier threshold as a multiple of the mean score, positive (``Hyper_m``;
        :data:`DEFAULT_HYPER_M` is the released solver's default).
    subset_size : int
        The locality uses the first ``subset_size`` outliers in flattened order (positive).

    Returns
    -------
    OutlierStats
        ``ratio`` in percent; ``locality`` as described there.

    Raises
    ------
    ValueError
        If ``scores`` is empty, not real or not finite, ``hyper_m`` is not a positive finite
        number, or ``subset_size`` is not a positive integer.
    """
    arr = np.asarray(scores)
    if arr.size == 0:
        raise ValueError("scores must be non-empty, not an array of shape "
                         f"{arr.shape}")
    flat = _check_vector("scores", arr.reshape(-1))
    if not _is_real(hyper_m) or not np.isfinite(hyper_m) or hyper_m <= 0:
        raise ValueError(f"hyper_m must be a positive finite number, not {hyper_m!r}")
    if not _is_int(subset_size) or subset_size < 1:
        raise ValueError(f"subset_size must be a positive integer, not {subset_size!r}")
    mean = float(flat.mean())
    threshold = float(hyper_m) * mean
    positions = np.flatnonzero(flat > threshold)
    count = int(positions.size)
    used = positions[:subset_size]
    locality = 1.0 / mean_pairwise_distance(used) if used.size >= 2 else 0.0
    return OutlierStats(ratio=100.0 * count / flat.size, locality=float(locality), count=count,
                        used=int(used.size), size=int(flat.size), mean_score=mean,
                        threshold=threshold)


def min_max_normalise(values) -> np.ndarray:
    """``(v − min) / (max − min)`` across blocks, into ``[0, 1]``.

    If every value is equal (including a single block) there is nothing to tell the blocks
    apart and every normalised value is 0.5, the middle of the range (the released code
    divides by zero).

    Raises
    ------
    ValueError
        If ``values`` is not a non-empty 1-D sequence of finite real numbers.
    """
    arr = _check_vector("values", values)
    low, high = arr.min(), arr.max()
    if high == low:
        return np.full(arr.shape, 0.5)
    return (arr - low) / (high - low)


# --------------------------------------------------------------------------------------------
# Selection


class FlowInfeasible(ValueError):
    """No choice of patterns meets the sparsity target; nothing was padded or guessed.

    Attributes
    ----------
    target, tolerance : float
    blocks : int
    below, above : float or None
        The nearest achievable mean sparsities below and above the target band, ``None`` if
        there is none on that side.
    """

    def __init__(self, message: str, *, target: float, tolerance: float, blocks: int,
                 below: float | None, above: float | None):
        super().__init__(message)
        self.target, self.tolerance, self.blocks = target, tolerance, blocks
        self.below, self.above = below, above


@dataclass(frozen=True)
class FlowPlan:
    """The patterns FLOW chose and what the program saw (JSON-friendly fields).

    Attributes
    ----------
    patterns : list of NMPattern
        One per block. Forced blocks get ``NMPattern(1, 1)`` (dense).
    mean_sparsity : float
        Mean of the blocks' pattern sparsities ``1 − n/m``, one vote per block.
    weighted_sparsity : float or None
        The weighted mean the constraint fixed, if ``weights`` were given.
    target, tolerance : float
    objective : float
        The program's optimum: total cost of the choices it made (with
        ``force_dense_ends="after_solve"``, including the ends' choices before they were
        overwritten).
    costs : list of float or None
        Each block's cost in the program; ``None`` for blocks fixed dense inside it.
    ratio_norm, locality_norm : list of float
        ``Ô`` and ``D̂`` per block.
    forced : list of int
        Blocks kept dense by ``force_dense_ends``.
    force_dense_ends : bool or str
    m_direction : str
    choices : list of NMPattern
    """

    patterns: list[NMPattern]
    mean_sparsity: float
    weighted_sparsity: float | None
    target: float
    tolerance: float
    objective: float
    costs: list[float | None]
    ratio_norm: list[float]
    locality_norm: list[float]
    forced: list[int]
    force_dense_ends: bool | str
    m_direction: str
    choices: list[NMPattern]


def _check_choices(choices) -> list[NMPattern]:
    if isinstance(choices, (str, NMPattern)) or not isinstance(choices, Sequence) \
            or len(choices) == 0:
        raise ValueError(f"choices must be a non-empty sequence of NMPattern, not {choices!r}")
    out = []
    for index, choice in enumerate(choices):
        if not isinstance(choice, NMPattern):
            raise ValueError(f"choices[{index}] must be an NMPattern, not {choice!r}")
        if choice in out:
            raise ValueError(f"choices[{index}] must not repeat an earlier choice, not "
                             f"{choice}")
        out.append(choice)
    return out


def pattern_costs(ratio_norm, locality_norm, choices: Sequence[NMPattern] = RELEASED_CHOICES,
                  *, m_direction: str = "released") -> np.ndarray:
    """The objective's constant cost of every (block, choice).

    ``cost[l, c] = |n_c − N_max·Ô_l| + 4·|m_c − M_max·(1 − D̂_l)|`` (``m_direction=
    "released"``) or ``... + 4·|m_c − M_max·D̂_l|`` (``"paper"``), with ``N_max`` and
    ``M_max`` the largest ``n`` and ``m`` among ``choices``.

    Parameters
    ----------
    ratio_norm, locality_norm : array_like
        ``Ô`` and ``D̂``, one per block, in ``[0, 1]``.
    choices : sequence of NMPattern
    m_direction : {"released", "paper"}

    Returns
    -------
    numpy.ndarray
        ``(blocks, len(choices))`` float64.

    Raises
    ------
    ValueError
        If the inputs are not equal-length finite vectors with values in ``[0, 1]``, the
        choices are invalid, or ``m_direction`` is unknown.
    """
    o = _check_vector("ratio_norm", ratio_norm)
    d = _check_vector("locality_norm", locality_norm, len(o))
    for name, arr in (("ratio_norm", o), ("locality_norm", d)):
        bad = np.flatnonzero((arr < 0) | (arr > 1))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] must be in [0, 1], not {arr[bad[0]]}")
    choices = _check_choices(choices)
    if m_direction not in _DIRECTIONS:
        raise ValueError(f"m_direction must be 'released' or 'paper', not {m_direction!r}")
    n = np.array([c.n for c in choices], dtype=np.float64)
    m = np.array([c.m for c in choices], dtype=np.float64)
    m_goal = d if m_direction == "paper" else 1 - d
    return (_N_WEIGHT * np.abs(n[None, :] - n.max() * o[:, None])
            + _M_WEIGHT * np.abs(m[None, :] - m.max() * m_goal[:, None]))


def _solve(costs: np.ndarray, coeff: np.ndarray, low: float, high: float,
           objective: str = "cost") -> np.ndarray | None:
    """One choice index per row of ``costs`` with ``low <= Σ coeff[l, c] <= high``.

    ``objective``: ``"cost"`` minimises the costs; ``"max"`` / ``"min"`` maximise / minimise
    the constrained sum itself (to find the achievable neighbours). ``None`` if infeasible.
    """
    blocks, width = costs.shape
    if objective == "cost":
        c = costs.ravel()
    else:
        c = (-1.0 if objective == "max" else 1.0) * coeff.ravel()
    one_hot = np.kron(np.eye(blocks), np.ones((1, width)))
    constraints = [LinearConstraint(one_hot, 1, 1),
                   LinearConstraint(coeff.reshape(1, -1), low, high)]
    result = milp(c, constraints=constraints, integrality=np.ones(c.size),
                  bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0})
    if result.status != 0 or result.x is None:
        return None
    return np.argmax(result.x.reshape(blocks, width), axis=1)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _check_options(target, tolerance, choices, m_direction, force_dense_ends):
    """:func:`select_patterns`'s scalar arguments checked: ``(target, tolerance, choices)``."""
    if not _is_real(target) or not 0 <= target < 1:
        raise ValueError(f"target must be a number in [0, 1), not {target!r}")
    if not _is_real(tolerance) or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative finite number, not {tolerance!r}")
    choices = _check_choices(choices)
    if m_direction not in _DIRECTIONS:
        raise ValueError(f"m_direction must be 'released' or 'paper', not {m_direction!r}")
    if not any(force_dense_ends is e for e in _ENDS[:2]) and force_dense_ends != _ENDS[2]:
        raise ValueError(f"force_dense_ends must be True, False or 'after_solve', not "
                         f"{force_dense_ends!r}")
    return float(target), float(tolerance), choices


def _check_weights(weights, blocks: int) -> np.ndarray:
    """Per-block weights (ones if ``weights`` is None), each positive."""
    if weights is None:
        return np.ones(blocks)
    w = _check_vector("weights", weights, blocks)
    bad = np.flatnonzero(w <= 0)
    if bad.size:
        raise ValueError(f"weights[{bad[0]}] must be positive, not {w[bad[0]]}")
    return w


@dataclass(frozen=True)
class _Program:
    """FLOW's integer program over the free blocks: ``costs`` (free blocks × choices),
    ``coeff`` (each choice's share of the mean sparsity) and the band ``[low, high]`` the
    sum must reach."""
    costs: np.ndarray
    coeff: np.ndarray
    low: float
    high: float

    def reached(self, choice) -> float | None:
        """The mean sparsity of one choice index per free block (None for None)."""
        return None if choice is None else float(
            self.coeff[np.arange(len(self.coeff)), choice].sum())

    def solve(self) -> np.ndarray | None:
        """The cheapest choices within the band, or None."""
        if not len(self.costs):
            return np.zeros(0, dtype=int) if self.low <= 0.0 <= self.high else None
        chosen = _solve(self.costs, self.coeff, self.low, self.high)
        # HiGHS works to a feasibility tolerance: keep only what the contract promises.
        if chosen is not None and not self.low <= self.reached(chosen) <= self.high:
            return None
        return chosen

    def nearest(self) -> tuple[float | None, float | None]:
        """The achievable means nearest the band: ``(below, above)``, None where none is."""
        if not len(self.costs):
            return 0.0, None  # every block forced dense: mean 0, below the band
        return (self.reached(_solve(self.costs, self.coeff, -np.inf, self.high, "max")),
                self.reached(_solve(self.costs, self.coeff, self.low, np.inf, "min")))


def _infeasible(program: _Program, *, target: float, tolerance: float, weighted: bool,
                blocks: int, forced: list, choices) -> FlowInfeasible:
    """The error of a target no assignment reaches, naming the nearest achievable means."""
    below, above = program.nearest()
    what = "weighted mean" if weighted else "mean"
    band = _fmt(target) + (f" ± {_fmt(tolerance)}" if tolerance else "")
    near = ", ".join(f"{_fmt(v)} {side}" for v, side in ((below, "below"), (above, "above"))
                     if v is not None) or "none"
    where = f"{blocks} blocks"
    if forced:
        where += f" (blocks {' and '.join(str(b) for b in forced)} kept dense)"
    return FlowInfeasible(
        f"target must be a {what} sparsity that {where} can reach with "
        f"{', '.join(str(c) for c in choices)}, not {band}; nearest achievable: {near}",
        target=target, tolerance=tolerance, blocks=blocks, below=below, above=above)


def select_patterns(ratios, localities, target: float, *,
                    choices: Sequence[NMPattern] = RELEASED_CHOICES, tolerance: float = 0.0,
                    weights=None, force_dense_ends: bool | str = True,
                    m_direction: str = "released") -> FlowPlan:
    """Choose one N:M pattern per block by FLOW's integer program (see the module notes).

    Parameters
    ----------
    ratios, localities : array_like
        Per block, the outlier ratio ``O`` and locality ``D`` (:class:`OutlierStats`); min-max
        normalised here (:func:`min_max_normalise`), so their units do not matter.
    target : float
        Mean pattern sparsity to reach, in ``[0, 1)``.
    choices : sequence of NMPattern
        Candidate patterns (default :data:`RELEASED_CHOICES`), without repeats.
    tolerance : float
        Accept ``|mean − target| <= tolerance`` (0: equality; a 1e-9 slack absorbs floating
        rounding).
    weights : array_like, optional
        Positive weight per block (e.g. parameter count): the constraint is then on
        ``Σ w_l s_l / Σ w_l`` instead of the plain mean.
    force_dense_ends : bool or "after_solve"
        ``True``: the first and last blocks are fixed dense inside the program and count in
        the mean (which therefore meets the target). ``"after_solve"``: the released order,
        every block is free in the program and the ends are then overwritten dense (the mean
        falls below the target; :attr:`FlowPlan.mean_sparsity` says by how much). ``False``:
        every block free.
    m_direction : {"released", "paper"}
        Sign of the M term: ``"released"`` targets ``M_max·(1 − D̂)`` (clustered outliers →
        small M, the released code), ``"paper"`` targets ``M_max·D̂`` (clustered → large M,
        the paper's figure).

    Returns
    -------
    FlowPlan

    Raises
    ------
    FlowInfeasible
        If no assignment reaches the target within the tolerance; the message names the
        target, the number of blocks (and forced ones) and the nearest achievable means.
    ValueError
        If an argument is invalid, e.g. ``"target must be a number in [0, 1), not 1.5"``.
    """
    o = _check_vector("ratios", ratios)
    d = _check_vector("localities", localities, len(o))
    blocks = len(o)
    target, tolerance, choices = _check_options(target, tolerance, choices, m_direction,
                                                force_dense_ends)
    w = _check_weights(weights, blocks)

    o_norm, d_norm = min_max_normalise(o), min_max_normalise(d)
    costs = pattern_costs(o_norm, d_norm, choices, m_direction=m_direction)
    forced = sorted({0, blocks - 1}) if force_dense_ends is True else []
    free = [b for b in range(blocks) if b not in forced]
    sparsity = np.array([c.sparsity for c in choices])
    total = float(w.sum())
    # Forced blocks are dense: they add weight to the mean but no sparsity.
    program = _Program(costs[free], w[free, None] * sparsity[None, :] / total,
                       target - tolerance - _EPS, target + tolerance + _EPS)
    chosen = program.solve()
    if chosen is None:
        raise _infeasible(program, target=target, tolerance=tolerance,
                          weighted=weights is not None, blocks=blocks, forced=forced,
                          choices=choices)

    patterns: list[NMPattern] = [NMPattern(1, 1)] * blocks
    block_costs: list[float | None] = [None] * blocks
    for index, block in enumerate(free):
        patterns[block] = choices[chosen[index]]
        block_costs[block] = float(costs[block, chosen[index]])
    objective = float(sum(c for c in block_costs if c is not None))
    if force_dense_ends == "after_solve":
        forced = sorted({0, blocks - 1})
        for block in forced:
            patterns[block] = NMPattern(1, 1)
    mean = float(Fraction(sum(Fraction(p.m - p.n, p.m) for p in patterns), blocks))
    weighted = None
    if weights is not None:
        weighted = float(np.dot(w, [p.sparsity for p in patterns]) / total)
    return FlowPlan(patterns=patterns, mean_sparsity=mean, weighted_sparsity=weighted,
                    target=target, tolerance=tolerance, objective=objective, costs=block_costs,
                    ratio_norm=[float(v) for v in o_norm],
                    locality_norm=[float(v) for v in d_norm], forced=forced,
                    force_dense_ends=force_dense_ends, m_direction=m_direction,
                    choices=list(choices))
