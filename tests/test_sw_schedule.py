"""Scheduled traces, run on the golden model, must equal the integer matmul reference."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import ErrorCode, Opcode, decode
from sparsecim.hw.trace import Trace
from sparsecim.sw.golden import run_trace
from sparsecim.sw.nm import NMPattern, NMPatternError
from sparsecim.sw.operands import random_gemm
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import (
    as_pattern,
    chain,
    ideal_cycles,
    predict_counters,
    schedule_dense,
    schedule_layer,
)

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
    return random_gemm(cfg, k, n, tokens, seed)


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
        "workload": "gemm", "mapping": "linear", "pattern": "dense", "tokens": 12, "k": 40, "n": 10,
        "k_tiles": 3, "n_tiles": 3, "utilization": 400 / (9 * 64), "loop": "resident",
        "chunk": 5,
    }


def test_flexcim_768_cycles_by_hand():
    cfg = preset("flexcim")
    schedule, result, _ = _run(cfg, *_operands(cfg, 4, 768, 768, 0))
    # 6 K tiles x 24 N tiles; 4 tokens, all 6 tiles' activations resident (24 of 64 entries);
    # a 352-bit beat (32 weights + 32 3-bit positions) carries 44 activations, so an entry of
    # 128 activations is 3 beats.
    # CONFIG 1; LOAD_A 1 + 24*3; per N tile: 6 x (LOAD_W 1+128, COMPUTE 1+4+2), READ 1+4; END 1.
    load_a = 1 + 24 * 3
    per_n_tile = 6 * (1 + 128 + 1 + 4 + 2) + 1 + 4
    assert result.counters == {
        "total": 1 + load_a + 24 * per_n_tile + 1,
        "fetch": 1 + 1 + 24 * (6 * 2 + 1) + 1,
        "load": 24 * 3 + 24 * 6 * 128,
        "compute": 24 * 6 * (4 + 2),
        "read": 24 * 4,
        "stall": 0,
    }
    assert result.counters["total"] == 19779
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


# N:M ----------------------------------------------------------------------------------------

NM_CONFIGS = {"tiny": preset("tiny"), "flexcim": preset("flexcim"),
              # P = 2, a group width that is not a power of two, under-full last beats.
              "odd": MacroConfig(rows=3, cols=3, submacros=2, act_depth=6, acc_depth=4,
                                 act_bits=5, patterns=((1, 2), (2, 3), (1, 5)))}
NM_CASES = [(name, pattern, shape) for name, cfg in NM_CONFIGS.items()
            for pattern in cfg.patterns
            for shape in [(1, 1, 1), (3, 37, 9), (9, 131, 5), (2, 300, 40)]]


def _masked(cfg, tokens, k, n, pattern, seed):
    """Operands with a random per-output-channel mask built here: each group of m inputs
    of each column keeps a random subset of at most n (sometimes fewer)."""
    x, w = _operands(cfg, tokens, k, n, seed)
    rng = np.random.default_rng(seed + 1)
    keep, group = pattern
    for col in range(n):
        for g0 in range(0, k, group):
            rows = np.arange(g0, min(g0 + group, k))
            kept = int(rng.integers(0, keep + 1)) if rng.random() < 0.2 else keep
            w[rng.permutation(rows)[kept:], col] = 0
    return x, w


@pytest.mark.parametrize("name, pattern, shape", NM_CASES,
                         ids=[f"{c[0]}-{c[1][0]}:{c[1][1]}-{'x'.join(map(str, c[2]))}"
                              for c in NM_CASES])
def test_nm_schedule_matches_reference_and_predicted_cycles(name, pattern, shape):
    cfg = NM_CONFIGS[name]
    tokens, k, n = shape
    x, w = _masked(cfg, tokens, k, n, pattern, seed=k + n + pattern[1])
    schedule = schedule_layer(cfg, x, w, pattern)
    result = run_trace(schedule.trace)
    assert result.halted and result.error == ErrorCode.NONE and result.data_left == 0
    np.testing.assert_array_equal(schedule.assemble(result.results), matmul_reference(x, w))
    assert predict_counters(cfg, k, n, tokens, pattern) == result.counters
    assert schedule.mapping.pattern == pattern


def test_patterns_are_accepted_in_every_spelling_and_n_equal_m_is_dense():
    assert as_pattern(None) == as_pattern("dense") == as_pattern("4:4") == (1, 1)
    assert as_pattern("2:4") == as_pattern(NMPattern(2, 4)) == as_pattern((2, 4)) == (2, 4)
    with pytest.raises(ValueError, match="pattern must be"):
        as_pattern(2.5)


def test_weights_breaking_the_pattern_are_refused_naming_the_group():
    cfg = preset("tiny")
    x, w = _masked(cfg, 2, 16, 3, (2, 4), seed=1)
    w[4:7, 2] = [5, -6, 7]  # output channel 2, inputs 4..7: three non-zeros
    w[7, 2] = 0
    with pytest.raises(NMPatternError) as exc:
        schedule_layer(cfg, x, w, "2:4")
    assert (exc.value.row, exc.value.group) == (2, 1)
    assert "row 2, inputs 4..7" in str(exc.value)


def test_unsupported_pattern_is_refused():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="pattern 2:16 is not supported by this macro; "
                       "supported are dense and 1:2, 1:4, 1:8, 2:4, 2:8, 4:8"):
        schedule_layer(cfg, np.zeros((1, 4), dtype=int), np.zeros((4, 1), dtype=int), "2:16")


def test_nm_cycles_by_hand_flexcim_4096_1_of_8():
    """1:8 on flexcim: a pass covers 32 × 4 × 8 = 1024 inputs (24 beats of 44), so a
    4096 × 4096 layer is 4 K tiles × 128 N tiles; one token, activations resident."""
    cfg = preset("flexcim")
    got = predict_counters(cfg, 4096, 4096, 1, (1, 8))
    load_a = 1 + 4 * 24
    per_n_tile = 4 * (1 + 128 + 1 + 1 + 2) + 1 + 1
    assert got["total"] == 1 + load_a + 128 * per_n_tile + 1
    assert got["load"] == 4 * 24 + 128 * 4 * 128


def test_sparser_patterns_take_fewer_cycles_on_a_decode_layer():
    cfg = preset("flexcim")
    total = {p: predict_counters(cfg, 4096, 4096, 1, p)["total"] for p in cfg.modes}
    assert total[(1, 2)] < total[(1, 1)]
    assert total[(1, 8)] < total[(1, 4)] < total[(1, 2)]
    assert total[(2, 8)] < total[(2, 4)] < total[(1, 1)]
    for (n, m), cycles in total.items():
        assert total[(1, 1)] / cycles <= m / n  # never beyond the ideal


def test_chain_runs_layers_back_to_back_each_in_its_pattern():
    cfg = preset("tiny")
    layers = [(*_masked(cfg, 2, 30, 5, p, seed=i), p)
              for i, p in enumerate([(1, 1), (2, 4), (1, 8), (1, 1)])]
    schedules = [schedule_layer(cfg, x, w, p) for x, w, p in layers]
    trace = chain(schedules)
    assert [decode(cfg, word).opcode for word in trace.commands].count(Opcode.END) == 1
    result = run_trace(trace)
    beat = 0
    for schedule, (x, w, _) in zip(schedules, layers, strict=True):
        got = schedule.assemble(result.results[beat:beat + schedule.result_beats])
        np.testing.assert_array_equal(got, matmul_reference(x, w))
        beat += schedule.result_beats
    assert result.counters["total"] == sum(run_trace(s.trace).counters["total"]
                                           for s in schedules) - (len(schedules) - 1)
    with pytest.raises(ValueError, match="schedules must not be empty"):
        chain([])


# Closed-form counters and the partial last tile (issue 17) ----------------------------------

CLOSED_CONFIGS = {**NM_CONFIGS, "shallow-acts": SHALLOW_ACTS, "paper": preset("paper")}
CLOSED_SHAPES = [(1, 1, 1), (1, 576, 576), (3, 37, 9), (9, 131, 5), (17, 300, 40),
                 (70, 1100, 33), (130, 4096, 64)]


@pytest.mark.parametrize("name", sorted(CLOSED_CONFIGS))
def test_closed_form_counters_equal_the_command_by_command_sum(name):
    """Every plan (both loop variants, every pattern, shapes with edge tiles and chunks of two
    sizes): the closed form equals the ISA costs summed over the listed commands."""
    from sparsecim.sw.mapping import map_nm
    from sparsecim.sw.schedule.gemm import _closed_counters, _plan, _plan_counters, _variants

    cfg = CLOSED_CONFIGS[name]
    for pattern in cfg.modes:
        for tokens, k, n in CLOSED_SHAPES:
            if k > cfg.max_reduction():
                continue
            mapping = map_nm(cfg, k, n, pattern)
            sums = []
            for resident, chunk in _variants(mapping, tokens):
                ops, _ = _plan(mapping, tokens, resident, chunk)
                listed = _plan_counters(cfg, ops)
                assert _closed_counters(mapping, tokens, resident, chunk) == listed, \
                    (pattern, tokens, k, n, resident)
                sums.append(listed)
            assert predict_counters(cfg, k, n, tokens, pattern) == min(
                sums, key=lambda counters: counters["total"])


def _load_w_commands(cfg, trace):
    return [(cmd.row, cmd.count) for cmd in map(lambda w: decode(cfg, w), trace.commands)
            if cmd.opcode == Opcode.LOAD_W]


@pytest.mark.parametrize("pattern, last_tile", [
    # 576 = 2 x 256 + 64 inputs: the last tile has 8 groups of 8 (4:8), one per row of each
    # of the 4 sub-macros of one cluster; 16 groups of 4 (2:4) on the 2 sub-macros of the
    # first cluster. Sub-macro s holds global rows 32s ..
    ("4:8", [(0, 8), (32, 8), (64, 8), (96, 8)]),
    ("2:4", [(0, 16), (32, 16)]),
    ("dense", [(0, 64)]),          # 576 = 4 x 128 + 64: rows 0 .. 63, one range
])
def test_partial_last_tile_loads_only_the_rows_it_uses(pattern, last_tile):
    cfg = preset("flexcim")
    x, w = _masked(cfg, 1, 576, 32, (1, 1) if pattern == "dense" else as_pattern(pattern), 5)
    schedule = schedule_layer(cfg, x, w, pattern)
    loads = _load_w_commands(cfg, schedule.trace)
    full = [(0, 128)] * (schedule.mapping.k_tiles - 1)
    assert loads == full + last_tile
    result = run_trace(schedule.trace)
    np.testing.assert_array_equal(schedule.assemble(result.results), matmul_reference(x, w))
    assert result.counters == predict_counters(cfg, 576, 32, 1, pattern)


def test_4_8_and_2_4_cost_the_same_loads_at_576_inputs():
    """Both keep M/N = 2, so a 576-input layer needs 2.25 tiles' worth of rows either way;
    4:8 pays two more fetch cycles (4 ranges against 2) per column block."""
    cfg = preset("flexcim")
    four, two = (predict_counters(cfg, 576, 576, 1, p) for p in ("4:8", "2:4"))
    assert four["load"] == two["load"]
    assert four["fetch"] - two["fetch"] == 2 * 18  # 18 column blocks of 32


@pytest.mark.parametrize("name", ["tiny", "flexcim", "narrow", "two-sub", "shallow-acts"])
def test_dense_traces_are_word_for_word_those_of_the_reference_scheduler(name):
    from sparsecim.sw._reference import schedule_layer_reference

    cfg = CONFIGS[name]
    for tokens, k, n in [(1, 1, 1), (3, 37, 9), (12, 40, 10), (40, 300, 7)]:
        x, w = _operands(cfg, tokens, k, n, tokens + k)
        new, old = schedule_dense(cfg, x, w), schedule_layer_reference(cfg, x, w)
        assert new.trace.commands == old.trace.commands
        assert new.trace.data == old.trace.data
        assert new.trace.meta == old.trace.meta and new.reads == old.reads


@pytest.mark.parametrize("pattern", [(2, 4), (1, 2), (4, 8)])
def test_nm_traces_differ_from_the_reference_only_in_the_last_tile_loads(pattern):
    """Where every tile is full the N:M trace is word for word the reference's."""
    from sparsecim.sw._reference import schedule_layer_reference

    cfg = preset("tiny")
    inputs = cfg.pass_inputs(*pattern)
    x, w = _masked(cfg, 5, 3 * inputs, 9, pattern, 2)
    new, old = schedule_layer(cfg, x, w, pattern), schedule_layer_reference(cfg, x, w, pattern)
    assert new.trace.commands == old.trace.commands and new.trace.data == old.trace.data


