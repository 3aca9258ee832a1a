"""MergeTree and the balanced adder tree: sums equal numpy, exact widths, tree shape."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment, Shape, signed
from amaranth.sim import Simulator
from sparsecim.hw.config import MacroConfig, ceil_log2, preset
from sparsecim.hw.merge import MergeTree, balanced_sum, tree_levels

CONFIGS = {
    "tiny-p4": preset("tiny"),
    "p1": MacroConfig(rows=2, cols=3, submacros=1, act_depth=1, acc_depth=1),
    "p8": MacroConfig(rows=3, cols=2, submacros=8, act_depth=1, acc_depth=1),
}


def run_merge(cfg, inputs):
    """inputs: (n, submacros, cols) column sums; returns (n, cols) merged sums."""
    dut = MergeTree(config=cfg)
    sim = Simulator(dut)
    got = []

    async def bench(ctx):
        for sums in inputs:
            for s in range(cfg.submacros):
                for c in range(cfg.cols):
                    ctx.set(dut.sums[s][c], int(sums[s, c]))
            got.append([ctx.get(dut.merged[c]) for c in range(cfg.cols)])

    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.int64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_merge_sums_all_submacros_exactly_including_extremes(name):
    cfg = CONFIGS[name]
    lo, hi = -(2 ** (cfg.column_sum_bits - 1)), 2 ** (cfg.column_sum_bits - 1) - 1
    shape = (cfg.submacros, cfg.cols)
    rng = np.random.default_rng(5)
    inputs = [np.full(shape, lo), np.full(shape, hi)]
    inputs += [rng.integers(lo, hi + 1, size=shape) for _ in range(20)]
    expected = np.array([sums.sum(axis=0) for sums in inputs], dtype=np.int64)
    np.testing.assert_array_equal(run_merge(cfg, inputs), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_merge_widths_are_column_sum_bits_in_and_pass_sum_bits_out(name):
    cfg = CONFIGS[name]
    dut = MergeTree(config=cfg)
    sums, merged = dut.sums.shape(), dut.merged.shape()
    assert sums.length == cfg.submacros and sums.elem_shape.length == cfg.cols
    assert Shape.cast(sums.elem_shape.elem_shape) == signed(cfg.column_sum_bits)
    assert merged.length == cfg.cols
    assert Shape.cast(merged.elem_shape) == signed(cfg.pass_sum_bits)
    Fragment.get(dut, None)  # elaborates; an unelaborated component warns when collected


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 16])
def test_tree_levels_are_balanced_and_level_k_sums_aligned_groups(count):
    terms = [10 ** i for i in range(count)]  # digits show which terms each sum holds
    levels = tree_levels(terms)
    assert len(levels) - 1 == ceil_log2(count)
    assert levels[-1] == [sum(terms)] and balanced_sum(terms) == sum(terms)
    for k, level in enumerate(levels):
        group = 2 ** k
        assert level == [sum(terms[i:i + group]) for i in range(0, count, group)]


def test_tree_levels_rejects_no_terms():
    with pytest.raises(ValueError, match=r"^terms must be a non-empty sequence, not \[\]$"):
        tree_levels([])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_merge_groups_follow_the_split(name):
    """split s: 2**s groups of P / 2**s aligned sub-macros, the rest of the outputs 0."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(9)
    sums = rng.integers(-1000, 1000, size=(cfg.submacros, cfg.cols))
    dut = MergeTree(config=cfg)
    sim = Simulator(dut)
    got = {}

    async def bench(ctx):
        for s in range(cfg.submacros):
            for c in range(cfg.cols):
                ctx.set(dut.sums[s][c], int(sums[s, c]))
        for split in range(cfg.max_split + 1):
            ctx.set(dut.split, split)
            got[split] = [[ctx.get(dut.groups[j][c]) for c in range(cfg.cols)]
                          for j in range(cfg.submacros)]
            assert [ctx.get(dut.merged[c]) for c in range(cfg.cols)] == \
                list(sums.sum(axis=0))

    sim.add_testbench(bench)
    sim.run()
    assert cfg.max_split == ceil_log2(cfg.submacros)
    for split, groups in got.items():
        size = cfg.submacros >> split
        expected = np.zeros_like(sums)
        for j in range(2 ** split):
            expected[j] = sums[j * size:(j + 1) * size].sum(axis=0)
        np.testing.assert_array_equal(groups, expected)
