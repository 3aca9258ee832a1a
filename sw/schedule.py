"""Scheduling: a dense mapping and its operands become a command trace.

Loop order (weights stationary, as a CIM macro wants)::

    CONFIG DENSE
    for each token chunk (at most acc_depth tokens):
        [LOAD_A every K tile of the chunk, if they all fit the activation buffer]
        for each N tile:
            for each K tile:
                LOAD_W the tile's rows
                [LOAD_A this K tile of the chunk, if not resident]
                COMPUTE one pass per token, accumulate = (K tile > 0)
            READ the chunk's accumulators
    END

Activation entries are zero beyond the tile's rows, so stale weight rows left by an earlier,
taller tile multiply zeros: edge tiles need no weight padding. Columns beyond N produce values
that :meth:`Schedule.assemble` drops.

With few tokens the cycles are dominated by LOAD_W (one weight row per cycle, the whole array per
tile), since each tile is reused only by the tokens of a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import Command, Mode, Opcode, act_beat_layout, pack_beats, weight_row_layout
from ..hw.trace import Trace
from .mapping import DenseMapping, map_dense
from .reference import check_int_matrix

__all__ = ["ReadBlock", "Schedule", "schedule_dense", "ideal_cycles"]


@dataclass(frozen=True)
class ReadBlock:
    """One READ: ``count`` result beats holding tokens ``t0 ..`` for columns ``n0 .. n1-1``."""
    t0: int
    count: int
    n0: int
    n1: int


@dataclass
class Schedule:
    """A trace plus what is needed to put its result beats back into ``(tokens, n)``."""
    trace: Trace
    mapping: DenseMapping
    tokens: int
    reads: list[ReadBlock]
    resident: bool
    chunk: int

    @property
    def n(self) -> int:
        return self.mapping.n

    def assemble(self, results: np.ndarray) -> np.ndarray:
        """Result beats (as from the golden model or the RTL) to the ``(tokens, n)`` output.

        Raises ``ValueError`` if the number of beats is not the schedule's.
        """
        expected = sum(block.count for block in self.reads)
        if results.shape[0] != expected:
            raise ValueError(f"results must have {expected} beats, not {results.shape[0]}")
        out = np.zeros((self.tokens, self.n), dtype=np.int64)
        beat = 0
        for block in self.reads:
            width = block.n1 - block.n0
            out[block.t0:block.t0 + block.count, block.n0:block.n1] = \
                results[beat:beat + block.count, :width]
            beat += block.count
        return out


def _act_entries(cfg: MacroConfig, x: np.ndarray, k0: int, k1: int) -> list[int]:
    """LOAD_A beats for the rows of ``x`` restricted to inputs ``k0:k1``, zero-padded."""
    lanes = cfg.act_beats * cfg.act_lanes
    padded = np.zeros((x.shape[0], lanes), dtype=np.int64)
    padded[:, :k1 - k0] = x[:, k0:k1]
    return pack_beats(act_beat_layout(cfg), padded.reshape(-1, cfg.act_lanes))


def _load_beats(cfg, mapping, tokens, chunk, resident) -> int:
    """Data beats a schedule variant moves (the cycles that dominate)."""
    chunks = -(-tokens // chunk)
    weight = chunks * sum(tile.rows for tile in mapping.tiles)
    act_loads = mapping.k_tiles if resident else mapping.arrays
    return weight + act_loads * tokens * cfg.act_beats


def schedule_dense(cfg: MacroConfig, x, w) -> Schedule:
    """Schedule ``x @ w`` for ``x`` (tokens × K) and ``w`` (K × N) on ``cfg``.

    Of the two loop variants (all K tiles' activations resident per token chunk, or reloaded
    per tile with larger chunks) the one moving fewer data beats is chosen.

    Raises
    ------
    ValueError
        For operands that are not integer matrices of the config's widths, mismatched shapes,
        or a K whose worst-case dot product could wrap the ``acc_bits`` accumulator.
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

    streaming = min(tokens, cfg.acc_depth, cfg.act_depth)
    variants = [(False, streaming)]
    if cfg.act_depth // mapping.k_tiles >= 1:
        variants.append((True, min(tokens, cfg.acc_depth, cfg.act_depth // mapping.k_tiles)))
    resident, chunk = min(variants, key=lambda v: (_load_beats(cfg, mapping, tokens, v[1], v[0]),
                                                   not v[0]))

    trace = Trace(cfg, meta={"workload": "dense-gemm", "tokens": tokens, "k": k, "n": n,
                             "mapping": "linear", "chunk": chunk, "resident": resident})
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE))
    reads = []
    weight_layout = weight_row_layout(cfg)
    k_tiles = [tile for tile in mapping.tiles if tile.n0 == 0]
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        xs = x[t0:t0 + count]
        if resident:
            beats = [b for tile in k_tiles for b in _act_entries(cfg, xs, tile.k0, tile.k1)]
            trace.append(Command(Opcode.LOAD_A, addr=0, count=count * len(k_tiles)), beats)
        for n0 in range(0, n, cfg.cols):
            tiles = [tile for tile in mapping.tiles if tile.n0 == n0]
            for index, tile in enumerate(tiles):
                rows = np.zeros((tile.rows, cfg.cols), dtype=np.int64)
                rows[:, :tile.cols] = w[tile.k0:tile.k1, tile.n0:tile.n1]
                trace.append(Command(Opcode.LOAD_W, row=0, count=tile.rows),
                             pack_beats(weight_layout, rows))
                if resident:
                    act_addr = index * count
                else:
                    act_addr = 0
                    trace.append(Command(Opcode.LOAD_A, addr=0, count=count),
                                 _act_entries(cfg, xs, tile.k0, tile.k1))
                trace.append(Command(Opcode.COMPUTE, act_addr=act_addr, acc_addr=0,
                                     count=count, accumulate=int(index > 0)))
            trace.append(Command(Opcode.READ, addr=0, count=count))
            reads.append(ReadBlock(t0, count, n0, tiles[0].n1))
    trace.append(Command(Opcode.END))
    return Schedule(trace, mapping, tokens, reads, resident, chunk)


def ideal_cycles(mapping: DenseMapping, tokens: int) -> int:
    """MACs / peak MACs per cycle (every cell busy every cycle), rounded up."""
    return -(-mapping.macs_per_token * tokens // mapping.config.cells)
