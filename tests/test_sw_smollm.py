"""SmolLM2 numpy model: pieces against loop versions, then the real GGUF on a 2-block slice."""

import numpy as np
import pytest
from sparsecim.sw.smollm import (
    LINEAR_NAMES,
    apply_rope,
    causal_attention,
    load_smollm2,
    perplexity,
    rms_norm,
    rope_cos_sin,
    silu,
    unpermute_qk,
)

# --------------------------------------------------------------------------------------------
# Pieces, on small random inputs, against straightforward loops


def test_rms_norm_matches_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    w = rng.normal(size=8).astype(np.float32)
    expected = np.empty_like(x)
    for i in range(3):
        for t in range(5):
            row = [float(v) for v in x[i, t]]
            scale = 1 / np.sqrt(sum(v * v for v in row) / len(row) + 1e-5)
            expected[i, t] = [v * scale * float(g) for v, g in zip(row, w, strict=True)]
    np.testing.assert_allclose(rms_norm(x, w, 1e-5), expected, rtol=1e-5, atol=1e-6)


def test_silu_matches_definition_and_survives_large_inputs():
    x = np.array([-200.0, -3.0, -0.5, 0.0, 0.5, 3.0, 200.0], dtype=np.float32)
    expected = [v / (1 + np.exp(-v)) if v > -100 else 0.0 for v in x.astype(np.float64)]
    np.testing.assert_allclose(silu(x), expected, rtol=1e-6, atol=1e-30)


def test_rope_matches_loop_over_pairs_of_halves():
    rng = np.random.default_rng(1)
    seq, d, theta = 7, 8, 10_000.0
    x = rng.normal(size=(2, seq, d)).astype(np.float32)
    cos, sin = rope_cos_sin(seq, d, theta)
    got = apply_rope(x, cos, sin)
    expected = np.empty_like(x)
    for h in range(2):
        for t in range(seq):
            for i in range(d // 2):
                angle = t * theta ** (-2 * i / d)
                a, b = x[h, t, i], x[h, t, i + d // 2]
                expected[h, t, i] = a * np.cos(angle) - b * np.sin(angle)
                expected[h, t, i + d // 2] = a * np.sin(angle) + b * np.cos(angle)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(2, 16)).astype(np.float32)
    cos, sin = rope_cos_sin(20, 16, 100_000.0)

    def at(v, pos):
        return apply_rope(np.tile(v, (20, 1)), cos, sin)[pos]

    assert np.isclose(at(q, 9) @ at(k, 4), at(q, 15) @ at(k, 10), rtol=1e-4)


def _llama_cpp_permute(w, n_heads):
    # The converter's own formula (convert_hf_to_gguf.py `permute`), written independently.
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _interleaved_rope(x, theta):  # (heads, seq, d), pairs (2i, 2i+1): llama.cpp's "norm" mode
    _, seq, d = x.shape
    angle = np.outer(np.arange(seq), theta ** (-np.arange(0, d, 2) / d))
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * np.cos(angle) - x[..., 1::2] * np.sin(angle)
    out[..., 1::2] = x[..., 0::2] * np.sin(angle) + x[..., 1::2] * np.cos(angle)
    return out


def test_unpermute_qk_inverts_llama_cpp_and_makes_rope_layouts_agree():
    rng = np.random.default_rng(3)
    heads, d, width, seq = 3, 8, 5, 6
    w_hf = rng.normal(size=(heads * d, width)).astype(np.float32)
    w_gguf = _llama_cpp_permute(w_hf, heads)
    np.testing.assert_array_equal(unpermute_qk(w_gguf, heads), w_hf)
    # Same scores either way: interleaved RoPE on the stored rows, rotate-half on ours.
    x = rng.normal(size=(seq, width)).astype(np.float32)
    stored = _interleaved_rope((x @ w_gguf.T).reshape(seq, heads, d).swapaxes(0, 1), 1e4)
    cos, sin = rope_cos_sin(seq, d, 1e4)
    ours = apply_rope((x @ w_hf.T).reshape(seq, heads, d).swapaxes(0, 1), cos, sin)
    np.testing.assert_allclose(stored @ stored.swapaxes(1, 2), ours @ ours.swapaxes(1, 2),
                               rtol=1e-4, atol=1e-4)


def test_causal_attention_matches_loop_with_grouped_heads():
    rng = np.random.default_rng(4)
    heads, kv_heads, seq, d = 6, 2, 5, 4
    q = rng.normal(size=(2, heads, seq, d)).astype(np.float32)
    k = rng.normal(size=(2, kv_heads, seq, d)).astype(np.float32)
    v = rng.normal(size=(2, kv_heads, seq, d)).astype(np.float32)
    expected = np.zeros_like(q)
    for b in range(2):
        for h in range(heads):
            g = h // (heads // kv_heads)
            for t in range(seq):
                scores = [float(q[b, h, t] @ k[b, g, s]) / np.sqrt(d) for s in range(t + 1)]
                weights = np.exp(np.array(scores) - max(scores))
                weights /= weights.sum()
                expected[b, h, t] = sum(wt * v[b, g, s] for s, wt in enumerate(weights))
    np.testing.assert_allclose(causal_attention(q, k, v), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: rope_cos_sin(4, 7, 1e4), "head_dim must be a positive even number, not 7"),
    (lambda: unpermute_qk(np.zeros((10, 3)), 3), "rows must split into 3 heads of even size, "
                                                 "not 10"),
    (lambda: causal_attention(np.zeros((4, 2, 8)), np.zeros((3, 2, 8)), np.zeros((3, 2, 8))),
     "query heads must be a multiple of key/value heads, not 4 and 3"),
])
def test_pieces_reject_bad_shapes(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# The real model, first two blocks


@pytest.fixture(scope="module")
def model():
    return load_smollm2(num_blocks=2)


@pytest.fixture(scope="module")
def tokens(model):
    return model.encode("The Eiffel Tower is a wrought-iron lattice tower on the Champ de "
                        "Mars in Paris, France. It is named after the engineer Gustave "
                        "Eiffel, whose company designed and built the tower from 1887 to 1889.")


def test_config_and_weight_shapes_come_from_the_file(model):
    c = model.config
    assert (c.num_blocks, c.hidden, c.ffn, c.num_heads, c.num_kv_heads, c.head_dim,
            c.vocab_size) == (2, 576, 1536, 9, 3, 64, 49152)
    assert c.tied_embeddings and model.lm_head is model.embedding
    assert c.rope_theta == 100_000.0 and np.isclose(c.rms_eps, 1e-5)
    shapes = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),
              "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}
    for block in model.blocks:
        assert list(block.linears) == list(LINEAR_NAMES)
        for name, w in block.linears.items():
            assert w.shape == shapes[name] and w.dtype == np.float32
            assert not w.flags.writeable


def test_loads_are_cached_but_independent(model):
    other = load_smollm2(num_blocks=2)
    assert other is not model
    assert other.blocks[0].linears["q"] is model.blocks[0].linears["q"]
    other.blocks[0].linears["q"] = np.zeros((576, 576), dtype=np.float32)
    assert model.blocks[0].linears["q"].any()
    assert load_smollm2().num_blocks == 30


def test_tokenizer_round_trips_english(model, tokens):
    text = "Ada Lovelace (1815–1852) wrote the first program; it's “famous” in 2024!\n\nNext."
    assert model.decode(model.encode(text)) == text
    assert model.decode(tokens).startswith("The Eiffel Tower is")
    assert tokens.dtype == np.int64 and 30 < tokens.size <= 64
    # Digits are split one by one (the "smollm" pre-tokenizer); specials are single tokens.
    assert [model.decode([i]) for i in model.encode("1887")] == ["1", "8", "8", "7"]
    assert model.encode("<|endoftext|><|im_start|>").tolist() == [0, 1]
    assert model.endoftext_id == 0


def test_logits_are_causal(model, tokens):
    changed = tokens.copy()
    changed[20] = (changed[20] + 1000) % model.config.vocab_size
    a, b = model.logits(tokens), model.logits(changed)
    np.testing.assert_allclose(a[:20], b[:20], rtol=1e-5, atol=1e-5)
    assert np.abs(a[20:] - b[20:]).max(axis=-1).min() > 1e-3


def test_batch_rows_are_independent_sequences(model, tokens):
    batch = np.stack([tokens[:24], tokens[10:34]])
    logits = model.logits(batch)
    assert logits.shape == (2, 24, 49152) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[1], model.logits(tokens[10:34]), rtol=1e-4, atol=1e-4)


