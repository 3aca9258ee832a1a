"""The chip (K macros, docs/chip.md) in Amaranth simulation: dispatch, routers, errors, counters.

Expected cycles are derived here from the rules of docs/chip.md and the per-command cycle
model (``isa.cycles``), not from the RTL; expected results from numpy products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.sim import Simulator
from conftest import pauser, result_collector, stream_feeder, wait_done
from sparsecim.hw import isa
from sparsecim.hw.chip import Chip
from sparsecim.hw.chip_trace import ChipTrace, plan_chip
from sparsecim.hw.config import PRESETS, ChipConfig
from sparsecim.hw.isa import Command, ErrorCode, Opcode, decode_chip
from sparsecim.hw.trace import Step
from sparsecim.sw.chip_golden import run_chip_trace
from sparsecim.tb.randchip import random_chip_program
from sparsecim.tb.randprog import ILLEGAL_KINDS

TINY = PRESETS["tiny"]


def chip_of(macros, *, weight_bw=64, queue=4):
    return ChipConfig(macro=TINY, macros=macros, clock_mhz=100.0, weight_bw=weight_bw,
                      offchip_bytes=1 << 20, buffer_bytes=4096, queue=queue)


# Simulation harness ---------------------------------------------------------------------------

@dataclass
class ChipRun:
    results: np.ndarray            # summed result beats, (beats, cols)
    counters: dict                 # chip counters
    macros: list                   # per macro status counters
    error: ErrorCode
    error_macro: int
    done_cycle: int                # first cycle in which status.done is high
    taken: dict = field(default_factory=dict)  # stream -> cycles of its handshakes


def run_chip(chip, commands, weights=(), acts=(), *, pause_seed=None, pause_probability=0.3,
             max_cycles=3000):
    """Play chip command words, weight rows and activation beats into a fresh :class:`Chip`
    until ``done``; every stream may idle at random (``pause_seed``). Records the cycle of
    every handshake of each input stream and checks the result stream's hold rule."""
    dut = Chip(chip=chip)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    words = {"cmd": list(commands), "weights": list(weights), "acts": list(acts)}
    taken = {name: [] for name in words}
    got, out = [], {}

    def feeder(name, salt):
        pause = pauser(None if pause_seed is None else pause_seed * 10 + salt,
                       pause_probability)
        return stream_feeder(getattr(dut, name), words[name], pause, taken[name])

    pause_result = pauser(None if pause_seed is None else pause_seed * 10 + 4,
                          pause_probability)

    collect = result_collector(dut.result, pause_result, got)

    async def bench(ctx):
        cycle = await wait_done(ctx, dut.status.done, max_cycles)
        status = dut.status
        out.update(
            counters={n: int(ctx.get(status.counters[n])) for n in isa.CHIP_COUNTERS},
            macros=[{n: int(ctx.get(status.macros[k][n])) for n in isa.STATUS_COUNTERS}
                    for k in range(chip.macros)],
            error=ctx.get(status.error), error_macro=int(ctx.get(status.error_macro)),
            done_cycle=cycle)

    for salt, name in enumerate(words, start=1):
        sim.add_testbench(feeder(name, salt), background=True)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(bench)
    sim.run()
    layout = isa.chip_result_layout(chip)
    results = (isa.unpack_beats(layout, got) if got
               else np.zeros((0, chip.macro.cols), dtype=np.int64))
    return ChipRun(results, out["counters"], out["macros"], out["error"], out["error_macro"],
                   out["done_cycle"], taken)


# Program helpers ------------------------------------------------------------------------------

def word(chip, cmd, target=0, span=1):
    return isa.encode_chip(chip, cmd, target=target, span=span)


def END(chip):
    return word(chip, Command(Opcode.END))


def act_words(cfg, entries, pattern=(1, 1)):
    """Activation entries (entries, pass_inputs) as LOAD_A beats: element j in lane
    j % act_lanes of beat j // act_lanes (from the ISA text)."""
    lanes = cfg.act_lanes
    beats = []
    for entry in entries:
        entry = np.pad(entry, (0, cfg.act_beats(*pattern) * lanes - len(entry)))
        beats += [entry[b * lanes:(b + 1) * lanes] for b in range(cfg.act_beats(*pattern))]
    return isa.pack_beats(isa.act_beat_layout(cfg), np.array(beats))


