"""Sequencer and top level in Amaranth simulation: traces, results, cycle counters, errors."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, Shape
from amaranth.sim import Simulator
from conftest import pauser, result_collector, stream_feeder, wait_done
from sparsecim.hw import isa
from sparsecim.hw.config import preset
from sparsecim.hw.isa import Command, CycleCost, ErrorCode, Mode, Opcode
from sparsecim.hw.sequencer import Sequencer
from sparsecim.hw.top import Top
from sparsecim.hw.trace import Trace
from sparsecim.sw.events import count_events

CFG = preset("tiny")


# Test harness -------------------------------------------------------------------------------

@dataclass
class Run:
    results: np.ndarray  # result beats, (beats, cols)
    counters: dict
    error: ErrorCode
    done: bool
    cycles_to_done: int  # clock edges from the start until done was first seen high
    ready_after_halt: bool  # cmd.ready or data.ready seen high after done
    counters_moved_after_halt: bool


def run_top(cfg, commands, data, *, pause_seed=None, pause_probability=0.3,
            max_cycles=5000, after_halt=8):
    """Run command words and data beats through a fresh :class:`Top` until ``done``.

    With ``pause_seed``, every stream idles at random (cmd and data ``valid`` low, result
    ``ready`` low), each from its own seeded generator. The result collector also checks the
    stream rule: once ``valid`` is high it stays high with a stable payload until ``ready``.
    """
    top = Top(config=cfg)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    words = {"cmd": list(commands), "data": list(data)}
    got = []
    out = {}

    def feeder(name, salt):
        pause = pauser(None if pause_seed is None else pause_seed * 10 + salt,
                       pause_probability)
        return stream_feeder(getattr(top, name), words[name], pause)

    pause_result = pauser(None if pause_seed is None else pause_seed * 10 + 3,
                          pause_probability)

    collect = result_collector(top.result, pause_result, got)

    async def bench(ctx):
        cycles = await wait_done(ctx, top.status.done, max_cycles)
        counters = ctx.get(top.status.counters)
        ready_seen = moved = False
        for _ in range(after_halt):
            ready_seen |= bool(ctx.get(top.cmd.ready) or ctx.get(top.data.ready))
            await ctx.tick()
            moved |= ctx.get(top.status.counters).as_value().value != counters.as_value().value
        out.update(
            counters={name: int(counters[name]) for name in isa.STATUS_COUNTERS},
            error=ctx.get(top.status.error), done=bool(ctx.get(top.status.done)),
            cycles=cycles, ready_seen=ready_seen, moved=moved)

    sim.add_testbench(feeder("cmd", 1), background=True)
    sim.add_testbench(feeder("data", 2), background=True)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(bench)
    sim.run()
    results = isa.unpack_beats(isa.result_layout(cfg), got) if got else np.zeros((0, cfg.cols))
    return Run(results, out["counters"], out["error"], out["done"], out["cycles"],
               out["ready_seen"], out["moved"])


def expected_cost(cfg, commands):
    """Sum of the per-command cycle model over legal commands (independent of the RTL)."""
    total = CycleCost(fetch=0)
    for cmd in commands:
        total += isa.cycles(cfg, cmd)
    return total


def assert_counters(run, cost, *, stalls):
    counters = run.counters
    for name in ("fetch", "load", "compute", "read"):
        assert counters[name] == getattr(cost, name), name
    assert counters["total"] == cost.total + counters["stall"]
    assert counters["total"] == sum(counters[n] for n in isa.COUNTERS if n != "total")
    if stalls:
        assert counters["stall"] > 0
    else:
        assert counters["stall"] == 0


# Programs -----------------------------------------------------------------------------------

def random_matrix(rng, shape, bits):
    """Random signed values with the extremes planted, so -2**(bits-1) squared occurs."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(lo, hi + 1, size=shape)
    flat = values.reshape(-1)
    flat[:: 5] = lo
    flat[1:: 7] = hi
    return values


def act_entry_beats(cfg, entries):
    """Split activation entries (n, reduction) into data beats: element j is lane
    j % act_lanes of beat j // act_lanes (written here from the ISA text, not the RTL)."""
    beats = []
    for entry in entries:
        for b in range(cfg.act_beats()):
            beats.append(entry[b * cfg.act_lanes:(b + 1) * cfg.act_lanes])
    padded = [np.pad(beat, (0, cfg.act_lanes - len(beat))) for beat in beats]
    return isa.pack_beats(isa.act_beat_layout(cfg), np.array(padded))


