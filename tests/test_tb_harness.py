# amaranth: UnusedElaboratable=no
"""The harness's Verilator control file makes only the harness's ports public.

The components here are only read for their ports, never elaborated: the magic comment above
silences Amaranth's "created but never used" warning for this file (it surfaced in a later
test under warnings-as-errors).
"""

from sparsecim.hw.chip import Chip
from sparsecim.hw.config import chip_preset, preset
from sparsecim.hw.top import Top
from sparsecim.tb.harness import HARNESS_TOP, control_file, harness_verilog
from sparsecim.tb.verilator import DONE_PORT


def _rules(text: str) -> dict[str, str]:
    lines = text.splitlines()
    assert lines[0] == "`verilator_config"
    rules = {}
    for line in lines[1:]:
        kind, _, module, _, var = line.split()
        assert module == f'"{HARNESS_TOP}"'
        rules[var.strip('"')] = kind
    return rules


def _ports(verilog: str) -> dict[str, str]:
    """Direction of every port in the harness's header, read back from its Verilog."""
    header = verilog[verilog.index(f"module {HARNESS_TOP} ("):verilog.index(");")]
    ports = {}
    for line in header.splitlines()[1:]:
        words = line.strip().rstrip(",").split()
        ports[words[-1]] = words[0]
    return ports


def test_control_file_makes_the_ports_public_and_nothing_else():
    for top in (Top(config=preset("tiny")), Chip(chip=chip_preset("flexcim2"))):
        ports = _ports(harness_verilog(top, top_module="dut", done=DONE_PORT))
        rules = _rules(control_file(top))
        assert rules == {name: "public_flat_rw" if direction == "input" else "public_flat_rd"
                         for name, direction in ports.items()}
        assert rules["clk"] == rules["rst"] == rules["resume"] == "public_flat_rw"
        assert rules[DONE_PORT] == rules["harness_cycles"] == "public_flat_rd"
