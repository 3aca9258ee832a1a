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
