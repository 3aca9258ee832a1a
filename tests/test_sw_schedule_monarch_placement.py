"""The Monarch scheduler's traces come from :mod:`sparsecim.sw.blockdiag_map`'s placements
(issue 11): every block sits where the scheduler's own placement code put it before, and the
cycle model counts what it counted before.

The independent reference is a frozen copy of that code (``_Slot``/``_place`` and the
second factor's offset, from ``sw/schedule/monarch.py`` at commit 8c377eb), and cycle counts
the old scheduler produced at that commit (``COUNTED_BY_THE_OLD_CODE``)."""

from dataclasses import dataclass

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.sw.blockdiag_map import BlockDiagonal, execute, map_monarch
from sparsecim.sw.golden import run_trace
from sparsecim.sw.schedule.monarch import monarch_cost, schedule_monarch


@dataclass(frozen=True)
class _Slot:
    """Where one block sits: factor-local pass, sub-macro, row-block, column-block; and the
    global load whose weight image holds it."""
    pass_: int
    sub: int
    w: int
    cb: int
    load: int


def _place(cfg, blocks, size_in, size_out, mapping, offset):
    """The old scheduler's placement, verbatim."""
    P = cfg.submacros
    kr, kc = cfg.rows // size_in, cfg.cols // size_out
    slots = []
    if mapping == "latency":
        kd = min(kr, kc)
        for n in range(blocks):
            q, r = divmod(n, P * kd)
            slots.append(_Slot(q, r % P, r // P, r // P, offset + q))
        return slots
    for n in range(blocks):
        q, sub = divmod(n, P)
        load, e = divmod(offset + q, kr * kc)
        w, d = divmod(e, kc)
        slots.append(_Slot(q, sub, w, (w + d) % kc, load))
    return slots


def _old_slots(cfg, b, s, mapping):
    """Both factors as the old ``_schedule_blocks`` placed them."""
    r_slots = _place(cfg, b, s, s, mapping, 0)
    if mapping == "capacity" and b != s:
        offset = (r_slots[-1].load + 1) * (cfg.rows // b) * (cfg.cols // s)
    else:
        offset = r_slots[-1].pass_ + 1
    return r_slots, _place(cfg, s, b, s, mapping, offset)


MACROS = {"tiny": preset("tiny"), "flexcim": preset("flexcim"), "fpga": preset("fpga"),
          "p8": MacroConfig(rows=8, cols=8, submacros=8, act_depth=32, acc_depth=32),
          "p2": MacroConfig(rows=16, cols=16, submacros=2, act_depth=32, acc_depth=32),
          "p1": MacroConfig(rows=12, cols=12, submacros=1, act_depth=32, acc_depth=32)}


def _sizes(n):
    """Every size up to 16; above, the divisors' neighbourhoods and the ends."""
    if n <= 16:
        return range(1, n + 1)
    return sorted({1, 2, 3, 5, 7, n // 4, n // 3, n // 2 - 1, n // 2, n // 2 + 1, n - 1, n})


@pytest.mark.parametrize("mapping", ["latency", "capacity"])
@pytest.mark.parametrize("name", MACROS)
def test_placements_are_where_the_old_scheduler_put_the_blocks(name, mapping):
    cfg = MACROS[name]
    for b in _sizes(cfg.rows):
        for s in _sizes(cfg.rows):
            right, left = map_monarch(mapping, BlockDiagonal(b, s, s), BlockDiagonal(s, b, s),
                                      cfg)
            for got, want in zip((right, left), _old_slots(cfg, b, s, mapping), strict=True):
                assert [p.block for p in got.placements] == list(range(len(want)))
                assert [_Slot(p.pass_, p.sub, p.row_slot, p.col_slot, p.load)
                        for p in got.placements] == want, (b, s)
                size_in, size_out = got.matrix.block_in, got.matrix.block_out
                assert all((p.row0, p.col0, p.array) == (p.row_slot * size_in,
                                                         p.col_slot * size_out,
                                                         p.load * cfg.submacros + p.sub)
                           for p in got.placements)


# (macro, b, s, mapping, tokens): total cycles, loads, passes, MOVEs per token, as the
# scheduler at commit 8c377eb (before it used blockdiag_map) computed them.
COUNTED_BY_THE_OLD_CODE = {
    ("tiny", 4, 4, "latency", 3): (101, 2, 2, 4.0),
    ("tiny", 4, 4, "capacity", 3): (101, 2, 2, 4.0),
    ("tiny", 3, 2, "capacity", 17): (369, 2, 2, 3.0),
    ("tiny", 2, 4, "latency", 17): (375, 2, 2, 2.0),
    ("tiny", 1, 3, "capacity", 3): (79, 2, 2, 1.0),
    ("flexcim", 8, 8, "capacity", 3): (251, 1, 4, 8.0),
    ("flexcim", 8, 16, "capacity", 17): (1972, 2, 6, 16.0),
    ("flexcim", 16, 8, "latency", 17): (1512, 2, 2, 32.0),
    ("flexcim", 10, 8, "capacity", 17): (996, 2, 5, 10.0),
    ("flexcim", 16, 16, "capacity", 17): (2668, 2, 8, 32.0),
    ("flexcim", 3, 31, "capacity", 3): (639, 2, 9, 24.0),
    ("flexcim", 31, 10, "capacity", 1): (412, 2, 11, 31.0),
    ("flexcim", 10, 31, "latency", 3): (1674, 11, 11, 10.0),
    ("flexcim", 32, 32, "capacity", 3): (2534, 16, 16, 32.0),
    ("p8", 3, 7, "capacity", 17): (681, 2, 2, 3.0),
    ("p8", 8, 2, "latency", 3): (225, 2, 2, 8.0),
    ("p8", 7, 4, "capacity", 3): (227, 2, 2, 7.0),
    ("fpga", 2, 1, "capacity", 17): (317, 2, 2, 2.0),
}


@pytest.mark.parametrize("key", COUNTED_BY_THE_OLD_CODE,
                         ids=["-".join(map(str, k)) for k in COUNTED_BY_THE_OLD_CODE])
def test_cycles_are_the_old_schedulers(key):
    name, b, s, mapping, tokens = key
    cost = monarch_cost(MACROS[name], b, s, mapping, tokens)
    assert (cost.counters["total"], cost.loads, cost.passes, cost.moves) == \
        COUNTED_BY_THE_OLD_CODE[key]


@pytest.mark.parametrize("mapping", ["latency", "capacity"])
@pytest.mark.parametrize("name, b, s", [("tiny", 3, 2), ("flexcim", 8, 16), ("flexcim", 10, 8),
                                        ("p8", 7, 4)])
def test_the_schedule_runs_the_placements_it_reports(name, b, s, mapping):
    """The schedule's placements are :func:`map_monarch`'s; its loads and passes are theirs;
    each factor executed on them in numpy is the factor's product; and the trace on the golden
    model gives the layer."""
    cfg = MACROS[name]
    rng = np.random.default_rng(b * s)
    x = rng.integers(-128, 128, (3, b * s))
    r_blocks, l_blocks = rng.integers(-128, 128, (b, s, s)), rng.integers(-128, 128, (s, s, b))
    schedule = schedule_monarch(cfg, x, r_blocks, l_blocks, 9, mapping)
    right, left = schedule.placements
    assert (right, left) == map_monarch(mapping, BlockDiagonal(b, s, s), BlockDiagonal(s, b, s),
                                        cfg)
    assert schedule.loads == 1 + max(p.load for p in left.placements)
    assert schedule.passes == right.macro_passes + left.macro_passes
    u = execute(right, r_blocks, x)
    np.testing.assert_array_equal(u, np.einsum("ico,tio->tic", r_blocks, x.reshape(3, b, s))
                                  .reshape(3, -1))
    v = np.clip((u.reshape(3, b, s) + (1 << 8)) >> 9, -128, 127).transpose(0, 2, 1)
    z = execute(left, l_blocks, v.reshape(3, -1)).reshape(3, s, s)
    np.testing.assert_array_equal(schedule.assemble(run_trace(schedule.trace).results), z)


def test_linear_has_no_block_placements():
    cfg = preset("tiny")
    rng = np.random.default_rng(0)
    schedule = schedule_monarch(cfg, rng.integers(-9, 9, (1, 4)), rng.integers(-9, 9, (2, 2, 2)),
                                rng.integers(-9, 9, (2, 2, 2)), 0, "linear")
    assert schedule.placements is None
