"""FPGA figures: the three-pin wrapper, the counting rules, and real Yosys/nextpnr runs on the
smallest preset (``fpga``: synthesis takes seconds; place and route minutes, so ``slow``)."""

import json
import re
import subprocess
import sys

import pytest
from amaranth.hdl import Shape
from amaranth.lib import wiring
from sparsecim.hw.config import preset
from sparsecim.hw.top import Top
from sparsecim.tb import fpga


def _bits(top, inputs):
    return sum(Shape.cast(m.shape).width for _, m in top.signature.members.flatten()
               if m.is_port and (m.flow == wiring.In) == inputs)


def test_wrapper_shifts_every_input_in_and_xors_every_output_out():
    top = Top(config=preset("fpga"))
    text = fpga.wrapper_verilog(top)
    # Converting elaborates the top level (and gives the port list the wrapper must match).
    header = fpga.convert(top).split(f"module {fpga.TOP_MODULE}(", 1)[1].split(");", 1)[0]
    assert {p.strip() for p in header.split(",")} == \
        {"clk"} | set(re.findall(r"\.(\w+)\((?:shift|outs)\[", text))
    in_bits, out_bits = 1 + _bits(top, True), _bits(top, False)  # rst is an input too
    assert f"module {fpga.WRAPPER_MODULE} (input wire clk, input wire si, output reg so);" in text
    assert f"reg [{in_bits - 1}:0] shift;" in text
    assert f"shift <= {{shift[{in_bits - 2}:0], si}};" in text
    assert f"reg [{out_bits - 1}:0] outs_q;" in text
    # Every port of the signature is connected, each to its own slice, nothing else.
    connected = re.findall(r"\.(\w+)\((?:shift|outs)\[(\d+):(\d+)\]\)", text)
    names = {n for n, _, _ in connected}
    expected = {"rst"} | {"__".join(map(str, p)) for p, m in top.signature.members.flatten()
                          if m.is_port}
    assert names == expected
    assert sum(int(hi) - int(lo) + 1 for _, hi, lo in connected) == in_bits + out_bits


@pytest.mark.parametrize("family, cells, expected", [
    ("ice40", {"SB_LUT4": 10, "SB_DFF": 3, "SB_DFFESR": 2, "SB_CARRY": 7, "SB_RAM40_4K": 4,
               "SB_MAC16": 1}, {"luts": 10, "ffs": 5, "bram": 4, "dsp": 1}),
    ("ecp5", {"LUT4": 10, "CCU2C": 3, "TRELLIS_DPR16X4": 2, "TRELLIS_FF": 9, "DP16KD": 1,
              "PDPW16KD": 1, "MULT18X18D": 2, "ALU54B": 1},
     {"luts": 10 + 6 + 8, "ffs": 9, "bram": 2, "dsp": 3}),
    ("xilinx", {"LUT2": 3, "LUT6": 4, "RAM32M": 2, "RAM64X1D": 1, "SRL16E": 1, "FDRE": 5,
                "FDCE": 1, "RAMB18E1": 1, "RAMB36E1": 2, "DSP48E1": 3, "CARRY4": 9},
     {"luts": 3 + 4 + 8 + 2 + 1, "ffs": 6, "bram": 5, "dsp": 3}),
], ids=["ice40", "ecp5", "xilinx"])
def test_counting_rules(family, cells, expected):
    assert fpga.count_resources(family, cells) == expected


def test_unknown_family_is_named():
    with pytest.raises(ValueError) as exc:
        fpga.count_resources("stratix", {})
    assert str(exc.value) == "family must be one of ['ecp5', 'ice40', 'xilinx'], not 'stratix'"


def test_module_cells_add_up_the_hierarchy():
    stat = {"modules": {
        "\\top": {"num_cells_by_type": {"LUT4": 1, "\\sub": 2, "$scopeinfo": 3}},
        "\\sub": {"num_cells_by_type": {"LUT4": 5, "TRELLIS_FF": 1}}}}
    assert fpga._module_cells(stat, "top") == {"LUT4": 11, "TRELLIS_FF": 2}
    assert fpga._module_cells(stat, "top", recursive=False) == {"LUT4": 1, "sub": 2}
    with pytest.raises(fpga.FpgaToolError) as exc:
        fpga._module_cells(stat, "other")
    assert str(exc.value) == ("module other is missing from the Yosys statistics "
                              "(modules: ['sub', 'top'])")


def test_synthesis_of_the_fpga_preset_for_ecp5(tmp_path):
    result = fpga.synthesize(preset("fpga"), "ecp5", work_dir=tmp_path)
    # 8 cells: one 8 x 8 product each, in the ECP5's multipliers.
    assert result.dsp == 8
    assert result.luts > 0 and result.ffs > 0
    assert result.cells["MULT18X18D"] == 8
    assert result.netlist.exists() and (tmp_path / "stat.json").exists()
    # The wrapper: its shift register and output registers are flip-flops of its own.
    assert result.wrapper_cells.get("TRELLIS_FF", 0) > 0
    assert fpga.place_and_route(
        fpga.SynthResult(**{**result.__dict__, "family": "xilinx"})) is None


def test_fpga_cli_synthesis_only(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", "fpga", "--preset", "fpga",
                           "--family", "xilinx", "--work-dir", str(tmp_path),
                           "--json", str(tmp_path / "f.json")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith("xilinx")]
    assert len(rows) == 1
    found = re.search(r"([\d,]+) +([\d,]+) +(\d+) +(\d+) +- +- +\d+ +-$", rows[0])
    assert found, rows[0]
    saved = json.loads((tmp_path / "f.json").read_text())
    assert len(saved) == 1 and saved[0]["family"] == "xilinx" and saved[0]["pnr"] is None
    synth = saved[0]["synth"]
    assert [int(v.replace(",", "")) for v in found.groups()] == \
        [synth["luts"], synth["ffs"], synth["bram"], synth["dsp"]]
    assert synth["dsp"] == 8  # the 8 products in DSP48E1s


def test_fpga_cli_unknown_family_fails_cleanly():
    done = subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", "fpga", "--family",
                           "ice40,virtex"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: family must be one of ice40, ecp5, xilinx, "
                           "not 'virtex'\n")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_fpga_preset_places_and_routes(tmp_path, family):
    result = fpga.fpga_figures(preset("fpga"), [family], preset_name="fpga",
                               work_root=tmp_path)[0]
    assert result.pnr is not None and result.pnr.fits, result.pnr and result.pnr.message
    assert result.pnr.fmax_mhz > 1.0
    assert result.as_dict()["synth"]["dsp"] == 8


@pytest.mark.cosim
@pytest.mark.parametrize("pattern", ["dense", "1:4"])
def test_fpga_preset_runs_bit_exact_on_verilator(tmp_path, pattern):
    """The design the FPGA figures are of is a working macro: RTL equals the golden model."""
    done = subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", "gemm", "--preset", "fpga",
                           "--k", "40", "--n", "6", "--tokens", "3", "--pattern", pattern,
                           "--rtl", "--pause", "0.2", "--run-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL outputs   match golden: yes" in done.stdout
    assert done.stdout.rstrip().endswith("RESULT: PASS")