def gemm_program(cfg, seed):
    """A two-tile GEMM with offsets, back-to-back COMPUTEs into the same entries and a READ
    right after a COMPUTE; returns the trace, the legal commands and the expected results."""
    rng = np.random.default_rng(seed)
    tiles, tokens = 2, 3
    k = tiles * cfg.reduction
    weights = random_matrix(rng, (k, cfg.cols), cfg.weight_bits)
    acts = random_matrix(rng, (tokens, k), cfg.act_bits)
    trace = Trace(cfg)
    cmds = [Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1)]
    data = {}
    act_base, acc_base = 5, 2
    for t in range(tiles):
        rows = slice(t * cfg.reduction, (t + 1) * cfg.reduction)
        # Two LOAD_Ws per tile, second half first, to check the row addressing.
        half = cfg.weight_rows // 2
        w = weights[rows]
        cmds.append(Command(Opcode.LOAD_W, row=half, count=cfg.weight_rows - half))
        data[len(cmds) - 1] = isa.pack_weight_rows(cfg, w[half:])
        cmds.append(Command(Opcode.LOAD_W, row=0, count=half))
        data[len(cmds) - 1] = isa.pack_weight_rows(cfg, w[:half])
        cmds.append(Command(Opcode.LOAD_A, addr=act_base, count=tokens))
        data[len(cmds) - 1] = act_entry_beats(cfg, acts[:, rows])
        cmds.append(Command(Opcode.COMPUTE, act_addr=act_base, acc_addr=acc_base,
                            count=tokens, accumulate=int(t > 0)))
    # Read in two pieces, the first right after the last COMPUTE.
    cmds.append(Command(Opcode.READ, addr=acc_base, count=1))
    cmds.append(Command(Opcode.READ, addr=acc_base + 1, count=tokens - 1))
    cmds.append(Command(Opcode.END))
    for index, cmd in enumerate(cmds):
        trace.append(cmd, data.get(index))
    return trace, cmds, acts @ weights


# Tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("pause_seed", [None, 1, 2], ids=["no-pauses", "pauses-1", "pauses-2"])
def test_top_gemm_results_and_counters_match_numpy_and_cycle_model(pause_seed):
    trace, cmds, expected = gemm_program(CFG, seed=7)
    assert all(isa.check(CFG, cmd) == ErrorCode.NONE for cmd in cmds)
    run = run_top(CFG, trace.commands, trace.data, pause_seed=pause_seed)
    assert run.done and run.error == ErrorCode.NONE
    np.testing.assert_array_equal(run.results, expected)
    assert_counters(run, expected_cost(CFG, cmds), stalls=pause_seed is not None)
    # Event counters, counted by hand from gemm_program: 2 tiles × 3 tokens passes, the whole
    # array written per tile, one entry of act_beats per token and tile; stalls add none.
    assert {name: run.counters[name] for name in isa.EVENT_COUNTERS} == {
        "passes": 2 * 3, "w_rows": 2 * CFG.weight_rows, "a_beats": 2 * 3 * CFG.act_beats()}
    # The counters stop at the halt; total counts exactly the cycles until done rose.
    assert run.counters["total"] == run.cycles_to_done
    assert not run.ready_after_halt and not run.counters_moved_after_halt


def test_top_heavy_result_backpressure_keeps_every_beat():
    trace, cmds, expected = gemm_program(CFG, seed=3)
    run = run_top(CFG, trace.commands, trace.data, pause_seed=5, pause_probability=0.8,
                  max_cycles=20000)
    np.testing.assert_array_equal(run.results, expected)
    assert_counters(run, expected_cost(CFG, cmds), stalls=True)


def test_top_compute_accumulate_and_clear_on_one_entry():
    rng = np.random.default_rng(11)
    w = random_matrix(rng, (CFG.weight_rows, CFG.cols), CFG.weight_bits)
    a = random_matrix(rng, (2, CFG.reduction), CFG.act_bits)
    cmds = [
        Command(Opcode.LOAD_W, row=0, count=CFG.weight_rows),
        Command(Opcode.LOAD_A, addr=0, count=2),
        Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=1),  # on zero
        Command(Opcode.COMPUTE, act_addr=1, acc_addr=0, count=1, accumulate=1),
        Command(Opcode.READ, addr=0, count=1),
        Command(Opcode.COMPUTE, act_addr=1, acc_addr=0, count=1, accumulate=0),
        Command(Opcode.READ, addr=0, count=1),
        Command(Opcode.END),
    ]
    trace = Trace(CFG)
    trace.append(cmds[0], isa.pack_weight_rows(CFG, w))
    trace.append(cmds[1], act_entry_beats(CFG, a))
    for cmd in cmds[2:]:
        trace.append(cmd)
    run = run_top(CFG, trace.commands, trace.data)
    np.testing.assert_array_equal(run.results, np.stack([(a[0] + a[1]) @ w, a[1] @ w]))
    assert_counters(run, expected_cost(CFG, cmds), stalls=False)


