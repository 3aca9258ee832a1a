"""L1 golden model: executes a trace in numpy, bit-exact, and predicts the RTL's cycle count.

The model keeps the macro's architectural state and applies each command as a whole:

- weight array: ``weight_rows × cols`` signed weights and their metadata (global row ``g`` is
  row ``g % rows`` of sub-macro ``g // rows``);
- activation buffer: ``act_depth`` entries of ``max_act_beats × act_lanes`` signed
  activations (LOAD_A writes the first ``act_beats(n, m)`` beats of an entry);
- output accumulator: ``acc_depth`` entries of P banks of ``cols`` signed ``acc_bits`` values;
- pattern ``(n, m)``: ``(1, 1)`` (dense) until a CONFIG selects another; ``split`` and
  ``shift``: 0 until a CONFIG sets them.

A dense pass with ``split = s`` sums sub-macros in ``2**s`` aligned groups and writes group
``j`` into bank ``j`` (N:M passes always sum all into bank 0); other banks keep their values.
COMPUTE ``part`` shifts the entry by ``part × pass_inputs(n, m)`` elements. MOVE requantizes
a lane window of accumulator entries of one bank into the activation buffer (straight, or
transposed as the columns of a ``cols × cols`` block) with
:func:`~sparsecim.hw.isa.requantize`; the window's lanes may start at another lane than they
land on (:func:`~sparsecim.hw.isa.move_window`).

A pass in dense multiplies entry elements ``0 .. rows·P - 1`` with the weight rows and ignores
the metadata. A pass in ``n:m`` gives the cell of sub-macro ``s``, row ``r``, column ``c``
with metadata ``p`` the entry element ``((s // n)·rows + r)·m + p`` (0 if ``p >= m``): the
clusters, distribution and in-cell select of the ISA reference, written here independently of
the RTL's routing table.

All of it starts at zero. The RTL does not clear its memories at reset, so a trace must not
read state it never wrote unless the result cannot depend on it (the scheduler only lets stale
weights meet zero activations).

Cycle model
-----------
The model predicts the performance counters of the RTL status port, command by command, with
every stream ready (no stalls). The per-command costs are :func:`sparsecim.hw.isa.cycles`:

============  ==========================================================================
command       cycles
============  ==========================================================================
CONFIG        1 fetch
LOAD_W        1 fetch + ``count`` load (one weight row per data beat)
LOAD_A        1 fetch + ``count × act_beats(n, m)`` load (one data beat per cycle)
COMPUTE       1 fetch + ``count`` + ``COMPUTE_DRAIN`` compute (one pass issued per cycle,
              then the pipeline drains before the next fetch)
READ          1 fetch + ``count`` read (one result beat per cycle)
MOVE          1 fetch + ``count`` load (one accumulator entry per cycle)
END           1 fetch, then halt
illegal       1 fetch (the command is checked in its fetch cycle), then halt with its
              :class:`~sparsecim.hw.isa.ErrorCode`; it consumes no data
============  ==========================================================================

``total`` is the sum of the categories. ``stall`` is always 0 here; the RTL counts stalled
cycles separately, so the check against a run with stream pauses is
``RTL total - RTL stall == model total`` and equality of every other category.

The data stream is one flat stream: commands take their beats from :attr:`Trace.data` in
order, whatever the grouping of beats into trace steps (the hardware cannot see steps).

Speed
-----
Command words are decoded once per distinct word and pattern (a schedule repeats few words).
Beats stay arrays end to end: the data stream is read as its byte view
(:meth:`~sparsecim.hw.trace.Trace.data_array`) and every weight and activation beat of the run
is unpacked in bulk, in its own small dtype. Passes are not executed one command at a time:
a first walk over the commands records, for each COMPUTE, which beat last wrote each weight
row and each activation entry; then the passes of all COMPUTEs of the same shape (pattern,
split, part, count) run as batched matrix products, blocks of them at once (``float64`` when
every partial sum is exactly representable, which holds for all practical configurations;
N:M weights are first scattered to the dense matrix over the entry's elements that their
metadata selects); a last walk applies the pass sums to the accumulators and collects the
READs. A trace with MOVE (whose activations come from the accumulators) runs command by
command instead, with the same bulk unpacking.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..hw.isa import (
    COUNTERS,
    ISA_VERSION,
    CycleCost,
    DecodeError,
    ErrorCode,
    Opcode,
    act_beat_layout,
    check,
    cycles,
    data_beats,
    decode,
    move_window,
    part_fits,
    pattern_of,
    requantize,
    unpack_beat_bytes,
    unpack_weight_row_bytes,
    weight_row_layout,
)
from ..hw.trace import Trace

__all__ = ["GoldenResult", "run_trace", "wrap_signed"]


def wrap_signed(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement wrap of ``int64`` ``values`` to ``bits`` (1 to 64) signed bits.

    Inputs must lie within ``-2**63 + 2**(bits-1) .. 2**63 - 2**(bits-1)`` (so that adding the
    half range cannot overflow); sums of two ``bits``-bit values always do. At 64 bits the
    values are returned unchanged (``int64`` arithmetic already wrapped them).
    """
    if bits >= 64:
        return values
    span = np.int64(1) << np.int64(bits)
    half = np.int64(1) << np.int64(bits - 1)
    return ((values + half) & (span - 1)) - half


