"""``sparsecim sweep``: design-space exploration over macros × models × sparsity × mappings ×
tokens × technologies, cached, resumable, on a process pool or Ray.

A sweep spec (TOML) lists values per axis in a ``[sweep]`` table (the points are their
product) or explicit points as ``[[point]]`` tables (missing axes take
:data:`DEFAULTS`), or both (the product first, then the points)::

    [sweep]
    macro = ["tiny", "flexcim", "my_macro.toml", {rows = 64, cols = 64, submacros = 4}]
    model = ["bert-large", "llama-2-7b"]
    sparsify = ["dense", "wanda"]
    pattern = ["2:4", "1:8"]
    mapping = ["auto", "linear"]
    tokens = [1, 64]
    tech = ["22nm", "45nm"]
    chip = ["none", "edge", "my_chip.toml", {macro = "tiny", macros = 8, clock_mhz = 200, ...}]

Axes (:data:`AXES`): ``macro`` (a preset, a TOML macro file or an inline table),
``model`` (a layer-shape table: ``bert-large``, ``llama-2-7b`` ...), ``sparsify``
(``dense``, ``magnitude``, ``wanda``: the declared pattern of a shape table), ``pattern``,
``mapping`` (``auto``, ``linear``, ``nm``), ``tokens``, ``tech`` and ``chip``: ``none`` (the
default: the model on one macro, as before) or a chip (a preset of
:data:`~sparsecim.hw.config.CHIP_PRESETS`, a TOML chip file or an inline ``[chip]`` table).
A chip point runs the whole model on the chip (:func:`~sparsecim.sw.sweep_model.
chip_point_figures`: chip-sched's exact per-layer figures, placed resident or streamed, and
the chip's energy and area); its macro is the chip's, so the macro axis collapses for it (as
the pattern does for dense). One token is the decode run, more the prefill of that many.

Each point is a pure, idempotent job (:func:`evaluate_point`) keyed by a hash of its resolved
settings (the macro's every field, the technology file's values, not their names): its
result is cached in ``OUT/cache/<key>.json``, so a rerun computes nothing and an interrupted
sweep resumes where it stopped. The table ``OUT/points.csv`` has one row per point per layer
plus a ``total`` row per point; a point that fails (a pattern the macro does not run ...) is
one ``total`` row with ``status`` ``failed`` and its ``error``, never dropped. Figures come
from the closed-form model (:mod:`sparsecim.sw.sweep_model`), equal to the trace-based cycle
and event counts.

Weighted models: a ``model`` that is a checkpoint path (a Hugging Face folder or a ``.gguf``,
relative to the spec) is loaded, every linear of every block sparsified as ``sparsify`` and
``pattern`` say (Wanda calibrated on the checkpoint's own activations, as ``sparsecim run``),
and the point carries the model's quality beside its figures (:func:`~sparsecim.sw.
run_models.checkpoint_quality`: ``perplexity`` and ``perplexity_dense`` for the llama family,
``cosine`` for bert); its figures are those of the checkpoint's linear shapes. Its key hashes
the checkpoint's files. ``smollm2`` and ``synthetic`` (names, not files) are refused in one
line: the packaged SmolLM2 is a ``.gguf`` path (``sparsecim run --model list``).
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..hw.config import (
    PRESETS,
    ChipConfig,
    MacroConfig,
    chip_from_table,
    macro_from_table,
    read_toml,
    resolve_chip,
    resolve_macro,
)
from ..sw.energy import load_tech
from ..sw.model_shapes import MODELS as SHAPE_TABLES
from ..sw.model_shapes import ModelShape
from ..sw.pipeline import MAX_BLOCKS, RunError, RunSettings, ShapeTable, validate_settings
from ..sw.schedule import as_pattern
from ..sw.sweep_model import chip_point_figures, point_figures
from .outputs import OutputError, check_output_folder

__all__ = ["SweepError", "AXES", "DEFAULTS", "COLUMNS", "SweepSpec", "SweepResult",
           "load_spec", "point_key", "evaluate_point", "evaluate_points", "run_sweep",
           "read_table", "MODEL_VERSION", "EXECUTORS", "map_batches", "probe_ray_address"]

#: Bumped when the figures of a point change for the same settings: part of every key, so an
#: old cache is never read as new results.
MODEL_VERSION = 2

#: The axes of a sweep, in the order of a point's columns.
AXES = ("macro", "model", "sparsify", "pattern", "mapping", "tokens", "tech", "chip")

#: An axis a ``[sweep]`` table or a ``[[point]]`` leaves out takes this value.
DEFAULTS = {"macro": "flexcim", "model": "bert-large", "sparsify": "dense", "pattern": "2:4",
            "mapping": "auto", "tokens": 1, "tech": "22nm", "chip": "none"}

#: Columns of ``points.csv``.
COLUMNS = ("key", "status", "error", "macro", "macro_slug", "model", "sparsify", "pattern",
           "mapping", "tokens", "tech", "chip", "layer", "inputs", "outputs", "copies",
           "cycles", "cycles_per_token", "tokens_per_s", "energy_pj", "pj_per_token",
           "area_mm2", "macs", "cell_macs", "weight_bytes", "meta_bytes", "arrays",
           "utilization", "offchip_bytes", "resident", "bound", "load_cycles", "load_pj",
           "perplexity", "perplexity_dense", "cosine")


class SweepError(RunError):
    """A mistake in a sweep spec or its output folder (one line naming the value)."""


@dataclass
class SweepSpec:
    """The points of a sweep, resolved (plain dicts: they travel to worker processes).

    Attributes
    ----------
    points : list of dict
        Per point: every axis of :data:`AXES` (``macro`` as its label), ``macro_config``
        (the macro's fields), ``tech_values`` (the technology file's values) and ``key``.
        Points that resolve to the same settings (``dense`` with several patterns) appear
        once.
    source : str
        The spec file.
    """
    points: list
    source: str


def point_key(point: dict) -> str:
    """The hash of a point's resolved settings (and :data:`MODEL_VERSION`): 16 hex digits."""
    resolved = {axis: point[axis] for axis in AXES if axis not in ("macro", "tech", "chip")}
    resolved.update(macro=point["macro_config"], tech=point["tech_values"],
                    version=MODEL_VERSION)
    if point["chip_config"] is not None:
        resolved["chip"] = point["chip_config"]
    if point.get("model_files") is not None:
        resolved["model"] = point["model_files"]
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _table(from_table, value: dict, where: str):
    # An inline macro or chip table of the spec: its slug and its config.
    try:
        cfg = from_table(value, where=where)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    return cfg.slug, cfg


