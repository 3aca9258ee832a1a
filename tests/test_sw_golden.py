"""The golden model on hand-built traces, checked against numpy computed here."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import (
    COUNTERS,
    ISA_VERSION,
    Command,
    DecodeError,
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    args_layout,
    check,
    command_layout,
    cycles,
    decode,
    encode,
    pack_beats,
    pack_weight_rows,
    weight_row_layout,
)
from sparsecim.hw.trace import Step, Trace
from sparsecim.sw import golden, nm_kernel
from sparsecim.sw.golden import GoldenResult, run_trace, wrap_signed

CFG = preset("tiny")  # 16 global rows x 4 columns, 5 activation lanes x 4 beats per entry


def _load_w(trace, w, row=0):
    trace.append(Command(Opcode.LOAD_W, row=row, count=w.shape[0]),
                 pack_weight_rows(trace.config, w))


def _act_beats(cfg, acts):
    """LOAD_A beats of ``acts`` (entries × reduction), built from the documented placement:
    element j of an entry is lane j % act_lanes of its beat j // act_lanes."""
    lanes = np.zeros((acts.shape[0] * cfg.act_beats(), cfg.act_lanes), dtype=np.int64)
    for e in range(acts.shape[0]):
        for j in range(cfg.reduction):
            lanes[e * cfg.act_beats() + j // cfg.act_lanes, j % cfg.act_lanes] = acts[e, j]
    return pack_beats(act_beat_layout(cfg), lanes)


def _load_a(trace, addr, acts):
    trace.append(Command(Opcode.LOAD_A, addr=addr, count=acts.shape[0]),
                 _act_beats(trace.config, acts))


def _compute(trace, act_addr, acc_addr, count, accumulate):
    trace.append(Command(Opcode.COMPUTE, act_addr=act_addr, acc_addr=acc_addr, count=count,
                         accumulate=accumulate))


def _random(shape, seed, bits=8):
    return np.random.default_rng(seed).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape)


def _model_counters(trace):
    """The cycle model computed independently: the ISA's cost of every command up to the
    halting one, an illegal command costing one fetch cycle."""
    total = dict.fromkeys(COUNTERS, 0)
    for word in trace.commands:
        try:
            cmd = decode(trace.config, word)
        except DecodeError:
            cmd = None
        if cmd is None or check(trace.config, cmd) != ErrorCode.NONE:
            total["fetch"] += 1
            total["total"] += 1
            break
        for name, value in cycles(trace.config, cmd).as_dict().items():
            total[name] += value
        if cmd.opcode == Opcode.END:
            break
    return total


def test_compute_clear_then_accumulate():
    w1, w2 = _random((16, 4), 1), _random((16, 4), 2)
    a = _random((3, 16), 3)
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    _load_a(trace, 0, a)
    _load_w(trace, w1)
    _compute(trace, 0, 2, 3, 0)
    _load_w(trace, w2)
    _compute(trace, 0, 2, 3, 1)
    trace.append(Command(Opcode.READ, addr=2, count=3))
    _compute(trace, 1, 2, 1, 0)        # clears entry 2: the old sum must not survive
    trace.append(Command(Opcode.READ, addr=2, count=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    expected = np.vstack([a @ w1 + a @ w2, a[1:2] @ w2])
    assert np.array_equal(result.results, expected)
    assert result.results.dtype == np.int64
    assert result.error == ErrorCode.NONE and result.halted
    # Cycle model by hand from the ISA's formulas, command by command:
    # CONFIG 1, LOAD_A 1+3*4, LOAD_W 1+16, COMPUTE 1+3+2, LOAD_W 17, COMPUTE 6, READ 1+3,
    # COMPUTE 1+1+2, READ 1+1, END 1.
    assert result.counters == {"total": 1 + 13 + 17 + 6 + 17 + 6 + 4 + 4 + 2 + 1,
                               "fetch": 10, "load": 12 + 16 + 16, "compute": 5 + 5 + 3,
                               "read": 4, "stall": 0}
    assert list(result.counters) == list(COUNTERS)
    assert result.commands == 10 and result.data_left == 0


def test_counters_are_the_sum_of_isa_cycles():
    rng = np.random.default_rng(5)
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    for step in range(20):
        rows = int(rng.integers(1, 17))
        _load_w(trace, _random((rows, 4), step), row=int(rng.integers(0, 17 - rows)))
        count = int(rng.integers(1, 9))
        _load_a(trace, int(rng.integers(0, 17 - count)), _random((count, 16), 100 + step))
        _compute(trace, int(rng.integers(0, 17 - count)), int(rng.integers(0, 9 - count)),
                 count, step % 2)
        trace.append(Command(Opcode.READ, addr=0, count=int(rng.integers(1, 9))))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    assert result.counters == _model_counters(trace)
    assert result.counters["total"] == sum(result.counters[n] for n in COUNTERS[1:])


def test_load_w_writes_only_its_rows():
    w1, w2 = _random((16, 4), 1), _random((3, 4), 2)
    a = _random((2, 16), 3)
    trace = Trace(CFG)
    _load_w(trace, w1)
    _load_w(trace, w2, row=5)
    _load_a(trace, 14, a)
    _compute(trace, 14, 6, 2, 0)
    trace.append(Command(Opcode.READ, addr=6, count=2))
    trace.append(Command(Opcode.END))
    merged = w1.copy()
    merged[5:8] = w2
    assert np.array_equal(run_trace(trace).results, a @ merged)


def test_untouched_state_reads_as_zero():
    trace = Trace(CFG)
    _compute(trace, 3, 0, 2, 1)        # zero weights, zero activations, zero accumulators
    trace.append(Command(Opcode.READ, addr=0, count=8))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [[0] * 4] * 8


@pytest.mark.parametrize("weight_bits, act_bits", [(8, 6), (4, 6), (5, 3), (16, 16)],
                         ids=["w8-a6", "w4-a6", "w5-a3", "w16-a16"])
def test_narrow_and_wide_lanes_follow_the_documented_placement(weight_bits, act_bits):
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8,
                      weight_bits=weight_bits, act_bits=act_bits, acc_bits=48)
    w = _random((16, 4), 1, weight_bits)
    a = _random((3, 16), 2, act_bits)
    trace = Trace(cfg)
    _load_w(trace, w)
    # Lanes past element 15 are ignored: fill them with noise to prove it.
    lanes = np.zeros((3 * cfg.act_beats(), cfg.act_lanes), dtype=np.int64)
    flat = np.zeros((3, cfg.act_beats() * cfg.act_lanes), dtype=np.int64)
    flat[:, :16] = a
    flat[:, 16:] = _random((3, flat.shape[1] - 16), 9, act_bits)
    lanes[:] = flat.reshape(-1, cfg.act_lanes)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=3), pack_beats(act_beat_layout(cfg), lanes))
    _compute(trace, 0, 0, 3, 0)
    trace.append(Command(Opcode.READ, addr=0, count=3))
    trace.append(Command(Opcode.END))
    assert np.array_equal(run_trace(trace).results, a @ w)