def test_logits_compose_embed_blocks_head(model, tokens):
    hidden = model.embed(tokens)
    for i in range(model.num_blocks):
        hidden = model.block_forward(i, hidden)
    np.testing.assert_array_equal(model.head(hidden), model.logits(tokens))


def test_captured_linear_inputs_reproduce_the_block(model, tokens):
    hidden = model.block_forward(0, model.embed(tokens[None, :]))  # input of block 1
    out, x = model.block_linear_inputs(1, hidden)
    np.testing.assert_array_equal(out, model.block_forward(1, hidden))
    w, block, c = model.blocks[1].linears, model.blocks[1], model.config
    rows = hidden.reshape(-1, c.hidden)
    assert set(x) == set(LINEAR_NAMES)
    assert x["q"].shape == (tokens.size, 576) and x["down"].shape == (tokens.size, 1536)
    np.testing.assert_allclose(x["q"], rms_norm(rows, block.attn_norm, c.rms_eps), rtol=1e-6)
    assert x["k"] is x["q"] and x["v"] is x["q"] and x["up"] is x["gate"]
    h = rows + x["o"] @ w["o"].T
    np.testing.assert_allclose(x["gate"], rms_norm(h, block.ffn_norm, c.rms_eps),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x["down"], silu(x["gate"] @ w["gate"].T) * (x["up"] @ w["up"].T),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.reshape(-1, c.hidden), h + x["down"] @ w["down"].T,
                               rtol=1e-4, atol=1e-4)


