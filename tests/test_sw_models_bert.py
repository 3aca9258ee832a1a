"""The packaged all-MiniLM-L6-v2 (a real Hugging Face BERT folder) through the folder loader.

The reference below reads ``model.safetensors`` with ``safetensors.numpy.load_file`` and runs
BERT in float64, one head at a time, with ``math.erf`` for GELU: written apart from
``sparsecim.sw.models.bert``.
"""

import math

import numpy as np
import pytest
from sparsecim.sw.models import load_checkpoint, minilm_path

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome, said the critic in the Sunday paper."]


@pytest.fixture(scope="module")
def minilm():
    return load_checkpoint(minilm_path())


def reference_embedding(folder, ids: np.ndarray) -> np.ndarray:
    from safetensors.numpy import load_file

    t = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    eps, heads = 1e-12, 12
    erf = np.vectorize(math.erf)

    def norm(x, name):
        mu = x.mean(axis=1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * t[name + ".weight"] + t[name + ".bias"]

    def dense(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    e = "embeddings."
    x = norm(t[e + "word_embeddings.weight"][ids] + t[e + "position_embeddings.weight"][
        :len(ids)] + t[e + "token_type_embeddings.weight"][0], e + "LayerNorm")
    d = x.shape[1] // heads
    for i in range(6):
        p = f"encoder.layer.{i}."
        q = dense(x, p + "attention.self.query")
        k = dense(x, p + "attention.self.key")
        v = dense(x, p + "attention.self.value")
        ctx = np.zeros_like(x)
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            s = q[:, cols] @ k[:, cols].T / math.sqrt(d)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            ctx[:, cols] = (s / s.sum(axis=1, keepdims=True)) @ v[:, cols]
        x = norm(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        mid = dense(x, p + "intermediate.dense")
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = norm(x + dense(mid, p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def test_minilm_is_a_six_block_bert_folder(minilm):
    assert (minilm.kind, minilm.arch) == ("folder", "bert")
    assert [(lin.name, lin.weight.shape) for lin in minilm.linears[:6]] == [
        ("blocks.0.q", (384, 384)), ("blocks.0.k", (384, 384)), ("blocks.0.v", (384, 384)),
        ("blocks.0.o", (384, 384)), ("blocks.0.fc1", (1536, 384)), ("blocks.0.fc2", (384, 1536))]
    assert len(minilm.linears) == 36


@pytest.mark.parametrize("sentence", SENTENCES)
def test_minilm_embeddings_equal_an_independent_reference(minilm, sentence):
    tokenizer = minilm.model.tokenizer
    ids = np.asarray(tokenizer.encode(sentence).ids)
    # [CLS] ... [SEP] of the uncased WordPiece vocabulary.
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")
    got = minilm.model.sentence_embedding(minilm.model.encode(sentence))
    expected = reference_embedding(minilm_path(), ids)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_minilm_ranks_the_paraphrase_above_the_unrelated_sentence(minilm):
    a, b, c = (minilm.model.sentence_embedding(minilm.model.encode(s)) for s in SENTENCES)
    assert a @ b > 0.6 > 0.2 > a @ c
