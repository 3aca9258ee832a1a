"""The plain C++ driver (``make bench``'s yardstick) runs the same simulation as ``run_rtl``."""

import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.operands import random_gemm
from sparsecim.sw.schedule import schedule_layer
from sparsecim.tb.cosim import run_rtl
from sparsecim.tb.driver import build_driver, run_driver
from sparsecim.tb.scoreboard import read_recorded
from sparsecim.tb.verilator import build

pytestmark = pytest.mark.cosim


def test_driver_runs_the_same_cycles_and_results_as_run_rtl(tmp_path):
    cfg = preset("tiny")
    x, w = random_gemm(cfg, 37, 9, 3, seed=4)
    trace = schedule_layer(cfg, x, w).trace
    rtl = run_rtl(trace, run_dir=tmp_path)
    assert rtl.passed
    plain = run_driver(build_driver(build(cfg)), tmp_path, limit=100_000)
    assert plain.harness_cycles == rtl.harness_cycles == rtl.rtl_counters["total"]
    # Reset, the run, and the two edges after done that the cocotb test also clocks.
    assert plain.cycles == 3 + rtl.harness_cycles + 2
    assert (read_recorded(cfg, tmp_path / "driver_result.hex")
            == read_recorded(cfg, tmp_path / "result.hex")).all()


def test_driver_stops_at_its_limit_without_its_files(tmp_path):
    binary = build_driver(build(preset("tiny")))
    with pytest.raises(RuntimeError, match="driver did not reach done"):
        run_driver(binary, tmp_path, limit=50)  # no cmd.hex: the harness never raises done