TILE_CASES = [(name, pattern) for name, cfg in {**NM_CONFIGS, "narrow": NARROW}.items()
              for pattern in [(1, 1), *cfg.patterns]]


@pytest.mark.parametrize("name, pattern", TILE_CASES,
                         ids=[f"{c[0]}-{c[1][0]}:{c[1][1]}" for c in TILE_CASES])
def test_tile_weight_bytes_are_the_reference_packing_of_compressed_tiles(name, pattern):
    """Every tile's LOAD_W bytes equal the pre-issue-17 path (compress, then the bit-by-bit
    reference packer), for every pattern, partial last tiles and groups, N not a multiple of
    cols, and operands in C order, transposed (F order) and in a wide dtype."""
    from sparsecim.hw.isa import bytes_to_words
    from sparsecim.sw._reference import _pack_weights, _tile_weights
    from sparsecim.sw.mapping import map_nm
    from sparsecim.sw.schedule.gemm import tile_weight_bytes

    cfg = {**NM_CONFIGS, "narrow": NARROW}[name]
    for k, n in [(1, 1), (37, 9), (131, 5), (2 * cfg.pass_inputs(*pattern) + 3, 3 * cfg.cols)]:
        _, w = _masked(cfg, 1, k, n, pattern, seed=k * n)
        mapping = map_nm(cfg, k, n, pattern)
        values, meta = _tile_weights(cfg, mapping, w)
        expected = _pack_weights(cfg, values.reshape(-1, cfg.cols), meta.reshape(-1, cfg.cols))
        for operand in (w, np.asfortranarray(w), w.astype(np.int64)):
            raw = tile_weight_bytes(cfg, mapping, operand)
            assert raw.shape[:3] == (mapping.n_tiles, mapping.k_tiles, cfg.weight_rows)
            assert bytes_to_words(raw.reshape(-1, raw.shape[-1])) == expected