def _macro(value, where: str) -> tuple[str, MacroConfig]:
    if isinstance(value, dict):
        return _table(macro_from_table, value, where)
    if not isinstance(value, str):
        raise SweepError(f"{where}: macro must be a preset name, a TOML file or a table, "
                         f"not {value!r}")
    try:
        return value, resolve_macro(value)
    except ValueError as exc:
        raise SweepError(f"{where}: {exc}") from None


def _chip(value, where: str, base: Path) -> tuple[str, ChipConfig | None]:
    if isinstance(value, dict):
        return _table(chip_from_table, value, f"{where}: chip")
    if not isinstance(value, str):
        raise SweepError(f"{where}: chip must be none, a chip preset, a TOML chip file or a "
                         f"table, not {value!r}")
    if value == "none":
        return "none", None
    spec = str(base / value) if value.endswith(".toml") and not Path(value).is_absolute() \
        else value
    try:
        return value, resolve_chip(spec)
    except ValueError as exc:
        raise SweepError(f"{where}: {exc} (or none)") from None


def files_hash(path) -> str:
    """sha256 over a checkpoint's files (names and contents): its identity in a point's key."""
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _model(value: str, where: str, base: Path) -> tuple[str, str | None, str | None]:
    """``(label, checkpoint path or None, its files' hash or None)``."""
    from ..sw.run_models import is_path_model

    if value in SHAPE_TABLES:
        return value, None, None
    path = Path(value) if Path(value).is_absolute() else base / value
    checkpoint = path.is_dir() or value.endswith(".gguf")
    if not checkpoint or value.endswith(".json"):
        if is_path_model(value) and not value.endswith(".json"):
            raise SweepError(f"{where}: model checkpoint {path} does not exist")
        raise SweepError(f"{where}: model must be a layer-shape table "
                         f"({', '.join(SHAPE_TABLES)}) or a checkpoint (a Hugging Face folder "
                         f"or a .gguf file), not {value!r}")
    if not path.exists():
        raise SweepError(f"{where}: model checkpoint {path} does not exist")
    return value, str(path), files_hash(path)