def gemm(chip, rng, *, tokens=3, span=None):
    """Dense GEMM on macros 0..span-1: each macro its own weights, one broadcast LOAD_A, one
    COMPUTE and one READ over the range. Returns (commands, weights, acts, expected sum)."""
    cfg = chip.macro
    span = span or chip.macros
    w = rng.integers(-128, 128, (span, cfg.reduction, cfg.cols))
    a = rng.integers(-128, 128, (tokens, cfg.reduction))
    cmds = [word(chip, Command(Opcode.CONFIG, mode=isa.Mode.DENSE, n=1, m=1), 0, span)]
    weights = []
    for k in range(span):
        cmds.append(word(chip, Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows), k, 1))
        weights += isa.pack_weight_rows(cfg, w[k])
    cmds += [word(chip, Command(Opcode.LOAD_A, addr=0, count=tokens), 0, span),
             word(chip, Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=tokens,
                                accumulate=0), 0, span),
             word(chip, Command(Opcode.READ, addr=0, count=tokens), 0, span),
             END(chip)]
    expected = sum(a @ w[k] for k in range(span))
    return cmds, weights, act_words(cfg, a), expected


# Dispatch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("macros", [2, 3])
def test_end_alone_fetched_two_cycles_after_taken(macros):
    chip = chip_of(macros)
    run = run_chip(chip, [END(chip)])
    # END taken at 0, H goes at 1, every macro fetches it at 2 (e_k = 2): total = 2 + 2.
    assert run.taken["cmd"] == [0]
    assert run.error == ErrorCode.NONE
    assert run.counters == {"total": 4, "dispatch": 1, "w_load": 0, "a_load": 0, "read": 0,
                            "bw_stall": 0}
    assert run.done_cycle == 4
    for counters in run.macros:
        assert (counters["total"], counters["stall"], counters["fetch"]) == (3, 2, 1)


def test_commands_stream_one_per_cycle_into_idle_macros():
    chip = chip_of(2)
    conf = Command(Opcode.CONFIG, mode=isa.Mode.DENSE, n=1, m=1)
    cmds = [word(chip, conf, 0, 1), word(chip, conf, 1, 1), word(chip, conf, 0, 2), END(chip)]
    run = run_chip(chip, cmds)
    # Taken at 0..3, gone at 1..4, fetched from 2..5: macro 0 fetches CONFIGs at 2 and 4 and
    # END at 5 (stalls 0, 1, 3); macro 1 at 3, 4 and 5 (stalls 0, 1, 2).
    assert run.taken["cmd"] == [0, 1, 2, 3]
    assert run.counters["dispatch"] == 4 and run.counters["total"] == 5 + 2
    assert [(m["fetch"], m["stall"], m["total"]) for m in run.macros] == [(3, 3, 6), (3, 3, 6)]


def _queue_model(costs, queue):
    """Cycles in which each command of a one-macro program is taken from ``cmd``, by the rules
    of docs/chip.md: H loads at t + 1; it goes when the queue's level at the start of the cycle
    is below ``queue``; the written entry is fetchable from the next cycle; the macro fetches
    when idle and is busy ``costs[i]`` cycles from its fetch (isa.cycles, fetch included)."""
    taken, held, pending, level_queue = [], None, 0, []
    free_at, t = 0, 0
    while len(taken) < len(costs) or held is not None or level_queue:
        room = len(level_queue) < queue
        fetch = level_queue and t >= free_at and level_queue[0][1] <= t
        go = held is not None and room
        ready = held is None or go
        if fetch:
            index, _ = level_queue.pop(0)
            free_at = t + costs[index]
        if go:
            level_queue.append((held, t + 1))
            held = None
        if ready and pending < len(costs):
            taken.append(t)
            held, pending = pending, pending + 1
        t += 1
        assert t < 10_000
    return taken


