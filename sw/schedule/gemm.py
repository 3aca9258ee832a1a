"""Scheduling: a layer's mapping and its operands become a command trace.

A layer is ``x · w`` with ``w`` dense or in an N:M pattern the macro supports (see
:mod:`~sparsecim.sw.mapping` for where each weight goes). Loop order (weights stationary, as a
CIM macro wants: a weight tile, once written, serves every token of a chunk)::

    CONFIG the layer's pattern (DENSE, or NM n m)
    for each chunk of T tokens:
        [LOAD_A all K tiles of the chunk, tile i at entries i·T ..]   (resident variant)
        for each N tile:
            for each K tile i:
                LOAD_W the rows the tile uses (one range from row 0; a partial last
                       N:M tile one range per sub-macro of its last cluster)
                [LOAD_A K tile i of the chunk at entries 0 ..]        (streaming variant)
                COMPUTE T passes, accumulate = (i > 0)
            READ the chunk's T accumulators
    END

Two variants, and the one with fewer predicted cycles is chosen (ties go to resident; the
cycles come from the closed form :func:`_closed_counters`, so no command list is built to
choose):

- *resident*: the chunk's activations of every K tile are loaded once per chunk and stay in
  the buffer; ``T = min(tokens, acc_depth, act_depth // k_tiles)``; possible only when
  ``k_tiles <= act_depth``.
- *streaming*: a K tile's activations are reloaded next to its weights, for every N tile;
  ``T = min(tokens, acc_depth, act_depth)``, so larger chunks when K is deep.

Padding. A tile's LOAD_Ws write exactly the global rows it uses (:func:`load_ranges`): a full
tile all of them in one range; a partial last tile the rows of its full clusters and, of its
last cluster, the first ``last`` rows of each of the ``n`` sub-macros, one LOAD_W per
sub-macro range (one fetch cycle each; before, one LOAD_W from row 0 to the last row used also
rewrote the unused rows between the sub-macros: 104 rows for the last tile of a 576-input
layer at 4:8 where it uses 32). Stale rows elsewhere (from an earlier, taller tile, or never
written since reset) meet activation elements that the LOAD_A beats set to zero (each entry
is zero beyond its tile's inputs, up to the last lane of its last beat), or positions
``>= m`` that select 0, so they add exactly 0; edge tiles need no zero weight rows. Columns
beyond N compute padding values that :meth:`GemmSchedule.assemble` drops (the loaded rows carry
zeros there).

What dominates the cycles. Every chunk rewrites the whole weight matrix, one row per cycle:
about ``chunks · K · n_tiles`` load cycles, against ``tokens · tiles`` compute cycles. A tile
is used for T passes after ``rows`` cycles of loading, so with few tokens (decode-like
workloads) LOAD_W dominates by about ``reduction / T`` and the macro is far from its peak of
``cells`` MACs per cycle (:func:`ideal_cycles`); compute dominates only when T approaches
``reduction``, which ``acc_depth`` bounds. An N:M tile covers ``m/n`` times the inputs of a
dense one with the same rows, so the weight loads, and with them the cycles of a decode-like
layer, shrink by up to ``m/n``; fixed per-command cycles and edge tiles keep it below.

Speed. Operands stay in their small dtypes (``int8`` for INT8, not copied or scanned when
already so). :func:`tile_weight_bytes` works in blocks of whole K tiles of about 1 MB of ``w``
(a transposed ``w`` put in C order block by block): N:M slots through
:func:`~sparsecim.sw.nm.stored_slots`, packed in ``w``'s own order in runs of ``cols`` outputs
through byte views (:func:`~sparsecim.hw.isa.pack_weight_row_bytes`) and moved to the tile
order as bytes, one strided copy per slot. The steps are built from the loop structure
(:func:`_steps`, the same listing as :func:`_plan`): every beat a
:class:`~sparsecim.hw.trace.BeatArray` view of those bytes, never a Python ``int`` per beat,
every distinct command encoded once.
"""

from __future__ import annotations

import functools
import numbers
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ...hw.config import MacroConfig
from ...hw.isa import (
    Command,
    Opcode,
    act_beat_layout,
    beat_bytes,
    config_command,
    pack_beat_bytes,
    pack_weight_row_bytes,
)
from ...hw.pattern import as_pattern
from ...hw.trace import BeatArray, Step, Trace
from ..mapping import TileMapping, map_nm
from ..nm import NMPattern, compress, stored_slots
from ..reference import check_int_matrix
from .steps import CommandCache, counters_of, encode_cached, pack_rows

