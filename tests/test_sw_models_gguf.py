"""One GGUF loader for any llama-architecture file: a tiny one written here, and SmolLM2."""

import numpy as np
import pytest
from conftest import (
    BLOCKS,
    EPS,
    FFN,
    HEAD_DIM,
    HEADS,
    HIDDEN,
    KV_HEADS,
    THETA,
    llama_tensors,
    reference_logits,
)
from sparsecim.sw.models import CheckpointError, load_checkpoint
from sparsecim.sw.models.gguf import load_gguf

gguf = pytest.importorskip("gguf")


def _llama_cpp_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter order of q/k rows: HF rows (i, i + d/2) of a head become rows
    (2i, 2i + 1)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(
        w.shape)


def write_tiny_gguf(path, t: dict) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(BLOCKS)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(THETA)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", t["model.norm.weight"])
    writer.add_tensor("output.weight", t["lm_head.weight"])
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for i in range(BLOCKS):
        for ours, hf in names.items():
            w = t[f"model.layers.{i}.{hf}.weight"]
            if ours in ("attn_q", "attn_k"):
                w = _llama_cpp_rows(w, HEADS if ours == "attn_q" else KV_HEADS)
            writer.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_users_llama_gguf_gives_the_reference_logits(tmp_path):
    tensors = llama_tensors(seed=3)
    write_tiny_gguf(tmp_path / "tiny.gguf", tensors)
    ckpt = load_checkpoint(tmp_path / "tiny.gguf")
    assert (ckpt.kind, ckpt.arch, len(ckpt.linears)) == ("gguf", "llama", 7 * BLOCKS)
    assert ckpt.model.tokenizer is None  # no tokenizer metadata in this file
    ids = np.array([5, 1, 44, 2, 2, 30])
    expected = reference_logits(tensors, ids)
    np.testing.assert_allclose(ckpt.model.logits(ids), expected, rtol=0,
                               atol=2e-5 * np.abs(expected).max())
    # q comes back in the Hugging Face row order.
    assert np.array_equal(ckpt.linears[0].weight, tensors["model.layers.0.self_attn.q_proj.weight"])


def test_a_gguf_of_another_architecture_is_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path / "other.gguf")
    assert str(exc.value) == "GGUF architecture must be 'llama', not 'gpt2'"


@pytest.mark.slow
def test_smollm2_through_the_general_loader_has_the_same_perplexity():
    """The packaged SmolLM2 via ``load_checkpoint`` against a model assembled here from the
    GGUF tensors directly (gguf reader, dequantize, llama.cpp's q/k rows undone here)."""
    from sparsecim.sw.smollm import SmolLM, default_gguf_path, load_smollm2, perplexity
    from sparsecim.sw.textdata import load_wiki_texts

    path = default_gguf_path()
    ckpt = load_checkpoint(path)
    reader = gguf.GGUFReader(str(path))
    raw = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
           for t in reader.tensors}
    general = ckpt.model
    c = general.config
    assert (c.num_blocks, c.hidden, c.ffn, c.num_heads, c.num_kv_heads) == (30, 576, 1536, 9, 3)

    def hf_rows(w, heads):  # inverse of _llama_cpp_rows
        return w.reshape(heads, w.shape[0] // heads // 2, 2, w.shape[1]).swapaxes(1, 2) \
            .reshape(w.shape)

    gguf_names = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                  "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
    for i in (0, 29):
        for name, ours in gguf_names.items():
            w = raw[f"blk.{i}.{ours}.weight"]
            if name in ("q", "k"):
                w = hf_rows(w, 9 if name == "q" else 3)
            assert np.array_equal(general.blocks[i].linears[name], w), (i, name)
    assert np.array_equal(general.embedding, raw["token_embd.weight"])

    text = " ".join(load_wiki_texts()[:20])
    ids = general.encode(text)[:2 * 128].reshape(2, 128)
    today = perplexity(load_smollm2(), ids)
    assert isinstance(general, SmolLM)
    assert perplexity(general, ids) == today
    assert 5 < today < 40  # an English-speaking model (dense SmolLM2: ~14 on Wikipedia)


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        load_gguf(tmp_path / "none.gguf")
    assert str(exc.value) == f"GGUF file {tmp_path / 'none.gguf'} does not exist"