@pytest.mark.parametrize("queue", [1, 2, 3])
def test_full_queue_holds_cmd_back(queue):
    chip = chip_of(2, queue=queue)
    cfg = chip.macro
    compute = Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=cfg.acc_depth,
                      accumulate=0)
    conf = Command(Opcode.CONFIG, mode=isa.Mode.DENSE, n=1, m=1)
    program = [compute, conf, conf, compute, conf, conf, conf, conf]
    run = run_chip(chip, [word(chip, c, 0, 1) for c in program] + [END(chip)])
    costs = [isa.cycles(cfg, c).total for c in program] + [1]
    expected = _queue_model(costs, queue)
    assert run.taken["cmd"] == expected
    assert expected[-1] > len(program)  # the queue did hold the stream back
    assert run.macros[0]["compute"] == 2 * (cfg.acc_depth + isa.COMPUTE_DRAIN)
    assert run.macros[1]["fetch"] == 1  # macro 1 saw only the END


# Routers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("macros", [2, 4])
@pytest.mark.parametrize("pause_seed", [None, 7])
def test_broadcast_load_a_and_range_read_sum(macros, pause_seed):
    chip = chip_of(macros)
    cfg = chip.macro
    rng = np.random.default_rng(macros)
    cmds, weights, acts, expected = gemm(chip, rng, tokens=3)
    run = run_chip(chip, cmds, weights, acts, pause_seed=pause_seed)
    assert run.error == ErrorCode.NONE
    np.testing.assert_array_equal(run.results, expected)
    beats = 3 * cfg.act_beats()
    assert run.counters["a_load"] == beats  # broadcast: each beat moves once
    assert run.counters["w_load"] == macros * cfg.weight_rows
    assert run.counters["read"] == 3
    assert run.counters["dispatch"] == len(cmds)
    for counters in run.macros:
        assert counters["a_beats"] == beats and counters["w_rows"] == cfg.weight_rows
        assert counters["read"] == 3 and counters["passes"] == 3


def test_read_sums_a_sub_range():
    """Two READs of different ranges: beats of each are the sum over exactly its macros."""
    chip = chip_of(3)
    cfg = chip.macro
    rng = np.random.default_rng(5)
    cmds, weights, acts, _ = gemm(chip, rng, tokens=2)
    w = [isa.unpack_weight_rows(cfg, weights[k * cfg.weight_rows:(k + 1) * cfg.weight_rows])[0]
         for k in range(3)]
    a = isa.unpack_beats(isa.act_beat_layout(cfg), acts).reshape(2, -1)[:, :cfg.reduction]
    read = Command(Opcode.READ, addr=0, count=2)
    cmds = cmds[:-2] + [word(chip, read, 1, 2), word(chip, read, 0, 1), END(chip)]
    run = run_chip(chip, cmds, weights, acts)
    np.testing.assert_array_equal(run.results[:2], a @ w[1] + a @ w[2])
    np.testing.assert_array_equal(run.results[2:], a @ w[0])


def _credit_rows(first, rows, row_bytes, bw):
    """Cycles in which rows move when the macros wait from cycle ``first`` on, by the credit
    rule: credit R after reset, credit' = min(credit - R·moved + bw, R + bw - 1)."""
    credit, cycles, t = row_bytes, [], 0
    while len(cycles) < rows:
        move = t >= first and credit >= row_bytes
        if move:
            cycles.append(t)
        credit = min(credit - (row_bytes if move else 0) + bw, row_bytes + bw - 1)
        t += 1
    return cycles


@pytest.mark.parametrize("bw", [1, 2, 4, 5, 6, 64])
def test_weight_rows_spaced_by_the_credit(bw):
    chip = chip_of(2, weight_bw=bw)
    cfg = chip.macro
    row_bytes = chip.weight_row_bytes
    assert row_bytes == 6  # tiny: 4 columns x (8 + 3) bits
    rows = cfg.weight_rows
    w = np.random.default_rng(bw).integers(-128, 128, (rows, cfg.cols))
    cmds = [word(chip, Command(Opcode.LOAD_W, row=0, count=rows), 0, 2), END(chip)]
    run = run_chip(chip, cmds, isa.pack_weight_rows(cfg, w))
    # Taken at 0, fetched at 2, LOAD_W cycles (data.ready) from 3.
    expected = _credit_rows(3, rows, row_bytes, bw)
    assert run.taken["weights"] == expected
    assert run.counters["w_load"] == rows
    assert run.counters["bw_stall"] == expected[-1] - 3 + 1 - rows
    # The END was fetched right after the last row: total = e + 2 = last + 1 + 2.
    assert run.counters["total"] == expected[-1] + 3
    for counters in run.macros:
        assert counters["load"] == rows and counters["stall"] == 2 + len(
            [t for t in range(3, expected[-1]) if t not in expected])


