"""A BERT encoder in numpy (float32), for Hugging Face ``bert`` folders such as all-MiniLM-L6-v2.

Each block (post-LayerNorm, as BERT) is ::

    a   = LayerNorm(x + o(attention(q(x), k(x), v(x))))       bidirectional, all heads
    out = LayerNorm(a + fc2(gelu(fc1(a))))                     exact (erf) GELU

every linear with a bias. The input is ``LayerNorm(word + position + token type 0)``.
:meth:`BertModel.sentence_embeddings` is sentence-transformers' mean pooling over the tokens
followed by L2 normalisation (all-MiniLM-L6-v2's ``1_Pooling`` and ``Normalize`` modules).

Linear names follow the rest of sparsecim: ``q k v o fc1 fc2`` (``intermediate.dense`` is
``fc1``, ``output.dense`` is ``fc2``), weights ``(out_features, in_features)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["BertBlock", "BertModel", "BERT_LINEARS", "layer_norm", "gelu"]

#: The linears of a block, in the order they are applied.
BERT_LINEARS = ("q", "k", "v", "o", "fc1", "fc2")


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU ``x · Φ(x)`` (BERT's ``hidden_act = "gelu"``)."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


@dataclass
class BertBlock:
    """Weights of one encoder block: ``linears`` and ``biases`` by name (:data:`BERT_LINEARS`),
    and the two LayerNorms as ``(weight, bias)`` pairs ``attn_norm`` and ``out_norm``."""
    linears: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]
    attn_norm: tuple
    out_norm: tuple


class BertModel:
    """A BERT encoder held as float32 numpy arrays, with its tokenizer.

    Parameters
    ----------
    word, position, token_type : ndarray
        Embedding tables ``(vocab, hidden)``, ``(positions, hidden)``, ``(types, hidden)``.
    embed_norm : tuple of ndarray
        The embedding LayerNorm ``(weight, bias)``.
    blocks : list of BertBlock
    heads : int
    eps : float
        LayerNorm epsilon.
    tokenizer : tokenizers.Tokenizer or None
        From the folder's ``tokenizer.json``; :meth:`encode` adds ``[CLS]`` and ``[SEP]``.
    """

    def __init__(self, *, word, position, token_type, embed_norm, blocks, heads: int,
                 eps: float, tokenizer=None) -> None:
        hidden = word.shape[1]
        if hidden % heads:
            raise ValueError(f"heads must divide hidden size {hidden}, not {heads}")
        self.word, self.position, self.token_type = word, position, token_type
        self.embed_norm = embed_norm
        self.blocks = blocks
        self.heads = heads
        self.eps = eps
        self.tokenizer = tokenizer

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def hidden(self) -> int:
        return self.word.shape[1]

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` with ``[CLS]`` and ``[SEP]``, truncated to the positions."""
        if self.tokenizer is None:
            raise ValueError("this BERT model has no tokenizer (no tokenizer.json)")
        ids = self.tokenizer.encode(text).ids
        return np.asarray(ids[:self.position.shape[0]], dtype=np.int64)

    def embed(self, ids) -> np.ndarray:
        """Block 0's input ``(..., seq, hidden)`` for token ids ``(..., seq)``."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[-1] > self.position.shape[0]:
            raise ValueError(f"sequence length must be at most {self.position.shape[0]}, "
                             f"not {ids.shape[-1]}")
        x = self.word[ids] + self.position[:ids.shape[-1]] + self.token_type[0]
        return layer_norm(x, *self.embed_norm, self.eps)

    def _block(self, index: int, hidden, capture: bool):
        block = self.blocks[index]
        w, b = block.linears, block.biases
        *lead, seq, width = hidden.shape
        rows = hidden.reshape(-1, width)
        d = width // self.heads

        def linear(x, name):
            return x @ w[name].T + b[name]

        def heads(x2d):  # (tokens, hidden) -> (..., heads, seq, d)
            return x2d.reshape(*lead, seq, self.heads, d).swapaxes(-2, -3)

        q, k, v = heads(linear(rows, "q")), heads(linear(rows, "k")), heads(linear(rows, "v"))
        scores = (q @ k.swapaxes(-1, -2)) * np.float32(1 / np.sqrt(d))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        x_o = (scores @ v).swapaxes(-2, -3).reshape(rows.shape[0], width).astype(np.float32)
        a = layer_norm(rows + linear(x_o, "o"), *block.attn_norm, self.eps)
        x_fc2 = gelu(linear(a, "fc1"))
        out = layer_norm(a + linear(x_fc2, "fc2"), *block.out_norm, self.eps)
        out = out.reshape(hidden.shape)
        if not capture:
            return out
        return out, {"q": rows, "k": rows, "v": rows, "o": x_o, "fc1": a, "fc2": x_fc2}

    def block_forward(self, index: int, hidden) -> np.ndarray:
        """Block ``index`` on ``(..., seq, hidden)`` input."""
        return self._block(index, np.asarray(hidden, dtype=np.float32), capture=False)

    def block_linear_inputs(self, index: int, hidden):
        """Block ``index``'s output and the ``(tokens, in_features)`` input of each linear."""
        return self._block(index, np.asarray(hidden, dtype=np.float32), capture=True)

    def hidden_states(self, ids) -> np.ndarray:
        """Last block's output ``(..., seq, hidden)``."""
        hidden = self.embed(ids)
        for index in range(self.num_blocks):
            hidden = self._block(index, hidden, capture=False)
        return hidden

    def sentence_embedding(self, ids) -> np.ndarray:
        """Mean of the last hidden states over the tokens, L2-normalised: ``(hidden,)``."""
        pooled = self.hidden_states(np.asarray(ids)[None, :])[0].mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def with_linears(self, replacements: Mapping[tuple[int, str], np.ndarray]) -> BertModel:
        """A new model with some ``(block, name)`` linear weights replaced (shapes checked)."""
        blocks = [dataclasses.replace(b, linears=dict(b.linears)) for b in self.blocks]
        for (index, name), weight in replacements.items():
            old = blocks[index].linears[name]
            weight = np.asarray(weight, dtype=np.float32)
            if weight.shape != old.shape:
                raise ValueError(f"blocks[{index}].linears[{name!r}] must have shape "
                                 f"{old.shape}, not {weight.shape}")
            blocks[index].linears[name] = weight
        return BertModel(word=self.word, position=self.position, token_type=self.token_type,
                         embed_norm=self.embed_norm, blocks=blocks, heads=self.heads,
                         eps=self.eps, tokenizer=self.tokenizer)
