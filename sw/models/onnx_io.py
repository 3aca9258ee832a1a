"""ONNX graphs: the weight initializers of ``MatMul`` and ``Gemm`` nodes as linears, no torch.

A node is a linear when its second input (``B``) is a 2-D initializer: ``MatMul(x, B)``
computes ``x @ B``, so its weight is ``B.T``; ``Gemm(x, B)`` with ``transB = 1`` holds the
weight as stored, else ``B.T``. Nodes are taken in graph order (ONNX requires a topological
order), which for an exported transformer is the order its blocks apply them. Products of two
activations (attention) have no initializer and are not linears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .hf import CheckpointError

__all__ = ["load_onnx_linears"]


def load_onnx_linears(path) -> list[tuple[str, np.ndarray]]:
    """``(name, weight)`` of every ``MatMul``/``Gemm`` with a weight initializer, in graph
    order; ``weight`` is float32 ``(out_features, in_features)`` and ``name`` the node's name
    (its output's name if it has none).

    Raises
    ------
    CheckpointError
        If the file is missing or not an ONNX model, or it has no such node.
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as exc:
        raise CheckpointError(f"ONNX file {path} cannot be read: {exc}") from None
    inits = {init.name: init for init in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        if init is None or len(init.dims) != 2:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0):
            continue
        b = np.asarray(numpy_helper.to_array(init), dtype=np.float32)
        weight = b if node.op_type == "Gemm" and attrs.get("transB", 0) else b.T
        out.append((node.name or node.output[0], np.ascontiguousarray(weight)))
    if not out:
        raise CheckpointError(f"ONNX file {path} has no MatMul or Gemm node with a 2-D weight "
                              f"initializer (found {len(inits)} initializers, "
                              f"{len(model.graph.node)} nodes)")
    return out
