"""The CLI through its installed entry point, as a user runs it."""

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_ENV, ROOT, int8, run_cli
from sparsecim.hw.config import preset
from sparsecim.sw.golden import run_trace
from sparsecim.sw.model_shapes import MODELS as SHAPE_TABLES
from sparsecim.sw.nm import NMPattern, activation_norms, prune_magnitude, prune_wanda
from sparsecim.sw.schedule import predict_counters, schedule_layer


def test_help_lists_subcommands():
    done = run_cli("--help")
    assert done.returncode == 0
    assert "gemm" in done.stdout


def test_gemm_golden_only_reports_figures():
    done = run_cli("gemm", "--preset", "tiny", "--k", "37", "--n", "9", "--tokens", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "golden model  outputs equal the int64 matmul reference: yes" in out
    # By hand from the ISA costs: K tiles 16+16+5, N tiles 4+4+1, all 3 tokens resident.
    # CONFIG 1 + LOAD_A of 9 entries (1 + 9*4) + per N tile [LOAD_W 17 + 17 + 6,
    # 3 COMPUTEs of 1+3+2, READ 1+3] * 3 + END 1 = 1 + 37 + 62*3 + 1.
    assert f"cycle model   {1 + 37 + 62 * 3 + 1} cycles" in out
    assert out.rstrip().endswith("RESULT: PASS")


def test_gemm_nm_pattern_reports_its_tiles_and_cycles():
    """1:8 on tiny: a pass covers 4 × 4 × 8 = 128 inputs (26 beats of 5), so K = 300 is 3 K
    tiles; N = 6 is 2 N tiles; 2 tokens, 6 entries resident."""
    done = run_cli("gemm", "--preset", "tiny", "--k", "300", "--n", "6", "--tokens", "2",
                "--pattern", "1:8")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "(K 300 x N 6) 1:8" in out
    assert "6 array tiles of 128 inputs x 4 outputs" in out
    # CONFIG 1 + LOAD_A (1 + 6*26) + per N tile [2 full K tiles x LOAD_W (1+16), the last
    # K tile's LOAD_W, 3 x COMPUTE (1+2+2), READ (1+2)] + END 1. The last K tile has 44 inputs
    # = 6 groups of 8: rows 0..3 of cluster 0 (sub-macro 0), rows 0..1 of cluster 1
    # (sub-macro 1), so it loads global rows 0..5: 1 + 6.
    per_n_tile = 2 * (1 + 16) + (1 + 6) + 3 * (1 + 2 + 2) + 1 + 2
    assert f"cycle model   {1 + 1 + 6 * 26 + 2 * per_n_tile + 1} cycles" in out
    assert 1 + 1 + 6 * 26 + 2 * per_n_tile + 1 == 277
    assert "golden model  outputs equal the int64 matmul reference: yes" in out


@pytest.mark.cosim
def test_gemm_rtl_passes_with_pauses(tmp_path):
    done = run_cli("gemm", "--preset", "tiny", "--k", "37", "--n", "9", "--tokens", "3",
                "--rtl", "--pause", "0.3", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL outputs   match golden: yes" in done.stdout
    assert "vs model 225: equal" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["gemm", "--k", "0"], "argument --k: must be a positive integer, not 0"),
    (["gemm", "--pause", "1.5"], "argument --pause: must be a number in [0, 1), not 1.5"),
    (["gemm", "--preset", "huge"],
     "sparsecim: error: preset must be one of flexcim, fpga, paper, tiny or a .toml file, "
     "not 'huge'\n"),
    (["gemm", "--preset", "tiny", "--pattern", "3:4"],
     "sparsecim: error: pattern 3:4 is not supported by preset tiny; supported are dense "
     "and 1:2, 1:4, 1:8, 2:4, 2:8, 4:8"),
    (["gemm", "--pattern", "2-4"], "sparsecim: error: pattern must be 'N:M'"),
], ids=["k", "pause", "preset", "unsupported-pattern", "malformed-pattern"])
def test_bad_arguments_fail_cleanly(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_workload_that_could_wrap_is_refused_without_traceback():
    done = run_cli("gemm", "--preset", "tiny", "--k", "200000", "--n", "1", "--tokens", "1")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: K must be at most 131071 for 32-bit accumulators "
                           "(larger K could wrap), not 200000\n")


# --------------------------------------------------------------------------------------------
# Every subcommand


@pytest.mark.parametrize("command", ["gemm", "layer", "sim", "fpga", "run"])
def test_every_subcommand_has_help(command):
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: sparsecim {command}")


# --------------------------------------------------------------------------------------------
# layer


def _layer_files(tmp_path, w, x):
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", x)
    return ["layer", "--preset", "tiny", "--weights", str(tmp_path / "w.npy"),
            "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]


def test_layer_writes_exact_int32_outputs_and_the_model_cycles(tmp_path):
    w, x = int8((9, 37), 1), int8((3, 37), 2)  # (out, in) and (tokens, in)
    done = run_cli(*_layer_files(tmp_path, w, x))
    assert done.returncode == 0, done.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int32 and y.shape == (3, 9)
    assert np.array_equal(y, x.astype(np.int64) @ w.T.astype(np.int64))
    # The same layer as test_gemm_golden_only_reports_figures: K 37, N 9, 3 tokens.
    assert f"cycle model   {1 + 37 + 62 * 3 + 1} cycles" in done.stdout
    assert "weights 9 x 37 (out_features x in_features), 3 token(s), dense" in done.stdout
    assert done.stdout.rstrip().endswith("RESULT: PASS")


def test_layer_runs_weights_that_obey_the_pattern_as_they_are(tmp_path):
    w = prune_magnitude(int8((6, 40), 3), NMPattern(2, 4))
    x = int8((2, 40), 4)
    done = run_cli(*_layer_files(tmp_path, w, x), "--pattern", "2:4")
    assert done.returncode == 0, done.stderr
    assert "pruned" not in done.stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), x.astype(np.int64) @ w.T.astype(np.int64))


def test_layer_refuses_weights_that_break_the_pattern_naming_the_group(tmp_path):
    w = np.zeros((2, 8), dtype=np.int8)
    w[1, 4:7] = [1, 2, 3]
    done = run_cli(*_layer_files(tmp_path, w, int8((1, 8), 5)), "--pattern", "2:4")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: weights row 1, inputs 4..7 (group 1) have 3 "
                           "non-zero weights; pattern 2:4 allows at most 2 (or prune them "
                           "with --prune magnitude)\n")
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_layer_prunes_on_request(tmp_path, method):
    w, x = int8((5, 24), 6), int8((4, 24), 7)
    done = run_cli(*_layer_files(tmp_path, w, x), "--pattern", "1:4", "--prune", method)
    assert done.returncode == 0, done.stderr
    if method == "magnitude":
        pruned = prune_magnitude(w.astype(np.int64), NMPattern(1, 4))
    else:
        pruned = prune_wanda(w.astype(np.int64), activation_norms(x), NMPattern(1, 4))
    assert f"pruned        {np.count_nonzero(w) - np.count_nonzero(pruned)} weights by " \
           f"{method} to 1:4" in done.stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), x.astype(np.int64) @ pruned.T)


