"""The run pipeline's settings, registries and layer selection (the CLI tests run it whole)."""

import io

import pytest
from sparsecim.tb import run as run_module
from sparsecim.tb.progress import Progress
from sparsecim.tb.run import (
    MAPPINGS,
    SPARSIFIERS,
    RunError,
    RunSettings,
    load_settings,
    select_rtl_layers,
    settings_toml,
)


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
    ({"preset": "huge"}, "preset must be one of flexcim, fpga, paper, tiny, not 'huge'"),
    ({"sparsify": "flow", "flow_target": 1.5},
     "setting flow_target must be a number in [0, 1), not 1.5"),
    ({"colour": "blue"}, "unknown setting 'colour'; known are model, blocks, linears, shapes, "
                         "tokens, calib_tokens, sparsify, pattern, flow_target, "
                         "flow_tolerance, flow_dense_ends, monarch_mapping, mapping, preset, "
                         "rtl_layers, pause, seed, out, plots"),
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
    result = run_module.run(settings)
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
