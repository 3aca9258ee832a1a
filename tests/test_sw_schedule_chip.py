"""The chip scheduler (sw/schedule/chip.py): bit-exact chip traces on the chip golden model,
placement by capacity, and figures equal to the cycle-stepped reference model."""

import numpy as np
import pytest
from conftest import chip_layers
from sparsecim.hw.config import ChipConfig, preset
from sparsecim.hw.isa import Command, Opcode, decode_chip
from sparsecim.sw.chip_golden import run_chip_trace
from sparsecim.sw.chip_timing import step_chip
from sparsecim.sw.reference import matmul_reference
from sparsecim.sw.schedule import monarch_reference
from sparsecim.sw.schedule.chip import (
    ChipLayer,
    chip_layer_figures,
    chip_ops,
    chip_words,
    layer_candidates,
    load_phase,
    model_figures,
    model_layers,
    place_layer,
    place_model,
    schedule_chip,
    schedule_monarch_chip,
)

TINY = preset("tiny")


def tiny_chip(macros, weight_bw=4, queue=4):
    return ChipConfig(macro=TINY, macros=macros, clock_mhz=100.0, weight_bw=weight_bw,
                      offchip_bytes=1 << 20, buffer_bytes=4096, queue=queue)


def run_layers(chip, shapes, tokens, seed=0, **kwargs):
    """Schedule ``shapes`` ((k, n, pattern) each) with random operands, run the trace on the
    chip golden model and compare every layer's output with numpy."""
    layers, xs, ws = chip_layers(TINY, shapes, tokens, seed)
    schedule = schedule_chip(chip, layers, xs, ws, **kwargs)
    schedule.trace.validate()
    run = run_chip_trace(schedule.trace)
    assert run.counters is not None, run.error
    outs = schedule.assemble(run.results)
    for x, w, out in zip(xs, ws, outs, strict=True):
        np.testing.assert_array_equal(out, matmul_reference(x, w))
    return schedule, run


# Shapes on tiny (dense tiles 16 inputs × 4 outputs; 2:4 tiles 32 inputs; 1:8 tiles 128).
MIXED = [(50, 9, (2, 4)), (13, 6, (1, 1)), (70, 5, (1, 8))]


@pytest.mark.parametrize("macros", [1, 2, 4, 8])
@pytest.mark.parametrize("shapes, tokens", [
    ([(20, 10, (1, 1))], 1),             # dense, decode
    ([(20, 10, (1, 1))], 5),             # dense, prefill
    ([(40, 7, (2, 4))], 3),              # 2:4
    ([(150, 6, (1, 8))], 2),             # 1:8, two K tiles
    (MIXED, 3),                          # mixed patterns in one trace
    ([(24, 5, (1, 2)), (40, 3, (1, 4)), (33, 6, (4, 8)), (70, 4, (2, 8))], 2),   # the others
    ([(200, 3, (1, 1))], 19),            # deep K (13 K tiles), chunks
])
def test_bit_exact(macros, shapes, tokens):
    chip = tiny_chip(macros)
    schedule, run = run_layers(chip, shapes, tokens)
    placements = schedule.plan.placements
    assert all(p.base + p.macros <= macros for p in placements)
    # A layer fits iff its tiles fit the macros left to it.
    if macros == 1:
        assert not any(p.resident for p in placements)


def test_schedule_protocol():
    from sparsecim.sw.schedule import Schedule
    schedule, _ = run_layers(tiny_chip(2), [(20, 10, (1, 1))], 2)
    assert isinstance(schedule, Schedule)
    with pytest.raises(ValueError, match="results must have shape"):
        schedule.assemble(np.zeros((1, 4)))


def test_resident_and_streamed_in_one_trace():
    # 8 macros: the small dense layer (2 tiles) and 1:8 layer (2 tiles) are resident, the
    # 2:4 layer (6 tiles) streams on the pool of the 4 left.
    chip = tiny_chip(8)
    schedule, run = run_layers(chip, MIXED, 3)
    resident = [p.resident for p in schedule.plan.placements]
    assert resident == [False, True, True]
    bases = sorted((p.base, p.macros) for p in schedule.plan.placements if p.resident)
    assert bases == [(0, 2), (2, 2)]
    assert schedule.plan.pool == (4, 4)


