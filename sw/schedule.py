"""Scheduling: a dense mapping and its operands become a command trace.

Loop order (weights stationary, as a CIM macro wants: a weight tile, once written, serves
every token of a chunk)::

    CONFIG DENSE
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

Padding. A LOAD_W writes only the tile's rows. Stale rows below them (from an earlier, taller
tile, or never written since reset) meet activation elements that the LOAD_A beats set to zero
(each entry is zero beyond its tile's rows), so they add exactly 0; edge tiles need no zero
weight rows and cost no extra load cycles. Columns beyond N compute padding values that
:meth:`Schedule.assemble` drops (the loaded rows carry zeros there).

What dominates the cycles. Every chunk rewrites the whole weight matrix, one row per cycle:
about ``chunks · K · n_tiles`` load cycles, against ``tokens · tiles`` compute cycles. A tile
is used for T passes after ``rows`` cycles of loading, so with few tokens (decode-like
workloads) LOAD_W dominates by about ``reduction / T`` and the macro is far from its peak of
``cells`` MACs per cycle (:func:`ideal_cycles`); compute dominates only when T approaches
``reduction``, which ``acc_depth`` bounds.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import (
    Command,
    Mode,
    Opcode,
    act_beat_layout,
    cycles,
    encode,
    pack_beats,
    weight_row_layout,
)
from ..hw.trace import Step, Trace
from .mapping import DenseMapping, map_dense
from .reference import check_int_matrix

__all__ = ["ReadBlock", "Schedule", "schedule_dense", "ideal_cycles"]

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
    mapping : DenseMapping
        The tiling the trace executes.
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
    mapping: DenseMapping
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


def _plan(mapping: DenseMapping, tokens: int, resident: bool, chunk: int):
    """Commands of one loop variant, each with a reference to its data (not yet packed).

    Data references: ``("w", n_tile, k_tile)`` for the tile's weight rows, ``("a", k_lo, k_hi,
    t0, count)`` for the activation entries of K tiles ``k_lo .. k_hi-1``, tokens ``t0 ..``.
    """
    k_tiles = mapping.k_tiles
    ops = [(Command(Opcode.CONFIG, mode=Mode.DENSE), None)]
    reads = []
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        if resident:
            ops.append((Command(Opcode.LOAD_A, addr=0, count=count * k_tiles),
                        ("a", 0, k_tiles, t0, count)))
        for nt in range(mapping.n_tiles):
            tiles = mapping.tiles[nt * k_tiles:(nt + 1) * k_tiles]
            for index, tile in enumerate(tiles):
                ops.append((Command(Opcode.LOAD_W, row=0, count=tile.rows), ("w", nt, index)))
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


def _plan_cycles(cfg: MacroConfig, ops) -> int:
    """Predicted total cycles of a plan, from the ISA's per-command costs."""
    costs: dict[Command, int] = {}
    total = 0
    for cmd, _ in ops:
        if cmd not in costs:
            costs[cmd] = cycles(cfg, cmd).total
        total += costs[cmd]
    return total


def schedule_dense(cfg: MacroConfig, x, w) -> Schedule:
    """Schedule ``x · w`` for ``x`` (tokens × K) and ``w`` (K × N) on ``cfg``.

    Parameters
    ----------
    cfg : MacroConfig
        The macro.
    x : array_like
        Activations, ``(tokens, K)`` integers in the signed ``act_bits`` range.
    w : array_like
        Weights, ``(K, N)`` integers in the signed ``weight_bits`` range.

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
        is 0; or if K exceeds ``cfg.max_reduction()``, so that a worst-case dot product could
        wrap the ``acc_bits`` accumulator.
    """
    x = check_int_matrix("x", x, cfg.act_bits)
    w = check_int_matrix("w", w, cfg.weight_bits)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} columns but w has {w.shape[0]} rows; "
                         f"shapes must be (tokens, K) and (K, N)")
    tokens, k = x.shape
    n = w.shape[1]
    if tokens < 1 or k < 1 or n < 1:
        raise ValueError(f"shapes must be non-empty, not x {x.shape} and w {w.shape}")
    if k > cfg.max_reduction():
        raise ValueError(f"K must be at most {cfg.max_reduction()} for {cfg.acc_bits}-bit "
                         f"accumulators (larger K could wrap), not {k}")
    mapping = map_dense(cfg, k, n)
    k_tiles, n_tiles, rows = mapping.k_tiles, mapping.n_tiles, cfg.reduction

    variants = []
    if k_tiles <= cfg.act_depth:
        variants.append((True, min(tokens, cfg.acc_depth, cfg.act_depth // k_tiles)))
    variants.append((False, min(tokens, cfg.acc_depth, cfg.act_depth)))
    plans = [(resident, chunk, *_plan(mapping, tokens, resident, chunk))
             for resident, chunk in variants]
    # min() keeps the first of equals: resident wins ties.
    resident, chunk, ops, reads = min(plans, key=lambda plan: _plan_cycles(cfg, plan[2]))

    # Every beat is packed once, in bulk. Weights: beat nt·k_tiles·reduction + r is row r of
    # column block nt (r = kt·reduction + row within K tile kt), zero beyond K and N.
    padded_w = np.zeros((n_tiles, k_tiles * rows, cfg.cols), dtype=np.int64)
    for nt in range(n_tiles):
        block = w[:, nt * cfg.cols:(nt + 1) * cfg.cols]
        padded_w[nt, :k, :block.shape[1]] = block
    w_words = _pack(weight_row_layout(cfg), padded_w.reshape(-1, cfg.cols))
    # Activations: entry (k tile, token) is act_beats beats, zero beyond the tile's rows.
    entry = cfg.act_beats * cfg.act_lanes
    padded_x = np.zeros((k_tiles, tokens, entry), dtype=np.int64)
    for kt in range(k_tiles):
        block = x[:, kt * rows:(kt + 1) * rows]
        padded_x[kt, :, :block.shape[1]] = block
    a_words = _pack(act_beat_layout(cfg), padded_x.reshape(-1, cfg.act_lanes))

    def beats(ref) -> list[int]:
        if ref is None:
            return []
        if ref[0] == "w":
            _, nt, kt = ref
            first = (nt * k_tiles + kt) * rows
            return w_words[first:first + mapping.tiles[nt * k_tiles + kt].rows]
        _, k_lo, k_hi, t0, count = ref
        out: list[int] = []
        for kt in range(k_lo, k_hi):
            first = (kt * tokens + t0) * cfg.act_beats
            out += a_words[first:first + count * cfg.act_beats]
        return out

    trace = Trace(cfg, meta={
        "workload": "dense-gemm", "mapping": "linear", "tokens": tokens, "k": k, "n": n,
        "k_tiles": k_tiles, "n_tiles": n_tiles, "utilization": mapping.utilization,
        "loop": "resident" if resident else "streaming", "chunk": chunk,
    })
    encoded: dict[Command, int] = {}
    for cmd, ref in ops:
        word = encoded.get(cmd)
        if word is None:
            word = encoded[cmd] = encode(cfg, cmd)
        trace.steps.append(Step(word, beats(ref)))
    return Schedule(trace, mapping, tokens, reads, resident, chunk)


def ideal_cycles(mapping: DenseMapping, tokens: int) -> int:
    """Cycles at the macro's peak: ``ceil(k · n · tokens / cells)`` (every cell doing one MAC
    every cycle, no loads, no padding).

    Raises
    ------
    ValueError
        If ``tokens`` is not a positive integer.
    """
    if not isinstance(tokens, numbers.Integral) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    return -(-mapping.macs_per_token * int(tokens) // mapping.config.cells)
