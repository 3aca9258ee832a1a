"""SubMacro in Amaranth simulation: column sums equal numpy, exact widths, write timing."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment, Shape, signed
from amaranth.sim import Simulator
from sparsecim.hw import isa
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.submacro import SubMacro, choices

CONFIGS = {
    "tiny": preset("tiny"),
    "rows5-odd": MacroConfig(rows=5, cols=3, submacros=1, act_depth=1, acc_depth=1),
    "w16a16": MacroConfig(rows=3, cols=2, submacros=2, act_depth=1, acc_depth=1,
                          weight_bits=16, act_bits=16, acc_bits=40),
    "w3a5": MacroConfig(rows=6, cols=4, submacros=1, act_depth=1, acc_depth=1,
                        weight_bits=3, act_bits=5),
}


def extremes(bits):
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def cases(cfg, rng, random_count=20):
    """(weights rows × cols, activations rows) pairs: the extreme corners, then random ones."""
    wlo, whi = extremes(cfg.weight_bits)
    alo, ahi = extremes(cfg.act_bits)
    shape = (cfg.rows, cfg.cols)
    yield np.full(shape, wlo), np.full(cfg.rows, alo)    # largest positive sum
    yield np.full(shape, wlo), np.full(cfg.rows, ahi)    # most negative sum
    yield np.full(shape, whi), np.full(cfg.rows, ahi)
    yield np.full(shape, whi), np.full(cfg.rows, alo)
    for _ in range(random_count):
        yield (rng.integers(wlo, whi + 1, size=shape),
               rng.integers(alo, ahi + 1, size=cfg.rows))


def run_submacro(cfg, cases):
    """Load each (weights, meta) row by row, offer the activations ``(rows, choices)``,
    return the column sums."""
    dut = SubMacro(config=cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got = []

    async def bench(ctx):
        for weights, meta, offered in cases:
            for r in range(cfg.rows):
                for p in range(choices(cfg)):
                    ctx.set(dut.act[r][p], int(offered[r][p]))
            for r, row in enumerate(weights):
                ctx.set(dut.we, 1)
                ctx.set(dut.waddr, r)
                ctx.set(dut.wdata.as_value(), isa.pack_weight_rows(cfg, [row], [meta[r]])[0])
                await ctx.tick()
            ctx.set(dut.we, 0)
            got.append([ctx.get(dut.sums[c]) for c in range(cfg.cols)])

    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.int64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_submacro_column_sums_equal_numpy_including_extremes(name):
    """Every position offers the row's activation, so any metadata gives acts @ weights."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    pairs = list(cases(cfg, rng))
    runs = [(w, rng.integers(0, choices(cfg), size=w.shape),
             np.repeat(a[:, None], choices(cfg), axis=1)) for w, a in pairs]
    expected = np.array([acts @ weights for weights, acts in pairs], dtype=np.int64)
    np.testing.assert_array_equal(run_submacro(cfg, runs), expected)


def test_submacro_each_cell_selects_the_activation_its_metadata_names():
    cfg = preset("tiny")
    rng = np.random.default_rng(5)
    runs = []
    for _ in range(10):
        weights = rng.integers(-128, 128, size=(cfg.rows, cfg.cols))
        meta = rng.integers(0, choices(cfg), size=weights.shape)
        offered = rng.integers(-128, 128, size=(cfg.rows, choices(cfg)))
        runs.append((weights, meta, offered))
    expected = [[sum(int(w[r, c]) * int(o[r, mt[r, c]]) for r in range(cfg.rows))
                 for c in range(cfg.cols)] for w, mt, o in runs]
    assert choices(cfg) == 8
    np.testing.assert_array_equal(run_submacro(cfg, runs), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_submacro_output_width_is_column_sum_bits_and_fits_the_worst_case(name):
    cfg = CONFIGS[name]
    dut = SubMacro(config=cfg)
    elem = Shape.cast(dut.sums.shape().elem_shape)
    assert elem == signed(cfg.column_sum_bits)
    assert dut.sums.shape().length == cfg.cols
    # The worst case, rows × (-2**(w-1)) × (-2**(a-1)), needs all of it.
    worst = cfg.rows * 2 ** (cfg.weight_bits - 1) * 2 ** (cfg.act_bits - 1)
    assert worst <= 2 ** (cfg.column_sum_bits - 1) - 1
    Fragment.get(dut, None)  # elaborates; an unelaborated component warns when collected


def test_submacro_row_write_takes_effect_at_the_clock_edge():
    cfg = CONFIGS["tiny"]
    dut = SubMacro(config=cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        for r in range(cfg.rows):
            ctx.set(dut.act[r][0], 1 if r == 2 else 0)
        ctx.set(dut.we, 1)
        ctx.set(dut.waddr, 2)
        ctx.set(dut.wdata.as_value(), isa.pack_weight_rows(cfg, [[5, -6, 7, -8]])[0])
        seen.append([ctx.get(dut.sums[c]) for c in range(cfg.cols)])  # before the edge
        await ctx.tick()
        ctx.set(dut.we, 0)
        ctx.set(dut.wdata.as_value(), isa.pack_weight_rows(cfg, [[1, 1, 1, 1]])[0])
        seen.append([ctx.get(dut.sums[c]) for c in range(cfg.cols)])  # after it
        await ctx.tick()
        seen.append([ctx.get(dut.sums[c]) for c in range(cfg.cols)])  # we low: unchanged

    sim.add_testbench(bench)
    sim.run()
    assert seen == [[0, 0, 0, 0], [5, -6, 7, -8], [5, -6, 7, -8]]
