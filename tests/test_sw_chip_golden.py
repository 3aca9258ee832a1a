import numpy as np
import pytest
from sparsecim.hw.chip_trace import ChipTrace
from sparsecim.hw.config import ChipConfig, chip_preset, preset
from sparsecim.hw.isa import (
    CHIP_COUNTERS,
    STATUS_COUNTERS,
    Command,
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    chip_command_layout,
    command_layout,
    decode,
    encode_chip,
    pack_beats,
    pack_weight_rows,
)
from sparsecim.sw.chip_golden import macro_traces, run_chip_trace
from sparsecim.sw.chip_timing import chip_counters, step_chip
from sparsecim.tb.randchip import CHIP_ILLEGAL_KINDS, random_chip_program

TINY = preset("tiny")


def _chip(macros=4, queue=4, weight_bw=16):
    return ChipConfig(macro=TINY, macros=macros, clock_mhz=100.0, weight_bw=weight_bw,
                      offchip_bytes=1 << 20, buffer_bytes=4096, queue=queue)


def _both(trace):
    """Run both timing models and insist they agree; return the golden result."""
    fast = run_chip_trace(trace)
    step = run_chip_trace(trace, timing="step")
    for name in ("counters", "macro_counters", "error", "error_macro", "halted", "halt"):
        assert getattr(fast, name) == getattr(step, name), name
    np.testing.assert_array_equal(fast.results, step.results)
    return fast


def _macro(total, fetch=0, load=0, compute=0, read=0, passes=0, w_rows=0, a_beats=0):
    busy = fetch + load + compute + read
    return {"total": total, "fetch": fetch, "load": load, "compute": compute, "read": read,
            "stall": total - busy, "passes": passes, "w_rows": w_rows, "a_beats": a_beats}


def test_end_alone():
    # END taken in cycle 0, in H at 1, goes at 1, fetched by every macro at 2: they are done
    # from 3, the chip's done is set at the end of 3: total 4. Each macro counts cycles 0..2.
    trace = ChipTrace(_chip())
    trace.append(Command(Opcode.END))
    run = _both(trace)
    assert run.counters == {"total": 4, "dispatch": 1, "w_load": 0, "a_load": 0, "read": 0,
                            "bw_stall": 0}
    assert run.macro_counters == [_macro(3, fetch=1)] * 4


def test_weight_credit_and_router_order_by_hand():
    # tiny4: a weight row is 4 × (8 + 3) bits = 6 bytes, 4 bytes of credit a cycle: after a
    # row the credit is 4, then 6, so a row can move every 2 cycles.
    chip = chip_preset("tiny4")
    cfg = chip.macro
    trace = ChipTrace(chip)
    rows = pack_weight_rows(cfg, [[1, 2, 3, 4], [5, 6, 7, 8]])
    trace.append(Command(Opcode.LOAD_W, row=0, count=2), rows, target=0, span=1)
    trace.append(Command(Opcode.LOAD_W, row=2, count=2), rows, target=1, span=1)
    trace.append(Command(Opcode.END))
    # cmd 0: taken 0, goes 1, macro 0 fetches 2 and waits from 3: rows at 3 and 5 (cycle 4
    # is a bw_stall), popped at the end of 5. cmd 1: taken 1, goes 2, macro 1 fetches 3 and
    # waits from 4, but is the head only from 6: credit 4 at 6 (bw_stall), rows at 7 and 9
    # (8 a bw_stall). END: taken 2, goes 3; macro 0 fetches it at 6, macro 1 at 10, macros
    # 2 and 3 at 4. Halt at the end of 11: total 12.
    run = _both(trace)
    assert run.counters == {"total": 12, "dispatch": 3, "w_load": 4, "a_load": 0, "read": 0,
                            "bw_stall": 3}
    assert run.macro_counters == [_macro(7, fetch=2, load=2, w_rows=2),
                                  _macro(11, fetch=2, load=2, w_rows=2),
                                  _macro(5, fetch=1), _macro(5, fetch=1)]


def test_full_queue_holds_the_dispatcher_by_hand():
    # queue = 1. cmd 0 (COMPUTE count 4 on macro 0): goes 1, fetched 2, compute 3..8 (4
    # passes + 2 drain). cmd 1 (CONFIG): in H at 2; queue 0 is full at the start of 2 (a
    # fetch in the same cycle makes no room), so it goes at 3; fetched at 9. cmd 2 (CONFIG):
    # in H at 4, queue 0 holds cmd 1 until its fetch at 9: goes 10, fetched 11. END: in H at
    # 11, goes 12 once cmd 2 has left queue 0; fetched at 13 by both. Total 15.
    trace = ChipTrace(_chip(macros=2, queue=1))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=4, accumulate=0))
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=2, m=4))
    trace.append(Command(Opcode.END))
    run = _both(trace)
    assert run.counters == {"total": 15, "dispatch": 4, "w_load": 0, "a_load": 0, "read": 0,
                            "bw_stall": 0}
    assert run.macro_counters == [_macro(14, fetch=4, compute=6, passes=4),
                                  _macro(14, fetch=1)]