@dataclass
class GoldenResult:
    """Outcome of a trace on the golden model.

    Attributes
    ----------
    results : ndarray
        Every result beat in order, shape ``(beats, cols)``, ``int64``; beats of READs that
        ran before an error are included.
    counters : dict
        Predicted counters by name, :data:`~sparsecim.hw.isa.COUNTERS` in order; ``stall`` is
        0 and ``total`` is the sum of the others. Exact, not saturated (see
        :meth:`saturated`).
    error : ErrorCode
        The status at the end: ``NONE`` unless a command was illegal.
    halted : bool
        True if the trace reached END or an illegal command; False if the commands ran out
        first (the RTL would then wait for more).
    commands : int
        Commands fetched, the halting one included.
    data_left : int
        Data beats of the trace that no command consumed (0 for a well-formed trace; the RTL
        would leave them waiting on the data stream).
    """
    results: np.ndarray
    counters: dict
    error: ErrorCode
    halted: bool
    commands: int
    data_left: int = field(default=0)

    def saturated(self, counter_bits: int) -> dict:
        """The counters as the RTL status port shows them with no stalls: each saturates at
        ``2**counter_bits - 1`` (so ``total`` may then differ from the sum of the others)."""
        top = 2 ** counter_bits - 1
        return {name: min(value, top) for name, value in self.counters.items()}


class _LoadW(NamedTuple):
    row: int
    count: int


class _LoadA(NamedTuple):
    addr: int
    count: int


class _Compute(NamedTuple):
    act_addr: int
    acc_addr: int
    count: int
    accumulate: bool
    part: int


class _Read(NamedTuple):
    addr: int
    count: int
    bank: int


class _Move(NamedTuple):
    bank: int
    acc_addr: int
    act_addr: int
    elem: int
    count: int
    transpose: bool
    lane: int       # the window (move_window): ``width`` lanes from ``lane`` land from ``dst``
    dst: int
    width: int


class _Config(NamedTuple):
    pattern: tuple[int, int]
    split: int
    shift: int


#: What the model needs of each opcode's operands, by name, read once from its decoded
#: command (END has none).
_OPERANDS = {
    Opcode.LOAD_W: lambda cfg, cmd: _LoadW(cmd.row, cmd.count),
    Opcode.LOAD_A: lambda cfg, cmd: _LoadA(cmd.addr, cmd.count),
    Opcode.COMPUTE: lambda cfg, cmd: _Compute(cmd.act_addr, cmd.acc_addr, cmd.count,
                                              bool(cmd.accumulate), cmd.part),
    Opcode.READ: lambda cfg, cmd: _Read(cmd.addr, cmd.count, cmd.bank),
    Opcode.MOVE: lambda cfg, cmd: _Move(cmd.bank, cmd.acc_addr, cmd.act_addr, cmd.elem,
                                        cmd.count, bool(cmd.transpose), *move_window(cfg, cmd)),
    Opcode.CONFIG: lambda cfg, cmd: _Config(pattern_of(cfg, cmd), cmd.split, cmd.shift),
}