@pytest.mark.parametrize("weight, act, expected", [
    (-128, -128, 3 * 16 * 16384 - 2 ** 20),      # 786432 wraps past 2**19 - 1
    (-128, 127, 2 ** 20 - 3 * 16 * 16256),       # -780288 wraps past -2**19
], ids=["positive-overflow", "negative-overflow"])
def test_accumulator_wraps_at_acc_bits(weight, act, expected):
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=20)
    trace = Trace(cfg)
    _load_w(trace, np.full((16, 4), weight))
    _load_a(trace, 0, np.full((1, 16), act))
    _compute(trace, 0, 0, 1, 0)
    for _ in range(2):
        _compute(trace, 0, 0, 1, 1)
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [[expected] * 4]


def test_wrap_signed_by_hand():
    values = np.array([2 ** 19, -(2 ** 19) - 1, 5, -5, 2 ** 20 + 3], dtype=np.int64)
    assert wrap_signed(values, 20).tolist() == [-(2 ** 19), 2 ** 19 - 1, 5, -5, 3]
    assert wrap_signed(values, 64).tolist() == values.tolist()


def test_64_bit_accumulators_run_without_overflow_warnings():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, acc_bits=64)
    trace = Trace(cfg)
    _load_w(trace, np.full((16, 4), 127))
    _load_a(trace, 0, np.full((1, 16), 127))
    _compute(trace, 0, 0, 1, 0)
    _compute(trace, 0, 0, 1, 1)
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [[2 * 16 * 127 * 127] * 4]


def test_int64_fallback_equals_float_path(monkeypatch):
    w, a = _random((16, 4), 1), _random((5, 16), 2)
    trace = Trace(CFG)
    _load_w(trace, w)
    _load_a(trace, 0, a)
    _compute(trace, 0, 0, 5, 0)
    _compute(trace, 0, 0, 5, 1)
    trace.append(Command(Opcode.READ, addr=0, count=5))
    trace.append(Command(Opcode.END))
    fast = run_trace(trace)
    monkeypatch.setattr(golden, "_exact_in_float64", lambda cfg: False)
    slow = run_trace(trace)
    assert np.array_equal(fast.results, 2 * (a @ w))
    assert np.array_equal(slow.results, fast.results)


def _opcode_word(cfg, value):
    return value << command_layout(cfg)["opcode"].offset


def _word_with_field(cfg, opcode, field, value, **fields):
    layout = command_layout(cfg)
    word = encode(cfg, Command(opcode, **fields))
    return word | (value << (layout["args"].offset + args_layout(cfg, opcode)[field].offset))


def _cmd(opcode, **fields):
    return lambda: encode(CFG, Command(opcode, **fields))


BAD = {
    "opcode-6": (lambda: _opcode_word(CFG, 6), ErrorCode.ILLEGAL_OPCODE),
    **{f"mode-{m}": (lambda m=m: _word_with_field(CFG, Opcode.CONFIG, "mode", m,
                                                  mode=Mode.DENSE, n=1, m=1),
                     ErrorCode.ILLEGAL_MODE) for m in (1, 2, 3)},
    "load_w-zero": (_cmd(Opcode.LOAD_W, row=0, count=0), ErrorCode.ZERO_COUNT),
    "load_a-zero": (_cmd(Opcode.LOAD_A, addr=0, count=0), ErrorCode.ZERO_COUNT),
    "compute-zero": (_cmd(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=0, accumulate=0),
                     ErrorCode.ZERO_COUNT),
    "read-zero": (_cmd(Opcode.READ, addr=0, count=0), ErrorCode.ZERO_COUNT),
    "load_w-range": (_cmd(Opcode.LOAD_W, row=15, count=2), ErrorCode.ADDRESS_RANGE),
    "load_a-range": (_cmd(Opcode.LOAD_A, addr=15, count=2), ErrorCode.ADDRESS_RANGE),
    "compute-act-range": (_cmd(Opcode.COMPUTE, act_addr=15, acc_addr=0, count=2, accumulate=0),
                          ErrorCode.ADDRESS_RANGE),
    "compute-acc-range": (_cmd(Opcode.COMPUTE, act_addr=0, acc_addr=7, count=2, accumulate=1),
                          ErrorCode.ADDRESS_RANGE),
    "read-range": (_cmd(Opcode.READ, addr=7, count=2), ErrorCode.ADDRESS_RANGE),
}