def test_zero_weights_remove_their_branch(model, tokens):
    hidden = model.embed(tokens)
    _, x = model.block_linear_inputs(0, hidden)
    no_ffn = model.with_linears({(0, "down"): np.zeros((576, 1536))})
    np.testing.assert_allclose(no_ffn.block_forward(0, hidden),
                               hidden + x["o"] @ model.blocks[0].linears["o"].T,
                               rtol=1e-5, atol=1e-5)
    assert model.blocks[0].linears["down"].any()  # the original is unchanged

    # Zero v: the attention output is zero, so the block is hidden + FFN(hidden).
    no_attn = model.with_linears({(0, "v"): np.zeros((192, 576))})
    out, x0 = no_attn.block_linear_inputs(0, hidden)
    assert not x0["o"].any()
    w, block, c = model.blocks[0].linears, model.blocks[0], model.config
    n2 = rms_norm(hidden, block.ffn_norm, c.rms_eps)
    np.testing.assert_allclose(out, hidden + (silu(n2 @ w["gate"].T) * (n2 @ w["up"].T))
                               @ w["down"].T, rtol=1e-4, atol=1e-4)


def test_set_linear_stores_a_checked_copy(model):
    m = model.truncated(1)
    pruned = np.array(m.blocks[0].linears["up"])
    pruned[:, ::2] = 0
    m.set_linear(0, "up", pruned)
    pruned[:] = 1  # the model kept its own copy
    stored = m.blocks[0].linears["up"]
    assert not stored[:, ::2].any() and stored[:, 1::2].any() and not stored.flags.writeable
    assert model.blocks[0].linears["up"][:, ::2].any()


@pytest.mark.parametrize("index, name, weight, message", [
    (0, "down", np.zeros((1536, 576)),
     "blocks[0].linears['down'] must have shape (576, 1536), not (1536, 576)"),
    (0, "ffn_down", np.zeros((576, 1536)),
     "linear name must be one of q, k, v, o, gate, up, down, not 'ffn_down'"),
    (2, "q", np.zeros((576, 576)), "block index must be an integer from 0 to 1, not 2"),
    (1, "k", np.zeros((192, 576), dtype=int),
     "blocks[1].linears['k'] must have a floating-point dtype, not int64"),
    (1, "k", np.full((192, 576), np.nan), "blocks[1].linears['k'] must be finite"),
])
def test_set_linear_rejects_bad_weights(model, index, name, weight, message):
    with pytest.raises(ValueError) as info:
        model.with_linears({(index, name): weight})
    assert str(info.value) == message


@pytest.mark.parametrize("tokens, message", [
    (np.array([1, 2, 49152]), "tokens[2] must be in 0..49151, not 49152"),
    (np.array([[1, -1]]), "tokens[0, 1] must be in 0..49151, not -1"),
    (np.array([1.0, 2.0]), "tokens must have an integer dtype, not float64"),
    (np.zeros((1, 1, 2), dtype=int),
     "tokens must be (seq,) or (batch, seq), not an array of shape (1, 1, 2)"),
    (np.zeros((2, 0), dtype=int), "sequence length must be from 1 to 8192, not 0"),
])
def test_tokens_are_validated(model, tokens, message):
    with pytest.raises(ValueError) as info:
        model.logits(tokens)
    assert str(info.value) == message


def test_truncated_rejects_bad_counts(model):
    with pytest.raises(ValueError) as info:
        model.truncated(3)
    assert str(info.value) == "num_blocks must be an integer from 1 to 2, not 3"


def test_perplexity_is_exp_mean_nll_of_float64_log_softmax(model, tokens):
    windows = np.stack([tokens[:16], tokens[16:32], tokens[8:24]])
    logits = model.logits(windows).astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs[:, :-1], windows[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(model.token_nll(windows), nll, rtol=1e-5, atol=1e-5)
    for batch_size in (1, 2, 8):
        assert np.isclose(perplexity(model, windows, batch_size=batch_size),
                          np.exp(nll.mean()), rtol=1e-5)
    with pytest.raises(ValueError) as info:
        model.token_nll(tokens[:1])
    assert str(info.value) == "sequence length must be at least 2 to score a next token, not 1"


# --------------------------------------------------------------------------------------------
# The full model


def test_full_model_knows_the_capital_of_france():
    full = load_smollm2()
    logits = full.logits(full.encode("The capital of France is"))
    assert full.decode([int(logits[-1].argmax())]) == " Paris"


def test_full_model_finds_plain_english_easy(tokens):
    # 6.3 measured; with q/k left in llama.cpp's row order under rotate-half RoPE it is 25.
    assert perplexity(load_smollm2(), tokens[None, :]) < 9


@pytest.mark.slow
def test_full_model_dense_perplexity_on_held_out_wikipedia():
    from sparsecim.sw.textdata import calibration_and_evaluation_windows

    full = load_smollm2()
    _, evaluation = calibration_and_evaluation_windows(
        full.encode, n_calib=1, n_eval=8, separator=[full.endoftext_id])
    # 21.2 measured on these 8 windows (19.1 on 32); q/k left in llama.cpp's row order push
    # it out of this range.
    assert 12 < perplexity(full, evaluation) < 25