STEP_CASES = [("tiny", (1, 1), (12, 40, 10)), ("tiny", (2, 4), (17, 37, 9)),
              ("tiny", (1, 8), (40, 300, 7)), ("flexcim", (4, 8), (70, 576, 40)),
              ("flexcim", (2, 4), (3, 300, 33)), ("odd", (2, 3), (9, 131, 5)),
              ("odd", (1, 5), (5, 70, 4))]


@pytest.mark.parametrize("name, pattern, shape", STEP_CASES,
                         ids=[f"{c[0]}-{c[1][0]}:{c[1][1]}-{'x'.join(map(str, c[2]))}"
                              for c in STEP_CASES])
def test_trace_steps_are_the_plan_listing(name, pattern, shape):
    """The trace built from the loop structure is, word for word and beat for beat,
    :func:`_plan`'s listing with each data reference cut from the packed operands (the
    reference packer's words), in every loop variant that fits (both, but for odd 2:3), with
    partial last tiles and several chunks (a smaller last one)."""
    from sparsecim.hw.isa import act_beat_layout, bytes_to_words, encode
    from sparsecim.hw.trace import Trace
    from sparsecim.sw._reference import pack_beats_reference
    from sparsecim.sw.schedule.gemm import (
        _activation_bytes,
        _plan,
        _steps,
        _variants,
        tile_weight_bytes,
    )

    cfg = NM_CONFIGS[name]
    tokens, k, n = shape
    x, w = _masked(cfg, tokens, k, n, pattern, seed=tokens + k)
    mapping = schedule_layer(cfg, x, w, pattern).mapping
    w_raw = tile_weight_bytes(cfg, mapping, w)
    act_beats, inputs = cfg.act_beats(*pattern), mapping.pass_inputs
    entry = np.zeros((mapping.k_tiles, tokens, act_beats * cfg.act_lanes), dtype=np.int64)
    for kt in range(mapping.k_tiles):
        block = x[:, kt * inputs:(kt + 1) * inputs]
        entry[kt, :, :block.shape[1]] = block
    a_words = np.array(pack_beats_reference(act_beat_layout(cfg),
                                            entry.reshape(-1, cfg.act_lanes)),
                       dtype=object).reshape(mapping.k_tiles, tokens * act_beats)
    variants = _variants(mapping, tokens)
    for resident, chunk in variants:
        ops, reads = _plan(mapping, tokens, resident, chunk)
        trace = Trace(cfg)
        got = _steps(mapping, tokens, resident, chunk, w_raw,
                     _activation_bytes(cfg, mapping, x), trace.steps)
        assert got == reads
        assert trace.commands == [encode(cfg, cmd) for cmd, _ in ops]
        for step, (_, ref) in zip(trace.steps, ops, strict=True):
            if ref is None:
                assert list(step.data) == []
            elif ref[0] == "w":
                _, nt, kt, row, rows = ref
                assert list(step.data) == bytes_to_words(w_raw[nt, kt, row:row + rows])
            else:
                _, k_lo, k_hi, t0, count = ref
                acts = a_words[k_lo:k_hi, t0 * act_beats:(t0 + count) * act_beats]
                assert list(step.data) == list(acts.reshape(-1))
