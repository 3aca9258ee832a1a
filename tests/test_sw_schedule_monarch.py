"""Monarch (two block-diagonal factors with the middle transpose) as one trace, in the latency,
capacity and linear mappings, on the golden model, against plain integer numpy."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import ErrorCode, Opcode, decode
from sparsecim.sw.golden import run_trace
from sparsecim.sw.schedule import Schedule, schedule_layer
from sparsecim.sw.schedule.monarch import (
    MAPPINGS,
    monarch_cost,
    monarch_reference,
    schedule_monarch,
)


def _operands(b, s, tokens, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (tokens, b * s)), rng.integers(-128, 128, (b, s, s)),
            rng.integers(-128, 128, (s, s, b)))


def _loop_reference(x, r_blocks, l_blocks, shift):
    """The layer written out element by element."""
    b, s, _ = r_blocks.shape
    out = np.zeros((x.shape[0], s, s), dtype=np.int64)
    for t in range(x.shape[0]):
        u = [[sum(int(r_blocks[i, c, k]) * int(x[t, i * s + k]) for k in range(s))
              for c in range(s)] for i in range(b)]
        v = [[min(127, max(-128, (u[i][j] + (1 << shift >> 1)) >> shift)) for i in range(b)]
             for j in range(s)]
        for j in range(s):
            for c in range(s):
                out[t, j, c] = sum(int(l_blocks[j, c, i]) * v[j][i] for i in range(b))
    return out


def _ops(schedule):
    cfg = schedule.trace.config
    return [decode(cfg, word) for word in schedule.trace.commands]


# (preset, b, s, tokens, shift): square and rectangular, s = rows (k = 1) and s < rows (the
# capacity mapping packs k² > 1 blocks per sub-macro), tokens beyond one chunk.
CASES = [("tiny", 4, 4, 3, 6), ("tiny", 3, 2, 5, 4), ("tiny", 1, 1, 1, 0), ("tiny", 4, 3, 9, 8),
         ("tiny", 2, 2, 3, 5), ("tiny", 2, 4, 2, 5), ("tiny", 4, 2, 11, 5),
         ("flexcim", 32, 32, 2, 12), ("flexcim", 24, 24, 3, 11), ("flexcim", 5, 7, 2, 3),
         ("flexcim", 8, 8, 3, 10), ("flexcim", 16, 16, 2, 11), ("flexcim", 8, 16, 2, 9),
         ("flexcim", 16, 8, 40, 9)]


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("name, b, s, tokens, shift", CASES,
                         ids=[f"{c[0]}-b{c[1]}s{c[2]}t{c[3]}" for c in CASES])
def test_monarch_trace_matches_reference(name, b, s, tokens, shift, mapping):
    cfg = preset(name)
    x, r_blocks, l_blocks = _operands(b, s, tokens, seed=b * s + tokens)
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, shift, mapping)
    assert schedule.mapping == mapping and schedule.trace.meta["mapping"] == mapping
    result = run_trace(schedule.trace)
    assert result.error == ErrorCode.NONE and result.halted and result.data_left == 0
    assert result.results.shape == (schedule.result_beats, cfg.cols)
    got = schedule.assemble(result.results)
    np.testing.assert_array_equal(got, monarch_reference(cfg, x, r_blocks, l_blocks, shift))
    if b * s <= 16:
        np.testing.assert_array_equal(got, _loop_reference(x, r_blocks, l_blocks, shift))


def test_the_middle_permutation_is_moves_not_data():
    """No data beat carries the intermediate: LOAD_A beats are only the inputs, and the
    transposes are MOVE commands (b per token)."""
    cfg = preset("tiny")
    schedule = schedule_monarch(cfg, *_operands(4, 4, 3, 0), shift=6)
    ops = [cmd.opcode for cmd in _ops(schedule)]
    assert ops.count(Opcode.MOVE) == 4 * 3
    load_a = [step for step in schedule.trace.steps
              if decode(cfg, step.command).opcode == Opcode.LOAD_A]
    assert sum(len(step.data) for step in load_a) == 3 * cfg.act_beats()  # 16 inputs, 1 pass


@pytest.mark.parametrize("b", [8, 16])
def test_capacity_packs_k_squared_blocks_and_undoes_the_rotation_by_lane_windows(b):
    """b = s = 8 on flexcim: k = 4, up to 16 blocks per sub-macro; both factors (16 blocks)
    in one load, one block per sub-macro per pass, the second factor's inputs gathered by
    MOVE windows starting at the rotated column-block. b = s = 16: k = 2, 4 per sub-macro."""
    cfg = preset("flexcim")
    x, r_blocks, l_blocks = _operands(b, b, 1, b)
    latency = schedule_monarch(cfg, x, r_blocks, l_blocks, 9, "latency")
    capacity = schedule_monarch(cfg, x, r_blocks, l_blocks, 9, "capacity")
    k = cfg.rows // b
    # Latency: k blocks on each sub-macro's diagonal fire together; capacity: one at a time.
    assert latency.passes == 2 * -(-b // (cfg.submacros * k))
    assert capacity.passes == 2 * -(-b // cfg.submacros)
    assert capacity.loads == -(-2 * b // (cfg.submacros * k * k))
    assert latency.loads == latency.passes
    moves = [cmd for cmd in _ops(capacity) if cmd.opcode == Opcode.MOVE]
    # Window starts are first-factor column-blocks (rotated: more than one) plus the first
    # second-factor block of the window; every window lands from its chunk on.
    assert len({cmd.lane // b for cmd in moves}) > 1
    assert all(cmd.lane % b + (cmd.lanes or cfg.cols) <= b for cmd in moves)
    assert all(cmd.transpose and cmd.count == 1 for cmd in moves)
    assert capacity.utilization == pytest.approx(2 * b ** 3 / (capacity.loads * cfg.cells))


def test_capacity_zeroes_the_second_factors_entries_once():
    """Rows of a capacity pass other than its block's must read zero: the entries the MOVEs
    fill are zeroed once by LOAD_A in the widest pattern, then the layer's CONFIG follows."""
    cfg = preset("flexcim")
    schedule = schedule_monarch(cfg, *_operands(16, 16, 40, 3), 9, "capacity")
    assert schedule.chunk < 40
    ops = _ops(schedule)
    assert [cmd.opcode for cmd in ops[:3]] == [Opcode.CONFIG, Opcode.LOAD_A, Opcode.CONFIG]
    assert (ops[0].n, ops[0].m) == (1, 8) and ops[2].split == cfg.max_split
    assert sum(cmd.opcode == Opcode.CONFIG for cmd in ops) == 2
    for mapping, b in (("latency", 32), ("latency", 8), ("capacity", 8)):
        # Every row with weights is written (b = s = 8: both factors on row-block 0).
        ops = _ops(schedule_monarch(cfg, *_operands(b, b, 2, 3), 9, mapping))
        assert sum(cmd.opcode == Opcode.CONFIG for cmd in ops) == 1