@pytest.mark.parametrize("case", list(BAD))
def test_illegal_command_halts_after_its_fetch_cycle(case):
    make, code = BAD[case]
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    _load_w(trace, np.ones((2, 4), dtype=int))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    # The illegal command carries beats on its step: it must not consume them.
    trace.steps.append(Step(make(), pack_weight_rows(CFG, np.ones((2, 4)))))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    assert result.error == code
    assert result.halted and result.commands == 4
    # CONFIG 1 + LOAD_W 1+2 + READ 1+1 + the illegal command's fetch cycle.
    assert result.counters == {"total": 7, "fetch": 4, "load": 2, "compute": 0, "read": 1,
                               "stall": 0}
    assert result.counters == _model_counters(trace)
    assert result.results.tolist() == [[0, 0, 0, 0]]   # the READ before the error only
    assert result.data_left == 2


@pytest.mark.parametrize("opcode, fields, need", [
    (Opcode.LOAD_W, {"row": 0, "count": 3}, 3),
    (Opcode.LOAD_A, {"addr": 0, "count": 1}, 4),
], ids=["load_w", "load_a"])
def test_data_underrun_is_an_error_naming_the_command(opcode, fields, need):
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(opcode, **fields), pack_weight_rows(CFG, np.zeros((2, 4))))
    trace.append(Command(Opcode.END))
    with pytest.raises(ValueError) as exc:
        run_trace(trace)
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    assert str(exc.value) == (f"command 1 ({opcode.name} {text}) needs {need} data beats, "
                              f"the trace has 2 left")


def test_data_underrun_counts_beats_already_taken_by_earlier_commands():
    trace = Trace(CFG)
    # Three beats on the first step; LOAD_W count=2 takes two, LOAD_W count=2 finds one.
    trace.append(Command(Opcode.LOAD_W, row=0, count=2),
                 pack_weight_rows(CFG, np.zeros((3, 4))))
    trace.append(Command(Opcode.LOAD_W, row=2, count=2))
    with pytest.raises(ValueError) as exc:
        run_trace(trace)
    assert str(exc.value) == ("command 1 (LOAD_W row=2 count=2) needs 2 data beats, "
                              "the trace has 1 left")


def test_data_is_one_flat_stream():
    w = _random((2, 4), 7)
    beats = pack_weight_rows(CFG, w)
    trace = Trace(CFG)
    trace.append(Command(Opcode.LOAD_W, row=0, count=1))
    trace.append(Command(Opcode.LOAD_W, row=1, count=1), beats)  # both beats on this step
    _load_a(trace, 0, np.eye(1, 16, dtype=int) + np.eye(1, 16, 1, dtype=int))
    _compute(trace, 0, 0, 1, 0)
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    assert run_trace(trace).results.tolist() == [(w[0] + w[1]).tolist()]


def test_trace_without_end_is_not_halted():
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(Opcode.READ, addr=0, count=2))
    result = run_trace(trace)
    assert not result.halted and result.error == ErrorCode.NONE
    assert result.commands == 2
    assert result.counters == {"total": 4, "fetch": 2, "load": 0, "compute": 0, "read": 2,
                               "stall": 0}
    assert result.results.shape == (2, 4)


def test_empty_trace():
    result = run_trace(Trace(CFG))
    assert not result.halted and result.commands == 0
    assert result.counters == dict.fromkeys(COUNTERS, 0)
    assert result.results.shape == (0, 4) and result.results.dtype == np.int64


def test_commands_and_data_after_end_are_ignored():
    trace = Trace(CFG)
    trace.append(Command(Opcode.END))
    _load_w(trace, np.ones((3, 4), dtype=int))
    trace.steps.append(Step(_opcode_word(CFG, 6)))
    result = run_trace(trace)
    assert result.halted and result.error == ErrorCode.NONE
    assert result.commands == 1 and result.counters["total"] == 1
    assert result.data_left == 3


def test_other_isa_version_is_refused():
    trace = Trace(CFG, isa_version=99)
    with pytest.raises(ValueError) as exc:
        run_trace(trace)
    assert str(exc.value) == f"trace isa_version must be {ISA_VERSION}, not 99"


def test_saturated_counters_stop_at_the_counter_width():
    result = GoldenResult(np.zeros((0, 4), dtype=np.int64),
                          {"total": 70000, "fetch": 5, "load": 69990, "compute": 3, "read": 2,
                           "stall": 0}, ErrorCode.NONE, True, 5)
    assert result.saturated(16) == {"total": 65535, "fetch": 5, "load": 65535, "compute": 3,
                                    "read": 2, "stall": 0}


