"""The golden model on hand-built traces, checked against numpy computed here."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import (
    Command,
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    args_layout,
    command_layout,
    encode,
    pack_beats,
    weight_row_layout,
)
from sparsecim.hw.trace import Step, Trace
from sparsecim.sw.golden import run_trace

CFG = preset("tiny")  # 16 global rows x 4 columns, 4 activation lanes x 4 beats per entry


def _load_w(trace, w):
    trace.append(Command(Opcode.LOAD_W, row=0, count=w.shape[0]),
                 pack_beats(weight_row_layout(trace.config), w))


def _load_a(trace, addr, acts):
    cfg = trace.config
    trace.append(Command(Opcode.LOAD_A, addr=addr, count=acts.shape[0]),
                 pack_beats(act_beat_layout(cfg), acts.reshape(-1, cfg.act_lanes)))


def _random(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, size=shape)


def test_compute_clear_then_accumulate():
    w1, w2 = _random((16, 4), 1), _random((16, 4), 2)
    a = _random((3, 16), 3)
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE))
    _load_a(trace, 0, a)
    _load_w(trace, w1)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=2, count=3, accumulate=0))
    _load_w(trace, w2)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=2, count=3, accumulate=1))
    trace.append(Command(Opcode.READ, addr=2, count=3))
    trace.append(Command(Opcode.COMPUTE, act_addr=1, acc_addr=0, count=1, accumulate=0))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    expected = np.vstack([a @ w1 + a @ w2, a[1:2] @ w2])
    assert np.array_equal(result.results, expected)
    assert result.error == ErrorCode.NONE and result.halted
    # Cycle model computed here from the ISA's formulas, command by command:
    # CONFIG 1, LOAD_A 1+3*4, LOAD_W 1+16, COMPUTE 1+3+2, LOAD_W 17, COMPUTE 6, READ 1+3,
    # COMPUTE 1+1+2, READ 1+1, END 1.
    assert result.counters == {"total": 1 + 13 + 17 + 6 + 17 + 6 + 4 + 4 + 2 + 1,
                               "fetch": 10, "load": 12 + 16 + 16, "compute": 5 + 5 + 3,
                               "read": 4, "stall": 0}
    assert result.commands == 10


def test_accumulator_wraps_at_acc_bits():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=20)
    trace = Trace(cfg)
    _load_w(trace, np.full((16, 4), -128))
    _load_a(trace, 0, np.full((1, 16), -128))
    # One pass: 16 * 16384 = 2**18. Three passes: 3 * 2**18 = 786432, past 2**19 - 1.
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    for _ in range(2):
        trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=1))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [[786432 - 2 ** 20] * 4]


def _word_with_field(cfg, opcode, field, value, **fields):
    layout = command_layout(cfg)
    word = encode(cfg, Command(opcode, **fields))
    return word | (value << (layout["args"].offset + args_layout(cfg, opcode)[field].offset))


BAD = {
    "opcode-5": (lambda: 5, ErrorCode.ILLEGAL_OPCODE),
    "opcode-6": (lambda: 6, ErrorCode.ILLEGAL_OPCODE),
    "mode-3": (lambda: _word_with_field(CFG, Opcode.CONFIG, "mode", 3, mode=Mode.DENSE),
               ErrorCode.ILLEGAL_MODE),
    "zero-count": (lambda: encode(CFG, Command(Opcode.LOAD_W, row=0, count=0)),
                   ErrorCode.ZERO_COUNT),
    "act-range": (lambda: encode(CFG, Command(Opcode.COMPUTE, act_addr=15, acc_addr=0,
                                              count=2, accumulate=0)), ErrorCode.ADDRESS_RANGE),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_illegal_command_halts_after_its_fetch_cycle(case):
    make, code = BAD[case]
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE))
    trace.steps.append(Step(make()))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    assert result.error == code
    assert result.halted and result.commands == 2
    assert result.counters["total"] == 2 and result.counters["fetch"] == 2
    assert result.results.shape == (0, 4)


def test_data_underrun_is_an_error_naming_the_command():
    trace = Trace(CFG)
    trace.append(Command(Opcode.LOAD_W, row=0, count=3), pack_beats(weight_row_layout(CFG),
                                                                    np.zeros((2, 4))))
    trace.append(Command(Opcode.END))
    with pytest.raises(ValueError) as exc:
        run_trace(trace)
    assert str(exc.value) == ("command 0 (LOAD_W row=0 count=3) needs 3 data beats, "
                              "the trace has 2 left")


def test_data_is_one_flat_stream():
    w = _random((2, 4), 7)
    beats = pack_beats(weight_row_layout(CFG), w)
    trace = Trace(CFG)
    trace.append(Command(Opcode.LOAD_W, row=0, count=1))
    trace.append(Command(Opcode.LOAD_W, row=1, count=1), beats)  # both beats on this step
    _load_a(trace, 0, np.eye(1, 16, dtype=int) + np.eye(1, 16, 1, dtype=int))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [(w[0] + w[1]).tolist()]


def test_trace_without_end_is_not_halted():
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE))
    result = run_trace(trace)
    assert not result.halted and result.error == ErrorCode.NONE
    assert result.counters["total"] == 1