def _macro_axis(value, where: str, base: Path) -> tuple[str, MacroConfig]:
    if isinstance(value, str) and value.endswith(".toml") and not Path(value).is_absolute():
        value = str(base / value)
    return _macro(value, where)


def _tokens(value, where: str, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{where}: tokens must be positive integers, not {value!r}")
    return value


def _one_of(axis: str, options):
    """A resolver that accepts a value of ``options`` as it is."""
    def resolve(value: str, where: str, base: Path) -> str:
        if value not in options:
            raise SweepError(f"{where}: {axis} must be one of {', '.join(options)}, "
                             f"not {value!r}")
        return value
    return resolve


def _pattern(value: str, where: str, base: Path) -> str:
    try:
        pattern = as_pattern(value)
    except ValueError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return "dense" if pattern == (1, 1) else f"{pattern[0]}:{pattern[1]}"


def _tech_axis(value: str, where: str, base: Path) -> tuple[str, dict]:
    spec = value if value in ("22nm", "45nm") or Path(value).is_absolute() else str(
        base / value)
    try:
        return spec, load_tech(spec).values
    except ValueError as exc:
        raise SweepError(f"{where}: tech: {exc}") from None


#: Each axis's resolver ``(value, where, base) -> resolved``.
_RESOLVERS: dict[str, Callable] = {
    "chip": _chip, "macro": _macro_axis, "tokens": _tokens, "model": _model,
    "sparsify": _one_of("sparsify", ShapeTable.SPARSIFY),
    "mapping": _one_of("mapping", ShapeTable.MAPPING), "pattern": _pattern, "tech": _tech_axis,
}

#: Axes whose values need not be strings (their resolvers check the type themselves).
_ANY_TYPE = ("chip", "macro", "tokens")


def _resolve_axis(axis: str, value, where: str, base: Path):
    """A spec value checked on its own (what can be wrong whatever the other axes are)."""
    if axis not in _ANY_TYPE and not isinstance(value, str):
        raise SweepError(f"{where}: {axis} values must be strings, not {value!r}")
    resolver = _RESOLVERS.get(axis)
    return value if resolver is None else resolver(value, where, base)


def _macro_label(cfg: MacroConfig) -> str:
    """A preset's name for its config, else the config's slug."""
    return next((name for name, preset in PRESETS.items() if preset == cfg), cfg.slug)


def _point(values: dict) -> dict:
    label, cfg = values["macro"]
    tech, tech_values = values["tech"]
    chip_label, chip = values["chip"]
    model, model_path, model_files = values["model"]
    if chip is not None:
        # The chip's macro is the point's: the macro axis collapses for chip points.
        label, cfg = _macro_label(chip.macro), chip.macro
    point = {axis: values[axis] for axis in AXES}
    point.update(macro=label, tech=tech, macro_config=cfg.to_dict(), tech_values=tech_values,
                 chip=chip_label, chip_config=None if chip is None else chip.to_dict(),
                 model=model, model_path=model_path, model_files=model_files)
    if point["sparsify"] == "dense":
        point["pattern"] = "dense"  # dense ignores the pattern: one point, not one per pattern
    point["key"] = point_key(point)
    return point


class _Resolver:
    """Resolves spec values, each ``(axis, value)`` checked once."""

    def __init__(self, base: Path):
        self.base = base
        self.resolved: dict = {}    # (axis, value as JSON) -> resolved

    def __call__(self, axis: str, value, at: str):
        key = (axis, json.dumps(value, sort_keys=True))
        if key not in self.resolved:
            self.resolved[key] = _resolve_axis(axis, value, at, self.base)
        return self.resolved[key]


def _check_axes(table: dict, at: str) -> None:
    for axis in table:
        if axis not in AXES:
            raise SweepError(f"{at}: unknown axis {axis!r}; axes are {', '.join(AXES)}")


def _sweep_points(sweep, where: str, resolve: _Resolver) -> list[dict]:
    """The points of a ``[sweep]`` table: the product of its axes' values."""
    if not isinstance(sweep, dict):
        raise SweepError(f"{where}: sweep must be a table of axes, not {sweep!r}")
    _check_axes(sweep, f"{where} [sweep]")
    lists = {}
    for axis in AXES:
        values = sweep.get(axis, [DEFAULTS[axis]])
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise SweepError(f"{where} [sweep]: axis {axis} must be a non-empty list, not []")
        lists[axis] = [resolve(axis, v, f"{where} [sweep] {axis}") for v in values]
    return [_point(dict(zip(AXES, combo, strict=True)))
            for combo in itertools.product(*(lists[axis] for axis in AXES))]


def _explicit_points(explicit, where: str, resolve: _Resolver) -> list[dict]:
    """The points of the ``[[point]]`` tables."""
    if not isinstance(explicit, list) or not all(isinstance(p, dict) for p in explicit):
        raise SweepError(f"{where}: point must be an array of tables ([[point]]), "
                         f"not {explicit!r}")
    points = []
    for index, table in enumerate(explicit):
        at = f"{where} point {index + 1}"
        _check_axes(table, at)
        values = {}
        for axis in AXES:
            value = table.get(axis, DEFAULTS[axis])
            if isinstance(value, list):
                raise SweepError(f"{at}: {axis} must be one value in a [[point]], not the "
                                 f"list {value!r} (lists go in [sweep])")
            values[axis] = resolve(axis, value, f"{at} {axis}")
        points.append(_point(values))
    return points


def load_spec(path: str | Path) -> SweepSpec:
    """Read and resolve a sweep spec (see the module docstring).

    Raises
    ------
    SweepError
        Naming the file and the offending axis or value: an unreadable or invalid file, an
        unknown axis, an empty or non-list axis, an unknown preset, model, sparsifier,
        mapping, pattern or technology, a bad macro table, or a spec with no points.
    """
    path = Path(path)
    where = f"sweep spec {path}"
    try:
        data = read_toml(path, what="sweep spec")
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    unknown = sorted(set(data) - {"sweep", "point"})
    if unknown:
        raise SweepError(f"{where}: unknown table {unknown[0]!r}; a spec has [sweep] and "
                         f"[[point]] tables")
    resolve = _Resolver(path.parent)
    points = []
    if data.get("sweep") is not None:
        points += _sweep_points(data["sweep"], where, resolve)
    points += _explicit_points(data.get("point", []), where, resolve)
    if not points:
        raise SweepError(f"{where} has no points: give a [sweep] table or [[point]] tables")
    unique = list({point["key"]: point for point in points}.values())
    return SweepSpec(unique, str(path))


# --------------------------------------------------------------------------------------------
# Jobs


@functools.lru_cache(maxsize=64)
def _config(fields: str) -> MacroConfig:
    return MacroConfig.from_dict(json.loads(fields))


@functools.lru_cache(maxsize=16)
def _tech(spec: str):
    return load_tech(spec)


@functools.lru_cache(maxsize=16)
def _chip_config(fields: str) -> ChipConfig:
    return ChipConfig.from_dict(json.loads(fields))


def _weighted(settings: RunSettings, cfg: MacroConfig, label: str) -> tuple[ModelShape, dict]:
    """A checkpoint's linears as a shape table (one row per linear name and shape, over its
    blocks) and its quality sparsified as ``settings`` say (every block)."""
    from ..sw.model_shapes import LinearShape
    from ..sw.pipeline import SPARSIFIERS, resolve_model
    from ..sw.run_models import checkpoint_quality

    layers = resolve_model(settings.model)(settings)
    sparsified = SPARSIFIERS[settings.sparsify](layers, settings, cfg)
    rows: dict = {}
    for layer in layers:
        name = layer.name.split(".")[-1] if layer.block is not None else layer.name
        out_f, in_f = layer.weight.shape
        rows[(name, in_f, out_f)] = rows.get((name, in_f, out_f), 0) + 1
    linears = tuple(LinearShape(name, in_f, out_f, 1, blocks)
                    for (name, in_f, out_f), blocks in rows.items())
    quality = checkpoint_quality(settings, sparsified) or {}
    extra = ({"perplexity": quality["sparse"], "perplexity_dense": quality["dense"]}
             if quality.get("metric") == "perplexity" else
             {"cosine": quality["mean"]} if quality.get("metric") == "cosine" else {})
    return ModelShape(label, 0, linears, (), settings.model), extra


def _figures(point: dict) -> tuple[list, dict]:
    """The layer rows of a point and what its total row adds (``area_mm2``, the clock, a
    weighted model's quality)."""
    cfg = _config(json.dumps(point["macro_config"], sort_keys=True))
    weighted = point.get("model_path") is not None
    settings = RunSettings(
        model=point["model_path"] if weighted else point["model"],
        sparsify=point["sparsify"],
        pattern="2:4" if point["pattern"] == "dense" else point["pattern"],
        mapping=point["mapping"], tokens=point["tokens"], tech=point["tech"],
        preset=point["macro"], macro=cfg, plots=False,
        blocks=MAX_BLOCKS if weighted else 1)
    validate_settings(settings)
    tech = _tech(point["tech"])
    if dict(tech.values) != point["tech_values"]:
        raise RunError(f"technology file {point['tech']} changed since the spec was read")
    declared = (1, 1) if point["sparsify"] == "dense" else as_pattern(point["pattern"])
    mapping = point["mapping"] if point["mapping"] != "auto" else (
        "linear" if declared == (1, 1) else "nm")
    stored = (1, 1) if mapping == "linear" else declared
    quality: dict = {}
    if weighted:
        if files_hash(point["model_path"]) != point["model_files"]:
            raise RunError(f"model checkpoint {point['model_path']} changed since the spec "
                           f"was read")
        model, quality = _weighted(settings, cfg, point["model"])
    else:
        model = SHAPE_TABLES[point["model"]]
    if point["chip_config"] is None:
        layers = point_figures(cfg, model.linears, point["tokens"], declared, stored, tech)
        return layers, {"area_mm2": layers[0]["area_mm2"],
                        "clock_mhz": tech.values["operating"]["clock_mhz"], **quality}
    chip = _chip_config(json.dumps(point["chip_config"], sort_keys=True))
    layers, totals = chip_point_figures(chip, model, point["tokens"], stored, tech)
    return layers, {"area_mm2": totals["area_mm2"], "clock_mhz": chip.clock_mhz,
                    "load_cycles": totals["load_cycles"], "load_pj": totals["load_pj"],
                    **quality}


#: Columns summed over the layers into a point's total row.
_SUMMED = ("copies", "cycles", "energy_pj", "macs", "cell_macs", "weight_bytes", "meta_bytes",
           "arrays")
_CHIP_SUMMED = ("offchip_bytes", "resident")


def evaluate_point(point: dict) -> dict:
    """One point's result: ``{"key", "status", "error", "rows"}`` (``rows``: one dict per
    layer of the model and a ``total``, columns :data:`COLUMNS`). A pure function of the
    point; a point the run pipeline refuses (:func:`~sparsecim.sw.pipeline.validate_settings`)
    fails with its message, it does not raise. ``tokens_per_s`` is the clock (the chip's, or
    the technology file's for one macro) over the cycles per token. A chip point's total
    ``load_cycles`` and ``load_pj`` are the exact load of every resident layer at once; its
    layer rows' price each layer's load alone."""
    head = {"key": point["key"], "macro": point["macro"], "model": point["model"],
            "sparsify": point["sparsify"], "pattern": point["pattern"],
            "mapping": point["mapping"], "tokens": point["tokens"], "tech": point["tech"],
            "chip": point["chip"]}
    try:
        layers, extra = _figures(point)
    except (RunError, ValueError) as exc:
        return {"key": point["key"], "status": "failed", "error": str(exc),
                "rows": [{**head, "status": "failed", "error": str(exc), "layer": "total",
                          "macro_slug": ""}]}
    slug = MacroConfig.from_dict(point["macro_config"]).slug
    tokens = point["tokens"]
    clock = extra["clock_mhz"] * 1e6

    def per_token(row):
        cycles = row["cycles"] / tokens
        return {"cycles_per_token": cycles, "pj_per_token": row["energy_pj"] / tokens,
                "tokens_per_s": clock / cycles if cycles else ""}

    rows = [{**head, "status": "ok", "error": "", "macro_slug": slug, **fig, **per_token(fig)}
            for fig in layers]
    summed = _SUMMED + (_CHIP_SUMMED if point["chip_config"] is not None else ())
    total = {name: sum(r[name] for r in rows) for name in summed}
    total.update(utilization=sum(r["macs"] for r in rows) / tokens / max(
        1, sum(r["arrays"] for r in rows) * _config(
            json.dumps(point["macro_config"], sort_keys=True)).cells))
    if point["chip_config"] is not None:
        bounds = {r["bound"] for r in rows}
        # The model's one-time load is every resident layer's at once (not the rows' sum).
        total.update(bound=bounds.pop() if len(bounds) == 1 else "mixed",
                     load_cycles=extra["load_cycles"], load_pj=extra["load_pj"])
    quality = {k: extra[k] for k in ("perplexity", "perplexity_dense", "cosine") if k in extra}
    rows.append({**head, "status": "ok", "error": "", "macro_slug": slug, "layer": "total",
                 "inputs": "", "outputs": "", **total, **per_token(total),
                 "area_mm2": extra["area_mm2"], **quality})
    return {"key": point["key"], "status": "ok", "error": "", "rows": rows}


def evaluate_points(points: list) -> list:
    """:func:`evaluate_point` of each (a batch: one task of an executor)."""
    return [evaluate_point(point) for point in points]


# --------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepResult:
    """What a sweep produced.

    Attributes
    ----------
    rows : list of dict
        Every row of ``points.csv``, in spec order.
    computed, cached, failed : int
        Points computed by this call, read from the cache, and failed (either way).
    table : Path
    out : Path
    seconds : float
        Wall time of the call.
    """
    rows: list
    computed: int
    cached: int
    failed: int
    table: Path
    out: Path
    seconds: float


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_rows(rows: list) -> list:
    return [{c: ("" if r.get(c) is None else r.get(c, "")) for c in COLUMNS} for r in rows]


def _batches(points: list, size: int):
    for start in range(0, len(points), size):
        yield points[start:start + size]


#: Seconds :func:`probe_ray_address` waits for a TCP connection to a Ray address.
RAY_PROBE_SECONDS = 3.0


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``ray://host:port``."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"--ray address must be host:port, ray://host:port or auto, "
                         f"not {address!r}")
    return host, int(port)