# Errors ---------------------------------------------------------------------------------------

def _raw(chip, opcode_value, target, span):
    """A chip word whose macro opcode is ``opcode_value`` (possibly undefined), fields zero."""
    layout = isa.chip_command_layout(chip)
    macro = opcode_value << isa.command_layout(chip.macro)["opcode"].offset
    return (macro << layout["cmd"].offset | target << layout["target"].offset
            | span << layout["span"].offset)


def test_span_zero_halts_in_the_dispatcher():
    chip = chip_of(2)
    conf = Command(Opcode.CONFIG, mode=isa.Mode.DENSE, n=1, m=1)
    run = run_chip(chip, [word(chip, conf, 0, 0), END(chip)])
    # Taken at 0, checked in H at 1: done from 2; the END is never dispatched.
    assert (run.error, run.error_macro, run.done_cycle) == (ErrorCode.ZERO_COUNT, 2, 2)
    assert run.counters["dispatch"] == 0 and run.counters["total"] == 2


@pytest.mark.parametrize("target,span", [(2, 2), (1, 3), (3, 1), (3, 3)])
def test_range_beyond_k_halts_in_the_dispatcher(target, span):
    chip = chip_of(3)
    conf = Command(Opcode.CONFIG, mode=isa.Mode.DENSE, n=1, m=1)
    run = run_chip(chip, [word(chip, conf, 0, 3), word(chip, conf, target, span), END(chip)])
    # The second word is taken at 1 and refused in H at 2: done from 3.
    assert (run.error, run.error_macro, run.done_cycle) == (ErrorCode.ADDRESS_RANGE, 3, 3)
    assert run.counters["dispatch"] == 1


def test_end_ignores_its_range():
    chip = chip_of(2)
    run = run_chip(chip, [word(chip, Command(Opcode.END), 1, 0)])
    assert run.error == ErrorCode.NONE and run.counters["total"] == 4


def test_loads_of_different_lengths_are_out_of_step():
    chip = chip_of(2)
    cfg = chip.macro
    cmds = [word(chip, isa.config_command((1, 2)), 1, 1),
            word(chip, Command(Opcode.LOAD_A, addr=0, count=1), 0, 2), END(chip)]
    assert cfg.act_beats(1, 2) > cfg.act_beats()
    acts = act_words(cfg, np.ones((1, cfg.pass_inputs(1, 2)), dtype=int), (1, 2))
    run = run_chip(chip, cmds, acts=acts)
    # LOAD_A taken at 1, gone at 2, fetched by both at 3, beats from 4: macro 0 (dense) takes
    # its last at 4 + act_beats - 1 while macro 1 does not: halted at the end of that cycle.
    assert (run.error, run.error_macro) == (ErrorCode.OUT_OF_STEP, 2)
    assert run.done_cycle == 4 + cfg.act_beats()
    assert run.taken["acts"] == list(range(4, 4 + cfg.act_beats()))


@pytest.mark.parametrize("target,span,first", [(1, 1, 1), (1, 3, 1), (3, 1, 3), (0, 4, 0)])
def test_illegal_opcode_in_a_range_names_the_lowest_macro(target, span, first):
    chip = chip_of(4)
    run = run_chip(chip, [_raw(chip, 6, target, span), END(chip)])
    # Taken at 0, fetched at 2 (error from 3): the chip halts at the end of 3.
    assert (run.error, run.error_macro, run.done_cycle) == (ErrorCode.ILLEGAL_OPCODE, first, 4)


def test_macro_error_after_work_halts_in_bounded_time():
    chip = chip_of(2)
    cfg = chip.macro
    cmds = [word(chip, Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=4,
                               accumulate=0), 0, 1),
            word(chip, Command(Opcode.LOAD_W, row=cfg.weight_rows - 1, count=2), 1, 1),
            END(chip)]
    run = run_chip(chip, cmds)
    # LOAD_W taken at 1, fetched by macro 1 at 3 (ADDRESS_RANGE from 4): done at 5.
    assert (run.error, run.error_macro, run.done_cycle) == (ErrorCode.ADDRESS_RANGE, 1, 5)


