"""Exact energy-relevant event counts of a trace: a pure function of its commands and data.

:func:`count_events` walks a trace's decoded commands (the same decode and checks as the golden
model, :mod:`sparsecim.hw.isa`) and counts every event the energy model
(:mod:`sparsecim.sw.energy`) charges. Nothing is estimated: each count follows from the ISA's
semantics and the macro's structure (:class:`~sparsecim.hw.config.MacroConfig`).

What the RTL counts itself
--------------------------
The status port carries the cycle counters and the event counters
:data:`~sparsecim.hw.isa.EVENT_COUNTERS` (``passes``, ``w_rows``, ``a_beats``); the Verilator
regressions check them for equality with :meth:`Events.rtl_counters`. Every other count is
derived exactly from those and from the trace's operands:

- ``commands = fetch``, ``result_beats = read``, ``move_entries = load - w_rows - a_beats``,
  ``compute_commands = (compute - passes) / COMPUTE_DRAIN`` (cycle counters);
- ``macs = passes × cells``; ``weight_bits_written = w_rows × cols × (weight_bits +
  meta_bits)``; ``act_bits_read = passes × max_pass_inputs × act_bits`` (every pass reads one
  whole entry); ``tree_adds = passes × submacros × cols × (rows - 1)``; ``dist_words`` and
  ``cell_selects`` are ``passes`` times a constant of the config (:func:`derived_from_counters`
  computes these, and a test shows they equal the trace walk);
- the split of ``passes`` by mode, the merge additions (which depend on ``split``), the
  accumulator reads (which depend on ``accumulate``), the MOVE window lanes and the zero-weight
  MACs (which depend on the weights) come from the trace's operands and data, which the RTL
  executes as the golden model does (outputs bit-exact).

Not counted at the macro level: off-chip memory traffic and chip interconnect (the chip level,
issue 12, does not exist yet); they are reported as not modelled, never invented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import (
    COMPUTE_DRAIN,
    EVENT_COUNTERS,
    ISA_VERSION,
    DecodeError,
    ErrorCode,
    Opcode,
    check,
    command_layout,
    cycles,
    data_beats,
    decode,
    move_window,
    part_fits,
    pattern_of,
    unpack_weight_rows,
)
from ..hw.trace import Trace

__all__ = ["Events", "count_events", "derived_from_counters", "choices", "gemm_events",
           "layer_events"]


def choices(cfg: MacroConfig) -> int:
    """Activations offered to each cell row: ``2**meta_bits`` (1 for a dense-only macro, which
    has no in-cell select). Stated as in :func:`sparsecim.hw.submacro.choices`, which this
    module does not import (``sw`` reads ``hw``'s contract, not its implementation)."""
    return 2 ** cfg.meta_bits


@dataclass
class Events:
    """Event counts of one trace (or a sum of traces, see :meth:`__add__`).

    Attributes
    ----------
    cycles, stall_cycles : int
        Cycles from reset to halt (the cycle model's ``total``) and stalled ones (0 in the
        model; the RTL counts them).
    commands, compute_commands : int
        Commands fetched (the halting one included); COMPUTE commands executed.
    passes : int
        Compute passes issued (RTL counter ``passes``).
    passes_by_mode : dict
        ``passes`` split by pattern, ``"n:m"`` (``"1:1"`` is dense) to count.
    w_rows, a_beats, move_entries, result_beats : int
        Weight rows written (RTL ``w_rows``), activation beats written (RTL ``a_beats``),
        accumulator entries moved by MOVE, result beats sent.
    macs : int
        Cell multiply-accumulates: every cell multiplies in every pass (``passes × cells``).
    zero_weight_macs : int
        Of ``macs``, those of a cell whose product is 0 by its weight alone (weight 0, or in
        N:M a position ``>= m``): operations a gated design could skip. The RTL does not gate.
    weight_bits_written : int
        Cell bits written by LOAD_W (weight and metadata of every column of a row).
    act_bits_written, act_bits_read : int
        Activation buffer bits written (LOAD_A beats, ``act_lanes × act_bits`` each; MOVE, its
        window lanes) and read (one whole entry per pass).
    dist_words : int
        Activation words routed by the distribution network to the sub-macro rows, each a
        mux over the macro's modes: ``passes × rows × submacros × choices``.
    cell_selects : int
        In-cell selects of one of ``choices`` activations by metadata (``passes × cells``; 0
        on a dense-only macro).
    tree_adds : int
        Column adder-tree additions inside the sub-macros: ``rows - 1`` per column per
        sub-macro per pass.
    merge_adds : int
        Additions of the merge tree across sub-macros: ``cols × (P - groups)`` per pass, where
        a dense pass with split ``s`` keeps ``2**s`` groups and an N:M pass sums all.
    acc_reads, acc_writes : int
        Accumulator values (``acc_bits`` each) read and written: a pass writes ``cols`` per
        bank written and reads as many if it accumulates; READ and MOVE read ``cols`` per
        entry.
    requants : int
        Values requantized by MOVE (its window lanes per entry).
    bits_in, bits_out : int
        Stream bits into the macro (command words and data beats) and out (result beats).
    """
    cycles: int = 0
    stall_cycles: int = 0
    commands: int = 0
    compute_commands: int = 0
    passes: int = 0
    passes_by_mode: dict = field(default_factory=dict)
    w_rows: int = 0
    a_beats: int = 0
    move_entries: int = 0
    result_beats: int = 0
    macs: int = 0
    zero_weight_macs: int = 0
    weight_bits_written: int = 0
    act_bits_written: int = 0
    act_bits_read: int = 0
    dist_words: int = 0
    cell_selects: int = 0
    tree_adds: int = 0
    merge_adds: int = 0
    acc_reads: int = 0
    acc_writes: int = 0
    requants: int = 0
    bits_in: int = 0
    bits_out: int = 0

    def rtl_counters(self) -> dict[str, int]:
        """The values the RTL's event counters must show (:data:`EVENT_COUNTERS`)."""
        return {name: getattr(self, name) for name in EVENT_COUNTERS}

    def as_dict(self) -> dict:
        return asdict(self)

    def __add__(self, other: Events) -> Events:
        out = {}
        for name, value in asdict(self).items():
            theirs = getattr(other, name)
            out[name] = (dict(Counter(value) + Counter(theirs)) if isinstance(value, dict)
                         else value + theirs)
        return Events(**out)

    def scaled(self, times: int) -> Events:
        """The events of ``times`` repetitions (e.g. identical tiles or tokens)."""
        return Events(**{name: ({k: v * times for k, v in value.items()}
                                if isinstance(value, dict) else value * times)
                         for name, value in asdict(self).items()})


def _pattern_name(pattern: tuple[int, int]) -> str:
    return f"{pattern[0]}:{pattern[1]}"


def derived_from_counters(cfg: MacroConfig, counters: dict) -> dict[str, int]:
    """The event counts that follow exactly from the RTL's status counters alone (cycle
    counters and :data:`EVENT_COUNTERS`, unsaturated), by the rules of the module docstring.

    Raises
    ------
    ValueError
        If the counters are inconsistent (``compute - passes`` not a multiple of
        ``COMPUTE_DRAIN``, or fewer load cycles than rows and beats written).
    """
    passes, w_rows, a_beats = (counters[name] for name in EVENT_COUNTERS)
    drains, rest = divmod(counters["compute"] - passes, COMPUTE_DRAIN)
    moves = counters["load"] - w_rows - a_beats
    if rest or drains < 0 or moves < 0:
        raise ValueError(f"counters are inconsistent: {counters!r}")
    return {
        "commands": counters["fetch"],
        "result_beats": counters["read"],
        "move_entries": moves,
        "compute_commands": drains,
        "passes": passes,
        "w_rows": w_rows,
        "a_beats": a_beats,
        "macs": passes * cfg.cells,
        "weight_bits_written": w_rows * cfg.cols * (cfg.weight_bits + cfg.meta_bits),
        "act_bits_read": passes * cfg.max_pass_inputs * cfg.act_bits,
        "tree_adds": passes * cfg.submacros * cfg.cols * (cfg.rows - 1),
        "dist_words": passes * cfg.reduction * choices(cfg),
        "cell_selects": passes * cfg.cells if choices(cfg) > 1 else 0,
    }


def count_events(trace: Trace) -> Events:
    """Count the events of ``trace`` up to its halt (END, an illegal command, or the end of
    its commands), as the golden model executes it with every stream ready.

    Parameters
    ----------
    trace : Trace
        Any trace of the current ISA version.

    Returns
    -------
    Events
        Exact counts (see :class:`Events`).

    Raises
    ------
    ValueError
        If the trace was encoded for another ISA version, or a command needs more data beats
        than the trace has left.
    """
    if trace.isa_version != ISA_VERSION:
        raise ValueError(f"trace isa_version must be {ISA_VERSION}, not {trace.isa_version!r}")
    cfg = trace.config
    data = trace.data
    cmd_bits = command_layout(cfg).size
    ev = Events()
    by_mode: Counter = Counter()
    # Weights and metadata held by the cells, to count the MACs that are zero by weight.
    weights = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
    meta = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
    pattern, split = (1, 1), 0
    cursor = 0
    for index, word in enumerate(trace.commands):
        ev.commands += 1
        ev.bits_in += cmd_bits
        try:
            cmd = decode(cfg, word)
        except DecodeError:
            ev.cycles += 1
            break
        error = check(cfg, cmd)
        if (error == ErrorCode.NONE and cmd.opcode == Opcode.COMPUTE
                and not part_fits(cfg, cmd.part, pattern)):
            error = ErrorCode.ADDRESS_RANGE
        if error != ErrorCode.NONE:
            ev.cycles += 1
            break
        op = cmd.opcode
        ev.cycles += cycles(cfg, cmd, pattern).total
        if op == Opcode.END:
            break
        need = data_beats(cfg, cmd, pattern)
        if cursor + need > len(data):
            raise ValueError(f"command {index} ({cmd}) needs {need} data beats, the trace has "
                             f"{len(data) - cursor} left")
        beats = data[cursor:cursor + need]
        cursor += need
        ev.bits_in += need * cfg.data_bits
        if op == Opcode.CONFIG:
            pattern, split = pattern_of(cfg, cmd), cmd.split
        elif op == Opcode.LOAD_W:
            w, mt = unpack_weight_rows(cfg, beats)
            weights[cmd.row:cmd.row + cmd.count] = w
            meta[cmd.row:cmd.row + cmd.count] = mt
            ev.w_rows += cmd.count
            ev.weight_bits_written += cmd.count * cfg.cols * (cfg.weight_bits + cfg.meta_bits)
        elif op == Opcode.LOAD_A:
            ev.a_beats += need
            ev.act_bits_written += need * cfg.act_lanes * cfg.act_bits
        elif op == Opcode.COMPUTE:
            by_mode[_pattern_name(pattern)] += cmd.count
            _count_compute(cfg, ev, cmd, pattern, split, weights, meta)
        elif op == Opcode.READ:
            ev.result_beats += cmd.count
            ev.acc_reads += cmd.count * cfg.cols
            ev.bits_out += cmd.count * cfg.result_bits
        elif op == Opcode.MOVE:
            _, _, lanes = move_window(cfg, cmd)
            ev.move_entries += cmd.count
            ev.acc_reads += cmd.count * cfg.cols
            ev.requants += cmd.count * lanes
            ev.act_bits_written += cmd.count * lanes * cfg.act_bits
    ev.passes_by_mode = dict(by_mode)
    return ev


def _count_compute(cfg: MacroConfig, ev: Events, cmd, pattern, split: int,
                   weights: np.ndarray, meta: np.ndarray) -> None:
    """Add the events of one COMPUTE (``cmd.count`` passes in ``pattern`` and ``split``, the
    cells holding ``weights`` and ``meta``) to ``ev``."""
    count = cmd.count
    n, m = pattern
    ev.compute_commands += 1
    ev.passes += count
    ev.macs += count * cfg.cells
    zero = weights == 0
    if (n, m) != (1, 1):
        zero |= meta >= m
    ev.zero_weight_macs += count * int(zero.sum())
    ev.act_bits_read += count * cfg.max_pass_inputs * cfg.act_bits
    ev.dist_words += count * cfg.reduction * choices(cfg)
    ev.cell_selects += count * (cfg.cells if choices(cfg) > 1 else 0)
    ev.tree_adds += count * cfg.submacros * cfg.cols * (cfg.rows - 1)
    groups = 2 ** split if (n, m) == (1, 1) else 1
    ev.merge_adds += count * cfg.cols * (cfg.submacros - groups)
    ev.acc_writes += count * groups * cfg.cols
    if cmd.accumulate:
        ev.acc_reads += count * groups * cfg.cols


def gemm_events(cfg: MacroConfig, k: int, n: int, tokens: int, *, pattern=(1, 1),
                run_as=None, seed: int = 0) -> Events:
    """Events of a random ``tokens × k`` by ``k × n`` GEMM whose weights keep ``pattern``
    (``n:m`` per output channel), scheduled in ``run_as`` (default ``pattern``; ``(1, 1)``
    runs the zeros as weights, as a dense macro must)."""
    rng = np.random.default_rng(seed)
    a_top, w_top = 2 ** (cfg.act_bits - 1), 2 ** (cfg.weight_bits - 1)
    x = rng.integers(-a_top, a_top, size=(tokens, k))
    w = rng.integers(-w_top, w_top, size=(k, n))
    keep, group = pattern
    if keep < group:
        ranks = rng.random((k // group, group, n)).argsort(axis=1).argsort(axis=1)
        w = np.where(ranks.reshape(k, n) < keep, w, 0)
    from .schedule import schedule_layer  # the scheduler imports nothing from here

    return count_events(schedule_layer(cfg, x, w, run_as or pattern).trace)


def layer_events(cfg: MacroConfig, k: int, n: int, tokens: int, *, pattern=(1, 1),
                 run_as=None) -> Events:
    """The events of the schedule of a ``k × n`` layer whose weights keep ``pattern``, run as
    ``run_as`` (default ``pattern``), without building it: the closed form
    (:func:`sparsecim.sw.sweep_model.closed_events`), equal to :func:`gemm_events` in every
    field but ``zero_weight_macs`` (0 here: it depends on the weights' values, and no energy
    is charged for it). Large layers (LLaMA's 11008 × 4096) then cost no schedule at all."""
    from .sweep_model import closed_events

    return closed_events(cfg, k, n, tokens, tuple(run_as or pattern))
