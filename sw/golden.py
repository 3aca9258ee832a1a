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
(:meth:`~sparsecim.hw.trace.Trace.data_array`) and never as Python integers. Passes are not
executed one command at a time: a walk over the commands notes, for each COMPUTE, which beat
last wrote each weight row (only the first beat when one LOAD_W wrote all rows, the usual
case) and each activation entry beat; then the passes of all COMPUTEs of the same shape
(pattern, split, part, count) run as batched products, blocks of them at once, and a last
walk applies the pass sums to the accumulators and collects the READs.

- A run of COMPUTEs whose weights lie at one spacing in the stream (a LOAD_W of all rows
  before each, whatever else comes between) reads its weight rows as a strided view of the
  stream, with no copy; other COMPUTEs gather their rows.
- Products are ``float32`` when every partial sum of a pass is an integer of magnitude at
  most ``2**24`` (at most ``reduction`` products of magnitude at most
  ``2**(product_bits-2)``, in any order of summation: ``flexcim`` has 128 · 2**14 = 2**21),
  else ``float64`` up to ``2**53``, else ``int64``; pass sums are exact integers either way.
- N:M passes run in one compiled loop (:mod:`sparsecim.sw.nm_kernel`, numba) once a process
  has run enough of them to repay loading it: per weight row it decodes the positions from
  the beat's bytes and adds ``weight × activation`` for each position in turn, in integers;
  about 2x the numpy formulation below, which runs before that, for configurations the
  kernel does not cover, with ``SPARSECIM_NO_JIT=1``, and as the kernel's test oracle.
- Without the kernel, an N:M cell selects its activation without an index: the ``m``
  activations its row can take are the bytes of one ``uint64`` (bytes ``m ..`` zero),
  shifted right by ``8 ×`` position; positions are decoded from their bytes through lookup
  tables (:func:`~sparsecim.hw.isa.unpack_weight_row_bytes`).
- Python's cyclic garbage collector is paused while a trace runs.

