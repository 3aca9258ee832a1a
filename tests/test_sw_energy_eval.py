"""Calibration against a published macro, and the flexibility comparison."""

import dataclasses

import pytest
from sparsecim.sw.area import AREA_CONFIGS
from sparsecim.sw.energy import load_tech
from sparsecim.sw.experiments.energy_eval import (
    CALIBRATION_BAND,
    CHIH_ISSCC21,
    SMOLLM2_FLOW_PLAN,
    _runs_as,
    calibrate,
    calibration_config,
    flexcim_comparison,
    flexibility,
    gemm_events,
    layer_events,
)
from sparsecim.sw.model_shapes import model_shape
from sparsecim.sw.schedule import predict_counters


def test_calibration_macro_holds_the_published_weights():
    cfg = calibration_config()
    assert cfg.cells * cfg.weight_bits == CHIH_ISSCC21.weight_kbit * 1024 == 65536
    assert (cfg.weight_bits, cfg.act_bits, cfg.patterns) == (4, 4, ())


def test_calibration_tops_per_watt_within_the_stated_band():
    cal = calibrate(load_tech("22nm"))
    low, high = CALIBRATION_BAND
    assert low <= cal["ratio"] <= high
    assert cal["ratio"] == pytest.approx(cal["figures"].tops_per_w / 89.0)


def test_flexibility_runs_2_4_in_half_the_macs_only_where_the_macro_supports_it():
    rows = {row["name"]: row for row in flexibility(load_tech("22nm"), tokens=2)}
    dense_only = rows["flexcim-dense"]
    # The dense-only macro runs the 2:4 layer's zeros: the same events as the dense layer.
    assert dense_only["sparse_as"] == (1, 1)
    assert dense_only["sparse"].macs == dense_only["dense"].macs
    for name in ("flexcim-2:4", "flexcim"):
        row = rows[name]
        assert row["sparse_as"] == (2, 4)
        assert row["sparse"].macs * 2 == row["dense"].macs
        # No in-cell select or routing on the dense-only macro; both others pay for it.
        assert row["dense"].energy_pj["distribution"] > 0
    assert dense_only["dense"].energy_pj["distribution"] == 0


@pytest.mark.parametrize("name, pattern, tokens", [("flexcim", (2, 4), 1), ("flexcim", (1, 1), 5),
                                                   ("flexcim-dense", (1, 1), 3),
                                                   ("flexcim-2:4", (2, 4), 70)],
                         ids=["flexcim-2:4-1", "flexcim-dense-5", "dense-only-3", "fixed-2:4-70"])
def test_layer_events_from_two_output_tiles_equal_the_whole_schedule(name, pattern, tokens):
    cfg = AREA_CONFIGS[name]
    whole = gemm_events(cfg, 1024, 5 * cfg.cols, tokens, pattern=pattern)
    fast = layer_events(cfg, 1024, 5 * cfg.cols, tokens, pattern=pattern)
    # Zero-weight MACs depend on the random values, every other count on the schedule only.
    assert dataclasses.replace(fast, zero_weight_macs=0) == \
        dataclasses.replace(whole, zero_weight_macs=0)


def test_flexcim_comparison_cycles_equal_the_cycle_model():
    """The flexible macro's cycles for FLOW's SmolLM2 plan equal predict_counters summed over
    the same layers (the cycle model the FLOW report uses), and the dense macro runs every
    layer dense."""
    rows = flexcim_comparison(load_tech("22nm"), "smollm2-135m", SMOLLM2_FLOW_PLAN)
    cfg = AREA_CONFIGS["flexcim"]
    expected = 0
    for lin in model_shape("smollm2-135m").linears:
        for block in range(lin.blocks):
            expected += predict_counters(cfg, lin.inputs, lin.outputs, 1,
                                         SMOLLM2_FLOW_PLAN[block])["total"]
    assert rows["flexible"]["cycles"] == expected
    dense_cfg = AREA_CONFIGS["flexcim-dense"]
    dense = sum(predict_counters(dense_cfg, lin.inputs, lin.outputs, 1)["total"] * lin.total
                for lin in model_shape("smollm2-135m").linears)
    assert rows["dense"]["cycles"] == dense
    assert rows["dense"]["latency_ratio"] == pytest.approx(dense / expected)


def test_fixed_macro_runs_what_it_can():
    fixed = AREA_CONFIGS["flexcim-2:4"]
    assert _runs_as(fixed, (2, 8)) == (2, 4)      # 2 per 8 is at most 2 per 4
    assert _runs_as(fixed, (4, 8)) == (1, 1)      # 4 per 8 can be 3 per 4: dense
    assert _runs_as(AREA_CONFIGS["flexcim"], (4, 8)) == (4, 8)
