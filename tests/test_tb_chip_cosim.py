"""Verilator + cocotb regressions of the chip: random chip programs on the chip RTL, scoreboarded
against the chip golden model (results bit for bit) and its cycle model (every chip and macro
counter without pauses; the counters docs/chip.md keeps exact under pauses otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
from sparsecim.hw.config import CHIP_PRESETS, PRESETS, ChipConfig
from sparsecim.hw.isa import ErrorCode
from sparsecim.sw.chip_golden import run_chip_trace
from sparsecim.sw.operands import random_gemm
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import monarch_reference
from sparsecim.sw.schedule.chip import ChipLayer, schedule_chip, schedule_monarch_chip
from sparsecim.tb.chip_cosim import ChipPauses, run_chip_rtl, run_chip_rtl_batch
from sparsecim.tb.randchip import CHIP_ILLEGAL_KINDS, random_chip_program

pytestmark = pytest.mark.cosim

PAUSES = ChipPauses(cmd=0.3, weights=0.3, acts=0.3, result=0.3)


def tiny_chip(macros: int) -> ChipConfig:
    if macros == 4:
        return CHIP_PRESETS["tiny4"]
    # Like tiny4: the weight port below a row a cycle, so the credit paces every LOAD_W.
    return ChipConfig(macro=PRESETS["tiny"], macros=macros, clock_mhz=100.0, weight_bw=4,
                      offchip_bytes=1 << 20, buffer_bytes=4096, queue=2 + macros % 3)


def _programs(chip, seeds, **kwargs):
    return [random_chip_program(chip, np.random.default_rng(seed), **kwargs) for seed in seeds]


def _assert_passed(report, segments):
    assert report.problems == []
    assert report.passed and report.segments_passed == segments


def _batch(chip, tmp_path, seeds, pauses, seed=1):
    traces = _programs(chip, seeds)
    goldens = [run_chip_trace(t) for t in traces]
    assert all(g.error == ErrorCode.NONE for g in goldens)
    assert sum(len(g.results) for g in goldens) >= len(goldens)  # the READs are compared
    report = run_chip_rtl_batch(traces, run_dir=tmp_path, pauses=pauses, seed=seed,
                                goldens=goldens)
    _assert_passed(report, len(traces))
    if not pauses.any:
        assert report.rtl_cycles == sum(g.counters["total"] for g in goldens)
    return report


@pytest.mark.parametrize("pauses", [ChipPauses(), PAUSES], ids=["ready", "paused"])
@pytest.mark.parametrize("macros", [2, 4])
def test_tiny_chip_random_programs_batched(tmp_path, macros, pauses):
    _batch(tiny_chip(macros), tmp_path, range(100 * macros, 100 * macros + 12), pauses,
           seed=macros)


@pytest.mark.slow
@pytest.mark.parametrize("pauses", [ChipPauses(), PAUSES], ids=["ready", "paused"])
def test_tiny_chip_of_8_random_programs_batched(tmp_path, pauses):
    _batch(tiny_chip(8), tmp_path, range(800, 816), pauses, seed=8)


def test_tiny_chip_reset_mid_trace(tmp_path):
    chip = CHIP_PRESETS["tiny4"]
    (trace,) = _programs(chip, [7])
    golden = run_chip_trace(trace)
    report = run_chip_rtl(trace, run_dir=tmp_path, pauses=PAUSES, seed=3,
                          reset_at=golden.counters["total"] // 2, golden=golden)
    _assert_passed(report, 1)


@pytest.mark.parametrize("kind", list(CHIP_ILLEGAL_KINDS))
def test_tiny_chip_illegal_program_halts_with_its_error(tmp_path, kind):
    chip = CHIP_PRESETS["tiny4"]
    seed = list(CHIP_ILLEGAL_KINDS).index(kind)
    (trace,) = _programs(chip, [seed], illegal=kind)
    golden = run_chip_trace(trace)
    assert golden.error == CHIP_ILLEGAL_KINDS[kind]
    report = run_chip_rtl(trace, run_dir=tmp_path, pauses=PAUSES if seed % 2 else ChipPauses(),
                          seed=seed, golden=golden)
    _assert_passed(report, 1)


def test_scoreboard_catches_a_wrong_result_and_counter(tmp_path):
    """The comparison is not vacuous: a golden result off by one lane and a counter off by
    one are both reported."""
    chip = CHIP_PRESETS["tiny4"]
    (trace,) = _programs(chip, [400])
    golden = run_chip_trace(trace)
    assert len(golden.results)
    golden.results[0, 0] += 1
    golden.counters["w_load"] += 1
    report = run_chip_rtl(trace, run_dir=tmp_path, golden=golden)
    assert not report.passed
    assert any("result lanes differ" in p for p in report.problems)
    assert any("chip w_load" in p for p in report.problems)


def test_batch_refuses_a_trace_that_errs(tmp_path):
    chip = CHIP_PRESETS["tiny4"]
    traces = _programs(chip, [1]) + _programs(chip, [2], illegal="span-zero")
    with pytest.raises(ValueError, match="trace 1 must halt on END without error"):
        run_chip_rtl_batch(traces, run_dir=tmp_path)


def _flexcim_chip():
    return ChipConfig(macro=PRESETS["flexcim"], macros=2, clock_mhz=500.0, weight_bw=32,
                      offchip_bytes=1 << 30, buffer_bytes=1 << 20, queue=4)


@pytest.mark.slow
@pytest.mark.parametrize("pauses", [ChipPauses(), PAUSES], ids=["ready", "paused"])
def test_flexcim_chip_of_2_random_programs_batched(tmp_path, pauses):
    """The fast sibling is the tiny chip of 2 above; the build takes minutes."""
    _batch(_flexcim_chip(), tmp_path, range(200, 206), pauses, seed=2)


# Scheduled traces (sw/schedule/chip.py) -------------------------------------------------------

def _layers(chip, shapes, tokens, seed):
    layers, xs, ws = [], [], []
    for index, (k, n, pattern) in enumerate(shapes):
        x, w = random_gemm(chip.macro, k, n, tokens, seed + index, pattern)
        layers.append(ChipLayer(f"l{index}", k, n, pattern))
        xs.append(x)
        ws.append(w)
    expected = [matmul_reference(x, w) for x, w in zip(xs, ws, strict=True)]
    return schedule_chip(chip, layers, xs, ws), expected


def _monarch(chip, b, s, tokens, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (tokens, b * s))
    r = rng.integers(-128, 128, (b, s, s))
    lb = rng.integers(-128, 128, (s, s, b))
    monarch = schedule_monarch_chip(chip, x, r, lb, 7)
    return monarch, (np.einsum("ico,tio->tic", r, x.reshape(tokens, b, s)),
                     monarch_reference(chip.macro, x, r, lb, 7))


@pytest.mark.parametrize("macros", [2, 4])
def test_scheduled_traces_on_the_tiny_chip(tmp_path, macros):
    """Resident and streamed layers, dense and N:M mixed, several tokens, and a Monarch layer
    split over the macros: the RTL's result beats assemble to the numpy products."""
    chip = tiny_chip(macros)
    cases = [_layers(chip, [(13, 6, (1, 1)), (50, 9, (2, 4))], 3, 1),
             _layers(chip, [(70, 5, (1, 8)), (20, 10, (1, 1))], 5, 2),
             _layers(chip, [(200, 3, (1, 1))], 2, 3),
             _layers(chip, [(16, 4, (1, 1)), (30, 4, (2, 4))], 4, 5),
             _monarch(chip, 4, 4, 3, 4)]
    layers = len(cases) - 1
    placements = [p for schedule, _ in cases[:layers] for p in schedule.plan.placements]
    assert any(p.resident for p in placements) and not all(p.resident for p in placements)
    report = run_chip_rtl_batch([schedule.trace for schedule, _ in cases], run_dir=tmp_path,
                                pauses=PAUSES if macros == 4 else ChipPauses(), seed=macros)
    _assert_passed(report, len(cases))
    for (schedule, expected), results in zip(cases, report.results, strict=True):
        outs = schedule.assemble(results)
        for out, want in zip(outs, expected, strict=True):
            np.testing.assert_array_equal(out, want)
