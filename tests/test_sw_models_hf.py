"""Hugging Face folders, ONNX graphs and config.json shape tables (sparsecim.sw.models).

The checkpoints are written by hand (``conftest.py``): a tiny llama (GQA, SwiGLU, RoPE) in bf16
split over two shards with its index file, and here the same weights as an ONNX graph built with
the ``onnx`` helper API. The reference forward pass (``conftest.reference_logits``) is written
independently of ``sparsecim.sw.smollm`` (float64, per-head loops, RoPE as complex rotations).
"""

import json

import numpy as np
import pytest
from conftest import (
    BLOCKS,
    FFN,
    HEAD_DIM,
    HIDDEN,
    KV_HEADS,
    VOCAB,
    llama_config,
    llama_tensors,
    reference_logits,
    write_safetensors,
    write_sharded,
)
from sparsecim.sw.models import CheckpointError, load_checkpoint
from sparsecim.sw.models.hf import read_config, shape_table


@pytest.mark.parametrize("model_type, biases", [("llama", False), ("mistral", False),
                                                ("qwen2", True)])
def test_sharded_bf16_llama_logits_equal_an_independent_forward(tmp_path, model_type, biases):
    tensors = llama_tensors(biases=biases)
    write_sharded(tmp_path / "ckpt", tensors, llama_config(model_type))
    ckpt = load_checkpoint(tmp_path / "ckpt")
    ids = np.array([3, 17, 42, 0, 9, 31, 8, 8, 49, 1])
    logits = ckpt.model.logits(ids)
    expected = reference_logits(tensors, ids)
    assert logits.shape == (len(ids), VOCAB)
    # float32 model against a float64 reference: equal to float32 rounding.
    np.testing.assert_allclose(logits, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    names = [lin.name for lin in ckpt.linears]
    assert names == [f"blocks.{i}.{n}" for i in range(BLOCKS)
                     for n in ("q", "k", "v", "o", "gate", "up", "down")]
    # bf16 widens exactly: the linears are the written values bit for bit.
    assert np.array_equal(ckpt.linears[1].weight, tensors["model.layers.0.self_attn.k_proj.weight"])


def _onnx_export(path, tensors: dict) -> list[str]:
    """The tiny llama's linears as an ONNX graph: q k v gate up down as ``MatMul(x, W.T)``,
    o as ``Gemm(x, W, transB=1)``, plus an attention-like ``MatMul`` of two activations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs, names = [], [], [], [], []
    for i in range(BLOCKS):
        p = f"model.layers.{i}."
        for n, key in (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"),
                       ("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"),
                       ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                       ("down", "mlp.down_proj")):
            w = tensors[p + key + ".weight"]
            name = f"/layers.{i}/{n}/MatMul"
            x, y = f"x.{i}.{n}", f"y.{i}.{n}"
            inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, w.shape[1]]))
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, w.shape[0]]))
            if n == "o":
                inits.append(numpy_helper.from_array(w, f"W.{i}.{n}"))
                nodes.append(helper.make_node("Gemm", [x, f"W.{i}.{n}"], [y], name=name,
                                              transB=1))
            else:
                inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"W.{i}.{n}"))
                nodes.append(helper.make_node("MatMul", [x, f"W.{i}.{n}"], [y], name=name))
            names.append(name)
        if i == 0:  # activation x activation: not a linear
            nodes.append(helper.make_node("MatMul", ["y.0.q", "qt"], ["scores"], name="attn"))
            inputs.append(helper.make_tensor_value_info("qt", TensorProto.FLOAT, [HIDDEN, 1]))
            outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1]))
    graph = helper.make_graph(nodes, "tiny-llama", inputs, outputs, inits)
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return names


def test_onnx_export_gives_the_same_linears_in_graph_order(tmp_path):
    tensors = llama_tensors()
    write_sharded(tmp_path / "ckpt", tensors, llama_config())
    names = _onnx_export(tmp_path / "tiny.onnx", tensors)
    folder = load_checkpoint(tmp_path / "ckpt", forward=False)
    graph = load_checkpoint(tmp_path / "tiny.onnx")
    assert graph.kind == "onnx" and graph.model is None
    assert [lin.name for lin in graph.linears] == names
    assert len(graph.linears) == len(folder.linears) == 7 * BLOCKS
    for a, b in zip(graph.linears, folder.linears, strict=True):
        assert np.array_equal(a.weight, b.weight), (a.name, b.name)


def test_config_json_alone_gives_the_shape_table(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(llama_config()))
    ckpt = load_checkpoint(tmp_path / "config.json")
    assert ckpt.kind == "config" and not ckpt.linears
    rows = [(r.name, r.inputs, r.outputs, r.count, r.blocks) for r in ckpt.shape.linears]
    kv = KV_HEADS * HEAD_DIM
    assert rows == [("q", HIDDEN, HIDDEN, 1, BLOCKS), ("k", HIDDEN, kv, 1, BLOCKS),
                    ("v", HIDDEN, kv, 1, BLOCKS), ("o", HIDDEN, HIDDEN, 1, BLOCKS),
                    ("gate", HIDDEN, FFN, 1, BLOCKS), ("up", HIDDEN, FFN, 1, BLOCKS),
                    ("down", FFN, HIDDEN, 1, BLOCKS)]
    assert ckpt.shape.linear_parameters == BLOCKS * (
        2 * HIDDEN * HIDDEN + 2 * HIDDEN * kv + 3 * HIDDEN * FFN)


@pytest.mark.parametrize("config, rows", [
    # gpt2-medium's public config.json (n_inner null: 4 x n_embd).
    ({"model_type": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16, "n_inner": None},
     [("q", 1024, 1024), ("k", 1024, 1024), ("v", 1024, 1024), ("o", 1024, 1024),
      ("fc1", 1024, 4096), ("fc2", 4096, 1024)]),
    # facebook/opt-1.3b.
    ({"model_type": "opt", "hidden_size": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
      "num_attention_heads": 32},
     [("q", 2048, 2048), ("k", 2048, 2048), ("v", 2048, 2048), ("o", 2048, 2048),
      ("fc1", 2048, 8192), ("fc2", 8192, 2048)]),
    # bert-large-uncased.
    ({"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24,
      "num_attention_heads": 16, "intermediate_size": 4096},
     [("q", 1024, 1024), ("k", 1024, 1024), ("v", 1024, 1024), ("o", 1024, 1024),
      ("fc1", 1024, 4096), ("fc2", 4096, 1024)]),
], ids=["gpt2-medium", "opt-1.3b", "bert-large"])
def test_config_tables_agree_with_the_packaged_tables(tmp_path, config, rows):
    from sparsecim.sw.model_shapes import MODELS

    (tmp_path / "config.json").write_text(json.dumps(config))
    table = shape_table(read_config(tmp_path / "config.json"))
    assert [(r.name, r.inputs, r.outputs) for r in table.linears] == rows
    packaged = MODELS[{"gpt2": "gpt2-medium", "opt": "opt-1.3b",
                       "bert": "bert-large"}[config["model_type"]]]
    assert table.linear_parameters == packaged.linear_parameters


def test_gpt2_folder_splits_c_attn_and_transposes_conv1d(tmp_path):
    rng = np.random.default_rng(1)
    d, f = 8, 32
    t = {}
    for i in range(2):
        p = f"h.{i}."
        t[p + "attn.c_attn.weight"] = rng.normal(size=(d, 3 * d)).astype(np.float16)
        t[p + "attn.c_proj.weight"] = rng.normal(size=(d, d)).astype(np.float16)
        t[p + "mlp.c_fc.weight"] = rng.normal(size=(d, f)).astype(np.float16)
        t[p + "mlp.c_proj.weight"] = rng.normal(size=(f, d)).astype(np.float16)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_embd": d, "n_layer": 2, "n_head": 2}))
    write_safetensors(tmp_path / "model.safetensors",
                      {k: v.astype(np.float32) for k, v in t.items()}, dtype="F16")
    ckpt = load_checkpoint(tmp_path)
    by_name = {lin.name: lin.weight for lin in ckpt.linears}
    c_attn = t["h.1.attn.c_attn.weight"].astype(np.float32)
    for j, n in enumerate("qkv"):
        assert np.array_equal(by_name[f"blocks.1.{n}"], c_attn[:, j * d:(j + 1) * d].T)
    assert np.array_equal(by_name["blocks.0.fc2"], t["h.0.mlp.c_proj.weight"].astype(np.float32).T)
    assert ckpt.model is None


def test_bad_checkpoints_raise_one_line_naming_the_file(tmp_path):
    tensors = llama_tensors()
    good = tmp_path / "good"
    write_sharded(good, tensors, llama_config())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(empty)
    assert str(exc.value) == f"checkpoint folder {empty} has no config.json"
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(t5)
    assert str(exc.value) == (f"model_type in {t5 / 'config.json'} must be one of llama, "
                              f"mistral, qwen2, gpt2, opt, bert, not 't5'")
    bad = tmp_path / "bad"
    wrong = dict(tensors)
    wrong["model.layers.1.mlp.up_proj.weight"] = np.zeros((FFN, HIDDEN - 8), np.float32)
    write_sharded(bad, wrong, llama_config())
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert str(exc.value) == (f"tensor model.layers.1.mlp.up_proj.weight must have shape "
                              f"({FFN}, {HIDDEN}) (from config.json), not ({FFN}, {HIDDEN - 8})")
