"""Macro in Amaranth simulation: passes against numpy, accumulate vs clear, wrap, timing."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from sparsecim.hw import isa
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.macro import Macro

CONFIGS = {
    "tiny": preset("tiny"),
    # rows not a power of two, act_bits not dividing a beat, a partly used last beat, a group
    # width that is not a power of two (positions 5..7 exist and select 0).
    "odd": MacroConfig(rows=3, cols=3, submacros=2, act_depth=5, acc_depth=3, act_bits=5,
                       patterns=((1, 2), (2, 3), (1, 5))),
}


def wrap(values, bits):
    """Two's complement wrap to ``bits`` signed bits, in Python integers."""
    return np.array([((int(v) + 2 ** (bits - 1)) % 2 ** bits) - 2 ** (bits - 1)
                     for v in np.ravel(values)], dtype=object).reshape(np.shape(values))


def signed_random(rng, shape, bits):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(lo, hi + 1, size=shape)
    values.reshape(-1)[::4] = lo
    return values


def dense_operands(cfg, seed: int, entries: int = 2):
    """Random weights ``(weight_rows, cols)`` and ``entries`` dense activation entries."""
    rng = np.random.default_rng(seed)
    weights = signed_random(rng, (cfg.weight_rows, cfg.cols), cfg.weight_bits)
    return weights, signed_random(rng, (entries, cfg.reduction), cfg.act_bits)


class Driver:
    """Drives ``Macro.ctrl`` the way the ISA describes each operation."""

    def __init__(self, cfg, dut, rng):
        self.cfg, self.ctrl, self.rng = cfg, dut.ctrl, rng

    async def load_weights(self, ctx, weights, meta=None):
        """Global weight rows, one per cycle. Without ``meta``, random metadata: dense mode
        must ignore it."""
        cfg = self.cfg
        if meta is None:
            meta = self.rng.integers(0, 2 ** cfg.meta_bits, size=np.shape(weights))
        for g, row in enumerate(weights):
            ctx.set(self.ctrl.w_en, 1)
            ctx.set(self.ctrl.w_row, g)
            ctx.set(self.ctrl.w_data.as_value(), isa.pack_weight_rows(cfg, [row], [meta[g]])[0])
            await ctx.tick()
        ctx.set(self.ctrl.w_en, 0)

    async def load_entry(self, ctx, addr, entry, pattern=(1, 1)):
        """Element j goes to lane j % act_lanes of beat j // act_lanes; lanes past the
        entry's end carry random junk that must be ignored."""
        cfg = self.cfg
        beats = cfg.act_beats(*pattern)
        lanes = np.concatenate([entry, signed_random(
            self.rng, beats * cfg.act_lanes - len(entry), cfg.act_bits)])
        layout = isa.act_beat_layout(cfg)
        for b in range(beats):
            beat = lanes[b * cfg.act_lanes:(b + 1) * cfg.act_lanes]
            ctx.set(self.ctrl.a_en, 1)
            ctx.set(self.ctrl.a_addr, addr)
            ctx.set(self.ctrl.a_beat, b)
            ctx.set(self.ctrl.a_data.as_value(), isa.pack_beats(layout, [beat])[0])
            await ctx.tick()
        ctx.set(self.ctrl.a_en, 0)

    async def load(self, ctx, weights, entries, pattern=(1, 1), meta=None):
        """The weights, then ``entries`` into activation entries 0, 1, ..."""
        await self.load_weights(ctx, weights, meta)
        for addr, entry in enumerate(entries):
            await self.load_entry(ctx, addr, entry, pattern)

    async def passes(self, ctx, pairs, accumulate):
        """Issue one pass per cycle, then wait until its writes are done (busy protocol)."""
        for act_addr, acc_addr in pairs:
            ctx.set(self.ctrl.issue, 1)
            ctx.set(self.ctrl.act_addr, act_addr)
            ctx.set(self.ctrl.acc_addr, acc_addr)
            ctx.set(self.ctrl.accumulate, accumulate)
            await ctx.tick()
        ctx.set(self.ctrl.issue, 0)
        while True:
            busy = ctx.get(self.ctrl.busy)
            await ctx.tick()
            if not busy:
                return

    async def read(self, ctx, addr):
        ctx.set(self.ctrl.rd_en, 1)
        ctx.set(self.ctrl.rd_addr, addr)
        await ctx.tick()
        ctx.set(self.ctrl.rd_en, 0)
        return [ctx.get(self.ctrl.rd_data[c]) for c in range(self.cfg.cols)]