@pytest.mark.parametrize("w, x, message", [
    (np.ones((2, 8), np.float32), np.ones((1, 8), np.int8),
     "weights must have an integer dtype, not float32"),
    (np.array([[1, 2], [200, 0]], np.int16), np.ones((1, 2), np.int8),
     "weights[1, 0] must be in -128..127 (8-bit signed), not 200"),
    (np.ones((2, 8), np.int8), np.full((1, 8), -129, np.int16),
     "inputs[0, 0] must be in -128..127 (8-bit signed), not -129"),
    (np.ones(8, np.int8), np.ones((1, 8), np.int8),
     "weights must be a 2-D matrix, not an array of shape (8,)"),
    (np.ones((3, 8), np.int8), np.ones((1, 5), np.int8),
     "inputs must have 8 columns (in_features of weights (3, 8)), not 5"),
], ids=["float", "weight-range", "input-range", "1-d", "shapes"])
def test_layer_bad_operands_are_named(tmp_path, w, x, message):
    done = run_cli(*_layer_files(tmp_path, w, x))
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: {message}\n"


def test_layer_missing_or_unreadable_files_are_named(tmp_path):
    args = _layer_files(tmp_path, int8((2, 4), 0), int8((1, 4), 0))
    missing = tmp_path / "nope.npy"
    done = run_cli(*[str(missing) if a.endswith("w.npy") else a for a in args])
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: weights file {missing} does not exist\n"
    (tmp_path / "x.npy").write_text("not an array")
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: inputs file {tmp_path / 'x.npy'} must "
                                  "be a .npy array, not unreadable: ")
    assert "Traceback" not in done.stderr


def test_layer_unsupported_pattern_is_refused(tmp_path):
    done = run_cli(*_layer_files(tmp_path, int8((2, 4), 0), int8((1, 4), 0)),
                "--pattern", "3:4")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: pattern 3:4 is not supported by preset tiny; "
                           "supported are dense and 1:2, 1:4, 1:8, 2:4, 2:8, 4:8\n")


# The INT32 check of `layer`'s outputs: tests/test_sw_pipeline.py (int32_outputs).


@pytest.mark.cosim
def test_layer_rtl_matches(tmp_path):
    w = prune_magnitude(int8((5, 30), 8), NMPattern(2, 4))
    done = run_cli(*_layer_files(tmp_path, w, int8((2, 30), 9)), "--pattern", "2:4", "--rtl",
                "--run-dir", str(tmp_path / "rtl"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL outputs   match golden: yes" in done.stdout
    assert ": equal" in done.stdout


# --------------------------------------------------------------------------------------------
# sim


def _saved_trace(path):
    cfg = preset("tiny")
    x, w = int8((2, 20), 10), int8((20, 6), 11)
    schedule = schedule_layer(cfg, x, w)
    schedule.trace.save(path)
    return schedule


def test_sim_runs_a_saved_trace_on_the_golden_model(tmp_path):
    schedule = _saved_trace(tmp_path / "t.txt")
    done = run_cli("sim", str(tmp_path / "t.txt"), "--results", str(tmp_path / "r.npy"))
    assert done.returncode == 0, done.stderr
    model = run_trace(schedule.trace)
    assert f"cycle model   {model.counters['total']} cycles" in done.stdout
    assert f"golden model  {schedule.result_beats} result beats, status NONE, halted" \
        in done.stdout
    assert np.array_equal(np.load(tmp_path / "r.npy"), model.results)


@pytest.mark.cosim
def test_sim_waves_writes_a_waveform_and_says_how_to_open_it(tmp_path):
    _saved_trace(tmp_path / "t.txt")
    done = run_cli("sim", str(tmp_path / "t.txt"), "--waves", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    waves = [p for p in (tmp_path / "run").iterdir() if p.name.startswith("dump.")]
    assert len(waves) == 1 and waves[0].stat().st_size > 0
    assert f"open with: gtkwave {waves[0]}" in done.stdout
    assert "RTL outputs   match golden: yes" in done.stdout


@pytest.mark.parametrize("text, message", [
    ("garbage\n", ":1: missing header line 'sparsecim-trace'"),
    ("sparsecim-trace 9\nisa 3\nconfig {}\n", ":1: trace format version must be 1, not '9'"),
], ids=["no-header", "version"])
def test_sim_malformed_trace_fails_cleanly(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    done = run_cli("sim", str(path))
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: malformed trace: {path}{message}\n"


def test_sim_missing_trace_is_named(tmp_path):
    done = run_cli("sim", str(tmp_path / "none.txt"))
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: trace file {tmp_path / 'none.txt'} does not exist\n"


# --------------------------------------------------------------------------------------------
# run


def _run_synthetic(tmp_path, *extra):
    return run_cli("run", "--model", "synthetic", "--shapes", "8x40,6x20", "--preset", "tiny",
                "--tokens", "2", "--calib-tokens", "8", "--out", str(tmp_path / "run"), *extra)


def test_run_synthetic_writes_report_and_settings(tmp_path):
    done = _run_synthetic(tmp_path, "--sparsify", "magnitude", "--pattern", "2:4",
                          "--no-plots")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "sparsecim run: synthetic (2 layers), magnitude 2:4, mapping auto, preset tiny, " \
           "2 token(s)" in out
    assert "golden model  2/2 layers equal the integer matmul" in out
    assert out.rstrip().endswith("RESULT: PASS")
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "layers.json").read_text())
    assert [r["name"] for r in report["layers"]] == ["synthetic.0", "synthetic.1"]
    assert {r["pattern"] for r in report["layers"]} == {"2:4"}
    assert {r["mapping"] for r in report["layers"]} == {"nm"}
    # The cycle model of each layer is what predict_counters gives for its shape.
    cfg = preset("tiny")
    for record, (k, n) in zip(report["layers"], [(40, 8), (20, 6)], strict=True):
        assert record["model_cycles"] == predict_counters(cfg, k, n, 2, (2, 4))["total"]
        assert record["dense_cycles"] == predict_counters(cfg, k, n, 2)["total"]
    assert (run_dir / "layers.csv").read_text().startswith("name,out_features,in_features,")
    assert (run_dir / "report.md").exists()
    settings = tomllib.loads((run_dir / "settings.toml").read_text())["run"]
    assert settings["sparsify"] == "magnitude" and settings["shapes"] == ["8x40", "6x20"]


def test_run_repeats_from_its_settings_file_and_flags_override_it(tmp_path):
    first = _run_synthetic(tmp_path, "--no-plots")
    assert first.returncode == 0, first.stderr
    settings = tmp_path / "run" / "settings.toml"
    again = run_cli("run", "--config", str(settings), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "run" / "layers.json").read_text())["layers"]
    b = json.loads((tmp_path / "again" / "layers.json").read_text())["layers"]
    assert a == b
    override = run_cli("run", "--config", str(settings), "--out", str(tmp_path / "o"),
                    "--sparsify", "wanda", "--pattern", "1:4")
    assert override.returncode == 0, override.stderr
    c = json.loads((tmp_path / "o" / "layers.json").read_text())["layers"]
    assert {r["pattern"] for r in c} == {"1:4"} and {r["sparsify"] for r in c} == {"wanda"}


def test_run_reads_a_run_table_from_toml(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text('[run]\nmodel = "synthetic"\nshapes = ["4x16"]\npreset = "fpga"\n'
                      f'tokens = 1\ncalib_tokens = 4\nplots = false\nout = "{tmp_path / "r"}"\n')
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "synthetic.0" in done.stdout and "preset fpga" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "model must be one of smollm2, synthetic, bert-large, bart-large, "
                          "gpt2-medium, llama-2-7b, smollm2-135m, opt-1.3b or a path (a "
                          "Hugging Face folder, .gguf, .onnx or config.json), not 'gpt5'"),
    (["--sparsify", "magnitude", "--pattern", "3:4"],
     "pattern 3:4 is not supported by preset tiny; supported are dense and 1:2, 1:4, 1:8, "
     "2:4, 2:8, 4:8"),
    (["--sparsify", "flowers"],
     "sparsify must be one of dense, magnitude, wanda, flow, monarch, not 'flowers'"),
    (["--mapping", "zigzag"], "mapping must be auto or one of linear, nm, monarch-latency, "
                              "monarch-capacity, monarch-linear, not 'zigzag'"),
    (["--rtl-layers", "blocks.0.q"], "rtl layer 'blocks.0.q' is not a layer of this run; "
                                     "layers are synthetic.0, synthetic.1"),
    (["--shapes", "8by40"], "shape must be OUTxIN with positive sizes (out_features x "
                            "in_features), not '8by40'"),
    (["--rtl-sample", "-2"], "setting rtl_sample must be a non-negative integer, not -2"),
], ids=["model", "pattern", "sparsify", "mapping", "rtl-layer", "shape", "rtl-sample"])
def test_run_bad_settings_fail_cleanly(tmp_path, args, message):
    base = ["run", "--model", "synthetic", "--shapes", "8x40,6x20", "--preset", "tiny",
            "--out", str(tmp_path / "run"), "--no-plots"]
    done = run_cli(*base, *args)
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: {message}\n"


