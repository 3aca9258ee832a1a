"""L1 golden model: executes a trace in numpy, bit-exact, and predicts the RTL's cycle count.

The model keeps the macro's architectural state (weight array, activation buffer, output
accumulator, mode) and applies each command as a whole, vectorised. Its cycle model is the
per-command cost :func:`sparsecim.hw.isa.cycles` with every stream ready:

- every command spends one *fetch* cycle in which the sequencer accepts and checks it;
- LOAD_W spends one *load* cycle per weight row, LOAD_A one per data beat
  (``count × act_beats``);
- COMPUTE spends ``count`` cycles issuing passes and ``COMPUTE_DRAIN`` draining: *compute*;
- READ spends one *read* cycle per result beat;
- CONFIG and END cost only their fetch; an illegal command costs its fetch, then halts.

Stalls are not modelled (streams never wait here); the RTL counts them separately, so the
check is ``RTL total − RTL stall == model total``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.isa import (
    COUNTERS,
    CycleCost,
    DecodeError,
    ErrorCode,
    Opcode,
    act_beat_layout,
    check,
    cycles,
    data_beats,
    decode,
    unpack_beats,
    weight_row_layout,
)
from ..hw.trace import Trace

__all__ = ["GoldenResult", "run_trace", "wrap_signed"]


def wrap_signed(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement wrap of ``int64`` values to ``bits`` (≤ 64) signed bits."""
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
        Every result beat in order, shape ``(beats, cols)``, ``int64``.
    counters : dict
        Predicted counters by name (:data:`~sparsecim.hw.isa.COUNTERS`); ``stall`` is 0.
    error : ErrorCode
        The status at the end (``NONE`` unless a command was illegal).
    halted : bool
        True if the trace reached END or an error; False if the commands ran out first (the
        RTL would then wait for more).
    commands : int
        Commands fetched, the halting one included.
    """
    results: np.ndarray
    counters: dict
    error: ErrorCode
    halted: bool
    commands: int


def run_trace(trace: Trace) -> GoldenResult:
    """Execute ``trace`` and predict its cycles.

    The data stream is one flat stream: commands take their beats from it in order, whatever
    the grouping of beats into trace steps (the hardware cannot see steps).

    Raises
    ------
    ValueError
        If a command needs more data beats than the trace has left (the RTL would wait for
        data forever); the message names the command.
    """
    cfg = trace.config
    weights = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
    acts = np.zeros((cfg.act_depth, cfg.reduction), dtype=np.int64)
    accs = np.zeros((cfg.acc_depth, cfg.cols), dtype=np.int64)
    data = trace.data
    cursor = 0
    results = []
    cost = CycleCost(fetch=0)
    error = ErrorCode.NONE
    halted = False
    executed = 0

    for index, word in enumerate(trace.commands):
        executed += 1
        try:
            cmd = decode(cfg, word)
        except DecodeError as exc:
            error = exc.code
        else:
            error = check(cfg, cmd)
        if error != ErrorCode.NONE:
            cost += CycleCost()
            halted = True
            break
        cost += cycles(cfg, cmd)
        op = cmd.opcode
        need = data_beats(cfg, cmd)
        if need:
            if cursor + need > len(data):
                raise ValueError(f"command {index} ({cmd}) needs {need} data beats, "
                                 f"the trace has {len(data) - cursor} left")
            beats = data[cursor:cursor + need]
            cursor += need
        if op == Opcode.END:
            halted = True
            break
        if op == Opcode.LOAD_W:
            weights[cmd.row:cmd.row + cmd.count] = unpack_beats(weight_row_layout(cfg), beats)
        elif op == Opcode.LOAD_A:
            lanes = unpack_beats(act_beat_layout(cfg), beats)
            entries = lanes.reshape(cmd.count, cfg.act_beats * cfg.act_lanes)
            acts[cmd.addr:cmd.addr + cmd.count] = entries[:, :cfg.reduction]
        elif op == Opcode.COMPUTE:
            sums = acts[cmd.act_addr:cmd.act_addr + cmd.count] @ weights
            rows = slice(cmd.acc_addr, cmd.acc_addr + cmd.count)
            base = accs[rows] if cmd.accumulate else 0
            accs[rows] = wrap_signed(base + sums, cfg.acc_bits)
        elif op == Opcode.READ:
            results.append(accs[cmd.addr:cmd.addr + cmd.count].copy())
        # CONFIG: only DENSE exists, which check() has already ensured.

    counters = cost.as_dict()
    counters["total"] = cost.total
    assert set(counters) == set(COUNTERS)
    out = np.concatenate(results) if results else np.zeros((0, cfg.cols), dtype=np.int64)
    return GoldenResult(out, counters, error, halted, executed)
