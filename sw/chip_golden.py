"""The chip golden model: a chip trace's results, bit-exact, and its counters, cycle-exact.

Functional part: the chip is K unchanged macros fed by routers, so a chip trace is split into
one macro trace per macro (:func:`macro_traces`: the commands that reach macro ``k``, in
order, each LOAD with the beats the routers broadcast to it) and each runs on the macro golden
model (:func:`sparsecim.sw.golden.run_trace`). A chip READ beat is the lane-wise sum of the
beats the READ's macros give, READ by READ, in ``chip_result_layout`` lanes (no wrap: the
lanes are ``ceil(log2 K)`` bits wider than an accumulator).

Timing: :func:`sparsecim.sw.chip_timing.chip_counters` (the command-level event model of
``docs/chip.md``), or with ``timing="step"`` the cycle-stepped reference simulator. After an
error only ``error``, ``error_macro`` and the halt cycle are given (``docs/chip.md``: nothing
else is promised); results are then empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.chip_trace import ChipTrace, chip_step, macro_step
from ..hw.isa import ErrorCode, Opcode
from ..hw.trace import Step, Trace
from .chip_timing import chip_counters, step_chip
from .golden import run_trace

__all__ = ["ChipGoldenResult", "macro_traces", "run_chip_trace"]


@dataclass
class ChipGoldenResult:
    """Outcome of a chip trace on the golden model.

    Attributes
    ----------
    results : ndarray
        Every chip result beat in READ order, ``(beats, cols)``: ``int64``, or Python ints
        (``object``) when ``chip_result_layout``'s lanes are wider than 64 bits. Empty after
        an error.
    counters : dict or None
        :data:`~sparsecim.hw.isa.CHIP_COUNTERS` by name, exact; None after an error or if
        the chip does not halt.
    macro_counters : list of dict or None
        Every macro's :data:`~sparsecim.hw.isa.STATUS_COUNTERS`; None as ``counters``.
    error : ErrorCode
    error_macro : int or None
        The macro whose error halted the chip, K for the dispatcher and OUT_OF_STEP.
    halted : bool
        False if the commands run out before the chip halts.
    halt : int or None
        The cycle at whose end the chip's ``done`` is set.
    """
    results: np.ndarray
    counters: dict | None
    macro_counters: list | None
    error: ErrorCode
    error_macro: int | None
    halted: bool
    halt: int | None


def macro_traces(trace: ChipTrace) -> list[Trace]:
    """One macro trace per macro: the commands the dispatcher sends it, in order, up to the
    chip's END, each LOAD_W and LOAD_A with the step's beats (the routers broadcast them)."""
    chip = trace.config
    out = [Trace(chip.macro, meta={"chip_macro": k}) for k in range(chip.macros)]
    for step in trace.steps:
        info = chip_step(chip, step.command)
        if info.error != ErrorCode.NONE:
            break
        lo, hi = (0, chip.macros) if info.end else (info.target, info.target + info.span)
        for k in range(lo, hi):
            out[k].steps.append(Step(info.word, step.data))
        if info.end:
            break
    return out


def _sum_reads(trace: ChipTrace, per_macro: list[np.ndarray]) -> np.ndarray:
    """Chip READ beats: for each READ in order, the sum of its macros' next ``count``
    beats."""
    chip = trace.config
    wide = chip.result_bits_per_lane > 63
    cursor = [0] * chip.macros
    blocks = []
    for step in trace.steps:
        info = chip_step(chip, step.command)
        if info.end or info.error != ErrorCode.NONE:
            break
        run = macro_step(chip.macro, info.word, (1, 1))
        if run.opcode != Opcode.READ:
            continue
        total = np.zeros((run.count, chip.macro.cols), dtype=object if wide else np.int64)
        for k in range(info.target, info.target + info.span):
            beats = per_macro[k][cursor[k]:cursor[k] + run.count]
            total = total + (beats.astype(object) if wide else beats)
            cursor[k] += run.count
        blocks.append(total)
    if not blocks:
        return np.zeros((0, chip.macro.cols), dtype=object if wide else np.int64)
    return np.concatenate(blocks)


def run_chip_trace(trace: ChipTrace, *, timing: str = "fast") -> ChipGoldenResult:
    """Run ``trace`` on the chip golden model (see the module docstring).

    Parameters
    ----------
    trace : ChipTrace
        A well-formed chip trace (:meth:`ChipTrace.validate`).
    timing : {"fast", "step"}
        The event model (default) or the cycle-stepped reference simulator.
    """
    if timing not in ("fast", "step"):
        raise ValueError(f"timing must be 'fast' or 'step', not {timing!r}")
    chip = trace.config
    model = chip_counters if timing == "fast" else step_chip
    clock = model(chip, trace.commands)
    cols = chip.macro.cols
    if clock.error != ErrorCode.NONE or not clock.halted:
        results = np.zeros((0, cols), dtype=np.int64)
        if clock.error == ErrorCode.NONE:
            # Commands ran out: the macros' READs that ran are still well defined.
            per = [run_trace(t).results for t in macro_traces(trace)]
            results = _sum_reads(trace, per)
        return ChipGoldenResult(results, None, None, clock.error, clock.error_macro,
                                clock.halted, clock.halt)
    per = []
    for macro_trace in macro_traces(trace):
        run = run_trace(macro_trace)
        if run.error != ErrorCode.NONE:
            raise AssertionError(f"macro {macro_trace.meta['chip_macro']} halted with "
                                 f"{run.error.name} in a run the chip model finished")
        per.append(run.results)
    return ChipGoldenResult(_sum_reads(trace, per), clock.counters, clock.macro_counters,
                            ErrorCode.NONE, None, True, clock.halt)