def _raw_word(cfg, opcode_value, op_layout=None, **fields):
    """A command word with a raw opcode value and raw field values (enum fields may hold
    non-members), placed at the offsets of the ISA layouts."""
    layout = isa.command_layout(cfg)
    word = opcode_value << layout["opcode"].offset
    for name, value in fields.items():
        word |= value << (layout["args"].offset + isa.args_layout(cfg, op_layout)[name].offset)
    return word


def _undefined(enum_cls):
    """Values of an ISA enum's shape that name no member."""
    return [v for v in range(2 ** Shape.cast(enum_cls).width)
            if v not in {member.value for member in enum_cls}]


def _encoded(op, **fields):
    return lambda cfg: isa.encode(cfg, Command(op, **fields))


# Each case builds its word for a config; undefined values come from the ISA enums.
ERROR_CASES = {
    **{f"opcode-{v}": (lambda cfg, v=v: _raw_word(cfg, v), ErrorCode.ILLEGAL_OPCODE)
       for v in _undefined(Opcode)},
    **{f"config-mode-{v}": (lambda cfg, v=v: _raw_word(cfg, Opcode.CONFIG.value,
                                                     Opcode.CONFIG, mode=v, n=1, m=1),
                            ErrorCode.ILLEGAL_MODE)
       for v in _undefined(Mode)},
    # Patterns the config does not list: dense with n, m != 1, N:M that is dense, n not
    # dividing P, and ones beyond the list.
    **{f"config-{mode.name.lower()}-{n}:{m}": (
        lambda cfg, mode=mode, n=n, m=m: _encoded(Opcode.CONFIG, mode=mode, n=n, m=m)(cfg),
        ErrorCode.ILLEGAL_MODE)
       for mode, n, m in [(Mode.DENSE, 2, 4), (Mode.DENSE, 1, 2), (Mode.NM, 1, 1),
                          (Mode.NM, 2, 2), (Mode.NM, 3, 4), (Mode.NM, 1, 3), (Mode.NM, 0, 4),
                          (Mode.NM, 2, 0), (Mode.NM, 4, 4)]},
    "load_w-zero": (_encoded(Opcode.LOAD_W, row=0, count=0), ErrorCode.ZERO_COUNT),
    "load_a-zero": (_encoded(Opcode.LOAD_A, addr=3, count=0), ErrorCode.ZERO_COUNT),
    "compute-zero": (_encoded(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=0, accumulate=0),
                     ErrorCode.ZERO_COUNT),
    "read-zero": (_encoded(Opcode.READ, addr=0, count=0), ErrorCode.ZERO_COUNT),
    "load_w-range": (lambda cfg: _encoded(Opcode.LOAD_W, row=cfg.weight_rows - 1, count=2)(cfg),
                     ErrorCode.ADDRESS_RANGE),
    "load_a-range": (lambda cfg: _encoded(Opcode.LOAD_A, addr=cfg.act_depth - 2, count=3)(cfg),
                     ErrorCode.ADDRESS_RANGE),
    "compute-act-range": (lambda cfg: _encoded(Opcode.COMPUTE, act_addr=cfg.act_depth - 1,
                                             acc_addr=0, count=2, accumulate=0)(cfg),
                          ErrorCode.ADDRESS_RANGE),
    "compute-acc-range": (lambda cfg: _encoded(Opcode.COMPUTE, act_addr=0,
                                             acc_addr=cfg.acc_depth - 1, count=2,
                                             accumulate=1)(cfg),
                          ErrorCode.ADDRESS_RANGE),
    "read-range": (lambda cfg: _encoded(Opcode.READ, addr=1, count=cfg.acc_depth)(cfg),
                   ErrorCode.ADDRESS_RANGE),
    "config-split-beyond-log2p": (_encoded(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1,
                                           split=3), ErrorCode.ILLEGAL_MODE),
    "config-nm-with-split": (_encoded(Opcode.CONFIG, mode=Mode.NM, n=2, m=4, split=1),
                             ErrorCode.ILLEGAL_MODE),
    "move-zero": (_encoded(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0, elem=0, count=0,
                           transpose=0), ErrorCode.ZERO_COUNT),
    "move-acc-range": (lambda cfg: _encoded(Opcode.MOVE, bank=1, acc_addr=cfg.acc_depth - 1,
                                            act_addr=0, elem=0, count=2, transpose=0)(cfg),
                       ErrorCode.ADDRESS_RANGE),
    "move-act-range": (lambda cfg: _encoded(Opcode.MOVE, bank=1, acc_addr=0,
                                            act_addr=cfg.act_depth - 1, elem=0, count=2,
                                            transpose=0)(cfg), ErrorCode.ADDRESS_RANGE),
    "move-window-lanes": (_encoded(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0, elem=0, count=1,
                                   transpose=1, lane=2, dst=0, lanes=3),
                          ErrorCode.ADDRESS_RANGE),
    "move-window-dst": (_encoded(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0, elem=0, count=1,
                                 transpose=0, lane=0, dst=1, lanes=0),
                        ErrorCode.ADDRESS_RANGE),
    "move-transpose-range": (lambda cfg: _encoded(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0,
                                                  elem=cfg.cols - 1, count=2,
                                                  transpose=1)(cfg), ErrorCode.ADDRESS_RANGE),
}


