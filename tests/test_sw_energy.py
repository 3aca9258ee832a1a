"""Technology files, the energy and area model, and the calibration band."""

import dataclasses
import re
from pathlib import Path

import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.area import COMPONENTS, CellCounts
from sparsecim.sw.energy import (
    ENERGY_COMPONENTS,
    TECH_KEYS,
    area_breakdown,
    cell_area_um2,
    energy_breakdown,
    evaluate,
    load_tech,
)
from sparsecim.sw.events import Events

TECH = load_tech("22nm")


@pytest.mark.parametrize("name", ["22nm", "45nm"])
def test_packaged_tech_files_load_with_a_source_for_every_value(name):
    tech = load_tech(name)
    for section, keys in TECH_KEYS.items():
        for key in keys:
            assert tech.values[section][key] >= 0
            assert len(tech.sources[section][key]) > 10


def _tech_text():
    return Path(TECH.path).read_text()


def _write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_user_tech_file_is_read(tmp_path):
    text = _tech_text().replace("mul_8x8 = { value = 268.0", "mul_8x8 = { value = 100.0")
    assert load_tech(_write(tmp_path, text))["energy_fj.mul_8x8"] == 100.0


def test_missing_value_names_its_key(tmp_path):
    text = re.sub(r"^sram_bit = .*\n", "", _tech_text(), flags=re.M)
    with pytest.raises(ValueError) as exc:
        load_tech(_write(tmp_path, text))
    assert str(exc.value) == "mine.toml: area_um2.sram_bit is missing"


def test_negative_value_names_its_key(tmp_path):
    text = _tech_text().replace("add_per_bit = { value = 2.225", "add_per_bit = { value = -2.2")
    with pytest.raises(ValueError) as exc:
        load_tech(_write(tmp_path, text))
    assert str(exc.value) == ("mine.toml: energy_fj.add_per_bit must be a non-negative number, "
                              "not -2.2")


def test_value_without_source_is_refused(tmp_path):
    text = re.sub(r'^dff = \{ value = 1.0808, source = "[^"]*" \}', "dff = { value = 1.0808 }",
                  _tech_text(), flags=re.M)
    with pytest.raises(ValueError) as exc:
        load_tech(_write(tmp_path, text))
    assert str(exc.value) == "mine.toml: area_um2.dff must state its source"


def test_unknown_key_and_missing_file(tmp_path):
    text = _tech_text().replace("[area_um2]\n",
                                '[area_um2]\nnand3 = { value = 1.0, source = "x" }\n')
    with pytest.raises(ValueError, match=r"^mine.toml: area_um2.nand3 is not a known key; "):
        load_tech(_write(tmp_path, text))
    with pytest.raises(ValueError, match=r"^technology file '7nm' does not exist; packaged are "
                                         r"22nm, 45nm$"):
        load_tech("7nm")


def test_generic_cells_are_priced_from_the_library_cells():
    area = TECH.values["area_um2"]
    assert cell_area_um2("$_NAND_", TECH) == area["nand2"]
    assert cell_area_um2("$_ANDNOT_", TECH) == area["and2"] + area["inv"]
    assert cell_area_um2("$_DFFE_PP_", TECH) == area["dff"] + area["mux2"]
    assert cell_area_um2("$_SDFFE_PP0P_", TECH) == area["dff"] + area["mux2"] + area["and2"]
    assert cell_area_um2("$_SDFF_PP0_", TECH) == area["dff"] + area["and2"]
    with pytest.raises(ValueError, match=r"^no area for Yosys cell type '\$_AOI3_'$"):
        cell_area_um2("$_AOI3_", TECH)


def test_area_breakdown_by_hand():
    counts = CellCounts({"cell array": {"$_XOR_": 10, "$_DFF_P_": 2}, "sequencer": {"$_NOT_": 3}},
                        {"buffers": 1000})
    area = area_breakdown(counts, TECH)
    assert list(area) == list(COMPONENTS)
    assert area["cell array"] == pytest.approx(10 * 0.3815 + 2 * 1.0808)
    assert area["sequencer"] == pytest.approx(3 * 0.1271)
    assert area["buffers"] == pytest.approx(1000 * 0.153)
    assert area["merge"] == 0


def test_energy_by_component_by_hand():
    """tiny (4 × 4×4, INT8, patterns up to m = 8): one event of each kind, priced by hand
    from the 22 nm file's numbers."""
    cfg = preset("tiny")
    one = Events(cycles=500, macs=1, tree_adds=3, weight_bits_written=1, dist_words=1,
                 cell_selects=1, merge_adds=1, act_bits_written=1, act_bits_read=1,
                 acc_reads=1, acc_writes=1, requants=1, bits_in=1, bits_out=1)
    fj = energy_breakdown(cfg, one, TECH, area_um2=1e6)   # 1 mm²
    assert list(fj) == list(ENERGY_COMPONENTS)
    # Tree over 4 products of 16 bits: 2 adds of 17 bits, 1 of 18, so 52 / 3 bits an add.
    assert fj["cell array"] == pytest.approx(268.0 + 3 * 52 / 3 * 2.225 + 3.05)
    # 7 modes: 3 mux levels per routed word; 8 choices: 3 levels per select; 8-bit words.
    assert fj["distribution"] == pytest.approx(1.11 * 8 * (3 + 3))
    assert fj["merge"] == pytest.approx(cfg.pass_sum_bits * 2.225) == 20 * 2.225
    assert fj["buffers"] == pytest.approx(14.0 + 9.5)
    assert fj["accumulators"] == pytest.approx(32 * (9.5 + 14.0 + 2.225 + 2.225))
    assert fj["interconnect"] == pytest.approx(2 * 3.05)
    assert fj["off-chip memory"] is None
    # 5 mW/mm² over 500 cycles at 500 MHz = 1 µs: 5 nJ.
    assert fj["leakage"] == pytest.approx(5e6)
    assert energy_breakdown(cfg, one, TECH)["leakage"] is None


def test_dense_only_macro_pays_no_distribution():
    cfg = preset("tiny")
    dense = dataclasses.replace(cfg, patterns=())
    ev = Events(dist_words=5, cell_selects=0)
    assert energy_breakdown(dense, ev, TECH)["distribution"] == 0


def test_evaluate_tops_per_watt_is_two_ops_per_mac():
    cfg = preset("tiny")
    ev = Events(cycles=10, macs=1000)
    report = evaluate(cfg, ev, TECH)
    assert report.total_pj == pytest.approx(1000 * 268.0 / 1000)
    assert report.tops_per_w == pytest.approx(2 * 1000 / (268e-15 * 1000) / 1e12)
    assert report.area_mm2 is None and report.tops_per_mm2 is None
    assert any("issue 12" in note for note in report.notes)