# N:M ----------------------------------------------------------------------------------------

def _nm_beats(cfg, entries, pattern):
    """LOAD_A beats of ``entries`` in ``pattern``: act_beats(n, m) beats per entry."""
    beats = cfg.act_beats(*pattern)
    lanes = np.zeros((len(entries) * beats, cfg.act_lanes), dtype=np.int64)
    for e, entry in enumerate(entries):
        for j, value in enumerate(entry):
            lanes[e * beats + j // cfg.act_lanes, j % cfg.act_lanes] = value
    return pack_beats(act_beat_layout(cfg), lanes)


@pytest.mark.parametrize("pattern", CFG.patterns, ids=lambda p: f"{p[0]}:{p[1]}")
def test_nm_pass_gives_each_cell_the_activation_its_metadata_names(pattern):
    """Hand-built: random weights and positions (some >= m), two entries; the expected sums
    are written cell by cell from the ISA reference's words."""
    n, m = pattern
    rng = np.random.default_rng(n * 16 + m)
    weights = rng.integers(-128, 128, size=(CFG.weight_rows, CFG.cols))
    meta = rng.integers(0, 8, size=weights.shape)
    entries = rng.integers(-128, 128, size=(2, CFG.pass_inputs(n, m)))
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=n, m=m))
    trace.append(Command(Opcode.LOAD_W, row=0, count=CFG.weight_rows),
                 pack_weight_rows(CFG, weights, meta))
    trace.append(Command(Opcode.LOAD_A, addr=3, count=2), _nm_beats(CFG, entries, pattern))
    trace.append(Command(Opcode.COMPUTE, act_addr=3, acc_addr=1, count=2, accumulate=0))
    trace.append(Command(Opcode.READ, addr=1, count=2))
    trace.append(Command(Opcode.END))
    expected = np.zeros((2, CFG.cols), dtype=np.int64)
    for t in range(2):
        for s in range(CFG.submacros):
            for r in range(CFG.rows):
                g = s * CFG.rows + r
                for c in range(CFG.cols):
                    p = meta[g, c]
                    if p < m:
                        element = ((s // n) * CFG.rows + r) * m + p
                        expected[t, c] += weights[g, c] * entries[t, element]
    result = run_trace(trace)
    np.testing.assert_array_equal(result.results, expected)
    beats = CFG.act_beats(n, m)
    assert result.counters["load"] == CFG.weight_rows + 2 * beats


def test_dense_ignores_metadata_and_nm_load_a_cost_follows_the_mode():
    rng = np.random.default_rng(4)
    weights = rng.integers(-128, 128, size=(CFG.weight_rows, CFG.cols))
    meta = rng.integers(0, 8, size=weights.shape)
    acts = rng.integers(-128, 128, size=(1, CFG.reduction))
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8))
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(Opcode.LOAD_W, row=0, count=CFG.weight_rows),
                 pack_weight_rows(CFG, weights, meta))
    _load_a(trace, 0, acts)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    np.testing.assert_array_equal(result.results, acts @ weights)
    # The LOAD_A ran in dense (the last CONFIG), so it cost dense's 4 beats, not 1:8's.
    assert result.counters["load"] == CFG.weight_rows + CFG.act_beats(1, 1) == 16 + 4


def test_entry_written_in_one_mode_is_read_in_another_with_stale_lanes():
    """LOAD_A in 2:4 writes 8 beats of the 32-element entry (40 lanes); a 1:8 pass then reads
    64 elements: the first 40 from that load, the rest from an earlier 1:8 load."""
    rng = np.random.default_rng(6)
    old = rng.integers(-128, 128, size=(1, CFG.pass_inputs(1, 8)))
    new = rng.integers(-128, 128, size=(1, CFG.pass_inputs(2, 4)))
    weights = rng.integers(-128, 128, size=(CFG.weight_rows, CFG.cols))
    meta = rng.integers(0, 8, size=weights.shape)
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8))
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1), _nm_beats(CFG, old, (1, 8)))
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=2, m=4))
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1), _nm_beats(CFG, new, (2, 4)))
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8))
    trace.append(Command(Opcode.LOAD_W, row=0, count=CFG.weight_rows),
                 pack_weight_rows(CFG, weights, meta))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    written = CFG.act_beats(2, 4) * CFG.act_lanes
    entry = old[0].copy()
    entry[:written] = 0
    entry[:new.shape[1]] = new[0]
    expected = np.zeros(CFG.cols, dtype=np.int64)
    for g in range(CFG.weight_rows):
        s, r = divmod(g, CFG.rows)
        for c in range(CFG.cols):
            expected[c] += weights[g, c] * entry[(s * CFG.rows + r) * 8 + meta[g, c]]
    np.testing.assert_array_equal(run_trace(trace).results, [expected])


# Grouping, banks, MOVE, parts -----------------------------------------------------------------