def test_error_cases_cover_undefined_opcode_6_and_not_move():
    assert {"opcode-6"} <= set(ERROR_CASES) and "opcode-5" not in ERROR_CASES


def _isa_status(cfg, word):
    try:
        return isa.check(cfg, isa.decode(cfg, word))
    except isa.DecodeError as exc:
        return exc.code


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_top_illegal_command_halts_with_error_code_after_one_cycle(case):
    build, code = ERROR_CASES[case]
    bad = build(CFG)
    assert _isa_status(CFG, bad) == code  # the vector means what the ISA says it means
    prefix = [Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1),
              Command(Opcode.LOAD_W, row=0, count=2)]
    words = [isa.encode(CFG, c) for c in prefix] + [bad, isa.encode(CFG, Command(Opcode.END))]
    data = isa.pack_weight_rows(CFG, np.ones((2, CFG.cols)))
    run = run_top(CFG, words, data)
    assert run.done and run.error == code
    assert_counters(run, expected_cost(CFG, prefix) + CycleCost(), stalls=False)
    # Halted: no stream ready again, counters frozen (the END after it was never taken).
    assert not run.ready_after_halt and not run.counters_moved_after_halt


def test_top_illegal_command_halts_under_pauses():
    build, code = ERROR_CASES["read-range"]
    words = [isa.encode(CFG, Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1)), build(CFG)]
    run = run_top(CFG, words, [], pause_seed=4, pause_probability=0.6)
    assert run.done and run.error == code
    assert run.counters["fetch"] == 2 and run.counters["stall"] > 0
    assert run.counters["total"] == 2 + run.counters["stall"]


def test_top_compute_part_beyond_the_pattern_halts_with_address_range():
    """The part check depends on the pattern CONFIG left: part 1 exists in dense (8 parts of
    16 on tiny) but not in 1:8 (one part of 128)."""
    cfg = CFG
    ok = [Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1),
          Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0, part=7),
          Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8),
          Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0, part=1),
          Command(Opcode.END)]
    run = run_top(cfg, [isa.encode(cfg, c) for c in ok], [])
    assert run.error == ErrorCode.ADDRESS_RANGE
    assert run.counters["fetch"] == 4 and run.counters["compute"] == 1 + isa.COMPUTE_DRAIN


@pytest.mark.parametrize("mapping, b, s, tokens, shift", [
    ("latency", 4, 4, 3, 6), ("latency", 3, 2, 5, 4), ("capacity", 2, 2, 3, 5),
    ("capacity", 4, 2, 3, 5), ("linear", 3, 2, 3, 4)], ids=str)
