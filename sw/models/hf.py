"""Hugging Face checkpoints: ``config.json`` shape tables and ``*.safetensors`` weights, no torch.

A Hugging Face folder holds ``config.json`` and its weights in ``model.safetensors`` or, when
sharded, in several files named by ``model.safetensors.index.json``'s ``weight_map``. The
tensors are read with ``safetensors``' numpy API (``safe_open(..., framework="np")``); bf16
tensors (numpy has no such type) are widened from their raw bits at the offsets the same
header gives, and every tensor is converted to float32 (exactly: bf16 and fp16 values are all
float32 values).

Architectures (``model_type``) and the linears of each block, as ``(out_features,
in_features)`` weights applied as ``y = x @ w.T``:

=====================  ====================================  ================================
model_type             linears of a block                    weights of block ``i``
=====================  ====================================  ================================
llama, mistral, qwen2  q k v o gate up down (GQA, SwiGLU)    ``model.layers.i.self_attn.*``,
                                                             ``model.layers.i.mlp.*``
gpt2                   q k v o fc1 fc2 (``c_attn`` split)    ``h.i.attn.*``, ``h.i.mlp.*``
                                                             (Conv1D: stored transposed)
opt                    q k v o fc1 fc2                       ``model.decoder.layers.i.*``
bert                   q k v o fc1 fc2                       ``encoder.layer.i.*``
=====================  ====================================  ================================

:func:`linear_specs` states, for one config, every linear's name, block, tensor and shape; the
shape table (:func:`shape_table`) and the weight loader (:func:`load_linears`) both derive from
it, so they cannot disagree.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model_shapes import AttentionShape, LinearShape, ModelShape

__all__ = ["ARCHITECTURES", "CheckpointError", "LinearSpec", "read_config", "linear_specs",
           "shape_table", "TensorStore", "load_linears"]

#: The ``model_type`` values understood, and the family each belongs to.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2",
                 "opt": "opt", "bert": "bert"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing file, unsupported architecture, a tensor that
    disagrees with its config, a corrupt file. The message names the file and the value."""


@dataclass(frozen=True)
class LinearSpec:
    """One linear of a checkpoint.

    Attributes
    ----------
    name : str
        ``blocks.<block>.<linear>`` (e.g. ``blocks.0.q``).
    linear : str
        The linear's name inside its block (``q``, ``gate``, ``fc1`` ...).
    block : int
    tensor : str
        The checkpoint tensor holding it (without any ``bert.`` / ``transformer.`` prefix).
    out_features, in_features : int
    part : tuple or None
        For a fused tensor (GPT-2's ``c_attn``), ``(index, parts)``: this linear is output
        slice ``index`` of ``parts`` equal slices.
    conv1d : bool
        The tensor is stored ``(in_features, out_features)`` (GPT-2's Conv1D).
    """
    name: str
    linear: str
    block: int
    tensor: str
    out_features: int
    in_features: int
    part: tuple | None = None
    conv1d: bool = False