def test_read_waits_for_every_macro_of_its_range_by_hand():
    # weight_bw 16 >= 6: no credit stall. cmd 0 COMPUTE count 2 on macro 0: fetched 2,
    # compute 3..6. cmd 1 READ count 2 on macros 0, 1: goes 2; macro 1 fetches it at 3 and
    # offers from 4, macro 0 fetches at 7 and offers from 8: beats move at 8 and 9. END goes
    # 3, fetched at 10 by both macros (and at 4 by macros 2, 3). Total 12.
    trace = ChipTrace(_chip())
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=2, accumulate=0))
    trace.append(Command(Opcode.READ, addr=0, count=2), target=0, span=2)
    trace.append(Command(Opcode.END))
    run = _both(trace)
    assert run.counters == {"total": 12, "dispatch": 3, "w_load": 0, "a_load": 0, "read": 2,
                            "bw_stall": 0}
    assert run.macro_counters[:2] == [_macro(11, fetch=3, compute=4, read=2, passes=2),
                                      _macro(11, fetch=2, read=2)]
    assert run.results.shape == (2, TINY.cols) and not run.results.any()


def test_results_are_sums_of_per_macro_matmuls():
    chip = _chip(macros=4, weight_bw=3)
    cfg = chip.macro
    rng = np.random.default_rng(1)
    weights = rng.integers(-128, 128, size=(4, cfg.weight_rows, cfg.cols))
    entries = rng.integers(-128, 128, size=(2, cfg.act_beats(1, 1) * cfg.act_lanes))
    trace = ChipTrace(chip)
    for k in range(4):
        trace.append(Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows),
                     pack_weight_rows(cfg, weights[k]), target=k, span=1)
    beats = entries.reshape(-1, cfg.act_lanes)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=2), pack_beats(act_beat_layout(cfg),
                                                                     beats), target=0, span=4)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=2, accumulate=0),
                 target=0, span=4)
    trace.append(Command(Opcode.COMPUTE, act_addr=1, acc_addr=0, count=1, accumulate=1),
                 target=2, span=1)
    trace.append(Command(Opcode.READ, addr=0, count=2), target=0, span=4)
    trace.append(Command(Opcode.READ, addr=0, count=1), target=1, span=2)
    trace.append(Command(Opcode.END))
    trace.validate()
    run = _both(trace)
    # Independent reference: dense pass = entry elements 0 .. rows·P - 1 times the weights.
    x = entries[:, :cfg.weight_rows]
    acc = np.stack([x @ weights[k] for k in range(4)])      # (macro, entry, cols)
    acc[2, 0] += x[1] @ weights[2]
    expect = np.concatenate([acc.sum(axis=0), acc[1:3, :1].sum(axis=0)])
    np.testing.assert_array_equal(run.results, expect)
    assert run.counters["read"] == 3 and run.counters["w_load"] == 4 * cfg.weight_rows
    # Each macro trace is its share of the commands.
    assert [len(t.steps) for t in macro_traces(trace)] == [5, 6, 7, 5]


def test_no_end_means_no_halt():
    trace = ChipTrace(_chip())
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1), target=0, span=4)
    run = _both(trace)
    assert not run.halted and run.counters is None and run.error == ErrorCode.NONE


def _words(chip, *commands):
    return [encode_chip(chip, cmd, target=t, span=s) for cmd, t, s in commands]


def _undefined(chip, target, span):
    """A chip word whose macro word has the undefined opcode 6 (encode refuses it)."""
    layout = chip_command_layout(chip)
    opcode = command_layout(chip.macro)["opcode"].offset
    return (6 << opcode << layout["cmd"].offset | target << layout["target"].offset
            | span << layout["span"].offset)


def test_error_cycles_and_priority_by_hand():
    chip = _chip()
    dense = Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1)
    # Span 0 first: in H at 1, refused there: halt at the end of 1.
    words = _words(chip, (dense, 0, 0))
    for model in (chip_counters, step_chip):
        run = model(chip, words)
        assert (run.error, run.error_macro, run.halt) == (ErrorCode.ZERO_COUNT, 4, 1)
    # An illegal word on macro 2: goes 1, fetched 2, the error shows from 3.
    word = _undefined(chip, 2, 1)
    for model in (chip_counters, step_chip):
        run = model(chip, [word])
        assert (run.error, run.error_macro, run.halt) == (ErrorCode.ILLEGAL_OPCODE, 2, 3)
    # Same cycle: macro 0's error (fetched 2, shows at 3) and a range past the chip (in H at
    # 3 after a CONFIG that went at 2): the macro wins.
    words = [_undefined(chip, 0, 1)] + _words(chip, (dense, 1, 1), (dense, 3, 2))
    for model in (chip_counters, step_chip):
        run = model(chip, words)
        assert (run.error, run.error_macro, run.halt) == (ErrorCode.ILLEGAL_OPCODE, 0, 3)
    # One cycle earlier, the dispatcher wins.
    words = [_undefined(chip, 0, 1)] + _words(chip, (dense, 3, 2))
    for model in (chip_counters, step_chip):
        run = model(chip, words)
        assert (run.error, run.error_macro, run.halt) == (ErrorCode.ADDRESS_RANGE, 4, 2)