@dataclass(frozen=True)
class _Word:
    """What the model needs of one distinct command word, computed once."""
    opcode: Opcode | None   # None for an undefined opcode
    error: ErrorCode
    ops: NamedTuple | None  # the operands (_OPERANDS); None for END and illegal commands
    beats: int              # data beats consumed
    cost: CycleCost
    text: str               # for error messages


@functools.lru_cache(maxsize=1 << 16)
def _decode_word(cfg, word: int, pattern: tuple[int, int]) -> _Word:
    try:
        cmd = decode(cfg, word)
    except DecodeError as exc:
        return _Word(None, exc.code, None, 0, CycleCost(), f"<illegal: {exc}>")
    error = check(cfg, cmd)
    if (error == ErrorCode.NONE and cmd.opcode == Opcode.COMPUTE
            and not part_fits(cfg, cmd.part, pattern)):
        error = ErrorCode.ADDRESS_RANGE  # the part must exist in the current pattern
    if error != ErrorCode.NONE:
        return _Word(cmd.opcode, error, None, 0, CycleCost(), str(cmd))
    operands = _OPERANDS.get(cmd.opcode)
    return _Word(cmd.opcode, error, operands(cfg, cmd) if operands else None,
                 data_beats(cfg, cmd, pattern), cycles(cfg, cmd, pattern), str(cmd))


def _exact_in_float64(cfg) -> bool:
    """True if every partial sum of a pass is an integer float64 represents exactly: products
    are at most ``2**(product_bits-2)`` in magnitude and a pass adds ``reduction`` of them."""
    return cfg.reduction * 2 ** (cfg.product_bits - 2) <= 2 ** 53


#: Matrix elements (weights plus activations) of one batch of passes, to bound memory.
_BATCH_ELEMENTS = 1 << 22


def run_trace(trace: Trace) -> GoldenResult:
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
    data_count = trace.data_beats
    plan, keys, known, error, halted, cursor = _plan(cfg, trace.commands, data_count)
    has_move = any(info.opcode == Opcode.MOVE for info, _, _ in plan)
    has_nm = any(info.opcode == Opcode.CONFIG and info.ops.pattern != (1, 1)
                 for info, _, _ in plan)

    # Cycle model: every fetched command costs its (memoised) cost; an illegal one only its
    # fetch cycle, which _decode_word already gave it.
    counters = dict.fromkeys(COUNTERS, 0)
    for key, times in Counter(keys).items():
        for name, value in known[key].cost.as_dict().items():
            counters[name] += times * value

    # Every beat unpacked in bulk from the byte view, as a weight row and as activations
    # (views of the bytes when the lanes are whole bytes), beat i at index i; one zero beat
    # appended stands for "never written since reset". Metadata only matters to N:M passes,
    # so it is decoded only if the trace selects a pattern.
    raw = trace.data_array(extra=1)
    w_vals, m_vals = unpack_weight_row_bytes(cfg, raw, None) if has_nm else (
        unpack_beat_bytes(weight_row_layout(cfg)["weight"].shape, raw, None), None)
    a_vals = unpack_beat_bytes(act_beat_layout(cfg), raw, None)

    execute = _execute_in_order if has_move else _execute_batched
    results = execute(cfg, plan, w_vals, m_vals, a_vals)
    out = np.concatenate(results) if results else np.zeros((0, cfg.cols), dtype=np.int64)
    return GoldenResult(out, counters, error, halted, len(keys), data_count - cursor)


