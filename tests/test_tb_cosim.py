"""Verilator + cocotb regressions: the RTL runs whole traces, scoreboarded against the golden
model word by word and against the cycle model counter by counter."""

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.hw.isa import (
    EVENT_COUNTERS,
    Command,
    Mode,
    Opcode,
    args_layout,
    command_layout,
    encode,
    pack_weight_rows,
)
from sparsecim.hw.trace import Step, Trace
from sparsecim.sw.events import count_events
from sparsecim.sw.golden import run_trace
from sparsecim.sw.operands import random_gemm
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import chain, schedule_layer
from sparsecim.sw.schedule.monarch import MAPPINGS, monarch_reference, schedule_monarch
from sparsecim.tb.cosim import Pauses, run_rtl, run_rtl_batch
from sparsecim.tb.randprog import ILLEGAL_KINDS, random_program
from sparsecim.tb.verilator import build

pytestmark = pytest.mark.cosim


def _gemm(name, k, n, tokens, seed=0, pattern=(1, 1)):
    cfg = preset(name)
    x, w = random_gemm(cfg, k, n, tokens, seed, pattern)
    schedule = schedule_layer(cfg, x, w, pattern)
    # The golden model is checked against plain integer matmul before it judges the RTL.
    golden = run_trace(schedule.trace)
    assert np.array_equal(schedule.assemble(golden.results), matmul_reference(x, w))
    return schedule


def _assert_passed(rtl):
    assert rtl.problems == []
    assert rtl.passed
    assert rtl.outputs_match
    assert rtl.rtl_counters["total"] - rtl.rtl_counters["stall"] == rtl.model_counters["total"]
    assert {name: rtl.rtl_counters[name] for name in EVENT_COUNTERS} == rtl.model_events


SHAPES = [
    ("tiny", 16, 4, 1),     # exactly one array
    ("tiny", 5, 3, 2),      # smaller than the array in both dimensions
    ("tiny", 37, 9, 3),     # neither K nor N divides the array
    ("tiny", 40, 10, 12),   # more tokens than accumulator entries: chunked
    ("flexcim", 128, 32, 1),
    ("flexcim", 200, 70, 3),
]


@pytest.mark.parametrize("name, k, n, tokens", SHAPES,
                         ids=[f"{s[0]}-{s[1]}x{s[2]}x{s[3]}" for s in SHAPES])
def test_rtl_gemm_matches_golden_and_cycle_model(tmp_path, name, k, n, tokens):
    schedule = _gemm(name, k, n, tokens, seed=k * n + tokens)
    rtl = run_rtl(schedule.trace, run_dir=tmp_path)
    _assert_passed(rtl)
    assert rtl.rtl_counters["stall"] == 0
    assert rtl.result_beats == rtl.golden_result_beats > 0
    # The RTL's event counters equal the trace walk of sw/events.
    events = count_events(schedule.trace).rtl_counters()
    assert {name: rtl.rtl_counters[name] for name in EVENT_COUNTERS} == events


NM_SHAPES = {"tiny": (37, 9, 3), "flexcim": (300, 70, 3)}
NM_CASES = [(name, pattern) for name in NM_SHAPES for pattern in preset(name).patterns]


@pytest.mark.parametrize("name, pattern", NM_CASES,
                         ids=[f"{name}-{n}:{m}" for name, (n, m) in NM_CASES])
def test_rtl_nm_layer_matches_golden_and_cycle_model(tmp_path, name, pattern):
    """Random per-channel masks (some groups under-full); K and N divide no tile."""
    k, n, tokens = NM_SHAPES[name]
    schedule = _gemm(name, k, n, tokens, seed=pattern[0] * 10 + pattern[1], pattern=pattern)
    rtl = run_rtl(schedule.trace, run_dir=tmp_path)
    _assert_passed(rtl)
    assert rtl.result_beats == rtl.golden_result_beats == schedule.result_beats