def test_out_of_step_by_hand():
    chip = _chip()
    words = _words(chip, (Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=2), 1, 1),
                   (Command(Opcode.LOAD_A, addr=0, count=1), 0, 2))
    # CONFIG goes 1, macro 1 fetches it at 2. LOAD_A goes 2; macro 0 fetches at 3, macro 1
    # at 3: both wait from 4; macro 0 (dense) takes 4 beats, its last at 7, with macro 1
    # (1:2, 7 beats) not at its last: OUT_OF_STEP at 7.
    for model in (chip_counters, step_chip):
        run = model(chip, words)
        assert (run.error, run.error_macro, run.halt) == (ErrorCode.OUT_OF_STEP, 4, 7)


def _fuzz(count, seed):
    chips = [chip_preset("tiny4"), _chip(macros=3, queue=1, weight_bw=16),
             _chip(macros=5, queue=2, weight_bw=1), _chip(macros=1, queue=3, weight_bw=6),
             _chip(macros=8, queue=4, weight_bw=5)]
    kinds = [None] * 4 + list(CHIP_ILLEGAL_KINDS)
    rng = np.random.default_rng(seed)
    for index in range(count):
        chip = chips[index % len(chips)]
        kind = kinds[rng.integers(len(kinds))]
        if kind in ("out-of-step", "span-range") and chip.macros < 2:
            kind = None     # one macro: no two patterns to disagree, no range past the field
        trace = random_chip_program(chip, rng, illegal=kind, prologue=False,
                                    max_body=int(rng.integers(1, 30)), tail=index % 3 * 4)
        trace.validate()
        fast = chip_counters(chip, trace.commands)
        step = step_chip(chip, trace.commands)
        assert fast == step, (index, kind, trace.dump(0))
        assert fast.error.name == trace.meta["expect"]
        if trace.meta["expect_macro"] is not None:
            assert fast.error_macro == trace.meta["expect_macro"]
        if kind is None:
            assert set(fast.counters) == set(CHIP_COUNTERS)
            assert all(set(c) == set(STATUS_COUNTERS) for c in fast.macro_counters)
            assert fast.counters["total"] == max(c["total"] for c in fast.macro_counters) + 1


def test_event_model_equals_cycle_simulator_on_random_programs():
    _fuzz(1000, seed=0)


@pytest.mark.slow
def test_event_model_equals_cycle_simulator_on_many_random_programs():
    _fuzz(5000, seed=1)


def test_golden_results_and_counters_of_random_programs_agree():
    rng = np.random.default_rng(5)
    for _ in range(3):
        trace = random_chip_program(chip_preset("tiny4"), rng, max_body=10)
        _both(trace)


def test_timing_must_be_fast_or_step():
    with pytest.raises(ValueError, match="timing must be 'fast' or 'step', not 'slow'"):
        run_chip_trace(ChipTrace(_chip()), timing="slow")


@pytest.mark.parametrize("queue", [2, 4])
def test_one_macro_chip_runs_a_macro_program_as_the_macro_cycle_model_says(queue):
    # With K = 1, a full-rate weight port and a queue of at least 2, the dispatcher (one
    # command a cycle from cycle 1) keeps the macro fed: it fetches its first command at 2
    # and never waits again. So the macro's counters are the macro cycle model's
    # (sw.golden, held to the macro RTL) plus 2 stall cycles, and the chip's total one more
    # than the macro's; its READ beats are the macro's.
    from sparsecim.sw.golden import run_trace
    from sparsecim.tb.randprog import random_program

    chip = _chip(macros=1, queue=queue, weight_bw=64)
    rng = np.random.default_rng(queue)
    for _ in range(4):
        program = random_program(TINY, rng, max_body=12)
        trace = ChipTrace(chip)
        for step in program.steps:
            trace.append(decode(TINY, step.command), step.data)
        run = _both(trace)
        macro = run_trace(program)
        expect = dict(macro.counters, total=macro.counters["total"] + 2,
                      stall=macro.counters["stall"] + 2)
        got = run.macro_counters[0]
        assert {name: got[name] for name in expect} == expect
        assert run.counters["total"] == got["total"] + 1
        assert run.counters["bw_stall"] == 0
        np.testing.assert_array_equal(run.results, macro.results)
