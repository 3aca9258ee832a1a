"""Scheduling: a layer's mapping and operands become a command trace (DESIGN §4).

Every scheduler returns an object of the :class:`Schedule` protocol: the trace that runs on
the golden model and the RTL, how many result beats it produces, and :meth:`Schedule.assemble`
to put those beats back into the layer's output. The GEMM scheduler (dense and N:M tiling,
:mod:`.gemm`) and the Monarch scheduler (block-diagonal factors, :mod:`.monarch`) implement it;
the chip scheduler (:mod:`.chip`, layers placed on the K macros of a chip) follows it with a
chip trace and one output per layer. A new scheduler goes in a module of its own here and
returns a :class:`Schedule` too.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ...hw.trace import Trace
from .chip import (
    ChipLayer,
    ChipSchedule,
    LayerFigures,
    LayerPlacement,
    ModelPlan,
    chip_layer_figures,
    model_figures,
    place_layer,
    place_model,
    schedule_chip,
    schedule_monarch_chip,
)
from .gemm import (
    GemmSchedule,
    ReadBlock,
    as_pattern,
    chain,
    ideal_cycles,
    predict_counters,
    schedule_dense,
    schedule_layer,
)
from .monarch import (
    MAPPINGS as MONARCH_MAPPINGS,
)
from .monarch import (
    MonarchCost,
    MonarchSchedule,
    monarch_cost,
    monarch_reference,
    schedule_monarch,
)

__all__ = ["Schedule", "GemmSchedule", "ReadBlock", "MonarchSchedule", "MonarchCost",
           "MONARCH_MAPPINGS", "as_pattern", "chain", "ideal_cycles", "predict_counters",
           "schedule_dense", "schedule_layer", "schedule_monarch", "monarch_reference",
           "monarch_cost", "ChipLayer", "ModelPlan", "ChipSchedule", "LayerFigures",
           "LayerPlacement", "chip_layer_figures", "model_figures", "place_layer", "place_model",
           "schedule_chip", "schedule_monarch_chip"]


@runtime_checkable
class Schedule(Protocol):
    """What every scheduler returns.

    Attributes
    ----------
    trace : Trace
        CONFIG first, END last; every command legal; data beats exactly consumed.
    tokens : int
        Tokens (rows of the layer's input) the trace computes.
    chunk : int
        Tokens per chunk: the weights stay loaded while a chunk's tokens stream through.
    result_beats : int
        Result beats the trace produces, in trace order.
    """

    trace: Trace
    tokens: int
    chunk: int

    @property
    def result_beats(self) -> int: ...

    def assemble(self, results: np.ndarray) -> np.ndarray:
        """Result beats (``(result_beats, cols)``, from the golden model or the RTL) to the
        layer's output; raises ``ValueError`` on any other shape."""
        ...
