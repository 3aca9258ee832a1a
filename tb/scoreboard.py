"""Scoreboard: RTL results and counters against the golden model and the cycle model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import EVENT_COUNTERS, result_layout, unpack_beats
from ..sw.golden import GoldenResult

__all__ = ["read_recorded", "compare"]

RESET_MARK = "# reset"


def read_recorded(cfg: MacroConfig, path: Path) -> np.ndarray:
    """Result beats recorded by the harness since the last reset, as ``(beats, cols)``."""
    words = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line == RESET_MARK:
            words = []
        elif line:
            words.append(int(line, 16))
    return unpack_beats(result_layout(cfg), words)


def compare(cfg: MacroConfig, golden: GoldenResult, rtl: dict, events: dict) -> dict:
    """Compare every result word and every counter; return a JSON-able report.

    ``rtl`` holds ``results`` (beats × cols), ``counters`` (by name), ``error`` (name),
    ``harness_cycles`` (cycles counted by the harness, independent of the RTL counters),
    ``harness_error``, ``done`` and ``timed_out``. The counters must equal the cycle model
    exactly, except ``stall`` (the model has no stalls) which must make up the difference in
    ``total``; the event counters (:data:`~sparsecim.hw.isa.EVENT_COUNTERS`) must equal
    ``events``, the model's counts (:meth:`sparsecim.sw.events.Events.rtl_counters`).
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
    model = golden.counters
    for name in ("fetch", "load", "compute", "read"):
        if counters[name] != model[name]:
            problems.append(f"{name} cycles: RTL {counters[name]}, model {model[name]}")
    if counters["total"] - counters["stall"] != model["total"]:
        problems.append(f"total - stall: RTL {counters['total'] - counters['stall']}, "
                        f"model {model['total']}")
    for name in EVENT_COUNTERS:
        if counters[name] != events[name]:
            problems.append(f"{name} events: RTL {counters[name]}, model {events[name]}")
    if rtl["harness_cycles"] != counters["total"]:
        problems.append(f"harness counted {rtl['harness_cycles']} cycles, "
                        f"RTL total counter {counters['total']}")
    return {
        "passed": not problems,
        "problems": problems,
        "outputs_match": got.shape == want.shape and not diff.size,
        "result_beats": int(got.shape[0]),
        "golden_result_beats": int(want.shape[0]),
        "first_mismatch": first_mismatch,
        "rtl_counters": counters,
        "model_counters": dict(model),
        "model_events": dict(events),
        "harness_cycles": rtl["harness_cycles"],
        "rtl_error": rtl["error"],
        "golden_error": golden.error.name,
        "done": rtl["done"],
        "timed_out": rtl["timed_out"],
    }