@pytest.mark.parametrize("name", sorted(NM_SHAPES))
def test_rtl_trace_switching_patterns_between_layers(tmp_path, name):
    """Every pattern of the preset in one trace, dense first, between and last, each layer
    selecting its own with CONFIG; per layer the outputs equal the integer matmul."""
    cfg = preset(name)
    order = [(1, 1), *cfg.patterns[:3], (1, 1), *cfg.patterns[3:], (1, 1)]
    schedules, refs = [], []
    for seed, pattern in enumerate(order):
        x, w = random_gemm(cfg, 20 + 17 * seed, 5 + seed, 2, seed, pattern)
        schedules.append(schedule_layer(cfg, x, w, pattern))
        refs.append(matmul_reference(x, w))
    trace = chain(schedules)
    rtl = run_rtl(trace, run_dir=tmp_path, pauses=Pauses(0.2, 0.2, 0.2))
    _assert_passed(rtl)
    golden = run_trace(trace).results
    beat = 0
    for schedule, ref in zip(schedules, refs, strict=True):
        got = schedule.assemble(golden[beat:beat + schedule.result_beats])
        np.testing.assert_array_equal(got, ref)
        beat += schedule.result_beats


def test_rtl_nm_with_chunked_tokens_and_pauses(tmp_path):
    schedule = _gemm("tiny", 70, 6, 12, seed=3, pattern=(1, 4))
    assert schedule.chunk < 12
    rtl = run_rtl(schedule.trace, run_dir=tmp_path, pauses=Pauses(0.3, 0.4, 0.5), seed=3)
    _assert_passed(rtl)
    assert rtl.rtl_counters["stall"] > 0


MONARCH = [("tiny", m, 4, 4, 3, 6) for m in MAPPINGS] + [
    ("tiny", "capacity", 2, 2, 5, 5), ("tiny", "capacity", 4, 2, 3, 5),
    ("tiny", "latency", 2, 2, 3, 5), ("tiny", "linear", 3, 2, 5, 4)] + [
    ("flexcim", m, b, b, 2, 12) for b in (8, 16, 32) for m in MAPPINGS] + [
    ("flexcim", "latency", 24, 24, 2, 11), ("flexcim", "capacity", 16, 8, 3, 9),
    ("flexcim", "capacity", 8, 16, 3, 9)]


@pytest.mark.parametrize("name, mapping, b, s, tokens, shift", MONARCH,
                         ids=[f"{c[0]}-{c[1]}-b{c[2]}s{c[3]}" for c in MONARCH])
def test_rtl_monarch_layer_as_one_trace(tmp_path, name, mapping, b, s, tokens, shift):
    """Both block-diagonal factors and the requantizing MOVEs between them (transposing lane
    windows for latency and capacity, straight for linear), banks and COMPUTE parts, with
    stream pauses: bit-exact against the golden model, which is checked against plain numpy
    first; RTL cycles equal the cycle model."""
    cfg = preset(name)
    rng = np.random.default_rng(b + s)
    x = rng.integers(-128, 128, (tokens, b * s))
    r_blocks = rng.integers(-128, 128, (b, s, s))
    l_blocks = rng.integers(-128, 128, (s, s, b))
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, shift, mapping)
    golden = run_trace(schedule.trace)
    np.testing.assert_array_equal(schedule.assemble(golden.results),
                                  monarch_reference(cfg, x, r_blocks, l_blocks, shift))
    rtl = run_rtl(schedule.trace, run_dir=tmp_path, pauses=Pauses(0.2, 0.2, 0.2), seed=b)
    _assert_passed(rtl)
    assert rtl.result_beats == rtl.golden_result_beats == schedule.result_beats


@pytest.mark.slow
def test_rtl_make_sim_workload(tmp_path):
    schedule = _gemm("flexcim", 768, 768, 4)
    _assert_passed(run_rtl(schedule.trace, run_dir=tmp_path))


@pytest.mark.parametrize("name, k, n, tokens", [("tiny", 37, 9, 3), ("flexcim", 150, 40, 2)],
                         ids=["tiny", "flexcim"])
@pytest.mark.parametrize("seed", [1, 2])
def test_rtl_random_pauses_on_every_stream(tmp_path, name, k, n, tokens, seed):
    schedule = _gemm(name, k, n, tokens, seed=seed)
    rtl = run_rtl(schedule.trace, run_dir=tmp_path, pauses=Pauses(0.3, 0.4, 0.5), seed=seed)
    _assert_passed(rtl)
    assert rtl.rtl_counters["stall"] > 0