@pytest.mark.parametrize("split", [0, 1, 2])
def test_split_writes_one_bank_per_group_and_keeps_the_others(split):
    rng = np.random.default_rng(split)
    weights = rng.integers(-128, 128, size=(CFG.weight_rows, CFG.cols))
    acts = rng.integers(-128, 128, size=(2, CFG.reduction))
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=2))
    _load_w(trace, weights)
    _load_a(trace, 0, acts)
    # First fill all four banks (split 2), then overwrite with the split under test.
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=split))
    trace.append(Command(Opcode.COMPUTE, act_addr=1, acc_addr=0, count=1, accumulate=1))
    for bank in range(4):
        trace.append(Command(Opcode.READ, addr=0, count=1, bank=bank))
    trace.append(Command(Opcode.END))
    per_sub = np.array([[acts[t, 4 * s:4 * s + 4] @ weights[4 * s:4 * s + 4]
                         for s in range(4)] for t in range(2)])        # (token, sub, col)
    expected = per_sub[0].copy()
    size = 4 >> split
    for j in range(2 ** split):
        expected[j] += per_sub[1, j * size:(j + 1) * size].sum(axis=0)
    np.testing.assert_array_equal(run_trace(trace).results, expected)


def test_move_requantizes_straight_into_a_part_that_compute_reads():
    """Accumulator entry -> elements 16..19 of an activation entry (elem 4), read back by a
    COMPUTE of part 1 (elements 16..31 in dense)."""
    rng = np.random.default_rng(12)
    weights = rng.integers(-128, 128, size=(CFG.weight_rows, CFG.cols))
    acts = rng.integers(-128, 128, size=(1, CFG.reduction))
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, shift=9))
    _load_w(trace, weights)
    _load_a(trace, 0, acts)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=3, count=1, accumulate=0))
    trace.append(Command(Opcode.MOVE, bank=0, acc_addr=3, act_addr=5, elem=4, count=1,
                         transpose=0))
    trace.append(Command(Opcode.COMPUTE, act_addr=5, acc_addr=0, count=1, accumulate=0,
                         part=1))
    trace.append(Command(Opcode.READ, addr=0, count=1))
    trace.append(Command(Opcode.END))
    first = acts[0] @ weights
    moved = np.clip((first + 256) >> 9, -128, 127)
    part = np.zeros(16, dtype=np.int64)
    part[:4] = moved                       # elements 16..19; 20..31 were never written (0)
    result = run_trace(trace)
    np.testing.assert_array_equal(result.results, [part @ weights])
    assert result.counters["load"] == 16 + 4 + 1


def test_compute_part_beyond_the_pattern_raises_address_range():
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8))   # 128 inputs: one part
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0,
                         part=1))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    assert (result.error, result.commands) == (ErrorCode.ADDRESS_RANGE, 2)


# MOVE lane windows -----------------------------------------------------------------------------

#: (transpose, bank, elem, count, lane, dst, lanes) on tiny (cols 4).
WINDOWS = [
    (0, 0, 1, 2, 0, 0, 0),     # defaults: every lane to its own index
    (0, 2, 1, 2, 1, 2, 2),     # lanes 1, 2 -> elements 4·1 + 2, + 3 of entries 4, 5
    (0, 1, 6, 1, 3, 0, 1),     # lane 3 -> element 24
    (1, 1, 1, 2, 2, 0, 2),     # lanes 2, 3 -> rows 0, 1 of columns 1, 2
    (1, 3, 0, 1, 0, 1, 3),     # lanes 0 .. 2 -> rows 1 .. 3 of column 0
]


def window_probe(cfg, window, seed):
    """A trace that fills accumulator entries 0, 1 with known values (identity weights), MOVEs
    a window of them over pre-filled activation entries 4, 5, and reads elements 0 .. 31 of
    both back through identity passes (split 2: bank s, lane c is element 4·s + c of the
    part); and those 4 × 4 result beats computed from the ISA text."""
    transpose, bank, elem, count, lane, dst, lanes = window
    rng = np.random.default_rng(seed)
    acts = rng.integers(-128, 128, (2, cfg.reduction))
    pre = rng.integers(-128, 128, (2, cfg.reduction))
    identity = np.tile(np.eye(cfg.rows, cfg.cols, dtype=np.int64), (cfg.submacros, 1))
    trace = Trace(cfg)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=2, shift=0))
    _load_w(trace, identity)
    _load_a(trace, 0, acts)
    _load_a(trace, 4, pre)
    _compute(trace, 0, 0, 2, 0)
    trace.append(Command(Opcode.MOVE, bank=bank, acc_addr=0, act_addr=4, elem=elem,
                         count=count, transpose=transpose, lane=lane, dst=dst, lanes=lanes))
    for entry in (4, 5):
        for part in (0, 1):
            trace.append(Command(Opcode.COMPUTE, act_addr=entry, acc_addr=2, count=1,
                                 accumulate=0, part=part))
            for b in range(cfg.submacros):
                trace.append(Command(Opcode.READ, addr=2, count=1, bank=b))
    trace.append(Command(Opcode.END))

    entries = np.zeros((2, 32), dtype=np.int64)
    entries[:, :cfg.reduction] = pre
    acc = acts.reshape(2, cfg.submacros, cfg.cols)[:, bank]          # entry k, lane c
    n = lanes or cfg.cols
    for k in range(count):
        for t in range(n):
            value = acc[k, lane + t]
            if transpose:
                entries[0, (dst + t) * cfg.cols + elem + k] = value
            else:
                entries[k, elem * cfg.cols + dst + t] = value
    expected = entries.reshape(2 * 2 * cfg.submacros, cfg.cols)
    return trace, expected


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_move_window_writes_only_its_lanes_where_it_says(window):
    trace, expected = window_probe(CFG, window, seed=sum(window))
    result = run_trace(trace)
    assert result.error == ErrorCode.NONE
    np.testing.assert_array_equal(result.results, expected)
    assert result.counters["load"] == 16 + 2 * 4 * 2 + window[3]


