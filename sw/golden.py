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
    unpack_beat_bytes,
    unpack_weight_row_bytes,
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


def _exact_in_float64(cfg) -> bool:
    """True if every partial sum of a pass is an integer float64 represents exactly: products
    are at most ``2**(product_bits-2)`` in magnitude and a pass adds ``reduction`` of them."""
    return cfg.reduction * 2 ** (cfg.product_bits - 2) <= 2 ** 53


#: Matrix elements (weights plus activations) of one batch of passes, to bound memory.
_BATCH_ELEMENTS = 1 << 22


def _spans(starts: list[int], counts: list[int]) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` of every span, without a Python loop
    per element."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    total = int(counts_arr.sum()) if len(counts) else 0
    if not total:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - np.cumsum(counts_arr)
                        + counts_arr, counts_arr)
    return offsets + np.arange(total, dtype=np.int64)


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
    data_count = trace.data_beats

    # Pass 1: decode, find where the machine halts, give every data beat to its command.
    known: dict[tuple, _Word] = {}
    plan = []                          # (_Word, state, first beat index in its beat list)
    keys = []                          # (word, pattern) of every fetched command
    spans = {Opcode.LOAD_W: ([], []), Opcode.LOAD_A: ([], [])}   # stream starts, counts
    used = {Opcode.LOAD_W: 0, Opcode.LOAD_A: 0}
    cursor = 0
    error = ErrorCode.NONE
    halted = False
    has_move = False
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
            if cursor + need > data_count:
                raise ValueError(f"command {index} ({info.text}) needs {need} data beats, "
                                 f"the trace has {data_count - cursor} left")
            starts, counts = spans[info.opcode]
            plan.append((info, (pattern, split, shift), used[info.opcode]))
            starts.append(cursor)
            counts.append(need)
            used[info.opcode] += need
            cursor += need
        else:
            plan.append((info, (pattern, split, shift), 0))
        if info.opcode == Opcode.CONFIG:
            pattern, split, shift = info.args
        elif info.opcode == Opcode.MOVE:
            has_move = True

    # Cycle model: every fetched command costs its (memoised) cost; an illegal one only its
    # fetch cycle, which _decode_word already gave it.
    counters = dict.fromkeys(COUNTERS, 0)
    for key, times in Counter(keys).items():
        for name, value in known[key].cost.as_dict().items():
            counters[name] += times * value

    # Every consumed beat unpacked in bulk from the byte view, in its small dtype; one zero
    # row appended to each stands for "never written since reset".
    raw = trace.data_array() if cursor else np.zeros((0, 1), dtype=np.uint8)
    w_raw = raw[_spans(*spans[Opcode.LOAD_W])]
    a_raw = raw[_spans(*spans[Opcode.LOAD_A])]
    w_vals, m_vals = unpack_weight_row_bytes(cfg, w_raw, None) if len(w_raw) else (
        np.zeros((0, cfg.cols), np.int8), np.zeros((0, cfg.cols), np.uint8))
    a_vals = (unpack_beat_bytes(act_beat_layout(cfg), a_raw, None) if len(a_raw)
              else np.zeros((0, cfg.act_lanes), np.int8))
    w_vals = np.concatenate([w_vals, np.zeros((1, cfg.cols), w_vals.dtype)])
    m_vals = np.concatenate([m_vals, np.zeros((1, cfg.cols), m_vals.dtype)])
    a_vals = np.concatenate([a_vals, np.zeros((1, cfg.act_lanes), a_vals.dtype)])

    execute = _execute_in_order if has_move else _execute_batched
    results = execute(cfg, plan, w_vals, m_vals, a_vals)
    out = np.concatenate(results) if results else np.zeros((0, cfg.cols), dtype=np.int64)
    return GoldenResult(out, counters, error, halted, len(keys), data_count - cursor)


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
    # >= m selects 0). Scatter-add every live weight to the dense (elements × cols) matrix it
    # stands for, then one batched product.
    width = cfg.pass_inputs(n, m)
    g = np.arange(cfg.weight_rows)
    base = ((g // cfg.rows // n) * cfg.rows + g % cfg.rows) * m
    element = base[None, :, None] + np.minimum(meta, m - 1).astype(np.int64)
    live = np.where(meta < m, weights, 0)
    flat = ((np.arange(batch)[:, None, None] * width + element) * cfg.cols
            + np.arange(cfg.cols)[None, None, :])
    dense = np.bincount(flat.ravel(), weights=live.ravel().astype(np.float64),
                        minlength=batch * width * cfg.cols)
    dense = dense.reshape(batch, width, cfg.cols).astype(entries.dtype)
    return np.matmul(entries[:, :, :width], dense)[:, :, None]


def _execute_batched(cfg, plan, w_vals, m_vals, a_vals) -> list[np.ndarray]:
    """Pass 2 for traces without MOVE: record which beat each weight row and activation
    entry beat holds at every COMPUTE, run the passes in batched products, then apply the
    sums to the accumulators in trace order. Returns the READ beats."""
    exact_float = _exact_in_float64(cfg)
    dtype = np.float64 if exact_float else np.int64
    none_w, none_a = len(w_vals) - 1, len(a_vals) - 1
    w_src = np.full(cfg.weight_rows, none_w, dtype=np.int64)
    a_src = np.full((cfg.act_depth, cfg.max_act_beats), none_a, dtype=np.int64)
    snapshots = []                     # w_src at the COMPUTEs, one per weight state
    fresh = False
    groups: dict[tuple, list] = {}     # shape -> [(compute index, snapshot, a_src rows)]
    computes = []                      # (compute index, acc_addr, accumulate) in order
    order = []                         # ("c", compute index, ...) or ("r", addr, count, bank)
    for info, ((n, m), split, _), first in plan:
        op = info.opcode
        if op == Opcode.LOAD_W:
            row, count = info.args
            w_src[row:row + count] = np.arange(first, first + count)
            fresh = False
        elif op == Opcode.LOAD_A:
            addr, count = info.args
            beats = cfg.act_beats(n, m)
            a_src[addr:addr + count, :beats] = np.arange(
                first, first + count * beats).reshape(count, beats)
        elif op == Opcode.COMPUTE:
            act_addr, acc_addr, count, accumulate, part = info.args
            if not fresh:
                snapshots.append(w_src.copy())
                fresh = True
            index = len(computes)
            groups.setdefault((n, m, split, part, count), []).append(
                (index, len(snapshots) - 1, a_src[act_addr:act_addr + count].copy()))
            computes.append(None)
            order.append(("c", index, acc_addr, accumulate))
        elif op == Opcode.READ:
            order.append(("r", *info.args))
        # CONFIG: its pattern was applied in pass 1 (check() refused unsupported ones).

    if snapshots:
        snap = np.stack(snapshots)
        entry_lanes = cfg.max_act_beats * cfg.act_lanes
        for (n, m, split, part, count), members in groups.items():
            offset = part * cfg.pass_inputs(n, m)
            per_pass = cfg.weight_rows * cfg.cols + count * entry_lanes
            step = max(1, _BATCH_ELEMENTS // per_pass)
            for start in range(0, len(members), step):
                block = members[start:start + step]
                rows = snap[[member[1] for member in block]]          # (batch, weight_rows)
                weights = w_vals[rows].astype(dtype)
                meta = m_vals[rows]
                sources = np.stack([member[2] for member in block])    # (batch, count, beats)
                entries = a_vals[sources].reshape(len(block), count, entry_lanes)
                sums = _pass_sums(cfg, n, m, split, entries[:, :, offset:].astype(dtype),
                                  weights, meta)
                if exact_float:
                    sums = sums.astype(np.int64)
                for member, value in zip(block, sums, strict=True):
                    computes[member[0]] = value

    accs = np.zeros((cfg.acc_depth, cfg.submacros, cfg.cols), dtype=np.int64)  # entry, bank
    results = []
    for item in order:
        if item[0] == "c":
            _, index, acc_addr, accumulate = item
            _apply(cfg, accs, acc_addr, accumulate, computes[index])
        else:
            _, addr, count, bank = item
            results.append(accs[addr:addr + count, bank].copy())
    return results


def _execute_in_order(cfg, plan, w_vals, m_vals, a_vals) -> list[np.ndarray]:
    """Pass 2 command by command (traces with MOVE). Returns the READ beats."""
    exact_float = _exact_in_float64(cfg)
    dtype = np.float64 if exact_float else np.int64
    weights = np.zeros((cfg.weight_rows, cfg.cols), dtype=dtype)
    meta = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
    entry_lanes = cfg.max_act_beats * cfg.act_lanes
    acts = np.zeros((cfg.act_depth, entry_lanes), dtype=dtype)
    accs = np.zeros((cfg.acc_depth, cfg.submacros, cfg.cols), dtype=np.int64)  # entry, bank
    results = []
    for info, ((n, m), split, shift), first in plan:
        op = info.opcode
        if op == Opcode.COMPUTE:
            act_addr, acc_addr, count, accumulate, part = info.args
            offset = part * cfg.pass_inputs(n, m)
            entries = acts[None, act_addr:act_addr + count, offset:]
            banks = _pass_sums(cfg, n, m, split, entries, weights[None], meta[None])[0]
            if exact_float:
                banks = banks.astype(np.int64)
            _apply(cfg, accs, acc_addr, accumulate, banks)
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
                start = elem * cfg.cols + dst
                acts[act_addr:act_addr + count, start:start + width] = values
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
    return results
