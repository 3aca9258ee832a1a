"""``sparsecim run --model PATH`` and macros from TOML, through the command line."""

import json

import numpy as np
import pytest
from conftest import (
    BLOCKS,
    llama_config,
    llama_tensors,
    run_cli,
    write_safetensors,
    write_sharded,
)
from sparsecim.hw.config import PRESETS, MacroConfig, load_macro, macro_toml
from sparsecim.sw.models import load_checkpoint, minilm_path
from sparsecim.sw.pipeline import load_settings

# A macro no preset has: 2 sub-macros of 4 x 8, patterns 1:2 and 2:4 only, shallow buffers.
CUSTOM = """\
[macro]
rows = 4
cols = 8
submacros = 2
act_depth = 8
acc_depth = 4
patterns = ["1:2", "2:4"]
"""


@pytest.fixture
def tiny_llama(tmp_path):
    folder = tmp_path / "tiny-llama"
    write_sharded(folder, llama_tensors(), llama_config())
    return folder


def test_run_takes_a_hugging_face_folder(tmp_path, tiny_llama):
    done = run_cli("run", "--model", tiny_llama, "--blocks", 2, "--preset", "tiny", "--sparsify",
                "magnitude", "--pattern", "2:4", "--tokens", 2, "--no-plots",
                "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sparsecim run: {tiny_llama} (checkpoint, 2 block(s), 14 "
                                  f"linears), magnitude 2:4, mapping auto, preset tiny, "
                                  f"2 token(s)\n")
    assert "  golden model  14/14 layers equal the integer matmul" in done.stdout
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    linears = load_checkpoint(tiny_llama, forward=False).linears
    assert [(r["name"], r["out_features"], r["in_features"]) for r in report["layers"]] == [
        (lin.name, *lin.weight.shape) for lin in linears]
    assert done.stdout.rstrip().endswith("RESULT: PASS")


def test_run_takes_a_config_json_as_a_shape_table(tmp_path, tiny_llama):
    done = run_cli("run", "--model", tiny_llama / "config.json", "--no-plots",
                "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    assert [(r["name"], r["copies"]) for r in report["layers"]] == [
        (n, BLOCKS) for n in ("q", "k", "v", "o", "gate", "up", "down")]
    assert done.stdout.rstrip().endswith("RESULT: cycle model only (no weights: nothing to "
                                         "check)")


@pytest.mark.slow
def test_run_on_minilm_reports_embedding_cosine(tmp_path):
    done = run_cli("run", "--model", minilm_path(), "--sparsify", "wanda", "--pattern", "2:4",
                "--no-plots", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("  model quality"))
    assert line.startswith("  model quality cosine similarity of sentence embeddings to the "
                           "dense model: mean 0.")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Model quality (float weights, sparsified vs dense)" in report


def _bad_checkpoints(tmp_path):
    tensors = llama_tensors()
    empty = tmp_path / "empty"
    empty.mkdir()
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    shape = tmp_path / "shape"
    wrong = dict(tensors)
    wrong["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 8), np.float32)
    write_sharded(shape, wrong, llama_config())
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(json.dumps(llama_config()))
    write_safetensors(cut / "model.safetensors", tensors)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:len(data) // 2])
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [x, helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 1])],
                              [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "bare.onnx"))
    return {
        "missing-config": (empty, f"checkpoint folder {empty} has no config.json"),
        "unsupported": (t5, f"model_type in {t5 / 'config.json'} must be one of llama, "
                            f"mistral, qwen2, gpt2, opt, bert, not 't5'"),
        "shape": (shape, "tensor model.layers.0.self_attn.k_proj.weight must have shape "
                         "(16, 32) (from config.json), not (16, 8)"),
        "truncated": (cut, f"safetensors file {cut / 'model.safetensors'} is truncated or "
                           f"corrupt: "),
        "onnx": (tmp_path / "bare.onnx", f"ONNX file {tmp_path / 'bare.onnx'} has no MatMul "
                                         f"or Gemm node with a 2-D weight initializer (found 0 "
                                         f"initializers, 1 nodes)"),
        "no-path": (tmp_path / "nothing.gguf", f"model must be a known name or an existing "
                                               f"path, not '{tmp_path / 'nothing.gguf'}' (no "
                                               f"such file or folder)"),
    }


@pytest.mark.parametrize("case", ["missing-config", "unsupported", "shape", "truncated", "onnx",
                                  "no-path"])
def test_bad_checkpoints_fail_with_one_line(tmp_path, case):
    path, message = _bad_checkpoints(tmp_path)[case]
    done = run_cli("run", "--model", path, "--preset", "tiny", "--no-plots",
                "--out", tmp_path / "run")
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    if case != "truncated":
        assert done.stderr == f"sparsecim: error: {message}\n"


