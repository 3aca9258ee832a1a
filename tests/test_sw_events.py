"""Event counts: hand-counted traces, and the counts the RTL's counters fix exactly."""

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.hw.isa import (
    ISA_VERSION,
    Command,
    Mode,
    Opcode,
    act_beat_layout,
    command_layout,
    pack_beats,
    pack_weight_rows,
)
from sparsecim.hw.trace import Trace
from sparsecim.sw.events import Events, count_events, derived_from_counters
from sparsecim.sw.golden import run_trace
from sparsecim.sw.schedule import schedule_layer

CFG = preset("tiny")  # 4 sub-macros of 4 × 4, act_lanes 5, 2:4 entries of 32 in 7 beats


def _hand_trace():
    """A 2:4 COMPUTE of 2 passes, a dense split-1 COMPUTE that accumulates, a windowed MOVE, a
    READ of bank 1. Weights are 1 except row 0 (zeros); cell (1, 0) has position 6 >= m."""
    weights = np.ones((CFG.weight_rows, CFG.cols), dtype=np.int64)
    weights[0] = 0
    meta = np.zeros_like(weights)
    meta[1, 0] = 6
    acts = np.arange(2 * 7 * CFG.act_lanes).reshape(14, CFG.act_lanes) % 100
    trace = Trace(CFG)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=2, m=4))
    trace.append(Command(Opcode.LOAD_W, row=0, count=16), pack_weight_rows(CFG, weights, meta))
    trace.append(Command(Opcode.LOAD_A, addr=0, count=2), pack_beats(act_beat_layout(CFG), acts))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=2, accumulate=0))
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=1))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=2, count=1, accumulate=1))
    trace.append(Command(Opcode.MOVE, bank=0, acc_addr=0, act_addr=3, elem=0, count=2,
                         transpose=0, lane=1, dst=0, lanes=2))
    trace.append(Command(Opcode.READ, addr=0, count=3, bank=1))
    trace.append(Command(Opcode.END))
    return trace


def test_hand_counted_trace():
    ev = count_events(_hand_trace())
    cmd_bits = command_layout(CFG).size
    assert ev == Events(
        # 1 + 17 + (1 + 2·7) + (1 + 2 + 2) + 1 + (1 + 1 + 2) + (1 + 2) + (1 + 3) + 1
        cycles=51, stall_cycles=0, commands=9, compute_commands=2,
        passes=3, passes_by_mode={"2:4": 2, "1:1": 1},
        w_rows=16, a_beats=14, move_entries=2, result_beats=3,
        macs=3 * 64,
        # 2:4 passes: row 0 (4 cells) and cell (1, 0); the dense pass ignores metadata.
        zero_weight_macs=2 * 5 + 1 * 4,
        weight_bits_written=16 * 4 * (8 + 3),
        act_bits_written=14 * 5 * 8 + 2 * 2 * 8,       # beats, then the MOVE window lanes
        act_bits_read=3 * 128 * 8,                      # a whole entry (1:8's 128) per pass
        dist_words=3 * 16 * 8,                          # rows × P × 8 choices per pass
        cell_selects=3 * 64,
        tree_adds=3 * 4 * 4 * 3,                        # P × cols × (rows - 1) per pass
        merge_adds=2 * 4 * 3 + 1 * 4 * 2,               # all 4 summed; then 2 groups of 2
        acc_reads=1 * 2 * 4 + 2 * 4 + 3 * 4,            # accumulate, MOVE, READ
        acc_writes=2 * 4 + 1 * 2 * 4,
        requants=2 * 2,
        bits_in=9 * cmd_bits + (16 + 14) * CFG.data_bits,
        bits_out=3 * CFG.result_bits,
    )


def test_cycles_and_derived_counts_agree_with_golden_counters():
    trace = _hand_trace()
    ev = count_events(trace)
    counters = run_trace(trace).counters | ev.rtl_counters()
    assert ev.cycles == counters["total"]
    derived = derived_from_counters(CFG, counters)
    assert derived == {name: getattr(ev, name) for name in derived}


@pytest.mark.parametrize("name, pattern", [("tiny", None), ("tiny", (2, 4)), ("tiny", (1, 8)),
                                           ("fpga", (1, 2))],
                         ids=["tiny-dense", "tiny-2:4", "tiny-1:8", "fpga-1:2"])
def test_counts_not_in_the_rtl_follow_from_its_counters(name, pattern):
    """Every count :func:`derived_from_counters` claims follows from the status counters
    equals the trace walk, on scheduled layers (several tiles, accumulation, READs)."""
    cfg = preset(name)
    rng = np.random.default_rng(3)
    k, n = 3 * cfg.reduction, 2 * cfg.cols + 1
    w = rng.integers(-128, 128, size=(k, n))
    if pattern:
        # Keep the largest n of every m inputs per output channel.
        keep, group = pattern
        groups = np.abs(w).reshape(k // group, group, n)
        order = np.argsort(-groups, axis=1, kind="stable")
        mask = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(mask, order[:, :keep], True, axis=1)
        w = np.where(mask.reshape(k, n), w, 0)
    x = rng.integers(-128, 128, size=(3, k))
    trace = schedule_layer(cfg, x, w, pattern).trace
    ev = count_events(trace)
    counters = run_trace(trace).counters | ev.rtl_counters()
    derived = derived_from_counters(cfg, counters)
    assert derived == {name: getattr(ev, name) for name in derived}
    assert ev.cycles == counters["total"]


def test_events_stop_at_an_illegal_command():
    trace = Trace(CFG)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1),
                 pack_beats(act_beat_layout(CFG), np.zeros((4, CFG.act_lanes), np.int64)))
    trace.append(Command(Opcode.COMPUTE, act_addr=15, acc_addr=0, count=2, accumulate=0))
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0))
    ev = count_events(trace)
    assert (ev.commands, ev.passes, ev.a_beats, ev.cycles) == (2, 0, 4, 5 + 1)


def test_sum_and_scale():
    ev = count_events(_hand_trace())
    twice = ev + ev
    assert twice == ev.scaled(2)
    assert twice.passes_by_mode == {"2:4": 4, "1:1": 2} and twice.macs == 2 * ev.macs


def test_other_isa_version_is_refused():
    with pytest.raises(ValueError, match=f"^trace isa_version must be {ISA_VERSION}, not 3$"):
        count_events(Trace(CFG, isa_version=3))