def _plan(cfg, words, data_count: int):
    """Pass 1: decode every word (once per distinct word and pattern), find where the machine
    halts and give every command its first data beat. Returns ``(plan, keys, known, error,
    halted, cursor)``: ``plan`` holds ``(_Word, (pattern, split, shift), first beat)`` of
    every command before the halt, ``keys`` the ``(word, pattern)`` of every fetched command
    (the halting one included), ``known`` their decodings, ``cursor`` the beats consumed."""
    known: dict[tuple, _Word] = {}
    plan = []
    keys = []
    cursor = 0
    mode = ((1, 1), 0, 0)              # pattern, split, shift: a CONFIG sets them
    for index, word in enumerate(words):
        key = (word, mode[0])
        info = known.get(key)
        if info is None:
            info = known[key] = _decode_word(cfg, word, mode[0])
        keys.append(key)
        if info.error != ErrorCode.NONE:
            return plan, keys, known, info.error, True, cursor
        if info.opcode == Opcode.END:
            return plan, keys, known, ErrorCode.NONE, True, cursor
        need = info.beats
        if need and cursor + need > data_count:
            raise ValueError(f"command {index} ({info.text}) needs {need} data beats, "
                             f"the trace has {data_count - cursor} left")
        plan.append((info, mode, cursor if need else 0))
        cursor += need
        if info.opcode == Opcode.CONFIG:
            mode = tuple(info.ops)
    return plan, keys, known, ErrorCode.NONE, False, cursor


def _apply(cfg, accs: np.ndarray, acc_addr: int, accumulate: bool, banks: np.ndarray) -> None:
    """Write a COMPUTE's pass sums ``(count, banks, cols)`` into the accumulators."""
    rows = slice(acc_addr, acc_addr + banks.shape[0])
    written = slice(0, banks.shape[1])
    if accumulate:
        accs[rows, written] = wrap_signed(accs[rows, written] + banks, cfg.acc_bits)
    else:
        # A pass sum fits pass_sum_bits <= acc_bits: nothing to wrap.
        accs[rows, written] = banks


