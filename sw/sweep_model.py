"""Closed-form cycle and event model of a layer-shape-table point: no trace is built.

A sweep prices thousands of design points (macro × model × pattern × mapping × tokens); building
even small traces costs milliseconds per layer. :func:`closed_events` counts the same events
from the commands the scheduler's loops would emit and how many times each runs (as
:func:`sparsecim.sw.schedule.predict_counters` prices cycles), each command's events by the
rules of :func:`sparsecim.sw.events.count_events` and its costs by the ISA
(:func:`sparsecim.hw.isa.cycles`, :func:`~sparsecim.hw.isa.data_beats`).

Equality (``tests/test_sw_sweep_model.py``, over a grid): :func:`closed_events` equals the
events counted on the whole trace (:func:`~sparsecim.sw.events.gemm_events`) in every
field but ``zero_weight_macs``, which depends on the weights' values and which the energy model
does not charge (it is 0 here); its cycles equal ``predict_counters``. ``sparsecim run``
prices a shape table with the same counts (:func:`~sparsecim.sw.events.layer_events`).
(An earlier two-tile extrapolation was not exact when the scheduler picks another loop variant
for the whole layer than for one or two output tiles: e.g. ``tiny``, 64 × 36, 17 tokens, 4,689
cycles in the trace, 5,510 extrapolated.)
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from ..hw.config import MacroConfig
from ..hw.isa import Opcode, command_layout, cycles, data_beats
from .area import recorded_counts
from .energy import Tech, layer_energy
from .events import Events, choices
from .nm import NMPattern, memory_bits
from .schedule.gemm import loop_times, loop_variants

__all__ = ["command_times", "closed_events", "command_events", "point_figures",
           "chip_point_figures", "tiling"]


@dataclass(frozen=True)
class _Tiling:
    """The figures of :func:`~sparsecim.sw.mapping.map_nm` a point needs, without listing its
    tiles (a LLaMA layer on a small macro has millions): equal to the mapping's (a test)."""
    k_tiles: int
    n_tiles: int
    k_tile_inputs: tuple
    arrays: int
    utilization: float
    macs_per_token: int