__all__ = ["ReadBlock", "GemmSchedule", "as_pattern", "schedule_dense", "schedule_layer",
           "predict_counters", "chain", "ideal_cycles", "check_shapes", "load_ranges",
           "k_tile_inputs", "tile_weight_bytes"]


@dataclass(frozen=True)
class ReadBlock:
    """One READ: ``count`` result beats holding tokens ``t0 .. t0+count-1`` for output
    columns ``n0 .. n1-1`` (lane ``c`` of a beat is column ``n0 + c``; lanes from ``n1 - n0``
    on are padding)."""
    t0: int
    count: int
    n0: int
    n1: int


@dataclass(kw_only=True)
class GemmSchedule:
    """A GEMM layer's :class:`~sparsecim.sw.schedule.Schedule`: a trace plus what is needed to
    put its result beats back into ``(tokens, n)``.

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


def load_ranges(cfg: MacroConfig, pattern: tuple[int, int],
                 inputs: int) -> tuple[tuple[int, int], ...]:
    """``(row, count)`` of the LOAD_Ws of a tile of ``inputs`` inputs: exactly the global rows
    it uses. Clusters fill in order and the last one uses ``last`` rows of each of its ``n``
    sub-macros, so full clusters and the last cluster's first sub-macro are one range from row
    0 and each further sub-macro of a partial last cluster is a range of its own (one fetch
    cycle each, against ``rows - last`` load cycles saved). Dense tiles are one range."""
    n, m = pattern
    groups = -(-inputs // m)
    clusters = -(-groups // cfg.rows)
    last = groups - (clusters - 1) * cfg.rows
    full = (clusters - 1) * n * cfg.rows
    if last == cfg.rows:
        return ((0, full + n * cfg.rows),)
    return ((0, full + last),) + tuple((full + j * cfg.rows, last) for j in range(1, n))


def k_tile_inputs(mapping: TileMapping) -> list[int]:
    """Inputs of each K tile (the same for every N tile)."""
    return [tile.rows for tile in mapping.tiles[:mapping.k_tiles]]


def _plan(mapping: TileMapping, tokens: int, resident: bool, chunk: int):
    """Commands of one loop variant, each with a reference to its data (not yet packed): the
    listing the tests hold :func:`_steps` (which builds the trace) and the closed form to.

    Data references: ``("w", n_tile, k_tile, row, count)`` for rows ``row .. row+count-1`` of
    the tile's weight rows, ``("a", k_lo, k_hi, t0, count)`` for the activation entries of K
    tiles ``k_lo .. k_hi-1``, tokens ``t0 ..``.
    """
    cfg = mapping.config
    k_tiles = mapping.k_tiles
    command = CommandCache()
    ranges = [load_ranges(cfg, mapping.pattern, inputs) for inputs in k_tile_inputs(mapping)]
    ops = [(config_command(mapping.pattern), None)]
    reads = []
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        if resident:
            ops.append((command(Opcode.LOAD_A, addr=0, count=count * k_tiles),
                        ("a", 0, k_tiles, t0, count)))
        # The commands of each K tile, the same for every N tile of the chunk.
        per_tile = []
        for index in range(k_tiles):
            loads = [(command(Opcode.LOAD_W, row=row, count=rows), row, rows)
                     for row, rows in ranges[index]]
            load_a = None if resident else command(Opcode.LOAD_A, addr=0, count=count)
            compute = command(Opcode.COMPUTE, act_addr=index * count if resident else 0,
                              acc_addr=0, count=count, accumulate=int(index > 0))
            per_tile.append((loads, load_a, compute))
        read = command(Opcode.READ, addr=0, count=count)
        for nt in range(mapping.n_tiles):
            for index, (loads, load_a, compute) in enumerate(per_tile):
                for cmd, row, rows in loads:
                    ops.append((cmd, ("w", nt, index, row, rows)))
                if load_a is not None:
                    ops.append((load_a, ("a", index, index + 1, t0, count)))
                ops.append((compute, None))
            ops.append((read, None))
            tile = mapping.tiles[nt * k_tiles]
            reads.append(ReadBlock(t0, count, tile.n0, tile.n1))
    ops.append((Command(Opcode.END), None))
    return ops, reads


def _steps(mapping: TileMapping, tokens: int, resident: bool, chunk: int, w_raw: np.ndarray,
           a_raw: np.ndarray, steps: list) -> list[ReadBlock]:
    """Append to ``steps`` the trace of :func:`_plan`'s commands, in its order, each word
    encoded once and each beat a :class:`~sparsecim.hw.trace.BeatArray` view of ``w_raw``
    (:func:`tile_weight_bytes`) or ``a_raw`` (``(k_tiles, tokens · act_beats, nbytes)``);
    return the READs' blocks. The same trace as :func:`build_trace` of the plan (a test
    compares them) without a reference tuple per step: a LOAD_W's beats are built once per
    tile range and shared by the chunks."""
    cfg = mapping.config
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    word = functools.partial(encode_cached, cfg)
    ranges = [load_ranges(cfg, mapping.pattern, inputs) for inputs in k_tile_inputs(mapping)]
    act_beats = a_raw.shape[1] // tokens
    loads = [[word(Command(Opcode.LOAD_W, row=row, count=rows)) for row, rows in tile]
             for tile in ranges]
    w_beats: list = []                  # [n tile][k tile][range]: built in the first chunk
    reads = []
    steps.append(Step(word(config_command(mapping.pattern))))
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        acts = a_raw[:, t0 * act_beats:(t0 + count) * act_beats]
        if resident:
            steps.append(Step(word(Command(Opcode.LOAD_A, addr=0, count=count * k_tiles)),
                              BeatArray(acts.reshape(-1, acts.shape[-1]))))
            load_a = [None] * k_tiles
        else:
            load_a = [(word(Command(Opcode.LOAD_A, addr=0, count=count)), BeatArray(block))
                      for block in acts]
        computes = [word(Command(Opcode.COMPUTE, act_addr=index * count if resident else 0,
                                 acc_addr=0, count=count, accumulate=int(index > 0)))
                    for index in range(k_tiles)]
        read = word(Command(Opcode.READ, addr=0, count=count))
        for nt in range(n_tiles):
            if nt == len(w_beats):
                w_beats.append([[BeatArray(w_raw[nt, kt, row:row + rows]) for row, rows in tile]
                                for kt, tile in enumerate(ranges)])
            for kt in range(k_tiles):
                for load, beats in zip(loads[kt], w_beats[nt][kt], strict=True):
                    steps.append(Step(load, beats))
                if load_a[kt] is not None:
                    steps.append(Step(*load_a[kt]))
                steps.append(Step(computes[kt], []))
            steps.append(Step(read, []))
            tile = mapping.tiles[nt * k_tiles]
            reads.append(ReadBlock(t0, count, tile.n0, tile.n1))
    steps.append(Step(word(Command(Opcode.END))))
    return reads


def _counters(cfg: MacroConfig, pattern: tuple[int, int], times) -> dict[str, int]:
    """Counters of commands run ``times[cmd]`` times each in ``pattern``
    (:func:`~sparsecim.sw.schedule.steps.counters_of`)."""
    return counters_of(cfg, (((cmd, pattern), count) for cmd, count in times.items()))


def _plan_counters(cfg: MacroConfig, ops) -> dict[str, int]:
    """Predicted counters of a plan, command by command (every plan selects its one pattern
    in its first command)."""
    return _counters(cfg, (ops[0][0].n, ops[0][0].m), Counter(cmd for cmd, _ in ops))


def loop_times(cfg: MacroConfig, pattern: tuple[int, int], k_tile_inputs, n_tiles: int,
               tokens: int, resident: bool, chunk: int) -> Counter:
    """Each distinct command of :func:`_plan`'s loops with how many times it runs (chunks come
    in at most two sizes; every N tile runs the same K tiles), without listing the plan:
    ``k_tile_inputs`` are the inputs of each K tile. The one definition of the loop structure
    that :func:`predict_counters` and the sweep's closed form
    (:mod:`sparsecim.sw.sweep_model`) price."""
    k_tiles = len(k_tile_inputs)
    sizes = Counter({chunk: tokens // chunk})
    if tokens % chunk:
        sizes[tokens % chunk] += 1
    chunks = sum(sizes.values())
    times: Counter = Counter({config_command(pattern): 1, Command(Opcode.END): 1})
    for inputs in k_tile_inputs:
        for row, rows in load_ranges(cfg, pattern, inputs):
            times[Command(Opcode.LOAD_W, row=row, count=rows)] += chunks * n_tiles
    for count, repeats in sizes.items():
        per_n_tile = repeats * n_tiles
        if resident:
            times[Command(Opcode.LOAD_A, addr=0, count=count * k_tiles)] += repeats
        else:
            times[Command(Opcode.LOAD_A, addr=0, count=count)] += per_n_tile * k_tiles
        for index in range(k_tiles):
            times[Command(Opcode.COMPUTE, act_addr=index * count if resident else 0,
                          acc_addr=0, count=count, accumulate=int(index > 0))] += per_n_tile
        times[Command(Opcode.READ, addr=0, count=count)] += per_n_tile
    return times


def loop_variants(cfg: MacroConfig, k_tiles: int, tokens: int) -> list[tuple[bool, int]]:
    """The loop variants ``(resident, chunk)`` that fit the buffers, resident first (the
    scheduler takes the one with fewest cycles, resident among equals)."""
    variants = []
    if k_tiles <= cfg.act_depth:
        variants.append((True, min(tokens, cfg.acc_depth, cfg.act_depth // k_tiles)))
    variants.append((False, min(tokens, cfg.acc_depth, cfg.act_depth)))
    return variants


def _closed_counters(mapping: TileMapping, tokens: int, resident: bool,
                     chunk: int) -> dict[str, int]:
    """The counters of :func:`_plan`'s commands without listing them (:func:`loop_times`),
    priced by the ISA's costs. Equal to :func:`_plan_counters` of the plan (a test compares
    them)."""
    times = loop_times(mapping.config, mapping.pattern, k_tile_inputs(mapping),
                       mapping.n_tiles, tokens, resident, chunk)
    return _counters(mapping.config, mapping.pattern, times)


def _variants(mapping: TileMapping, tokens: int):
    """The loop variants (resident, chunk) that fit the buffers, resident first."""
    return loop_variants(mapping.config, mapping.k_tiles, tokens)


def _best_variant(mapping: TileMapping, tokens: int):
    """(resident, chunk, counters) of the variant with fewest predicted cycles; min() keeps
    the first of equals, so resident wins ties."""
    variants = [(resident, chunk, _closed_counters(mapping, tokens, resident, chunk))
                for resident, chunk in _variants(mapping, tokens)]
    return min(variants, key=lambda variant: variant[2]["total"])


def _small_int_matrix(name: str, a, bits: int) -> np.ndarray:
    """:func:`check_int_matrix`, returning the smallest signed dtype that holds ``bits`` (a
    4096 × 11008 layer is 45 MB in ``int8``, 360 MB in ``int64``)."""
    arr = np.asarray(a)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    # A dtype whose whole range fits needs no scan of the values.
    if (arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer)
            or (arr.size and (np.iinfo(arr.dtype).min < lo or np.iinfo(arr.dtype).max > hi)
                and (arr.min() < lo or arr.max() > hi))):
        check_int_matrix(name, arr, bits)  # raises the message naming the first bad value
    dtype = next(t for t in (np.int8, np.int16, np.int32, np.int64)
                 if bits <= 8 * np.dtype(t).itemsize)
    # No copy of an operand already in that dtype (the schedule never writes to it).
    return arr.astype(dtype, copy=False)


def check_shapes(cfg: MacroConfig, x, w):
    x = _small_int_matrix("x", x, cfg.act_bits)
    w = _small_int_matrix("w", w, cfg.weight_bits)
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
    schedule, such as a 4096 × 4096 layer). Closed form: no command list is built (see
    :func:`_closed_counters`), so the cost does not grow with the layer."""
    if not isinstance(tokens, numbers.Integral) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    mapping = map_nm(cfg, k, n, as_pattern(pattern))
    return _best_variant(mapping, int(tokens))[2]