def simulate(cfg, body, seed=0):
    dut = Macro(config=cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    driver = Driver(cfg, dut, np.random.default_rng(seed))
    out = {}

    async def bench(ctx):
        out["value"] = await body(ctx, driver)

    sim.add_testbench(bench)
    sim.run()
    return out["value"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_macro_back_to_back_passes_then_accumulate_equal_numpy(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    weights = signed_random(rng, (cfg.weight_rows, cfg.cols), cfg.weight_bits)
    n = min(cfg.act_depth // 2, cfg.acc_depth)
    first = signed_random(rng, (n, cfg.reduction), cfg.act_bits)
    second = signed_random(rng, (n, cfg.reduction), cfg.act_bits)
    acc_base = cfg.acc_depth - n

    async def body(ctx, drv):
        await drv.load_weights(ctx, weights)
        for i in range(n):
            await drv.load_entry(ctx, i, first[i])
            await drv.load_entry(ctx, n + i, second[i])
        await drv.passes(ctx, [(i, acc_base + i) for i in range(n)], accumulate=0)
        cleared = [await drv.read(ctx, acc_base + i) for i in range(n)]
        await drv.passes(ctx, [(n + i, acc_base + i) for i in range(n)], accumulate=1)
        summed = [await drv.read(ctx, acc_base + i) for i in range(n)]
        return np.array(cleared), np.array(summed)

    cleared, summed = simulate(cfg, body)
    np.testing.assert_array_equal(cleared, first @ weights)
    np.testing.assert_array_equal(summed, first @ weights + second @ weights)


def nm_reference(cfg, pattern, weights, meta, entry):
    """Column sums of one pass in ``pattern``, cell by cell as the ISA reference words it:
    sub-macro s, row r, column c with position p multiplies element ((s//n)·rows + r)·m + p,
    or 0 if p >= m."""
    n, m = pattern
    out = [0] * cfg.cols
    for s in range(cfg.submacros):
        for r in range(cfg.rows):
            g = s * cfg.rows + r
            for c in range(cfg.cols):
                p = int(meta[g][c])
                if p < m:
                    out[c] += int(weights[g][c]) * int(entry[((s // n) * cfg.rows + r) * m + p])
    return out


@pytest.mark.parametrize("name, pattern", [
    (name, pattern) for name, cfg in CONFIGS.items() for pattern in cfg.patterns])
def test_macro_nm_passes_select_each_cells_activation(name, pattern):
    """Random weights and random metadata (positions >= m included), several entries:
    every cell multiplies the activation its metadata picks from its cluster row's group."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(hash(pattern) % 1000)
    mode = cfg.modes.index(pattern)
    weights = signed_random(rng, (cfg.weight_rows, cfg.cols), cfg.weight_bits)
    meta = rng.integers(0, 2 ** cfg.meta_bits, size=weights.shape)
    count = min(cfg.act_depth, cfg.acc_depth, 3)
    entries = signed_random(rng, (count, cfg.pass_inputs(*pattern)), cfg.act_bits)

    async def body(ctx, drv):
        await drv.load(ctx, weights, entries, pattern, meta)
        ctx.set(drv.ctrl.mode, mode)
        await drv.passes(ctx, [(i, i) for i in range(count)], accumulate=0)
        return [await drv.read(ctx, i) for i in range(count)]

    got = simulate(cfg, body)
    assert got == [nm_reference(cfg, pattern, weights, meta, e) for e in entries]


def test_macro_clear_overwrites_an_accumulated_entry():
    cfg = CONFIGS["tiny"]
    weights, acts = dense_operands(cfg, 8)

    async def body(ctx, drv):
        await drv.load(ctx, weights, acts)
        await drv.passes(ctx, [(0, 4)], accumulate=1)
        await drv.passes(ctx, [(0, 4)], accumulate=1)
        twice = await drv.read(ctx, 4)
        await drv.passes(ctx, [(1, 4)], accumulate=0)
        return twice, await drv.read(ctx, 4)

    twice, cleared = simulate(cfg, body)
    assert twice == list(2 * (acts[0] @ weights))
    assert cleared == list(acts[1] @ weights)


def test_macro_accumulator_wraps_at_acc_bits():
    # The narrowest legal accumulator: exactly the pass sum width.
    base = preset("tiny")
    cfg = MacroConfig(rows=base.rows, cols=base.cols, submacros=base.submacros,
                      act_depth=base.act_depth, acc_depth=base.acc_depth,
                      acc_bits=base.pass_sum_bits, patterns=base.patterns)
    lo = -(2 ** (cfg.weight_bits - 1))
    weights = np.full((cfg.weight_rows, cfg.cols), lo)
    weights[:, 1] = -lo - 1  # a negative column too
    acts = np.full(cfg.reduction, -(2 ** (cfg.act_bits - 1)))
    rounds = 5

    async def body(ctx, drv):
        await drv.load_weights(ctx, weights)
        await drv.load_entry(ctx, 0, acts)
        seen = []
        for r in range(rounds):
            await drv.passes(ctx, [(0, 0)], accumulate=int(r > 0))
            seen.append(await drv.read(ctx, 0))
        return seen

    seen = simulate(cfg, body)
    pass_sum = acts @ weights
    expected = [list(wrap((r + 1) * pass_sum, cfg.acc_bits)) for r in range(rounds)]
    assert seen == expected
    assert rounds * abs(pass_sum).max() > 2 ** (cfg.acc_bits - 1)  # so the sums do wrap


def test_macro_pass_writes_two_cycles_after_issue_and_busy_covers_it():
    """Issue at t: busy is high in t and t+1 only; a read-out in t+2 still sees the old
    entry (the write is at that edge), one in t+3 the new one."""
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(2)
    weights = signed_random(rng, (cfg.weight_rows, cfg.cols), cfg.weight_bits)
    acts = signed_random(rng, cfg.reduction, cfg.act_bits)

    async def body(ctx, drv):
        await drv.load_weights(ctx, weights)
        await drv.load_entry(ctx, 3, acts)
        ctrl = drv.ctrl
        busy = []
        ctx.set(ctrl.issue, 1)
        ctx.set(ctrl.act_addr, 3)
        ctx.set(ctrl.acc_addr, 6)
        ctx.set(ctrl.accumulate, 0)
        busy.append(ctx.get(ctrl.busy))  # t
        await ctx.tick()
        ctx.set(ctrl.issue, 0)
        busy.append(ctx.get(ctrl.busy))  # t+1
        await ctx.tick()
        busy.append(ctx.get(ctrl.busy))  # t+2
        old = await drv.read(ctx, 6)     # read-out in t+2
        busy.append(ctx.get(ctrl.busy))  # t+3
        new = await drv.read(ctx, 6)     # read-out in t+3
        return busy, old, new

    busy, old, new = simulate(cfg, body)
    assert busy == [1, 1, 0, 0]
    assert old == [0] * cfg.cols
    assert new == list(acts @ weights)


def test_macro_readout_holds_data_while_rd_en_is_low():
    cfg = CONFIGS["tiny"]
    weights, acts = dense_operands(cfg, 4)

    async def body(ctx, drv):
        await drv.load(ctx, weights, acts)
        await drv.passes(ctx, [(0, 0), (1, 1)], accumulate=0)
        first = await drv.read(ctx, 0)
        ctx.set(drv.ctrl.rd_addr, 1)  # address changes, rd_en low
        held = []
        for _ in range(3):
            await ctx.tick()
            held.append([ctx.get(drv.ctrl.rd_data[c]) for c in range(cfg.cols)])
        return first, held

    first, held = simulate(cfg, body)
    assert first == list(acts[0] @ weights)
    assert held == [first] * 3
