"""cocotb test module: run one trace on the Verilator harness and scoreboard it.

Run through :func:`sparsecim.tb.cosim.run_rtl`, which writes the job file named by
``SPARSECIM_JOB``. Python does no work per clock cycle: the harness plays the command and data
files and records results, cocotb starts the clock, applies reset (optionally again in the middle
of the trace) and waits for ``done``. Then the scoreboard compares every result word with the
golden model and the RTL counters with the cycle model, writes a JSON report and fails the test
on any difference.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from ..hw.isa import STATUS_COUNTERS, ErrorCode, counters_layout
from ..hw.trace import Trace
from ..sw.events import count_events
from ..sw.golden import run_trace
from .scoreboard import compare, read_recorded

CLOCK_NS = 10
RESET_CYCLES = 3


def _read_counters(dut, cfg) -> dict[str, int]:
    word = dut.status__counters.value.to_unsigned()
    view = counters_layout(cfg).from_bits(word)
    return {name: int(getattr(view, name)) for name in STATUS_COUNTERS}


async def _reset(dut):
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0


@cocotb.test()
async def trace_matches_golden(dut):
    job = json.loads(Path(os.environ["SPARSECIM_JOB"]).read_text())
    trace = Trace.load(job["trace"])
    cfg = trace.config
    golden = run_trace(trace)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    started = time.perf_counter()
    await _reset(dut)
    if job["reset_at"] is not None:
        await ClockCycles(dut.clk, job["reset_at"])
        await _reset(dut)
    timed_out = False
    try:
        await with_timeout(RisingEdge(dut.status__done), job["timeout_cycles"] * CLOCK_NS, "ns")
    except TimeoutError:
        timed_out = True
    # One more edge so the recorder has flushed the last result.
    await ClockCycles(dut.clk, 2)
    wall = time.perf_counter() - started

    rtl = {
        "results": read_recorded(cfg, Path(job["result_file"])),
        "counters": _read_counters(dut, cfg),
        "error": ErrorCode(int(dut.status__error.value.to_unsigned())).name,
        "harness_cycles": int(dut.harness_cycles.value.to_unsigned()),
        "harness_error": bool(int(dut.harness_error.value)),
        "done": bool(int(dut.status__done.value)),
        "timed_out": timed_out,
    }
    report = compare(cfg, golden, rtl, count_events(trace).rtl_counters())
    report["wall_seconds"] = wall
    Path(job["report"]).write_text(json.dumps(report, indent=1, sort_keys=True))
    assert report["passed"], "; ".join(report["problems"])