def test_linear_runs_two_dense_gemms_with_a_straight_move_between():
    cfg = preset("flexcim")
    b = s = 8
    schedule = schedule_monarch(cfg, *_operands(b, s, 2, 5), 9, "linear")
    ops = _ops(schedule)
    moves = [cmd for cmd in ops if cmd.opcode == Opcode.MOVE]
    assert len(moves) == b * s // cfg.cols and not any(cmd.transpose for cmd in moves)
    assert all(cmd.count == 2 for cmd in moves)                   # a tile's tokens at once
    assert ops[0].split == 0 and sum(cmd.opcode == Opcode.CONFIG for cmd in ops) == 1
    # Tiles of 128 inputs × 32 outputs: (1 × 2) then (1 × 2); zeros stored.
    assert schedule.loads == 4
    assert schedule.utilization == pytest.approx(2 * b * s * s / (4 * cfg.cells))


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_cost_is_the_golden_models_count_of_the_same_trace(mapping):
    cfg = preset("flexcim")
    cost = monarch_cost(cfg, 16, 16, mapping, tokens=3)
    x, r_blocks, l_blocks = _operands(16, 16, 3, 0)
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, 0, mapping)
    assert cost.counters == run_trace(schedule.trace).counters
    assert cost.cycles_per_token == cost.counters["total"] / 3
    assert (cost.loads, cost.passes, cost.moves, cost.chunk) == \
        (schedule.loads, schedule.passes, schedule.moves, schedule.chunk)


