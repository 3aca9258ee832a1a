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
Command words are decoded once per distinct word and pattern (a schedule repeats few words);
all weight beats and all activation beats of the run are unpacked in bulk; a COMPUTE is one
matrix product over its ``count`` passes (in ``float64`` when every partial sum is exactly
representable, which holds for all practical configurations).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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
    unpack_beats,
    unpack_weight_rows,
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


def _exact_in_float64(cfg) -> bool:
    """True if every partial sum of a pass is an integer float64 represents exactly: products
    are at most ``2**(product_bits-2)`` in magnitude and a pass adds ``reduction`` of them."""
    return cfg.reduction * 2 ** (cfg.product_bits - 2) <= 2 ** 53


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
    w_vals, m_vals = (unpack_weight_rows(cfg, w_beats) if w_beats
                      else (np.zeros((0, cfg.cols), np.int64),) * 2)
    w_vals = w_vals.astype(dtype)
    a_vals = (unpack_beats(act_beat_layout(cfg), a_beats).astype(dtype) if a_beats
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
