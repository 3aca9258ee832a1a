"""Layer-shape tables of real transformer models, for whole-model figures without weights.

Each model lists its linear layers (``in × out``, how many per block, in how many blocks) and
its attention matmuls (heads × head size, per block). The figures come from the models'
public Hugging Face configs, named in :attr:`ModelShape.source`; embeddings, norms, biases and
the output head are not linear layers here (they are not mapped onto the arrays).

Conventions:

- GPT-2's fused ``c_attn`` (1024 → 3072) is listed as its three 1024 × 1024 parts ``q``,
  ``k``, ``v`` (the same weights; a Monarch factorization is per part);
- attention MACs per token at sequence length ``S`` (:meth:`ModelShape.attention_macs`):
  ``Q·Kᵀ`` and ``A·V`` each ``heads · head_dim · S``, every token attending to all ``S``
  positions (the encoder case; for causal models this is the cost of the last token of a
  length-``S`` context, the decode step). Softmax, scaling and norms are not counted.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

__all__ = ["LinearShape", "AttentionShape", "ModelShape", "MODELS", "model_shape"]


@dataclass(frozen=True)
class LinearShape:
    """``count`` linear layers ``inputs → outputs`` in each of ``blocks`` blocks."""
    name: str
    inputs: int
    outputs: int
    count: int
    blocks: int

    @property
    def total(self) -> int:
        """Layers of this shape in the model: ``count · blocks``."""
        return self.count * self.blocks

    @property
    def parameters(self) -> int:
        """Weights of all of them: ``inputs · outputs · total``."""
        return self.inputs * self.outputs * self.total


@dataclass(frozen=True)
class AttentionShape:
    """``count`` attentions per block (``self`` or ``cross``) of ``heads`` heads of
    ``head_dim``, in ``blocks`` blocks."""
    name: str
    heads: int
    head_dim: int
    count: int
    blocks: int

    def macs(self, seq: int) -> int:
        """MACs per token of ``Q·Kᵀ`` and ``A·V`` over ``seq`` positions, all of these."""
        return 2 * self.heads * self.head_dim * seq * self.count * self.blocks


@dataclass(frozen=True)
class ModelShape:
    """A model's linear layers and attention matmuls.

    Attributes
    ----------
    name : str
    hidden : int
        Model width.
    linears : tuple of LinearShape
    attention : tuple of AttentionShape
    source : str
        The config the numbers come from.
    """
    name: str
    hidden: int
    linears: tuple[LinearShape, ...]
    attention: tuple[AttentionShape, ...]
    source: str

    @property
    def linear_parameters(self) -> int:
        """Weights of all linear layers."""
        return sum(lin.parameters for lin in self.linears)

    @property
    def linear_macs(self) -> int:
        """MACs per token of all linear layers (one per weight)."""
        return self.linear_parameters

    def attention_macs(self, seq: int) -> int:
        """MACs per token of the attention matmuls at sequence length ``seq``.

        Raises
        ------
        ValueError
            If ``seq`` is not a positive integer.
        """
        if not isinstance(seq, numbers.Integral) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"seq must be a positive integer, not {seq!r}")
        return sum(att.macs(int(seq)) for att in self.attention)


def _block(prefix: str, d: int, ffn: int, blocks: int, *, kv: int | None = None,
           gated: bool = False, cross: bool = False) -> list[LinearShape]:
    kv = d if kv is None else kv
    rows = [LinearShape(f"{prefix}q", d, d, 1, blocks), LinearShape(f"{prefix}k", d, kv, 1, blocks),
            LinearShape(f"{prefix}v", d, kv, 1, blocks), LinearShape(f"{prefix}o", d, d, 1, blocks)]
    if cross:
        rows += [LinearShape(f"{prefix}cross_{n}", d, d, 1, blocks) for n in "qkvo"]
    if gated:
        rows += [LinearShape(f"{prefix}gate", d, ffn, 1, blocks),
                 LinearShape(f"{prefix}up", d, ffn, 1, blocks),
                 LinearShape(f"{prefix}down", ffn, d, 1, blocks)]
    else:
        rows += [LinearShape(f"{prefix}fc1", d, ffn, 1, blocks),
                 LinearShape(f"{prefix}fc2", ffn, d, 1, blocks)]
    return rows


def _models() -> dict[str, ModelShape]:
    bart_linears = _block("enc.", 1024, 4096, 12) + _block("dec.", 1024, 4096, 12, cross=True)
    return {m.name: m for m in (
        ModelShape("bert-large", 1024, tuple(_block("", 1024, 4096, 24)),
                   (AttentionShape("self", 16, 64, 1, 24),),
                   "bert-large-uncased: hidden_size 1024, num_hidden_layers 24, "
                   "num_attention_heads 16, intermediate_size 4096"),
        ModelShape("bart-large", 1024, tuple(bart_linears),
                   (AttentionShape("enc.self", 16, 64, 1, 12),
                    AttentionShape("dec.self", 16, 64, 1, 12),
                    AttentionShape("dec.cross", 16, 64, 1, 12)),
                   "facebook/bart-large: d_model 1024, encoder_layers 12, decoder_layers 12, "
                   "encoder/decoder_attention_heads 16, encoder/decoder_ffn_dim 4096"),
        ModelShape("gpt2-medium", 1024, tuple(_block("", 1024, 4096, 24)),
                   (AttentionShape("self", 16, 64, 1, 24),),
                   "gpt2-medium: n_embd 1024, n_layer 24, n_head 16, n_inner 4·n_embd "
                   "(c_attn 1024→3072 listed as q, k, v)"),
        ModelShape("llama-2-7b", 4096, tuple(_block("", 4096, 11008, 32, gated=True)),
                   (AttentionShape("self", 32, 128, 1, 32),),
                   "meta-llama/Llama-2-7b-hf: hidden_size 4096, intermediate_size 11008, "
                   "num_hidden_layers 32, num_attention_heads 32, num_key_value_heads 32"),
        ModelShape("smollm2-135m", 576, tuple(_block("", 576, 1536, 30, kv=192, gated=True)),
                   (AttentionShape("self", 9, 64, 1, 30),),
                   "HuggingFaceTB/SmolLM2-135M: hidden_size 576, intermediate_size 1536, "
                   "num_hidden_layers 30, num_attention_heads 9, num_key_value_heads 3 "
                   "(head_dim 64)"),
        ModelShape("opt-1.3b", 2048, tuple(_block("", 2048, 8192, 24)),
                   (AttentionShape("self", 32, 64, 1, 24),),
                   "facebook/opt-1.3b: hidden_size 2048, ffn_dim 8192, num_hidden_layers 24, "
                   "num_attention_heads 32"),
    )}


#: Every model by name.
MODELS: dict[str, ModelShape] = _models()


def model_shape(name: str) -> ModelShape:
    """The table of model ``name`` (a key of :data:`MODELS`).

    Raises
    ------
    ValueError
        For an unknown name, as ``"model must be one of 'bart-large', ..., not 'bert'"``.
    """
    try:
        return MODELS[name]
    except KeyError:
        names = ", ".join(repr(n) for n in sorted(MODELS))
        raise ValueError(f"model must be one of {names}, not {name!r}") from None
