"""The paths before issue 17, kept as the reference the faster ones must equal.

Tests run both on the same inputs and compare every word and counter; ``make bench`` measures
both in the same run and prints the ratios. Nothing else uses this module.

- :func:`pack_beats_reference` .. :func:`unpack_weight_rows_reference`: beat packing through
  ``int64`` bit arrays and one Python ``int`` per beat.
- :func:`run_trace_reference`: the golden model one command at a time, every beat a Python
  ``int`` decoded through bit arrays.
- :func:`schedule_layer_reference`: the scheduler building ``int64`` tiles and Python ``int``
  beats, with the N:M partial last tile loading every row up to the last one it uses (one
  LOAD_W from row 0), as before the fix; its traces run on either golden model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from ..hw.config import MacroConfig
from ..hw.isa import (
    COUNTERS,
    ISA_VERSION,
    Command,
    CycleCost,
    DecodeError,
    ErrorCode,
    Opcode,
    act_beat_layout,
    check,
    config_command,
    cycles,
    data_beats,
    decode,
    encode,
    move_window,
    part_fits,
    pattern_of,
    requantize,
    weight_row_layout,
)
from ..hw.trace import Step, Trace
from .golden import GoldenResult, _exact_in_float64, wrap_signed
from .mapping import TileMapping, map_nm
from .nm import NMPattern, compress
from .reference import check_int_matrix
from .schedule.gemm import GemmSchedule, ReadBlock, _variants, as_pattern

__all__ = ["pack_beats_reference", "unpack_beats_reference", "pack_weight_rows_reference",
           "unpack_weight_rows_reference", "run_trace_reference", "schedule_layer_reference"]

#: Beats packed per call, as before.
_PACK_BLOCK = 8192


def _lane_range(shape: Shape) -> tuple[int, int]:
    if shape.signed:
        return -(2 ** (shape.width - 1)), 2 ** (shape.width - 1) - 1
    return 0, 2 ** shape.width - 1


def pack_beats_reference(layout: data.ArrayLayout, values) -> list[int]:
    """Pack rows of lane values into beat words as ``layout`` places them.

    ``values`` has shape ``(beats, lanes)`` with ``lanes <= layout.length``; missing lanes are
    zero. Lanes are signed or unsigned as ``layout.elem_shape`` says. Raises ``ValueError`` for
    a value outside the lane's range.
    """
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2 or values.shape[1] > layout.length:
        raise ValueError(f"beat values must have shape (beats, <= {layout.length}), "
                         f"not {values.shape}")
    shape = Shape.cast(layout.elem_shape)
    width = shape.width
    lo, hi = _lane_range(shape)
    if values.size and (values.min() < lo or values.max() > hi):
        bad = values[(values < lo) | (values > hi)][0]
        kind = "signed" if shape.signed else "unsigned"
        raise ValueError(f"lane value must be in {lo}..{hi} ({width}-bit {kind}), not {bad}")
    nbytes = -(-layout.size // 8)
    bits = np.zeros((values.shape[0], nbytes * 8), dtype=np.uint8)
    lane_bits = (values[:, :, None] >> np.arange(width)) & 1
    for lane in range(values.shape[1]):
        offset = layout[lane].offset
        bits[:, offset:offset + width] = lane_bits[:, lane]
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_beats_reference(layout: data.ArrayLayout, words) -> np.ndarray:
    """Inverse of :func:`pack_beats`: beat words to an ``int64`` array ``(beats, lanes)``."""
    shape = Shape.cast(layout.elem_shape)
    width = shape.width
    size = layout.size  # computed by amaranth on every access: hoisted out of the loop
    nbytes = -(-size // 8)
    limit = 2 ** size
    words = list(words)
    for word in words:
        if not 0 <= word < limit:
            raise ValueError(f"beat word must fit {size} bits, not {word:#x}")
    raw = np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words),
                        dtype=np.uint8).reshape(len(words), nbytes)
    if width in (8, 16, 32) and all(layout[i].offset == i * width for i in range(layout.length)):
        # Byte-aligned lanes: a little-endian view is the decoding.
        lanes = raw[:, :layout.length * width // 8].copy()
        kind = "i" if shape.signed else "u"
        return lanes.view(f"<{kind}{width // 8}").astype(np.int64)
    bits = np.unpackbits(raw, axis=1, bitorder="little").astype(np.int64)
    weights = 2 ** np.arange(width, dtype=np.int64)
    if shape.signed:
        weights[-1] = -weights[-1]  # two's complement sign bit
    out = np.empty((len(words), layout.length), dtype=np.int64)
    for lane in range(layout.length):
        offset = layout[lane].offset
        out[:, lane] = bits[:, offset:offset + width] @ weights
    return out


def pack_weight_rows_reference(cfg: MacroConfig, weights, meta=None) -> list[int]:
    """LOAD_W beat words from ``weights`` and ``meta``, both ``(rows, <= cols)``; ``meta``
    (each weight's position in its group) defaults to zeros. Raises ``ValueError`` for a
    weight or a position out of its range, or metadata given to a dense-only config."""
    layout = weight_row_layout(cfg)
    words = pack_beats_reference(layout["weight"].shape, weights)
    if meta is None:
        return words
    meta = np.asarray(meta, dtype=np.int64)
    if meta.shape != np.shape(weights):
        raise ValueError(f"meta must have the shape of weights {np.shape(weights)}, "
                         f"not {meta.shape}")
    if not cfg.meta_bits:
        if meta.any():
            raise ValueError("metadata must be 0 on a dense-only config (meta_bits is 0)")
        return words
    shift = layout["meta"].offset
    meta_words = pack_beats_reference(layout["meta"].shape, meta)
    return [w | (mw << shift) for w, mw in zip(words, meta_words, strict=True)]


def unpack_weight_rows_reference(cfg: MacroConfig, words) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_weight_rows`: ``(weights, meta)``, each ``(rows, cols)``
    ``int64`` (``meta`` is zeros for a dense-only config)."""
    layout = weight_row_layout(cfg)
    words = list(words)
    limit = 2 ** layout.size
    for word in words:
        if not 0 <= word < limit:
            raise ValueError(f"weight row word must fit {layout.size} bits, not {word:#x}")
    field = layout["weight"]
    low = (1 << field.shape.size) - 1
    weights = unpack_beats_reference(field.shape, [w & low for w in words])
    if not cfg.meta_bits:
        return weights, np.zeros_like(weights)
    shift = layout["meta"].offset
    return weights, unpack_beats_reference(layout["meta"].shape, [w >> shift for w in words])


@dataclass(frozen=True)
class _Word:
    """What the model needs of one distinct command word, computed once."""
    opcode: Opcode | None   # None for an undefined opcode
    error: ErrorCode
    args: tuple             # operand values in the order the executor unpacks them
    beats: int              # data beats consumed
    cost: CycleCost
    text: str               # for error messages


def _decode_word(cfg, word: int, pattern: tuple[int, int]) -> _Word:
    try:
        cmd = decode(cfg, word)
    except DecodeError as exc:
        return _Word(None, exc.code, (), 0, CycleCost(), f"<illegal: {exc}>")
    error = check(cfg, cmd)
    if (error == ErrorCode.NONE and cmd.opcode == Opcode.COMPUTE
            and not part_fits(cfg, cmd.part, pattern)):
        error = ErrorCode.ADDRESS_RANGE  # the part must exist in the current pattern
    if error != ErrorCode.NONE:
        return _Word(cmd.opcode, error, (), 0, CycleCost(), str(cmd))
    op = cmd.opcode
    args = {
        Opcode.LOAD_W: lambda: (cmd.row, cmd.count),
        Opcode.LOAD_A: lambda: (cmd.addr, cmd.count),
        Opcode.COMPUTE: lambda: (cmd.act_addr, cmd.acc_addr, cmd.count, bool(cmd.accumulate),
                                 cmd.part),
        Opcode.READ: lambda: (cmd.addr, cmd.count, cmd.bank),
        Opcode.MOVE: lambda: (cmd.bank, cmd.acc_addr, cmd.act_addr, cmd.elem, cmd.count,
                              bool(cmd.transpose), *move_window(cfg, cmd)),
        Opcode.CONFIG: lambda: (pattern_of(cfg, cmd), cmd.split, cmd.shift),
    }.get(op, lambda: ())()
    return _Word(op, error, args, data_beats(cfg, cmd, pattern), cycles(cfg, cmd, pattern),
                 str(cmd))


def _nm_pass_sums(cfg, n: int, m: int, entries: np.ndarray, weights: np.ndarray,
                  meta: np.ndarray) -> np.ndarray:
    """Column sums of passes over ``entries`` (``count × entry lanes``) in pattern ``n:m``."""
    g = np.arange(cfg.weight_rows)
    sub, row = g // cfg.rows, g % cfg.rows
    base = ((sub // n) * cfg.rows + row) * m                  # first element of the row's group
    element = base[:, None] + np.minimum(meta, m - 1)          # (weight_rows, cols)
    live = np.where(meta < m, weights, 0)                      # positions >= m select 0
    chosen = entries[:, element]                               # (count, weight_rows, cols)
    return np.einsum("tgc,gc->tc", chosen, live)


def run_trace_reference(trace: Trace) -> GoldenResult:  # noqa: C901
    """Execute ``trace`` and predict its cycles (see the module docstring for the model).

    Parameters
    ----------
    trace : Trace
        Any trace for ``trace.config``, legal or not.

    Returns
    -------
    GoldenResult
        Result beats, predicted counters, final error status, whether the machine halted, and
        the number of commands fetched.

    Raises
    ------
    ValueError
        If the trace was encoded for another ISA version; if a command word is wider than the
        command layout; or if a command needs more data beats than the trace has left (the RTL
        would wait for data forever), as ``"command 3 (LOAD_W row=0 count=4) needs 4 data
        beats, the trace has 2 left"``.
    """
    if trace.isa_version != ISA_VERSION:
        raise ValueError(f"trace isa_version must be {ISA_VERSION}, not {trace.isa_version!r}")
    cfg = trace.config
    words = trace.commands
    data = trace.data

    # Pass 1: decode, find where the machine halts, give every data beat to its command.
    known: dict[tuple, _Word] = {}
    plan = []                          # (_Word, pattern, first beat index in its beat list)
    keys = []                          # (word, pattern) of every fetched command
    w_beats: list[int] = []
    a_beats: list[int] = []
    cursor = 0
    error = ErrorCode.NONE
    halted = False
    pattern, split, shift = (1, 1), 0, 0
    for index, word in enumerate(words):
        key = (word, pattern)
        info = known.get(key)
        if info is None:
            info = known[key] = _decode_word(cfg, word, pattern)
        keys.append(key)
        if info.error != ErrorCode.NONE:
            error, halted = info.error, True
            break
        if info.opcode == Opcode.END:
            halted = True
            break
        need = info.beats
        if need:
            if cursor + need > len(data):
                raise ValueError(f"command {index} ({info.text}) needs {need} data beats, "
                                 f"the trace has {len(data) - cursor} left")
            beats = w_beats if info.opcode == Opcode.LOAD_W else a_beats
            plan.append((info, (pattern, split, shift), len(beats)))
            beats.extend(data[cursor:cursor + need])
            cursor += need
        else:
            plan.append((info, (pattern, split, shift), 0))
        if info.opcode == Opcode.CONFIG:
            pattern, split, shift = info.args

    # Cycle model: every fetched command costs its (memoised) cost; an illegal one only its
    # fetch cycle, which _decode_word already gave it.
    counters = dict.fromkeys(COUNTERS, 0)
    for key, times in Counter(keys).items():
        for name, value in known[key].cost.as_dict().items():
            counters[name] += times * value

    # Pass 2: execute, with every beat already unpacked in bulk.
    exact_float = _exact_in_float64(cfg)
    dtype = np.float64 if exact_float else np.int64
    weights = np.zeros((cfg.weight_rows, cfg.cols), dtype=dtype)
    meta = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
    entry_lanes = cfg.max_act_beats * cfg.act_lanes
    acts = np.zeros((cfg.act_depth, entry_lanes), dtype=dtype)
    accs = np.zeros((cfg.acc_depth, cfg.submacros, cfg.cols), dtype=np.int64)  # entry, bank
    w_vals, m_vals = (unpack_weight_rows_reference(cfg, w_beats) if w_beats
                      else (np.zeros((0, cfg.cols), np.int64),) * 2)
    w_vals = w_vals.astype(dtype)
    a_vals = (unpack_beats_reference(act_beat_layout(cfg), a_beats).astype(dtype) if a_beats
              else np.zeros((0, cfg.act_lanes), dtype=dtype))
    results = []
    for info, ((n, m), split, shift), first in plan:
        op = info.opcode
        if op == Opcode.COMPUTE:
            act_addr, acc_addr, count, accumulate, part = info.args
            offset = part * cfg.pass_inputs(n, m)
            entries = acts[act_addr:act_addr + count, offset:]
            if (n, m) != (1, 1):
                banks = _nm_pass_sums(cfg, n, m, entries, weights, meta)[:, None]
            else:
                # Each sub-macro's column sums, then summed within each of the 2**split groups.
                per_sub = np.einsum("tsr,src->tsc",
                                    entries[:, :cfg.reduction].reshape(count, cfg.submacros,
                                                                       cfg.rows),
                                    weights.reshape(cfg.submacros, cfg.rows, cfg.cols))
                banks = per_sub.reshape(count, 2 ** split, -1, cfg.cols).sum(axis=2)
            if exact_float:
                banks = banks.astype(np.int64)
            rows = slice(acc_addr, acc_addr + count)
            written = slice(0, banks.shape[1])
            if accumulate:
                accs[rows, written] = wrap_signed(accs[rows, written] + banks, cfg.acc_bits)
            else:
                # A pass sum fits pass_sum_bits <= acc_bits: nothing to wrap.
                accs[rows, written] = banks
        elif op == Opcode.MOVE:
            bank, acc_addr, act_addr, elem, count, transpose, lane, dst, width = info.args
            values = requantize(cfg, accs[acc_addr:acc_addr + count, bank, lane:lane + width],
                                shift)
            if transpose:
                # Entry k is column elem + k of a cols × cols block: its window lane t is row
                # dst + t.
                for k in range(count):
                    acts[act_addr, dst * cfg.cols + elem + k:(dst + width) * cfg.cols:
                         cfg.cols] = values[k]
            else:
                first = elem * cfg.cols + dst
                acts[act_addr:act_addr + count, first:first + width] = values
        elif op == Opcode.LOAD_W:
            row, count = info.args
            weights[row:row + count] = w_vals[first:first + count]
            meta[row:row + count] = m_vals[first:first + count]
        elif op == Opcode.LOAD_A:
            # Element j of an entry is lane j % act_lanes of beat j // act_lanes (row-major);
            # every lane of the beats is written, the entry's later beats are kept.
            addr, count = info.args
            beats = cfg.act_beats(n, m)
            block = a_vals[first:first + count * beats].reshape(count, beats * cfg.act_lanes)
            acts[addr:addr + count, :beats * cfg.act_lanes] = block
        elif op == Opcode.READ:
            addr, count, bank = info.args
            results.append(accs[addr:addr + count, bank].copy())
        # CONFIG: its pattern was applied in pass 1 (check() refused unsupported ones).

    out = np.concatenate(results) if results else np.zeros((0, cfg.cols), dtype=np.int64)
    return GoldenResult(out, counters, error, halted, len(keys), len(data) - cursor)


def _pack(layout, values: np.ndarray) -> list[int]:
    """:func:`pack_beats` in blocks, so that huge operands do not need huge bit arrays."""
    words: list[int] = []
    for start in range(0, values.shape[0], _PACK_BLOCK):
        words += pack_beats_reference(layout, values[start:start + _PACK_BLOCK])
    return words


def _pack_weights(cfg: MacroConfig, weights: np.ndarray, meta: np.ndarray) -> list[int]:
    """:func:`pack_weight_rows` in blocks."""
    words: list[int] = []
    for start in range(0, weights.shape[0], _PACK_BLOCK):
        end = start + _PACK_BLOCK
        words += pack_weight_rows_reference(cfg, weights[start:end],
                                  meta[start:end] if cfg.meta_bits else None)
    return words


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
    ops = [(config_command(mapping.pattern), None)]
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


def _best_plan(mapping: TileMapping, tokens: int):
    """(resident, chunk, ops, reads, counters) of the variant with fewest predicted cycles;
    min() keeps the first of equals, so resident wins ties."""
    plans = []
    for resident, chunk in _variants(mapping, tokens):
        ops, reads = _plan(mapping, tokens, resident, chunk)
        plans.append((resident, chunk, ops, reads, _plan_counters(mapping.config, ops)))
    return min(plans, key=lambda plan: plan[4]["total"])


def check_shapes(cfg: MacroConfig, x, w):
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


def schedule_layer_reference(cfg: MacroConfig, x, w, pattern=None) -> GemmSchedule:
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
    return GemmSchedule(trace=trace, mapping=mapping, tokens=tokens, reads=reads,
                        resident=resident, chunk=chunk)