def test_top_runs_a_monarch_layer_with_split_moves_and_parts(mapping, b, s, tokens, shift):
    """Two block-diagonal factors, banks, transposing (windowed) or straight MOVEs and
    COMPUTE parts in one trace, in each mapping: results equal plain numpy, counters equal
    the cycle model."""
    from sparsecim.sw.golden import run_trace
    from sparsecim.sw.schedule.monarch import monarch_reference, schedule_monarch

    rng = np.random.default_rng(b * s)
    x = random_matrix(rng, (tokens, b * s), CFG.act_bits)
    r_blocks = random_matrix(rng, (b * s, s), CFG.weight_bits).reshape(b, s, s)
    l_blocks = random_matrix(rng, (s * s, b), CFG.weight_bits).reshape(s, s, b)
    schedule = schedule_monarch(CFG, x, r_blocks, l_blocks, shift, mapping)
    run = run_top(CFG, schedule.trace.commands, schedule.trace.data, pause_seed=b,
                  max_cycles=20000)
    assert (run.error, run.done) == (ErrorCode.NONE, True)
    np.testing.assert_array_equal(schedule.assemble(run.results),
                                  monarch_reference(CFG, x, r_blocks, l_blocks, shift))
    # Cycle counters against the cycle model, event counters against sw/events.
    model = run_trace(schedule.trace).counters | count_events(schedule.trace).rtl_counters()
    assert {k: v for k, v in run.counters.items() if k not in ("total", "stall")} == \
        {k: v for k, v in model.items() if k not in ("total", "stall")}
    assert run.counters["total"] - run.counters["stall"] == model["total"]


@pytest.mark.parametrize("window", [(0, 2, 1, 2, 1, 2, 2), (0, 1, 6, 1, 3, 0, 1),
                                    (1, 1, 1, 2, 2, 0, 2), (1, 3, 0, 1, 0, 1, 3),
                                    (1, 0, 0, 2, 0, 0, 0)], ids=str)
def test_top_move_window_rotates_and_masks_lanes(window):
    """MOVE lane windows (``lane`` != ``dst``, partial ``lanes``), straight and transposed,
    over pre-filled entries read back through identity passes: the Top's result beats equal
    the golden model's and the ISA text's, its counters the cycle model's."""
    from sparsecim.sw.golden import run_trace
    from test_sw_golden import window_probe

    trace, expected = window_probe(CFG, window, seed=sum(window))
    run = run_top(CFG, trace.commands, trace.data, pause_seed=sum(window))
    assert (run.error, run.done) == (ErrorCode.NONE, True)
    np.testing.assert_array_equal(run.results, expected)
    model = run_trace(trace).counters | count_events(trace).rtl_counters()
    assert run.counters["total"] - run.counters["stall"] == model["total"]
    assert run.counters["load"] == model["load"]


def _top_with_reset(cfg):
    """A Top in a simulator whose testbench drives the sync domain's reset."""
    top = Top(config=cfg)
    m = Module()
    m.submodules.top = top
    m.domains.sync = sync = ClockDomain()
    sim = Simulator(m)
    sim.add_clock(1e-6)
    return top, sync, sim


def test_sequencer_error_status_matches_isa_for_random_words():
    """Random words, each fetched right after a reset: the RTL's error code (or none) and
    whether it halts at once equal decode() + check(), boundaries included."""
    rng = random.Random(2024)
    layout = isa.command_layout(CFG)
    words = [rng.randrange(2 ** layout.size) for _ in range(300)]
    # Bias some towards the address limits: legal and one past.
    for op, fields in [(Opcode.LOAD_W, ("row", CFG.weight_rows)),
                       (Opcode.LOAD_A, ("addr", CFG.act_depth)),
                       (Opcode.READ, ("addr", CFG.acc_depth))]:
        name, depth = fields
        for base in range(depth):
            for count in (depth - base, depth - base + 1):
                if count < 2 ** isa.args_layout(CFG, op)["count"].shape:
                    words.append(isa.encode(CFG, Command(op, **{name: base, "count": count})))
    expected = [_isa_status(CFG, w) for w in words]
    halts = [code != ErrorCode.NONE or isa.decode(CFG, w).opcode == Opcode.END
             for w, code in zip(words, expected, strict=True)]
    assert {ErrorCode.NONE, ErrorCode.ILLEGAL_OPCODE, ErrorCode.ILLEGAL_MODE,
            ErrorCode.ZERO_COUNT, ErrorCode.ADDRESS_RANGE} <= set(expected)

    top, sync, sim = _top_with_reset(CFG)
    got = []

    async def bench(ctx):
        for word in words:
            ctx.set(sync.rst, 1)
            await ctx.tick()
            ctx.set(sync.rst, 0)
            ctx.set(top.cmd.payload.as_value(), word)
            ctx.set(top.cmd.valid, 1)
            assert ctx.get(top.cmd.ready) and not ctx.get(top.status.done)
            assert ctx.get(top.status.counters).as_value().value == 0
            await ctx.tick()
            ctx.set(top.cmd.valid, 0)
            got.append((ctx.get(top.status.error), bool(ctx.get(top.status.done))))

    sim.add_testbench(bench)
    sim.run()
    assert got == list(zip(expected, halts, strict=True))


