"""Users' checkpoints as ``sparsecim run`` models: ``--model PATH``.

A model setting that is not a name of :data:`sparsecim.sw.pipeline.MODELS` but a path is resolved
here (:func:`resolve_path_model`):

- a ``config.json`` is a :class:`~sparsecim.sw.pipeline.ShapeTable` (figures without weights);
- a Hugging Face folder, a ``.gguf`` or a ``.onnx`` is a loader (:func:`checkpoint_layers`):
  the linears of the first ``blocks`` blocks (ONNX: every linear, in graph order). Where the
  checkpoint has a numpy forward pass and a tokenizer (llama family, bert, GGUF with a BPE
  tokenizer), each linear's inputs are its real activations on the text (the file named by the
  ``text`` setting, else the packaged Wikipedia); otherwise (ONNX, gpt2, opt) they are seeded
  Gaussian activations with planted outlier channels, as the ``synthetic`` model's.

:func:`checkpoint_quality` measures the model-level cost of the sparsification, as FLOW's
evaluation does for SmolLM2: perplexity (llama family) or the cosine similarity of sentence
embeddings to the dense model's (bert, which has no LM head).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .models import Checkpoint, CheckpointError, load_checkpoint
from .pipeline import LayerInput, RunError, RunSettings, ShapeTable

__all__ = ["is_path_model", "resolve_path_model", "checkpoint_layers", "checkpoint_quality",
           "model_text"]

#: Wikipedia lead sections taken as the default text (enough for 512 calibration tokens).
_WIKI_TEXTS = 40


def is_path_model(name: str) -> bool:
    """True if a model setting names a path (a folder, ``.gguf``, ``.onnx`` or ``.json``)."""
    return ("/" in name or name.endswith((".gguf", ".onnx", ".json"))
            or Path(name).is_dir())


@functools.lru_cache(maxsize=4)
def _checkpoint(path: str) -> Checkpoint:
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise RunError(str(exc)) from None


def resolve_path_model(name: str):
    """The :data:`~sparsecim.sw.pipeline.MODELS`-style entry of a path: a ``ShapeTable`` for a
    ``config.json``, else :func:`checkpoint_layers`.

    Raises
    ------
    RunError
        If the path does not exist or is of no known kind, or its ``config.json`` is missing or
        unsupported.
    """
    path = Path(name)
    if not path.exists():
        raise RunError(f"model must be a known name or an existing path, not {name!r} (no such "
                       f"file or folder)")
    if path.is_file() and path.name.endswith(".json"):
        return ShapeTable(_checkpoint(str(path)).shape)
    if path.is_dir():
        from .models.hf import read_config

        try:
            read_config(path)
        except CheckpointError as exc:
            raise RunError(str(exc)) from None
    elif path.suffix not in (".gguf", ".onnx"):
        raise RunError(f"model path must be a Hugging Face folder, a .gguf, a .onnx or a "
                       f"config.json, not {name}")
    return checkpoint_layers


def _as_run_error(function):
    """``function`` with a model's ``ValueError`` (a sequence longer than its context ...) as a
    :class:`~sparsecim.sw.pipeline.RunError` naming the model."""
    @functools.wraps(function)
    def wrapper(s: RunSettings, *args):
        try:
            return function(s, *args)
        except RunError:
            raise
        except ValueError as exc:
            raise RunError(f"model {s.model}: {exc}") from None
    return wrapper


def model_text(s: RunSettings) -> str:
    """The text named by the ``text`` setting, else the first Wikipedia lead sections."""
    if s.text:
        try:
            return Path(s.text).read_text()
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
            raise RunError(f"text file {s.text} cannot be read: {exc}") from None
    from .textdata import load_wiki_texts

    try:
        return "\n\n".join(load_wiki_texts()[:_WIKI_TEXTS])
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RunError(f"no text to run the model on: {exc} (or name a file with --text)") \
            from None


def _selected(ckpt: Checkpoint, s: RunSettings):
    defaults = RunSettings.__dataclass_fields__["linears"].default
    names = {lin.linear for lin in ckpt.linears}
    if s.linears != defaults:
        unknown = [n for n in s.linears if n not in names]
        if unknown:
            raise RunError(f"linears must be names from {', '.join(sorted(names))}, not "
                           f"{', '.join(unknown)}")
    wanted = set(names) if s.linears == defaults else set(s.linears)
    return [lin for lin in ckpt.linears
            if lin.linear in wanted and (lin.block is None or lin.block < s.blocks)]


@_as_run_error
def checkpoint_layers(s: RunSettings) -> list[LayerInput]:
    """The layers of the checkpoint at ``s.model`` with their input activations.

    Raises
    ------
    RunError
        For a checkpoint that cannot be loaded (one line naming the file and the value), or
        text too short for ``max(tokens, calib_tokens)`` tokens.
    """
    ckpt = _checkpoint(s.model)
    linears = _selected(ckpt, s)
    model = ckpt.model
    seq = max(s.tokens, s.calib_tokens)
    if model is None or getattr(model, "tokenizer", None) is None:
        rng = np.random.default_rng(s.seed)
        layers = []
        for lin in linears:
            in_f = lin.weight.shape[1]
            gain = np.ones(in_f)
            gain[rng.choice(in_f, size=max(1, in_f // 64), replace=False)] = 20.0
            x = rng.normal(0.0, 1.0, (seq, in_f)) * gain
            layers.append(LayerInput(lin.name, lin.weight, x[:s.tokens], x[:s.calib_tokens],
                                     lin.block))
        return layers
    ids = model.encode(model_text(s))
    limit = min(len(ids), getattr(getattr(model, "position", None), "shape", (len(ids),))[0])
    if seq > limit:
        raise RunError(f"tokens and calib_tokens must be at most {limit} (the text's tokens), "
                       f"not {seq}")
    hidden = model.embed(ids[:seq])
    by_block: dict = {}
    for lin in linears:
        by_block.setdefault(lin.block, []).append(lin)
    layers = []
    for index in range(min(s.blocks, model.num_blocks)):
        hidden, inputs = model.block_linear_inputs(index, hidden)
        for lin in by_block.get(index, []):
            x = inputs[lin.linear]
            layers.append(LayerInput(lin.name, lin.weight, x[:s.tokens], x[:s.calib_tokens],
                                     index))
    return layers


@_as_run_error
def checkpoint_quality(s: RunSettings, sparsified) -> dict | None:
    """Model-level quality of the sparsified float weights against the dense model.

    Returns
    -------
    dict or None
        ``{"metric": "perplexity", "dense": float, "sparse": float, "tokens": int}`` for the
        llama family (next-token perplexity on windows of the text after the calibration
        tokens), ``{"metric": "cosine", "mean": float, "min": float, "sentences": int}`` for
        bert (the sparse model's sentence embeddings against the dense one's); None for a
        checkpoint without a forward pass or tokenizer.
    """
    ckpt = _checkpoint(s.model)
    model = ckpt.model
    if model is None or getattr(model, "tokenizer", None) is None:
        return None
    replacements = {}
    for sp in sparsified:
        parts = sp.name.split(".")
        replacements[int(parts[1]), parts[2]] = sp.weight
    sparse = model.with_linears(replacements)
    text = model_text(s)
    if hasattr(model, "sentence_embedding"):
        sentences = [t.strip() for t in text.replace("\n", " ").split(". ") if len(t) > 20][:32]
        cos = []
        for sentence in sentences:
            ids = model.encode(sentence)
            cos.append(float(model.sentence_embedding(ids) @ sparse.sentence_embedding(ids)))
        return {"metric": "cosine", "mean": float(np.mean(cos)), "min": float(np.min(cos)),
                "sentences": len(cos)}
    from .smollm import perplexity

    ids = model.encode(text)[s.calib_tokens:]
    window = min(128, model.config.context_length)
    count = min(8, len(ids) // window)
    if count < 1:
        return None
    windows = ids[:count * window].reshape(count, window)
    return {"metric": "perplexity", "dense": perplexity(model, windows),
            "sparse": perplexity(sparse, windows), "tokens": int(windows.size)}
