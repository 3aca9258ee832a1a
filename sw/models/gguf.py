"""GGUF checkpoints of the llama architecture (llama.cpp's format), no torch.

One loader for every llama-architecture GGUF file, the packaged SmolLM2-135M
(:func:`sparsecim.sw.smollm.load_smollm2` calls it) as well as a user's own: the tensors are
read with ``gguf`` (``GGUFReader``) and dequantized to float32 (``gguf.quants.dequantize``,
any quantization type ``gguf`` knows), the shape comes from the ``llama.*`` metadata, and
``q``/``k`` are un-permuted to the Hugging Face layout (:func:`~sparsecim.sw.smollm.unpermute_qk`).
The result is a :class:`~sparsecim.sw.smollm.SmolLM`, the numpy forward pass of the llama
family.

The tokenizer is rebuilt from the metadata when it is the byte-level BPE (``gpt2``) one;
other tokenizers (SentencePiece ``llama``) leave ``tokenizer`` None: the weights load and the
forward pass runs on token ids, but text cannot be encoded.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import numpy as np

from ..smollm import SmolLM, SmolLMBlock, SmolLMConfig, unpermute_qk

__all__ = ["load_gguf", "GGUF_LINEARS"]

#: GGUF tensor name of each linear of a block (``blk.<i>.<name>.weight``).
GGUF_LINEARS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}


def _require(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"loading a GGUF file needs {pip_name}; install it with "
                                  f"`pip install {pip_name}`", name=module) from exc


def _metadata(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"GGUF metadata has no {key!r}")
    return field.contents()


def _build_tokenizer(reader):
    """Byte-level BPE from the metadata, or None for a tokenizer kind not rebuilt here."""
    if "tokenizer.ggml.model" not in reader.fields:
        return None
    tokenizers = _require("tokenizers", "tokenizers")
    model_kind = _metadata(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2" or "tokenizer.ggml.merges" not in reader.fields:
        return None
    pre = reader.fields["tokenizer.ggml.pre"].contents() \
        if "tokenizer.ggml.pre" in reader.fields else "default"
    tokens = _metadata(reader, "tokenizer.ggml.tokens")
    token_types = _metadata(reader, "tokenizer.ggml.token_type")
    merges = []
    for merge in _metadata(reader, "tokenizer.ggml.merges"):
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise ValueError(f"a BPE merge must be two tokens separated by one space, "
                             f"not {merge!r}")
        merges.append(pair)
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges))
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # llama.cpp's "smollm" pre-tokenizer (= the Hugging Face tokenizer.json): every digit on
    # its own, then GPT-2's byte-level split; no prefix space, no normalizer. Other "gpt2"
    # pre-tokenizers get GPT-2's split alone (close, not always identical).
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Digits(individual_digits=True), byte_level,
    ]) if pre == "smollm" else byte_level
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    # GGUF token type 3 is "control": <|endoftext|>, <|im_start|>, ... are never split.
    tokenizer.add_special_tokens([
        tokenizers.AddedToken(token, special=True, normalized=False)
        for token, kind in zip(tokens, token_types, strict=True) if kind == 3])
    return tokenizer


@functools.lru_cache(maxsize=2)
def _load(path: str) -> SmolLM:
    gguf = _require("gguf", "gguf")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise ValueError(f"GGUF file {path} cannot be read: {exc}") from None
    arch = _metadata(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture must be 'llama', not {arch!r}")

    def meta(key):
        return _metadata(reader, f"llama.{key}")

    hidden, num_heads = int(meta("embedding_length")), int(meta("attention.head_count"))
    head_dim = hidden // num_heads
    rope_dim = int(meta("rope.dimension_count")) if "llama.rope.dimension_count" \
        in reader.fields else head_dim
    if rope_dim != head_dim:
        raise ValueError(f"RoPE must cover the whole head of {head_dim}, not {rope_dim}")

    tensors = {}
    for tensor in reader.tensors:
        # dequantize returns a view of the memory-mapped file for F32 tensors: copy, so the
        # model owns its arrays; read-only, because the cached model is shared.
        array = np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type),
                         dtype=np.float32, order="C")
        array.flags.writeable = False
        tensors[tensor.name] = array

    def tensor(name):
        if name not in tensors:
            raise ValueError(f"GGUF file {path} has no tensor {name!r}")
        return tensors[name]

    embedding = tensor("token_embd.weight")
    config = SmolLMConfig(
        num_blocks=int(meta("block_count")), hidden=hidden, ffn=int(meta("feed_forward_length")),
        num_heads=num_heads, num_kv_heads=int(meta("attention.head_count_kv")),
        head_dim=head_dim, vocab_size=int(embedding.shape[0]),
        rms_eps=float(meta("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta("rope.freq_base")) if "llama.rope.freq_base" in reader.fields
        else 10000.0,
        context_length=int(meta("context_length")),
        tied_embeddings="output.weight" not in tensors)

    blocks = []
    for i in range(config.num_blocks):
        linears = {name: tensor(f"blk.{i}.{gguf_name}.weight")
                   for name, gguf_name in GGUF_LINEARS.items()}
        for name, heads in (("q", config.num_heads), ("k", config.num_kv_heads)):
            linears[name] = unpermute_qk(linears[name], heads)
            linears[name].flags.writeable = False
        blocks.append(SmolLMBlock(attn_norm=tensor(f"blk.{i}.attn_norm.weight"),
                                  ffn_norm=tensor(f"blk.{i}.ffn_norm.weight"),
                                  linears=linears))
    return SmolLM(config=config, embedding=embedding, final_norm=tensor("output_norm.weight"),
                  lm_head=tensors.get("output.weight", embedding), blocks=blocks,
                  tokenizer=_build_tokenizer(reader))


def load_gguf(path, *, num_blocks: int | None = None) -> SmolLM:
    """Load a llama-architecture GGUF file as a float32 numpy model.

    The file is read and dequantized once per process (cached by its resolved path); every
    call returns a fresh :class:`~sparsecim.sw.smollm.SmolLM` over shared read-only arrays.

    Parameters
    ----------
    path : str or Path
        The GGUF file.
    num_blocks : int, optional
        Keep only the first blocks; all by default.

    Returns
    -------
    SmolLM
        ``tokenizer`` is None unless the file carries a byte-level BPE (``gpt2``) tokenizer.

    Raises
    ------
    ModuleNotFoundError
        If ``gguf`` (or, for its tokenizer, ``tokenizers``) is not installed.
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the file is not a readable llama-architecture GGUF, lacks a tensor or metadata key
        the architecture needs, or ``num_blocks`` is out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    model = _load(str(path.resolve()))
    return model.truncated(model.num_blocks if num_blocks is None else num_blocks)
