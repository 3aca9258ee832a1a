"""``sparsecim run --chip``: whole-model chip figures (sw/chip_run.py), the chip report and the
CLI. Figures are checked against values computed here from the shapes, the pattern's packing
and the chip's parameters, never against numbers the code printed."""

import dataclasses
import json
import math
import tomllib

import pytest
from conftest import run_cli
from sparsecim.hw.config import CHIP_PRESETS, ChipConfig, preset
from sparsecim.sw.chip_energy import CHIP_ENERGY_COMPONENTS, model_chip_energy
from sparsecim.sw.chip_run import (
    LayerSpec,
    attention_cost,
    attention_unit,
    chip_run,
    kv_features,
    shape_specs,
)
from sparsecim.sw.energy import load_tech
from sparsecim.sw.experiments.chip_eval import flow_plan, ideal_bytes
from sparsecim.sw.model_shapes import MODELS, AttentionShape
from sparsecim.sw.schedule.chip import ChipLayer, model_figures, place_model

TINY4 = CHIP_PRESETS["tiny4"]


def _rows_loaded(cfg, k: int, n: int, pattern) -> int:
    """Weight rows one pass over a ``k × n`` layer writes: in each output tile, every K tile
    takes ``ceil(inputs / m)`` groups of ``n`` sub-macro rows (one cluster row a group)."""
    kept, m = pattern
    per_pass = cfg.rows * (cfg.submacros // kept) * m
    n_tiles = -(-n // cfg.cols)
    rows = 0
    for k0 in range(0, k, per_pass):
        inputs = min(per_pass, k - k0)
        rows += -(-inputs // m) * kept
    return rows * n_tiles


def _row_bytes(cfg) -> int:
    return -(-cfg.cols * (cfg.weight_bits + cfg.meta_bits) // 8)


@pytest.mark.parametrize("pattern", [(1, 1), (2, 4), (1, 8)], ids=["dense", "2:4", "1:8"])
def test_streamed_layer_bytes_per_token_come_from_its_shape_and_packing(pattern):
    k, n = 72, 24  # partial K and N tiles on tiny
    result = chip_run(TINY4, [LayerSpec("big", k, n, pattern, copies=2)], 4)
    (row,) = result.rows
    assert row.regime == "streamed" and row.copies == 2
    rows = _rows_loaded(TINY4.macro, k, n, pattern)
    assert row.decode_bytes == 2 * rows * _row_bytes(TINY4.macro)
    assert TINY4.weight_row_bytes == _row_bytes(TINY4.macro)
    assert row.macs_per_token == 2 * n * (-(-k // pattern[1])) * pattern[0]
    assert row.bound == "bandwidth"  # 4 bytes a cycle under a 6-byte row


def test_totals_are_the_rows_plus_attention_and_tokens_per_s_is_clock_over_cycles():
    specs = [LayerSpec("a", 40, 24, (2, 4), copies=3), LayerSpec("b", 16, 8, (1, 1))]
    attention = [AttentionShape("self", 2, 4, 1, 3)]
    result = chip_run(TINY4, specs, 6, attention=attention, kv=16)
    s, att = result.summary, result.attention
    assert s["decode_cycles"] == sum(r.decode_cycles for r in result.rows) + att.decode_cycles
    assert math.isclose(s["prefill_cycles"],
                        sum(r.prefill_cycles for r in result.rows) + att.prefill_cycles)
    assert math.isclose(s["decode_tokens_per_s"], 100e6 / s["decode_cycles"])
    assert math.isclose(s["prefill_tokens_per_s"], 100e6 / s["prefill_cycles"])
    # Macros to hold = tiles of every layer: 2:4 on tiny covers 32 inputs a tile.
    assert s["macros_to_hold"] == 3 * (2 * 6) + 1 * 2
    assert s["linear_macs"] == 3 * 24 * 10 * 2 + 16 * 8


def test_a_layer_that_fits_is_resident_its_load_apart_and_no_bytes_per_token():
    # 16 x 8 dense on tiny: 1 K tile x 2 N tiles = 2 macros, and tiny4 has 4.
    result = chip_run(TINY4, [LayerSpec("small", 16, 8)], 5)
    (row,) = result.rows
    assert row.regime == "resident" and row.macros == 2 and row.tiles == 2
    assert row.decode_bytes == 0 and row.prefill_bytes == 0
    assert row.load_bytes == _rows_loaded(TINY4.macro, 16, 8, (1, 1)) * _row_bytes(TINY4.macro)
    assert row.load_cycles > 0 and row.bound == "compute"
    assert result.summary["load_bytes"] == row.load_bytes
    assert result.summary["decode_bytes"] == 0


def test_attention_macs_kv_cache_and_unit_cycles():
    unit = attention_unit(TINY4)
    assert unit.macs_per_cycle == TINY4.macro.cells == 64
    heads, dim, blocks, context = 3, 8, 2, 10
    cost = attention_cost(TINY4, [AttentionShape("self", heads, dim, 1, blocks)], 48, context,
                          unit)
    macs = 2 * heads * dim * context * blocks
    assert cost.decode_macs == macs
    assert cost.kv_bytes_per_token == 48 and cost.kv_cache_bytes == 480
    assert cost.kv_place == "global buffer" and cost.decode_bytes == 0
    assert cost.decode_cycles == -(-macs // 64)
    # A cache over half the buffer lives off chip and is read every decode token.
    small = ChipConfig(macro=preset("tiny"), macros=4, clock_mhz=100, weight_bw=4,
                       offchip_bytes=1 << 20, buffer_bytes=512)
    cost = attention_cost(small, [AttentionShape("self", heads, dim, 1, blocks)], 48, context,
                          attention_unit(small, 1000))
    assert cost.kv_place == "off-chip memory"
    assert cost.decode_bytes == 480 + 48
    assert cost.decode_cycles == max(-(-macs // 1000), -(-(480 + 48) // 4))
    assert cost.prefill_bytes == 2 * 48


def test_kv_features_are_the_k_and_v_outputs():
    assert kv_features(MODELS["smollm2-135m"]) == 2 * 192 * 30
    assert kv_features(MODELS["llama-2-7b"], blocks=2) == 2 * 4096 * 2


def test_shape_specs_group_blocks_by_pattern():
    shape = MODELS["smollm2-135m"]
    plan = ["dense"] + ["2:4"] * 28 + ["dense"]
    specs = shape_specs(shape, plan)
    q = [s for s in specs if s.name == "q"]
    assert [(s.label, s.copies, s.pattern) for s in q] == [("dense", 2, (1, 1)),
                                                           ("2:4", 28, (2, 4))]
    with pytest.raises(ValueError, match=r"block patterns must be one per block \(30\), not 2"):
        shape_specs(shape, ["dense", "2:4"])


def test_flow_plan_keeps_the_dense_ends_when_stretched():
    plan = flow_plan(30)
    assert len(plan) == 30 and plan[0] == plan[-1] == "dense"
    stretched = flow_plan(32)
    assert len(stretched) == 32 and stretched[0] == stretched[-1] == "dense"
    assert set(stretched) <= set(plan)


def test_ideal_bytes_count_values_and_metadata_bits():
    dense = ideal_bytes([LayerSpec("x", 64, 10)])
    sparse = ideal_bytes([LayerSpec("x", 64, 10, (2, 4))])
    assert dense == 640
    assert sparse == 320 + 320 * 2 // 8  # 2 bits of position per kept weight


def test_monarch_layer_runs_as_its_block_diagonal_factors():
    spec = LayerSpec("m", 16, 16, label="monarch 4x4", mapping="monarch-latency",
                     monarch=(4, 4))
    assert spec.macs_per_token == 2 * 4 * 4 * 4
    result = chip_run(TINY4, [spec], 2)
    # 8 dense products of 4 x 4, one tile each (the scheduler may pack them on shared
    # macros); the row's MACs are theirs, whatever the regime.
    assert {r.label for r in result.rows} == {"monarch 4x4"}
    assert sum(r.macs_per_token for r in result.rows) == 128
    assert result.summary["macros_to_hold"] == 8
    assert result.summary["layers"] == 8


def test_unsupported_pattern_names_the_layer():
    no_nm = ChipConfig(macro=preset("fpga"), macros=2, clock_mhz=10, weight_bw=1,
                       offchip_bytes=1 << 16, buffer_bytes=64)
    with pytest.raises(ValueError, match="layer w: pattern 1:8 is not supported"):
        chip_run(no_nm, [LayerSpec("w", 16, 4, (1, 8))], 1)


# --- Energy ----------------------------------------------------------------------------------


def _energy_specs():
    # Resident and streamed rows on tiny4: the 72 x 24 layer takes 3 macros a copy.
    return [LayerSpec("big", 72, 24, (2, 4), copies=2), LayerSpec("small", 16, 8)]


def test_chip_run_energy_is_model_chip_energy_on_the_same_figures():
    tech = load_tech("22nm")
    specs = _energy_specs()
    result = chip_run(TINY4, specs, 3, tech=tech)
    layers = [ChipLayer(f"{s.name}#{c}", s.k, s.n, s.pattern) for s in specs
              for c in range(s.copies)]
    plan = place_model(TINY4, layers, 3)
    reference = model_chip_energy(TINY4, model_figures(TINY4, layers, prefill_tokens=3,
                                                       plan=plan), tech, plan=plan)
    energy = result.energy
    assert {r.regime for r in result.rows} == {"resident", "streamed"}
    for run in ("decode", "prefill"):
        assert energy[run] == reference[run]
    assert energy["load_pj"] == reference["load_pj"] > 0
    assert energy["area_mm2"] == reference["area_mm2"] is not None
    # The model's figure is the sum of its layers', component by component.
    for run, attr, stack in (("decode", "decode_pj", "energy_stack"),
                             ("prefill", "prefill_pj", "prefill_energy_stack")):
        assert math.isclose(energy[run]["pj_per_token"],
                            sum(getattr(r, attr) for r in result.rows))
        for name in CHIP_ENERGY_COMPONENTS:
            assert math.isclose(energy[run]["components_pj"][name],
                                sum(getattr(r, stack)[name] for r in result.rows),
                                abs_tol=1e-9)
        for r in result.rows:
            assert math.isclose(sum(getattr(r, stack).values()), getattr(r, attr))
    # Off-chip energy from the tech file's DRAM pJ/bit and the bytes the rows moved.
    dram = tech.values["energy_fj"]["dram_per_bit"] / 1000
    for r in result.rows:
        assert math.isclose(r.energy_stack["off-chip memory"], r.decode_bytes * 8 * dram)
        assert (r.load_pj > 0) == (r.regime == "resident")
    assert chip_run(TINY4, specs, 3).energy is None  # no tech: not priced


def test_chip_energy_without_macro_area_says_so(tmp_path):
    # A macro no `make area` recorded: no area, so no leakage nor interconnect wires.
    macro = dataclasses.replace(TINY4.macro, act_depth=2 * TINY4.macro.act_depth)
    chip = dataclasses.replace(TINY4, macro=macro)
    result = chip_run(chip, _energy_specs(), 2, tech=load_tech("22nm"))
    energy = result.energy
    assert energy["area_mm2"] is None and energy["decode"]["tops_per_mm2"] is None
    assert energy["decode"]["components_pj"]["leakage"] is None
    assert any("lack leakage" in note for note in energy["notes"])
    from sparsecim.tb.chip_report import energy_lines, write_chip_report

    text = "\n".join(energy_lines(result))
    assert f"chip area     not recorded for macro {macro.slug}" in text
    assert "lack leakage" in text and "leakage n/a" in text
    write_chip_report(result, tmp_path, plots=False)
    assert "- area: not recorded for the macro" in (tmp_path / "chip.md").read_text()


# --- The command line ------------------------------------------------------------------------


def test_run_chip_reports_figures_and_files(tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", "--model", "synthetic", "--shapes", "24x72,8x16", "--tokens", "3",
                   "--sparsify", "magnitude", "--pattern", "2:4", "--chip", "tiny4",
                   "--out", out)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert ", the macro of chip tiny4, 3 token(s)" in text
    assert "  attention     none: synthetic layers have no attention\n" in text
    assert "streamed" in text and "chip decode" in text and "chip prefill" in text
    report = json.loads((out / "chip.json").read_text())
    s = report["summary"]
    assert math.isclose(s["decode_tokens_per_s"], 100e6 / s["decode_cycles"])
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["synthetic.0"]["decode_bytes"] == (
        _rows_loaded(TINY4.macro, 72, 24, (2, 4)) * TINY4.weight_row_bytes)
    for name in ("chip.csv", "chip.md", "roofline.png", "chip_cycles.png", "chip_energy.png",
                 "settings.toml"):
        assert (out / name).exists(), name
    # The chip's energy replaces the macro-level line, which left the chip out.
    assert "  chip energy   " in text and "  chip area     " in text
    assert "bound   pJ/token\n" in text  # each layer's decode energy in the chip table
    assert "not modelled (chip level)" not in text
    assert math.isclose(sum(r["decode_pj"] for r in report["rows"]),
                        report["energy"]["decode"]["pj_per_token"])
    header = (out / "chip.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["decode_pj", "prefill_pj", "load_pj"]
    assert "## Energy and area" in (out / "chip.md").read_text()
    settings = tomllib.loads((out / "settings.toml").read_text())
    assert settings["run"]["chip"] == "tiny4" and settings["chip"]["macros"] == 4


def test_run_chip_on_a_shape_table_costs_the_attention(tmp_path):
    done = run_cli("run", "--model", "bert-large", "--chip", "edge", "--tokens", "8",
                   "--no-plots", "--out", tmp_path / "bert")
    assert done.returncode == 0, done.stderr
    macs = 2 * 16 * 64 * 8 * 24
    assert (f"  attention     costed on the attention unit (digital INT8 MAC array beside the "
            f"global buffer), 4096 MACs/cycle (default: one macro's cells), context 8; KV cache "
            f"{2 * 1024 * 24 * 8:,} B in the global buffer\n") in done.stdout
    report = json.loads((tmp_path / "bert" / "chip.json").read_text())
    assert report["attention"]["decode_macs"] == macs
    assert report["attention"]["decode_cycles"] == -(-macs // 4096)
    assert {r["copies"] for r in report["rows"]} == {24}


def test_run_chip_from_a_settings_table_and_its_replay(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text('[run]\nmodel = "synthetic"\nshapes = ["8x16"]\ntokens = 2\n'
                      'plots = false\n\n[chip]\nmacro = "tiny"\nmacros = 2\nclock_mhz = 50\n'
                      'weight_bw = 8\noffchip_bytes = 65536\nbuffer_bytes = 1024\n')
    first = run_cli("run", "--config", config, "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert "the macro of chip from a [chip] table" in first.stdout
    again = run_cli("run", "--config", tmp_path / "a" / "settings.toml", "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "a" / "chip.json").read_text())
    b = json.loads((tmp_path / "b" / "chip.json").read_text())
    assert a["summary"] == b["summary"] and a["chip"]["clock_mhz"] == 50.0


@pytest.mark.parametrize("args, message", [
    (["--chip", "huge"], "chip must be one of edge, flexcim2, large, tiny4 or a .toml file, "
                         "not 'huge'"),
    (["--attention-macs", "64"], "setting attention_macs is for a chip run (--chip), not a "
                                 "macro-only run (64)"),
    (["--chip", "tiny4", "--sparsify", "magnitude", "--pattern", "3:4"],
     "pattern 3:4 is not supported by the macro of chip tiny4; supported are dense and 1:2, "
     "1:4, 1:8, 2:4, 2:8, 4:8"),
], ids=["unknown-chip", "attention-without-chip", "pattern"])
def test_run_chip_bad_flags_fail_in_one_line(tmp_path, args, message):
    done = run_cli("run", "--model", "synthetic", "--shapes", "8x16", "--no-plots",
                   "--out", tmp_path / "r", *args)
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: {message}\n"


def test_run_chip_bad_toml_is_named(tmp_path):
    chip = tmp_path / "chip.toml"
    chip.write_text("[chip]\nmacro = 'tiny'\nmacros = 0\nclock_mhz = 10\nweight_bw = 1\n"
                    "offchip_bytes = 100\nbuffer_bytes = 64\n")
    done = run_cli("run", "--model", "synthetic", "--shapes", "8x16", "--chip", chip,
                   "--out", tmp_path / "r")
    assert done.returncode == 2
    assert done.stderr == (f"sparsecim: error: chip file {chip}: macros must be an integer "
                           "from 1 to 4096, not 0\n")
    chip.write_text("[chip\n")
    done = run_cli("run", "--model", "synthetic", "--shapes", "8x16", "--chip", chip,
                   "--out", tmp_path / "r")
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: chip file {chip} is not valid TOML: ")
    settings = tmp_path / "s.toml"
    settings.write_text("[chip]\nmacro = 'tiny'\nmacros = 2\nspeed = 3\n")
    done = run_cli("run", "--config", settings)
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: settings file {settings}: chip has "
                                  "unknown fields ['speed']")


@pytest.mark.cosim
def test_run_chip_rtl_layers_run_their_chip_traces_on_verilator(tmp_path):
    done = run_cli("run", "--model", "synthetic", "--shapes", "12x40", "--tokens", "2",
                   "--sparsify", "magnitude", "--pattern", "2:4", "--chip", "tiny4",
                   "--rtl-layers", "all", "--no-plots", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL (chip)    1/1 layer(s) alone on the chip RTL" in done.stdout
    record = json.loads((tmp_path / "r" / "layers.json").read_text())["layers"][0]
    # A match is the chip golden model equal to the integer reference and the chip RTL's
    # results and every counter equal to the chip golden and cycle models.
    assert record["rtl_match"] is True and record["rtl_coverage"] == 1.0
    assert f"synthetic.0: {record['rtl_cycles']:,} chip cycles, ok" in done.stdout


def test_presets_lists_the_chip_presets(cli_main):
    status, out, _ = cli_main("presets")
    assert status == 0
    for name, chip in CHIP_PRESETS.items():
        assert f"  {name:<8} {chip.macros:>6} " in out