def test_resident_loads_weights_once():
    chip = tiny_chip(8)
    layer_rows = None
    for tokens in (1, 8, 20):      # 20 tokens: three chunks of acc_depth 8 at most
        schedule, run = run_layers(chip, [(20, 10, (1, 1))], tokens)
        (placement,) = schedule.plan.placements
        assert placement.resident
        loads = [op for op in schedule.ops if op[2].opcode == Opcode.LOAD_W]
        rows = sum(op[2].count for op in loads)
        # Every tile once: 2 K tiles (16 + 4 inputs) × 3 N tiles.
        assert rows == 3 * (16 + 4)
        assert run.counters["w_load"] == rows
        layer_rows = layer_rows or rows
        assert rows == layer_rows
    # Streamed on fewer macros, the weights come again every chunk.
    chip = tiny_chip(2)
    schedule, run = run_layers(chip, [(20, 10, (1, 1))], 20)
    (placement,) = schedule.plan.placements
    assert not placement.resident
    chunks = -(-20 // placement.chunk)
    assert run.counters["w_load"] == chunks * layer_rows


def test_resident_token_phase_without_loads():
    # load=False: the token phase alone, as the figures price it; the load phase alone
    # followed by the token phase is the full schedule, command for command.
    chip = tiny_chip(8)
    layer = ChipLayer("l", 20, 10)
    plan = place_model(chip, [layer], 4)
    (placement,) = plan.placements
    assert placement.resident
    tokens_only, _ = chip_ops(placement, 4, load=False)
    loads_only, _ = chip_ops(placement, 4, compute=False)
    both, _ = chip_ops(placement, 4)
    assert not any(cmd.opcode == Opcode.LOAD_W for _, _, cmd, _ in tokens_only)
    assert all(cmd.opcode == Opcode.LOAD_W for _, _, cmd, _ in loads_only)
    assert loads_only + tokens_only == both


SMALL = [(5, 4, (1, 1)), (3, 8, (1, 1)), (8, 4, (1, 1)), (4, 6, (1, 1)), (40, 4, (1, 1))]


@pytest.mark.parametrize("macros, shapes", [(2, MIXED), (4, MIXED), (8, MIXED), (8, SMALL)])
def test_step_model_agrees(macros, shapes):
    # Every chip counter and every macro counter of the scheduled traces: the event model the
    # figures use equals the cycle-stepped reference simulator.
    chip = tiny_chip(macros)
    schedule, run = run_layers(chip, shapes, 3)
    stepped = run_chip_trace(schedule.trace, timing="step")
    assert stepped.counters == run.counters
    assert stepped.macro_counters == run.macro_counters
    np.testing.assert_array_equal(stepped.results, run.results)


@pytest.mark.parametrize("macros, weight_bw, k, n, pattern, streamed", [
    (4, 4, 64, 16, (1, 1), True),
    (4, 64, 64, 16, (1, 1), True),
    (4, 1, 40, 9, (2, 4), True),
    (8, 4, 20, 10, (1, 1), False),
    (8, 3, 150, 6, (1, 8), False),
])
def test_figures_equal_step_model(macros, weight_bw, k, n, pattern, streamed):
    chip = tiny_chip(macros, weight_bw)
    layer = ChipLayer("l", k, n, pattern)
    figures = chip_layer_figures(chip, layer, prefill_tokens=12, streamed=streamed)
    end = (0, 1, Command(Opcode.END), None)
    runs = [(figures.decode_placement, 1, figures.decode),
            (figures.placement, 12, figures.prefill)]
    for placement, tokens, counters in runs:
        ops = chip_ops(placement, tokens, load=False)[0] + [end]
        stepped = step_chip(chip, chip_words(chip, ops))
        assert {name: counters[name] for name in stepped.counters} == stepped.counters
        summed = {name: sum(m[name] for m in stepped.macro_counters)
                  for name in stepped.macro_counters[0]}
        assert counters["macro"] == summed
    assert figures.resident == (not streamed)
    for counters, bound in ((figures.decode, figures.bound),
                            (figures.prefill, figures.prefill_bound)):
        busy = counters["w_load"] + counters["bw_stall"]
        assert bound == ("bandwidth" if 2 * busy > counters["total"] else "compute")
    if figures.resident:
        ops = chip_ops(figures.placement, 1, load=True, compute=False)[0] + [end]
        stepped = step_chip(chip, chip_words(chip, ops))
        assert figures.load_cycles == stepped.counters["total"]
        assert figures.load_bytes == stepped.counters["w_load"] * chip.weight_row_bytes
        assert figures.weight_bytes_per_token == 0
    else:
        assert figures.weight_bytes_per_token == \
            figures.decode["w_load"] * chip.weight_row_bytes
        assert figures.load_cycles == 0
    # The chosen placement is the fastest candidate.
    for placement in layer_candidates(chip, layer, 0, macros, 12, streamed=streamed):
        ops = chip_ops(placement, 12, load=False)[0] + [end]
        assert step_chip(chip, chip_words(chip, ops)).counters["total"] >= \
            figures.prefill["total"]


def test_streamed_bound_follows_bandwidth():
    # One layer streamed on 2 macros, 8 tokens a chunk. At 1 byte a cycle (a tiny weight row
    # is 6 bytes) the weight port sets the pace; at 64 bytes a cycle rows move one a cycle
    # and the macros' own work does.
    layer = ChipLayer("l", 32, 8)
    slow = chip_layer_figures(tiny_chip(2, 1), layer, prefill_tokens=8, streamed=True)
    fast = chip_layer_figures(tiny_chip(2, 64), layer, prefill_tokens=8, streamed=True)
    assert slow.prefill_bound == "bandwidth" and slow.prefill["bw_stall"] > 0
    assert fast.prefill_bound == "compute" and fast.prefill["bw_stall"] == 0
    assert fast.prefill["total"] < slow.prefill["total"]
    # The same weight traffic either way.
    assert fast.prefill["w_load"] == slow.prefill["w_load"]


def test_streamed_overlaps_load_and_compute():
    # Streamed on 4 macros, loads into some macros overlap compute and reads in others: the
    # chip takes well under the macros' busy cycles added up (what one macro doing every tile
    # in turn would take), and the weight port is busy most of the time. What is left is the
    # group's READ, which holds all its macros for a chunk's beats once per output tile.
    chip = tiny_chip(4, 64)
    layer = ChipLayer("l", 64, 16)
    figures = chip_layer_figures(chip, layer, prefill_tokens=8, streamed=True)
    counters = figures.prefill
    macro = counters["macro"]
    serial = macro["load"] + macro["compute"] + macro["read"] + macro["fetch"]
    assert counters["total"] < 0.6 * serial
    assert counters["w_load"] > 0.55 * counters["total"]


def test_model_plan_by_capacity():
    chip = tiny_chip(8)
    layers = [ChipLayer("big", 64, 16), ChipLayer("small", 16, 4), ChipLayer("mid", 32, 8)]
    plan = place_model(chip, layers, 1)
    by_name = {p.layer.name: p for p in plan.placements}
    # 16 + 1 + 4 tiles: the pool keeps 2 macros, small (1) and mid (4) fit in the 6 others.
    assert by_name["small"].resident and by_name["mid"].resident
    assert not by_name["big"].resident
    assert plan.pool == (5, 3)
    assert by_name["big"].base == 5
    used = sorted((p.base, p.base + p.macros) for p in plan.placements if p.resident)
    assert used == [(0, 1), (1, 5)]
    figures = model_figures(chip, layers, prefill_tokens=4, plan=plan)
    assert [f.layer.name for f in figures] == ["big", "small", "mid"]
    # The whole load phase: every resident row once, serial on the weight port.
    load = load_phase(plan)
    assert load["w_load"] == sum(f.load["w_load"] for f in figures if f.resident)
    assert load["total"] >= max(f.load_cycles for f in figures if f.resident)
    assert [f.resident for f in figures] == [False, True, True]
    # Layers of one shape are priced once and get equal figures under their own names.
    twins = [ChipLayer("a", 32, 8), ChipLayer("b", 32, 8)]
    fa, fb = model_figures(tiny_chip(2), twins, prefill_tokens=4)
    assert (fa.layer.name, fb.layer.name) == ("a", "b")
    assert fa.decode == fb.decode and fa.prefill == fb.prefill


def test_everything_fits_no_pool():
    plan = place_model(tiny_chip(8), [ChipLayer("a", 16, 8), ChipLayer("b", 16, 4)], 1)
    assert all(p.resident for p in plan.placements)
    assert plan.pool == (8, 0)


def test_group_reads_sum_on_chip():
    # A resident layer with 3 K tiles: each output tile's 3 slices on 3 contiguous macros,
    # one READ of span 3; the activations broadcast once to the whole layer.
    chip = tiny_chip(8)
    schedule, run = run_layers(chip, [(40, 8, (1, 1))], 2)
    (placement,) = schedule.plan.placements
    assert (placement.group, placement.groups, placement.acts) == (3, 2, "broadcast")
    reads = [(t, s) for t, s, cmd, _ in schedule.ops if cmd.opcode == Opcode.READ]
    assert reads == [(0, 3), (3, 3)]
    loads_a = [(t, s) for t, s, cmd, _ in schedule.ops if cmd.opcode == Opcode.LOAD_A]
    assert loads_a == [(0, 6)]
    assert run.counters["read"] == 2 * 2         # 2 output tiles × 2 tokens, not 12
    words = schedule.trace.commands
    assert decode_chip(chip, words[-1])[1] == 1


@pytest.mark.parametrize("macros, b, s, tokens", [(4, 4, 4, 3), (8, 2, 8, 2), (2, 4, 4, 1)])
def test_monarch_split_over_macros(macros, b, s, tokens):
    chip = tiny_chip(macros)
    rng = np.random.default_rng(macros)
    x = rng.integers(-128, 128, (tokens, b * s))
    r = rng.integers(-128, 128, (b, s, s))
    lb = rng.integers(-128, 128, (s, s, b))
    shift = 7
    monarch = schedule_monarch_chip(chip, x, r, lb, shift)
    monarch.trace.validate()
    run = run_chip_trace(monarch.trace)
    u, z = monarch.assemble(run.results)
    np.testing.assert_array_equal(u, np.einsum("ico,tio->tic", r, x.reshape(tokens, b, s)))
    np.testing.assert_array_equal(z, monarch_reference(TINY, x, r, lb, shift))
    # The blocks are spread over several macros, and small blocks share macros (row slots).
    placements = monarch.schedule.plan.placements
    used = {m for p in placements for m in range(p.base, p.base + p.macros)}
    assert len(used) >= 2
    assert len(placements) == b + s         # one block a layer on tiny (4 columns)
    assert len(used) < len(placements)


def test_small_layers_share_macros():
    # Dense layers of at most half a macro's rows pack into the same macros at different
    # rows; their passes still see only their own weights. 9 tiles on 8 macros, 3 of them
    # shared.
    chip = tiny_chip(8)
    schedule, run = run_layers(chip, SMALL, 3)
    placements = schedule.plan.placements
    assert all(p.resident for p in placements)
    slots = sorted((p.base, p.row0, p.layer.k) for p in placements if p.layer.k <= 8)
    # Each macro's small layers sit on disjoint rows within its 16.
    for macro in range(chip.macros):
        rows = sorted((r0, r0 + k) for base, r0, k in slots if base == macro)
        assert all(a[1] <= b[0] for a, b in zip(rows, rows[1:], strict=False))
        assert all(end <= TINY.pass_inputs() for _, end in rows)
    assert [(p.base, p.row0) for p in placements] == [(0, 0), (1, 0), (0, 5), (1, 3), (3, 0)]
    assert schedule.plan.placements[-1].row0 == 0          # 40 inputs: not packable


@pytest.mark.parametrize("call, message", [
    (lambda: ChipLayer("l", 0, 4), "k must be a positive integer, not 0"),
    (lambda: ChipLayer("l", 4, 4, (3, 4)).mapping(TINY), "pattern 3:4 is not supported"),
    (lambda: place_layer(tiny_chip(4), ChipLayer("l", 8, 4), 3, 2, 1), "must lie on the chip"),
    (lambda: place_layer(tiny_chip(4), ChipLayer("l", 8, 4), 0, 2, 1, acts="x"),
     "acts must be one of"),
    (lambda: place_model(tiny_chip(4), [], 1), "layers must be a non-empty sequence"),
    (lambda: schedule_chip(tiny_chip(4), [ChipLayer("l", 8, 4)], [np.zeros((1, 8), dtype=int)],
                           [np.zeros((8, 5), dtype=int)]), "layer l: w must be 8 × 4"),
    (lambda: schedule_chip(tiny_chip(4), [ChipLayer("l", 8, 4)], [np.full((1, 8), 300)],
                           [np.zeros((8, 4), dtype=int)]), "layer l: x"),
    (lambda: schedule_chip(tiny_chip(4), [ChipLayer("l", 8, 4, (2, 4))],
                           [np.zeros((1, 8), dtype=int)], [np.ones((8, 4), dtype=int)]),
     "layer l"),
])
def test_errors_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_bit_exact_on_edge():
    # The flexcim macro (3 activation beats a dense entry, 32 columns) on the edge preset:
    # resident and streamed layers, a deep streamed layer in chunks of acc_depth.
    from sparsecim.hw.config import CHIP_PRESETS
    chip = CHIP_PRESETS["edge"]
    cfg = chip.macro
    for shapes, tokens in (([(300, 70, (1, 1)), (600, 40, (2, 4)), (1100, 33, (1, 8))], 3),
                           ([(2000, 200, (1, 1))], 70)):
        layers, xs, ws = chip_layers(cfg, shapes, tokens)
        schedule = schedule_chip(chip, layers, xs, ws)
        schedule.trace.validate()
        run = run_chip_trace(schedule.trace)
        for x, w, out in zip(xs, ws, schedule.assemble(run.results), strict=True):
            np.testing.assert_array_equal(out, matmul_reference(x, w))
        assert any(p.resident for p in schedule.plan.placements) == (len(shapes) > 1)


def check_model_figures(chip_name, model, patterns):
    """Decode cycles of a model in each pattern against dense, where every layer streams
    and is bandwidth-bound: the ratio is the byte ratio, and with it M/N (a row carries
    weight and metadata bits for every kept weight, dense or not)."""
    from sparsecim.hw.config import CHIP_PRESETS
    chip = CHIP_PRESETS[chip_name]
    layers = model_layers(model)
    dense = model_figures(chip, layers, prefill_tokens=16)
    assert len(dense) == len(layers)
    assert all(not f.resident and f.bound == "bandwidth" for f in dense)
    for n, m in patterns:
        sparse = model_figures(chip, model_layers(model, (n, m)), prefill_tokens=16)
        bytes_ratio = (sum(f.weight_bytes_per_token for f in dense)
                       / sum(f.weight_bytes_per_token for f in sparse))
        assert bytes_ratio == pytest.approx(m / n, rel=0.02)
        cycles_ratio = (sum(f.decode_cycles for f in dense)
                        / sum(f.decode_cycles for f in sparse))
        assert cycles_ratio == pytest.approx(bytes_ratio, rel=0.01)


def test_model_figures_smollm():
    check_model_figures("edge", "smollm2-135m", [(2, 4)])


@pytest.mark.slow
def test_model_figures_llama():
    # Every linear of LLaMA-2-7B (224, three distinct shapes) on the edge chip.
    check_model_figures("edge", "llama-2-7b", [(2, 4)])