def test_macro_toml_round_trips_and_names_a_bad_field(tmp_path):
    for name, cfg in PRESETS.items():
        (tmp_path / f"{name}.toml").write_text(macro_toml(cfg))
        assert load_macro(tmp_path / f"{name}.toml") == cfg
    (tmp_path / "custom.toml").write_text(CUSTOM)
    assert load_macro(tmp_path / "custom.toml") == MacroConfig(
        rows=4, cols=8, submacros=2, act_depth=8, acc_depth=4, patterns=((1, 2), (2, 4)))
    bad = tmp_path / "bad.toml"
    bad.write_text(CUSTOM.replace("submacros = 2", "submacros = 3"))
    done = run_cli("gemm", "--preset", bad, "--k", 8, "--n", 8)
    assert done.returncode == 2
    assert done.stderr == (f"sparsecim: error: macro file {bad}: submacros must be a power of "
                           f"two, not 3\n")
    bad.write_text(CUSTOM + "colour = 1\n")
    done = run_cli("layer", "--preset", bad, "--weights", "w.npy", "--inputs", "x.npy",
                "--out", "y.npy")
    assert done.returncode == 2
    assert done.stderr.startswith(f"sparsecim: error: macro file {bad}: config has unknown "
                                  f"fields ['colour']")


def test_gemm_runs_on_a_macro_from_toml(tmp_path):
    (tmp_path / "custom.toml").write_text(CUSTOM)
    done = run_cli("gemm", "--preset", tmp_path / "custom.toml", "--k", 40, "--n", 12,
                "--tokens", 3, "--pattern", "2:4")
    assert done.returncode == 0, done.stderr
    slug = load_macro(tmp_path / "custom.toml").slug
    assert f"({slug})" in done.stdout.splitlines()[0]
    assert "outputs equal the int64 matmul reference: yes" in done.stdout
    done = run_cli("gemm", "--preset", tmp_path / "custom.toml", "--pattern", "4:8")
    assert done.returncode == 2
    assert done.stderr == (f"sparsecim: error: pattern 4:8 is not supported by preset "
                           f"{tmp_path / 'custom.toml'}; supported are dense and 1:2, 2:4\n")


def test_run_macro_table_replays_from_settings_toml(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nmodel = "synthetic"\nshapes = ["12x40"]\nsparsify = "magnitude"\n'
                      'pattern = "1:2"\ntokens = 2\nplots = false\n\n' + CUSTOM)
    done = run_cli("run", "--config", config, "--out", tmp_path / "a")
    assert done.returncode == 0, done.stderr
    custom = load_macro(config)
    assert done.stdout.splitlines()[1] == (f"  macro         {custom.slug}: 2 x 4x8, patterns "
                                           f"dense, 1:2, 2:4")
    settings = load_settings(tmp_path / "a" / "settings.toml")
    assert settings.macro_config() == custom
    assert load_settings(config, {"out": str(tmp_path / "a")}) == settings
    again = run_cli("run", "--config", tmp_path / "a" / "settings.toml", "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    first = json.loads((tmp_path / "a" / "layers.json").read_text())
    second = json.loads((tmp_path / "b" / "layers.json").read_text())
    assert first["layers"] == second["layers"]
    assert first["settings"]["macro"] == custom.to_dict()
    csv = (tmp_path / "a" / "layers.csv").read_text().splitlines()
    assert csv[0].endswith(",macro") and csv[1].endswith(f",{custom.slug}")
    assert f"- `macro`: `{custom.to_dict()}`" in (tmp_path / "a" / "report.md").read_text()
    # A --preset flag wins over the table.
    flagged = run_cli("run", "--config", config, "--preset", "tiny", "--out", tmp_path / "c")
    assert flagged.returncode == 0, flagged.stderr
    assert flagged.stdout.splitlines()[1].startswith(f"  macro         {PRESETS['tiny'].slug}:")


def test_run_pattern_without_a_fixed_nm_sparsifier_is_an_error(tmp_path):
    done = run_cli("run", "--model", "synthetic", "--pattern", "2:4", "--out", tmp_path / "r")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: --pattern 2:4 needs --sparsify magnitude or wanda "
                           "(the fixed N:M methods), not sparsify dense\n")


def test_layer_saves_the_pruned_weights(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(6, 16)).astype(np.int8)
    x = rng.integers(-128, 128, size=(2, 16)).astype(np.int8)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", x)
    done = run_cli("layer", "--preset", "tiny", "--weights", tmp_path / "w.npy", "--inputs",
                tmp_path / "x.npy", "--out", tmp_path / "y.npy", "--pattern", "2:4", "--prune",
                "magnitude", "--save-pruned", tmp_path / "p.npy")
    assert done.returncode == 0, done.stderr
    pruned = np.load(tmp_path / "p.npy")
    assert pruned.dtype == np.int8 and pruned.shape == w.shape
    # Per output row, each group of 4 keeps its 2 largest magnitudes (ties aside), unchanged.
    kept = pruned != 0
    assert (kept.reshape(6, 4, 4).sum(axis=2) <= 2).all()
    assert np.array_equal(pruned[kept], w[kept])
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, x.astype(np.int64) @ pruned.astype(np.int64).T)


