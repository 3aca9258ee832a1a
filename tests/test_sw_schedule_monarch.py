"""Monarch (two block-diagonal factors with the middle transpose) as one trace, on the golden
model, against plain integer numpy."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import ErrorCode, Opcode, decode
from sparsecim.sw.golden import run_trace
from sparsecim.sw.schedule_monarch import monarch_reference, schedule_monarch


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


CASES = [("tiny", 4, 4, 3, 6), ("tiny", 3, 2, 5, 4), ("tiny", 1, 1, 1, 0), ("tiny", 4, 3, 9, 8),
         ("flexcim", 32, 32, 2, 12), ("flexcim", 24, 24, 3, 11), ("flexcim", 5, 7, 2, 3)]


@pytest.mark.parametrize("name, b, s, tokens, shift", CASES, ids=[str(c) for c in CASES])
def test_monarch_trace_matches_reference(name, b, s, tokens, shift):
    cfg = preset(name)
    x, r_blocks, l_blocks = _operands(b, s, tokens, seed=b * s + tokens)
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, shift)
    result = run_trace(schedule.trace)
    assert result.error == ErrorCode.NONE and result.halted and result.data_left == 0
    got = schedule.assemble(result.results)
    np.testing.assert_array_equal(got, monarch_reference(cfg, x, r_blocks, l_blocks, shift))
    if b * s <= 16:
        np.testing.assert_array_equal(got, _loop_reference(x, r_blocks, l_blocks, shift))


def test_the_middle_permutation_is_moves_not_data():
    """No data beat carries the intermediate: LOAD_A beats are only the inputs, and the
    transposes are MOVE commands (b per token)."""
    cfg = preset("tiny")
    schedule = schedule_monarch(cfg, *_operands(4, 4, 3, 0), shift=6)
    ops = [decode(cfg, word).opcode for word in schedule.trace.commands]
    assert ops.count(Opcode.MOVE) == 4 * 3
    load_a = [step for step in schedule.trace.steps
              if decode(cfg, step.command).opcode == Opcode.LOAD_A]
    assert sum(len(step.data) for step in load_a) == 3 * cfg.act_beats()  # 16 inputs, 1 pass


@pytest.mark.parametrize("args, message", [
    (dict(b=5, s=4), "1 <= b <= 4"),
    (dict(b=4, s=5), "s <= 4"),
    (dict(shift=32), "shift must be in 0..31, not 32"),
], ids=["b", "s", "shift"])
def test_bad_layers_are_refused(args, message):
    cfg = preset("tiny")
    b, s = args.get("b", 4), args.get("s", 4)
    with pytest.raises(ValueError, match=message):
        schedule_monarch(cfg, *_operands(b, s, 1, 0), shift=args.get("shift", 4))


def test_macro_needs_square_subarrays():
    cfg = MacroConfig(rows=4, cols=2, submacros=4, act_depth=8, acc_depth=8)
    with pytest.raises(ValueError, match="a Monarch layer needs rows == cols, not 4 and 2"):
        schedule_monarch(cfg, *_operands(2, 2, 1, 0), shift=0)