@pytest.mark.parametrize("fields", [dict(lane=3, lanes=2), dict(dst=2, lanes=3),
                                    dict(lane=1, lanes=0)], ids=str)
def test_move_window_beyond_the_lanes_raises_address_range(fields):
    trace = Trace(CFG)
    trace.append(Command(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0, elem=0, count=1,
                         transpose=0, **fields))
    trace.append(Command(Opcode.END))
    result = run_trace(trace)
    assert (result.error, result.commands) == (ErrorCode.ADDRESS_RANGE, 1)


# The batched model against the command-by-command reference (issue 17) ----------------------

def _random_trace(cfg, rng, commands, move=False, illegal=False):
    """A random program: CONFIGs switching pattern and split, LOAD_W at random rows with
    random weights and positions (some >= m), LOAD_A in the current pattern, COMPUTEs at
    random addresses and parts, READs of random banks, MOVEs if ``move``, an illegal word
    somewhere if ``illegal``; END last."""
    trace = Trace(cfg)
    pattern, split = (1, 1), 0
    wl, al = weight_row_layout(cfg), act_beat_layout(cfg)
    wlo, whi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
    alo, ahi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
    kinds = ["config", "load_w", "load_w", "load_a", "compute", "compute", "compute", "read"]
    kinds += ["move"] * move
    bad_at = int(rng.integers(commands // 2, commands)) if illegal else -1
    # Every row and entry written first, so that most passes see live data.
    trace.append(Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows),
                 pack_weight_rows(cfg, rng.integers(wlo, whi, size=(cfg.weight_rows, cfg.cols))))
    trace.append(Command(Opcode.LOAD_A, addr=0, count=cfg.act_depth),
                 pack_beats(al, rng.integers(alo, ahi, size=(cfg.act_depth * cfg.act_beats(),
                                                              cfg.act_lanes))))
    for index in range(commands):
        if index == bad_at:
            trace.append(Command(Opcode.READ, addr=0, count=0))
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "config":
            pattern = cfg.modes[int(rng.integers(len(cfg.modes)))]
            split = int(rng.integers(cfg.max_split + 1)) if pattern == (1, 1) else 0
            trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE if pattern == (1, 1)
                                 else Mode.NM, n=pattern[0], m=pattern[1], split=split,
                                 shift=int(rng.integers(4))))
        elif kind == "load_w":
            row = int(rng.integers(cfg.weight_rows))
            count = int(rng.integers(1, cfg.weight_rows - row + 1))
            w = rng.integers(wlo, whi, size=(count, cfg.cols))
            meta = rng.integers(0, 2 ** cfg.meta_bits, size=(count, cfg.cols)) \
                if cfg.meta_bits else None
            trace.append(Command(Opcode.LOAD_W, row=row, count=count),
                         pack_weight_rows(cfg, w, meta))
            assert wl.size == cfg.data_bits
        elif kind == "load_a":
            addr = int(rng.integers(cfg.act_depth))
            count = int(rng.integers(1, cfg.act_depth - addr + 1))
            lanes = rng.integers(alo, ahi, size=(count * cfg.act_beats(*pattern), cfg.act_lanes))
            trace.append(Command(Opcode.LOAD_A, addr=addr, count=count), pack_beats(al, lanes))
        elif kind == "compute":
            parts = cfg.max_pass_inputs // cfg.pass_inputs(*pattern)
            count = int(rng.integers(1, min(cfg.act_depth, cfg.acc_depth) + 1))
            trace.append(Command(Opcode.COMPUTE,
                                 act_addr=int(rng.integers(cfg.act_depth - count + 1)),
                                 acc_addr=int(rng.integers(cfg.acc_depth - count + 1)),
                                 count=count, accumulate=int(rng.integers(2)),
                                 part=int(rng.integers(parts))))
        elif kind == "read":
            addr = int(rng.integers(cfg.acc_depth))
            trace.append(Command(Opcode.READ, addr=addr,
                                 count=int(rng.integers(1, cfg.acc_depth - addr + 1)),
                                 bank=int(rng.integers(cfg.submacros))
                                 if rng.random() < 0.3 else 0))
        else:
            count = int(rng.integers(1, cfg.cols + 1))
            trace.append(Command(Opcode.MOVE, bank=int(rng.integers(cfg.submacros)),
                                 acc_addr=int(rng.integers(cfg.acc_depth - count + 1)),
                                 act_addr=0, elem=0, count=count, transpose=1))
    else:
        trace.append(Command(Opcode.END))
    return trace


def _same(new, old):
    np.testing.assert_array_equal(new.results, old.results)
    assert new.results.dtype == old.results.dtype == np.int64
    assert (new.counters, new.error, new.halted, new.commands, new.data_left) == \
        (old.counters, old.error, old.halted, old.commands, old.data_left)


@pytest.fixture(params=["kernel", "numpy"])
def nm_path(request, monkeypatch):
    """Both formulations of the N:M passes: the compiled kernel (:mod:`sparsecim.sw.nm_kernel`)
    and numpy's (the kernel turned off)."""
    if request.param == "numpy":
        monkeypatch.setattr(nm_kernel, "_jit", lambda: None)
    else:
        monkeypatch.setitem(nm_kernel._state, "active", True)
    return request.param


