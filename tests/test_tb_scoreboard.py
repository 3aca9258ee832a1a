"""The scoreboard must catch every kind of disagreement (no Verilator needed)."""

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.hw.isa import ErrorCode, pack_beats, result_layout
from sparsecim.sw.golden import GoldenResult
from sparsecim.tb.scoreboard import compare, read_recorded

CFG = preset("tiny")
RESULTS = np.array([[1, -2, 3, -4], [2 ** 31 - 1, -(2 ** 31), 0, 7]], dtype=np.int64)
MODEL = {"total": 20, "fetch": 5, "load": 8, "compute": 5, "read": 2, "stall": 0}
EVENTS = {"passes": 3, "w_rows": 4, "a_beats": 4}


def _golden():
    return GoldenResult(results=RESULTS.copy(), counters=dict(MODEL), error=ErrorCode.NONE,
                        halted=True, commands=5)


def _rtl(**changes):
    counters = dict(MODEL) | EVENTS | {"total": 23, "stall": 3}
    rtl = {"results": RESULTS.copy(), "counters": counters, "error": "NONE",
           "harness_cycles": 23, "harness_error": False, "done": True, "timed_out": False}
    rtl.update(changes)
    return rtl


def test_agreement_passes_with_stalls_accounted():
    report = compare(CFG, _golden(), _rtl(), EVENTS)
    assert report["passed"] and report["problems"] == []


def test_one_wrong_word_is_located():
    results = RESULTS.copy()
    results[1, 2] = 5
    report = compare(CFG, _golden(), _rtl(results=results), EVENTS)
    assert not report["passed"]
    assert report["first_mismatch"] == {"beat": 1, "lane": 2, "rtl": 5, "golden": 0}
    assert report["problems"] == ["1 result words differ; first at beat 1 lane 2: RTL 5, golden 0"]


def test_missing_beats_are_reported():
    report = compare(CFG, _golden(), _rtl(results=RESULTS[:1]), EVENTS)
    assert report["problems"] == ["RTL sent 1 result beats, golden 2"]


@pytest.mark.parametrize("change, problem", [
    ({"counters": MODEL | EVENTS | {"total": 24, "stall": 3}}, "total - stall: RTL 21, model 20"),
    ({"counters": MODEL | EVENTS | {"total": 23, "stall": 3, "load": 9, "compute": 4}},
     "load cycles: RTL 9, model 8"),
    ({"counters": MODEL | EVENTS | {"total": 23, "stall": 3, "passes": 2}},
     "passes events: RTL 2, model 3"),
    ({"harness_cycles": 22}, "harness counted 22 cycles, RTL total counter 23"),
    ({"error": "ADDRESS_RANGE"}, "RTL error status ADDRESS_RANGE, golden NONE"),
    ({"timed_out": True}, "RTL did not raise done before the timeout"),
    ({"harness_error": True}, "harness could not read its stream files"),
], ids=["cycles", "load", "passes", "harness-cycles", "error", "timeout", "harness"])
def test_each_disagreement_is_reported(change, problem):
    report = compare(CFG, _golden(), _rtl(**change), EVENTS)
    assert not report["passed"]
    assert problem in report["problems"]


def test_recorded_results_restart_after_a_reset_mark(tmp_path):
    words = pack_beats(result_layout(CFG), RESULTS)
    path = tmp_path / "result.hex"
    path.write_text("ffff\n# reset\n" + "".join(f"{w:x}\n" for w in words))
    assert np.array_equal(read_recorded(CFG, path), RESULTS)


def _long_golden(total):
    """A run longer than the 16-bit counters of the fpga preset can count."""
    counters = {"total": total, "fetch": 40, "load": total - 2040, "compute": 1800,
                "read": 200, "stall": 0}
    assert sum(v for k, v in counters.items() if k != "total") == total
    return GoldenResult(results=np.zeros((0, 2), np.int64), counters=counters,
                        error=ErrorCode.NONE, halted=True, commands=40)


def test_saturated_counters_are_compared_saturated():
    cfg = preset("fpga")
    assert cfg.counter_bits == 16
    golden = _long_golden(70_000)
    top = 2 ** 16 - 1
    # What the RTL shows: total and load stuck at 65535, the others exact; 7 stalls.
    # The event counters saturate alike: 68,000 weight rows show as 65535.
    events = {"passes": 1800, "w_rows": 68_000, "a_beats": 40}
    counters = {"total": top, "fetch": 40, "load": top, "compute": 1800, "read": 200,
                "stall": 7, "passes": 1800, "w_rows": top, "a_beats": 40}
    rtl = {"results": np.zeros((0, 2), np.int64), "counters": counters, "error": "NONE",
           "harness_cycles": 70_007, "harness_error": False, "done": True, "timed_out": False}
    report = compare(cfg, golden, rtl, events)
    assert report["problems"] == []
    assert report["rtl_cycles"] == 70_000 and report["cycles_match"]
    # A cycle lost is still caught, through the harness's own 64-bit count.
    report = compare(cfg, golden, rtl | {"harness_cycles": 70_006}, events)
    assert report["problems"] == ["harness cycles - stall: RTL 69999, model 70000"]
    # And a saturated RTL counter where the model's does not saturate.
    report = compare(cfg, golden, rtl | {"counters": counters | {"compute": top}}, events)
    assert report["problems"] == [f"compute cycles: RTL {top}, model 1800"]
    # And an event counter short of its saturated value.
    report = compare(cfg, golden, rtl | {"counters": counters | {"w_rows": top - 1}}, events)
    assert report["problems"] == [f"w_rows events: RTL {top - 1}, model 68000"]