def test_run_bad_settings_file_is_named(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text("colour = 'blue'\n")
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: settings file {config}: unknown key "
                                  "'colour'; known are model, blocks, ")
    config.write_text("tokens = 'many'\n")
    done = run_cli("run", "--config", str(config))
    assert done.stderr == "sparsecim: error: setting tokens must be an integer, not 'many'\n"
    config.write_text("tokens = \n")
    done = run_cli("run", "--config", str(config))
    assert done.stderr.startswith(f"sparsecim: error: settings file {config} is not valid "
                                  "TOML: ")
    assert "Traceback" not in done.stderr


def test_run_smollm2_block_linears_golden(tmp_path):
    """The packaged model's real weights: block 0's k and down, one token, Wanda 2:4."""
    done = run_cli("run", "--model", "smollm2", "--linears", "k,down", "--sparsify", "wanda",
                "--pattern", "2:4", "--out", str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    layers = {r["name"]: r for r in report["layers"]}
    assert list(layers) == ["blocks.0.k", "blocks.0.down"]
    assert (layers["blocks.0.k"]["out_features"], layers["blocks.0.k"]["in_features"]) == \
        (192, 576)
    assert (layers["blocks.0.down"]["out_features"], layers["blocks.0.down"]["in_features"]) \
        == (576, 1536)
    assert all(r["golden_match"] for r in layers.values())
    assert report["summary"]["passed"]


@pytest.mark.cosim
def test_run_rtl_layers_are_scoreboarded(tmp_path):
    done = _run_synthetic(tmp_path, "--sparsify", "wanda", "--pattern", "1:2",
                          "--rtl-layers", "1", "--pause", "0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    first, second = report["layers"]
    assert first["rtl_match"] is True and first["rtl_cycles"] == first["model_cycles"]
    assert second["rtl_match"] is None
    assert "RTL           1/1 layer(s) bit-exact on Verilator, cycles equal to the model on 1" \
        in done.stdout
    for name in ("utilization", "cycles", "patterns", "speedup"):
        assert (tmp_path / "run" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_flow_chooses_one_pattern_per_block(tmp_path):
    """Three blocks, ends dense inside the program: a mean sparsity of 0.25 leaves the middle
    block 0.75 to reach, which among the released choices only 2:8 gives."""
    done = run_cli("run", "--model", "smollm2", "--blocks", "3", "--linears", "k,v",
                "--sparsify", "flow", "--flow-target", "0.25", "--out", str(tmp_path / "run"),
                "--no-plots")
    assert done.returncode == 0, done.stderr
    assert "flow (target sparsity 0.25)" in done.stdout
    layers = json.loads((tmp_path / "run" / "layers.json").read_text())["layers"]
    assert [(r["name"], r["pattern"], r["mapping"]) for r in layers] == [
        ("blocks.0.k", "dense", "linear"), ("blocks.0.v", "dense", "linear"),
        ("blocks.1.k", "2:8", "nm"), ("blocks.1.v", "2:8", "nm"),
        ("blocks.2.k", "dense", "linear"), ("blocks.2.v", "dense", "linear")]
    assert all(r["golden_match"] for r in layers)


def test_run_flow_needs_blocks(tmp_path):
    done = run_cli("run", "--model", "synthetic", "--sparsify", "flow", "--out",
                str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: sparsify flow needs a model with decoder blocks "
                           "(model smollm2), not synthetic layers\n")


@pytest.mark.parametrize("kind", ["latency", "capacity", "linear"])
def test_run_monarch_maps_both_factors_as_one_trace(tmp_path, kind):
    """16 x 16 projected to 4 blocks of 4 x 4 per factor on tiny (s = b = 4 = rows)."""
    done = run_cli("run", "--model", "synthetic", "--shapes", "16x16", "--preset", "tiny",
                "--tokens", "3", "--calib-tokens", "8", "--sparsify", "monarch",
                "--monarch-mapping", kind, "--out", str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads((tmp_path / "run" / "layers.json").read_text())["layers"]
    assert (record["pattern"], record["mapping"]) == ("monarch 4x4", f"monarch-{kind}")
    assert record["golden_match"] is True
    # Two factors of 4 blocks of 4 x 4 keep 128 of the 256 weights.
    assert record["density"] == 0.5 and record["macs"] == 3 * 128


def test_run_monarch_refuses_layers_it_cannot_map(tmp_path):
    done = run_cli("run", "--model", "synthetic", "--shapes", "8x16", "--sparsify", "monarch",
                "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: sparsify monarch needs square layers of a square "
                           "size (blocks i = j = o on the macro), not synthetic.0 of 8x16 "
                           "(i=4, j=2, o=4); choose such layers (e.g. --linears q,o)\n")


@pytest.mark.cosim
def test_run_monarch_layer_on_the_rtl(tmp_path):
    done = run_cli("run", "--model", "synthetic", "--shapes", "16x16", "--preset", "tiny",
                "--tokens", "2", "--calib-tokens", "8", "--sparsify", "monarch",
                "--rtl-layers", "all", "--out", str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 0, done.stdout + done.stderr
    (record,) = json.loads((tmp_path / "run" / "layers.json").read_text())["layers"]
    assert record["rtl_match"] is True and record["rtl_cycles"] == record["model_cycles"]


# --------------------------------------------------------------------------------------------
# run on a layer-shape table (no weights)


def test_run_bert_large_shape_table_reports_cycle_model_figures(tmp_path):
    done = run_cli("run", "--model", "bert-large", "--sparsify", "magnitude", "--pattern", "2:4",
                "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("sparsecim run: bert-large (layer-shape table, no weights: 6 "
                          "distinct linears standing for 144), magnitude 2:4, mapping auto, "
                          "preset flexcim, 1 token(s)\n")
    cfg = preset("flexcim")
    q = predict_counters(cfg, 1024, 1024, 1, (2, 4))["total"] * 24
    q_dense = predict_counters(cfg, 1024, 1024, 1)["total"] * 24
    assert f"  q x24              1024x1024     2:4      nm   3072 100.0% {q:>9,} " \
           f"{q_dense:>9,}   {q_dense / q:.2f}x       - not run      not run\n" in out
    assert "  figures       cycle-model only: sparsecim.sw.schedule.predict_counters once per " \
           "distinct shape, a row xN stands for N = count per block x blocks layers and its " \
           "figures are totals over them; the 2:4 pattern is declared, nothing is pruned\n" in out
    assert "  golden model  not run (no weights)\n  RTL           not run (no weights)\n" in out
    assert out.rstrip().endswith("RESULT: cycle model only (no weights: nothing to check)")
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "layers.json").read_text())
    rows = [(lin.inputs, lin.outputs, lin.count * lin.blocks)
            for lin in SHAPE_TABLES["bert-large"].linears]
    assert report["summary"]["model_cycles"] == sum(
        c * predict_counters(cfg, k, n, 1, (2, 4))["total"] for k, n, c in rows)
    assert report["summary"]["dense_cycles"] == sum(
        c * predict_counters(cfg, k, n, 1)["total"] for k, n, c in rows)
    assert report["summary"]["cycle_model_only"] is True
    assert [r["copies"] for r in report["layers"]] == [24] * 6
    assert {r["golden_match"] for r in report["layers"]} == {None}
    csv_head = (run_dir / "layers.csv").read_text().splitlines()[:2]
    assert csv_head[0].startswith("name,out_features,in_features,tokens,copies,")
    assert csv_head[1].startswith("q,1024,1024,1,24,magnitude,2:4,nm,3072,")
    markdown = (run_dir / "report.md").read_text()
    assert "- **figures are cycle-model only** (predicted counters, nothing verified): a " \
           "layer-shape table has no weights, so the golden model and the RTL did not run" \
           in markdown
    assert "- rows: 6 distinct layers standing for 144 linear layers" in markdown
    assert "| not run (no weights) | not run (no weights) |" in markdown
    assert "| q ×24 | 1024 x 1024 | 2:4 | nm | 3072 |" in markdown
    assert "- result: nothing checked (cycle model only)" in markdown
    for name in ("utilization", "cycles", "patterns", "speedup"):
        assert (run_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = tomllib.loads((run_dir / "settings.toml").read_text())["run"]
    assert (settings["model"], settings["sparsify"], settings["pattern"]) == \
        ("bert-large", "magnitude", "2:4")
    again = run_cli("run", "--config", str(run_dir / "settings.toml"), "--out",
                 str(tmp_path / "again"), "--no-plots")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "layers.json").read_text())["layers"] == \
        report["layers"]


def test_run_model_list_names_every_model():
    done = run_cli("run", "--model", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sparsecim run models (--model NAME):"
    assert [line.split()[0] for line in lines[1:]] == ["smollm2", "synthetic", *SHAPE_TABLES]
    assert "  bert-large       layer-shape table, no weights: 6 distinct linears, 144 in all, " \
           "301,989,888 weights (cycle-model figures only)" in lines


def test_run_help_names_the_shape_tables():
    done = run_cli("run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "layer- shape table without weights (cycle-model figures only: bert-large, " \
           "bart-large, gpt2-medium, llama-2-7b, smollm2-135m, opt-1.3b), a path (a Hugging " \
           "Face folder, .gguf, .onnx, or a config.json for its shape table), or list" in text


@pytest.mark.parametrize("args, message", [
    (["--sparsify", "flow"],
     "sparsify must be one of dense, magnitude, wanda for a layer-shape table, not 'flow' "
     "(model llama-2-7b is a layer-shape table without weights; flow needs weights: use "
     "model smollm2 or synthetic)"),
    (["--sparsify", "monarch"],
     "sparsify must be one of dense, magnitude, wanda for a layer-shape table, not 'monarch' "
     "(model llama-2-7b is a layer-shape table without weights; monarch needs weights: use "
     "model smollm2 or synthetic)"),
    (["--rtl-layers", "all"],
     "rtl_layers must be none for a layer-shape table, not 'all' (model llama-2-7b is a "
     "layer-shape table without weights; nothing runs on the golden model or the RTL)"),
    (["--mapping", "monarch-capacity"],
     "mapping must be one of auto, linear, nm for a layer-shape table, not "
     "'monarch-capacity' (model llama-2-7b is a layer-shape table without weights)"),
    (["--sparsify", "wanda", "--pattern", "3:4"],
     "pattern 3:4 is not supported by preset flexcim; supported are dense and 1:2, 1:4, 1:8, "
     "2:4, 2:8, 4:8"),
], ids=["flow", "monarch", "rtl-layers", "mapping", "pattern"])
def test_run_shape_table_bad_settings_fail_cleanly(tmp_path, args, message):
    done = run_cli("run", "--model", "llama-2-7b", "--out", str(tmp_path / "run"), "--no-plots",
                *args)
    assert done.returncode == 2
    assert done.stderr == f"sparsecim: error: {message}\n"
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2; a failed check: exit 1; interrupted: exit 130 (issue 16)


def _assert_one_line_error(status, err, message=None):
    assert status == 2
    assert err.startswith("sparsecim: error: ") and err.count("\n") == 1 and err.endswith("\n")
    if message is not None:
        assert err == f"sparsecim: error: {message}\n"


def _program(seed=0, illegal=None):
    from sparsecim.tb.randprog import random_program

    return random_program(preset("tiny"), np.random.default_rng(seed), illegal=illegal)


def _lines_of(trace):
    return trace.to_text().splitlines()


def _first_line(lines, kind_prefix):
    return next(i for i, line in enumerate(lines) if line.startswith(kind_prefix))


def test_sim_refuses_a_trace_cut_off_in_its_data(tmp_path, cli_main):
    lines = _lines_of(_program())
    # Cut in the middle of the prologue's LOAD_A beats (the third command, line 6).
    assert lines[5].startswith("c ") and lines[6].startswith("d ")
    path = tmp_path / "cut.txt"
    path.write_text("\n".join(lines[:10]) + "\n")
    status, out, err = cli_main("sim", path)
    _assert_one_line_error(status, err, f"malformed trace: {path}:6: LOAD_A addr=0 count=16 "
                                        f"needs 416 data beats, the trace has 4 left (cut off?)")
    assert out == ""


@pytest.mark.parametrize("word, message", [
    ("-5", "'-5' is not a hex word"),
    ("-1", "'-1' is not a hex word"),
])
def test_sim_refuses_negative_words(tmp_path, cli_main, word, message):
    lines = _lines_of(_program())
    index = _first_line(lines, "d ")
    lines[index] = f"d {word}"
    path = tmp_path / "neg.txt"
    path.write_text("\n".join(lines) + "\n")
    status, _, err = cli_main("sim", path)
    _assert_one_line_error(status, err, f"malformed trace: {path}:{index + 1}: {message}")


def test_sim_refuses_a_load_a_beat_with_its_unused_bits_set(tmp_path, cli_main):
    lines = _lines_of(_program())
    index = _first_line(lines, "d ")  # the prologue's first LOAD_A beat
    word = int(lines[index][2:], 16) | 1 << 43
    lines[index] = f"d {word:011x}"
    path = tmp_path / "top.txt"
    path.write_text("\n".join(lines) + "\n")
    status, _, err = cli_main("sim", path)
    _assert_one_line_error(status, err, f"malformed trace: {path}:{index + 1}: LOAD_A beat must "
                                        f"fit its 40-bit layout (bits 40 and up unused, must "
                                        f"be 0), not {word:#x}")


def test_sim_refuses_a_trace_that_is_not_utf8(tmp_path, cli_main):
    path = tmp_path / "bin.txt"
    path.write_bytes(_program().to_text().encode()[:40] + b"\xff\xfe")
    status, _, err = cli_main("sim", path)
    _assert_one_line_error(status, err, f"malformed trace: {path}: must be UTF-8 text, not "
                                        f"byte 0xff at offset 40")


@pytest.mark.parametrize("kind", ["range", "opcode"])
def test_sim_a_trace_that_halts_with_an_error_fails_unless_expected(tmp_path, cli_main, kind):
    from sparsecim.hw.isa import disassemble

    trace = _program(1, illegal=kind)
    expect = trace.meta["expect"]
    path = tmp_path / "err.txt"
    trace.save(path)
    last = len(trace.steps) - 1
    where = (f"halted with error {expect} at command {last} "
             f"({disassemble(trace.config, trace.commands[-1])})")
    status, out, err = cli_main("sim", path)
    assert (status, err) == (1, "")
    assert f"  outcome       {where} (pass --expect-error if that is what the trace tests)\n" \
        in out
    assert out.endswith("RESULT: FAIL\n")
    status, out, err = cli_main("sim", path, "--expect-error", expect)
    assert (status, err) == (0, "")
    assert f"  outcome       {where}, as expected\n" in out and out.endswith("RESULT: PASS\n")
    other = "ZERO_COUNT"
    status, out, _ = cli_main("sim", path, "--expect-error", other)
    assert status == 1 and f"{where}, not {other} as expected" in out


def test_sim_a_trace_that_never_reaches_end_fails(tmp_path, cli_main):
    trace = _program(2)
    trace.steps = trace.steps[:-1]
    path = tmp_path / "noend.txt"
    trace.save(path)
    status, out, err = cli_main("sim", path)
    assert (status, err) == (1, "")
    assert (f"  outcome       did NOT reach END: the commands ran out after {len(trace.steps)} "
            f"(the RTL would wait for more)\n") in out
    assert out.endswith("RESULT: FAIL\n")
    status, out, _ = cli_main("sim", path, "--expect-error", "ADDRESS_RANGE")
    assert status == 1


def test_sim_expected_error_that_does_not_come_fails(tmp_path, cli_main):
    path = tmp_path / "ok.txt"
    _program(3).save(path)
    status, out, _ = cli_main("sim", path)
    assert status == 0 and "  outcome       reached END with no error\n" in out
    status, out, _ = cli_main("sim", path, "--expect-error", "ILLEGAL_MODE")
    assert status == 1
    assert "  outcome       reached END with no error, not ILLEGAL_MODE as expected\n" in out


def _a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    return blocker


def _layer_args(tmp_path):
    w, x = int8((6, 20), 1), int8((2, 20), 2)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", x)
    return ["layer", "--weights", tmp_path / "w.npy", "--inputs", tmp_path / "x.npy",
            "--preset", "tiny"]


def test_outputs_under_a_regular_file_are_refused(tmp_path, cli_main):
    blocker = _a_file(tmp_path)
    trace = tmp_path / "t.txt"
    _program().save(trace)
    status, _, err = cli_main("sim", trace, "--results", blocker / "r.npy")
    _assert_one_line_error(status, err, f"--results {blocker / 'r.npy'} cannot be written: "
                                        f"{blocker} is a file, not a folder")
    status, out, err = cli_main(*_layer_args(tmp_path), "--out", blocker / "d" / "y.npy")
    _assert_one_line_error(status, err, f"--out {blocker / 'd' / 'y.npy'} cannot be written: "
                                        f"Not a directory")
    assert out == ""  # refused before any work
    status, _, err = cli_main("run", "--model", "synthetic", "--shapes", "8x40",
                           "--preset", "tiny", "--no-plots", "--out", blocker / "run")
    _assert_one_line_error(status, err, f"run folder {blocker / 'run'} cannot be created: "
                                        f"Not a directory")
    status, _, err = cli_main("run", "--model", "synthetic", "--shapes", "8x40",
                           "--preset", "tiny", "--no-plots", "--out", blocker)
    _assert_one_line_error(status, err, f"run folder must be a folder, not the file {blocker}")
    for command in (["gemm", "--preset", "tiny", "--k", "8", "--n", "4", "--tokens", "1",
                     "--rtl"], ["sim", trace, "--rtl"],
                    [*_layer_args(tmp_path), "--out", tmp_path / "y.npy", "--rtl"]):
        status, _, err = cli_main(*command, "--run-dir", blocker / "rtl")
        _assert_one_line_error(status, err, f"--run-dir {blocker / 'rtl'} cannot be created: "
                                            f"Not a directory")


def test_fpga_outputs_under_a_regular_file_are_refused_before_synthesis(tmp_path, cli_main):
    blocker = _a_file(tmp_path)
    status, out, err = cli_main("fpga", "--work-dir", blocker / "w")
    _assert_one_line_error(status, err, f"--work-dir {blocker / 'w'} cannot be created: Not a "
                                        f"directory")
    status, out, err = cli_main("fpga", "--work-dir", tmp_path / "w", "--json",
                             blocker / "f.json")
    _assert_one_line_error(status, err, f"the folder of --json must be a folder, not the file "
                                        f"{blocker}")
    assert out == ""


@pytest.mark.parametrize("name, message", [
    ("folder", "--out must name a .npy file, not the folder {path}"),
    ("y.out", "--out must name a .npy file, not '{path}'"),
    ("y", "--out must name a .npy file, not '{path}'"),
])
def test_layer_out_must_be_a_npy_file(tmp_path, cli_main, name, message):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    status, out, err = cli_main(*_layer_args(tmp_path), "--out", path)
    _assert_one_line_error(status, err, message.format(path=path))
    assert not Path(f"{path}.npy").exists()


def test_sim_results_must_be_a_npy_file(tmp_path, cli_main):
    trace = tmp_path / "t.txt"
    _program().save(trace)
    status, _, err = cli_main("sim", trace, "--results", tmp_path)
    _assert_one_line_error(status, err, f"--results must name a .npy file, not the folder "
                                        f"{tmp_path}")
    status, _, err = cli_main("sim", trace, "--results", tmp_path / "r")
    _assert_one_line_error(status, err, f"--results must name a .npy file, not "
                                        f"'{tmp_path / 'r'}'")
    assert not (tmp_path / "r.npy").exists()


def test_layer_out_is_written_whole_and_alone(tmp_path, cli_main):
    status, _, err = cli_main(*_layer_args(tmp_path), "--out", tmp_path / "y.npy")
    assert (status, err) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy", "x.npy", "y.npy"]
    w, x = np.load(tmp_path / "w.npy"), np.load(tmp_path / "x.npy")
    assert np.array_equal(np.load(tmp_path / "y.npy"), x.astype(np.int64) @ w.T)


def test_npy_header_claiming_more_than_the_file_holds_is_refused(tmp_path, cli_main):
    from numpy.lib import format as npy

    path = tmp_path / "huge.npy"
    with open(path, "wb") as out:
        npy.write_array_header_1_0(out, {"descr": "|i1", "fortran_order": False,
                                         "shape": (10 ** 6, 10 ** 6)})
        out.write(b"\0" * 64)
    size = path.stat().st_size
    args = _layer_args(tmp_path)
    args[args.index(tmp_path / "w.npy")] = path
    status, _, err = cli_main(*args, "--out", tmp_path / "y.npy")
    _assert_one_line_error(status, err, f"weights file {path} must hold the data its header "
                                        f"claims, not {size} bytes for {10 ** 12} bytes of "
                                        f"array")


def test_run_config_that_is_a_folder_or_not_utf8_is_refused(tmp_path, cli_main):
    status, _, err = cli_main("run", "--config", tmp_path)
    _assert_one_line_error(status, err, f"settings file must be a TOML file, not the folder "
                                        f"{tmp_path}")
    config = tmp_path / "s.toml"
    config.write_bytes(b"tokens = 2\n\xff\xfe\n")
    status, _, err = cli_main("run", "--config", config)
    _assert_one_line_error(status, err, f"settings file {config} must be UTF-8 text, not bytes "
                                        f"such as b'\\xff\\xfe\\n' at offset 11")


def test_run_config_with_top_level_keys_and_a_run_table_is_refused(tmp_path, cli_main):
    config = tmp_path / "s.toml"
    config.write_text("tokens = 3\nseed = 1\n[run]\nmodel = 'synthetic'\n")
    status, _, err = cli_main("run", "--config", config)
    _assert_one_line_error(status, err, f"settings file {config}: settings must be top-level "
                                        f"keys or a [run] table, not both (top-level: seed, "
                                        f"tokens)")


@pytest.mark.parametrize("toml, message", [
    (f"tokens = {2 ** 63 - 1}", f"setting tokens must be at most 65536, not {2 ** 63 - 1}"),
    ("flow_tolerance = nan", "setting flow_tolerance must be a finite number, not nan"),
    ("flow_target = inf", "setting flow_target must be a finite number, not inf"),
    ("shapes = ','", "shapes must be at least one OUTxIN shape, not nothing"),
    ("shapes = '100000x8'", "shape must have at most 65536 features a side and 67108864 "
                            "weights, not '100000x8'"),
    ("seed = -1", "setting seed must be a non-negative integer, not -1"),
    ("rtl_layers = ','", "rtl_layers must be none, all, a count or layer names, not ','"),
], ids=["tokens-huge", "tolerance-nan", "target-inf", "shapes-empty", "shape-huge", "seed",
        "rtl-layers"])
def test_run_values_that_would_crash_later_are_refused_first(tmp_path, cli_main, toml, message):
    config = tmp_path / "s.toml"
    config.write_text(f"model = 'synthetic'\npreset = 'tiny'\nsparsify = 'flow'\n{toml}\n")
    status, _, err = cli_main("run", "--config", config, "--out", tmp_path / "run")
    _assert_one_line_error(status, err, message)
    assert not (tmp_path / "run").exists()


def test_run_shapes_flag_with_only_a_comma_is_refused(tmp_path, cli_main):
    status, _, err = cli_main("run", "--model", "synthetic", "--shapes", ",",
                           "--out", tmp_path / "run")
    _assert_one_line_error(status, err, "shapes must be at least one OUTxIN shape, not nothing")


def _synthetic_run(out, *extra):
    return ["run", "--model", "synthetic", "--shapes", "8x40", "--preset", "tiny",
            "--tokens", "2", "--calib-tokens", "8", "--no-plots", "--out", out, *extra]


def test_run_in_a_reused_folder_never_mixes_runs(tmp_path, cli_main):
    out = tmp_path / "run"
    status, _, err = cli_main(*_synthetic_run(out))
    assert (status, err) == (0, "")
    first = {p.name for p in out.iterdir()}
    assert first == {"settings.toml", "layers.json", "layers.csv", "report.md"}
    # Refused by validation: the folder is not touched at all.
    status, _, err = cli_main(*_synthetic_run(out, "--rtl-layers", "blocks.0.q"))
    assert status == 2
    assert {p.name for p in out.iterdir()} == first
    # Fails while running (a Monarch mapping for a dense layer): the older run's results
    # go, the marker says what happened, and nothing looks like a finished run.
    status, _, err = cli_main(*_synthetic_run(out, "--mapping", "monarch-latency"))
    _assert_one_line_error(status, err)
    assert {p.name for p in out.iterdir()} == {"INCOMPLETE"}
    marker = (out / "INCOMPLETE").read_text()
    assert marker.startswith("failed: mapping monarch-latency needs Monarch factors")
    # A finished run removes the marker.
    status, _, _ = cli_main(*_synthetic_run(out))
    assert status == 0 and {p.name for p in out.iterdir()} == first


def test_run_interrupted_is_marked_as_such(tmp_path):
    from sparsecim.sw.pipeline import load_settings
    from sparsecim.tb.run import INCOMPLETE, run

    settings = load_settings(overrides={"model": "synthetic", "shapes": "8x40,6x20",
                                        "preset": "tiny", "plots": False,
                                        "out": str(tmp_path / "run")})

    def on_step(kind, text):
        if text == "golden synthetic.1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(settings, on_step=on_step)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {INCOMPLETE}
    assert (tmp_path / "run" / INCOMPLETE).read_text().startswith("interrupted (")


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, cli_main):
    import sparsecim.sw.pipeline as pipeline

    def interrupted(trace):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_trace", interrupted)
    status, out, err = cli_main("gemm", "--preset", "tiny", "--k", "8", "--n", "4")
    assert (status, err) == (130, "sparsecim: interrupted\n")


def test_argparse_errors_are_one_line(cli_main):
    status, _, err = cli_main("gemm", "--k", "-3")
    _assert_one_line_error(status, err, "argument --k: must be a positive integer, not -3")
    status, _, err = cli_main("sim")
    _assert_one_line_error(status, err, "the following arguments are required: trace")


# Fuzz: seeded, a few hundred cases per run.

def _corrupt(rng, lines):
    """One random corruption of a trace file's lines; returns (kind, new lines or bytes)."""
    kinds = ["truncate", "delete", "duplicate", "negative", "wide", "garbage", "hex",
             "flip-char", "load-a-top-bits", "bytes", "header"]
    kind = kinds[rng.integers(len(kinds))]
    lines = list(lines)
    body = [i for i, line in enumerate(lines) if line[:2] in ("c ", "d ")]
    data = [i for i in body if lines[i].startswith("d ")]
    pick = int(rng.choice(body))
    if kind == "truncate":
        lines = lines[:int(rng.integers(0, len(lines)))]
    elif kind == "delete":
        del lines[pick]
    elif kind == "duplicate":
        lines.insert(pick, lines[pick])
    elif kind == "negative":
        lines[pick] = f"{lines[pick][0]} -{rng.integers(1, 1 << 20):x}"
    elif kind == "wide":
        lines[pick] = f"{lines[pick][0]} 1{'0' * int(rng.integers(12, 40))}"
    elif kind == "garbage":
        lines[pick] = f"{lines[pick][0]} {rng.choice(['zz', '0x1f', '1_0', '', '+5', '1.5'])}"
    elif kind == "hex":
        width = len(lines[pick]) - 2
        lines[pick] = f"{lines[pick][0]} {int(rng.integers(0, 16 ** min(width, 15))):0{width}x}"
    elif kind == "flip-char":
        row = int(rng.integers(len(lines)))
        col = int(rng.integers(max(1, len(lines[row]))))
        char = str(rng.choice(list("0123456789abcdefxz -{}\":,")))
        lines[row] = lines[row][:col] + char + lines[row][col + 1:]
    elif kind == "load-a-top-bits":
        # The prologue's first LOAD_A beat (tiny: 40 lane bits in a 44-bit beat).
        index = data[int(rng.integers(0, 40))]
        word = int(lines[index][2:], 16) | int(rng.integers(1, 16)) << 40
        lines[index] = f"d {word:011x}"
    elif kind == "bytes":
        text = "\n".join(lines).encode()
        at = int(rng.integers(len(text)))
        return kind, text[:at] + bytes(rng.integers(128, 256, size=3).astype(np.uint8)) + \
            text[at:]
    else:
        row = int(rng.integers(0, 4))
        lines[row] = lines[row][:int(rng.integers(0, len(lines[row]) + 1))]
    return kind, lines


#: Corruptions the trace format must refuse, whatever the rest of the file.
_ALWAYS_REFUSED = {"negative", "wide", "garbage", "load-a-top-bits", "bytes"}


def test_fuzz_corrupted_trace_files_never_crash_sim(tmp_path, cli_main):
    rng = np.random.default_rng(16)
    statuses = {0: 0, 1: 0, 2: 0}
    for case in range(300):
        trace = _program(case % 7, illegal=None if case % 3 else "range")
        kind, corrupted = _corrupt(rng, _lines_of(trace))
        path = tmp_path / f"fuzz{case}.txt"
        if isinstance(corrupted, bytes):
            path.write_bytes(corrupted)
        else:
            path.write_text("\n".join(corrupted) + "\n")
        status, out, err = cli_main("sim", path)
        statuses[status] += 1
        if status == 2:
            _assert_one_line_error(status, err)
            assert out == ""
        else:
            # Read and run: a verdict, nothing on stderr. A corrupted illegal program or one
            # cut short never passes.
            assert status in (0, 1) and err == "", (kind, err)
            assert out.endswith(f"RESULT: {'PASS' if status == 0 else 'FAIL'}\n")
        if kind in _ALWAYS_REFUSED:
            assert status == 2, (kind, out)
        if kind == "truncate":
            assert status != 0, out
    # The corpus exercised every outcome.
    assert min(statuses.values()) > 10, statuses


def _bad_run_values(rng):
    """(setting, TOML value or None, flag values or None): random values every one wrong."""
    big = int(rng.integers(2 ** 16 + 1, 2 ** 62))
    words = ["zigzag", "Dense", "", "2:4:8", "none?", "ßpecial", "../x"]
    return [
        ("model", repr(str(rng.choice(words))), [str(rng.choice(words))]),
        ("blocks", str(int(rng.integers(-5, 1))), [str(int(rng.integers(-5, 1))), "x"]),
        ("blocks", str(big), None),
        ("linears", repr(str(rng.choice(["qq", "q,zz", ",", " "]))), None),
        ("shapes", repr(str(rng.choice(["8by40", ",", "0x8", "8x", "x", "-1x4",
                                        f"{big}x2"]))),
         [str(rng.choice(["8by40", ",", "0x8", "8x"]))]),
        ("tokens", str(int(rng.integers(-3, 1))), [str(int(rng.integers(-3, 1))), "1.5"]),
        ("tokens", str(big), [str(big)]),
        ("calib_tokens", str(rng.choice([0, -1, big, 2 ** 63 - 1])), None),
        ("tokens", "'many'", None),
        ("sparsify", repr(str(rng.choice(words))), [str(rng.choice(words))]),
        ("pattern", repr(str(rng.choice(["3:4", "2-4", "0:4", "4:2", "a:b", ""]))), None),
        ("flow_target", str(rng.choice(["nan", "inf", "-inf", "1.5", "-0.1"])),
         [str(rng.choice(["nan", "inf", "1.0", "2"]))]),
        ("flow_tolerance", str(rng.choice(["nan", "inf", "-0.5"])),
         [str(rng.choice(["nan", "-1", "inf"]))]),
        ("flow_dense_ends", str(rng.choice(["1", "'yes'", "0.5"])), None),
        ("monarch_mapping", repr(str(rng.choice(words))), [str(rng.choice(words))]),
        ("mapping", repr(str(rng.choice(words))), [str(rng.choice(words))]),
        ("preset", repr(str(rng.choice(words))), [str(rng.choice(words))]),
        ("rtl_layers", repr(str(rng.choice(["blocks.0.q", ",", "synthetic.9", "x,y"]))),
         [str(rng.choice(["blocks.0.q", ",", "synthetic.7"]))]),
        ("pause", str(rng.choice(["1.0", "nan", "-0.5", "inf", "'a'"])),
         [str(rng.choice(["1", "nan", "-0.5", "x"]))]),
        ("seed", str(rng.choice(["-1", "'s'", "1.5"])), [str(rng.choice(["-1", "s"]))]),
        ("out", "FILE", ["FILE"]),
        ("plots", str(rng.choice(["1", "'no'", "[]"])), None),
        ("colour", "'blue'", None),
        ("rtl_sample", str(rng.choice(["-1", "'two'", "1.5"])), [str(rng.choice(["-1", "x"]))]),
        ("tech", repr(str(rng.choice(["7nm", "", "missing.toml"]))),
         [str(rng.choice(["7nm", "missing.toml"]))]),
        ("text", "'missing.txt'",
         ["missing.txt", "/"]),
        ("macro", str(rng.choice(["{ rows = 3 }", "{ rows = 4, cols = 4, submacros = 3 }",
                                  "'tiny'", "{ colour = 1 }"])), None),
        # A chip name, or a [chip] table (the chip_table setting) given inline.
        ("chip", str(rng.choice(["'huge'", "'missing.toml'", "{ macro = 'tiny', macros = 0 }",
                                 "{ colour = 1 }", "{ macro = 'tiny' }", "3"])),
         [str(rng.choice(words)), "missing.toml"]),
        ("attention_macs", str(rng.choice(["-1", "'many'", "1.5", "64"])),
         [str(rng.choice(["0", "-3", "x", "64"]))]),
    ]


def test_fuzz_bad_run_settings_end_in_one_line(tmp_path, cli_main):
    from sparsecim.sw.pipeline import RunSettings

    rng = np.random.default_rng(17)
    blocker = _a_file(tmp_path)
    covered, cases = set(), 0
    for round_ in range(12):
        for name, toml, flags in _bad_run_values(rng):
            covered.add(name)
            base = {"model": "'synthetic'", "shapes": "'8x40'", "preset": "'tiny'",
                    "plots": "false"}
            if name in ("flow_target", "flow_tolerance"):
                base["sparsify"] = "'flow'"
            if name == "pattern":
                base["sparsify"] = "'magnitude'"
            if name == "linears":
                base["model"] = "'smollm2'"  # refused before the model would load
            base.pop(name, None)
            run_dir = tmp_path / f"run{round_}"
            out_flag = [] if name == "out" else ["--out", run_dir]
            # The same wrong value from a settings file ...
            config = tmp_path / "s.toml"
            toml = repr(str(blocker)) if toml == "FILE" else toml
            config.write_text("".join(f"{k} = {v}\n" for k, v in base.items())
                              + f"{name} = {toml}\n")
            status, out, err = cli_main("run", "--config", config, *out_flag)
            _assert_one_line_error(status, err)
            assert not run_dir.exists(), (name, toml, err)
            cases += 1
            # ... and from its flag.
            flags_base = [a for k, v in base.items() if k != "plots"
                          for a in (f"--{k}", v.strip("'"))] + ["--no-plots"]
            for value in flags or []:
                value = str(blocker) if value == "FILE" else value
                status, out, err = cli_main("run", *flags_base,
                                         f"--{name.replace('_', '-')}", value, *out_flag)
                _assert_one_line_error(status, err)
                assert not run_dir.exists(), (name, value, err)
                cases += 1
    covered.add("chip_table")  # the inline tables of the chip key above
    assert covered >= {f.name for f in dataclasses.fields(RunSettings)}
    assert cases > 300


@pytest.mark.cosim
def test_gemm_on_fpga_longer_than_its_16_bit_counters_passes():
    """fpga counts in 16 bits: a correct run of more than 65,535 cycles must still pass, its
    saturated counters compared with the model's saturated the same way."""
    from sparsecim.sw.operands import random_gemm

    cfg = preset("fpga")
    x, w = random_gemm(cfg, 256, 128, 4, 0)
    model = run_trace(schedule_layer(cfg, x, w).trace).counters
    assert model["total"] > 2 ** cfg.counter_bits - 1
    done = run_cli("gemm", "--preset", "fpga", "--k", "256", "--n", "128", "--tokens", "4",
                "--rtl")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL outputs   match golden: yes" in done.stdout
    assert (f"RTL cycles    {model['total']} by the harness (total counter saturated at "
            f"65535; stall 0) vs model {model['total']}: equal") in done.stdout
    assert done.stdout.endswith("RESULT: PASS\n")


def _children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.cosim
def test_sigint_to_gemm_rtl_stops_the_simulator_and_exits_130(tmp_path):
    import signal
    import time

    from sparsecim.tb.harness import HARNESS_TOP

    # Paused streams stretch the RTL run to seconds: time to interrupt it.
    with subprocess.Popen(
            [sys.executable, "-m", "sparsecim.tb.cli", "gemm", "--preset", "tiny", "--k",
             "600", "--n", "300", "--tokens", "16", "--pause", "0.9", "--rtl", "--run-dir",
             str(tmp_path / "run")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # Warnings are errors, as in every CLI test: interrupted, the command still waits
            # for its simulator (no ResourceWarning for an unwaited Popen at exit).
            env=CLI_ENV,
            # A suite started in the background of a shell inherits SIGINT ignored, and so
            # would the command: give it the default disposition a user's terminal gives.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        sim = None
        deadline = time.monotonic() + 300
        while sim is None and time.monotonic() < deadline and proc.poll() is None:
            for child in _children(proc.pid):
                # The simulator is the Verilator binary named after the harness.
                with contextlib.suppress(OSError):
                    if Path(os.readlink(f"/proc/{child}/exe")).name == HARNESS_TOP:
                        sim = child
            time.sleep(0.05)
        assert sim is not None, "the simulator never started"
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err == "sparsecim: interrupted\n"
    # The simulator was killed: gone, or a zombie until the system reaps it, never running.
    deadline = time.monotonic() + 10
    while _running(sim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(sim)


def _running(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
@pytest.mark.cosim
def test_run_rtl_sample_prints_the_tiles_and_coverage(tmp_path):
    from sparsecim.sw.pipeline import sample_tiles

    done = _run_synthetic(tmp_path, "--sparsify", "magnitude", "--pattern", "2:4",
                          "--rtl-sample", "1", "--seed", "3", "--no-plots")
    assert done.returncode == 0, done.stdout + done.stderr
    # Tiles of 4 outputs (tiny): 8 outputs are 2 tiles, 6 outputs are 2 tiles (4 + 2).
    first, second = sample_tiles(3, "synthetic.0", 2, 1), sample_tiles(3, "synthetic.1", 2, 1)
    share = {0: 4 / 6, 1: 2 / 6}[second[0]]
    assert (f"  RTL sample    synthetic.0: output tiles {first} of 2 (50.0% of outputs), "
            "bit- and cycle-exact") in done.stdout
    assert (f"  RTL sample    synthetic.1: output tiles {second} of 2 ({share:.1%} of outputs), "
            "bit- and cycle-exact") in done.stdout
    assert "cycles equal to the model on 0 whole layer(s) and 2 sampled (per tile)" \
        in done.stdout
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    assert [r["rtl_coverage"] for r in report["layers"]] == [0.5, share]
    assert report["summary"]["passed"]