A trace with MOVE (whose activations come from the accumulators) runs command by command
instead, with the same bulk unpacking.
"""

from __future__ import annotations

import contextlib
import functools
import gc
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
from . import nm_kernel

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


def _partial_sum_bound(cfg) -> int:
    """The largest magnitude of any partial sum of a pass, in any order of summation: a pass
    adds ``reduction`` products of magnitude at most ``2**(product_bits-2)``."""
    return cfg.reduction * 2 ** (cfg.product_bits - 2)


def _exact_in_float64(cfg) -> bool:
    """True if every partial sum of a pass is an integer float64 represents exactly."""
    return _partial_sum_bound(cfg) <= 2 ** 53


def _pass_dtype(cfg):
    """The dtype the batched passes multiply in: ``float32`` when every partial sum of a pass
    (:func:`_partial_sum_bound`) is an integer of magnitude at most ``2**24`` (``flexcim``:
    128 · 2**14 = 2**21), which float32 represents exactly, else ``float64`` up to ``2**53``,
    else ``int64``."""
    if not _exact_in_float64(cfg):
        return np.dtype(np.int64)
    return np.dtype(np.float32 if _partial_sum_bound(cfg) <= 2 ** 24 else np.float64)


def _kernel_dtype(cfg):
    """The integer dtype :func:`~sparsecim.sw.nm_kernel.nm_pass_sums` sums in: ``int32`` when
    every partial sum of a pass fits it, else ``int64``."""
    return np.dtype(np.int32 if _partial_sum_bound(cfg) < 2 ** 31 else np.int64)


#: Matrix elements (weights plus activations) of one batch of passes: small enough for the
#: batch's float copies to stay in cache.
_BATCH_ELEMENTS = 1 << 18

#: Runs of at least this many COMPUTEs whose weight rows are consecutive beats of the data
#: stream are read as one slice of it; shorter runs and other COMPUTEs gather their rows.
_MIN_RUN = 4


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
    with _collector_paused():
        return _run(trace)


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector (the model makes no cycles): the lists of a
    long trace's commands set off collections that each walk every object of the trace and
    of the model, several times the model's own work on a 10⁴-command trace."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run(trace: Trace) -> GoldenResult:
    cfg = trace.config
    data_count = trace.data_beats
    plan, keys, known, error, halted, cursor = _plan(cfg, trace.commands, data_count)
    has_move = any(info.opcode == Opcode.MOVE for info, _, _ in plan)

    # Cycle model: every fetched command costs its (memoised) cost; an illegal one only its
    # fetch cycle, which _decode_word already gave it.
    counters = dict.fromkeys(COUNTERS, 0)
    for key, times in Counter(keys).items():
        for name, value in known[key].cost.as_dict().items():
            counters[name] += times * value

    # The data stream as bytes, beat i at row i; one zero beat appended stands for "never
    # written since reset".
    raw = trace.data_array(extra=1)
    if has_move:
        results = _execute_in_order(cfg, plan, raw)
    else:
        results = _execute_batched(cfg, plan, raw)
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
    base = _nm_base(cfg, n, m)
    element = base[None, :, None] + np.minimum(meta, m - 1).astype(np.int64)
    live = np.where(meta < m, weights, 0)
    lanes = entries.shape[2]
    flat = (element[:, None] + (np.arange(count) * lanes)[None, :, None, None])
    chosen = np.take_along_axis(entries.reshape(batch, count * lanes),
                                flat.reshape(batch, -1), axis=1)
    chosen = chosen.reshape(batch, count, cfg.weight_rows, cfg.cols)
    return np.einsum("btgc,bgc->btc", chosen, live)[:, :, None]


def _nm_base(cfg, n: int, m: int) -> np.ndarray:
    """The first entry element of each global weight row's group in ``n:m``."""
    g = np.arange(cfg.weight_rows)
    return ((g // cfg.rows // n) * cfg.rows + g % cfg.rows) * m


def _nm_selects_by_shift(cfg, m: int) -> bool:
    """True if :func:`_nm_pass_sums_by_shift` applies: activations fit a byte (``int8``
    lanes) and every position (``< 2**meta_bits <= 8``) names a byte of a ``uint64``, a zero
    one when it is ``>= m``."""
    return cfg.act_bits <= 8 and cfg.meta_bits <= 3 and m <= 8


def _nm_pass_sums_by_shift(cfg, n: int, m: int, entries: np.ndarray, weights: np.ndarray,
                           meta: np.ndarray, dtype) -> np.ndarray:
    """:func:`_pass_sums` for N:M without an index per cell: the ``m`` activations a weight
    row can select are packed as the bytes of one ``uint64`` (bytes ``m ..`` zero, so a
    position ``>= m`` selects 0), each cell shifts its row's word right by ``8 · position``
    and keeps the low byte. ``entries`` are the passes' ``int8`` entries ``(batch, count,
    lanes)``, ``weights`` ``(batch, weight_rows, cols)`` in ``dtype``, ``meta`` ``(batch,
    weight_rows, cols)`` ``uint8`` positions."""
    batch, count = entries.shape[:2]
    packed = np.zeros((batch, count, cfg.weight_rows, 8), dtype=np.int8)
    packed[..., :m] = entries[:, :, _nm_base(cfg, n, m)[:, None] + np.arange(m)]
    words = packed.view("<u8")                                    # (batch, count, rows, 1)
    shifts = (meta.astype(np.uint8, copy=False) << np.uint8(3))[:, None]
    # The low byte of each shifted word, written straight to uint8 (the cast keeps it,
    # modulo 2**8) without a uint64 array of every cell.
    chosen = np.empty(np.broadcast_shapes(words.shape, shifts.shape), dtype=np.uint8)
    np.right_shift(words, shifts, out=chosen, casting="unsafe")
    chosen = chosen.view(np.int8)
    return np.einsum("btgc,bgc->btc", chosen.astype(dtype), weights)[:, :, None]


class _Walk:
    """The walk of :func:`_execute_batched` over the commands: it keeps, for every weight
    row, the data beat that last wrote it, lists the LOAD_As, groups the COMPUTEs by shape
    with what they read, and lists the COMPUTEs and READs in trace order.

    The weight rows are usually one LOAD_W of all of them: then they are beats ``start ..
    start + weight_rows - 1`` and only ``start`` is kept (:attr:`w_start`); after a partial
    LOAD_W they are an array (:attr:`w_rows`). A COMPUTE notes how many LOAD_As came before
    it; :class:`_ActWrites` finds its activation beats from that afterwards, for all at
    once."""

    def __init__(self, cfg, none: int):
        self.cfg = cfg
        self.none = none                       # the zero beat: never written
        self.w_start = -1                      # rows are beats w_start + r, or -1: w_rows
        self.w_rows = np.full(cfg.weight_rows, none, dtype=np.int64)
        self.loads_a = []                      # (addr, count, first beat, beats per entry)
        self.act_beats = {}                    # pattern -> act_beats
        self.groups = {}                       # (n, m, split, part, count) -> [(first pass,
        self.passes = 0                        #   act_addr, LOAD_As before, w_start, w_rows)]
        self.banks_used = 1
        self.order = []                        # ("c", first pass, count, acc_addr, accumulate,
                                               #  banks) or ("r", addr, count, bank)

    def load_w(self, ops: _LoadW, mode, first):
        if ops.row == 0 and ops.count == self.cfg.weight_rows:
            self.w_start = first
            return
        rows = (self.w_start + np.arange(self.cfg.weight_rows) if self.w_start >= 0
                else self.w_rows.copy())     # a COMPUTE may hold the old array
        rows[ops.row:ops.row + ops.count] = np.arange(first, first + ops.count)
        self.w_start, self.w_rows = -1, rows

    def load_a(self, ops: _LoadA, mode, first):
        beats = self.act_beats.get(mode[0])
        if beats is None:
            beats = self.act_beats[mode[0]] = self.cfg.act_beats(*mode[0])
        self.loads_a.append((ops.addr, ops.count, first, beats))

    def compute(self, ops: _Compute, mode, first):
        (n, m), split, _ = mode
        self.groups.setdefault((n, m, split, ops.part, ops.count), []).append(
            (self.passes, ops.act_addr, len(self.loads_a), self.w_start, self.w_rows))
        banks = 2 ** split if (n, m) == (1, 1) else 1
        self.banks_used = max(self.banks_used, banks)
        self.order.append(("c", self.passes, ops.count, ops.acc_addr, ops.accumulate, banks))
        self.passes += ops.count

    def read(self, ops: _Read, mode, first):
        self.order.append(("r", ops.addr, ops.count, ops.bank))

    HANDLERS = {Opcode.LOAD_W: load_w, Opcode.LOAD_A: load_a, Opcode.COMPUTE: compute,
                Opcode.READ: read}


def _spans(starts, counts) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` of every span, without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    if not counts.sum():
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    return (np.repeat(np.asarray(starts, dtype=np.int64) - ends + counts, counts)
            + np.arange(int(ends[-1]), dtype=np.int64))


class _ActWrites:
    """Every activation entry beat a LOAD_A wrote, sorted by (slot, LOAD_A index), for
    finding the beat that holds a slot after a number of LOAD_As: slot ``e·max_act_beats +
    b`` (entry ``e``, beat ``b``) of the LOAD_A at ``addr`` with ``beats`` beats per entry is
    written from data beat ``first + (e - addr)·beats + b``."""

    def __init__(self, cfg, loads: list, none: int):
        events = np.array(loads, dtype=np.int64).reshape(-1, 4)
        per_load = events[:, 1] * events[:, 3]                   # beats of each LOAD_A
        sources = _spans(events[:, 2], per_load)
        within = sources - np.repeat(events[:, 2], per_load)     # i·beats + b
        beats = np.repeat(events[:, 3], per_load)
        slots = ((np.repeat(events[:, 0], per_load) + within // beats) * cfg.max_act_beats
                 + within % beats)
        self.scale = len(events) + 1                             # LOAD_A counts 0 .. len
        keys = slots * self.scale + np.repeat(np.arange(len(events)), per_load)
        order = np.argsort(keys, kind="stable")
        self.keys, self.sources, self.none = keys[order], sources[order], none

    def source(self, slots: np.ndarray, loads_before: np.ndarray) -> np.ndarray:
        """The data beat holding each slot after the first ``loads_before`` LOAD_As
        (broadcast together), ``none`` if none of them wrote it."""
        query = slots * self.scale + loads_before
        if not len(self.keys):
            return np.full(query.shape, self.none, dtype=np.int64)
        found = np.searchsorted(self.keys, query) - 1              # last write before
        hit = found >= 0
        found = np.maximum(found, 0)
        hit &= (self.keys[found] // self.scale) == slots
        return np.where(hit, self.sources[found], self.none)


def _runs(starts: np.ndarray):
    """The runs of a group's COMPUTEs (``starts``: each one's first weight beat, -1 if its
    rows are not consecutive beats) whose weights lie at a constant spacing in the stream:
    ``(runs, scattered)``, ``runs`` as ``(first, end, spacing)`` of at least
    :data:`_MIN_RUN` COMPUTEs, ``scattered`` the indices of the others."""
    count = len(starts)
    if count < _MIN_RUN:
        return [], list(range(count))
    steps = np.diff(starts)
    ok = (starts[1:] >= 0) & (starts[:-1] >= 0) & (steps >= 0)
    key = np.where(ok, steps, -1 - np.arange(count - 1))     # never equal where not ok
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True]).tolist()
    runs, scattered, done = [], [], 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        # Pairs lo .. hi-1 share a spacing: COMPUTEs lo .. hi, less those already taken.
        first = max(lo, done)
        if key[lo] >= 0 and hi + 1 - first >= _MIN_RUN:
            scattered.extend(range(done, first))
            runs.append((first, hi + 1, int(key[lo])))
            done = hi + 1
    scattered.extend(range(done, count))
    return runs, scattered


def _blocks(starts: np.ndarray, step: int):
    """Blocks of at most ``step`` of a group's COMPUTEs (:func:`_runs`): ``(slice, first
    beat, spacing)`` within a run, ``(indices, None, None)`` for the others."""
    runs, scattered = _runs(starts)
    for first, end, spacing in runs:
        for lo in range(first, end, step):
            yield slice(lo, min(lo + step, end)), int(starts[lo]), spacing
    for lo in range(0, len(scattered), step):
        yield np.array(scattered[lo:lo + step]), None, None


def _strided(values: np.ndarray, start: int, spacing: int, batch: int, rows: int):
    """Rows ``start + i·spacing + r`` of ``values`` as ``(batch, rows, ...)``, a view."""
    strides = values.strides
    return np.lib.stride_tricks.as_strided(
        values[start:], shape=(batch, rows) + values.shape[1:],
        strides=(spacing * strides[0],) + strides, writeable=False)


def _group_sums(cfg, shape, members, raw: np.ndarray, a_vals: np.ndarray,
                act_writes: _ActWrites, sums: np.ndarray) -> None:
    """The pass sums of every COMPUTE of one shape ``(n, m, split, part, count)`` (members
    from :class:`_Walk`), in blocks of batched products, into ``sums``."""
    n, m, split, part, count = shape
    dtype = _pass_dtype(cfg)
    rows = cfg.weight_rows
    firsts = np.array([member[0] for member in members], dtype=np.int64)
    starts = np.array([member[3] for member in members], dtype=np.int64)
    # The data beat of every entry beat each COMPUTE reads, only the beats that hold the
    # pass's inputs: (computes, count, beats).
    offset = part * cfg.pass_inputs(n, m)
    beat0 = offset // cfg.act_lanes
    beat1 = -(-(offset + cfg.pass_inputs(n, m)) // cfg.act_lanes)
    entries = np.array([member[1] for member in members], dtype=np.int64)
    slots = ((entries[:, None, None] + np.arange(count)[:, None]) * cfg.max_act_beats
             + np.arange(beat0, beat1))
    loads_before = np.array([member[2] for member in members], dtype=np.int64)
    a_src = act_writes.source(slots, loads_before[:, None, None])
    offset -= beat0 * cfg.act_lanes
    dense = (n, m) == (1, 1)
    layout = weight_row_layout(cfg)
    # In this order: numba is imported only when the kernel is to run.
    kernel = (not dense and nm_kernel.covers(cfg, layout)
              and nm_kernel.chosen(len(members) * rows) and nm_kernel.available())
    by_shift = not dense and dtype != np.int64 and _nm_selects_by_shift(cfg, m)
    # Weights of the whole stream: a view of it for byte-wide weights.
    w_all = unpack_beat_bytes(layout["weight"].shape, raw, None) if dense or kernel else None
    a_per_pass = count * a_src.shape[2] * cfg.act_lanes
    # The numpy products hold float copies of every cell of a block; the kernel none.
    per_pass = rows + a_per_pass if kernel else rows * cfg.cols * (1 + count) + a_per_pass
    step = max(1, _BATCH_ELEMENTS // per_pass)
    base = _nm_base(cfg, n, m)
    for block, start, spacing in _blocks(starts, step):
        batch = len(firsts[block])
        if start is None:
            index = np.stack([members[i][4] if starts[i] < 0 else starts[i] + np.arange(rows)
                              for i in block]).ravel()
        entries = a_vals[a_src[block]].reshape(batch, count, -1)[:, :, offset:]
        if dense:
            weights = (_strided(w_all, start, spacing, batch, rows) if start is not None
                       else w_all[index].reshape(batch, rows, cfg.cols))
            block_sums = _pass_sums(cfg, n, m, split, entries.astype(dtype),
                                    weights.astype(dtype), None)
        elif kernel:
            beats = (start + spacing * np.arange(batch)[:, None] + np.arange(rows)
                     if start is not None else index.reshape(batch, rows))
            block_sums = nm_kernel.nm_pass_sums(cfg, layout, w_all, raw, beats, entries,
                                                base, m, _kernel_dtype(cfg))[:, :, None]
        else:
            beats = (_strided(raw, start, spacing, batch, rows).reshape(batch * rows, -1)
                     if start is not None else raw[index])
            weights, meta = unpack_weight_row_bytes(cfg, beats, None)
            weights = weights.reshape(batch, rows, cfg.cols).astype(dtype)
            meta = meta.reshape(batch, rows, cfg.cols)
            if by_shift:
                block_sums = _nm_pass_sums_by_shift(cfg, n, m, entries, weights, meta, dtype)
            else:
                block_sums = _pass_sums(cfg, n, m, split, entries.astype(dtype), weights, meta)
        targets = (firsts[block][:, None] + np.arange(count)).ravel()
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


def _execute_batched(cfg, plan, raw: np.ndarray) -> list[np.ndarray]:
    """Pass 2 for traces without MOVE: walk the commands once, noting for every COMPUTE
    which beat each weight row and activation entry beat holds, run the passes of each shape
    in batched products, then apply the sums to the accumulators in trace order. Returns
    the READ beats."""
    walk = _Walk(cfg, len(raw) - 1)
    handlers = {op: handler.__get__(walk) for op, handler in _Walk.HANDLERS.items()}
    for info, mode, first in plan:
        handler = handlers.get(info.opcode)
        if handler is not None:
            handler(info.ops, mode, first)
    a_vals = unpack_beat_bytes(act_beat_layout(cfg), raw, None)
    act_writes = _ActWrites(cfg, walk.loads_a, walk.none)
    sums = np.zeros((walk.passes, walk.banks_used, cfg.cols), dtype=np.int64)
    for shape, members in walk.groups.items():
        _group_sums(cfg, shape, members, raw, a_vals, act_writes, sums)
    return _accumulate(cfg, walk.order, sums)


class _Machine:
    """The architectural state for :func:`_execute_in_order`, one handler an opcode
    (:attr:`HANDLERS`; CONFIG was applied in pass 1, its mode comes with every command)."""

    def __init__(self, cfg, raw: np.ndarray):
        self.cfg = cfg
        w_vals, m_vals = unpack_weight_row_bytes(cfg, raw, None) if cfg.meta_bits else (
            unpack_beat_bytes(weight_row_layout(cfg)["weight"].shape, raw, None), None)
        a_vals = unpack_beat_bytes(act_beat_layout(cfg), raw, None)
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


def _execute_in_order(cfg, plan, raw: np.ndarray) -> list[np.ndarray]:
    """Pass 2 command by command (traces with MOVE). Returns the READ beats."""
    machine = _Machine(cfg, raw)
    handlers = {op: handler.__get__(machine) for op, handler in _Machine.HANDLERS.items()}
    for info, mode, first in plan:
        handler = handlers.get(info.opcode)
        if handler is not None:
            handler(info.ops, mode, first)
    return machine.results