@pytest.mark.parametrize("name", ["tiny", "fpga", "odd", "wide-acc"])
@pytest.mark.parametrize("seed", range(6))
def test_batched_model_equals_the_reference_on_random_traces(name, seed, nm_path):
    from sparsecim.sw._reference import run_trace_reference

    cfg = {"tiny": CFG, "fpga": preset("fpga"),
           "odd": MacroConfig(rows=3, cols=3, submacros=2, act_depth=6, acc_depth=4,
                              act_bits=5, patterns=((1, 2), (2, 3), (1, 5))),
           # acc_bits at its minimum: accumulation wraps, and sums of a K loop must too.
           "wide-acc": MacroConfig(rows=4, cols=4, submacros=4, act_depth=8, acc_depth=8,
                                   acc_bits=20, patterns=((2, 4),))}[name]
    rng = np.random.default_rng(seed)
    for move, illegal in [(False, False), (True, False), (False, True)]:
        trace = _random_trace(cfg, rng, 60, move=move, illegal=illegal)
        _same(run_trace(trace), run_trace_reference(trace))


def test_long_accumulation_runs_wrap_like_the_reference():
    """A K loop of many accumulating COMPUTEs into the same entries, applied as one sum by
    the batched model, wraps exactly as pass-by-pass accumulation."""
    from sparsecim.sw._reference import run_trace_reference

    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=8, acc_depth=8, acc_bits=20)
    trace = Trace(cfg)
    trace.append(Command(Opcode.LOAD_W, row=0, count=16),
                 pack_weight_rows(cfg, np.full((16, 4), -128)))
    _load_a(trace, 0, np.full((2, 16), -128))
    for index in range(40):
        trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=2,
                             accumulate=int(index > 0)))
    trace.append(Command(Opcode.READ, addr=0, count=2))
    trace.append(Command(Opcode.END))
    new, old = run_trace(trace), run_trace_reference(trace)
    _same(new, old)
    assert new.results[0, 0] == wrap_signed(np.int64(40 * 16 * 128 * 128), 20)


@pytest.mark.parametrize("pattern", ["dense", "2:4", "4:8", "1:8"])
def test_batched_model_equals_the_reference_on_schedules(pattern, nm_path):
    from sparsecim.sw._reference import run_trace_reference
    from sparsecim.sw.nm import NMPattern, prune_magnitude
    from sparsecim.sw.schedule import schedule_layer

    cfg = preset("flexcim")
    rng = np.random.default_rng(7)
    for tokens, k, n in [(1, 576, 70), (70, 300, 40), (3, 1100, 33)]:
        x = rng.integers(-128, 128, size=(tokens, k))
        w = rng.integers(-128, 128, size=(k, n))
        if pattern != "dense":
            w = prune_magnitude(w.T, NMPattern.parse(pattern)).T
        trace = schedule_layer(cfg, x, w, pattern).trace
        _same(run_trace(trace), run_trace_reference(trace))


def test_data_beat_wider_than_the_stream_is_refused():
    trace = Trace(CFG)  # 44-bit data beats held in 6 bytes: bits 44 .. 47 must be 0
    trace.steps.append(Step(encode(CFG, Command(Opcode.LOAD_W, row=0, count=1)), [1 << 45]))
    trace.append(Command(Opcode.END))
    with pytest.raises(ValueError) as exc:
        run_trace(trace)
    assert str(exc.value) == "data beat must fit 44 bits, not 0x200000000000"


