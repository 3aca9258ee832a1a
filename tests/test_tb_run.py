"""The run pipeline's settings, registries and layer selection (the CLI tests run it whole)."""

import io

import pytest
from sparsecim.sw import pipeline as run_module
from sparsecim.sw.pipeline import (
    MAPPINGS,
    SPARSIFIERS,
    RunError,
    RunSettings,
    load_settings,
    select_rtl_layers,
    settings_toml,
)
from sparsecim.tb.progress import Progress
from sparsecim.tb.run import run


def test_settings_toml_round_trips(tmp_path):
    settings = load_settings(overrides={"model": "synthetic", "shapes": "8x40, 6x20",
                                        "sparsify": "wanda", "pattern": "1:4", "pause": 0.25,
                                        "plots": False, "out": str(tmp_path / "r")})
    path = tmp_path / "settings.toml"
    path.write_text(settings_toml(settings))
    assert load_settings(path) == settings
    assert settings.shapes == ("8x40", "6x20")


def test_flags_override_the_file_and_none_is_not_a_flag(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('tokens = 3\npreset = "tiny"\n')
    settings = load_settings(path, {"tokens": 5, "preset": None})
    assert (settings.tokens, settings.preset) == (5, "tiny")


def test_default_run_folder_is_named_after_the_settings():
    assert str(RunSettings().run_dir()) == "build/runs/run-smollm2-dense-dense-flexcim"
    assert str(RunSettings(sparsify="wanda", pattern="2:4").run_dir()) == \
        "build/runs/run-smollm2-wanda-2of4-flexcim"


@pytest.mark.parametrize("overrides, message", [
    ({"tokens": 0}, "setting tokens must be a positive integer, not 0"),
    ({"pause": 1.0}, "setting pause must be a number in [0, 1), not 1.0"),
    ({"plots": "yes"}, "setting plots must be true or false, not 'yes'"),
    ({"preset": "huge"}, "preset must be one of flexcim, fpga, paper, tiny or a .toml file, "
                         "not 'huge'"),
    ({"sparsify": "flow", "flow_target": 1.5},
     "setting flow_target must be a number in [0, 1), not 1.5"),
    ({"colour": "blue"}, "unknown setting 'colour'; known are model, blocks, linears, shapes, "
                         "tokens, calib_tokens, sparsify, pattern, flow_target, "
                         "flow_tolerance, flow_dense_ends, monarch_mapping, mapping, preset, "
                         "rtl_layers, rtl_sample, pause, seed, out, plots, text, tech, chip, "
                         "attention_macs"),
], ids=["tokens", "pause", "plots", "preset", "flow-target", "unknown"])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(RunError) as exc:
        load_settings(overrides=overrides)
    assert str(exc.value) == message


@pytest.mark.parametrize("spec, expected", [
    ("none", []), ("0", []), ("", []), ("all", ["a", "b", "c"]), ("2", ["a", "b"]),
    ("c,a", ["a", "c"]),
])
def test_select_rtl_layers(spec, expected):
    assert select_rtl_layers(spec, ["a", "b", "c"]) == expected


def test_registries_name_the_built_in_methods():
    assert list(SPARSIFIERS) == ["dense", "magnitude", "wanda", "flow", "monarch"]
    assert list(MAPPINGS) == ["linear", "nm", "monarch-latency", "monarch-capacity",
                              "monarch-linear"]


def test_a_registered_sparsifier_is_usable_by_name(monkeypatch, tmp_path):
    """What a new method (Monarch, say) does to plug in: one registry entry."""
    def halve(layers, settings, cfg):
        return [run_module.Sparsified(layer.name, layer.weight / 2, (1, 1), "halve")
                for layer in layers]

    monkeypatch.setitem(SPARSIFIERS, "halve", halve)
    settings = load_settings(overrides={"model": "synthetic", "shapes": "4x16",
                                        "preset": "tiny", "sparsify": "halve", "plots": False,
                                        "calib_tokens": 2, "out": str(tmp_path / "r")})
    result = run(settings)
    assert result.passed
    assert [(r.sparsify, r.mapping) for r in result.records] == [("halve", "linear")]


def test_progress_draws_only_when_enabled(monkeypatch):
    monkeypatch.setenv("SPARSECIM_PROGRESS", "0")
    quiet = io.StringIO()
    with Progress(2, "x", stream=quiet) as bar:
        bar.advance("a")
    assert quiet.getvalue() == ""
    monkeypatch.setenv("SPARSECIM_PROGRESS", "1")
    shown = io.StringIO()
    with Progress(2, "x", stream=shown) as bar:
        bar.start("a")
        bar.advance("a")
    assert "x [############............] 1/2 a" in shown.getvalue()
    assert shown.getvalue().endswith("\n")


def test_a_mismatch_fails_the_run_with_exit_status_1(monkeypatch, tmp_path, capsys):
    from sparsecim.tb import cli

    linear = MAPPINGS["linear"]

    def wrong(cfg, layer, inp, settings):
        mapped = linear(cfg, layer, inp, settings)
        mapped.expected = mapped.expected + 1  # what a golden-model bug would look like
        return mapped

    monkeypatch.setitem(MAPPINGS, "linear", wrong)
    status = cli.main(["run", "--model", "synthetic", "--shapes", "4x16", "--preset", "tiny",
                       "--calib-tokens", "2", "--no-plots", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert status == 1
    assert "golden model  0/1 layers equal the integer matmul" in out
    assert out.rstrip().endswith("RESULT: FAIL")


# --------------------------------------------------------------------------------------------
# Layer-shape tables (no weights)


def _table_totals(name, tokens, pattern):
    """The whole-model figures of a table, summed here row by row, independently of run."""
    from sparsecim.hw.config import preset
    from sparsecim.sw.model_shapes import MODELS as TABLES
    from sparsecim.sw.nm import NMPattern, memory_bits
    from sparsecim.sw.schedule import predict_counters

    cfg = preset("flexcim")
    totals = {"model_cycles": 0, "dense_cycles": 0, "macs": 0, "weight_bytes": 0,
              "meta_bytes": 0, "linears": 0}
    for row in TABLES[name].linears:
        k, n, copies = row.inputs, row.outputs, row.count * row.blocks
        bits = memory_bits(n, k, NMPattern(*pattern), value_bits=8)
        totals["model_cycles"] += copies * predict_counters(cfg, k, n, tokens, pattern)["total"]
        totals["dense_cycles"] += copies * predict_counters(cfg, k, n, tokens)["total"]
        totals["macs"] += copies * tokens * n * -(-k // pattern[1]) * pattern[0]
        totals["weight_bytes"] += copies * -(-bits["values"] // 8)
        totals["meta_bytes"] += copies * -(-bits["metadata"] // 8)
        totals["linears"] += copies
    return totals


@pytest.mark.parametrize("name, sparsify, pattern, tokens", [
    ("bert-large", "magnitude", (2, 4), 1),
    ("bart-large", "wanda", (1, 4), 3),
    ("llama-2-7b", "dense", (1, 1), 1),
], ids=["bert-large-2:4", "bart-large-1:4", "llama-2-7b-dense"])
def test_shape_table_totals_are_the_table_summed_with_predict_counters(
        tmp_path, name, sparsify, pattern, tokens):
    settings = load_settings(overrides={"model": name, "sparsify": sparsify,
                                        "pattern": f"{pattern[0]}:{pattern[1]}",
                                        "tokens": tokens, "plots": False,
                                        "out": str(tmp_path / "r")})
    result = run(settings)
    summary = result.summary
    expected = _table_totals(name, tokens, pattern)
    assert {key: summary[key] for key in expected} == expected
    assert summary["speedup"] == expected["dense_cycles"] / expected["model_cycles"]
    assert summary["cycle_model_only"] is True and summary["golden_layers"] == 0
    assert all(r.golden_match is None and r.rtl_match is None for r in result.records)
    assert result.passed  # nothing failed; the CLI says nothing was checked


def test_bert_large_rows_are_its_six_linears_times_24_blocks(tmp_path):
    settings = load_settings(overrides={"model": "bert-large", "sparsify": "magnitude",
                                        "pattern": "2:4", "plots": False,
                                        "out": str(tmp_path / "r")})
    records = run(settings).records
    assert [(r.name, r.out_features, r.in_features, r.copies) for r in records] == [
        ("q", 1024, 1024, 24), ("k", 1024, 1024, 24), ("v", 1024, 1024, 24),
        ("o", 1024, 1024, 24), ("fc1", 4096, 1024, 24), ("fc2", 1024, 4096, 24)]
    assert {(r.pattern, r.mapping, r.density, r.utilization) for r in records} == {
        ("2:4", "nm", 0.5, 1.0)}
    # flexcim 2:4: a pass covers 256 inputs of 32 outputs, so 1024 x 1024 is 4 x 32 tiles.
    assert (records[0].k_tiles, records[0].n_tiles, records[0].arrays) == (4, 32, 128 * 24)


def test_shape_table_predicts_each_distinct_shape_once(monkeypatch, tmp_path):
    """llama-2-7b has 7 rows of 3 distinct shapes (q k v o, gate up, down): 3 predictions of
    the pattern and 3 of dense, not 224 layers' worth."""
    calls = []
    predict = run_module.predict_counters

    def counting(cfg, k, n, tokens, pattern=None):
        calls.append((k, n, pattern))
        return predict(cfg, k, n, tokens, pattern)

    monkeypatch.setattr(run_module, "predict_counters", counting)
    settings = load_settings(overrides={"model": "llama-2-7b", "sparsify": "wanda",
                                        "pattern": "2:4", "plots": False,
                                        "out": str(tmp_path / "r")})
    result = run(settings)
    assert len(result.records) == 7 and result.summary["linears"] == 224
    assert sorted(calls) == sorted([(4096, 4096, (2, 4)), (4096, 4096, (1, 1)),
                                    (4096, 11008, (2, 4)), (4096, 11008, (1, 1)),
                                    (11008, 4096, (2, 4)), (11008, 4096, (1, 1))])


def test_shape_table_linear_mapping_stores_and_runs_the_zeros(tmp_path):
    settings = load_settings(overrides={"model": "gpt2-medium", "sparsify": "magnitude",
                                        "pattern": "2:4", "mapping": "linear", "plots": False,
                                        "out": str(tmp_path / "r")})
    result = run(settings)
    summary = result.summary
    assert summary["model_cycles"] == summary["dense_cycles"]
    assert summary["meta_bytes"] == 0
    assert summary["weight_bytes"] == 1024 * 1024 * 4 * 24 + 2 * 1024 * 4096 * 24
    assert {(r.pattern, r.mapping) for r in result.records} == {("2:4", "linear")}


@pytest.mark.parametrize("overrides, message", [
    ({"sparsify": "flow"},
     "sparsify must be one of dense, magnitude, wanda for a layer-shape table, not 'flow' "
     "(model bert-large is a layer-shape table without weights; flow needs weights: use "
     "model smollm2 or synthetic)"),
    ({"sparsify": "monarch"},
     "sparsify must be one of dense, magnitude, wanda for a layer-shape table, not 'monarch' "
     "(model bert-large is a layer-shape table without weights; monarch needs weights: use "
     "model smollm2 or synthetic)"),
    ({"rtl_layers": "q"},
     "rtl_layers must be none for a layer-shape table, not 'q' (model bert-large is a "
     "layer-shape table without weights; nothing runs on the golden model or the RTL)"),
    ({"mapping": "monarch-latency"},
     "mapping must be one of auto, linear, nm for a layer-shape table, not 'monarch-latency' "
     "(model bert-large is a layer-shape table without weights)"),
    ({"sparsify": "magnitude", "pattern": "3:4"},
     "pattern 3:4 is not supported by preset flexcim; supported are dense and 1:2, 1:4, 1:8, "
     "2:4, 2:8, 4:8"),
], ids=["flow", "monarch", "rtl-layers", "mapping", "pattern"])
def test_shape_table_refuses_what_needs_weights(overrides, message):
    with pytest.raises(RunError) as exc:
        load_settings(overrides={"model": "bert-large"} | overrides)
    assert str(exc.value) == message


def test_every_shape_table_is_a_model():
    from sparsecim.sw.model_shapes import MODELS as TABLES

    assert list(run_module.MODELS) == ["smollm2", "synthetic", *TABLES]
    assert all(isinstance(run_module.MODELS[name], run_module.ShapeTable) for name in TABLES)


# --------------------------------------------------------------------------------------------
# RTL sampling (rtl_sample)


def test_sample_tiles_are_chosen_by_seed_and_layer():
    from sparsecim.sw.pipeline import sample_tiles

    tiles = sample_tiles(0, "blocks.0.q", 18, 4)
    assert tiles == sample_tiles(0, "blocks.0.q", 18, 4)  # the same run samples the same
    assert len(set(tiles)) == 4 and tiles == sorted(tiles)
    assert all(0 <= j < 18 for j in tiles)
    by_seed = {tuple(sample_tiles(seed, "blocks.0.q", 18, 4)) for seed in range(8)}
    by_name = {tuple(sample_tiles(0, f"blocks.{b}.q", 18, 4)) for b in range(8)}
    assert len(by_seed) > 1 and len(by_name) > 1
    assert sample_tiles(3, "x", 5, 9) == [0, 1, 2, 3, 4]  # at most every tile


@pytest.mark.parametrize("overrides, message", [
    ({"rtl_sample": -1}, "setting rtl_sample must be a non-negative integer, not -1"),
    ({"model": "bert-large", "rtl_sample": 2},
     "rtl_sample must be 0 for a layer-shape table, not 2 (model bert-large is a layer-shape "
     "table without weights; nothing runs on the RTL)"),
], ids=["negative", "shape-table"])
def test_bad_rtl_sample_is_named(overrides, message):
    with pytest.raises(RunError) as exc:
        load_settings(overrides=overrides)
    assert str(exc.value) == message


def _sampled_run(tmp_path, **overrides):
    settings = load_settings(overrides={
        "model": "synthetic", "shapes": ["38x20", "6x12"], "preset": "tiny", "tokens": 2,
        "calib_tokens": 2, "sparsify": "magnitude", "pattern": "2:4", "rtl_sample": 3,
        "seed": 5, "plots": False, "out": str(tmp_path / "run")} | overrides)
    return run(settings)


@pytest.mark.cosim
def test_rtl_sample_runs_the_seeded_tiles_and_reports_coverage(tmp_path):
    import json

    from sparsecim.hw.config import preset
    from sparsecim.sw.mapping import map_nm

    result = _sampled_run(tmp_path)
    big, small = result.records
    n_tiles = map_nm(preset("tiny"), 20, 38, (2, 4)).n_tiles  # 10 tiles of 4 columns
    tiles = run_module.sample_tiles(5, "synthetic.0", n_tiles, 3)
    assert big.rtl_tiles == tiles and big.rtl_match is True
    # Output columns of the chosen tiles: 4 each, 2 in the last (38 = 9 x 4 + 2).
    assert big.rtl_coverage == sum(min(4, 38 - 4 * j) for j in tiles) / 38
    cycles = 0
    for j in tiles:
        report = json.loads((tmp_path / "run" / "rtl" / "synthetic.0" / f"tile{j}" /
                             "report.json").read_text())
        assert report["passed"] and report["outputs_match"]
        cycles += report["model_counters"]["total"]
    assert big.rtl_cycles == cycles < big.model_cycles
    # Two tiles only: the layer runs whole.
    assert small.rtl_tiles is None and small.rtl_coverage == 1.0 and small.rtl_match is True
    assert small.rtl_cycles == small.model_cycles
    assert result.passed
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"RTL yes on 3 of 10 output tiles ({big.rtl_coverage:.1%} of outputs)" in report
    assert json.loads((tmp_path / "run" / "layers.json").read_text())["layers"][0][
        "rtl_coverage"] == big.rtl_coverage


@pytest.mark.cosim
def test_a_mismatch_in_a_sampled_tile_fails_the_run(monkeypatch, tmp_path):
    """The RTL runs the tile as it is, but is judged against golden results with one word
    changed, as if the RTL had computed that word wrong: the run must fail."""
    import dataclasses

    from sparsecim.tb import cosim

    real = cosim.run_rtl
    calls = []

    def judged_wrongly(trace, *, golden, **kwargs):
        calls.append(kwargs["run_dir"])
        if len(calls) == 2:
            results = golden.results.copy()
            results[0, 0] += 1
            golden = dataclasses.replace(golden, results=results)
        return real(trace, golden=golden, **kwargs)

    monkeypatch.setattr(cosim, "run_rtl", judged_wrongly)
    result = _sampled_run(tmp_path, shapes=["38x20"])
    (record,) = result.records
    assert len(calls) == 3
    assert record.golden_match is True and record.rtl_match is False
    assert not result.passed
def test_bad_tech_file_is_named(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("format = 1\n")
    with pytest.raises(RunError) as exc:
        load_settings(overrides={"tech": str(path)})
    assert str(exc.value) == "tech: t.toml: section [operating] is missing"


def test_run_reports_energy_per_layer_and_for_the_model(tmp_path):
    """Every layer's energy is its trace's events priced by the technology file; the model's
    figures are the layers' sums (pJ per token) and the ratio of their sums (TOPS/W)."""
    from sparsecim.hw.config import preset
    from sparsecim.sw.area import recorded_counts
    from sparsecim.sw.energy import evaluate, load_tech
    from sparsecim.sw.events import Events

    settings = load_settings(overrides={"model": "synthetic", "shapes": "8x40,6x20",
                                        "tokens": 3, "preset": "tiny", "sparsify": "magnitude",
                                        "pattern": "2:4", "plots": False, "tech": "45nm",
                                        "out": str(tmp_path / "r")})
    result = run(settings)
    cfg, tech = preset("tiny"), load_tech("45nm")
    energies = [r.energy for r in result.records]
    for r in result.records:
        assert r.energy["tech"] == "45nm"
        assert r.energy["events"]["cycles"] == r.model_cycles
        modelled = [v for v in r.energy["components_pj"].values() if v is not None]
        assert sum(modelled) == pytest.approx(r.energy["total_pj"])
        assert r.energy["pj_per_token"] == pytest.approx(r.energy["total_pj"] / 3)
    summary = result.summary["energy"]
    assert summary["pj_per_token"] == pytest.approx(sum(e["pj_per_token"] for e in energies))
    macs = sum(e["cell_macs"] for e in energies)
    assert summary["tops_per_w"] == pytest.approx(
        2 * macs / (sum(e["total_pj"] for e in energies) * 1e-12) / 1e12)
    assert summary["components_pj"]["off-chip memory"] is None
    # tiny's cell counts are recorded (sw/tech/cells.json): the area is theirs, priced.
    assert summary["area_mm2"] == pytest.approx(
        evaluate(cfg, Events(), tech, recorded_counts(cfg)).area_mm2)
    assert summary["area_mm2"] > 0


def test_shape_table_energy_counts_the_schedule_the_cycle_model_describes(tmp_path):
    """A layer-shape table has no weights, but its events are those of the schedule of the
    declared pattern: their cycles equal the cycle model's for every row."""
    settings = load_settings(overrides={"model": "smollm2-135m", "sparsify": "magnitude",
                                        "pattern": "2:4", "plots": False,
                                        "out": str(tmp_path / "r")})
    result = run(settings)
    for r in result.records:
        assert r.energy["events"]["cycles"] == r.model_cycles
        assert r.energy["cell_macs"] == r.energy["events"]["passes"] * 4096
    assert result.summary["energy"]["cycles"] == result.summary["model_cycles"]


@pytest.mark.cosim
def test_layer_rtl_step_runs_a_whole_layer_in_its_folder(tmp_path):
    """The RTL step of `gemm` and `layer` has the run's form (name, mapped, golden, events)
    and hands the scoreboard's report on with the figures."""
    from sparsecim.hw.config import preset
    from sparsecim.sw.pipeline import gemm_layer, run_layer
    from sparsecim.tb.run import layer_rtl_step

    mapped = gemm_layer(preset("tiny"), 20, 6, 2, 3, (2, 4))
    checked = run_layer(mapped)
    figures = layer_rtl_step(tmp_path / "g", pause=0.3)("g", mapped, checked.golden, None)
    assert figures.match is True and figures.report.passed
    assert figures.cycles == checked.golden.counters["total"]
    assert (figures.coverage, figures.tiles) == (1.0, None)
    assert figures.run_dir == str((tmp_path / "g").resolve())
    assert (tmp_path / "g" / "report.json").is_file()