def test_cost_for_one_token_orders_the_mappings():
    """One token of b = s = 8 on flexcim: weight loads dominate, so capacity (one load) beats
    latency (two), and both beat the densified baseline."""
    cfg = preset("flexcim")
    cycles = {m: monarch_cost(cfg, 8, 8, m).cycles_per_token for m in MAPPINGS}
    assert cycles["capacity"] < cycles["latency"] < cycles["linear"]


def test_cost_needs_a_positive_token_count():
    with pytest.raises(ValueError) as exc:
        monarch_cost(preset("tiny"), 2, 2, "latency", tokens=0)
    assert str(exc.value) == "tokens must be a positive integer, not 0"


@pytest.mark.parametrize("args, message", [
    (dict(b=5, s=4), "blocks must satisfy 1 <= s <= 4 and 1 <= b <= 4, not s=4, b=5"),
    (dict(b=4, s=5), "blocks must satisfy 1 <= s <= 4 and 1 <= b <= 4, not s=5, b=4"),
    (dict(shift=32), "shift must be in 0..31, not 32"),
    (dict(mapping="dense"), "mapping must be one of latency, capacity, linear, not 'dense'"),
    (dict(b=12, s=12, mapping="linear"), "the linear mapping keeps u (b·s values) in one "
                                         "activation entry: b·s must be at most 128, not 144"),
], ids=["b", "s", "shift", "mapping", "linear-too-wide"])
def test_bad_layers_are_refused(args, message):
    cfg = preset("tiny")
    b, s = args.get("b", 4), args.get("s", 4)
    with pytest.raises(ValueError) as exc:
        schedule_monarch(cfg, *_operands(b, s, 1, 0), shift=args.get("shift", 4),
                         mapping=args.get("mapping", "latency"))
    assert str(exc.value) == message


@pytest.mark.parametrize("mapping", ["latency", "capacity"])
def test_macro_needs_square_subarrays(mapping):
    cfg = MacroConfig(rows=4, cols=2, submacros=4, act_depth=8, acc_depth=8)
    with pytest.raises(ValueError) as exc:
        schedule_monarch(cfg, *_operands(2, 2, 1, 0), shift=0, mapping=mapping)
    assert str(exc.value) == "a Monarch layer needs rows == cols, not 4 and 2"


def test_linear_runs_on_rectangular_subarrays():
    cfg = MacroConfig(rows=4, cols=2, submacros=4, act_depth=16, acc_depth=16,
                      patterns=((1, 8),))
    x, r_blocks, l_blocks = _operands(2, 3, 2, 1)
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, 4, "linear")
    got = schedule.assemble(run_trace(schedule.trace).results)
    np.testing.assert_array_equal(got, monarch_reference(cfg, x, r_blocks, l_blocks, 4))


def test_assemble_checks_the_shape():
    cfg = preset("tiny")
    schedule = schedule_monarch(cfg, *_operands(2, 2, 1, 0), 0, "capacity")
    with pytest.raises(ValueError) as exc:
        schedule.assemble(np.zeros((schedule.result_beats + 1, cfg.cols)))
    assert str(exc.value) == (f"results must have shape ({schedule.result_beats}, 4), "
                              f"not ({schedule.result_beats + 1}, 4)")


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_gemm_and_monarch_schedules_share_the_schedule_protocol(mapping):
    cfg = preset("tiny")
    x, r_blocks, l_blocks = _operands(2, 2, 3, 5)
    monarch = schedule_monarch(cfg, x, r_blocks, l_blocks, 4, mapping)
    rng = np.random.default_rng(5)
    gemm = schedule_layer(cfg, rng.integers(-128, 128, (3, 20)), rng.integers(-128, 128, (20, 6)))
    for schedule in (monarch, gemm):
        assert isinstance(schedule, Schedule)
        assert schedule.tokens == 3
        results = run_trace(schedule.trace).results
        assert results.shape == (schedule.result_beats, cfg.cols)
