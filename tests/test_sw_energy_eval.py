"""Calibration against a published macro, and the flexibility comparison."""

import pytest
from sparsecim.sw.energy import load_tech
from sparsecim.sw.energy_eval import (
    CALIBRATION_BAND,
    CHIH_ISSCC21,
    calibrate,
    calibration_config,
    flexibility,
)


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