# Against the chip golden and cycle models -----------------------------------------------------

def as_trace(chip, cmds, weights, acts):
    """A ChipTrace of command words, handing each LOAD_W / LOAD_A its beats in order (from
    plan_chip's beat counts, which follow each macro's pattern)."""
    trace = ChipTrace(chip)
    plan = plan_chip(chip, cmds)
    streams = {Opcode.LOAD_W: list(weights), Opcode.LOAD_A: list(acts)}
    for index, command in enumerate(cmds):
        opcode = decode_chip(chip, command)[2] >> isa.command_layout(chip.macro)["opcode"].offset
        opcode &= 7
        beats = []
        if index < len(plan.beats) and opcode in (Opcode.LOAD_W.value, Opcode.LOAD_A.value):
            stream = streams[Opcode(opcode)]
            beats, stream[:] = stream[:plan.beats[index]], stream[plan.beats[index]:]
        trace.steps.append(Step(command, beats))
    return trace


def assert_matches_golden(run, golden):
    assert run.error == golden.error
    if golden.error != ErrorCode.NONE:
        assert run.error_macro == golden.error_macro
        assert run.done_cycle == golden.halt + 1
        return
    np.testing.assert_array_equal(run.results, golden.results)
    assert run.counters == golden.counters
    assert run.macros == golden.macro_counters


@pytest.mark.parametrize("macros", [2, 3, 4])
@pytest.mark.parametrize("bw", [4, 64])
def test_gemm_matches_the_chip_models(macros, bw):
    chip = chip_of(macros, weight_bw=bw, queue=2)
    cmds, weights, acts, _ = gemm(chip, np.random.default_rng(macros + bw), tokens=4)
    trace = as_trace(chip, cmds, weights, acts)
    run = run_chip(chip, cmds, weights, acts)
    for timing in ("fast", "step"):
        assert_matches_golden(run, run_chip_trace(trace, timing=timing))


def _random_cases(seeds):
    kinds = [None, None, "out-of-step", "span-zero", "span-range", *ILLEGAL_KINDS]
    return [(2 + seed % 3, seed, kinds[seed % len(kinds)]) for seed in seeds]


def _check_random(macros, seed, illegal):
    chip = chip_of(macros, weight_bw=[3, 6, 64][seed % 3], queue=1 + seed % 3)
    trace = random_chip_program(chip, np.random.default_rng(seed), illegal=illegal,
                                max_body=8)
    golden = run_chip_trace(trace)
    assert golden.error.name == trace.meta["expect"]
    run = run_chip(chip, trace.commands, trace.weights, trace.acts,
                   max_cycles=golden.halt + 10 if golden.halt is not None else 5000)
    assert_matches_golden(run, golden)


@pytest.mark.parametrize("macros,seed,illegal", _random_cases(range(6)))
def test_random_programs_match_the_chip_models(macros, seed, illegal):
    _check_random(macros, seed, illegal)


@pytest.mark.slow
@pytest.mark.parametrize("macros,seed,illegal", _random_cases(range(6, 40)))
def test_many_random_programs_match_the_chip_models(macros, seed, illegal):
    _check_random(macros, seed, illegal)


def test_chip_signature_is_the_stream_and_status_contract():
    from amaranth.hdl import Fragment
    from amaranth.lib import data, stream, wiring
    from amaranth.lib.wiring import In, Out
    chip = chip_of(3)
    cfg = chip.macro
    expected = wiring.Signature({
        "cmd": In(stream.Signature(isa.chip_command_layout(chip))),
        "weights": In(stream.Signature(isa.weight_row_layout(cfg))),
        "acts": In(stream.Signature(isa.act_beat_layout(cfg))),
        "result": Out(stream.Signature(isa.chip_result_layout(chip))),
        "status": Out(wiring.Signature({
            "done": Out(1), "error": Out(ErrorCode), "error_macro": Out(range(4)),
            "counters": Out(isa.chip_counters_layout(chip)),
            "macros": Out(data.ArrayLayout(isa.counters_layout(cfg), 3)),
        })),
    })
    dut = Chip(chip=chip)
    assert dut.signature == expected
    Fragment.get(dut, None)  # elaborates; an unelaborated component warns when collected

