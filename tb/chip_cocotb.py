"""cocotb test module: run chip traces on the Verilator harness of the chip.

Run through :func:`sparsecim.tb.chip_cosim.run_chip_rtl` (or its batch form), which writes the
job file named by ``SPARSECIM_JOB``: the chip config and, per segment (a trace whose words
are concatenated in the stream files), a timeout and an optional mid-trace reset. Python does
no work per clock cycle: the harness plays ``cmd``, ``weights`` and ``acts`` and records
``result``; this module applies the resets (``resume`` set from the second segment on, so
the players continue where the previous segment stopped), waits for ``done`` and writes the
RTL's status of every segment to the report. The scoreboard is the parent's
(:func:`~sparsecim.tb.chip_cosim.compare_chip`), against the chip golden model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from ..hw.config import ChipConfig
from ..hw.isa import CHIP_COUNTERS, STATUS_COUNTERS, ErrorCode, chip_counters_layout
from ..hw.isa import counters_layout as macro_counters_layout
from .cocotb_top import CLOCK_NS, _reset, _wait_done


def _status(dut, chip: ChipConfig, timed_out: bool) -> dict:
    counters = chip_counters_layout(chip).from_bits(dut.status__counters.value.to_unsigned())
    layout = macro_counters_layout(chip.macro)
    macros_word = dut.status__macros.value.to_unsigned()
    macros = []
    for k in range(chip.macros):
        view = layout.from_bits((macros_word >> (k * layout.size)) & ((1 << layout.size) - 1))
        macros.append({name: int(getattr(view, name)) for name in STATUS_COUNTERS})
    return {
        "counters": {name: int(getattr(counters, name)) for name in CHIP_COUNTERS},
        "macros": macros,
        "error": ErrorCode(int(dut.status__error.value.to_unsigned())).name,
        "error_macro": int(dut.status__error_macro.value.to_unsigned()),
        "done": bool(int(dut.status__done.value)),
        "harness_cycles": int(dut.harness_cycles.value.to_unsigned()),
        "harness_error": bool(int(dut.harness_error.value)),
        "timed_out": timed_out,
    }


@cocotb.test()
async def chip_segments(dut):
    job = json.loads(Path(os.environ["SPARSECIM_JOB"]).read_text())
    chip = ChipConfig.from_dict(job["config"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    started = time.perf_counter()
    segments = []
    for index, segment in enumerate(job["segments"]):
        dut.resume.value = int(index > 0)
        await _reset(dut)
        if segment["reset_at"] is not None:
            # Only the first segment may reset mid-trace: resume 0 rewinds the players to the
            # start of the files, which is its start.
            await ClockCycles(dut.clk, segment["reset_at"])
            await _reset(dut)
        timed_out = await _wait_done(dut, segment["timeout_cycles"],
                                     segment["expected_cycles"])
        segments.append(_status(dut, chip, timed_out))
        if timed_out:
            break  # the streams are no longer aligned with the segments
    report = {"segments": segments, "wall_seconds": time.perf_counter() - started}
    Path(job["report"]).write_text(json.dumps(report, indent=1, sort_keys=True))
