"""Run reports: summary totals, JSON, CSV, Markdown and the PNG plots."""

import csv
import json

import pytest
from sparsecim.tb.report import CSV_COLUMNS, LayerRecord, summarize, write_report


def _record(name, pattern="2:4", model=500, dense=1000, golden=True, rtl=None, rtl_match=None):
    return LayerRecord(
        name=name, out_features=8, in_features=40, tokens=2, sparsify="magnitude",
        pattern=pattern, mapping="nm" if pattern != "dense" else "linear", arrays=6,
        k_tiles=2, n_tiles=3, utilization=0.625, dense_utilization=0.8, weight_bytes=160,
        meta_bytes=40, macs=320, model_cycles=model,
        model_counters={"fetch": 10, "load": model - 10, "compute": 0, "read": 0, "stall": 0,
                        "total": model},
        dense_cycles=dense, ideal_cycles=5, golden_match=golden, rel_error=0.25,
        rtl_cycles=rtl, rtl_match=rtl_match)


def test_summary_totals_and_speedup():
    records = [_record("a", model=500, dense=1000), _record("b", "1:4", model=250, dense=1000,
                                                            rtl=250, rtl_match=True)]
    summary = summarize(records)
    assert summary["model_cycles"] == 750 and summary["dense_cycles"] == 2000
    assert summary["speedup"] == pytest.approx(2000 / 750)
    assert (summary["macs"], summary["weight_bytes"], summary["meta_bytes"]) == (640, 320, 80)
    assert (summary["golden_matches"], summary["rtl_layers"], summary["rtl_matches"]) == (2, 1, 1)
    assert summary["passed"] is True
    assert records[1].speedup == 4.0


@pytest.mark.parametrize("records", [
    [_record("a", golden=False)],
    [_record("a"), _record("b", rtl=499, rtl_match=False)],
], ids=["golden", "rtl"])
def test_any_mismatch_fails_the_summary(records):
    assert summarize(records)["passed"] is False


def test_summary_of_nothing_is_refused():
    with pytest.raises(ValueError) as exc:
        summarize([])
    assert str(exc.value) == "records must not be empty"


def test_write_report_writes_json_csv_markdown_and_plots(tmp_path):
    records = [_record("blocks.0.q"), _record("blocks.0.k", "dense", model=1000, dense=1000,
                                              rtl=1000, rtl_match=True)]
    files = write_report(records, tmp_path / "out", settings={"model": "synthetic"})
    assert set(files) == {"json", "csv", "markdown", "utilization", "cycles", "patterns",
                          "speedup"}
    data = json.loads(files["json"].read_text())
    assert data["settings"] == {"model": "synthetic"}
    assert data["summary"] == summarize(records)
    assert data["layers"][1]["rtl_cycles"] == 1000 and data["layers"][0]["speedup"] == 2.0
    with files["csv"].open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert (first["name"], first["pattern"], first["golden_match"], first["rtl_match"]) == \
        ("blocks.0.q", "2:4", "yes", "")
    assert dict(zip(CSV_COLUMNS, rows[2], strict=True))["rtl_match"] == "yes"
    markdown = files["markdown"].read_text()
    assert "| blocks.0.q | 8 x 40 | 2:4 | nm | 6 | 62.5% | 160 | 40 | 320 | 500 | 1,000 | " \
           "2.00x | - | yes |" in markdown
    assert "| 1,000 | yes, RTL yes |" in markdown
    assert "- result: PASS" in markdown
    for name in ("utilization", "cycles", "patterns", "speedup"):
        assert f"![{name}]({name}.png)" in markdown
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_without_plots(tmp_path):
    files = write_report([_record("a")], tmp_path, settings={}, plots=False)
    assert set(files) == {"json", "csv", "markdown"}
    assert not list(tmp_path.glob("*.png"))
    assert "## Plots" in files["markdown"].read_text()


def test_records_without_a_golden_run_are_cycle_model_only(tmp_path):
    records = [_record("q", golden=None), _record("fc1", golden=None)]
    for record in records:
        record.copies = 24
    summary = summarize(records)
    assert (summary["layers"], summary["linears"], summary["golden_layers"]) == (2, 48, 0)
    assert summary["cycle_model_only"] is True and summary["passed"] is True
    markdown = write_report(records, tmp_path, settings={}, plots=False)["markdown"].read_text()
    assert "- rows: 2 distinct layers standing for 48 linear layers" in markdown
    assert "| q ×24 | 8 x 40 | 2:4 | nm | 6 | 62.5% | 160 | 40 | 320 | 500 | 1,000 | 2.00x | " \
           "not run (no weights) | not run (no weights) |" in markdown
    assert "- result: nothing checked (cycle model only)" in markdown


def test_a_golden_run_is_not_cycle_model_only():
    summary = summarize([_record("a"), _record("b", golden=None)])
    assert (summary["golden_layers"], summary["golden_matches"]) == (1, 1)
    assert summary["cycle_model_only"] is False
