"""cocotb test module: run one trace on the Verilator harness and scoreboard it.

Run through :func:`sparsecim.tb.cosim.run_rtl`, which writes the job file named by
``SPARSECIM_JOB`` with the config and the golden model's results (run once, by the parent;
this process neither parses the trace nor runs the model). Python does no work per clock
cycle: the harness plays the command and data files and records results, cocotb starts the
clock, applies reset (optionally again in the middle of the trace) and waits for ``done``. Then
the scoreboard compares every result word with the golden model and the RTL counters with the
cycle model, writes a JSON report and fails the test on any difference.

A batch job (``segments`` in the job file) runs many traces, concatenated in the stream
files, under this one simulator start: a reset between each with the harness's ``resume``
set, each scoreboarded on its own (this process runs the golden model of each segment), one
report for all.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer, with_timeout

from ..hw.config import MacroConfig
from ..hw.isa import STATUS_COUNTERS, ErrorCode, counters_layout
from ..hw.trace import Trace
from ..sw.events import count_events
from ..sw.golden import GoldenResult, run_trace
from .scoreboard import compare, read_recorded, read_recorded_from

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


async def _wait_done(dut, cycles: int, expected: int | None = None) -> bool:
    """Wait for ``done`` at most ``cycles`` cycles, then two more edges so that the recorder
    has flushed the last result; True if it timed out.

    ``expected`` (the cycle model's count, which a run with or without pauses cannot beat)
    lets the bulk of the wait be one timer: Verilator checks every VPI value-change callback
    (here the one on ``done``) after every evaluation, about 300 instructions a cycle. The
    edge of ``done`` is then awaited only from one cycle before the expected end; a ``done``
    already high at that point (a run shorter than the model) ends the wait at once.
    """
    waited = max(min(expected or 0, cycles) - 1, 0)
    if waited:
        await Timer(waited * CLOCK_NS, "ns")
        await ReadOnly()
    timed_out = False
    if not int(dut.status__done.value):
        try:
            await with_timeout(RisingEdge(dut.status__done), (cycles - waited) * CLOCK_NS, "ns")
        except TimeoutError:
            timed_out = True
    await ClockCycles(dut.clk, 2)
    return timed_out


def _rtl_state(dut, cfg, results, timed_out: bool) -> dict:
    return {
        "results": results,
        "counters": _read_counters(dut, cfg),
        "error": ErrorCode(int(dut.status__error.value.to_unsigned())).name,
        "harness_cycles": int(dut.harness_cycles.value.to_unsigned()),
        "harness_error": bool(int(dut.harness_error.value)),
        "done": bool(int(dut.status__done.value)),
        "timed_out": timed_out,
    }


async def _run_batch(dut, job):
    """Every segment in turn, each after a reset that resumes the stream files."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    started = time.perf_counter()
    result_file = Path(job["result_file"])
    offset = 0
    failed, passed, cycles = [], 0, 0
    for index, (text, timeout) in enumerate(zip(job["segments"], job["timeout_cycles"],
                                                strict=True)):
        trace = Trace.from_text(text, source=f"segment {index}")
        cfg = trace.config
        golden = run_trace(trace)
        dut.resume.value = int(index > 0)
        await _reset(dut)
        timed_out = await _wait_done(dut, timeout, golden.counters["total"])
        results, offset = read_recorded_from(cfg, result_file, offset)
        report = compare(cfg, golden, _rtl_state(dut, cfg, results, timed_out),
                         count_events(trace).rtl_counters())
        cycles += report["rtl_counters"]["total"]
        if report["passed"]:
            passed += 1
        else:
            failed.append({"segment": index, "problems": report["problems"]})
        if timed_out:
            break  # the streams are no longer aligned with the segments
    report = {
        "passed": passed == len(job["segments"]),
        "segments": len(job["segments"]),
        "segments_passed": passed,
        "failed": failed[:50],
        "problems": [f"segment {f['segment']}: {p}" for f in failed[:5] for p in f["problems"]],
        "rtl_cycles": cycles,
        "wall_seconds": time.perf_counter() - started,
    }
    Path(job["report"]).write_text(json.dumps(report, indent=1, sort_keys=True))
    assert report["passed"], "; ".join(report["problems"])


@cocotb.test()
async def trace_matches_golden(dut):
    job = json.loads(Path(os.environ["SPARSECIM_JOB"]).read_text())
    if "segments" in job:
        await _run_batch(dut, job)
        return
    cfg = MacroConfig.from_dict(job["config"])
    expected = job["golden"]
    with np.load(expected["results"]) as arrays:
        results = arrays["results"]
    golden = GoldenResult(results, expected["counters"], ErrorCode[expected["error"]],
                          expected["halted"], expected["commands"], expected["data_left"])

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    started, cpu_started = time.perf_counter(), time.process_time()
    await _reset(dut)
    if job["reset_at"] is not None:
        await ClockCycles(dut.clk, job["reset_at"])
        await _reset(dut)
    timed_out = await _wait_done(dut, job["timeout_cycles"], expected["counters"]["total"])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    rtl = _rtl_state(dut, cfg, read_recorded(cfg, Path(job["result_file"])), timed_out)
    report = compare(cfg, golden, rtl, job["events"])
    report["wall_seconds"] = wall
    # CPU seconds of this process (simulator and cocotb): steadier than wall time under load.
    report["cpu_seconds"] = cpu
    Path(job["report"]).write_text(json.dumps(report, indent=1, sort_keys=True))
    assert report["passed"], "; ".join(report["problems"])
