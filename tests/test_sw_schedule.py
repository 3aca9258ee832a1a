"""Scheduled traces, run on the golden model, must equal the integer matmul reference."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import Opcode, decode
from sparsecim.sw.golden import run_trace
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import ideal_cycles, schedule_dense


def _operands(cfg, tokens, k, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(tokens, k))
    w = rng.integers(-128, 128, size=(k, n))
    return x, w


CASES = [
    ("tiny", 1, 1, 1), ("tiny", 1, 16, 4), ("tiny", 2, 5, 3), ("tiny", 3, 37, 9),
    ("tiny", 12, 40, 10),   # more tokens than the 8 accumulator entries
    ("tiny", 40, 300, 7),   # 19 K tiles: activations cannot all stay resident
    ("flexcim", 4, 768, 768), ("flexcim", 3, 200, 70), ("flexcim", 100, 1000, 33),
]


@pytest.mark.parametrize("name, tokens, k, n", CASES,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}" for c in CASES])
def test_schedule_matches_reference(name, tokens, k, n):
    cfg = preset(name)
    x, w = _operands(cfg, tokens, k, n, seed=tokens + k + n)
    schedule = schedule_dense(cfg, x, w)
    result = run_trace(schedule.trace)
    assert result.halted and result.error.name == "NONE"
    assert np.array_equal(schedule.assemble(result.results), matmul_reference(x, w))


def test_extreme_values_do_not_truncate():
    cfg = preset("flexcim")
    x = np.full((2, 300), -128)
    w = np.full((300, 40), -128)
    out = schedule_dense(cfg, x, w)
    assert (out.assemble(run_trace(out.trace).results) == 300 * 16384).all()


def test_both_loop_variants_are_exercised():
    cfg = preset("tiny")
    assert schedule_dense(cfg, *_operands(cfg, 3, 37, 9, 0)).resident
    assert not schedule_dense(cfg, *_operands(cfg, 40, 300, 7, 0)).resident


def test_every_command_is_legal_and_in_range():
    cfg = preset("tiny")
    trace = schedule_dense(cfg, *_operands(cfg, 12, 40, 10, 0)).trace
    opcodes = [decode(cfg, word).opcode for word in trace.commands]
    assert opcodes[0] == Opcode.CONFIG and opcodes[-1] == Opcode.END


def test_ideal_cycles_is_macs_over_cells():
    cfg = preset("flexcim")
    schedule = schedule_dense(cfg, *_operands(cfg, 4, 768, 768, 0))
    assert ideal_cycles(schedule.mapping, 4) == 768 * 768 * 4 // 4096


@pytest.mark.parametrize("x_shape, w_shape, message", [
    ((2, 5), (4, 3), "x has 5 columns but w has 4 rows; shapes must be (tokens, K) and (K, N)"),
    ((0, 5), (5, 3), "shapes must be non-empty, not x (0, 5) and w (5, 3)"),
], ids=["mismatch", "empty"])
def test_shape_errors(x_shape, w_shape, message):
    with pytest.raises(ValueError) as exc:
        schedule_dense(preset("tiny"), np.zeros(x_shape, dtype=int), np.zeros(w_shape, dtype=int))
    assert str(exc.value) == message


def test_out_of_range_operand_is_named():
    x = np.zeros((1, 4), dtype=int)
    x[0, 2] = 200
    with pytest.raises(ValueError) as exc:
        schedule_dense(preset("tiny"), x, np.zeros((4, 1), dtype=int))
    assert str(exc.value) == "x[0, 2] must be in -128..127 (8-bit signed), not 200"


def test_reduction_that_could_wrap_is_refused():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=20)
    # 20-bit accumulators hold 2**19 - 1 = 524287; 32 worst-case products of 2**14 = 524288.
    with pytest.raises(ValueError) as exc:
        schedule_dense(cfg, np.zeros((1, 32), dtype=int), np.zeros((32, 1), dtype=int))
    assert str(exc.value) == ("K must be at most 31 for 20-bit accumulators "
                              "(larger K could wrap), not 32")