def test_presets_lists_every_preset_and_help_has_no_markup():
    done = run_cli("presets")
    assert done.returncode == 0
    for name, cfg in PRESETS.items():
        row = next(x for x in done.stdout.splitlines() if x.startswith(f"  {name} "))
        assert row.split()[1:4] == [str(cfg.rows), str(cfg.cols), str(cfg.submacros)]
        assert row.endswith(cfg.pattern_names())
    top = run_cli("--help").stdout
    assert "``" not in top and "presets" in top


def test_predict_counters_is_where_the_run_output_names_it(tmp_path):
    done = run_cli("run", "--model", "bert-large", "--no-plots", "--out", tmp_path / "r")
    path = done.stdout.split("cycle-model only: ")[1].split(" once")[0]
    module, name = path.rsplit(".", 1)
    assert name == "predict_counters"
    assert callable(getattr(__import__(module, fromlist=[name]), name))


@pytest.mark.cosim
def test_custom_macro_from_toml_runs_bit_exact_on_verilator(tmp_path):
    """A macro no preset has, from a ``[macro]`` table: every layer on the golden model and on
    Verilator, outputs and cycle counters equal."""
    config = tmp_path / "run.toml"
    config.write_text('[run]\nmodel = "synthetic"\nshapes = ["12x40", "8x16"]\n'
                      'sparsify = "wanda"\npattern = "2:4"\ntokens = 3\nrtl_layers = "all"\n'
                      'plots = false\n\n' + CUSTOM)
    done = run_cli("run", "--config", config, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  RTL           2/2 layer(s) bit-exact on Verilator, cycles equal to the model on 2" \
        in done.stdout
    report = json.loads((tmp_path / "run" / "layers.json").read_text())
    assert [(r["rtl_match"], r["rtl_cycles"] == r["model_cycles"]) for r in report["layers"]] \
        == [(True, True), (True, True)]
    assert {r["macro"] for r in report["layers"]} == {load_macro(config).slug}


def test_a_runs_settings_toml_is_a_macro_file_for_gemm_and_sim(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nmodel = "synthetic"\nshapes = ["8x16"]\nplots = false\n\n' + CUSTOM)
    assert run_cli("run", "--config", config, "--out", tmp_path / "a").returncode == 0
    settings = tmp_path / "a" / "settings.toml"
    slug = load_macro(config).slug
    done = run_cli("gemm", "--preset", settings, "--k", 16, "--n", 8, "--tokens", 1)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sparsecim gemm on {settings} ({slug}):")
    # sim checks a trace against a macro (the trace's header defines it).
    from sparsecim.hw.config import preset
    from sparsecim.sw.schedule import schedule_layer

    trace = schedule_layer(load_macro(config), np.ones((1, 16), np.int64),
                           np.ones((16, 8), np.int64), (1, 1)).trace
    trace.save(tmp_path / "t.txt")
    assert run_cli("sim", tmp_path / "t.txt", "--preset", settings).returncode == 0
    done = run_cli("sim", tmp_path / "t.txt", "--preset", "tiny")
    assert done.returncode == 2
    assert done.stderr == (f"sparsecim: error: trace {tmp_path / 't.txt'} is for macro {slug}, "
                           f"not tiny ({preset('tiny').slug})\n")


def test_run_on_a_folder_with_a_tokenizer_uses_the_text_and_reports_perplexity(tmp_path):
    """A llama folder with a word-level ``tokenizer.json``: the layers see real activations of
    ``--text`` and the dense perplexity equals the independent forward's."""
    import tokenizers
    from test_sw_models_hf import VOCAB, reference_logits

    tensors = llama_tensors(seed=5)
    folder = tmp_path / "ckpt"
    write_sharded(folder, tensors, llama_config())
    words = [f"w{i}" for i in range(VOCAB - 1)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(2)
    ids = rng.integers(1, VOCAB, size=16 + 128 + 5)
    (tmp_path / "text.txt").write_text(" ".join(f"w{i - 1}" for i in ids))
    long = run_cli("run", "--model", folder, "--text", tmp_path / "text.txt", "--calib-tokens",
                100, "--no-plots", "--out", tmp_path / "long")
    assert long.returncode == 2
    assert long.stderr == (f"sparsecim: error: model {folder}: sequence length must be from 1 "
                           f"to 64, not 100\n")
    done = run_cli("run", "--model", folder, "--text", tmp_path / "text.txt", "--blocks", 1,
                "--calib-tokens", 16, "--tokens", 2, "--sparsify", "magnitude", "--pattern",
                "2:4", "--preset", "tiny", "--no-plots", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    # Windows as long as the context (64), after the calibration tokens: two of them.
    nll = []
    for start in (16, 16 + 64):
        window = ids[start:start + 64]
        logits = reference_logits(tensors, window)[:-1]
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        nll.append(-logp[np.arange(63), window[1:]])
    dense = float(np.exp(np.concatenate(nll).mean()))
    line = next(x for x in done.stdout.splitlines() if x.startswith("  model quality"))
    assert line.startswith("  model quality perplexity ")
    assert line.endswith(f"(dense {dense:.2f}) on 128 tokens, float weights")
    assert "  golden model  7/7 layers equal" in done.stdout
