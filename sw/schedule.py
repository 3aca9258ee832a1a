"""Scheduling: a layer's mapping and its operands become a command trace.

A layer is ``x · w`` with ``w`` dense or in an N:M pattern the macro supports (see
:mod:`~sparsecim.sw.mapping` for where each weight goes). Loop order (weights stationary, as a
CIM macro wants: a weight tile, once written, serves every token of a chunk)::

    CONFIG the layer's pattern (DENSE, or NM n m)
    for each chunk of T tokens:
        [LOAD_A all K tiles of the chunk, tile i at entries i·T ..]   (resident variant)
        for each N tile:
            for each K tile i:
                LOAD_W the tile's rows onto global rows 0 ..
                [LOAD_A K tile i of the chunk at entries 0 ..]        (streaming variant)
                COMPUTE T passes, accumulate = (i > 0)
            READ the chunk's T accumulators
    END

Two variants, and the one with fewer predicted cycles is chosen (ties go to resident):

- *resident*: the chunk's activations of every K tile are loaded once per chunk and stay in
  the buffer; ``T = min(tokens, acc_depth, act_depth // k_tiles)``; possible only when
  ``k_tiles <= act_depth``.
- *streaming*: a K tile's activations are reloaded next to its weights, for every N tile;
  ``T = min(tokens, acc_depth, act_depth)``, so larger chunks when K is deep.

Padding. A LOAD_W writes global rows 0 up to the last row the tile uses. Stale rows beyond
(from an earlier, taller tile, or never written since reset) meet activation elements that the
LOAD_A beats set to zero (each entry is zero beyond its tile's inputs, up to the last lane of
its last beat), or positions ``>= m`` that select 0, so they add exactly 0; edge tiles need no
zero weight rows. Columns beyond N compute padding values that :meth:`Schedule.assemble` drops
(the loaded rows carry zeros there).

What dominates the cycles. Every chunk rewrites the whole weight matrix, one row per cycle:
about ``chunks · K · n_tiles`` load cycles, against ``tokens · tiles`` compute cycles. A tile
is used for T passes after ``rows`` cycles of loading, so with few tokens (decode-like
workloads) LOAD_W dominates by about ``reduction / T`` and the macro is far from its peak of
``cells`` MACs per cycle (:func:`ideal_cycles`); compute dominates only when T approaches
``reduction``, which ``acc_depth`` bounds. An N:M tile covers ``m/n`` times the inputs of a
dense one with the same rows, so the weight loads, and with them the cycles of a decode-like
layer, shrink by up to ``m/n``; fixed per-command cycles and edge tiles keep it below.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import (
    COUNTERS,
    Command,
    Mode,
    Opcode,
    act_beat_layout,
    cycles,
    encode,
    pack_beats,
    pack_weight_rows,
)
from ..hw.trace import Step, Trace
from .mapping import TileMapping, map_nm
from .nm import NMPattern, compress
from .reference import check_int_matrix

__all__ = ["ReadBlock", "Schedule", "as_pattern", "schedule_dense", "schedule_layer",
           "predict_counters", "chain", "ideal_cycles"]

#: Beats packed per :func:`pack_beats` call, to bound its temporary bit arrays.
_PACK_BLOCK = 8192


@dataclass(frozen=True)
class ReadBlock:
    """One READ: ``count`` result beats holding tokens ``t0 .. t0+count-1`` for output
    columns ``n0 .. n1-1`` (lane ``c`` of a beat is column ``n0 + c``; lanes from ``n1 - n0``
    on are padding)."""
    t0: int
    count: int
    n0: int
    n1: int


@dataclass
class Schedule:
    """A trace plus what is needed to put its result beats back into ``(tokens, n)``.

    Attributes
    ----------
    trace : Trace
        CONFIG first, END last; every command legal; data beats exactly consumed.
    mapping : TileMapping
        The tiling the trace executes (its ``pattern`` is the layer's).
    tokens : int
        Rows of ``x``.
    reads : list of ReadBlock
        The READ commands in trace order; their beats tile ``(tokens, n)`` exactly once.
    resident : bool
        Which loop variant was chosen (see the module docstring).
    chunk : int
        Tokens per chunk, T (the last chunk may be smaller).
    """
    trace: Trace
    mapping: TileMapping
    tokens: int
    reads: list[ReadBlock]
    resident: bool
    chunk: int

    @property
    def n(self) -> int:
        """Output columns, N."""
        return self.mapping.n

    @property
    def result_beats(self) -> int:
        """Result beats the trace produces."""
        return sum(block.count for block in self.reads)

    def assemble(self, results: np.ndarray) -> np.ndarray:
        """Result beats, as from the golden model or the RTL, to the ``(tokens, n)`` output.

        Parameters
        ----------
        results : ndarray
            ``(result_beats, cols)`` integer lanes in trace order.

        Returns
        -------
        ndarray
            ``(tokens, n)`` ``int64``.

        Raises
        ------
        ValueError
            If ``results`` is not of shape ``(result_beats, cols)``.
        """
        results = np.asarray(results)
        expected = (self.result_beats, self.mapping.config.cols)
        if results.shape != expected:
            raise ValueError(f"results must have shape {expected}, not {results.shape}")
        out = np.zeros((self.tokens, self.n), dtype=np.int64)
        beat = 0
        for block in self.reads:
            out[block.t0:block.t0 + block.count, block.n0:block.n1] = \
                results[beat:beat + block.count, :block.n1 - block.n0]
            beat += block.count
        return out


def _pack(layout, values: np.ndarray) -> list[int]:
    """:func:`pack_beats` in blocks, so that huge operands do not need huge bit arrays."""
    words: list[int] = []
    for start in range(0, values.shape[0], _PACK_BLOCK):
        words += pack_beats(layout, values[start:start + _PACK_BLOCK])
    return words


def _pack_weights(cfg: MacroConfig, weights: np.ndarray, meta: np.ndarray) -> list[int]:
    """:func:`pack_weight_rows` in blocks."""
    words: list[int] = []
    for start in range(0, weights.shape[0], _PACK_BLOCK):
        end = start + _PACK_BLOCK
        words += pack_weight_rows(cfg, weights[start:end],
                                  meta[start:end] if cfg.meta_bits else None)
    return words


def _config_command(pattern: tuple[int, int]) -> Command:
    n, m = pattern
    return Command(Opcode.CONFIG, mode=Mode.DENSE if (n, m) == (1, 1) else Mode.NM, n=n, m=m)


def _weight_rows(cfg: MacroConfig, pattern: tuple[int, int], inputs: int) -> int:
    """Global weight rows 0 .. r-1 that hold a tile of ``inputs`` inputs: up to the last row
    of the last sub-macro of the last cluster used (clusters fill in order)."""
    n, m = pattern
    groups = -(-inputs // m)
    clusters = -(-groups // cfg.rows)
    return (clusters * n - 1) * cfg.rows + groups - (clusters - 1) * cfg.rows


def _plan(mapping: TileMapping, tokens: int, resident: bool, chunk: int):
    """Commands of one loop variant, each with a reference to its data (not yet packed).

    Data references: ``("w", n_tile, k_tile)`` for the tile's weight rows, ``("a", k_lo, k_hi,
    t0, count)`` for the activation entries of K tiles ``k_lo .. k_hi-1``, tokens ``t0 ..``.
    """
    cfg = mapping.config
    k_tiles = mapping.k_tiles
    ops = [(_config_command(mapping.pattern), None)]
    reads = []
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        if resident:
            ops.append((Command(Opcode.LOAD_A, addr=0, count=count * k_tiles),
                        ("a", 0, k_tiles, t0, count)))
        for nt in range(mapping.n_tiles):
            tiles = mapping.tiles[nt * k_tiles:(nt + 1) * k_tiles]
            for index, tile in enumerate(tiles):
                rows = _weight_rows(cfg, mapping.pattern, tile.rows)
                ops.append((Command(Opcode.LOAD_W, row=0, count=rows), ("w", nt, index, rows)))
                if resident:
                    act_addr = index * count
                else:
                    act_addr = 0
                    ops.append((Command(Opcode.LOAD_A, addr=0, count=count),
                                ("a", index, index + 1, t0, count)))
                ops.append((Command(Opcode.COMPUTE, act_addr=act_addr, acc_addr=0, count=count,
                                    accumulate=int(index > 0)), None))
            ops.append((Command(Opcode.READ, addr=0, count=count), None))
            reads.append(ReadBlock(t0, count, tiles[0].n0, tiles[0].n1))
    ops.append((Command(Opcode.END), None))
    return ops, reads


def _plan_counters(cfg: MacroConfig, ops) -> dict[str, int]:
    """Predicted counters of a plan, from the ISA's per-command costs (every plan selects its
    one pattern in its first command)."""
    pattern = (ops[0][0].n, ops[0][0].m)
    counts: dict[Command, int] = {}
    for cmd, _ in ops:
        counts[cmd] = counts.get(cmd, 0) + 1
    total = dict.fromkeys(COUNTERS, 0)
    for cmd, times in counts.items():
        for name, value in cycles(cfg, cmd, pattern).as_dict().items():
            total[name] += times * value
    return total


def _variants(mapping: TileMapping, tokens: int):
    """The loop variants (resident, chunk) that fit the buffers, resident first."""
    cfg = mapping.config
    variants = []
    if mapping.k_tiles <= cfg.act_depth:
        variants.append((True, min(tokens, cfg.acc_depth, cfg.act_depth // mapping.k_tiles)))
    variants.append((False, min(tokens, cfg.acc_depth, cfg.act_depth)))
    return variants


def _best_plan(mapping: TileMapping, tokens: int):
    """(resident, chunk, ops, reads, counters) of the variant with fewest predicted cycles;
    min() keeps the first of equals, so resident wins ties."""
    plans = []
    for resident, chunk in _variants(mapping, tokens):
        ops, reads = _plan(mapping, tokens, resident, chunk)
        plans.append((resident, chunk, ops, reads, _plan_counters(mapping.config, ops)))
    return min(plans, key=lambda plan: plan[4]["total"])


def as_pattern(pattern) -> tuple[int, int]:
    """``(n, m)`` from ``None`` or ``"dense"`` (dense), ``"2:4"``, an
    :class:`~sparsecim.sw.nm.NMPattern` or a pair. ``n == m`` keeps every weight, so it is
    dense: ``(1, 1)``."""
    if pattern is None:
        return (1, 1)
    if isinstance(pattern, str):
        pattern = NMPattern.parse(pattern)
    if isinstance(pattern, NMPattern):
        n, m = pattern.n, pattern.m
    else:
        try:
            n, m = (int(v) for v in pattern)
        except (TypeError, ValueError):
            raise ValueError(f"pattern must be 'dense', 'n:m', an NMPattern or an (n, m) "
                             f"pair, not {pattern!r}") from None
        NMPattern(n, m)  # validates 1 <= n <= m
    return (1, 1) if n == m else (n, m)


def _check_shapes(cfg: MacroConfig, x, w):
    x = check_int_matrix("x", x, cfg.act_bits)
    w = check_int_matrix("w", w, cfg.weight_bits)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} columns but w has {w.shape[0]} rows; "
                         f"shapes must be (tokens, K) and (K, N)")
    tokens, k = x.shape
    if tokens < 1 or k < 1 or w.shape[1] < 1:
        raise ValueError(f"shapes must be non-empty, not x {x.shape} and w {w.shape}")
    if k > cfg.max_reduction():
        raise ValueError(f"K must be at most {cfg.max_reduction()} for {cfg.acc_bits}-bit "
                         f"accumulators (larger K could wrap), not {k}")
    return x, w


def predict_counters(cfg: MacroConfig, k: int, n: int, tokens: int,
                     pattern=None) -> dict[str, int]:
    """The cycle model's counters for the trace :func:`schedule_layer` would emit for a
    ``tokens × k`` by ``k × n`` layer, without building it (for shapes too large to
    schedule, such as a 4096 × 4096 layer)."""
    if not isinstance(tokens, numbers.Integral) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    mapping = map_nm(cfg, k, n, as_pattern(pattern))
    return _best_plan(mapping, int(tokens))[4]


def schedule_dense(cfg: MacroConfig, x, w) -> Schedule:
    """:func:`schedule_layer` with dense weights."""
    return schedule_layer(cfg, x, w)


def _tile_weights(cfg: MacroConfig, mapping: TileMapping, w: np.ndarray):
    """Weight and metadata rows of every tile: ``(n_tiles, k_tiles, weight_rows, cols)``
    each, row ``(c·n + j)·rows + r`` holding, per output, the ``j``-th kept weight of tile
    input group ``c·rows + r`` and its position (the mapping's placement)."""
    n, m = mapping.pattern
    k_dim, n_out = w.shape
    if (n, m) == (1, 1):
        values = w.T[:, :, None]
        positions = np.zeros_like(values)
    else:
        packed = compress(w.T, NMPattern(n, m), name="w.T (output channel × input)")
        values, positions = packed.values.astype(np.int64), packed.positions.astype(np.int64)
    clusters = cfg.submacros // n
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    groups = k_tiles * cfg.rows * clusters
    out = []
    for array in (values, positions):
        padded = np.zeros((n_tiles * cfg.cols, groups, n), dtype=np.int64)
        padded[:n_out, :array.shape[1]] = array
        # (out, kt, c, r, j) -> (kt, c, j, r, out): global row (c·n + j)·rows + r.
        rows = (padded.reshape(n_tiles * cfg.cols, k_tiles, clusters, cfg.rows, n)
                .transpose(1, 2, 4, 3, 0).reshape(k_tiles, cfg.weight_rows, n_tiles, cfg.cols)
                .transpose(2, 0, 1, 3))
        out.append(rows)
    return out


def schedule_layer(cfg: MacroConfig, x, w, pattern=None) -> Schedule:
    """Schedule ``x · w`` for ``x`` (tokens × K) and ``w`` (K × N) on ``cfg`` in ``pattern``.

    Parameters
    ----------
    cfg : MacroConfig
        The macro.
    x : array_like
        Activations, ``(tokens, K)`` integers in the signed ``act_bits`` range.
    w : array_like
        Weights, ``(K, N)`` integers in the signed ``weight_bits`` range. In an N:M pattern
        every output channel (column of ``w``) keeps at most ``n`` non-zero weights in each
        group of ``m`` consecutive inputs.
    pattern : None, str, NMPattern or (int, int)
        The layer's pattern (see :func:`as_pattern`); dense by default.

    Returns
    -------
    Schedule
        Its trace, run on the golden model or the RTL, gives result beats that
        :meth:`Schedule.assemble` turns into exactly ``matmul_reference(x, w)``. The loop
        variant with fewer predicted cycles is chosen (see the module docstring).

    Raises
    ------
    ValueError
        If an operand is not a 2-D integer matrix or has a value outside its width (the
        message names the value and its index); if the inner dimensions differ or a dimension
        is 0; if K exceeds ``cfg.max_reduction()``, so that a worst-case dot product could
        wrap the ``acc_bits`` accumulator; or if the macro does not support the pattern.
    NMPatternError
        If ``w`` breaks the pattern; the message names the first offending output channel
        (row of ``w.T``) and input group.
    """
    x, w = _check_shapes(cfg, x, w)
    pattern = as_pattern(pattern)
    cfg.check_pattern(*pattern)
    tokens, k = x.shape
    n = w.shape[1]
    mapping = map_nm(cfg, k, n, pattern)
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    resident, chunk, ops, reads, _ = _best_plan(mapping, tokens)

    # Every beat is packed once, in bulk.
    w_rows, m_rows = _tile_weights(cfg, mapping, w)
    w_words = _pack_weights(cfg, w_rows.reshape(-1, cfg.cols), m_rows.reshape(-1, cfg.cols))
    # Activations: entry (k tile, token) is act_beats beats, zero beyond the tile's inputs.
    inputs = mapping.pass_inputs
    act_beats = cfg.act_beats(*pattern)
    entry = act_beats * cfg.act_lanes
    padded_x = np.zeros((k_tiles, tokens, entry), dtype=np.int64)
    for kt in range(k_tiles):
        block = x[:, kt * inputs:(kt + 1) * inputs]
        padded_x[kt, :, :block.shape[1]] = block
    a_words = _pack(act_beat_layout(cfg), padded_x.reshape(-1, cfg.act_lanes))

    def beats(ref) -> list[int]:
        if ref is None:
            return []
        if ref[0] == "w":
            _, nt, kt, rows = ref
            first = (nt * k_tiles + kt) * cfg.weight_rows
            return w_words[first:first + rows]
        _, k_lo, k_hi, t0, count = ref
        out: list[int] = []
        for kt in range(k_lo, k_hi):
            first = (kt * tokens + t0) * act_beats
            out += a_words[first:first + count * act_beats]
        return out

    trace = Trace(cfg, meta={
        "workload": "gemm", "mapping": "linear" if pattern == (1, 1) else "nm",
        "pattern": "dense" if pattern == (1, 1) else f"{pattern[0]}:{pattern[1]}",
        "tokens": tokens, "k": k, "n": n, "k_tiles": k_tiles, "n_tiles": n_tiles,
        "utilization": mapping.utilization,
        "loop": "resident" if resident else "streaming", "chunk": chunk,
    })
    encoded: dict[Command, int] = {}
    for cmd, ref in ops:
        word = encoded.get(cmd)
        if word is None:
            word = encoded[cmd] = encode(cfg, cmd)
        trace.steps.append(Step(word, beats(ref)))
    return Schedule(trace, mapping, tokens, reads, resident, chunk)


def chain(schedules: list[Schedule]) -> Trace:
    """One trace running ``schedules`` one after the other (each selects its own pattern in
    its first command; every END but the last is dropped). The result beats are those of the
    schedules in order: split them by each schedule's ``result_beats``.

    Raises
    ------
    ValueError
        If the list is empty or the schedules are for different configs.
    """
    if not schedules:
        raise ValueError("schedules must not be empty")
    cfg = schedules[0].trace.config
    for index, schedule in enumerate(schedules):
        if schedule.trace.config != cfg:
            raise ValueError(f"schedule {index} is for {schedule.trace.config.slug}, "
                             f"not {cfg.slug} like schedule 0")
    trace = Trace(cfg, meta={"workload": "chain", "layers": [s.trace.meta for s in schedules]})
    for schedule in schedules:
        trace.steps.extend(schedule.trace.steps[:-1])
    trace.steps.append(schedules[-1].trace.steps[-1])
    return trace


def ideal_cycles(mapping: TileMapping, tokens: int) -> int:
    """Cycles at the macro's peak: ``ceil(macs_per_token · tokens / cells)`` (every cell doing
    one useful MAC every cycle, no loads, no padding; an N:M layer does ``n/m`` of the MACs of
    a dense one).

    Raises
    ------
    ValueError
        If ``tokens`` is not a positive integer.
    """
    if not isinstance(tokens, numbers.Integral) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    return -(-mapping.macs_per_token * int(tokens) // mapping.config.cells)