def _schedule_like_trace(cfg, rng, chunks, move=False, illegal=False):
    """A random program shaped like a schedule, so that the batched model's fast paths run:
    per chunk a CONFIG (any pattern, split, shift), a LOAD_A, then a K loop of COMPUTEs of
    one shape, most after a LOAD_W of every row (runs of weights at a constant spacing in
    the stream, the spacing changed by LOAD_As in between), some reusing the weights
    (spacing 0) or after a partial LOAD_W (rows gathered), random positions (some >= m);
    a READ of a random bank; MOVEs if ``move``; an illegal word if ``illegal``; END."""
    trace = Trace(cfg)
    wl, al = weight_row_layout(cfg), act_beat_layout(cfg)
    wlo, whi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
    alo, ahi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
    depth = min(cfg.act_depth, cfg.acc_depth)
    bad_at = int(rng.integers(chunks)) if illegal else -1

    def load_w(row, count):
        meta = (rng.integers(0, 2 ** cfg.meta_bits, size=(count, cfg.cols))
                if cfg.meta_bits else None)
        trace.append(Command(Opcode.LOAD_W, row=row, count=count),
                     pack_weight_rows(cfg, rng.integers(wlo, whi, size=(count, cfg.cols)), meta))
        assert wl.size == cfg.data_bits

    def load_a(pattern, addr, count):
        lanes = rng.integers(alo, ahi, size=(count * cfg.act_beats(*pattern), cfg.act_lanes))
        trace.append(Command(Opcode.LOAD_A, addr=addr, count=count), pack_beats(al, lanes))

    load_a((1, 1), 0, cfg.act_depth)
    for chunk in range(chunks):
        if chunk == bad_at:
            trace.append(Command(Opcode.READ, addr=0, count=0))
            break
        pattern = cfg.modes[int(rng.integers(len(cfg.modes)))]
        split = int(rng.integers(cfg.max_split + 1)) if pattern == (1, 1) else 0
        trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE if pattern == (1, 1) else Mode.NM,
                             n=pattern[0], m=pattern[1], split=split,
                             shift=int(rng.integers(4))))
        count = int(rng.integers(1, depth + 1))
        act_addr = int(rng.integers(cfg.act_depth - count + 1))
        acc_addr = int(rng.integers(cfg.acc_depth - count + 1))
        part = int(rng.integers(cfg.max_pass_inputs // cfg.pass_inputs(*pattern)))
        load_a(pattern, act_addr, count)
        for index in range(int(rng.integers(1, 12))):
            draw = rng.random()
            if draw < 0.15:
                row = int(rng.integers(cfg.weight_rows))
                load_w(row, int(rng.integers(1, cfg.weight_rows - row + 1)))
            elif draw < 0.85 or index == 0:
                load_w(0, cfg.weight_rows)
            if rng.random() < 0.15:
                load_a(pattern, act_addr, count)
            trace.append(Command(Opcode.COMPUTE, act_addr=act_addr, acc_addr=acc_addr,
                                 count=count, accumulate=int(index > 0 or rng.random() < 0.5),
                                 part=part))
        trace.append(Command(Opcode.READ, addr=acc_addr, count=count,
                             bank=int(rng.integers(cfg.submacros)) if rng.random() < 0.3
                             else 0))
        if move and rng.random() < 0.5:
            width = int(rng.integers(1, cfg.cols + 1))
            trace.append(Command(Opcode.MOVE, bank=int(rng.integers(cfg.submacros)),
                                 acc_addr=int(rng.integers(cfg.acc_depth - width + 1)),
                                 act_addr=0, elem=0, count=width, transpose=1))
    else:
        trace.append(Command(Opcode.END))
    return trace


#: Configurations for the fast paths (N:M through the kernel or numpy: `nm_path`): flexcim
#: (float32 passes, N:M by byte shifts without the kernel), odd
#: widths (5-bit activations, m = 3 and 5), and 16-bit operands (float64 passes, N:M by
#: gathering: activations wider than a byte).
_FAST_PATH_CONFIGS = {
    "flexcim": preset("flexcim"),
    "odd": MacroConfig(rows=3, cols=3, submacros=2, act_depth=6, acc_depth=4, act_bits=5,
                       patterns=((1, 2), (2, 3), (1, 5))),
    "wide": MacroConfig(rows=4, cols=3, submacros=4, act_depth=8, acc_depth=8, weight_bits=16,
                        act_bits=16, acc_bits=40, patterns=((2, 4), (1, 8))),
}


@pytest.mark.parametrize("name", sorted(_FAST_PATH_CONFIGS))
@pytest.mark.parametrize("seed", range(4))
def test_fast_paths_equal_the_reference_on_schedule_like_traces(name, seed, nm_path):
    """Every pattern, split and part, whole-row runs at changing spacings, reused and
    partly reloaded weights, multi-entry COMPUTEs, MOVE (in order) and an illegal word: every
    result word and counter equals the reference's."""
    from sparsecim.sw._reference import run_trace_reference

    cfg = _FAST_PATH_CONFIGS[name]
    rng = np.random.default_rng(seed)
    for move, illegal in [(False, False), (True, False), (False, True)]:
        trace = _schedule_like_trace(cfg, rng, 6, move=move, illegal=illegal)
        _same(run_trace(trace), run_trace_reference(trace))


def test_pass_dtypes_follow_the_exactness_bounds(monkeypatch):
    """float32 when a pass's partial sums stay within 2**24 (flexcim: 128 · 2**14), float64
    within 2**53, int64 otherwise; the int64 path equals the reference too."""
    from sparsecim.sw._reference import run_trace_reference

    assert golden._pass_dtype(preset("flexcim")) == np.float32
    assert golden._pass_dtype(_FAST_PATH_CONFIGS["wide"]) == np.float64
    trace = _schedule_like_trace(preset("flexcim"), np.random.default_rng(9), 4)
    monkeypatch.setattr(golden, "_exact_in_float64", lambda cfg: False)
    assert golden._pass_dtype(preset("flexcim")) == np.int64
    _same(run_trace(trace), run_trace_reference(trace))


def test_runs_split_consecutive_weights_from_the_rest():
    """Runs of at least _MIN_RUN COMPUTEs at one spacing (0 included: reused weights); the
    rest (-1: rows not consecutive beats, or runs too short) is gathered."""
    starts = np.array([-1, 0, 128, 256, 384, 512, 512, 512, 512, 512, 900, 5, -1, 3, 6, 9, 12])
    runs, scattered = golden._runs(starts)
    assert runs == [(1, 6, 128), (6, 10, 0), (13, 17, 3)]
    assert scattered == [0, 10, 11, 12]
    assert golden._runs(np.array([4, 8])) == ([], [0, 1])


@pytest.mark.parametrize("enabled", [True, False])
def test_run_trace_leaves_the_garbage_collector_as_it_found_it(enabled):
    import gc

    trace = _schedule_like_trace(CFG, np.random.default_rng(1), 2)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        run_trace(trace)
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()
