"""The run pipeline: model → sparsify → map → schedule → golden → figures, one layer or all.

A run takes the linear layers of a model (the packaged SmolLM2-135M, or synthetic shapes),
sparsifies them (dense; a fixed N:M by magnitude or Wanda score; FLOW's one N:M per block; or
a rank-1 Monarch projection), quantizes them to the macro's INT8, maps and schedules every
layer and runs every trace on the golden model (all tiles, checked against the plain integer
matmul): :func:`run_layers`, one :func:`run_layer` a layer. The RTL step is passed in from
``tb`` (:data:`RtlStep`; :func:`sparsecim.tb.run.rtl_step` runs Verilator), and
:func:`sparsecim.tb.run.run` writes the report and the resolved settings into the run folder.
``sparsecim gemm``, ``sparsecim layer`` and
:func:`~sparsecim.sw.experiments.flow_eval.int8_layer_check` use the same two steps
(:func:`tiled_layer`, then :func:`run_layer`), and the CLI's RTL step has the run's form
(:data:`RtlStep`): ``gemm`` maps with :func:`gemm_layer`, ``layer`` checks, prunes and maps
with :func:`layer_operands`, :func:`prune_layer` and :func:`map_layer`; the CLI only parses
and prints.

Three registries make the steps pluggable; each maps a name (the value of a setting) to a
function, and adding an entry is all a new method needs:

- :data:`MODELS` (``model``): ``loader(settings) -> list[LayerInput]``, the float weights of
  every layer and their input activations (evaluation tokens and calibration tokens).
- :data:`SPARSIFIERS` (``sparsify``): ``sparsifier(layers, settings, config) ->
  list[Sparsified]``. It sees *all* layers at once, so a per-model method (FLOW choosing one
  N:M per block under a global sparsity target) fits as well as a per-layer one. A
  :class:`Sparsified` carries the pruned float weights, the layer's pattern, optionally a
  preferred mapping and free-form ``extra`` data (e.g. Monarch factors).
- :data:`MAPPINGS` (``mapping``): ``mapper(config, sparsified, layer, settings) ->
  MappedLayer``: quantize, map, schedule; return the trace, the exact integer outputs expected
  (level L0), how to read the result beats back and the mapping figures. ``auto`` takes the
  sparsifier's preferred mapping, else ``nm`` for an N:M layer and ``linear`` for a dense one.

A new method is one function and one registry entry: FLOW is ``_flow`` in
:data:`SPARSIFIERS` (it groups layers by ``LayerInput.block``), Monarch is ``_monarch`` in
:data:`SPARSIFIERS` (factors in ``Sparsified.extra``, preferred mapping ``monarch-latency``)
plus three entries in :data:`MAPPINGS`. A new model (a layer-shape table, another packaged
checkpoint) is one entry in :data:`MODELS`; the CLI takes its name from the registry.

Layer-shape tables (:data:`sparsecim.sw.model_shapes.MODELS`: ``bert-large``,
``llama-2-7b`` ...) are models too, one :class:`ShapeTable` entry in :data:`MODELS` each. They
have no weights, so a run of one is figures only: each row of the table (each distinct linear
of a block) is mapped once and its figures multiplied by its count per block times the blocks
(:attr:`LayerRecord.copies <sparsecim.sw.records.LayerRecord>`); the pattern of ``magnitude``
or ``wanda`` is declared, not found by pruning (both give the same figures); cycles come from
:func:`~sparsecim.sw.schedule.predict_counters`, once per distinct shape and pattern. Nothing
runs on the golden model or the RTL (``golden_match`` and ``rtl_match`` are None), and FLOW,
Monarch and ``rtl_layers`` are refused: they need weights.

The order of work and the data are fixed here; printing happens at the CLI edge.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..hw.config import (
    ChipConfig,
    MacroConfig,
    chip_from_table,
    chip_toml,
    macro_from_table,
    macro_toml,
    read_toml,
    resolve_chip,
    resolve_macro,
)
from ..hw.trace import Trace
from .area import recorded_counts
from .energy import layer_energy, load_tech
from .events import count_events
from .golden import run_trace
from .mapping import map_dense, map_nm
from .model_shapes import MODELS as SHAPE_TABLES
from .model_shapes import ModelShape
from .nm import (
    NMPattern,
    activation_norms,
    check_nm,
    memory_bits,
    prune_magnitude,
    prune_wanda,
)
from .quant import dequantize_matmul, quantize_acts, quantize_weights
from .records import LayerRecord
from .reference import check_in_range, check_int_matrix, matmul_reference
from .schedule import as_pattern, ideal_cycles, predict_counters, schedule_layer
from .schedule.monarch import MAPPINGS as MONARCH_MAPPINGS

__all__ = ["RunSettings", "RunError", "LayerInput", "Sparsified", "MappedLayer", "LayerRun",
           "RtlFigures", "RtlStep", "ShapeTable", "MODELS", "SPARSIFIERS", "MAPPINGS",
           "load_settings", "settings_toml", "validate_settings", "tiled_layer", "run_layer",
           "run_layers", "select_rtl_layers", "resolve_model", "sample_tiles", "gemm_layer",
           "layer_operands", "prune_layer", "map_layer", "int32_outputs"]


class RunError(ValueError):
    """A user mistake in the settings of a run (unknown model, unsupported pattern ...)."""


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a run; from flags, a TOML file, or both (flags win).

    Attributes
    ----------
    model : str
        A key of :data:`MODELS`: ``smollm2`` (the packaged SmolLM2-135M), ``synthetic``, or a
        layer-shape table (``bert-large``, ``llama-2-7b`` ...; figures without weights).
    blocks : int
        SmolLM2: the first ``blocks`` decoder blocks.
    linears : tuple of str
        SmolLM2: which linears of each block (``q k v o gate up down`` by default).
    shapes : tuple of str
        Synthetic: layer shapes as ``OUTxIN`` (``(out_features, in_features)``).
    tokens : int
        Evaluation tokens per layer: the rows of every layer's input on the macro.
    calib_tokens : int
        Calibration tokens for Wanda's activation norms.
    sparsify : str
        A key of :data:`SPARSIFIERS`: ``dense``, ``magnitude``, ``wanda``, ``flow`` or
        ``monarch``.
    pattern : str
        The N:M of a fixed-pattern sparsifier (``2:4``); ignored by ``dense`` and ``flow``.
    flow_target, flow_tolerance : float
        FLOW: the mean pattern sparsity over the blocks, and how far the mean may miss it.
    flow_dense_ends : bool
        FLOW: keep the first and last blocks dense (inside the program, as sw/flow.py does).
    monarch_mapping : str
        Monarch: ``latency``, ``capacity`` or ``linear`` (the mapping ``auto`` picks).
    mapping : str
        ``auto`` or a key of :data:`MAPPINGS` (``linear``, ``nm``).
    preset : str
        The macro: a key of :data:`~sparsecim.hw.config.PRESETS` or a TOML macro file
        (:func:`~sparsecim.hw.config.load_macro`).
    rtl_layers : str
        Layers also run on Verilator: ``none``, ``all``, a count of the first layers (``2``)
        or comma-separated names (``blocks.0.q,blocks.0.down``); ``none`` for a layer-shape
        table.
    rtl_sample : int
        With ``K > 0``, the RTL runs ``K`` output tiles of each layer of ``rtl_layers`` (of
        every layer when ``rtl_layers`` is ``none``), chosen at random without replacement
        (seeded by ``seed`` and the layer name), instead of the whole layer: each tile's
        trace alone, scoreboarded like a layer, its golden outputs checked against the
        layer's columns. The report gives the fraction of each layer's outputs covered. A
        layer with at most ``K`` tiles, or whose mapping is not tiled (Monarch), runs whole.
    pause : float
        Idle probability on every stream in the RTL runs, in [0, 1).
    seed : int
        Seeds the synthetic weights and inputs.
    out : str
        The run folder; by default ``build/runs/run-<model>-<sparsify>-<pattern>-<preset>``.
    plots : bool
        Draw the PNG plots of the report.
    text : str
        A checkpoint model's calibration and evaluation text file (default: the packaged
        Wikipedia).
    macro : MacroConfig or None
        The macro of a ``[macro]`` table in the settings file; it overrides ``preset`` (which
        then only names it) unless ``--preset`` is given as a flag. :meth:`macro_config` is
        the macro the run uses.
    tech : str
        Technology file of the energy and area figures: ``22nm`` (default), ``45nm`` or a
        path to a TOML file (:func:`sparsecim.sw.energy.load_tech`).
    chip : str
        The chip (:data:`~sparsecim.hw.config.CHIP_PRESETS` name or a TOML chip file); empty
        for a macro-only run. With a chip the run also places the whole model on it and
        reports chip figures (:mod:`sparsecim.sw.chip_run`); the chip's macro is the run's.
    attention_macs : int
        Chip runs: MACs per cycle of the unit the attention products run on (0: the default
        of :func:`sparsecim.sw.chip_run.attention_unit`, one macro's cells).
    chip_table : ChipConfig or None
        The chip of a ``[chip]`` table in the settings file; it overrides ``chip`` unless
        ``--chip`` is given as a flag. :meth:`chip_config` is the chip the run uses.
    """
    model: str = "smollm2"
    blocks: int = 1
    linears: tuple = ("q", "k", "v", "o", "gate", "up", "down")
    shapes: tuple = ("576x576",)
    tokens: int = 1
    calib_tokens: int = 64
    sparsify: str = "dense"
    pattern: str = "2:4"
    flow_target: float = 0.5
    flow_tolerance: float = 0.0
    flow_dense_ends: bool = True
    monarch_mapping: str = "latency"
    mapping: str = "auto"
    preset: str = "flexcim"
    rtl_layers: str = "none"
    rtl_sample: int = 0
    pause: float = 0.0
    seed: int = 0
    out: str = ""
    plots: bool = True
    text: str = ""
    tech: str = "22nm"
    chip: str = ""
    attention_macs: int = 0
    macro: MacroConfig | None = None
    chip_table: ChipConfig | None = None

    def chip_config(self) -> ChipConfig | None:
        """The chip of the run (``chip_table`` if set, else ``chip`` resolved), or None.

        Raises
        ------
        RunError
            For an unknown chip preset or a bad chip file (one line naming the field).
        """
        if self.chip_table is not None:
            return self.chip_table
        if not self.chip:
            return None
        try:
            return resolve_chip(self.chip)
        except ValueError as exc:
            raise RunError(str(exc)) from None

    def macro_config(self) -> MacroConfig:
        """The macro of the run: ``macro`` if set, else ``preset`` resolved.

        Raises
        ------
        RunError
            For an unknown preset or a bad macro file (one line naming the field).
        """
        chip = self.chip_config()
        if chip is not None:
            return chip.macro
        if self.macro is not None:
            return self.macro
        try:
            return resolve_macro(self.preset)
        except ValueError as exc:
            raise RunError(str(exc)) from None

    def run_dir(self) -> Path:
        """The run folder (``out``, or the default named after the settings)."""
        if self.out:
            return Path(self.out)
        pattern = {"dense": "dense", "flow": f"t{self.flow_target:g}",
                   "monarch": self.monarch_mapping}.get(
            self.sparsify, self.pattern.replace(":", "of"))
        # A checkpoint path names the folder after its file or folder (MiniLM: "model").
        model = self.model if self.model in MODELS else Path(self.model).stem
        macro = self.macro.slug if self.macro is not None else Path(self.preset).stem
        if self.chip_table is not None or self.chip:
            macro = ("chip-" + self.chip_table.slug if self.chip_table is not None
                     else f"chip-{Path(self.chip).stem}")
        return Path("build/runs") / f"run-{model}-{self.sparsify}-{pattern}-{macro}"

    def as_dict(self) -> dict:
        """Plain values (tuples as lists), the run folder resolved."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        values["out"] = str(self.run_dir())
        values["macro"] = self.macro_config().to_dict()
        chip = self.chip_config()
        values["chip_table"] = None if chip is None else chip.to_dict()
        return values


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(RunSettings)}


def _coerce(name: str, value, default):
    """``value`` as the type of the setting's ``default``; RunError naming the setting."""
    def fail(what):
        raise RunError(f"setting {name} must be {what}, not {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value) if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        fail("a string")
    return value


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> RunSettings:
    """Settings from an optional TOML file (top-level keys or a ``[run]`` table), then
    ``overrides`` (flags given on the command line; ``None`` values are ignored).

    Raises
    ------
    RunError
        If the file is missing, unreadable or not valid TOML, mixes top-level keys with a
        ``[run]`` table, a key is unknown, or a value has the wrong type or is out of range
        (:func:`validate_settings`); the message names the file and the key.
    """
    fields = _fields()
    del fields["macro"]  # a [macro] table, not a key
    del fields["chip_table"]  # a [chip] table, not a key
    values = {} if path is None else _file_settings(Path(path), fields)
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    for key, value in overrides.items():
        if key not in fields:
            raise RunError(f"unknown setting {key!r}; known are {', '.join(fields)}")
        values[key] = _coerce(key, value, fields[key].default)
    _drop_overridden_tables(values, overrides)
    settings = RunSettings(**values)
    validate_settings(settings)
    return settings


def _file_settings(path: Path, fields: dict) -> dict:
    """The settings of a TOML file: its keys coerced, its ``[macro]`` and ``[chip]`` tables
    as ``macro`` and ``chip_table``."""
    try:
        data = read_toml(path, what="settings file")
    except ValueError as exc:
        raise RunError(str(exc)) from None
    _check_run_table(path, data)
    values: dict = {}
    try:
        if isinstance(data.get("chip"), dict):
            values["chip_table"] = chip_from_table(data.pop("chip"),
                                                   where=f"settings file {path}")
        if "macro" in data:
            values["macro"] = macro_from_table(data.pop("macro"), where=f"settings file {path}")
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if isinstance(data.get("run"), dict):
        data = data["run"]
    for key, value in data.items():
        if key not in fields:
            raise RunError(f"settings file {path}: unknown key {key!r}; known are "
                           f"{', '.join(fields)}")
        values[key] = _coerce(key, value, fields[key].default)
    return values


def _check_run_table(path: Path, data: dict) -> None:
    """A ``[run]`` table must be a table, and alone: beside top-level keys one of the two
    forms would be dropped without a word."""
    if "run" not in data:
        return
    if not isinstance(data["run"], dict):
        raise RunError(f"settings file {path}: run must be a table of settings, "
                       f"not {data['run']!r}")
    rest = sorted(key for key in data if key not in ("run", "macro", "chip"))
    if rest:
        raise RunError(f"settings file {path}: settings must be top-level keys or a "
                       f"[run] table, not both (top-level: {', '.join(rest)})")


def _drop_overridden_tables(values: dict, overrides: dict) -> None:
    """Drop a file's ``[macro]`` or ``[chip]`` table that a flag overrides or that only
    repeats the named preset (a run's settings.toml writes both)."""
    if "preset" in overrides:
        values.pop("macro", None)  # --preset on the command line wins over a [macro] table
    if "chip" in overrides:
        values.pop("chip_table", None)  # --chip on the command line wins over a [chip] table
    if values.get("chip_table") is not None and values["chip_table"] == _named_chip(
            values.get("chip", "")):
        del values["chip_table"]  # the [chip] of a named preset (a run's settings.toml)
    if values.get("macro") is not None and values["macro"] == _named_preset(
            values.get("preset", "flexcim")):
        del values["macro"]  # the [macro] of a named preset (a run's settings.toml) is the name


def _named_preset(name: str) -> MacroConfig | None:
    from ..hw.config import PRESETS

    return PRESETS.get(name)


def _named_chip(name: str) -> ChipConfig | None:
    from ..hw.config import CHIP_PRESETS

    return CHIP_PRESETS.get(name)


def resolve_model(name: str):
    """The :data:`MODELS` entry of a model setting: a registered name, or a path (a Hugging
    Face folder, ``.gguf``, ``.onnx`` or ``config.json``; :mod:`sparsecim.sw.run_models`).

    Raises
    ------
    RunError
        For an unknown name or a path that is not a model.
    """
    if name in MODELS:
        return MODELS[name]
    from .run_models import is_path_model, resolve_path_model

    if is_path_model(name):
        return resolve_path_model(name)
    raise RunError(f"model must be one of {', '.join(MODELS)} or a path (a Hugging Face "
                   f"folder, .gguf, .onnx or config.json), not {name!r}")


#: Bounds of the sizes a run allocates: a layer's features, tokens per layer, elements of one
#: weight matrix (about LLaMA-2-7B's largest is 4.5e7) and blocks. Beyond them a run would only
#: die later of memory, not compute anything.
MAX_FEATURES = 2 ** 16
MAX_TOKENS = 2 ** 16
MAX_WEIGHTS = 2 ** 26
MAX_BLOCKS = 1024


def _parse_shape(text: str) -> tuple[int, int]:
    """``"OUTxIN"`` as ``(out_features, in_features)``; RunError unless both are positive."""
    found = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not found or min(int(v) for v in found.groups()) < 1:
        raise RunError(f"shape must be OUTxIN with positive sizes (out_features x "
                       f"in_features), not {text!r}")
    out_f, in_f = (int(v) for v in found.groups())
    if max(out_f, in_f) > MAX_FEATURES or out_f * in_f > MAX_WEIGHTS:
        raise RunError(f"shape must have at most {MAX_FEATURES} features a side and "
                       f"{MAX_WEIGHTS} weights, not {text!r}")
    return out_f, in_f


def _layer_names(s: RunSettings) -> list[str] | None:
    """The layer names a run of ``s`` will have, known from the settings alone (the loaders
    name their layers with it), or None for a model whose names need loading."""
    if s.model == "smollm2":
        return [f"blocks.{index}.{name}" for index in range(s.blocks) for name in s.linears]
    if s.model == "synthetic":
        return [f"synthetic.{index}" for index in range(len(s.shapes))]
    return None


def validate_settings(s: RunSettings) -> None:
    """The one validation layer of a run's settings: everything that can be known wrong
    before loading a model (names, ranges, shapes, linears, RTL layers).

    The groups are checked in a fixed order (numbers, methods, macro and chip, run options,
    pattern, model inputs, RTL layers), so the first mistake found is always the same one.

    Raises
    ------
    RunError
        Naming the setting and the offending value.
    """
    _check_numbers(s)
    _check_methods(s)
    chip, cfg = s.chip_config(), s.macro_config()
    _check_run_options(s, chip)
    _check_pattern(s, cfg, chip)
    _check_model_inputs(s)
    _check_rtl_layers(s)


#: Integer settings that must be positive, with their upper bounds.
_POSITIVE = (("blocks", MAX_BLOCKS), ("tokens", MAX_TOKENS), ("calib_tokens", MAX_TOKENS))


def _check_numbers(s: RunSettings) -> None:
    """Finite floats, the positive sizes within their bounds, a non-negative seed."""
    for f in dataclasses.fields(RunSettings):
        value = getattr(s, f.name)
        if isinstance(f.default, float) and not (isinstance(value, (int, float))
                                                 and math.isfinite(value)):
            raise RunError(f"setting {f.name} must be a finite number, not {value!r}")
    for name, top in _POSITIVE:
        value = getattr(s, name)
        if value < 1:
            raise RunError(f"setting {name} must be a positive integer, not {value}")
        if value > top:
            raise RunError(f"setting {name} must be at most {top}, not {value}")
    if s.seed < 0:
        raise RunError(f"setting seed must be a non-negative integer, not {s.seed}")


def _check_methods(s: RunSettings) -> None:
    """The model, sparsifier and mapping are registered, and a layer-shape table asks for
    nothing that needs weights."""
    model = resolve_model(s.model)
    if s.sparsify not in SPARSIFIERS:
        raise RunError(f"sparsify must be one of {', '.join(SPARSIFIERS)}, not {s.sparsify!r}")
    if s.mapping != "auto" and s.mapping not in MAPPINGS:
        raise RunError(f"mapping must be auto or one of {', '.join(MAPPINGS)}, "
                       f"not {s.mapping!r}")
    if isinstance(model, ShapeTable):
        _check_shape_table(s)


def _check_shape_table(s: RunSettings) -> None:
    what = f"model {s.model} is a layer-shape table without weights"
    if s.sparsify not in ShapeTable.SPARSIFY:
        raise RunError(f"sparsify must be one of {', '.join(ShapeTable.SPARSIFY)} for a "
                       f"layer-shape table, not {s.sparsify!r} ({what}; {s.sparsify} "
                       f"needs weights: use model smollm2 or synthetic)")
    if s.mapping not in ShapeTable.MAPPING:
        raise RunError(f"mapping must be one of {', '.join(ShapeTable.MAPPING)} for a "
                       f"layer-shape table, not {s.mapping!r} ({what})")
    if s.rtl_sample:
        raise RunError(f"rtl_sample must be 0 for a layer-shape table, not "
                       f"{s.rtl_sample} ({what}; nothing runs on the RTL)")
    if s.rtl_layers.strip() not in ("", "none", "0"):
        raise RunError(f"rtl_layers must be none for a layer-shape table, not "
                       f"{s.rtl_layers!r} ({what}; nothing runs on the golden model or "
                       f"the RTL)")


def _check_run_options(s: RunSettings, chip: ChipConfig | None) -> None:
    """The settings of the chip, the RTL runs, the technology file and the Monarch mapping
    are in range."""
    if s.attention_macs < 0:
        raise RunError(f"setting attention_macs must be a non-negative integer (MACs per "
                       f"cycle; 0 for the default), not {s.attention_macs}")
    if s.attention_macs and chip is None:
        raise RunError(f"setting attention_macs is for a chip run (--chip), not a macro-only "
                       f"run ({s.attention_macs})")
    if s.rtl_sample < 0:
        raise RunError(f"setting rtl_sample must be a non-negative integer, not {s.rtl_sample}")
    try:
        load_tech(s.tech)
    except ValueError as exc:
        raise RunError(f"tech: {exc}") from None
    if not 0.0 <= s.pause < 1.0:
        raise RunError(f"setting pause must be a number in [0, 1), not {s.pause}")
    if s.monarch_mapping not in MONARCH_MAPPINGS:
        raise RunError(f"setting monarch_mapping must be {', '.join(MONARCH_MAPPINGS[:-1])} or "
                       f"{MONARCH_MAPPINGS[-1]}, not {s.monarch_mapping!r}")


def _check_pattern(s: RunSettings, cfg: MacroConfig, chip: ChipConfig | None) -> None:
    """FLOW's target and tolerance are in range; a fixed N:M runs on the run's macro."""
    if s.sparsify == "flow":
        if not 0.0 <= s.flow_target < 1.0:
            raise RunError(f"setting flow_target must be a number in [0, 1), not "
                           f"{s.flow_target}")
        if s.flow_tolerance < 0.0:
            raise RunError(f"setting flow_tolerance must be non-negative, not "
                           f"{s.flow_tolerance}")
    elif s.sparsify != "dense":
        on = f"preset {s.preset}" if chip is None else f"the macro of chip {s.chip or 'table'}"
        try:
            cfg.check_pattern(*as_pattern(s.pattern), on=on)
        except ValueError as exc:
            raise RunError(str(exc)) from None


def _check_model_inputs(s: RunSettings) -> None:
    """SmolLM2's linears, the synthetic shapes and a checkpoint's text file."""
    if s.model == "smollm2":
        from .smollm import LINEAR_NAMES

        unknown = [name for name in s.linears if name not in LINEAR_NAMES]
        if unknown or not s.linears:
            raise RunError(f"linears must be names from {', '.join(LINEAR_NAMES)}, "
                           f"not {', '.join(unknown) or 'nothing'}")
    if s.model == "synthetic":
        if not s.shapes:
            raise RunError("shapes must be at least one OUTxIN shape, not nothing")
        for text in s.shapes:
            _parse_shape(text)
    if s.text:
        if s.model in MODELS:
            raise RunError(f"setting text is for a checkpoint model (a path), not model "
                           f"{s.model!r}")
        if not Path(s.text).is_file():
            raise RunError(f"setting text must be a text file, not {s.text!r}")


def _check_rtl_layers(s: RunSettings) -> None:
    """``rtl_layers`` has its form and, where the layer names follow from the settings,
    names layers of the run."""
    spec = s.rtl_layers.strip()
    if spec not in ("", "none", "all") and not spec.isdigit():
        if not [v for v in spec.split(",") if v.strip()]:
            raise RunError(f"rtl_layers must be none, all, a count or layer names, "
                           f"not {s.rtl_layers!r}")
    names = _layer_names(s)
    if names is not None:
        select_rtl_layers(s.rtl_layers, names)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def settings_toml(settings: RunSettings) -> str:
    """The resolved settings as a TOML ``[run]`` table that :func:`load_settings` reads back."""
    lines = ["# Resolved settings of this run: `sparsecim run --config settings.toml` repeats it.",
             "[run]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.as_dict().items()
              if key not in ("macro", "chip_table")]
    text = "\n".join(lines) + "\n\n" + macro_toml(
        settings.macro_config(), comment="The macro the run used (it wins over preset above).")
    chip = settings.chip_config()
    if chip is not None:
        text += "\n" + chip_toml(chip, comment="The chip the run used (it wins over chip above; "
                                               "its macro is the run's).")
    return text


# --------------------------------------------------------------------------------------------
# The data passed between the steps


@dataclass
class LayerInput:
    """A float layer ``y = x @ weight.T`` and its inputs.

    Attributes
    ----------
    name : str
    weight : ndarray
        ``(out_features, in_features)`` float.
    x : ndarray
        ``(tokens, in_features)`` float: the evaluation tokens the macro runs.
    calib : ndarray
        ``(calib_tokens, in_features)`` float: calibration activations (Wanda's norms).
    block : int or None
        Decoder block of a model's linear (per-block methods such as FLOW group by it).
    """
    name: str
    weight: np.ndarray
    x: np.ndarray
    calib: np.ndarray
    block: int | None = None


@dataclass
class Sparsified:
    """The outcome of sparsifying one layer.

    Attributes
    ----------
    name : str
    weight : ndarray
        ``(out_features, in_features)`` float, obeying ``pattern``.
    pattern : tuple of (int, int)
        ``(1, 1)`` for dense.
    method : str
    mapping : str or None
        The mapping this layer asks for under ``mapping = "auto"`` (None: by pattern).
    extra : dict
        Method-specific data for its mapping (e.g. block-diagonal factors).
    """
    name: str
    weight: np.ndarray
    pattern: tuple
    method: str
    mapping: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class MappedLayer:
    """A layer ready to run: its trace and what to check its result against.

    Attributes
    ----------
    trace : Trace
    expected : ndarray
        ``(tokens, out_features)`` int64: the exact integer outputs (plain matmul of the
        quantized operands).
    assemble : callable
        Result beats (golden or RTL, ``(beats, cols)``) to ``(tokens, out_features)`` int64.
    dequantize : callable or None
        Integer outputs to float outputs (for the error against the float layer).
    mapping : str
    pattern : tuple
    arrays, k_tiles, n_tiles : int
    utilization : float
    weight_bytes, meta_bytes, macs_per_token : int
    ideal_cycles : int
    label : str
        The layer's structure for the report when it is not an N:M pattern
        (``"monarch 24x24"``); empty to name it by ``pattern``.
    output_tile : callable or None
        ``output_tile(j) -> (schedule, columns)``: output tile ``j`` (of ``n_tiles``) alone,
        its :class:`~sparsecim.sw.schedule.Schedule` over every input and token and the
        output columns it computes; None for a mapping that is not tiled.
    schedule : Schedule or None
        The schedule the trace comes from (e.g. to run it on the RTL).
    operands : tuple or None
        A tiled layer's integer operands ``(x, w)``: ``(tokens, K)`` and ``(K, N)``.
    """
    trace: Trace
    expected: np.ndarray
    assemble: Callable
    dequantize: Callable | None
    mapping: str
    pattern: tuple
    arrays: int
    k_tiles: int
    n_tiles: int
    utilization: float
    weight_bytes: int
    meta_bytes: int
    macs_per_token: int
    ideal_cycles: int
    label: str = ""
    output_tile: Callable | None = None
    schedule: object | None = None
    operands: tuple | None = None


# --------------------------------------------------------------------------------------------
# Models

_CALIBRATION_TEXT = (
    "The history of computing is a story of memory and arithmetic drawing closer together. "
    "Early machines kept numbers in delay lines and drums, and every operation had to wait for "
    "its operands to come around again. Today large language models spend most of their energy "
    "moving weights from memory to the arithmetic units, which is why engineers build circuits "
    "that compute inside the memory array itself. Such a macro stores the weights of a layer in "
    "its cells, multiplies them with the incoming activations in place, and adds the products "
    "along each column, so that only the inputs and the results travel. Sparsity helps twice: "
    "fewer weights to store and fewer products to add, provided the hardware knows where the "
    "remaining weights sit.")


def _smollm_layers(s: RunSettings) -> list[LayerInput]:
    from .smollm import LINEAR_NAMES, load_smollm2

    unknown = [name for name in s.linears if name not in LINEAR_NAMES]
    if unknown or not s.linears:
        raise RunError(f"linears must be names from {', '.join(LINEAR_NAMES)}, "
                       f"not {', '.join(unknown) or 'nothing'}")
    names = iter(_layer_names(s))
    try:
        model = load_smollm2(num_blocks=s.blocks)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RunError(f"model smollm2 cannot be loaded: {exc}") from None
    except ValueError as exc:
        raise RunError(f"model smollm2: {exc}") from None
    ids = model.encode(_CALIBRATION_TEXT)
    seq = max(s.tokens, s.calib_tokens)
    if seq > len(ids):
        raise RunError(f"tokens and calib_tokens must be at most {len(ids)} (the built-in "
                       f"calibration text), not {seq}")
    hidden = model.embed(ids[:seq])
    layers = []
    for index in range(s.blocks):
        hidden, inputs = model.block_linear_inputs(index, hidden)
        for name in s.linears:
            x = inputs[name]
            layers.append(LayerInput(next(names),
                                     np.asarray(model.blocks[index].linears[name]),
                                     x[:s.tokens], x[:s.calib_tokens], index))
    return layers


def _synthetic_layers(s: RunSettings) -> list[LayerInput]:
    rng = np.random.default_rng(s.seed)
    layers = []
    for name, text in zip(_layer_names(s), s.shapes, strict=True):
        out_f, in_f = _parse_shape(text)
        weight = rng.normal(0.0, 0.02, (out_f, in_f))
        # Planted outliers: a few input channels carry much larger activations, as in LLMs.
        gain = np.ones(in_f)
        gain[rng.choice(in_f, size=max(1, in_f // 64), replace=False)] = 20.0
        x = rng.normal(0.0, 1.0, (max(s.tokens, s.calib_tokens), in_f)) * gain
        layers.append(LayerInput(name, weight, x[:s.tokens], x[:s.calib_tokens]))
    return layers


@dataclass(frozen=True)
class ShapeTable:
    """A model known by its layer shapes only (:mod:`sparsecim.sw.model_shapes`), no weights.

    Calling it gives the table's rows (one :class:`~sparsecim.sw.model_shapes.LinearShape`
    per distinct linear of a block, with its count per block and its blocks) instead of
    :class:`LayerInput`; :func:`run` maps each row once and multiplies its figures by
    ``count · blocks``.

    Attributes
    ----------
    shape : ModelShape
    """
    shape: ModelShape

    #: The sparsify settings a table takes: the pattern of ``magnitude`` and ``wanda`` is
    #: declared (there are no weights to prune, and both give the same figures).
    SPARSIFY = ("dense", "magnitude", "wanda")
    #: The mapping settings a table takes.
    MAPPING = ("auto", "linear", "nm")

    def __call__(self, s: RunSettings) -> list:
        """The table's rows, in table order (``s`` is not needed: a table has no options)."""
        return list(self.shape.linears)


#: Model loaders by name: ``loader(settings) -> list[LayerInput]``, and the layer-shape tables
#: of :mod:`sparsecim.sw.model_shapes` as :class:`ShapeTable` entries (figures without
#: weights).
MODELS: dict[str, Callable[[RunSettings], list]] = {
    "smollm2": _smollm_layers,
    "synthetic": _synthetic_layers,
    **{name: ShapeTable(table) for name, table in SHAPE_TABLES.items()},
}


# --------------------------------------------------------------------------------------------
# Sparsifiers


def _dense(layers, s: RunSettings, cfg: MacroConfig) -> list[Sparsified]:
    return [Sparsified(layer.name, layer.weight, (1, 1), "dense") for layer in layers]


def _prune(weight: np.ndarray, calib: np.ndarray, nm: NMPattern, score: str) -> np.ndarray:
    """``weight`` ``(out_features, in_features)`` pruned to ``nm`` per output channel by
    ``score``: ``magnitude``, or ``wanda`` (by the channel norms of the activations
    ``calib``)."""
    if score == "wanda":
        return prune_wanda(weight, activation_norms(calib), nm)
    return prune_magnitude(weight, nm)


def _fixed_nm(score: str):
    def sparsify(layers, s: RunSettings, cfg: MacroConfig) -> list[Sparsified]:
        pattern = as_pattern(s.pattern)
        nm = NMPattern(*pattern)
        return [Sparsified(layer.name, _prune(layer.weight, layer.calib, nm, score), pattern,
                           score) for layer in layers]
    return sparsify


def _flow(layers, s: RunSettings, cfg: MacroConfig) -> list[Sparsified]:
    """FLOW (:mod:`sparsecim.sw.flow`): one N:M per decoder block from the outlier ratio and
    locality of the Wanda scores of the block's linears (concatenated, row-major, in run
    order), chosen by the integer program among the released choices the macro runs; every
    linear of a block is then Wanda-pruned to its block's pattern."""
    from .flow import (
        DEFAULT_HYPER_M,
        RELEASED_CHOICES,
        FlowInfeasible,
        block_outlier_stats,
        select_patterns,
    )

    blocks = sorted({layer.block for layer in layers if layer.block is not None})
    if not blocks or any(layer.block is None for layer in layers):
        raise RunError("sparsify flow needs a model with decoder blocks (model smollm2), "
                       "not synthetic layers")
    ratios, localities = [], []
    for block in blocks:
        scores = [np.abs(layer.weight) * activation_norms(layer.calib, mean=True)[None, :]
                  for layer in layers if layer.block == block]
        stats = block_outlier_stats(np.concatenate([a.ravel() for a in scores]),
                                    DEFAULT_HYPER_M)
        ratios.append(stats.ratio)
        localities.append(stats.locality)
    choices = [c for c in RELEASED_CHOICES if cfg.supports(*as_pattern(c))]
    try:
        plan = select_patterns(ratios, localities, s.flow_target, choices=choices,
                               tolerance=s.flow_tolerance, force_dense_ends=s.flow_dense_ends)
    except FlowInfeasible as exc:
        raise RunError(f"sparsify flow: {exc}") from None
    chosen = dict(zip(blocks, plan.patterns, strict=True))
    out = []
    for layer in layers:
        nm = chosen[layer.block]
        pattern = as_pattern(nm)
        weight = layer.weight if pattern == (1, 1) else prune_wanda(
            layer.weight, activation_norms(layer.calib), NMPattern(*pattern))
        out.append(Sparsified(layer.name, weight, pattern, "flow",
                              extra={"block_pattern": str(nm)}))
    return out


def _monarch(layers, s: RunSettings, cfg: MacroConfig) -> list[Sparsified]:
    """Monarch (:mod:`sparsecim.sw.monarch`): each layer projected onto the nearest rank-1
    Monarch matrix (blocks by :func:`~sparsecim.sw.monarch.default_blocks`); the factors go
    to the ``monarch-*`` mappings in ``extra["factors"]``, the dense equivalent is the
    weight. The macro's one-trace Monarch schedule needs ``i = j = o`` (square layers whose
    size is a square, e.g. 576 = 24 × 24)."""
    from .monarch import monarch_dense, monarch_project, relative_error

    out = []
    for layer in layers:
        factors = monarch_project(layer.weight)
        i, j, o = factors.right.shape[2], factors.j, factors.left.shape[1]
        if not i == j == o:
            m, n = layer.weight.shape
            raise RunError(f"sparsify monarch needs square layers of a square size (blocks "
                           f"i = j = o on the macro), not {layer.name} of {m}x{n} (i={i}, "
                           f"j={j}, o={o}); choose such layers (e.g. --linears q,o)")
        out.append(Sparsified(layer.name, monarch_dense(factors), (1, 1), "monarch",
                              mapping=f"monarch-{s.monarch_mapping}",
                              extra={"factors": factors,
                                     "projection_error": relative_error(layer.weight,
                                                                        factors)}))
    return out


#: Sparsifiers by name: ``sparsifier(layers, settings, config) -> list[Sparsified]`` (one per
#: layer, same order).
SPARSIFIERS: dict[str, Callable] = {
    "dense": _dense,
    "magnitude": _fixed_nm("magnitude"),
    "wanda": _fixed_nm("wanda"),
    "flow": _flow,
    "monarch": _monarch,
}


# --------------------------------------------------------------------------------------------
# Tiling: one integer layer on the macro (the tiled mappings, `gemm`, `layer`)


def tiled_layer(cfg: MacroConfig, x: np.ndarray, w: np.ndarray, pattern: tuple, *,
                mapping: str | None = None, dequantize: Callable | None = None) -> MappedLayer:
    """The integer layer ``x @ w`` tiled on ``cfg`` in ``pattern`` (``(1, 1)``: dense).

    Parameters
    ----------
    cfg : MacroConfig
    x : ndarray
        ``(tokens, K)`` integer activations within ``cfg.act_bits``.
    w : ndarray
        ``(K, N)`` integer weights within ``cfg.weight_bits``, obeying ``pattern`` along K.
    pattern : tuple of (int, int)
    mapping : str, optional
        The mapping's name for the report (default ``linear`` for dense, else ``nm``).
    dequantize : callable, optional
        Integer outputs to float outputs.

    Returns
    -------
    MappedLayer
        Expected outputs :func:`~sparsecim.sw.reference.matmul_reference` of the operands.

    Raises
    ------
    ValueError
        From :func:`~sparsecim.sw.schedule.schedule_layer` (a pattern the macro does not run,
        weights that break it, values out of range).
    """
    schedule = schedule_layer(cfg, x, w, pattern)
    tiles = schedule.mapping

    def output_tile(j: int):
        columns = np.arange(j * cfg.cols, min((j + 1) * cfg.cols, tiles.n))
        return schedule_layer(cfg, x, w[:, columns], pattern), columns

    return MappedLayer(
        trace=schedule.trace, expected=matmul_reference(x, w), assemble=schedule.assemble,
        dequantize=dequantize,
        mapping=mapping or ("linear" if tuple(pattern) == (1, 1) else "nm"),
        pattern=tuple(pattern), arrays=tiles.arrays, k_tiles=tiles.k_tiles,
        n_tiles=tiles.n_tiles, utilization=tiles.utilization, weight_bytes=tiles.weight_bytes,
        meta_bytes=tiles.meta_bytes, macs_per_token=tiles.macs_per_token,
        ideal_cycles=ideal_cycles(tiles, x.shape[0]), output_tile=output_tile,
        schedule=schedule, operands=(x, w))


# --------------------------------------------------------------------------------------------
# Integer layers: the steps of ``sparsecim gemm`` and ``sparsecim layer``


def gemm_layer(cfg: MacroConfig, k: int, n: int, tokens: int, seed: int,
               pattern: tuple = (1, 1)) -> MappedLayer:
    """The random product of ``sparsecim gemm`` tiled on ``cfg``: operands
    :func:`~sparsecim.sw.operands.gemm_operands` (``(tokens, k)`` and ``(k, n)``, the weights
    magnitude-pruned to ``pattern``), mapped as :func:`tiled_layer` does.

    Raises
    ------
    RunError
        For a workload the macro cannot run (e.g. a reduction that could wrap the
        accumulator), with :func:`~sparsecim.sw.schedule.schedule_layer`'s message.
    """
    from .operands import gemm_operands

    x, w = gemm_operands(cfg, k, n, tokens, seed, pattern)
    try:
        return tiled_layer(cfg, x, w, pattern)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def layer_operands(cfg: MacroConfig, weights, inputs) -> tuple[np.ndarray, np.ndarray]:
    """A user's integer layer ``y = x @ w.T`` checked for ``cfg``: ``(w, x)`` as ``int64``.

    Parameters
    ----------
    cfg : MacroConfig
    weights : array_like
        ``(out_features, in_features)`` signed integers within ``cfg.weight_bits`` (a
        PyTorch Linear's layout).
    inputs : array_like
        ``(tokens, in_features)`` signed integers within ``cfg.act_bits``.

    Raises
    ------
    RunError
        For a matrix that is not 2-D integers in range (naming the first offending value),
        inputs whose columns are not the weights' ``in_features``, or an empty matrix.
    """
    try:
        w = check_int_matrix("weights", weights, cfg.weight_bits)
        x = check_int_matrix("inputs", inputs, cfg.act_bits)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if x.shape[1] != w.shape[1]:
        raise RunError(f"inputs must have {w.shape[1]} columns (in_features of weights "
                       f"{w.shape}), not {x.shape[1]}")
    if min(w.shape + x.shape) < 1:
        raise RunError(f"weights and inputs must be non-empty, not {w.shape} and {x.shape}")
    return w, x


def prune_layer(w: np.ndarray, x: np.ndarray, pattern: tuple, score: str
                ) -> tuple[np.ndarray, int]:
    """``w`` ``(out_features, in_features)`` pruned to ``pattern`` per output channel by
    ``score`` (``magnitude``, or ``wanda`` scored by the channel norms of the inputs ``x``),
    and the number of non-zero weights pruned; a dense ``pattern`` leaves ``w`` as it is."""
    if tuple(pattern) == (1, 1):
        return w, 0
    pruned = _prune(w, x, NMPattern(*pattern), score)
    return pruned, int(np.count_nonzero(w)) - int(np.count_nonzero(pruned))


def map_layer(cfg: MacroConfig, w: np.ndarray, x: np.ndarray, pattern: tuple,
              mapping: str = "auto") -> MappedLayer:
    """A user's integer layer (:func:`layer_operands`) tiled on ``cfg``.

    The weights must obey ``pattern``; mapping ``linear`` then runs them densely (their zeros
    as weights), ``auto`` and ``nm`` in ``pattern``.

    Raises
    ------
    RunError
        For weights that break ``pattern`` (naming the first offending group) or a layer the
        macro cannot run.
    """
    try:
        check_nm(w, NMPattern(*pattern))
        return tiled_layer(cfg, x, w.T, (1, 1) if mapping == "linear" else pattern)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def int32_outputs(y: np.ndarray) -> np.ndarray:
    """``y`` as ``int32`` for an output file; RunError naming the first value an INT32 could
    not hold (never truncated)."""
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    try:
        check_in_range("output", y, lo, hi, must=f"fit int32 ({lo}..{hi}) to be written")
    except ValueError as exc:
        raise RunError(str(exc)) from None
    return y.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Mappings: the registry of a run


def _tiled(dense: bool):
    def mapper(cfg: MacroConfig, layer: Sparsified, inp: LayerInput,
               s: RunSettings) -> MappedLayer:
        wq, w_scale = quantize_weights(layer.weight, cfg.weight_bits)
        xq, x_scale = quantize_acts(inp.x, cfg.act_bits)
        return tiled_layer(cfg, xq, wq.T, (1, 1) if dense else layer.pattern,
                           mapping="linear" if dense else "nm",
                           dequantize=lambda y: dequantize_matmul(y, x_scale, w_scale))
    return mapper


def _monarch_mapping(kind: str):
    def mapper(cfg: MacroConfig, layer: Sparsified, inp: LayerInput,
               s: RunSettings) -> MappedLayer:
        from .monarch import output_from_blocks, schedule_factors
        from .quant import qmax
        from .schedule.monarch import monarch_reference, schedule_monarch

        factors = layer.extra.get("factors")
        if factors is None:
            raise RunError(f"mapping monarch-{kind} needs Monarch factors (sparsify monarch), "
                           f"not a {layer.method} layer")
        right, left = schedule_factors(factors)
        b, blk = right.shape[0], right.shape[1]
        # One scale per factor (all blocks share it, so it factors out of every sum).
        r_top, l_top = np.abs(right).max(), np.abs(left).max()
        r_scale = r_top / qmax(cfg.weight_bits) if r_top > 0 else 1.0
        l_scale = l_top / qmax(cfg.weight_bits) if l_top > 0 else 1.0
        rq = np.rint(right / r_scale).astype(np.int64)
        lq = np.rint(left / l_scale).astype(np.int64)
        xq, x_scale = quantize_acts(inp.x, cfg.act_bits)
        # The middle requantization shift: the smallest that keeps the calibration tokens'
        # first-factor sums (quantized with the same scale) within the activation range.
        cq = np.clip(np.rint(inp.calib / x_scale), -qmax(cfg.act_bits), qmax(cfg.act_bits))
        u = np.einsum("ico,tio->tic", rq, cq.astype(np.int64).reshape(-1, b, blk))
        peak = int(np.abs(u).max()) if u.size else 0
        shift = 0
        while (peak + (1 << shift >> 1)) >> shift > qmax(cfg.act_bits):
            shift += 1
        try:
            schedule = schedule_monarch(cfg, xq, rq, lq, shift, kind)
        except ValueError as exc:
            raise RunError(f"layer {layer.name}: {exc}") from None
        expected = output_from_blocks(monarch_reference(cfg, xq, rq, lq, shift))
        scale = x_scale * r_scale * l_scale * 2.0 ** shift
        macs = factors.macs_per_token
        return MappedLayer(
            trace=schedule.trace, expected=expected,
            assemble=lambda results: output_from_blocks(schedule.assemble(results)),
            dequantize=lambda y: y * scale, mapping=f"monarch-{kind}", pattern=(1, 1),
            arrays=schedule.loads, k_tiles=0, n_tiles=0, utilization=schedule.utilization,
            weight_bytes=-(-macs * cfg.weight_bits // 8), meta_bytes=0,
            macs_per_token=macs, ideal_cycles=-(-macs * xq.shape[0] // cfg.cells),
            label=f"monarch {b}x{blk}", schedule=schedule)
    return mapper


#: Mappings by name: ``mapper(config, sparsified, layer, settings) -> MappedLayer``.
#: ``linear`` tiles the weights densely (zeros included); ``nm`` uses the layer's N:M pattern
#: on the macro's clusters; ``monarch-latency``, ``monarch-capacity`` and ``monarch-linear``
#: run a Monarch layer's two factors as one trace (:mod:`sparsecim.sw.schedule.monarch`).
MAPPINGS: dict[str, Callable] = {
    "linear": _tiled(dense=True),
    "nm": _tiled(dense=False),
    **{f"monarch-{kind}": _monarch_mapping(kind) for kind in MONARCH_MAPPINGS},
}


def _mapping_of(s: RunSettings, layer: Sparsified) -> str:
    if s.mapping != "auto":
        return s.mapping
    if layer.mapping:
        return layer.mapping
    return "linear" if layer.pattern == (1, 1) else "nm"


# --------------------------------------------------------------------------------------------
# The run


def _shape_records(cfg: MacroConfig, s: RunSettings, rows: list) -> list[LayerRecord]:
    """Figures of every row of a layer-shape table, totals over its ``count · blocks`` copies;
    the cycle model's counters once per distinct (inputs, outputs, pattern)."""
    declared = (1, 1) if s.sparsify == "dense" else as_pattern(s.pattern)
    mapping_name = s.mapping if s.mapping != "auto" else (
        "linear" if declared == (1, 1) else "nm")
    # A linear mapping runs the pattern's zeros as weights: it stores and computes them.
    stored = (1, 1) if mapping_name == "linear" else declared
    counters: dict[tuple, dict] = {}
    events: dict[tuple, object] = {}
    tech, cell_counts = load_tech(s.tech), recorded_counts(cfg)

    def predicted(k: int, n: int, pattern: tuple) -> dict:
        key = (k, n, pattern)
        if key not in counters:
            counters[key] = predict_counters(cfg, k, n, s.tokens, pattern)
        return counters[key]

    def energy(k: int, n: int, copies: int) -> dict:
        # The events of the schedule the cycle model describes (random values of the declared
        # pattern: the counts do not depend on them), from two output tiles.
        from .events import layer_events

        key = (k, n)
        if key not in events:
            events[key] = layer_events(cfg, k, n, s.tokens, pattern=declared, run_as=stored)
        return layer_energy(cfg, events[key].scaled(copies), tech, cell_counts,
                            s.tokens)

    records = []
    for row in rows:
        k, n, copies = row.inputs, row.outputs, row.total
        mapping = map_nm(cfg, k, n, stored)
        bits = memory_bits(n, k, NMPattern(*stored), value_bits=cfg.weight_bits)
        model = predicted(k, n, stored)
        records.append(LayerRecord(
            name=row.name, out_features=n, in_features=k, tokens=s.tokens, copies=copies,
            sparsify=s.sparsify,
            pattern=str(NMPattern(*declared)),
            density=mapping.macs_per_token / (k * n), mapping=mapping_name,
            arrays=mapping.arrays * copies, k_tiles=mapping.k_tiles, n_tiles=mapping.n_tiles,
            utilization=mapping.utilization,
            dense_utilization=map_dense(cfg, k, n).utilization,
            weight_bytes=-(-bits["values"] // 8) * copies,
            meta_bytes=-(-bits["metadata"] // 8) * copies,
            macs=mapping.macs_per_token * s.tokens * copies,
            model_cycles=model["total"] * copies,
            model_counters={key: value * copies for key, value in model.items()},
            dense_cycles=predicted(k, n, (1, 1))["total"] * copies,
            ideal_cycles=ideal_cycles(mapping, s.tokens) * copies, golden_match=None,
            extra={"count": row.count, "blocks": row.blocks,
                   "cycles_per_layer": model["total"]}, macro=cfg.slug,
            energy=energy(k, n, copies)))
    return records


def sample_tiles(seed: int, name: str, n_tiles: int, count: int) -> list[int]:
    """The output tiles ``rtl_sample`` runs of layer ``name``: ``min(count, n_tiles)``
    distinct indices in ``range(n_tiles)``, ascending, chosen at random by a generator seeded
    with ``seed`` and the layer name (the same run samples the same tiles)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return sorted(int(j) for j in rng.choice(n_tiles, size=min(count, n_tiles), replace=False))


def select_rtl_layers(spec: str, names: list[str]) -> list[str]:
    """The layer names a ``rtl_layers`` setting selects, in run order.

    Raises
    ------
    RunError
        For a name that is not a layer of the run.
    """
    spec = spec.strip()
    if spec in ("", "none", "0"):
        return []
    if spec == "all":
        return list(names)
    if spec.isdigit():
        return names[:int(spec)]
    wanted = [v.strip() for v in spec.split(",") if v.strip()]
    for name in wanted:
        if name not in names:
            raise RunError(f"rtl layer {name!r} is not a layer of this run; layers are "
                           f"{', '.join(names)}")
    return [name for name in names if name in wanted]




# --------------------------------------------------------------------------------------------
# The run: one layer, then every layer of a run


@dataclass
class LayerRun:
    """One mapped layer run on the golden model and checked (:func:`run_layer`).

    Attributes
    ----------
    mapped : MappedLayer
    golden : GoldenResult
        The golden model's run of the trace (results, counters, status).
    outputs : ndarray
        ``(tokens, out_features)`` int64: the result beats assembled.
    match : bool
        ``outputs`` equal ``mapped.expected`` entry for entry.
    """
    mapped: MappedLayer
    golden: object
    outputs: np.ndarray
    match: bool


def run_layer(mapped: MappedLayer) -> LayerRun:
    """Run a mapped layer's trace on the golden model and compare its outputs, exactly.

    The one golden step of ``run`` (every layer), ``gemm`` and ``layer`` (the CLI) and
    :func:`~sparsecim.sw.experiments.flow_eval.int8_layer_check`; quantizing and scheduling
    come before it (a :data:`MAPPINGS` entry or :func:`tiled_layer`), the RTL after it, from
    ``tb``.
    """
    golden = run_trace(mapped.trace)
    outputs = mapped.assemble(golden.results)
    return LayerRun(mapped, golden, outputs, bool(np.array_equal(outputs, mapped.expected)))


@dataclass
class RtlFigures:
    """What the RTL step of a run reports for one layer (see :func:`run_layers`).

    Attributes
    ----------
    cycles : int
        Cycles the RTL counted (the sum over the tiles of a sampled layer).
    match : bool
        Outputs and counters equal the golden model's and the cycle model's.
    run_dir : str
    coverage : float
        Fraction of the layer's outputs the RTL computed.
    tiles : list of int or None
        The output tiles sampled (None: the whole layer ran).
    report : object or None
        The scoreboard's report of a whole layer's run (``tb``'s
        :class:`~sparsecim.tb.cosim.RtlReport`: mismatches, counters, problems, waves) for the
        CLI to print; None for a sampled layer.
    """
    cycles: int
    match: bool
    run_dir: str
    coverage: float = 1.0
    tiles: list | None = None
    report: object | None = None


#: The RTL step, given by ``tb``: ``rtl(name, mapped, golden, events) -> RtlFigures``, for a
#: layer of a run the settings select (``rtl_layers``, ``rtl_sample``;
#: :func:`sparsecim.tb.run.rtl_step`) and for the one layer of ``sparsecim gemm`` and
#: ``sparsecim layer`` (:func:`sparsecim.tb.run.layer_rtl_step`). ``golden`` is the layer's
#: golden run; ``events`` its :func:`~sparsecim.sw.events.count_events`, or None to count
#: them again.
RtlStep = Callable[[str, MappedLayer, object, object], RtlFigures]


def _layer_record(cfg: MacroConfig, layer: LayerInput, sparse: Sparsified, checked: LayerRun,
                  energy: dict) -> LayerRecord:
    """The figures of one layer of a run from its golden run."""
    mapped, golden = checked.mapped, checked.golden
    out_f, in_f = layer.weight.shape
    tokens = layer.x.shape[0]
    rel_error = None
    if mapped.dequantize is not None:
        reference = layer.x @ layer.weight.T
        scale = float(np.linalg.norm(reference))
        if scale > 0:
            rel_error = float(np.linalg.norm(mapped.dequantize(checked.outputs) - reference)
                              / scale)
    return LayerRecord(
        name=layer.name, out_features=out_f, in_features=in_f, tokens=tokens,
        sparsify=sparse.method,
        pattern=mapped.label or str(NMPattern(*mapped.pattern)),
        density=mapped.macs_per_token / (out_f * in_f),
        mapping=mapped.mapping, arrays=mapped.arrays, k_tiles=mapped.k_tiles,
        n_tiles=mapped.n_tiles, utilization=mapped.utilization,
        dense_utilization=map_dense(cfg, in_f, out_f).utilization,
        weight_bytes=mapped.weight_bytes, meta_bytes=mapped.meta_bytes,
        macs=mapped.macs_per_token * tokens, model_cycles=golden.counters["total"],
        model_counters=dict(golden.counters),
        dense_cycles=predict_counters(cfg, in_f, out_f, tokens)["total"],
        ideal_cycles=mapped.ideal_cycles, golden_match=checked.match, rel_error=rel_error,
        extra={k: v for k, v in sparse.extra.items() if isinstance(v, (int, float, str))},
        macro=cfg.slug, energy=energy)


def run_layers(cfg: MacroConfig, settings: RunSettings, *,
               step: Callable[[str, str], None] | None = None, rtl: RtlStep | None = None):
    """Every step of a run but writing it out: the records of every layer and the model
    quality of a checkpoint with a forward pass (else None).

    Parameters
    ----------
    cfg : MacroConfig
    settings : RunSettings
        Validated.
    step : callable, optional
        ``step(kind, text)``: ``"plan"`` once (the number of golden and RTL steps), then
        ``"begin"`` and ``"end"`` around loading the model, each layer's golden run, each RTL
        run and the model quality.
    rtl : RtlStep, optional
        Runs the layers the settings select on the RTL (from ``tb``); None runs none.

    Raises
    ------
    RunError
        For a model that cannot be loaded or a layer the macro cannot run.
    """
    def progress(kind, text):
        if step:
            step(kind, text)

    model = resolve_model(settings.model)
    if isinstance(model, ShapeTable):
        progress("plan", "0")
        progress("begin", f"figures of {settings.model}")
        records = _shape_records(cfg, settings, model(settings))
        progress("end", f"figures of {settings.model}")
        return records, None
    progress("begin", f"load {settings.model}")
    layers = model(settings)
    progress("end", f"load {settings.model}")
    names = [layer.name for layer in layers]
    rtl_names = set(select_rtl_layers(settings.rtl_layers, names))
    if settings.rtl_sample and not rtl_names:
        rtl_names = set(names)
    if rtl is None:
        rtl_names = set()
    # A checkpoint with a forward pass also measures model quality (one more step).
    checkpoint = getattr(model, "__module__", "") == f"{__package__}.run_models"
    progress("plan", str(len(layers) + len(rtl_names) + checkpoint))
    sparsified = SPARSIFIERS[settings.sparsify](layers, settings, cfg)

    # Energy: exact events of every trace, priced by the technology file; area from the cell
    # counts `make area` recorded for this config (None if it has not).
    tech, cell_counts = load_tech(settings.tech), recorded_counts(cfg)
    records = []
    for layer, sparse in zip(layers, sparsified, strict=True):
        progress("begin", f"golden {layer.name}")
        mapper = MAPPINGS[_mapping_of(settings, sparse)]
        try:
            mapped = mapper(cfg, sparse, layer, settings)
        except RunError:
            raise
        except ValueError as exc:
            raise RunError(f"layer {layer.name}: {exc}") from None
        checked = run_layer(mapped)
        events = count_events(mapped.trace)  # priced here, checked against the RTL below
        record = _layer_record(cfg, layer, sparse, checked,
                               layer_energy(cfg, events, tech, cell_counts, layer.x.shape[0]))
        progress("end", f"golden {layer.name}")
        if layer.name in rtl_names:
            progress("begin", f"RTL {layer.name}")
            figures = rtl(layer.name, mapped, checked.golden, events)
            record.rtl_cycles, record.rtl_match = figures.cycles, figures.match
            record.rtl_dir, record.rtl_coverage = figures.run_dir, figures.coverage
            record.rtl_tiles = figures.tiles
            progress("end", f"RTL {layer.name}")
        records.append(record)

    quality = None
    if checkpoint:
        from .run_models import checkpoint_quality

        progress("begin", "model quality")
        quality = checkpoint_quality(settings, sparsified)
        progress("end", "model quality")
    return records, quality
