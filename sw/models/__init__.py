"""Users' models without torch: Hugging Face folders, ONNX graphs, GGUF files and shape tables
from ``config.json`` (:func:`load_checkpoint`), with numpy forward passes for the llama family
and BERT."""

from .checkpoint import Checkpoint, CheckpointError, Linear, load_checkpoint, minilm_path

__all__ = ["Checkpoint", "CheckpointError", "Linear", "load_checkpoint", "minilm_path"]