@functools.lru_cache(maxsize=4096)
def _tiling(cfg: MacroConfig, k: int, n: int, pattern: tuple[int, int]) -> _Tiling:
    cfg.check_pattern(*pattern)
    inputs = cfg.pass_inputs(*pattern)
    k_tiles, n_tiles = -(-k // inputs), -(-n // cfg.cols)
    slots = n * -(-k // pattern[1]) * pattern[0]
    return _Tiling(k_tiles, n_tiles,
                   tuple(min(inputs, k - i * inputs) for i in range(k_tiles)),
                   k_tiles * n_tiles, slots / (k_tiles * n_tiles * cfg.cells), slots)


def tiling(cfg: MacroConfig, k: int, n: int, pattern: tuple[int, int]) -> _Tiling:
    """``k_tiles``, ``n_tiles``, ``k_tile_inputs``, ``arrays``, ``utilization`` and
    ``macs_per_token`` of :func:`~sparsecim.sw.mapping.map_nm` in closed form (no tile list).

    Raises
    ------
    ValueError
        If the macro does not support the pattern.
    """
    return _tiling(cfg, k, n, tuple(pattern))


def command_times(cfg: MacroConfig, k: int, n: int, tokens: int,
                  pattern: tuple[int, int]) -> tuple[tuple[int, int], Counter]:
    """The commands :func:`~sparsecim.sw.schedule.schedule_layer` emits for a ``tokens × k``
    by ``k × n`` layer in ``pattern``, each with how many times it runs, and the pattern they
    run in; the loop variant with fewest cycles, resident first among equals (as the
    scheduler chooses)."""
    pattern = tuple(pattern)
    return pattern, _command_times(cfg, k, n, tokens, pattern)


@functools.lru_cache(maxsize=4096)
def _command_times(cfg: MacroConfig, k: int, n: int, tokens: int,
                   pattern: tuple[int, int]) -> Counter:
    mapping = _tiling(cfg, k, n, pattern)
    best = None
    for resident, chunk in loop_variants(cfg, mapping.k_tiles, tokens):
        times = loop_times(cfg, pattern, mapping.k_tile_inputs, mapping.n_tiles, tokens,
                           resident, chunk)
        total = sum(cycles(cfg, cmd, pattern).total * count for cmd, count in times.items())
        if best is None or total < best[0]:
            best = (total, times)
    return best[1]


def closed_events(cfg: MacroConfig, k: int, n: int, tokens: int,
                  pattern: tuple[int, int] = (1, 1)) -> Events:
    """The events of the layer's trace (:func:`~sparsecim.sw.events.count_events`) without
    building it: each distinct command's events times how often it runs. ``zero_weight_macs``
    is 0 (it depends on the weights' values, which a shape table does not have).

    Parameters
    ----------
    cfg : MacroConfig
    k, n : int
        Inputs and outputs of the layer.
    tokens : int
        Tokens (rows of the activations).
    pattern : (int, int)
        The pattern the layer runs in (``(1, 1)`` dense); the macro must support it.
    """
    return _closed_events(cfg, k, n, tokens, tuple(pattern)).scaled(1)  # a copy


@functools.lru_cache(maxsize=4096)
def _closed_events(cfg: MacroConfig, k: int, n: int, tokens: int,
                   pattern: tuple[int, int]) -> Events:
    return command_events(cfg, _command_times(cfg, k, n, tokens, pattern), pattern)


def command_events(cfg: MacroConfig, times, pattern: tuple[int, int] = (1, 1),
                   split: int = 0) -> Events:
    """The events of legal commands run ``times[cmd]`` times each (a mapping ``Command ->
    count``) by one macro while ``pattern`` and ``split`` (of the last CONFIG) are current,
    each command's by the rules of :func:`~sparsecim.sw.events.count_events` (no MOVE;
    ``zero_weight_macs`` 0). The CONFIG commands themselves are counted (fetch, command bits)
    but the pattern they set is the caller's ``pattern``: the chip's event walk
    (:func:`sparsecim.sw.chip_energy.chip_macro_events`) groups commands by it."""
    ev = Events()
    cmd_bits = command_layout(cfg).size
    dist_per_pass = cfg.reduction * choices(cfg)
    selects_per_pass = cfg.cells if choices(cfg) > 1 else 0
    modes: Counter = Counter()
    # A dense pass with split s keeps 2**s groups apart; an N:M pass sums all P.
    groups = 2 ** split if tuple(pattern) == (1, 1) else 1
    for cmd, t in times.items():
        ev.commands += t
        ev.bits_in += t * cmd_bits
        ev.cycles += t * cycles(cfg, cmd, pattern).total
        op = cmd.opcode
        if op == Opcode.END:
            continue
        if op == Opcode.MOVE:
            raise ValueError("command_events does not count MOVE (its window needs the "
                             "trace walk, sparsecim.sw.events.count_events)")
        need = data_beats(cfg, cmd, pattern)
        ev.bits_in += t * need * cfg.data_bits
        if op == Opcode.LOAD_W:
            ev.w_rows += t * cmd.count
            ev.weight_bits_written += t * cmd.count * cfg.cols * (cfg.weight_bits
                                                                  + cfg.meta_bits)
        elif op == Opcode.LOAD_A:
            ev.a_beats += t * need
            ev.act_bits_written += t * need * cfg.act_lanes * cfg.act_bits
        elif op == Opcode.COMPUTE:
            count = t * cmd.count
            ev.compute_commands += t
            ev.passes += count
            modes[f"{pattern[0]}:{pattern[1]}"] += count
            ev.macs += count * cfg.cells
            ev.act_bits_read += count * cfg.max_pass_inputs * cfg.act_bits
            ev.dist_words += count * dist_per_pass
            ev.cell_selects += count * selects_per_pass
            ev.tree_adds += count * cfg.submacros * cfg.cols * (cfg.rows - 1)
            ev.merge_adds += count * cfg.cols * (cfg.submacros - groups)
            ev.acc_writes += count * groups * cfg.cols
            if cmd.accumulate:
                ev.acc_reads += count * groups * cfg.cols
        elif op == Opcode.READ:
            ev.result_beats += t * cmd.count
            ev.acc_reads += t * cmd.count * cfg.cols
            ev.bits_out += t * cmd.count * cfg.result_bits
    ev.passes_by_mode = dict(modes)
    return ev


def point_figures(cfg: MacroConfig, rows, tokens: int, declared: tuple[int, int],
                  stored: tuple[int, int], tech: Tech) -> list[dict]:
    """Figures of every row of a layer-shape table (``rows``: ``LinearShape``) on ``cfg``,
    totals over each row's ``count · blocks`` copies, as ``sparsecim run`` reports them: the
    pattern ``declared`` (what the weights keep), run as ``stored`` (``(1, 1)`` for a linear
    mapping), energy by ``tech`` (with leakage when the config's cell counts are recorded).

    Returns
    -------
    list of dict
        Per row: ``layer``, ``inputs``, ``outputs``, ``copies``, ``cycles``, ``macs``,
        ``cell_macs``, ``weight_bytes``, ``meta_bytes``, ``arrays``, ``utilization``,
        ``energy_pj``, ``area_mm2``.
    """
    counts = recorded_counts(cfg)
    out, cache = [], {}
    for row in rows:
        k, n, copies = row.inputs, row.outputs, row.total
        if (k, n) not in cache:
            mapping = _tiling(cfg, k, n, stored)
            ev = _closed_events(cfg, k, n, tokens, stored)
            cache[(k, n)] = (mapping, ev, memory_bits(n, k, NMPattern(*stored),
                                                              value_bits=cfg.weight_bits))
        mapping, ev, bits = cache[(k, n)]
        energy = layer_energy(cfg, ev.scaled(copies), tech, counts, tokens)
        out.append({
            "layer": row.name, "inputs": k, "outputs": n, "copies": copies,
            "cycles": ev.cycles * copies, "macs": mapping.macs_per_token * tokens * copies,
            "cell_macs": energy["cell_macs"],
            "weight_bytes": -(-bits["values"] // 8) * copies,
            "meta_bytes": -(-bits["metadata"] // 8) * copies,
            "arrays": mapping.arrays * copies, "utilization": mapping.utilization,
            "energy_pj": energy["total_pj"], "area_mm2": energy["area_mm2"],
        })
    return out


def _row_of_layers(rows) -> dict:
    """Layer name (as :func:`~sparsecim.sw.schedule.chip.model_layers` names it: block, then
    the row's name, then the copy inside a block when ``count > 1``) to its row's index."""
    names = {}
    for index, row in enumerate(rows):
        for block in range(row.blocks):
            for i in range(row.count):
                names[f"{block}.{row.name}" + (f".{i}" if row.count > 1 else "")] = index
    return names


def chip_point_figures(chip, model, tokens: int, stored: tuple[int, int],
                       tech: Tech) -> tuple[list[dict], dict]:
    """Figures of a whole model (a :class:`~sparsecim.sw.model_shapes.ModelShape`) on a chip,
    per row of its layer-shape table: chip-sched's exact figures
    (:func:`~sparsecim.sw.schedule.chip.model_figures`: every linear placed by
    :func:`~sparsecim.sw.schedule.chip.place_model` for ``tokens``, resident or streamed) and
    their energy (:func:`~sparsecim.sw.chip_energy.model_chip_energy`). One token is the
    decode run; ``tokens > 1`` the prefill run of that many.

    Returns
    -------
    rows : list of dict
        Per shape row, totals over its ``count · blocks`` copies: ``layer``, ``inputs``,
        ``outputs``, ``copies``, ``cycles``, ``macs``, ``cell_macs``, ``weight_bytes``,
        ``meta_bytes``, ``arrays`` (tiles), ``utilization``, ``energy_pj``, ``area_mm2``
        (the chip's), ``offchip_bytes`` (of the run), ``resident`` (copies resident),
        ``bound`` (``compute``, ``bandwidth`` or ``mixed`` over the copies), ``load_cycles``
        and ``load_pj`` (the resident copies' one-time load, each priced alone; not in
        ``cycles``).
    model : dict
        :func:`~sparsecim.sw.chip_energy.model_chip_energy`'s totals, its ``load_cycles`` and
        ``load_pj`` the exact load of every resident layer at once.
    """
    from .chip_energy import model_chip_energy
    from .schedule.chip import model_figures, model_layers, place_model

    cfg = chip.macro
    layers = model_layers(model, stored)
    plan = place_model(chip, layers, tokens)
    figures = model_figures(chip, layers, prefill_tokens=tokens, plan=plan)
    model_energy = model_chip_energy(chip, figures, tech, plan=plan)
    run = "decode" if tokens == 1 else "prefill"
    row_of = _row_of_layers(model.linears)
    out = []
    for row in model.linears:
        mapping = _tiling(cfg, row.inputs, row.outputs, stored)
        bits = memory_bits(row.outputs, row.inputs, NMPattern(*stored),
                           value_bits=cfg.weight_bits)
        out.append({
            "layer": row.name, "inputs": row.inputs, "outputs": row.outputs,
            "copies": row.total, "cycles": 0,
            "macs": mapping.macs_per_token * tokens * row.total, "cell_macs": 0,
            "weight_bytes": -(-bits["values"] // 8) * row.total,
            "meta_bytes": -(-bits["metadata"] // 8) * row.total,
            "arrays": mapping.arrays * row.total, "utilization": mapping.utilization,
            "energy_pj": 0.0, "area_mm2": model_energy["area_mm2"], "offchip_bytes": 0,
            "resident": 0, "bound": set(), "load_cycles": 0, "load_pj": 0.0})
    for fig, energy in zip(figures, model_energy["layers"], strict=True):
        row = out[row_of[fig.layer.name]]
        counters = fig.decode if run == "decode" else fig.prefill
        row["cycles"] += counters["total"]
        row["cell_macs"] += energy[run]["cell_macs"]
        row["energy_pj"] += energy[run]["total_pj"]
        row["offchip_bytes"] += energy[run]["offchip_bytes"]
        row["resident"] += fig.resident
        row["bound"].add(fig.bound if run == "decode" else fig.prefill_bound)
        row["load_cycles"] += fig.load_cycles
        row["load_pj"] += energy["load_pj"]
    for row in out:
        row["bound"] = row["bound"].pop() if len(row["bound"]) == 1 else "mixed"
    return out, model_energy