#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its
#: client server are gRPC) answers with a SETTINGS frame of its own (RFC 9113, 3.4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def probe_ray_address(address: str | None, timeout: float = RAY_PROBE_SECONDS) -> None:
    """Check that a gRPC server answers at a Ray cluster's address before ``ray.init``, which
    retries an unreachable address for minutes (GCS client timeouts) instead of failing.

    ``None``, ``auto`` and ``local`` are Ray's own lookups (they fail at once) and are not
    probed. Anything else must accept a TCP connection and answer the HTTP/2 preface with a
    SETTINGS frame, each within ``timeout`` seconds.

    Raises
    ------
    SweepError
        One line naming the address: not of the form ``host:port``, a host that does not
        resolve, a refused connection, no answer within ``timeout``, or an answer that is not
        HTTP/2 (not a Ray server).
    """
    if address is None or address in ("auto", "local"):
        return
    host, port = _host_port(address)
    where = f"cannot reach the Ray cluster at {address!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_H2_PREFACE)
            head = conn.recv(9)
    except socket.gaierror as exc:
        raise SweepError(f"{where}: host {host!r} does not resolve "
                         f"({exc.strerror or exc})") from None
    except TimeoutError:
        raise SweepError(f"{where}: no answer from {host}:{port} within {timeout:g} s") from None
    except OSError as exc:
        raise SweepError(f"{where}: {exc.strerror or exc}") from None
    if len(head) < 4 or head[3] != 4:  # frame type 4: SETTINGS
        raise SweepError(f"{where}: {host}:{port} does not answer as a gRPC (HTTP/2) server")


