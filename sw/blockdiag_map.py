"""Mapping block-diagonal (Monarch) factors onto CIM arrays: Linear, latency- and
capacity-optimized, as data. The one placement model: the paper comparison
(:mod:`~sparsecim.sw.experiments.monarch_eval`) counts these placements, and the Monarch
scheduler (:mod:`~sparsecim.sw.schedule.monarch`) builds its traces from the same ones bound
to a macro (:func:`map_macro`, :func:`map_monarch`).

An array has ``rows × cols`` cells; rows are inputs (the reduction), columns outputs. A *pass*
applies one activation vector to an array's rows and reads its columns: one cycle of the simple
cycle model below. A block-diagonal matrix (:class:`BlockDiagonal`) has ``blocks`` blocks of
``block_out × block_in`` (``(out, in)``, as :class:`~sparsecim.sw.monarch.MonarchFactors`
stores them); block ``q`` maps inputs ``q·block_in ..`` to outputs ``q·block_out ..``.

Units. A block that fits the array is one *unit*; a larger block is cut into units of at most
``rows × cols`` (``ceil(block_in / rows) · ceil(block_out / cols)`` of them, edge units
smaller), whose partial sums are added at the output. Unit slots are ``unit_in × unit_out``
with ``unit_in = min(block_in, rows)``, ``unit_out = min(block_out, cols)``; an array has
``kr = rows // unit_in`` row slots and ``kc = cols // unit_out`` column slots.

Loads and sub-macros. Arrays come in *loads* of ``submacros`` (P) arrays: a macro of P
sub-macros holds one load at a time (one weight image), and one pass of the macro runs all P
at once, each on its own inputs. Array ``a`` is sub-macro ``a % P`` of load ``a // P``. The
paper's per-array model is ``P = 1`` (every array a load of its own); :func:`map_macro` binds
a factor to a :class:`~sparsecim.hw.config.MacroConfig` (its ``rows``, ``cols`` and
``submacros``). Units are dealt to sub-macros first, so consecutive units of a pass sit on
consecutive sub-macros (the Monarch scheduler's middle transpose writes consecutive blocks
with one MOVE). A factor may start at macro pass ``start`` (passes are numbered across loads;
:func:`map_monarch` starts the second factor where the first ends).

The three mappings (the paper's names in brackets):

- **Linear** (the dense baseline): the dense ``in × out`` matrix in tiles of ``rows × cols``,
  ``ceil(in / rows) · ceil(out / cols)`` arrays, one pass each, partial sums added.
- **Latency-optimized** [SparseMap]: ``g = min(kr, kc)`` units per array on its diagonal,
  slot ``(p, p)``, the rest zero padding; all units of an array fire in one pass (their rows
  and columns are disjoint, so their outputs come out separately). A load is one macro pass:
  unit ``n`` of a load (``P·g`` of them) is on sub-macro ``n % P``, slot ``p = n // P``.
- **Capacity-optimized** [DenseMap]: all ``kr · kc`` slots filled, units run one per pass: a
  macro pass runs one unit per sub-macro (unit ``n`` on sub-macro ``n % P`` in pass
  ``n // P``), and a load holds ``kr · kc`` passes. Pass ``e`` of a load puts its units on
  row slot ``w = e // kc``, diagonal ``d = e % kc``: slot ``(w, (w + d) mod kc)``, so each row
  slot is filled before the next and holds one unit of every diagonal. The pass of a unit
  drives only its row slot (every other input zero) and reads only its column slot. The
  diagonal offset rotates each unit's outputs by ``d`` column slots; :func:`slot_table` is the
  address remap that undoes it (which block's outputs a column slot of a row-slot pass
  carries), and each :class:`Placement` states its own.

Cycle model (per token; ``passes`` and ``cycles`` of :class:`BlockMapping`): a pass is one
cycle of its array; arrays run in parallel, so a matrix takes ``max`` passes over its arrays
(Linear and latency-optimized: 1; capacity-optimized: the units of the fullest array), and the
two factors of a Monarch layer run one after the other. ``passes`` (total array activations)
is the cycle count when a single physical array executes every placement in turn. (The
macro's own cycles come from the trace the scheduler builds from the bound placements.)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..hw.config import MacroConfig

__all__ = ["BlockDiagonal", "Placement", "Pass", "BlockMapping", "map_linear", "map_latency",
           "map_capacity", "map_blockdiag", "map_macro", "map_monarch", "next_start", "execute",
           "slot_table", "monarch_factor_shapes", "MAPPINGS"]

#: The mapping names of a block-diagonal (Monarch) layer, in report order (the densified
#: baseline first): the one spelling of them; the Monarch scheduler
#: (:data:`sparsecim.sw.schedule.monarch.MAPPINGS`) and the run's mapping registry
#: (``monarch-<name>`` in :data:`sparsecim.sw.pipeline.MAPPINGS`) take them from here.
MAPPINGS = ("linear", "latency", "capacity")


def _positive_int(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class BlockDiagonal:
    """The shape of a block-diagonal matrix: ``blocks`` blocks of ``block_out × block_in``.

    A dense ``out × in`` matrix is ``BlockDiagonal(1, in, out)``.

    Raises
    ------
    ValueError
        If a field is not a positive integer, as ``"block_in must be a positive integer, not
        0"``.
    """
    blocks: int
    block_in: int
    block_out: int

    def __post_init__(self):
        for name in ("blocks", "block_in", "block_out"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))

    @property
    def in_features(self) -> int:
        return self.blocks * self.block_in

    @property
    def out_features(self) -> int:
        return self.blocks * self.block_out

    @property
    def nonzeros(self) -> int:
        """Weights inside the blocks: ``blocks · block_in · block_out``."""
        return self.blocks * self.block_in * self.block_out


@dataclass(frozen=True)
class Placement:
    """Weights ``block[out0:out1, in0:in1]`` (block-local, ``(out, in)``) of block ``block``
    on array ``array``, input ``in0 + r`` on row ``row0 + r`` and output ``out0 + c`` on
    column ``col0 + c``.

    ``row_slot``, ``col_slot`` and ``diagonal`` locate it in the array's unit grid
    (``diagonal`` is the capacity mapping's offset ``d``; 0 otherwise). Its outputs are
    global outputs ``block·block_out + out0 ..``; its inputs global inputs
    ``block·block_in + in0 ..``. On a macro (module docstring) the array is sub-macro ``sub``
    of load ``load`` (``array = load·P + sub``), run by the factor's macro pass ``pass_``
    (counted from the factor's first pass; with ``P = 1`` and ``start = 0`` the array's pass
    for Linear and latency, the unit's for capacity).
    """
    block: int
    in0: int
    in1: int
    out0: int
    out1: int
    array: int
    row0: int
    col0: int
    row_slot: int = 0
    col_slot: int = 0
    diagonal: int = 0
    load: int = 0
    sub: int = 0
    pass_: int = 0


@dataclass(frozen=True)
class Pass:
    """One activation set on array ``array``: the placements (indices into
    :attr:`BlockMapping.placements`) whose inputs are driven and whose columns are read."""
    array: int
    placements: tuple[int, ...]


@dataclass(frozen=True)
class BlockMapping:
    """A block-diagonal matrix placed on arrays of ``rows × cols`` (module docstring).

    Attributes
    ----------
    kind : str
        ``"linear"``, ``"latency"`` or ``"capacity"``.
    matrix : BlockDiagonal
        What is mapped (for ``"linear"``, its dense ``in × out`` envelope is tiled).
    rows, cols : int
        Array geometry.
    placements : tuple of Placement
        Together they cover every weight inside the blocks (for ``"linear"``: of the whole
        dense matrix) exactly once; no two on one array overlap.
    passes : tuple of Pass
        Per token, in execution order; every placement is in exactly one pass.
    submacros : int
        Arrays per load (``P``; 1 for the per-array model).
    start : int
        The macro pass the mapping starts at (module docstring; 0 unless placed after
        another factor).
    """
    kind: str
    matrix: BlockDiagonal
    rows: int
    cols: int
    placements: tuple[Placement, ...]
    passes: tuple[Pass, ...]
    submacros: int = 1
    start: int = 0

    @property
    def arrays(self) -> int:
        """Arrays the mapping occupies."""
        return len({p.array for p in self.placements})

    @property
    def loads(self) -> int:
        """Loads (weight images of ``submacros`` arrays) the mapping occupies."""
        return len({p.load for p in self.placements})

    @property
    def macro_passes(self) -> int:
        """Passes of the macro per token (all sub-macros of a load at once)."""
        return 1 + max(p.pass_ for p in self.placements)

    @property
    def units_per_array(self) -> int:
        """Units an array holds (its slots in use when full): ``min(kr, kc)`` latency,
        ``kr · kc`` capacity, 1 Linear."""
        if self.kind == "linear":
            return 1
        _, _, kr, kc = _slots(self.matrix, self.rows, self.cols)
        return min(kr, kc) if self.kind == "latency" else kr * kc

    @property
    def cells(self) -> int:
        """Cells of those arrays."""
        return self.arrays * self.rows * self.cols

    @property
    def mapped_weights(self) -> int:
        """Non-zero weights mapped: the blocks' weights (also for ``"linear"``, whose zero
        weights outside the blocks are stored but do not count)."""
        return self.matrix.nonzeros

    @property
    def utilization(self) -> float:
        """``mapped_weights / cells``."""
        return self.mapped_weights / self.cells

    def weight_bytes(self, weight_bits: int = 8) -> int:
        """Array storage the mapping occupies, padding included, at ``weight_bits`` per cell."""
        return -(-self.cells * weight_bits // 8)

    @property
    def macs_per_token(self) -> int:
        """Useful multiply-accumulates per token: one per mapped weight."""
        return self.mapped_weights

    @property
    def passes_per_token(self) -> int:
        """Array activations per token (cycles if one array ran them all)."""
        return len(self.passes)

    @property
    def cycles_per_token(self) -> int:
        """Cycles per token with all arrays in parallel: the most passes of any array."""
        _, counts = np.unique([p.array for p in self.passes], return_counts=True)
        return int(counts.max())


@dataclass(frozen=True)
class _Grid:
    """The unit grid of a matrix on an array: units ``(block, in0, in1, out0, out1)`` in
    order, the slot size and ``kr × kc`` slots."""
    units: list
    unit_in: int
    unit_out: int
    kr: int
    kc: int


def _slots(bd: BlockDiagonal, rows: int, cols: int) -> tuple[int, int, int, int]:
    """``(unit_in, unit_out, kr, kc)``: the slot size and the slots of an array."""
    unit_in, unit_out = min(bd.block_in, rows), min(bd.block_out, cols)
    return unit_in, unit_out, rows // unit_in, cols // unit_out


def _grid(bd: BlockDiagonal, rows: int, cols: int) -> _Grid:
    unit_in, unit_out, kr, kc = _slots(bd, rows, cols)
    units = [(q, a0, min(a0 + unit_in, bd.block_in), c0, min(c0 + unit_out, bd.block_out))
             for q in range(bd.blocks)
             for a0 in range(0, bd.block_in, unit_in)
             for c0 in range(0, bd.block_out, unit_out)]
    return _Grid(units, unit_in, unit_out, kr, kc)


def _geometry(rows, cols, submacros=1, start=0):
    if not isinstance(start, numbers.Integral) or isinstance(start, bool) or start < 0:
        raise ValueError(f"start must be a non-negative integer, not {start!r}")
    return (_positive_int("rows", rows), _positive_int("cols", cols),
            _positive_int("submacros", submacros), int(start))


def _passes_by_array(placements) -> tuple[Pass, ...]:
    """One pass per array, its placements together, arrays in order (Linear, latency)."""
    by_array: dict[int, list[int]] = {}
    for n, p in enumerate(placements):
        by_array.setdefault(p.array, []).append(n)
    return tuple(Pass(a, tuple(ns)) for a, ns in sorted(by_array.items()))


def map_linear(bd: BlockDiagonal, rows: int, cols: int) -> BlockMapping:
    """The dense baseline: ``bd``'s whole ``in × out`` matrix (zeros outside the blocks
    included) in ``rows × cols`` tiles, one array and one pass per tile. Placements name the
    block each tile is part of only for ``bd.blocks == 1`` (a dense matrix); for more blocks
    they use block 0 with global ranges.

    Raises
    ------
    ValueError
        If ``rows`` or ``cols`` is not a positive integer.
    """
    rows, cols, _, _ = _geometry(rows, cols)
    dense = BlockDiagonal(1, bd.in_features, bd.out_features)
    placements = tuple(Placement(q, a0, a1, c0, c1, array=n, row0=0, col0=0, load=n, pass_=n)
                       for n, (q, a0, a1, c0, c1) in enumerate(_grid(dense, rows, cols).units))
    return BlockMapping("linear", bd, rows, cols, placements, _passes_by_array(placements))


def map_latency(bd: BlockDiagonal, rows: int, cols: int, *, submacros: int = 1,
                start: int = 0) -> BlockMapping:
    """Latency-optimized [SparseMap]: ``min(kr, kc)`` units on each array's diagonal, one pass
    per load, the load's units dealt to its ``submacros`` arrays first (module docstring).
    ``start`` is the first load.

    Raises
    ------
    ValueError
        If ``rows``, ``cols`` or ``submacros`` is not a positive integer, or ``start`` not a
        non-negative one.
    """
    rows, cols, P, start = _geometry(rows, cols, submacros, start)
    grid = _grid(bd, rows, cols)
    per_load = P * min(grid.kr, grid.kc)
    placements = []
    for n, (q, a0, a1, c0, c1) in enumerate(grid.units):
        pass_, e = divmod(n, per_load)
        sub, p = e % P, e // P
        load = start + pass_
        placements.append(Placement(q, a0, a1, c0, c1, array=load * P + sub,
                                    row0=p * grid.unit_in, col0=p * grid.unit_out, row_slot=p,
                                    col_slot=p, load=load, sub=sub, pass_=pass_))
    return BlockMapping("latency", bd, rows, cols, tuple(placements),
                        _passes_by_array(placements), P, start)


def map_capacity(bd: BlockDiagonal, rows: int, cols: int, *, submacros: int = 1,
                 start: int = 0) -> BlockMapping:
    """Capacity-optimized [DenseMap]: ``kr · kc`` units per array, row slot by row slot on
    rotated diagonals, one unit per sub-macro and pass (module docstring). ``start`` is the
    first macro pass (``kr · kc`` per load).

    Raises
    ------
    ValueError
        If ``rows``, ``cols`` or ``submacros`` is not a positive integer, or ``start`` not a
        non-negative one.
    """
    rows, cols, P, start = _geometry(rows, cols, submacros, start)
    grid = _grid(bd, rows, cols)
    placements = []
    for n, (q, a0, a1, c0, c1) in enumerate(grid.units):
        pass_, sub = divmod(n, P)
        load, e = divmod(start + pass_, grid.kr * grid.kc)
        w, d = divmod(e, grid.kc)
        cs = (w + d) % grid.kc
        placements.append(Placement(q, a0, a1, c0, c1, array=load * P + sub,
                                    row0=w * grid.unit_in, col0=cs * grid.unit_out,
                                    row_slot=w, col_slot=cs, diagonal=d, load=load, sub=sub,
                                    pass_=pass_))
    passes = tuple(Pass(pl.array, (n,)) for n, pl in enumerate(placements))
    return BlockMapping("capacity", bd, rows, cols, tuple(placements), passes, P, start)


def _check_kind(kind: str, kinds=MAPPINGS) -> None:
    if kind not in kinds:
        raise ValueError(f"kind must be one of {', '.join(map(repr, kinds))}, not {kind!r}")


def map_blockdiag(kind: str, bd: BlockDiagonal, rows: int, cols: int, *, submacros: int = 1,
                  start: int = 0) -> BlockMapping:
    """:func:`map_linear`, :func:`map_latency` or :func:`map_capacity` by name
    (``submacros`` and ``start`` for the last two only).

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`MAPPINGS`, as ``"kind must be one of 'linear',
        'latency', 'capacity', not 'dense'"``; or as the mapping.
    """
    _check_kind(kind)
    if kind == "linear":
        if (submacros, start) != (1, 0):
            raise ValueError("the linear mapping has one array per load and starts at 0, not "
                             f"submacros={submacros!r}, start={start!r}")
        return map_linear(bd, rows, cols)
    mapper = map_latency if kind == "latency" else map_capacity
    return mapper(bd, rows, cols, submacros=submacros, start=start)


def map_macro(kind: str, bd: BlockDiagonal, cfg: MacroConfig, *, start: int = 0
              ) -> BlockMapping:
    """``bd`` bound to the macro ``cfg``: :func:`map_latency` or :func:`map_capacity` on its
    ``rows × cols`` sub-macros, ``submacros`` arrays per load, from macro pass ``start``.
    (The macro's Linear mapping tiles the densified matrix with the GEMM tiler,
    :func:`~sparsecim.sw.mapping.map_dense`.)

    Raises
    ------
    ValueError
        If ``kind`` is not ``"latency"`` or ``"capacity"``, as ``"kind must be one of
        'latency', 'capacity', not 'linear'"``.
    """
    _check_kind(kind, MAPPINGS[1:])
    return map_blockdiag(kind, bd, cfg.rows, cfg.cols, submacros=cfg.submacros, start=start)


def next_start(first: BlockMapping, then: BlockDiagonal) -> int:
    """The macro pass where ``then`` starts when it follows ``first`` on the same macro: right
    after ``first``'s last pass when ``then`` has the same unit grid (a capacity load shared
    by both; for latency, the next load), else at the start of the load after ``first``'s
    last."""
    end = first.start + first.macro_passes
    if first.kind == "latency":
        return end
    *unit, _, _ = _slots(first.matrix, first.rows, first.cols)
    *after, kr, kc = _slots(then, first.rows, first.cols)
    if unit == after:
        return end
    return (1 + max(p.load for p in first.placements)) * kr * kc


def map_monarch(kind: str, right: BlockDiagonal, left: BlockDiagonal, cfg: MacroConfig
                ) -> tuple[BlockMapping, BlockMapping]:
    """Both factors of a Monarch layer bound to the macro ``cfg`` (:func:`map_macro`), the
    second from :func:`next_start` of the first: the placements the Monarch scheduler
    (:func:`~sparsecim.sw.schedule.monarch.schedule_monarch`) loads and runs.

    Raises
    ------
    ValueError
        As :func:`map_macro`.
    """
    first = map_macro(kind, right, cfg)
    return first, map_macro(kind, left, cfg, start=next_start(first, left))


def slot_table(mapping: BlockMapping) -> np.ndarray:
    """The address remap: ``table[array, row_slot, col_slot]`` is the index of the placement
    in that slot (``-1`` where empty). A pass that drives row slot ``rs`` of array ``a``
    finds the outputs of placement ``table[a, rs, cs]`` on column slot ``cs``; for the
    capacity mapping, the placement of block ``q`` on diagonal ``d`` sits at column slot
    ``(row_slot + d) mod kc``, which is where the remap reads it.

    Raises
    ------
    ValueError
        For a ``"linear"`` mapping (one tile per array, no slots).
    """
    if mapping.kind == "linear":
        raise ValueError("slot_table needs a latency or capacity mapping, not 'linear'")
    kr = 1 + max(p.row_slot for p in mapping.placements)
    kc = 1 + max(p.col_slot for p in mapping.placements)
    arrays = 1 + max(p.array for p in mapping.placements)
    table = np.full((arrays, kr, kc), -1, dtype=np.int64)
    for n, p in enumerate(mapping.placements):
        table[p.array, p.row_slot, p.col_slot] = n
    return table


def execute(mapping: BlockMapping, blocks, x) -> np.ndarray:
    """Run ``mapping`` pass by pass on arrays holding ``blocks``, in plain numpy.

    Each array's image is built from every placement on it; a pass drives the rows of its
    placements with their inputs (every other row zero), multiplies the *whole* array image,
    and adds each placement's columns into its outputs. Anything a mapping got wrong (overlap,
    a unit leaking into another's columns) shows up in the result.

    Parameters
    ----------
    mapping : BlockMapping
    blocks : array_like
        ``(blocks, block_out, block_in)`` weights of ``mapping.matrix``; a 2-D ``(out, in)``
        matrix for a one-block matrix.
    x : array_like
        ``(tokens, in_features)``.

    Returns
    -------
    ndarray
        ``(tokens, out_features)`` in the common dtype of ``blocks`` and ``x`` (exact for
        integers): the block-diagonal product.

    Raises
    ------
    ValueError
        If ``blocks`` or ``x`` has the wrong shape.
    """
    bd = mapping.matrix
    blocks = np.asarray(blocks)
    if blocks.ndim == 2:
        blocks = blocks[None]
    if blocks.shape != (bd.blocks, bd.block_out, bd.block_in):
        raise ValueError(f"blocks must have shape {(bd.blocks, bd.block_out, bd.block_in)}, "
                         f"not {blocks.shape}")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != bd.in_features:
        raise ValueError(f"x must have shape (tokens, {bd.in_features}), not {x.shape}")
    dtype = np.result_type(blocks, x)
    if mapping.kind == "linear":   # tile the dense matrix the blocks form
        dense = np.zeros((1, bd.out_features, bd.in_features), dtype=dtype)
        for q in range(bd.blocks):
            dense[0, q * bd.block_out:(q + 1) * bd.block_out,
                  q * bd.block_in:(q + 1) * bd.block_in] = blocks[q]
        blocks, bi, bo = dense, bd.in_features, bd.out_features
    else:
        bi, bo = bd.block_in, bd.block_out
    arrays = 1 + max(p.array for p in mapping.placements)
    images = np.zeros((arrays, mapping.rows, mapping.cols), dtype=dtype)
    for p in mapping.placements:
        images[p.array, p.row0:p.row0 + p.in1 - p.in0, p.col0:p.col0 + p.out1 - p.out0] = \
            blocks[p.block, p.out0:p.out1, p.in0:p.in1].T
    y = np.zeros((x.shape[0], bd.out_features), dtype=dtype)
    for ps in mapping.passes:
        act = np.zeros((x.shape[0], mapping.rows), dtype=dtype)
        for n in ps.placements:
            p = mapping.placements[n]
            act[:, p.row0:p.row0 + p.in1 - p.in0] = \
                x[:, p.block * bi + p.in0:p.block * bi + p.in1]
        out = act @ images[ps.array]
        for n in ps.placements:
            p = mapping.placements[n]
            y[:, p.block * bo + p.out0:p.block * bo + p.out1] += \
                out[:, p.col0:p.col0 + p.out1 - p.out0]
    return y


def monarch_factor_shapes(m: int, n: int, *, k: int, j: int,
                          rank: int = 1) -> tuple[BlockDiagonal, BlockDiagonal]:
    """The two factors of an ``(m, n)`` Monarch matrix with ``(k, j, rank)`` as block shapes:
    ``right`` = ``k`` blocks of ``(rank·j) × (n/k)``, ``left`` = ``j`` blocks of
    ``(m/j) × (k·rank)`` (see :mod:`~sparsecim.sw.monarch`).

    Raises
    ------
    ValueError
        If ``k`` does not divide ``n`` or ``j`` does not divide ``m``, as ``"k must divide
        the 1024 inputs, not 7"``.
    """
    m, n = _positive_int("m", m), _positive_int("n", n)
    k, j, rank = (_positive_int(name, v) for name, v in (("k", k), ("j", j), ("rank", rank)))
    if n % k:
        raise ValueError(f"k must divide the {n} inputs, not {k}")
    if m % j:
        raise ValueError(f"j must divide the {m} outputs, not {j}")
    return (BlockDiagonal(k, n // k, rank * j), BlockDiagonal(j, k * rank, m // j))