def read_config(path) -> dict:
    """``config.json`` as a dict, its ``model_type`` checked.

    Parameters
    ----------
    path : str or Path
        A ``config.json`` file or the folder holding it.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a JSON object, or names an unsupported ``model_type``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint folder {path.parent} has no config.json")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(config).__name__}")
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise CheckpointError(f"model_type in {path} must be one of "
                              f"{', '.join(ARCHITECTURES)}, not {kind!r}")
    return config


def _int(config: dict, key: str, default=None) -> int:
    value = config.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"config.json key {key} must be a positive integer, not "
                              f"{value!r}")
    return value


def dims(config: dict) -> dict:
    """The sizes of a config in one vocabulary: ``blocks``, ``hidden``, ``ffn``, ``heads``,
    ``kv_heads``, ``head_dim``."""
    kind = ARCHITECTURES[config["model_type"]]
    if kind == "gpt2":
        hidden = _int(config, "n_embd")
        heads = _int(config, "n_head")
        return {"blocks": _int(config, "n_layer"), "hidden": hidden,
                "ffn": _int(config, "n_inner", 4 * hidden), "heads": heads, "kv_heads": heads,
                "head_dim": hidden // heads}
    hidden = _int(config, "hidden_size")
    heads = _int(config, "num_attention_heads")
    if kind == "llama":
        return {"blocks": _int(config, "num_hidden_layers"), "hidden": hidden,
                "ffn": _int(config, "intermediate_size"), "heads": heads,
                "kv_heads": _int(config, "num_key_value_heads", heads),
                "head_dim": _int(config, "head_dim", hidden // heads)}
    ffn = _int(config, "ffn_dim" if kind == "opt" else "intermediate_size")
    return {"blocks": _int(config, "num_hidden_layers"), "hidden": hidden, "ffn": ffn,
            "heads": heads, "kv_heads": heads, "head_dim": hidden // heads}


def _block_rows(kind: str, d: dict) -> tuple[str, list, bool]:
    """One block's linears in architecture ``kind``: ``(the tensor prefix, with {i} for the
    block, rows (linear, tensor, out_features, in_features), conv1d)``; GPT-2's fused
    ``c_attn`` (q, k, v) is not among the rows."""
    h, f = d["hidden"], d["ffn"]
    qd, kvd = d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"]
    if kind == "llama":
        return "model.layers.{i}.", [
            ("q", "self_attn.q_proj", qd, h), ("k", "self_attn.k_proj", kvd, h),
            ("v", "self_attn.v_proj", kvd, h), ("o", "self_attn.o_proj", h, qd),
            ("gate", "mlp.gate_proj", f, h), ("up", "mlp.up_proj", f, h),
            ("down", "mlp.down_proj", h, f)], False
    if kind == "gpt2":
        return "h.{i}.", [("o", "attn.c_proj", h, h), ("fc1", "mlp.c_fc", f, h),
                          ("fc2", "mlp.c_proj", h, f)], True
    if kind == "opt":
        return "model.decoder.layers.{i}.", [
            ("q", "self_attn.q_proj", h, h), ("k", "self_attn.k_proj", h, h),
            ("v", "self_attn.v_proj", h, h), ("o", "self_attn.out_proj", h, h),
            ("fc1", "fc1", f, h), ("fc2", "fc2", h, f)], False
    return "encoder.layer.{i}.", [  # bert
        ("q", "attention.self.query", h, h), ("k", "attention.self.key", h, h),
        ("v", "attention.self.value", h, h), ("o", "attention.output.dense", h, h),
        ("fc1", "intermediate.dense", f, h), ("fc2", "output.dense", h, f)], False


def linear_specs(config: dict) -> list[LinearSpec]:
    """Every linear of the model described by ``config``, block by block, in the order a
    block applies them."""
    kind = ARCHITECTURES[config["model_type"]]
    d = dims(config)
    prefix, rows, conv1d = _block_rows(kind, d)
    specs = []
    for i in range(d["blocks"]):
        p = prefix.format(i=i)
        if kind == "gpt2":
            # c_attn holds q, k and v as three equal output slices of one tensor.
            h = d["hidden"]
            specs += [LinearSpec(f"blocks.{i}.{n}", n, i, p + "attn.c_attn.weight", h, h,
                                 part=(j, 3), conv1d=True) for j, n in enumerate("qkv")]
        specs += [LinearSpec(f"blocks.{i}.{n}", n, i, f"{p}{t}.weight", o, k, conv1d=conv1d)
                  for n, t, o, k in rows]
    return specs


def shape_table(config: dict, name: str = "") -> ModelShape:
    """The layer-shape table of ``config`` (no weights needed): one row per linear of a block,
    ``count`` 1, in all the blocks, and the self-attention's heads."""
    d = dims(config)
    rows, seen = [], set()
    for spec in linear_specs(config):
        if spec.linear not in seen:
            seen.add(spec.linear)
            rows.append(LinearShape(spec.linear, spec.in_features, spec.out_features, 1,
                                    d["blocks"]))
    kind = config["model_type"]
    source = (f"config.json ({kind}): {d['blocks']} blocks, hidden {d['hidden']}, ffn "
              f"{d['ffn']}, heads {d['heads']}/{d['kv_heads']} of {d['head_dim']}")
    return ModelShape(name or kind, d["hidden"], tuple(rows),
                      (AttentionShape("self", d["heads"], d["head_dim"], 1, d["blocks"]),),
                      source)