def _ray_results(batches: list, address: str | None, fn: Callable = None):
    """``fn(batch)`` (default :func:`evaluate_points`) of each batch from Ray tasks, as they
    finish (``address``: a cluster, or None for a local Ray of this machine's CPUs)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise SweepError("executor ray needs Ray: pip install 'sparsecim[sweep]'") from None
    if not ray.is_initialized():
        probe_ray_address(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"cannot connect to the Ray cluster at {address!r}: "
                             f"{str(exc).splitlines()[0]}") from None
    task = ray.remote(fn or evaluate_points)
    pending = [task.remote(batch) for batch in batches]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield from ray.get(done)


def _pool_results(batches: list, workers: int, fn: Callable = None):
    # spawn: a forked child of a process with threads (the progress bar's) can deadlock.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures = [pool.submit(fn or evaluate_points, batch) for batch in batches]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    finally:
        # Interrupted: drop the batches not started (the cache keeps the finished ones).
        pool.shutdown(wait=True, cancel_futures=True)


#: The executors of :func:`run_sweep`.
EXECUTORS = ("process", "ray", "inline")


def map_batches(fn: Callable, batches: list, *, executor: str = "process",
                workers: int | None = None, ray_address: str | None = None):
    """``fn(batch)`` of every batch on an executor of :data:`EXECUTORS`, yielded as each
    finishes (in any order). ``fn`` must be a module-level function (it travels by name)."""
    if executor == "inline" or not batches:
        return (fn(batch) for batch in batches)
    if executor == "ray":
        return _ray_results(batches, ray_address, fn)
    return _pool_results(batches, workers or os.cpu_count() or 1, fn)


def run_sweep(spec: SweepSpec, out: str | Path, *, executor: str = "process",
              ray_address: str | None = None, workers: int | None = None,
              batch: int | None = None,
              on_progress: Callable[[int, int, int, int], None] | None = None) -> SweepResult:
    """Evaluate every point of ``spec`` not already in ``OUT/cache`` and write
    ``OUT/points.csv`` (see the module docstring).

    Parameters
    ----------
    spec : SweepSpec
    out : path
        The sweep folder (created).
    executor : str
        ``process`` (a pool of ``workers`` processes; the default), ``ray`` (a local Ray, or
        the cluster at ``ray_address``) or ``inline`` (this process).
    workers : int, optional
        Pool size; by default the CPUs of this machine.
    batch : int, optional
        Points per task (default: enough for about 8 tasks per worker, at most 256).
    on_progress : callable, optional
        ``on_progress(done, cached, failed, total)`` after the cache is read and after each
        batch.

    Raises
    ------
    SweepError
        For an unknown executor or an output folder that cannot be written.
    """
    started = time.perf_counter()
    if executor not in EXECUTORS:
        raise SweepError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    try:
        out = check_output_folder(out, what="sweep folder")
        cache = check_output_folder(out / "cache", what="sweep cache folder")
    except OutputError as exc:
        raise SweepError(str(exc)) from None
    results: dict[str, dict] = {}
    todo = []
    for point in spec.points:
        file = cache / f"{point['key']}.json"
        try:
            results[point["key"]] = json.loads(file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            todo.append(point)  # never written, or cut off mid-write: compute again
    cached = len(results)
    failed = sum(r["status"] != "ok" for r in results.values())
    total = len(spec.points)
    table = out / "points.csv"
    # The table restarts from the cache, then grows by each finished batch: an interrupted
    # sweep leaves exactly its cached points in it.
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for point in spec.points:
            if point["key"] in results:
                writer.writerows(_csv_rows(results[point["key"]]["rows"]))
        if on_progress:
            on_progress(cached, cached, failed, total)
        workers = workers or os.cpu_count() or 1
        size = batch or max(1, min(256, -(-len(todo) // (8 * workers))))
        batches = list(_batches(todo, size))
        for finished in map_batches(evaluate_points, batches, executor=executor,
                                    workers=workers, ray_address=ray_address):
            for result in finished:
                _write_atomic(cache / f"{result['key']}.json", json.dumps(result))
                results[result["key"]] = result
                failed += result["status"] != "ok"
                writer.writerows(_csv_rows(result["rows"]))
            handle.flush()
            if on_progress:
                on_progress(len(results), cached, failed, total)
    rows = [row for point in spec.points for row in results[point["key"]]["rows"]]
    # Rewritten in spec order once complete (batches finish in any order).
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_rows(rows))
    return SweepResult(rows, total - cached, cached, failed, table, out,
                       time.perf_counter() - started)


def read_table(path: str | Path) -> list[dict]:
    """The rows of a ``points.csv`` as dicts of strings (``pandas.read_csv`` reads it too)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


