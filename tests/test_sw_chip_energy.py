"""Chip energy and area (sw/chip_energy.py): the macros' events from the chip commands equal
their counters and their traces, a hand-counted program priced rule by rule, the global buffer's
per-bit energies, the chip area, and whole-model figures from chip-sched's."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import chip_layers
from sparsecim.hw.chip_trace import ChipTrace
from sparsecim.hw.config import ChipConfig, chip_preset, preset
from sparsecim.hw.isa import Command, Mode, Opcode, chip_command_layout, command_layout
from sparsecim.sw.area import CellCounts
from sparsecim.sw.chip_energy import (
    CHIP_ENERGY_COMPONENTS,
    buffer_energy_per_bit,
    chip_area,
    chip_logic_cells,
    chip_macro_events,
    evaluate_chip,
    layer_chip_energy,
    model_chip_energy,
)
from sparsecim.sw.chip_golden import macro_traces, run_chip_trace
from sparsecim.sw.chip_timing import chip_counters
from sparsecim.sw.energy import cell_area_um2, load_tech
from sparsecim.sw.events import count_events, derived_from_counters
from sparsecim.sw.schedule.chip import (
    ChipLayer,
    chip_layer_figures,
    chip_ops,
    chip_words,
    model_figures,
    model_layers,
    schedule_chip,
)

TINY = preset("tiny")
TECH = load_tech("22nm")
END = (0, 1, Command(Opcode.END), None)


def tiny_chip(macros=4, weight_bw=4, buffer_bytes=4096):
    return ChipConfig(macro=TINY, macros=macros, clock_mhz=100.0, weight_bw=weight_bw,
                      offchip_bytes=1 << 20, buffer_bytes=buffer_bytes, queue=4)


# A made-up macro area (µm²) for the tests that price wires: one cell kind, so its area is
# known by hand.
FAKE_COUNTS = CellCounts({"cell array": {"$_NAND_": 10000}}, {})
FAKE_MACRO_UM2 = 10000 * TECH.values["area_um2"]["nand2"]


def summed(counters_list):
    out = dict.fromkeys(counters_list[0], 0)
    for counters in counters_list:
        for name, value in counters.items():
            out[name] += value
    return out


def _derived_fields(ev):
    return {name: getattr(ev, name) for name in (
        "commands", "result_beats", "move_entries", "compute_commands", "passes", "w_rows",
        "a_beats", "macs",
        "weight_bits_written", "act_bits_read", "tree_adds", "dist_words", "cell_selects")}


@pytest.mark.parametrize("macros", [1, 2, 4])
@pytest.mark.parametrize("k, n, pattern, tokens", [
    (20, 10, (1, 1), 1), (40, 7, (2, 4), 3), (150, 6, (1, 8), 2), (200, 3, (1, 1), 19)])
def test_events_equal_the_macros_counters(macros, k, n, pattern, tokens):
    # The walk of the chip commands gives, summed over the macros, exactly what each macro's
    # counters give (sw.events.derived_from_counters), on the chip event model's counters.
    chip = tiny_chip(macros)
    fig = chip_layer_figures(chip, ChipLayer("l", k, n, pattern), prefill_tokens=tokens)
    for placement, count, counters in ((fig.decode_placement, 1, fig.decode),
                                       (fig.placement, tokens, fig.prefill)):
        ops = chip_ops(placement, count, load=False)[0] + [END]
        ev = chip_macro_events(chip, ops)
        timing = chip_counters(chip, chip_words(chip, ops))
        assert timing.counters == {k: v for k, v in counters.items() if k != "macro"}
        assert summed(timing.macro_counters) == counters["macro"]
        assert _derived_fields(ev) == derived_from_counters(TINY, counters["macro"])


@pytest.mark.parametrize("shapes, tokens, macros", [
    ([(50, 9, (2, 4)), (13, 6, (1, 1)), (70, 5, (1, 8))], 3, 4),
    ([(20, 10, (1, 1))], 5, 2),
    ([(200, 3, (1, 1))], 19, 8),
])
def test_events_equal_the_macro_traces(shapes, tokens, macros):
    # On a trace with data: every macro's own trace (what the routers hand it) counted by the
    # macro's event counter, summed, equals the walk of the chip commands (but for the MACs
    # that are zero by weight, which need the weights, and the cycles, the chip's counter).
    chip = tiny_chip(macros)
    layers, xs, ws = chip_layers(TINY, shapes, tokens)
    schedule = schedule_chip(chip, layers, xs, ws)
    traced = sum((count_events(t) for t in macro_traces(schedule.trace)), start=type(
        chip_macro_events(chip, [END]))())
    walked = chip_macro_events(chip, schedule.ops)
    mine, theirs = walked.as_dict(), traced.as_dict()
    for name in ("zero_weight_macs", "cycles"):
        mine.pop(name)
        theirs.pop(name)
    assert mine == theirs


def _hand_program(chip):
    """Two macros of tiny4 load 2 weight rows (one LOAD_W to both), all four take one
    activation entry (a broadcast), macros 0 and 1 compute 1 pass, accumulate a second, and
    one READ sums them."""
    trace = ChipTrace(chip)
    rng = np.random.default_rng(0)
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1), target=0, span=4)
    trace.append(Command(Opcode.LOAD_W, row=0, count=2),
                 rng.integers(0, 2 ** 44, size=2).tolist(), target=0, span=2)
    beats = TINY.act_beats()
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1),
                 rng.integers(0, 2 ** 32, size=beats).tolist(), target=0, span=4)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=0),
                 target=0, span=2)
    trace.append(Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1, accumulate=1),
                 target=0, span=2)
    trace.append(Command(Opcode.READ, addr=0, count=1), target=0, span=2)
    trace.append(Command(Opcode.END))
    return trace


def test_hand_counted_program():
    chip = tiny_chip(4)
    trace = _hand_program(chip)
    trace.validate()
    run = run_chip_trace(trace)
    counters = run.counters
    # A dense entry: 16 activations, 5 to a 44-bit beat (4 x (8 + 3) bits): 4 beats of 40.
    beats = TINY.act_beats()
    assert (beats, TINY.act_lanes, chip.broadcast_bits) == (4, 5, 40)
    # What the routers did, counted by hand from the program.
    assert (counters["dispatch"], counters["w_load"], counters["a_load"], counters["read"]) \
        == (7, 2, beats, 1)
    ev = chip_macro_events(chip, [(s.target, s.span, s.cmd) for s in _steps(chip, trace)])
    # Fetches: CONFIG and END by 4 macros, LOAD_A by 4, LOAD_W, 2 COMPUTEs, READ by 2.
    assert ev.commands == 4 + 4 + 4 + 2 * 4
    assert (ev.w_rows, ev.a_beats, ev.passes, ev.result_beats) == (4, 4 * beats, 4, 2)
    assert ev.acc_reads == 2 * TINY.cols + 2 * TINY.cols      # the accumulating pass + READ
    figures = evaluate_chip(chip, counters, ev, TECH, FAKE_COUNTS)
    e = TECH.values["energy_fj"]
    wire = e["wire_per_bit_mm"] * math.sqrt(FAKE_MACRO_UM2) * 1e-3
    lane = TINY.acc_bits + 2                                   # K = 4: 2 carry bits
    cmd_bits, chip_bits = command_layout(TINY).size, chip_command_layout(chip).size
    want = {
        "activation broadcast": 4 * beats * 40 * wire,
        "weight rows": 4 * TINY.cols * (8 + 3) * wire,
        "result wires": 2 * TINY.cols * TINY.acc_bits * wire,
        "result reduction": 1 * TINY.cols * lane * e["add_per_bit"],
        "command dispatch": (7 * chip_bits * e["reg_per_bit"]
                             + 20 * cmd_bits * (e["reg_per_bit"] + wire)),
    }
    for name, fj in want.items():
        assert math.isclose(figures.interconnect_pj[name], fj / 1000, rel_tol=1e-12), name
    assert math.isclose(figures.energy_pj["interconnect"], sum(want.values()) / 1000,
                        rel_tol=1e-12)
    assert math.isclose(figures.energy_pj["off-chip memory"],
                        2 * 6 * 8 * e["dram_per_bit"] / 1000, rel_tol=1e-12)
    read, write = buffer_energy_per_bit(TECH, 4096)
    assert math.isclose(figures.energy_pj["global buffer"],
                        (beats * 40 * read + TINY.cols * lane * write) / 1000, rel_tol=1e-12)
    area = chip_area(chip, TECH, FAKE_COUNTS)
    assert math.isclose(figures.energy_pj["leakage"], TECH["operating.leakage_mw_per_mm2"]
                        * 1e-3 * area["total"] * 1e-6 * counters["total"] / 100e6 * 1e12,
                        rel_tol=1e-12)
    assert figures.cell_macs == 4 * TINY.cells
    assert math.isclose(figures.total_pj, sum(figures.energy_pj.values()), rel_tol=1e-12)
    assert math.isclose(figures.tops_per_w, 2 * 4 * TINY.cells / figures.total_pj, rel_tol=1e-12)


def _steps(chip, trace):
    from sparsecim.hw.chip_trace import chip_step
    from sparsecim.hw.isa import decode

    out = []
    for step in trace.steps:
        info = chip_step(chip, step.command)
        out.append(dataclasses.make_dataclass("S", ["target", "span", "cmd"])(
            info.target, info.span, decode(TINY, info.word)))
    return out


def test_without_macro_area_wires_and_leakage_are_not_modelled():
    chip = tiny_chip(4)
    trace = _hand_program(chip)
    run = run_chip_trace(trace)
    ev = chip_macro_events(chip, [(s.target, s.span, s.cmd) for s in _steps(chip, trace)])
    empty = dataclasses.replace(chip, macro=dataclasses.replace(TINY, act_depth=15))
    figures = evaluate_chip(empty, run.counters, ev, TECH)   # a macro nobody synthesized
    assert figures.energy_pj["interconnect"] is None and figures.energy_pj["leakage"] is None
    assert figures.interconnect_pj["result reduction"] > 0
    assert figures.area_mm2 is None and figures.tops_per_mm2 is None
    assert "no recorded cell counts" in figures.notes[0]
    assert set(figures.energy_pj) == set(CHIP_ENERGY_COMPONENTS)


def test_buffer_energy_interpolates_between_the_two_points():
    gb = TECH.values["global_buffer"]
    small, large = gb["small_bytes"], gb["large_bytes"]
    assert buffer_energy_per_bit(TECH, small) == (gb["small_read_per_bit"],
                                                  gb["small_write_per_bit"])
    assert buffer_energy_per_bit(TECH, 16) == buffer_energy_per_bit(TECH, small)
    read, write = buffer_energy_per_bit(TECH, large)
    assert math.isclose(read, gb["large_read_per_bit"]) and math.isclose(
        write, gb["large_write_per_bit"])
    # Log-log: at the geometric mean of the sizes, the geometric mean of the energies.
    mid = math.sqrt(small * large)
    assert math.isclose(buffer_energy_per_bit(TECH, mid)[0],
                        math.sqrt(gb["small_read_per_bit"] * gb["large_read_per_bit"]))
    # Above: banks of the large size, plus a wire over half the buffer's side.
    size = 4 * large
    side_mm = math.sqrt(size * 8 * TECH.values["area_um2"]["sram_bit"]) * 1e-3
    assert math.isclose(buffer_energy_per_bit(TECH, size)[0], gb["large_read_per_bit"]
                        + TECH["energy_fj.wire_per_bit_mm"] * side_mm / 2)


def test_tech_file_needs_ordered_buffer_points(tmp_path):
    body = Path(load_tech("22nm").path).read_text(encoding="utf-8").replace(
        "large_bytes = { value = 262144", "large_bytes = { value = 512")
    path = tmp_path / "t.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=r"^t.toml: global_buffer.large_bytes must be above "
                                         r"small_bytes \(1024\) and that above 0, not 512$"):
        load_tech(path)


def test_chip_area_adds_macros_buffer_and_logic():
    chip = chip_preset("edge")
    area = chip_area(chip, TECH, FAKE_COUNTS)
    assert math.isclose(area["macros"], 16 * FAKE_MACRO_UM2)
    assert area["global buffer"] == (1 << 20) * 8 * TECH.values["area_um2"]["sram_bit"]
    logic = chip_logic_cells(chip)
    cells, bits = logic.cells["chip logic"], logic.memory_bits["chip logic"]
    assert area["chip logic"] == pytest.approx(
        sum(n * cell_area_um2(c, TECH) for c, n in cells.items())
        + bits * TECH.values["area_um2"]["sram_bit"], rel=1e-12)
    # The FIFOs: 16 command queues of 4 macro command words, 3 range queues of 16 x 5
    # entries of target (4 bits) and span (5 bits).
    assert bits == 16 * 4 * command_layout(chip.macro).size + 3 * 16 * 5 * 9
    # The result adders: 15 per column of 32 lanes of 32 + 4 bits.
    assert cells["$_XOR_"] == 2 * (15 * 32 * 36 + 6 * 32)
    assert math.isclose(area["total"], area["macros"] + area["global buffer"]
                        + area["chip logic"])


def test_chip_logic_estimate_against_tiny4_synthesis():
    # Yosys 0.23 on hw/chip.py of tiny4 (branch chip-hw; macros and sequencers blackboxed,
    # sparsecim.sw.area's flow): 4,127 gates, 310 flip-flops (305 with enable and reset), 748
    # memory bits. The estimate has the same memory bits and is within 20 % in area.
    chip = chip_preset("tiny4")
    logic = chip_logic_cells(chip)
    assert logic.memory_bits["chip logic"] == 748
    synthesized = {"$_NOT_": 48, "$_NOR_": 44, "$_ANDNOT_": 247, "$_AND_": 1014, "$_OR_": 175,
                   "$_NAND_": 965, "$_MUX_": 176, "$_ORNOT_": 239, "$_XOR_": 739,
                   "$_SDFFE_PP0P_": 305, "$_SDFF_PP0_": 3, "$_XNOR_": 170, "$_SDFF_PP1_": 2}
    want = (sum(n * cell_area_um2(c, TECH) for c, n in synthesized.items())
            + 748 * TECH.values["area_um2"]["sram_bit"])
    got = chip_area(chip, TECH)["chip logic"]
    assert 0.8 < got / want < 1.0


def test_model_figures_per_token():
    chip = tiny_chip(8)
    layers = [ChipLayer("a", 20, 10, (1, 1)), ChipLayer("b", 40, 7, (2, 4)),
              ChipLayer("c", 200, 3, (1, 1))]
    figures = model_figures(chip, layers, prefill_tokens=4)
    model = model_chip_energy(chip, figures, TECH, FAKE_COUNTS)
    per_layer = [layer_chip_energy(chip, f, TECH, FAKE_COUNTS) for f in figures]
    assert math.isclose(model["decode"]["pj_per_token"],
                        sum(p["decode_pj_per_token"] for p in per_layer), rel_tol=1e-12)
    assert math.isclose(model["prefill"]["pj_per_token"],
                        sum(p["prefill_pj_per_token"] for p in per_layer), rel_tol=1e-12)
    cycles = sum(f.decode_cycles for f in figures)
    assert model["decode"]["cycles_per_token"] == cycles
    assert math.isclose(model["decode"]["tokens_per_s"], 100e6 / cycles)
    assert model["decode"]["offchip_bytes_per_token"] == sum(
        f.weight_bytes_per_token for f in figures)
    resident = [f for f, p in zip(figures, per_layer, strict=True) if f.resident]
    assert resident and all(p["load_pj"] > 0 for p in per_layer if p["load"])
    assert model["load_cycles"] == sum(f.load_cycles for f in resident)
    # A resident layer reads no weights off chip per token.
    for f, p in zip(figures, per_layer, strict=True):
        assert (p["decode"]["energy_pj"]["off-chip memory"] == 0) == f.resident


def test_smollm2_on_edge_is_fast_enough():
    # Two of SmolLM2's blocks on edge: priced from chip-sched's figures in well under a second.
    chip = chip_preset("edge")
    figures = model_figures(chip, model_layers("smollm2-135m", (2, 4))[:14], prefill_tokens=8)
    model = model_chip_energy(chip, figures, TECH)
    assert model["decode"]["pj_per_token"] > model["prefill"]["pj_per_token"] > 0


def test_model_load_with_the_plan_is_the_load_phase():
    from sparsecim.sw.schedule.chip import load_phase, place_model

    chip = tiny_chip(8)
    layers = [ChipLayer("a", 20, 10, (1, 1)), ChipLayer("b", 40, 7, (2, 4))]
    plan = place_model(chip, layers, 2)
    figures = model_figures(chip, layers, prefill_tokens=2, plan=plan)
    alone = model_chip_energy(chip, figures, TECH, FAKE_COUNTS)
    at_once = model_chip_energy(chip, figures, TECH, FAKE_COUNTS, plan=plan)
    counters = load_phase(plan)
    assert at_once["load_cycles"] == counters["total"] <= alone["load_cycles"]
    # The same rows written either way: the same off-chip energy.
    e = TECH.values["energy_fj"]["dram_per_bit"]
    assert any(f.resident for f in figures)
    assert counters["w_load"] == sum(f.load["w_load"] for f in figures if f.resident)
    offchip = counters["w_load"] * chip.weight_row_bytes * 8 * e / 1000
    assert at_once["load_pj"] > offchip > 0