class TensorStore:
    """The tensors of a Hugging Face folder (one file or sharded), read lazily as float32.

    Parameters
    ----------
    folder : str or Path

    Raises
    ------
    CheckpointError
        If the folder has no ``model.safetensors`` nor index file, the index is malformed or
        names a missing shard, or a file is not a complete safetensors file.
    """

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        single = self.folder / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index} must be JSON with a weight_map, not "
                                      f"unreadable: {exc!r}") from None
            self._files = {name: self.folder / file for name, file in weight_map.items()}
        elif single.is_file():
            self._files = None
            self._single = single
        else:
            raise CheckpointError(f"checkpoint folder {self.folder} has no model.safetensors "
                                  f"nor model.safetensors.index.json")
        self._handles = {}
        if self._files is None:
            self._files = {name: single for name in self._open(single).keys()}

    def _open(self, path: Path):
        if path not in self._handles:
            from safetensors import SafetensorError, safe_open

            if not path.is_file():
                raise CheckpointError(f"shard {path} named by the index does not exist")
            try:
                self._handles[path] = safe_open(str(path), framework="np")
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"safetensors file {path} is truncated or corrupt: "
                                      f"{exc}") from None
        return self._handles[path]

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return list(self._files)

    def resolve(self, name: str, prefixes=("",)) -> str | None:
        """The stored name of ``name`` under one of ``prefixes`` (``bert.``), or None."""
        for prefix in prefixes:
            if prefix + name in self._files:
                return prefix + name
        return None

    def get(self, name: str, shape: tuple | None = None) -> np.ndarray:
        """Tensor ``name`` as a float32 array, its shape checked against ``shape``.

        Raises
        ------
        CheckpointError
            If the tensor is missing, cannot be read or has another shape.
        """
        from safetensors import SafetensorError

        if name not in self._files:
            raise CheckpointError(f"checkpoint {self.folder} has no tensor {name}")
        path = self._files[name]
        try:
            handle = self._open(path)
            if handle.get_slice(name).get_dtype() == "BF16":
                array = self._bf16(path, name)
            else:
                array = handle.get_tensor(name)
        except (SafetensorError, OSError, TypeError, ValueError) as exc:
            raise CheckpointError(f"tensor {name} of {path} cannot be read: {exc}") from None
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise CheckpointError(f"tensor {name} must have shape {tuple(shape)} (from "
                                  f"config.json), not {tuple(array.shape)}")
        # bf16 comes as ml_dtypes.bfloat16; every float type widens exactly to float32.
        return np.asarray(array, dtype=np.float32)


    def _bf16(self, path: Path, name: str) -> np.ndarray:
        # numpy has no bfloat16 (safetensors hands out ml_dtypes' only if that is imported):
        # read the raw little-endian halves at the header's offsets; a bf16 value is the top
        # 16 bits of the float32 of the same value, so the widening is exact.
        with path.open("rb") as file:
            (size,) = struct.unpack("<Q", file.read(8))
            entry = json.loads(file.read(size))[name]
            start, stop = entry["data_offsets"]
            file.seek(8 + size + start)
            raw = np.frombuffer(file.read(stop - start), dtype="<u2")
        if raw.size != int(np.prod(entry["shape"])):
            raise ValueError(f"bf16 data of {raw.size} values for shape {entry['shape']}")
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


#: Prefixes a family's tensors may carry (a task head wraps the base model).
PREFIXES = {"llama": ("",), "gpt2": ("", "transformer."), "opt": ("",),
            "bert": ("", "bert.")}


def load_linears(store: TensorStore, config: dict, *, blocks: int | None = None
                 ) -> list[tuple[LinearSpec, np.ndarray]]:
    """The weights of every linear (of the first ``blocks`` blocks), ``(out, in)`` float32.

    Raises
    ------
    CheckpointError
        If a tensor is missing or its shape disagrees with the config.
    """
    kind = ARCHITECTURES[config["model_type"]]
    out = []
    for spec in linear_specs(config):
        if blocks is not None and spec.block >= blocks:
            break
        name = store.resolve(spec.tensor, PREFIXES[kind])
        if name is None:
            raise CheckpointError(f"checkpoint {store.folder} has no tensor {spec.tensor} "
                                  f"(linear {spec.name})")
        if spec.part is not None:
            index, parts = spec.part
            full = store.get(name, (spec.in_features, spec.out_features * parts))
            weight = full[:, index * spec.out_features:(index + 1) * spec.out_features].T
        elif spec.conv1d:
            weight = store.get(name, (spec.in_features, spec.out_features)).T
        else:
            weight = store.get(name, (spec.out_features, spec.in_features))
        out.append((spec, np.ascontiguousarray(weight)))
    return out