def _pass_sums(cfg, n: int, m: int, split: int, entries: np.ndarray, weights: np.ndarray,
               meta: np.ndarray) -> np.ndarray:
    """Bank sums of a batch of passes: ``entries`` ``(batch, count, lanes)`` from the pass's
    part on, ``weights`` and ``meta`` ``(batch, weight_rows, cols)``; returns ``(batch,
    count, banks, cols)`` in the entries' dtype."""
    batch, count = entries.shape[:2]
    if (n, m) == (1, 1):
        # Each sub-macro's column sums, then summed within each of the 2**split groups.
        if split == 0:
            return np.matmul(entries[:, :, :cfg.reduction], weights)[:, :, None]
        per_sub = np.einsum("btsr,bsrc->btsc",
                            entries[:, :, :cfg.reduction].reshape(batch, count, cfg.submacros,
                                                                  cfg.rows),
                            weights.reshape(batch, cfg.submacros, cfg.rows, cfg.cols))
        return per_sub.reshape(batch, count, 2 ** split, -1, cfg.cols).sum(axis=3)
    # N:M: the cell of global row g, column c takes entry element base[g] + meta (a position
    # >= m selects 0): gather each cell's activation, then multiply and sum over the rows.
    g = np.arange(cfg.weight_rows)
    base = ((g // cfg.rows // n) * cfg.rows + g % cfg.rows) * m
    element = base[None, :, None] + np.minimum(meta, m - 1).astype(np.int64)
    live = np.where(meta < m, weights, 0)
    lanes = entries.shape[2]
    flat = (element[:, None] + (np.arange(count) * lanes)[None, :, None, None])
    chosen = np.take_along_axis(entries.reshape(batch, count * lanes),
                                flat.reshape(batch, -1), axis=1)
    chosen = chosen.reshape(batch, count, cfg.weight_rows, cfg.cols)
    return np.einsum("btgc,bgc->btc", chosen, live)[:, :, None]


def _spans(starts, counts) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` of every span, without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    if not counts.sum():
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    return (np.repeat(np.asarray(starts, dtype=np.int64) - ends + counts, counts)
            + np.arange(int(ends[-1]), dtype=np.int64))


def _last_writer(slots, times, sources, query_slots, query_times, none: int) -> np.ndarray:
    """For every query (slot, time): the source of the last write to that slot before that
    time, ``none`` if there is none. Writes are ``(slot, time, source)`` arrays in time order;
    all in one sort and one search."""
    if not len(slots):
        return np.full(len(query_slots), none, dtype=np.int64)
    scale = int(max(times.max(initial=0), query_times.max(initial=0))) + 2
    keys = slots * scale + times
    # The writes come in time order, so a stable sort by slot alone orders them by (slot,
    # time); numpy radix-sorts 16-bit keys.
    order = np.argsort(slots.astype(np.uint16) if slots.max() < 1 << 16 else keys,
                       kind="stable")
    keys, slots, sources = keys[order], slots[order], sources[order]
    found = np.searchsorted(keys, query_slots * scale + query_times) - 1
    hit = found >= 0
    hit[hit] = slots[found[hit]] == query_slots[hit]
    return np.where(hit, sources[np.maximum(found, 0)], none)


class _Walk:
    """The first walk of :func:`_execute_batched` over the commands, one handler an opcode
    (:attr:`HANDLERS`; CONFIG was applied in pass 1): the weight and activation loads, the
    COMPUTEs grouped by shape, and the COMPUTEs and READs in trace order."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.loads_w = []              # (time, row, count, first beat)
        self.loads_a = []              # (time, addr, count, first beat, beats per entry)
        self.groups = {}               # (n, m, split, part, count) -> [(time, first pass,
        self.passes = 0                #                                 act_addr)]
        self.banks_used = 1
        self.order = []                # ("c", first pass, count, acc_addr, accumulate,
                                       #  banks) or ("r", addr, count, bank)

    def load_w(self, time, ops: _LoadW, mode, first):
        self.loads_w.append((time, ops.row, ops.count, first))

    def load_a(self, time, ops: _LoadA, mode, first):
        self.loads_a.append((time, ops.addr, ops.count, first, self.cfg.act_beats(*mode[0])))

    def compute(self, time, ops: _Compute, mode, first):
        (n, m), split, _ = mode
        self.groups.setdefault((n, m, split, ops.part, ops.count), []).append(
            (time, self.passes, ops.act_addr))
        banks = 2 ** split if (n, m) == (1, 1) else 1
        self.banks_used = max(self.banks_used, banks)
        self.order.append(("c", self.passes, ops.count, ops.acc_addr, ops.accumulate, banks))
        self.passes += ops.count

    def read(self, time, ops: _Read, mode, first):
        self.order.append(("r", ops.addr, ops.count, ops.bank))

    HANDLERS = {Opcode.LOAD_W: load_w, Opcode.LOAD_A: load_a, Opcode.COMPUTE: compute,
                Opcode.READ: read}


def _writes(cfg, walk: _Walk):
    """Every write of a weight row and of an activation entry beat as ``(slots, times,
    sources)`` arrays in time order: weight row r from beat ``first + r - row``; entry beat
    slot ``e·max_act_beats + b`` from beat ``first + (e - addr)·beats + b``."""
    w_ev = np.array(walk.loads_w, dtype=np.int64).reshape(-1, 4)
    weights = (_spans(w_ev[:, 1], w_ev[:, 2]), np.repeat(w_ev[:, 0], w_ev[:, 2]),
               _spans(w_ev[:, 3], w_ev[:, 2]))
    a_ev = np.array(walk.loads_a, dtype=np.int64).reshape(-1, 5)
    per_load = a_ev[:, 2] * a_ev[:, 4]                          # beats of each LOAD_A
    a_sources = _spans(a_ev[:, 3], per_load)
    within = a_sources - np.repeat(a_ev[:, 3], per_load)        # i·beats + b
    beats_of = np.repeat(a_ev[:, 4], per_load)
    a_slots = ((np.repeat(a_ev[:, 1], per_load) + within // beats_of) * cfg.max_act_beats
               + within % beats_of)
    return weights, (a_slots, np.repeat(a_ev[:, 0], per_load), a_sources)


def _group_sums(cfg, shape, members, w_writes, a_writes, w_vals, m_vals, a_vals,
                sums: np.ndarray) -> None:
    """The pass sums of every COMPUTE of one shape ``(n, m, split, part, count)`` (members
    ``(time, first pass, act_addr)``), in blocks of batched products, into ``sums``."""
    n, m, split, part, count = shape
    dtype = np.float64 if _exact_in_float64(cfg) else np.int64
    none = len(w_vals) - 1             # the zero beat
    entry_lanes = cfg.max_act_beats * cfg.act_lanes
    info = np.array(members, dtype=np.int64)                    # (computes, 3)
    # Queries row by row, computes in time order within a row: sorted, as the writes are,
    # which keeps the search local.
    w_src = _last_writer(*w_writes, np.repeat(np.arange(cfg.weight_rows), len(info)),
                         np.tile(info[:, 0], cfg.weight_rows), none)
    w_src = w_src.reshape(cfg.weight_rows, len(info)).T
    slots = ((info[:, 2:3] + np.arange(count))[:, :, None] * cfg.max_act_beats
             + np.arange(cfg.max_act_beats)).reshape(len(info), -1)
    a_src = _last_writer(*a_writes, slots.ravel(), np.repeat(info[:, 0], slots.shape[1]), none)
    a_src = a_src.reshape(len(info), count, cfg.max_act_beats)
    offset = part * cfg.pass_inputs(n, m)
    per_pass = cfg.weight_rows * cfg.cols * (1 + count) + count * entry_lanes
    step = max(1, _BATCH_ELEMENTS // per_pass)
    for start in range(0, len(info), step):
        block = slice(start, start + step)
        weights = w_vals[w_src[block]].astype(dtype)
        meta = m_vals[w_src[block]] if (n, m) != (1, 1) else None
        batch = len(weights)
        entries = a_vals[a_src[block]].reshape(batch, count, entry_lanes)
        block_sums = _pass_sums(cfg, n, m, split, entries[:, :, offset:].astype(dtype),
                                weights, meta)
        targets = (info[block, 1:2] + np.arange(count)).ravel()
        banks = block_sums.shape[2]
        sums[targets, :banks] = block_sums.reshape(-1, banks, cfg.cols)


def _accumulate(cfg, order: list, sums: np.ndarray) -> list[np.ndarray]:
    """Apply the pass sums to the accumulators in trace order; the READ beats.

    A run of COMPUTEs into the same entries with nothing read in between (a K loop) is
    applied as one sum: wrapping is modular, so wrapping the sum once equals wrapping after
    every pass."""
    accs = np.zeros((cfg.acc_depth, cfg.submacros, cfg.cols), dtype=np.int64)  # entry, bank
    results = []
    index = 0
    while index < len(order):
        item = order[index]
        index += 1
        if item[0] == "r":
            _, addr, count, bank = item
            results.append(accs[addr:addr + count, bank].copy())
            continue
        _, first, count, acc_addr, accumulate, banks = item
        end = first + count
        while (index < len(order) and order[index][0] == "c" and order[index][1] == end
               and order[index][2:] == (count, acc_addr, 1, banks)):
            end += count
            index += 1
        total = sums[first:end, :banks]
        if end - first > count:
            total = total.reshape(-1, count, banks, cfg.cols).sum(axis=0)
            rows = slice(acc_addr, acc_addr + count)
            base = accs[rows, :banks] if accumulate else 0
            accs[rows, :banks] = wrap_signed(base + total, cfg.acc_bits)
        else:
            _apply(cfg, accs, acc_addr, accumulate, total)
    return results


def _execute_batched(cfg, plan, w_vals, m_vals, a_vals) -> list[np.ndarray]:
    """Pass 2 for traces without MOVE: find, for every COMPUTE, which beat each weight row
    and each activation entry beat holds (one sort and search over all the writes), run the
    passes in batched products, then apply the sums to the accumulators in trace order.
    Returns the READ beats."""
    walk = _Walk(cfg)
    handlers = {op: handler.__get__(walk) for op, handler in _Walk.HANDLERS.items()}
    for time, (info, mode, first) in enumerate(plan):
        handler = handlers.get(info.opcode)
        if handler is not None:
            handler(time, info.ops, mode, first)
    w_writes, a_writes = _writes(cfg, walk)
    sums = np.zeros((walk.passes, walk.banks_used, cfg.cols), dtype=np.int64)
    for shape, members in walk.groups.items():
        _group_sums(cfg, shape, members, w_writes, a_writes, w_vals, m_vals, a_vals, sums)
    return _accumulate(cfg, walk.order, sums)


class _Machine:
    """The architectural state for :func:`_execute_in_order`, one handler an opcode
    (:attr:`HANDLERS`; CONFIG was applied in pass 1, its mode comes with every command)."""

    def __init__(self, cfg, w_vals, m_vals, a_vals):
        self.cfg = cfg
        self.exact_float = _exact_in_float64(cfg)
        dtype = np.float64 if self.exact_float else np.int64
        self.w_vals, self.m_vals, self.a_vals = w_vals, m_vals, a_vals
        self.weights = np.zeros((cfg.weight_rows, cfg.cols), dtype=dtype)
        self.meta = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
        self.acts = np.zeros((cfg.act_depth, cfg.max_act_beats * cfg.act_lanes), dtype=dtype)
        self.accs = np.zeros((cfg.acc_depth, cfg.submacros, cfg.cols), dtype=np.int64)
        self.results = []

    def compute(self, ops: _Compute, mode, first):
        cfg = self.cfg
        (n, m), split, _ = mode
        offset = ops.part * cfg.pass_inputs(n, m)
        entries = self.acts[None, ops.act_addr:ops.act_addr + ops.count, offset:]
        banks = _pass_sums(cfg, n, m, split, entries, self.weights[None], self.meta[None])[0]
        if self.exact_float:
            banks = banks.astype(np.int64)
        _apply(cfg, self.accs, ops.acc_addr, ops.accumulate, banks)

    def move(self, ops: _Move, mode, first):
        cols = self.cfg.cols
        values = requantize(self.cfg, self.accs[ops.acc_addr:ops.acc_addr + ops.count, ops.bank,
                                                ops.lane:ops.lane + ops.width], mode[2])
        if ops.transpose:
            # Entry k is column elem + k of a cols × cols block: its window lane t is row
            # dst + t.
            for k in range(ops.count):
                self.acts[ops.act_addr, ops.dst * cols + ops.elem + k:
                          (ops.dst + ops.width) * cols:cols] = values[k]
        else:
            start = ops.elem * cols + ops.dst
            self.acts[ops.act_addr:ops.act_addr + ops.count, start:start + ops.width] = values

    def load_w(self, ops: _LoadW, mode, first):
        rows = slice(ops.row, ops.row + ops.count)
        self.weights[rows] = self.w_vals[first:first + ops.count]
        if self.m_vals is not None:
            self.meta[rows] = self.m_vals[first:first + ops.count]

    def load_a(self, ops: _LoadA, mode, first):
        # Element j of an entry is lane j % act_lanes of beat j // act_lanes (row-major);
        # every lane of the beats is written, the entry's later beats are kept.
        beats = self.cfg.act_beats(*mode[0])
        lanes = beats * self.cfg.act_lanes
        block = self.a_vals[first:first + ops.count * beats].reshape(ops.count, lanes)
        self.acts[ops.addr:ops.addr + ops.count, :lanes] = block

    def read(self, ops: _Read, mode, first):
        self.results.append(self.accs[ops.addr:ops.addr + ops.count, ops.bank].copy())

    HANDLERS = {Opcode.COMPUTE: compute, Opcode.MOVE: move, Opcode.LOAD_W: load_w,
                Opcode.LOAD_A: load_a, Opcode.READ: read}


def _execute_in_order(cfg, plan, w_vals, m_vals, a_vals) -> list[np.ndarray]:
    """Pass 2 command by command (traces with MOVE). Returns the READ beats."""
    machine = _Machine(cfg, w_vals, m_vals, a_vals)
    handlers = {op: handler.__get__(machine) for op, handler in _Machine.HANDLERS.items()}
    for info, mode, first in plan:
        handler = handlers.get(info.opcode)
        if handler is not None:
            handler(info.ops, mode, first)
    return machine.results