def _loaded_then(cfg, word):
    """A trace that loads two weight rows, then runs ``word``, then more legal commands."""
    trace = Trace(cfg)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(Opcode.LOAD_W, row=0, count=2),
                 pack_weight_rows(cfg, [[1, 2, 3, 4], [-1, -2, -3, -4]]))
    trace.steps.append(Step(word))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    return trace


@pytest.mark.parametrize("raw_opcode", [6])
def test_rtl_illegal_opcode_raises_error_and_halts(tmp_path, raw_opcode):
    cfg = preset("tiny")
    rtl = run_rtl(_loaded_then(cfg, raw_opcode), run_dir=tmp_path)
    _assert_passed(rtl)
    assert rtl.rtl_error == "ILLEGAL_OPCODE"
    assert rtl.done and not rtl.timed_out
    # CONFIG (1) + LOAD_W (1 + 2) + the illegal fetch (1); the READ after it never ran.
    assert rtl.rtl_counters["total"] == 5
    assert rtl.result_beats == 0


def _illegal_mode_word(cfg):
    layout = command_layout(cfg)
    word = encode(cfg, Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    return word | (1 << (layout["args"].offset + args_layout(cfg, Opcode.CONFIG)["mode"].offset))


BAD_COMMANDS = {
    "read-past-end": (lambda cfg: encode(cfg, Command(Opcode.READ, addr=cfg.acc_depth - 1,
                                                      count=2)), "ADDRESS_RANGE"),
    "load-w-past-end": (lambda cfg: encode(cfg, Command(Opcode.LOAD_W, row=cfg.weight_rows - 1,
                                                        count=2)), "ADDRESS_RANGE"),
    "compute-acc-past-end": (lambda cfg: encode(cfg, Command(
        Opcode.COMPUTE, act_addr=0, acc_addr=cfg.acc_depth - 1, count=2, accumulate=0)),
        "ADDRESS_RANGE"),
    "load-a-zero-count": (lambda cfg: encode(cfg, Command(Opcode.LOAD_A, addr=0, count=0)),
                          "ZERO_COUNT"),
    "unknown-mode": (_illegal_mode_word, "ILLEGAL_MODE"),
    "nm-pattern-not-listed": (lambda cfg: encode(cfg, Command(Opcode.CONFIG, mode=Mode.NM,
                                                              n=3, m=4)), "ILLEGAL_MODE"),
    "dense-with-a-pattern": (lambda cfg: encode(cfg, Command(Opcode.CONFIG, mode=Mode.DENSE,
                                                             n=2, m=4)), "ILLEGAL_MODE"),
    "move-past-the-accumulator": (lambda cfg: encode(cfg, Command(
        Opcode.MOVE, bank=2, acc_addr=cfg.acc_depth - 1, act_addr=0, elem=0, count=2,
        transpose=1)), "ADDRESS_RANGE"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_rtl_bad_command_raises_error_and_halts(tmp_path, case):
    cfg = preset("tiny")
    make_word, code = BAD_COMMANDS[case]
    rtl = run_rtl(_loaded_then(cfg, make_word(cfg)), run_dir=tmp_path)
    _assert_passed(rtl)
    assert rtl.rtl_error == code
    assert rtl.done and not rtl.timed_out
    assert rtl.rtl_counters["total"] == 5
    assert rtl.result_beats == 0


def test_rtl_reset_in_the_middle_reruns_the_trace(tmp_path):
    schedule = _gemm("tiny", 37, 9, 3, seed=5)
    total = run_trace(schedule.trace).counters["total"]
    rtl = run_rtl(schedule.trace, run_dir=tmp_path, reset_at=total // 2,
                  pauses=Pauses(0.2, 0.2, 0.2))
    _assert_passed(rtl)


def test_rtl_trace_without_end_times_out_instead_of_hanging(tmp_path):
    schedule = _gemm("tiny", 5, 3, 1)
    trace = schedule.trace
    trace.steps = trace.steps[:-1]  # drop END: the sequencer waits for a command forever
    rtl = run_rtl(trace, run_dir=tmp_path)
    assert not rtl.passed
    assert rtl.timed_out
    assert rtl.problems == ["RTL did not raise done before the timeout"]


def test_waves_are_written(tmp_path):
    schedule = _gemm("tiny", 5, 3, 1)
    rtl = run_rtl(schedule.trace, run_dir=tmp_path, waves=True)
    _assert_passed(rtl)
    assert rtl.waves.exists() and rtl.waves.stat().st_size > 0


def test_build_is_cached_per_slug():
    cfg = preset("tiny")
    first = build(cfg)
    again = build(cfg)
    assert again.build_dir == first.build_dir
    assert again.build_dir.name == cfg.slug
    assert again.runner.skip_build


# --------------------------------------------------------------------------------------------
# Random programs, thousands per simulator start


def _random_programs(cfg, seed, legal, illegal):
    rng = np.random.default_rng(seed)
    kinds = list(ILLEGAL_KINDS)
    traces = [random_program(cfg, rng) for _ in range(legal)]
    traces += [random_program(cfg, rng, illegal=kinds[i % len(kinds)]) for i in range(illegal)]
    traces = [traces[i] for i in rng.permutation(len(traces))]
    # The golden model first agrees with what each program was built to do.
    totals = []
    for trace in traces:
        golden = run_trace(trace)
        assert golden.halted and golden.error.name == trace.meta["expect"]
        totals.append(golden.counters["total"])
    return traces, sum(totals)


RANDOM_BATCHES = [
    # 2,000 legal and 500 illegal programs on tiny in two simulator starts.
    ("tiny", 1000, 0, 0.0, 11),
    ("tiny", 1000, 500, 0.2, 12),
]


@pytest.mark.parametrize("name, legal, illegal, pause, seed", RANDOM_BATCHES,
                         ids=[f"{b[0]}-{b[1]}-legal-{b[2]}-illegal-pause{b[3]}"
                              for b in RANDOM_BATCHES])
def test_rtl_random_programs_match_golden(tmp_path, name, legal, illegal, pause, seed):
    cfg = preset(name)
    traces, model_total = _random_programs(cfg, seed, legal, illegal)
    rtl = run_rtl_batch(traces, run_dir=tmp_path, pauses=Pauses(pause, pause, pause),
                        seed=seed)
    assert rtl.problems == [] and rtl.failed == []
    assert rtl.passed and rtl.segments == rtl.segments_passed == legal + illegal
    if pause == 0.0:
        # Every program ran exactly its own cycles: none ran on from a neighbour's words.
        assert rtl.rtl_cycles == model_total


@pytest.mark.slow
def test_rtl_random_programs_match_golden_on_flexcim(tmp_path):
    cfg = preset("flexcim")
    traces, _ = _random_programs(cfg, 21, 300, 100)
    rtl = run_rtl_batch(traces, run_dir=tmp_path, pauses=Pauses(0.1, 0.1, 0.1), seed=21)
    assert rtl.problems == [] and rtl.failed == []
    assert rtl.passed and rtl.segments_passed == 400


def test_rtl_batch_refuses_a_trace_that_would_run_into_the_next():
    cfg = preset("tiny")
    trace = random_program(cfg, np.random.default_rng(0))
    trace.steps = trace.steps[:-1]  # no END: its successor's words would run as its own
    with pytest.raises(ValueError) as exc:
        run_rtl_batch([trace], run_dir="unused")
    assert str(exc.value) == (f"trace 0 must halt on its last command with no data left "
                              f"over, not after {len(trace.steps)} of {len(trace.steps)} "
                              f"commands with 0 beats left")
def test_a_cached_build_keeps_the_real_build_log():
    cfg = preset("tiny")
    first = build(cfg)
    log = (first.build_dir / "build.log").read_text()
    again = build(cfg)
    assert again.runner.skip_build
    assert (again.build_dir / "build.log").read_text() == log
    # The real build's output: Verilator's report, then make compiling the model at -O3.
    assert "V e r i l a t i o n   R e p o r t" in log
    assert any(line.startswith("c++ -O3 ") and "Vtop___024root__0.cpp" in line
               for line in log.splitlines())
