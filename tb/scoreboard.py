"""Scoreboard: RTL results and counters against the golden model and the cycle model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import EVENT_COUNTERS, result_layout, unpack_beats
from ..sw.golden import GoldenResult

__all__ = ["read_recorded", "read_recorded_from", "compare"]

RESET_MARK = "# reset"


def read_recorded(cfg: MacroConfig, path: Path) -> np.ndarray:
    """Result beats recorded by the harness since the last reset, as ``(beats, cols)``."""
    return read_recorded_from(cfg, path, 0)[0]


def read_recorded_from(cfg: MacroConfig, path: Path, offset: int) -> tuple[np.ndarray, int]:
    """Like :func:`read_recorded`, reading only from byte ``offset`` on (where the previous
    call stopped, at a reset mark); returns the beats and the offset to pass next time."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        text = handle.read()
    end = offset + len(text)
    words = []
    for line in text.decode().splitlines():
        line = line.strip()
        if line == RESET_MARK:
            words = []
        elif line:
            words.append(int(line, 16))
    return unpack_beats(result_layout(cfg), words), end


def compare(cfg: MacroConfig, golden: GoldenResult, rtl: dict, events: dict) -> dict:
    """Compare every result word and every counter; return a JSON-able report.

    ``rtl`` holds ``results`` (beats × cols), ``counters`` (by name), ``error`` (name),
    ``harness_cycles`` (cycles counted by the harness, independent of the RTL counters),
    ``harness_error``, ``done`` and ``timed_out``. The counters must equal the cycle model
    exactly, except ``stall`` (the model has no stalls) which must make up the difference in
    ``total``. Counters saturate at ``cfg.counter_bits``: they are compared with
    :meth:`GoldenResult.saturated`, and a saturated ``total`` is replaced by the harness's
    count. ``rtl_cycles`` in the report is the RTL's cycles less its stalls. The event
    counters (:data:`~sparsecim.hw.isa.EVENT_COUNTERS`) must equal ``events``, the model's
    counts (:meth:`sparsecim.sw.events.Events.rtl_counters`), saturated the same way.
    """
    problems = []
    got, want = rtl["results"], golden.results
    first_mismatch = None
    if got.shape != want.shape:
        problems.append(f"RTL sent {got.shape[0]} result beats, golden {want.shape[0]}")
    common = min(got.shape[0], want.shape[0])
    diff = np.argwhere(got[:common] != want[:common])
    if diff.size:
        beat, lane = (int(v) for v in diff[0])
        first_mismatch = {"beat": beat, "lane": lane, "rtl": int(got[beat, lane]),
                          "golden": int(want[beat, lane])}
        problems.append(f"{len(diff)} result words differ; first at beat {beat} lane {lane}: "
                        f"RTL {got[beat, lane]}, golden {want[beat, lane]}")
    if rtl["timed_out"]:
        problems.append("RTL did not raise done before the timeout")
    if rtl["harness_error"]:
        problems.append("harness could not read its stream files")
    if rtl["error"] != golden.error.name:
        problems.append(f"RTL error status {rtl['error']}, golden {golden.error.name}")
    counters = rtl["counters"]
    # The RTL counters saturate at counter_bits (16 on fpga): compare them with the model's
    # counters saturated the same way, never with the exact ones.
    top = 2 ** cfg.counter_bits - 1
    model = golden.saturated(cfg.counter_bits)
    exact_total = golden.counters["total"]
    for name in ("fetch", "load", "compute", "read"):
        if counters[name] != model[name]:
            problems.append(f"{name} cycles: RTL {counters[name]}, model {model[name]}")
    if counters["total"] < top:
        rtl_cycles = counters["total"] - counters["stall"]
        if rtl_cycles != exact_total:
            problems.append(f"total - stall: RTL {rtl_cycles}, model {exact_total}")
        if rtl["harness_cycles"] != counters["total"]:
            problems.append(f"harness counted {rtl['harness_cycles']} cycles, "
                            f"RTL total counter {counters['total']}")
    else:
        # The total saturated: the harness's 64-bit count of the same cycles stands in for it.
        rtl_cycles = rtl["harness_cycles"] - counters["stall"]
        if rtl["harness_cycles"] < top:
            problems.append(f"harness counted {rtl['harness_cycles']} cycles, "
                            f"RTL total counter {counters['total']} (saturated)")
        elif counters["stall"] < top and rtl_cycles != exact_total:
            problems.append(f"harness cycles - stall: RTL {rtl_cycles}, model {exact_total}")
    for name in EVENT_COUNTERS:
        if counters[name] != min(events[name], top):
            problems.append(f"{name} events: RTL {counters[name]}, model {events[name]}")
    return {
        "passed": not problems,
        "problems": problems,
        "outputs_match": got.shape == want.shape and not diff.size,
        "result_beats": int(got.shape[0]),
        "golden_result_beats": int(want.shape[0]),
        "first_mismatch": first_mismatch,
        "rtl_counters": counters,
        "model_counters": dict(golden.counters),
        "model_counters_saturated": model,
        "rtl_cycles": int(rtl_cycles),
        "cycles_match": int(rtl_cycles) == exact_total,
        "model_events": dict(events),
        "harness_cycles": rtl["harness_cycles"],
        "rtl_error": rtl["error"],
        "golden_error": golden.error.name,
        "done": rtl["done"],
        "timed_out": rtl["timed_out"],
    }
