"""Scheduled traces, run on the golden model, must equal the integer matmul reference."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import ErrorCode, Opcode, decode
from sparsecim.hw.trace import Trace
from sparsecim.sw.golden import run_trace
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import ideal_cycles, schedule_dense

# act_depth 4 < acc_depth 16: chunks are bounded by the activation buffer, not the accumulator.
SHALLOW_ACTS = MacroConfig(rows=4, cols=4, submacros=4, act_depth=4, acc_depth=16)
# Lanes that are not byte-aligned: 5 activations of 3 bits in a 20-bit data beat.
NARROW = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, weight_bits=5,
                     act_bits=3, acc_bits=24)
# 2 sub-macros of 8x2, deeper buffers.
TWO_SUB = MacroConfig(rows=8, cols=2, submacros=2, act_depth=32, acc_depth=32)
CONFIGS = {"tiny": preset("tiny"), "flexcim": preset("flexcim"),
           "shallow-acts": SHALLOW_ACTS, "narrow": NARROW, "two-sub": TWO_SUB}


def _operands(cfg, tokens, k, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1), size=(tokens, k))
    w = rng.integers(-(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1), size=(k, n))
    return x, w


def _run(cfg, x, w):
    schedule = schedule_dense(cfg, x, w)
    result = run_trace(schedule.trace)
    assert result.halted and result.error == ErrorCode.NONE
    assert result.data_left == 0
    return schedule, result, schedule.assemble(result.results)


CASES = [
    ("tiny", 1, 1, 1), ("tiny", 1, 16, 4), ("tiny", 2, 5, 3), ("tiny", 3, 37, 9),
    ("tiny", 5, 1, 13),      # K = 1, N over 4 tiles
    ("tiny", 5, 50, 1),      # N = 1, K over 4 tiles
    ("tiny", 12, 40, 10),    # more tokens than the 8 accumulator entries
    ("tiny", 17, 16, 4),     # more tokens than the 16 activation entries, one tile
    ("tiny", 40, 300, 7),    # 19 K tiles > 16 entries: activations cannot stay resident
    ("flexcim", 4, 768, 768), ("flexcim", 3, 200, 70), ("flexcim", 100, 1000, 33),
    ("flexcim", 65, 129, 31),
    ("shallow-acts", 10, 40, 6), ("shallow-acts", 9, 16, 5),
    ("narrow", 11, 23, 9), ("two-sub", 40, 70, 5),
]


@pytest.mark.parametrize("name, tokens, k, n", CASES,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}" for c in CASES])
def test_schedule_matches_reference(name, tokens, k, n):
    cfg = CONFIGS[name]
    x, w = _operands(cfg, tokens, k, n, seed=tokens * 1000 + k + n)
    schedule, _, out = _run(cfg, x, w)
    assert out.dtype == np.int64
    assert np.array_equal(out, matmul_reference(x, w))
    assert schedule.chunk <= min(cfg.acc_depth, cfg.act_depth, tokens)
    assert (schedule.tokens, schedule.n) == (tokens, n)


@pytest.mark.parametrize("name, value", [("tiny", -128), ("tiny", 127), ("flexcim", -128)],
                         ids=["tiny-min", "tiny-max", "flexcim-min"])
def test_extreme_values_do_not_truncate(name, value):
    cfg = preset(name)
    x = np.full((9, 300), value)
    w = np.full((300, 40), value)
    _, _, out = _run(cfg, x, w)
    assert (out == 300 * value * value).all()


def test_alternating_extremes_on_a_deep_reduction():
    cfg = preset("tiny")
    x = np.where(np.arange(1000) % 2, -128, 127)[None, :].repeat(3, axis=0)
    w = np.full((1000, 5), -128)
    w[::3] = 127
    _, _, out = _run(cfg, x, w)
    assert np.array_equal(out, matmul_reference(x, w))


def test_largest_reduction_that_cannot_wrap_is_accepted_and_exact():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=20)
    # 31 products of 2**14 = 507904 <= 2**19 - 1.
    x = np.full((2, 31), -128)
    w = np.full((31, 3), -128)
    _, _, out = _run(cfg, x, w)
    assert (out == 31 * 16384).all()


def test_both_loop_variants_are_exercised():
    cfg = preset("tiny")
    resident = schedule_dense(cfg, *_operands(cfg, 3, 37, 9, 0))
    assert resident.resident and resident.chunk == 3
    streaming = schedule_dense(cfg, *_operands(cfg, 40, 300, 7, 0))
    assert not streaming.resident and streaming.chunk == 8
    assert resident.trace.meta["loop"] == "resident"
    assert streaming.trace.meta["loop"] == "streaming"


def test_trace_shape_and_meta():
    cfg = preset("tiny")
    schedule = schedule_dense(cfg, *_operands(cfg, 12, 40, 10, 0))
    opcodes = [decode(cfg, word).opcode for word in schedule.trace.commands]
    assert opcodes[0] == Opcode.CONFIG and opcodes[-1] == Opcode.END
    assert Opcode.END not in opcodes[:-1]
    assert opcodes.count(Opcode.READ) == len(schedule.reads)
    assert schedule.trace.meta == {
        "workload": "dense-gemm", "mapping": "linear", "tokens": 12, "k": 40, "n": 10,
        "k_tiles": 3, "n_tiles": 3, "utilization": 400 / (9 * 64), "loop": "resident",
        "chunk": 5,
    }


def test_flexcim_768_cycles_by_hand():
    cfg = preset("flexcim")
    schedule, result, _ = _run(cfg, *_operands(cfg, 4, 768, 768, 0))
    # 6 K tiles x 24 N tiles; 4 tokens, all 6 tiles' activations resident (24 of 64 entries);
    # an entry is 128 activations = 4 beats of 32 lanes.
    # CONFIG 1; LOAD_A 1 + 24*4; per N tile: 6 x (LOAD_W 1+128, COMPUTE 1+4+2), READ 1+4; END 1.
    load_a = 1 + 24 * 4
    per_n_tile = 6 * (1 + 128 + 1 + 4 + 2) + 1 + 4
    assert result.counters == {
        "total": 1 + load_a + 24 * per_n_tile + 1,
        "fetch": 1 + 1 + 24 * (6 * 2 + 1) + 1,
        "load": 24 * 4 + 24 * 6 * 128,
        "compute": 24 * 6 * (4 + 2),
        "read": 24 * 4,
        "stall": 0,
    }
    assert result.counters["total"] == 19803
    assert ideal_cycles(schedule.mapping, 4) == 768 * 768 * 4 // 4096 == 576


def test_chosen_variant_is_the_cheaper_one():
    # 16 tokens, K=96 (6 full K tiles), N=8 (2 N tiles) on tiny. Resident chunks hold
    # 16 // 6 = 2 tokens, so 8 chunks each reload all weights; streaming chunks hold 8 tokens
    # (the accumulator depth) and reload 4-beat activation entries next to every tile instead.
    cfg = preset("tiny")
    schedule, result, _ = _run(cfg, *_operands(cfg, 16, 96, 8, 1))
    # Per chunk of t tokens, from the ISA costs (LOAD_W 1+16, COMPUTE 1+t+2, READ 1+t):
    # resident  LOAD_A 1+6·t·4, then 2 N tiles of 6 x (LOAD_W + COMPUTE) + READ;
    # streaming 2 N tiles of 6 x (LOAD_W + LOAD_A 1+t·4 + COMPUTE) + READ.
    resident = 2 + 8 * (1 + 24 * 2 + 2 * (6 * (17 + 3 + 2) + 1 + 2))
    streaming = 2 + 2 * (2 * (6 * (17 + 1 + 4 * 8 + 3 + 8) + 1 + 8))
    assert (resident, streaming) == (2554, 1502)
    assert not schedule.resident and schedule.chunk == 8
    assert result.counters["total"] == streaming
    # With 2 tokens both variants need one chunk, and resident loads activations only once.
    small = schedule_dense(cfg, *_operands(cfg, 2, 96, 8, 1))
    assert small.resident and small.chunk == 2


def test_round_trip_through_the_trace_file():
    cfg = preset("tiny")
    x, w = _operands(cfg, 9, 21, 6, 3)
    schedule = schedule_dense(cfg, x, w)
    again = Trace.from_text(schedule.trace.to_text())
    result = run_trace(again)
    assert np.array_equal(schedule.assemble(result.results), matmul_reference(x, w))
    assert result.counters == run_trace(schedule.trace).counters


def test_assemble_refuses_the_wrong_number_of_beats():
    cfg = preset("tiny")
    schedule = schedule_dense(cfg, *_operands(cfg, 3, 5, 6, 0))
    with pytest.raises(ValueError) as exc:
        schedule.assemble(np.zeros((5, 4), dtype=np.int64))
    assert str(exc.value) == "results must have shape (6, 4), not (5, 4)"


@pytest.mark.parametrize("x_shape, w_shape, message", [
    ((2, 5), (4, 3), "x has 5 columns but w has 4 rows; shapes must be (tokens, K) and (K, N)"),
    ((0, 5), (5, 3), "shapes must be non-empty, not x (0, 5) and w (5, 3)"),
    ((2, 0), (0, 3), "shapes must be non-empty, not x (2, 0) and w (0, 3)"),
    ((2, 5), (5, 0), "shapes must be non-empty, not x (2, 5) and w (5, 0)"),
    ((5,), (5, 3), "x must be a 2-D matrix, not an array of shape (5,)"),
], ids=["mismatch", "no-tokens", "no-k", "no-n", "1-d"])
def test_shape_errors(x_shape, w_shape, message):
    with pytest.raises(ValueError) as exc:
        schedule_dense(preset("tiny"), np.zeros(x_shape, dtype=int), np.zeros(w_shape, dtype=int))
    assert str(exc.value) == message


@pytest.mark.parametrize("cfg, operand, index, value, message", [
    (preset("tiny"), "x", (0, 2), 200, "x[0, 2] must be in -128..127 (8-bit signed), not 200"),
    (preset("tiny"), "w", (3, 0), -129, "w[3, 0] must be in -128..127 (8-bit signed), not -129"),
    (NARROW, "x", (0, 1), 4, "x[0, 1] must be in -4..3 (3-bit signed), not 4"),
    (NARROW, "w", (1, 0), -17, "w[1, 0] must be in -16..15 (5-bit signed), not -17"),
], ids=["x-int8", "w-int8", "x-3-bit", "w-5-bit"])
def test_out_of_range_operand_is_named(cfg, operand, index, value, message):
    operands = {"x": np.zeros((1, 4), dtype=int), "w": np.zeros((4, 1), dtype=int)}
    operands[operand][index] = value
    with pytest.raises(ValueError) as exc:
        schedule_dense(cfg, operands["x"], operands["w"])
    assert str(exc.value) == message


def test_float_operand_is_refused():
    with pytest.raises(ValueError) as exc:
        schedule_dense(preset("tiny"), np.zeros((1, 4)), np.zeros((4, 1), dtype=int))
    assert str(exc.value) == "x must have an integer dtype, not float64"


def test_reduction_that_could_wrap_is_refused():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=20)
    # 20-bit accumulators hold 2**19 - 1 = 524287; 32 worst-case products of 2**14 = 524288.
    with pytest.raises(ValueError) as exc:
        schedule_dense(cfg, np.zeros((1, 32), dtype=int), np.zeros((32, 1), dtype=int))
    assert str(exc.value) == ("K must be at most 31 for 20-bit accumulators "
                              "(larger K could wrap), not 32")


def test_ideal_cycles_rounds_up_and_checks_tokens():
    cfg = preset("tiny")
    schedule = schedule_dense(cfg, *_operands(cfg, 1, 5, 3, 0))
    assert ideal_cycles(schedule.mapping, 1) == 1        # 15 MACs on 64 cells
    assert ideal_cycles(schedule.mapping, 13) == 4       # 195 / 64 = 3.05
    with pytest.raises(ValueError) as exc:
        ideal_cycles(schedule.mapping, 0)
    assert str(exc.value) == "tokens must be a positive integer, not 0"
