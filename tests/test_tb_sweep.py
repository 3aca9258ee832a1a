"""Sweeps: the spec's errors, the cache, resume, failures kept, executors agree, and a point
equals ``sparsecim run`` of the same settings."""

import csv
import math

import pytest
from sparsecim.tb.sweep import (
    AXES,
    SweepError,
    evaluate_point,
    load_spec,
    read_table,
    run_sweep,
)

SMALL = """
[sweep]
macro = ["tiny", "flexcim"]
model = ["smollm2-135m", "bert-large"]
sparsify = ["dense", "wanda"]
pattern = ["2:4", "1:8"]
tokens = [1, 8]
"""


def _spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _table(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("text,message", [
    ("[sweep]\nmacros = ['tiny']\n",
     "[sweep]: unknown axis 'macros'; axes are " + ", ".join(AXES)),
    ("[sweep]\npattern = []\n", "[sweep]: axis pattern must be a non-empty list, not []"),
    ("[sweep]\nmacro = ['tiny', 'huge']\n",
     "[sweep] macro: preset must be one of "),
    ("[sweep]\nmodel = ['smollm2']\n",
     "[sweep] model: model must be a layer-shape table (bert-large, "),
    ("[sweep]\nsparsify = ['flow']\n",
     "[sweep] sparsify: sparsify must be one of dense, magnitude, wanda, not 'flow'"),
    ("[sweep]\ntokens = [0]\n", "[sweep] tokens: tokens must be positive integers, not 0"),
    ("[[point]]\npattern = ['2:4']\n",
     "point 1: pattern must be one value in a [[point]], not the list ['2:4'] (lists go in "
     "[sweep])"),
    ("[sweeps]\n", "unknown table 'sweeps'; a spec has [sweep] and [[point]] tables"),
    ("", "has no points: give a [sweep] table or [[point]] tables"),
])
def test_spec_errors_are_one_line_naming_the_value(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(SweepError) as info:
        load_spec(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"sweep spec {path}")
    assert message in text


def test_unknown_preset_message_names_it(tmp_path):
    with pytest.raises(SweepError, match=r"not 'huge'"):
        load_spec(_spec(tmp_path, "[sweep]\nmacro = ['huge']\n"))


def test_cli_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, "[sweep]\nmacros = ['tiny']\n")
    status = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err == (f"sparsecim: error: sweep spec {path} [sweep]: unknown axis 'macros'; axes "
                   f"are {', '.join(AXES)}\n")


def test_dense_points_collapse_over_patterns(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    # 2 macros x 2 models x 2 tokens x (dense + wanda x 2 patterns)
    assert len(spec.points) == 2 * 2 * 2 * 3
    assert len({p["key"] for p in spec.points}) == len(spec.points)


def test_rerun_computes_nothing_and_gives_the_same_table(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    first = run_sweep(spec, tmp_path / "out", executor="inline")
    table = (tmp_path / "out" / "points.csv").read_text()
    again = run_sweep(spec, tmp_path / "out", executor="inline")
    assert (first.computed, first.cached) == (len(spec.points), 0)
    assert (again.computed, again.cached) == (0, len(spec.points))
    assert (tmp_path / "out" / "points.csv").read_text() == table
    # One row per layer per point plus a total.
    rows = read_table(tmp_path / "out" / "points.csv")
    layers = {"smollm2-135m": 7, "bert-large": 6}
    assert len(rows) == sum(layers[p["model"]] + 1 for p in spec.points)


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    whole = run_sweep(spec, tmp_path / "whole", executor="inline")
    calls = []

    def stop(done, cached, failed, total):
        calls.append(done)
        if len(calls) == 3:  # after two batches of 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", executor="inline", batch=4, on_progress=stop)
    # The table holds exactly the finished points' rows (a header, then 8 points).
    partial = _table(tmp_path / "out" / "points.csv")
    assert len({r["key"] for r in partial}) == 8
    resumed = run_sweep(spec, tmp_path / "out", executor="inline")
    assert (resumed.cached, resumed.computed) == (8, len(spec.points) - 8)
    assert (tmp_path / "out" / "points.csv").read_text() == \
        (tmp_path / "whole" / "points.csv").read_text()
    assert resumed.rows == whole.rows


def test_a_failed_point_is_a_row_with_its_error(tmp_path):
    text = ("[sweep]\nmacro = ['fpga', 'tiny']\nmodel = ['bert-large']\nsparsify = ['wanda']\n"
            "pattern = ['2:8']\n")
    result = run_sweep(load_spec(_spec(tmp_path, text)), tmp_path / "out", executor="inline")
    assert result.failed == 1
    failed = [r for r in read_table(result.table) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["macro"] == "fpga" and failed[0]["layer"] == "total"
    assert failed[0]["error"].startswith("pattern 2:8 is not supported by preset fpga")
    assert {r["macro"] for r in read_table(result.table) if r["status"] == "ok"} == {"tiny"}
    again = run_sweep(load_spec(tmp_path / "spec.toml"), tmp_path / "out", executor="inline")
    assert (again.computed, again.failed) == (0, 1)  # the failure is cached, not dropped


@pytest.mark.parametrize("tokens", [1, 4])
def test_point_equals_run_of_the_same_settings(tmp_path, tokens):
    from sparsecim.sw.pipeline import load_settings
    from sparsecim.tb.run import run

    spec = load_spec(_spec(tmp_path, f"[[point]]\nmacro = 'flexcim'\nmodel = 'smollm2-135m'\n"
                                     f"sparsify = 'wanda'\npattern = '2:4'\ntokens = {tokens}\n"))
    result = evaluate_point(spec.points[0])
    settings = load_settings(overrides={
        "model": "smollm2-135m", "sparsify": "wanda", "pattern": "2:4", "preset": "flexcim",
        "tokens": tokens, "out": str(tmp_path / "run"), "plots": False})
    records = run(settings).records
    layers = result["rows"][:-1]
    assert [r["layer"] for r in layers] == [r.name for r in records]
    for row, record in zip(layers, records, strict=True):
        assert row["cycles"] == record.model_cycles
        assert row["macs"] == record.macs
        assert row["weight_bytes"] == record.weight_bytes
        assert row["arrays"] == record.arrays
        assert row["utilization"] == record.utilization
        # The run and the sweep price the same exact counts (sparsecim.sw.sweep_model).
        assert math.isclose(row["energy_pj"], record.energy["total_pj"], rel_tol=0, abs_tol=0)
    total = result["rows"][-1]
    assert total["cycles"] == sum(r.model_cycles for r in records)


def test_process_pool_equals_in_process(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    inline = run_sweep(spec, tmp_path / "a", executor="inline")
    pooled = run_sweep(spec, tmp_path / "b", executor="process", workers=2)
    assert pooled.rows == inline.rows


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra sparsecim[sweep]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_equals_in_process(tmp_path, local_ray):
    spec = load_spec(_spec(tmp_path, SMALL))
    inline = run_sweep(spec, tmp_path / "a", executor="inline")
    on_ray = run_sweep(spec, tmp_path / "b", executor="ray", batch=5)
    assert on_ray.computed == len(spec.points)
    assert on_ray.rows == inline.rows
    # And one point's result, as a Ray task against this process.
    point = spec.points[-1]
    assert local_ray.get(local_ray.remote(evaluate_point).remote(point)) == evaluate_point(point)


def test_rtl_jobs_sample_tiles_by_seed(tmp_path):
    from sparsecim.tb.sweep_rtl import rtl_jobs

    spec = load_spec(_spec(tmp_path, SMALL))
    results = {p["key"]: {"status": "ok"} for p in spec.points}
    jobs = rtl_jobs(spec.points, results, 2, 7)
    assert jobs == rtl_jobs(spec.points, results, 2, 7)
    assert jobs != rtl_jobs(spec.points, results, 2, 8)
    # Per point and layer, 2 tiles (points the RTL cannot tell apart share their jobs).
    assert len({j["job"] for j in jobs}) == len(jobs)
    layers = {"smollm2-135m": 7, "bert-large": 6}
    assert len(jobs) == 2 * sum(layers[p["model"]] for p in spec.points)
    assert all(0 <= j["tile"] < -(-j["outputs"] // 4) for j in jobs if j["macro"] == "tiny")


@pytest.mark.cosim
def test_sweep_rtl_sample_passes_on_verilator(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, "[[point]]\nmacro = 'tiny'\nmodel = 'smollm2-135m'\n"
                           "sparsify = 'wanda'\npattern = '2:4'\ntokens = 2\n")
    status = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor",
                   "inline", "--rtl-sample", "1", "--seed", "3", "--no-plots"])
    out = capsys.readouterr().out
    rows = _table(tmp_path / "out" / "rtl.csv")
    # One tile of each of smollm2's 7 linears (tiles chosen per layer name).
    assert [r["layer"] for r in rows] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert all(r["passed"] == "True" for r in rows)
    assert all(r["rtl_cycles"] == r["model_cycles"] for r in rows)
    assert "7 of 7 sampled tiles passed" in out
    assert status == 0


def test_cli_sweep_prints_its_summary_and_writes_the_report(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, SMALL)
    status = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "inline",
                   "--no-plots"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith(f"sparsecim sweep {path}: 24 points (24 computed, 0 cached, "
                          f"0 failed) in ")
    assert "smollm2-135m: 12 points" in out and "bert-large: 12 points" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# Sweep report: 24 points")
    main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "inline",
          "--no-plots"])
    assert "(0 computed, 24 cached, 0 failed)" in capsys.readouterr().out