def schedule_dense(cfg: MacroConfig, x, w) -> GemmSchedule:
    """:func:`schedule_layer` with dense weights."""
    return schedule_layer(cfg, x, w)


#: Bytes of ``w`` cut into tiles per block of K tiles by :func:`tile_weight_bytes`: the
#: temporaries stay in the cache and below the size the allocator maps fresh (and the kernel
#: zeroes) on every call.
_BLOCK_BYTES = 1 << 20


def tile_weight_bytes(cfg: MacroConfig, mapping: TileMapping, w: np.ndarray) -> np.ndarray:
    """LOAD_W beats of every tile as bytes: ``uint8`` ``(n_tiles, k_tiles, weight_rows,
    beat_bytes(data_bits))``, row ``(c·n + j)·rows + r`` holding, per output, the ``j``-th
    kept weight of tile input group ``c·rows + r`` and its position (the mapping's
    placement). Built in blocks of whole K tiles of about :data:`_BLOCK_BYTES` of ``w``:
    each packed in ``w``'s own order (rows of ``cols`` consecutive outputs, in its small
    dtype) and moved to the tile order as bytes by one strided copy per slot."""
    k_dim, n_out = w.shape
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    nbytes = beat_bytes(cfg.data_bits)
    out = np.zeros((n_tiles, k_tiles, cfg.weight_rows, nbytes), dtype=np.uint8)
    inputs = mapping.pass_inputs
    step = max(1, _BLOCK_BYTES // (inputs * n_out * w.itemsize))
    for kt0 in range(0, k_tiles, step):
        block = _c_order(w[kt0 * inputs:(kt0 + step) * inputs])
        if mapping.pattern == (1, 1):
            _dense_block(cfg, block, out, kt0)
        elif not _nm_block(cfg, mapping.pattern, block, out, kt0):
            # Raises the error naming the first output channel and group that break it.
            compress(w.T, NMPattern(*mapping.pattern), name="w.T (output channel × input)")
            raise AssertionError("stored_slots refused a block that compress accepts")
    return out


def _dense_block(cfg: MacroConfig, block: np.ndarray, out: np.ndarray, kt0: int) -> None:
    """Write K tiles ``kt0 ..`` of a dense layer, inputs ``block``, into ``out``: global row
    g of a dense tile is input ``k0 + g``, so rows of ``block`` are packed as they are and
    moved (input, n tile) -> (n tile, input); rows beyond K stay zero."""
    n_tiles, k_tiles, weight_rows, nbytes = out.shape
    rows = block.shape[0]
    raw = _packed_rows(cfg, block, n_tiles)
    first = kt0 * weight_rows
    out.reshape(n_tiles, k_tiles * weight_rows, nbytes)[:, first:first + rows] = \
        raw.reshape(rows, n_tiles, nbytes).transpose(1, 0, 2)


def _nm_block(cfg: MacroConfig, pattern: tuple[int, int], block: np.ndarray,
              out: np.ndarray, kt0: int) -> bool:
    """Write K tiles ``kt0 ..`` of an ``n:m`` layer, inputs ``block`` (C order), into
    ``out``; False (nothing written) if a group breaks the pattern."""
    n, m = pattern
    n_tiles, k_tiles, _, nbytes = out.shape
    rows, n_out = block.shape
    k_groups = -(-rows // m)
    if rows % m:
        # The partial last group's missing inputs are zeros (as compress pads them).
        whole = np.zeros((k_groups * m, n_out), dtype=block.dtype)
        whole[:rows] = block
        block = whole
    slots = stored_slots(block.reshape(k_groups, m, n_out), n, m, axis=1)
    if slots is None:
        return False
    clusters = cfg.submacros // n
    tiles_here = -(-k_groups // (cfg.rows * clusters))
    groups = tiles_here * cfg.rows * clusters
    tiles = out.reshape(n_tiles, k_tiles, clusters, n, cfg.rows, nbytes)
    for j, (values, positions) in enumerate(zip(*slots, strict=True)):
        # Groups beyond K (and outputs beyond N) hold weight 0 at position 0: zero bytes.
        raw = np.zeros((groups * n_tiles, nbytes), dtype=np.uint8)
        raw[:k_groups * n_tiles] = _packed_rows(cfg, values, n_tiles, positions)
        # (kt, c, r, nt) -> (nt, kt, c, r): global row (c·n + j)·rows + r.
        tiles[:, kt0:kt0 + tiles_here, :, j] = \
            raw.reshape(tiles_here, clusters, cfg.rows, n_tiles, nbytes).transpose(3, 0, 1, 2, 4)
    return True


#: Columns copied per block by :func:`_c_order`.
_ORDER_BLOCK = 16


def _c_order(w: np.ndarray) -> np.ndarray:
    """``w`` in C order. A transposed operand (``prune(w.T).T``, a PyTorch ``(out, in)``
    weight's ``.T``) is copied in blocks of :data:`_ORDER_BLOCK` columns: a whole-array copy
    reads a column at a time with a power-of-two stride, whose cache lines collide, and was
    6x slower on a 4096 × 11008 ``int8`` matrix."""
    if w.flags.c_contiguous:
        return w
    out = np.empty(w.shape, dtype=w.dtype)
    for start in range(0, w.shape[1], _ORDER_BLOCK):
        out[:, start:start + _ORDER_BLOCK] = w[:, start:start + _ORDER_BLOCK]
    return out


def _packed_rows(cfg: MacroConfig, values: np.ndarray, n_tiles: int,
                 meta: np.ndarray | None = None) -> np.ndarray:
    """LOAD_W bytes of ``values`` ``(rows, n)`` (and positions ``meta``) cut in runs of
    ``cols`` outputs: ``(rows · n_tiles, nbytes)``, row ``i · n_tiles + nt`` holding outputs
    ``nt·cols ..`` of row ``i`` (outputs beyond ``n`` are zero weights at position 0)."""
    rows, n_out = values.shape
    width = n_tiles * cfg.cols

    def cut(array):
        if n_out == width:
            return array.reshape(-1, cfg.cols)
        padded = np.zeros((rows, width), dtype=array.dtype)
        padded[:, :n_out] = array
        return padded.reshape(-1, cfg.cols)

    nbytes = beat_bytes(cfg.data_bits)
    if meta is None or not cfg.meta_bits:
        return pack_rows(lambda v: pack_weight_row_bytes(cfg, v), cut(values), nbytes)
    return pack_rows(lambda v, p: pack_weight_row_bytes(cfg, v, p), cut(values), nbytes,
                     cut(meta))


def _activation_bytes(cfg: MacroConfig, mapping: TileMapping, x: np.ndarray) -> np.ndarray:
    """LOAD_A beats of every activation entry as bytes: ``uint8`` ``(k_tiles, tokens ·
    act_beats, nbytes)``; entry (k tile, token) is ``act_beats`` beats, zero beyond the
    tile's inputs."""
    tokens = x.shape[0]
    k_tiles, inputs = mapping.k_tiles, mapping.pass_inputs
    act_beats = cfg.act_beats(*mapping.pattern)
    padded_x = np.zeros((k_tiles, tokens, act_beats * cfg.act_lanes), dtype=x.dtype)
    for kt in range(k_tiles):
        block = x[:, kt * inputs:(kt + 1) * inputs]
        padded_x[kt, :, :block.shape[1]] = block
    layout = act_beat_layout(cfg)
    nbytes = beat_bytes(cfg.data_bits)
    a_raw = pack_rows(lambda values: pack_beat_bytes(layout, values),
                      padded_x.reshape(-1, cfg.act_lanes), nbytes)
    return a_raw.reshape(k_tiles, tokens * act_beats, nbytes)


def schedule_layer(cfg: MacroConfig, x, w, pattern=None) -> GemmSchedule:
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
    GemmSchedule
        Its trace, run on the golden model or the RTL, gives result beats that
        :meth:`GemmSchedule.assemble` turns into exactly ``matmul_reference(x, w)``. The loop
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
    x, w = check_shapes(cfg, x, w)
    pattern = as_pattern(pattern)
    cfg.check_pattern(*pattern)
    tokens, k = x.shape
    n = w.shape[1]
    mapping = map_nm(cfg, k, n, pattern)
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    resident, chunk, _ = _best_variant(mapping, tokens)

    # Every beat is packed once, in bulk, as bytes; steps hold views of these arrays.
    w_raw = tile_weight_bytes(cfg, mapping, w)
    a_raw = _activation_bytes(cfg, mapping, x)
    meta = {
        "workload": "gemm", "mapping": "linear" if pattern == (1, 1) else "nm",
        "pattern": str(NMPattern(*pattern)),
        "tokens": tokens, "k": k, "n": n, "k_tiles": k_tiles, "n_tiles": n_tiles,
        "utilization": mapping.utilization,
        "loop": "resident" if resident else "streaming", "chunk": chunk,
    }
    trace = Trace(cfg, meta=meta)
    reads = _steps(mapping, tokens, resident, chunk, w_raw, a_raw, trace.steps)
    return GemmSchedule(trace=trace, mapping=mapping, tokens=tokens, reads=reads,
                        resident=resident, chunk=chunk)


def chain(schedules: list[GemmSchedule]) -> Trace:
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