def test_sequencer_reset_clears_halt_error_and_counters_then_runs_again():
    trace, cmds, expected = gemm_program(CFG, seed=9)
    bad = ERROR_CASES["opcode-6"][0](CFG)
    top, sync, sim = _top_with_reset(CFG)
    got = []

    async def send(ctx, port, word, as_value=False):
        ctx.set(port.payload.as_value() if as_value else port.payload, word)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def take(ctx):
        while True:
            _, _, valid, payload = await ctx.tick().sample(top.result.valid,
                                                           top.result.payload.as_value())
            if valid:
                return payload

    async def bench(ctx):
        await send(ctx, top.cmd, bad, as_value=True)
        await ctx.tick()
        assert ctx.get(top.status.done) and ctx.get(top.status.error) == ErrorCode.ILLEGAL_OPCODE
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        assert not ctx.get(top.status.done) and ctx.get(top.status.error) == ErrorCode.NONE
        assert ctx.get(top.status.counters).as_value().value == 0
        data = iter(trace.data)
        ctx.set(top.result.ready, 1)
        for step in trace.steps:
            await send(ctx, top.cmd, step.command, as_value=True)
            for _ in step.data:
                await send(ctx, top.data, next(data))
            cmd = isa.decode(CFG, step.command)
            for _ in range(isa.result_beats(CFG, cmd)):
                got.append(await take(ctx))
        await ctx.tick()
        assert ctx.get(top.status.done) and ctx.get(top.status.error) == ErrorCode.NONE
        counters = ctx.get(top.status.counters)
        cost = expected_cost(CFG, cmds)
        assert int(counters["total"]) == cost.total + int(counters["stall"])

    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(isa.unpack_beats(isa.result_layout(CFG), got), expected)


@pytest.mark.parametrize("name", ["total", "stall"])
def test_sequencer_counters_saturate_instead_of_wrapping(name):
    seq = Sequencer(config=CFG)
    sim = Simulator(seq)
    sim.add_clock(1e-6)
    top_value = 2 ** CFG.counter_bits - 1
    seen = []

    async def bench(ctx):
        # Idle in FETCH: every cycle counts in total and stall. Start just below the top.
        ctx.set(seq.status.counters[name], top_value - 2)
        for _ in range(5):
            await ctx.tick()
            seen.append(ctx.get(seq.status.counters[name]))

    sim.add_testbench(bench)
    sim.run()
    assert seen == [top_value - 1, top_value, top_value, top_value, top_value]


def test_top_runs_every_pattern_in_one_trace_that_switches_between_layers():
    """One trace, one layer per pattern (dense first and last), each switching the mode:
    every result equals numpy and the counters equal the cycle model."""
    from sparsecim.sw.golden import run_trace
    from sparsecim.sw.operands import random_gemm
    from sparsecim.sw.schedule import chain, schedule_layer

    rng = np.random.default_rng(11)
    layers = []
    for seed, pattern in enumerate([(1, 1), *CFG.patterns, (1, 1)]):
        k, n = int(rng.integers(5, 40)), int(rng.integers(1, 7))
        layers.append((*random_gemm(CFG, k, n, 2, seed, pattern), pattern))
    schedules = [schedule_layer(CFG, x, w, pattern) for x, w, pattern in layers]
    trace = chain(schedules)
    run = run_top(CFG, trace.commands, trace.data, max_cycles=20000)
    assert (run.error, run.done) == (ErrorCode.NONE, True)
    beat = 0
    for schedule, (x, w, _) in zip(schedules, layers, strict=True):
        got = schedule.assemble(run.results[beat:beat + schedule.result_beats])
        np.testing.assert_array_equal(got, x @ w)
        beat += schedule.result_beats
    assert beat == len(run.results)
    model = run_trace(trace).counters | count_events(trace).rtl_counters()
    assert run.counters == model
