"""Energy and area of the chip (``docs/chip.md``): K macros, the routers, the global buffer and
off-chip memory, priced from exact chip counters and per-macro events.

What is counted, and from what
------------------------------
The macros' work is :class:`~sparsecim.sw.events.Events` summed over the K macros
(:func:`chip_macro_events` walks the chip commands; for a chip trace with data, the sum of
:func:`~sparsecim.sw.events.count_events` over :func:`~sparsecim.sw.chip_golden.macro_traces`
is the same plus ``zero_weight_macs``). Its counter fields are the macros' own counters
summed (``commands`` = Σ ``fetch``, ``passes``, ``w_rows``, ``a_beats``, ``result_beats`` =
Σ ``read``; :func:`~sparsecim.sw.events.derived_from_counters` gives the rest but the
accumulate flags and the merge split, which come from the commands, as on one macro). The
chip's own events then follow exactly from the chip counters (:data:`CHIP_COUNTERS`) and those
sums, because a router moves one beat to every macro of its range in the same cycle:

================== ============================================================================
component          energy (fJ)
================== ============================================================================
macros             :func:`~sparsecim.sw.energy.energy_breakdown` of the summed events: cell
                   array, distribution, merge, buffers, accumulators, and ``macro ports`` (the
                   macro level's stream registers, its ``interconnect``)
interconnect       activation broadcast: Σ_k ``a_beats`` (= ``a_load`` beats × macros reached)
                   × ``broadcast_bits`` × wire; weight rows: Σ_k ``w_rows`` × ``data_bits`` ×
                   wire; result wires: Σ_k ``read`` × ``result_bits`` × wire; reduction
                   additions: (Σ_k ``read`` - ``read``) × ``cols`` × ``result_bits_per_lane`` ×
                   ``add_per_bit`` (a READ beat over ``span`` macros takes ``span - 1`` adds
                   per lane); command dispatch: ``dispatch`` × chip command bits ×
                   ``reg_per_bit`` (the hold register) + Σ_k ``fetch`` × macro command bits ×
                   (``reg_per_bit`` + wire) (each queue entry written once, fetched once).
                   *wire* = ``wire_per_bit_mm`` × the macro pitch (√ macro area): a beat
                   crosses one macro's width per macro it reaches
global buffer      ``a_load`` × ``broadcast_bits`` × read + ``read`` × ``cols`` ×
                   ``result_bits_per_lane`` × write, per-bit energies of an SRAM of
                   ``buffer_bytes`` (:func:`buffer_energy_per_bit`)
off-chip memory    ``w_load`` × ``weight_row_bytes`` × 8 × ``dram_per_bit``
leakage            ``leakage_mw_per_mm2`` × chip area × ``total`` / ``clock_mhz`` (the chip's
                   clock), all K macros, the buffer and the chip logic
================== ============================================================================

The activations of a layer come from the global buffer and its results go back there (layer
after layer); the weights of a streamed layer come from off chip every run, a resident layer's
once (its load phase, reported apart).

Area (:func:`chip_area`): K × the macro's area (Yosys cell counts, ``make area``) + the global
buffer (``buffer_bytes × 8 × sram_bit``) + the chip logic, estimated from the registers and
adders ``docs/chip.md`` implies (:func:`chip_logic_cells`; 0.85× of Yosys on ``tiny4``'s chip
RTL, the macros blackboxed) since the chip's RTL is not on this branch. Without recorded counts
for the macro there is no macro area: no leakage, no wire energy (its length is the macro
pitch), no TOPS/mm²; the notes say so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from amaranth.hdl import Shape

from ..hw.config import ChipConfig, ceil_log2
from ..hw.isa import Opcode, chip_command_layout, command_layout, pattern_of
from .area import CellCounts, recorded_counts
from .energy import Tech, area_breakdown, cell_area_um2, energy_breakdown
from .events import Events

__all__ = ["CHIP_ENERGY_COMPONENTS", "INTERCONNECT_PARTS", "CHIP_AREA_COMPONENTS",
           "chip_macro_events", "buffer_energy_per_bit", "wire_fj_per_bit", "chip_logic_cells",
           "chip_area", "chip_energy_breakdown", "ChipEnergy", "evaluate_chip",
           "run_energy", "layer_chip_energy", "model_chip_energy"]

#: Energy components of the chip, in report order (the macro's first, its ``interconnect``
#: renamed ``macro ports``: the chip's interconnect is the wires and adders between macros).
CHIP_ENERGY_COMPONENTS = ("cell array", "distribution", "merge", "buffers", "accumulators",
                          "macro ports", "interconnect", "global buffer", "off-chip memory",
                          "leakage")

#: The parts of the chip's ``interconnect``.
INTERCONNECT_PARTS = ("activation broadcast", "weight rows", "result wires",
                      "result reduction", "command dispatch")

#: Area components of the chip.
CHIP_AREA_COMPONENTS = ("macros", "global buffer", "chip logic")

_MACRO_PARTS = ("cell array", "distribution", "merge", "buffers", "accumulators")


# --------------------------------------------------------------------------------------------
# Events


def chip_macro_events(chip: ChipConfig, ops) -> Events:
    """The events of every macro of the chip, summed, for chip commands ``ops`` run up to the
    first END (which every macro fetches).

    Parameters
    ----------
    chip : ChipConfig
    ops : iterable
        ``(target, span, Command, ...)`` tuples in dispatch order (what
        :func:`~sparsecim.sw.schedule.chip.chip_ops` returns): legal commands, each run by the
        macros ``target .. target + span - 1`` in the pattern and split of the last CONFIG
        sent to each.

    Returns
    -------
    Events
        Per-macro events summed over the macros (:func:`~sparsecim.sw.sweep_model.
        command_events` per command and mode); ``cycles`` 0 (the chip's ``total`` counter
        gives time), ``zero_weight_macs`` 0 (no weights here).

    Raises
    ------
    ValueError
        For a MOVE, or a CONFIG selecting a pattern the macro does not run.
    """
    from .sweep_model import command_events  # lazy: sweep_model imports this module lazily

    cfg = chip.macro
    modes = [((1, 1), 0)] * chip.macros
    times: dict = {}   # (pattern, split) -> Counter(Command -> macro executions)
    for op in ops:
        lo, span, cmd = op[0], op[1], op[2]
        if cmd.opcode == Opcode.END:
            lo, span = 0, chip.macros
        for k in range(lo, lo + span):
            times.setdefault(modes[k], Counter())[cmd] += 1
        if cmd.opcode == Opcode.END:
            break
        if cmd.opcode == Opcode.CONFIG:
            pattern = pattern_of(cfg, cmd)
            if pattern is None:
                raise ValueError(f"CONFIG {cmd} selects a pattern the macro does not run")
            modes[lo:lo + span] = [((pattern.n, pattern.m), cmd.split)] * span
    total = Events()
    for (pattern, split), counts in times.items():
        total = total + command_events(cfg, counts, pattern, split)
    total.cycles = 0
    return total


# --------------------------------------------------------------------------------------------
# Per-bit energies and area


def buffer_energy_per_bit(tech: Tech, size_bytes: int) -> tuple[float, float]:
    """``(read, write)`` fJ per bit of an SRAM of ``size_bytes`` bytes.

    Log-log interpolation between the technology file's two ``global_buffer`` points (access
    energy grows about as the square root of the size over that range); below the small
    point, the small point's energies; above the large one, banks of the large size plus a
    wire over half the buffer's side (``sram_bit`` area) each way.
    """
    gb = tech.values["global_buffer"]
    small, large = gb["small_bytes"], gb["large_bytes"]
    out = []
    for kind in ("read", "write"):
        lo, hi = gb[f"small_{kind}_per_bit"], gb[f"large_{kind}_per_bit"]
        if size_bytes <= small:
            out.append(lo)
        elif size_bytes <= large:
            if lo == 0 or hi == 0:
                share = math.log(size_bytes / small) / math.log(large / small)
                out.append(lo + (hi - lo) * share)
            else:
                slope = math.log(hi / lo) / math.log(large / small)
                out.append(lo * (size_bytes / small) ** slope)
        else:
            side_mm = math.sqrt(size_bytes * 8 * tech.values["area_um2"]["sram_bit"]) * 1e-3
            out.append(hi + tech.values["energy_fj"]["wire_per_bit_mm"] * side_mm / 2)
    return out[0], out[1]


def wire_fj_per_bit(tech: Tech, macro_area_um2: float | None) -> float | None:
    """fJ to move one bit across one macro (``wire_per_bit_mm`` × the macro pitch, the square
    root of its area); None without a macro area."""
    if macro_area_um2 is None:
        return None
    return tech.values["energy_fj"]["wire_per_bit_mm"] * math.sqrt(macro_area_um2) * 1e-3


# Generic cells of one full-adder bit and of one enabled register bit (a flip-flop with an
# enable is a DFF and a 2:1 mux in energy.cell_area_um2's terms).
_ADDER_BIT = {"$_XOR_": 2, "$_AND_": 2, "$_OR_": 1}
_REG_BIT = {"$_DFFE_PP_": 1}


def chip_logic_cells(chip: ChipConfig) -> CellCounts:
    """Generic-cell estimate of the chip's own logic (not the macros), as
    :class:`~sparsecim.sw.area.CellCounts` of one component, ``chip logic``:

    - memory bits: the K command queues (``queue`` macro command words each) and the three
      routers' range queues (``load_queue`` entries of ``target`` and ``span``), FIFOs whose
      storage Yosys keeps as memories (as the macro's buffers);
    - registers: the hold register (a chip command word and its valid bit), the weight credit
      and the chip counters;
    - full-adder bits: the result router's ``K - 1`` adders of ``result_bits_per_lane`` bits
      per column and the counters' incrementers; an AND gate per macro accumulator bit
      selecting the READ's range.

    An estimate from ``docs/chip.md``, for any K: on ``tiny4``, Yosys on ``hw/chip.py``
    (branch chip-hw, the macros and sequencers blackboxed, the flow of
    :data:`~sparsecim.sw.area.YOSYS_SCRIPT`) gave 4,127 gates, 310 flip-flops and 748 memory
    bits, 1,775 µm² at 22 nm; this estimate gives 1,508 µm² (0.85×) with the same 748 memory
    bits. The chip logic is about 2 % of ``tiny4``'s area."""
    cfg, k = chip.macro, chip.macros
    layout = chip_command_layout(chip)
    cmd_bits = command_layout(cfg).size
    range_bits = Shape.cast(layout["target"].shape).width + Shape.cast(
        layout["span"].shape).width
    memory_bits = k * chip.queue * cmd_bits + 3 * chip.load_queue * range_bits
    reg_bits = layout.size + 1 + ceil_log2(chip.weight_row_bytes + 1) + 6 * cfg.counter_bits
    add_bits = (k - 1) * cfg.cols * chip.result_bits_per_lane + 6 * cfg.counter_bits
    cells: Counter = Counter()
    for kind, n in _REG_BIT.items():
        cells[kind] += n * reg_bits
    for kind, n in _ADDER_BIT.items():
        cells[kind] += n * add_bits
    cells["$_AND_"] += k * cfg.cols * cfg.acc_bits
    return CellCounts({"chip logic": dict(cells)}, {"chip logic": memory_bits})


def chip_area(chip: ChipConfig, tech: Tech, counts: CellCounts | None = None) -> dict:
    """Area in µm² by :data:`CHIP_AREA_COMPONENTS` (``macros`` None without cell counts of
    the macro; ``counts`` default: the recorded ones), with ``macro`` (one macro's µm², or
    None) and ``total`` (None without a macro area)."""
    counts = counts if counts is not None else recorded_counts(chip.macro)
    macro = sum(area_breakdown(counts, tech).values()) if counts is not None else None
    estimate = chip_logic_cells(chip)
    logic = (sum(n * cell_area_um2(kind, tech)
                 for kind, n in estimate.cells["chip logic"].items())
             + estimate.memory_bits["chip logic"] * tech.values["area_um2"]["sram_bit"])
    out = {"macros": None if macro is None else chip.macros * macro,
           "global buffer": chip.buffer_bytes * 8 * tech.values["area_um2"]["sram_bit"],
           "chip logic": logic}
    out["macro"] = macro
    out["total"] = None if macro is None else sum(out[c] for c in CHIP_AREA_COMPONENTS)
    return out


# --------------------------------------------------------------------------------------------
# Energy


def _interconnect(chip: ChipConfig, counters: dict, ev: Events, tech: Tech,
                  wire: float | None) -> dict:
    """fJ of each of :data:`INTERCONNECT_PARTS` (the wire parts None without ``wire``)."""
    cfg = chip.macro
    e = tech.values["energy_fj"]
    cmd_bits = command_layout(cfg).size

    def wired(bits):
        return None if wire is None else bits * wire

    dispatch = counters["dispatch"] * chip_command_layout(chip).size * e["reg_per_bit"]
    dispatch += ev.commands * cmd_bits * e["reg_per_bit"]
    return {
        "activation broadcast": wired(ev.a_beats * chip.broadcast_bits),
        "weight rows": wired(ev.w_rows * cfg.data_bits),
        "result wires": wired(ev.result_beats * cfg.result_bits),
        "result reduction": ((ev.result_beats - counters["read"]) * cfg.cols
                             * chip.result_bits_per_lane * e["add_per_bit"]),
        "command dispatch": (dispatch if wire is None
                             else dispatch + ev.commands * cmd_bits * wire),
    }


def chip_energy_breakdown(chip: ChipConfig, counters: dict, ev: Events, tech: Tech,
                          area: dict | None = None) -> tuple[dict, dict]:
    """fJ by :data:`CHIP_ENERGY_COMPONENTS` and by :data:`INTERCONNECT_PARTS` of a chip run:
    ``counters`` its chip counters (``total``, ``dispatch``, ``w_load``, ``a_load``,
    ``read``), ``ev`` the events of all its macros summed; ``area`` from :func:`chip_area`
    (default: the recorded one). Components that need the macro area (``interconnect``'s
    wires, ``leakage``) are None without it; the module docstring has the rules."""
    area = area if area is not None else chip_area(chip, tech)
    cfg = chip.macro
    e = tech.values["energy_fj"]
    macro = energy_breakdown(cfg, ev, tech)
    parts = _interconnect(chip, counters, ev, tech, wire_fj_per_bit(tech, area["macro"]))
    read, write = buffer_energy_per_bit(tech, chip.buffer_bytes)
    buffer = (counters["a_load"] * chip.broadcast_bits * read
              + counters["read"] * cfg.cols * chip.result_bits_per_lane * write)
    offchip = counters["w_load"] * chip.weight_row_bytes * 8 * e["dram_per_bit"]
    leakage = None
    if area["total"] is not None:
        seconds = counters["total"] / (chip.clock_mhz * 1e6)
        leakage = (tech.values["operating"]["leakage_mw_per_mm2"] * 1e-3
                   * area["total"] * 1e-6 * seconds * 1e15)
    link = None if any(v is None for v in parts.values()) else sum(parts.values())
    out = {name: macro[name] for name in _MACRO_PARTS}
    out.update({"macro ports": macro["interconnect"], "interconnect": link,
                "global buffer": buffer, "off-chip memory": offchip, "leakage": leakage})
    return {name: out[name] for name in CHIP_ENERGY_COMPONENTS}, parts


@dataclass
class ChipEnergy:
    """Energy and area figures of one chip run.

    Attributes
    ----------
    energy_pj : dict
        pJ by :data:`CHIP_ENERGY_COMPONENTS`; None where not modelled (no macro area).
    interconnect_pj : dict
        pJ by :data:`INTERCONNECT_PARTS`.
    total_pj : float
        Sum of the modelled components.
    cell_macs, cycles : int
        Cell MACs of every macro (``passes × cells``) and the chip's ``total`` cycles.
    offchip_bytes : int
        ``w_load × weight_row_bytes``.
    tops_per_w : float
        ``2 × cell_macs / total energy``, as on one macro.
    area_um2 : dict
        :func:`chip_area`.
    area_mm2, tops_per_mm2, peak_tops_per_mm2 : float or None
        Chip area; achieved ``2 × cell_macs / (cycles / clock) / area``; peak ``2 × K × cells
        × clock / area`` (None without a macro area).
    notes : list of str
    """
    energy_pj: dict
    interconnect_pj: dict
    total_pj: float
    cell_macs: int
    cycles: int
    offchip_bytes: int
    tops_per_w: float
    area_um2: dict
    area_mm2: float | None
    tops_per_mm2: float | None
    peak_tops_per_mm2: float | None
    tech: str
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _pj(values: dict) -> dict:
    return {k: (None if v is None else v / 1000) for k, v in values.items()}


def evaluate_chip(chip: ChipConfig, counters: dict, ev: Events, tech: Tech,
                  counts: CellCounts | None = None) -> ChipEnergy:
    """Energy, TOPS/W, area and TOPS/mm² of a chip run: ``counters`` the chip counters
    (:data:`~sparsecim.hw.isa.CHIP_COUNTERS`), ``ev`` its macros' events summed
    (:func:`chip_macro_events`, or :func:`~sparsecim.sw.events.count_events` of each macro
    trace), ``counts`` the macro's cell counts (default: recorded)."""
    area = chip_area(chip, tech, counts)
    fj, parts = chip_energy_breakdown(chip, counters, ev, tech, area)
    pj = _pj(fj)
    total = sum(v for v in pj.values() if v is not None)
    notes = []
    if area["macro"] is None:
        notes.append(f"no recorded cell counts for the macro {chip.macro.slug} (make area): "
                     "no area, leakage, interconnect wires or TOPS/mm2")
    notes.append("chip logic area estimated from its registers and adders "
                 "(sparsecim.sw.chip_energy.chip_logic_cells), not synthesized")
    clock = chip.clock_mhz * 1e6
    mm2 = area["total"] * 1e-6 if area["total"] is not None else None
    tops_mm2 = peak = None
    if mm2:
        if counters["total"]:
            tops_mm2 = 2 * ev.macs / (counters["total"] / clock) / mm2 / 1e12
        peak = 2 * chip.cells * clock / mm2 / 1e12
    return ChipEnergy(
        energy_pj=pj, interconnect_pj=_pj(parts), total_pj=total, cell_macs=ev.macs,
        cycles=counters["total"], offchip_bytes=counters["w_load"] * chip.weight_row_bytes,
        tops_per_w=(2 * ev.macs / (total * 1e-12) / 1e12) if total else 0.0,
        area_um2={k: area[k] for k in CHIP_AREA_COMPONENTS}, area_mm2=mm2,
        tops_per_mm2=tops_mm2, peak_tops_per_mm2=peak, tech=tech.name, notes=notes)


def run_energy(chip: ChipConfig, ops, counters: dict, tech: Tech,
               counts: CellCounts | None = None) -> ChipEnergy:
    """:func:`evaluate_chip` of the commands ``ops`` (see :func:`chip_macro_events`) whose
    chip counters are ``counters``."""
    return evaluate_chip(chip, counters, chip_macro_events(chip, ops), tech, counts)


def _runs(figures):
    """``(name, placement, tokens, load, compute, counters)`` of a layer's priced runs."""
    runs = [("decode", figures.decode_placement, 1, False, True, figures.decode),
            ("prefill", figures.placement, figures.prefill_tokens, False, True, figures.prefill)]
    if figures.load is not None:
        runs.append(("load", figures.placement, 1, True, False, figures.load))
    return runs


def layer_chip_energy(chip: ChipConfig, figures, tech: Tech,
                      counts: CellCounts | None = None) -> dict:
    """Energy of one layer from chip-sched's exact figures
    (:class:`~sparsecim.sw.schedule.chip.LayerFigures`): the decode run (one token), the
    prefill run (``prefill_tokens``) and, resident, the one-time load, each rebuilt as the
    same commands (:func:`~sparsecim.sw.schedule.chip.chip_ops`) and priced on their chip
    counters.

    Returns
    -------
    dict
        ``decode``, ``prefill`` and ``load`` (None when streamed): :meth:`ChipEnergy.as_dict`
        each; ``decode_pj_per_token``, ``prefill_pj_per_token`` (the run's energy over its
        tokens; a resident layer's load is not in it) and ``load_pj``.
    """
    from ..hw.isa import Command
    from .schedule.chip import chip_ops

    out = {"load": None, "load_pj": 0.0}
    end = (0, chip.macros, Command(Opcode.END), None)
    for name, placement, tokens, load, compute, counters in _runs(figures):
        ops = chip_ops(placement, tokens, load=load, compute=compute)[0] + [end]
        out[name] = run_energy(chip, ops, counters, tech, counts).as_dict()
    out["decode_pj_per_token"] = out["decode"]["total_pj"]
    out["prefill_pj_per_token"] = out["prefill"]["total_pj"] / figures.prefill_tokens
    if out["load"] is not None:
        out["load_pj"] = out["load"]["total_pj"]
    return out


def _model_load(chip: ChipConfig, plan, tech: Tech, counts) -> tuple[float, int]:
    """pJ and cycles of loading every resident layer of ``plan`` at once."""
    from ..hw.isa import Command
    from .schedule.chip import chip_ops, load_phase

    counters = load_phase(plan)
    if counters is None:
        return 0.0, 0
    ops = [op for p in plan.placements if p.resident
           for op in chip_ops(p, 1, load=True, compute=False)[0]]
    ops.append((0, chip.macros, Command(Opcode.END), None))
    return run_energy(chip, ops, counters, tech, counts).total_pj, counters["total"]


def model_chip_energy(chip: ChipConfig, figures, tech: Tech,
                      counts: CellCounts | None = None, *, plan=None) -> dict:
    """Whole-model figures from the :class:`~sparsecim.sw.schedule.chip.LayerFigures` of its
    layers (:func:`~sparsecim.sw.schedule.chip.model_figures`), each layer priced alone as
    chip-sched prices its cycles (layers run one after the other; no overlap is claimed).

    Returns
    -------
    dict
        ``layers`` (:func:`layer_chip_energy` per layer, same shapes priced once);
        ``decode`` and ``prefill``: ``pj_per_token``, ``cycles_per_token``,
        ``tokens_per_s``, ``tops_per_w``, ``tops_per_mm2``, ``offchip_bytes_per_token``
        and ``components_pj`` per token (None where not modelled); ``load_pj`` and
        ``load_cycles``: the resident layers' one-time load, each layer's priced alone and
        summed, or with ``plan`` (the :class:`~sparsecim.sw.schedule.chip.ModelPlan` the
        figures come from) the exact load of them all at once
        (:func:`~sparsecim.sw.schedule.chip.load_phase`); ``area_mm2``, ``area_um2`` and
        ``notes``.
    """
    figures = list(figures)
    cache: dict = {}
    layers = []
    for fig in figures:
        key = (fig.layer.shape_key, fig.resident, fig.macros, fig.placement.group,
               fig.placement.acts, fig.placement.chunk, fig.decode_placement.group,
               fig.decode_placement.acts, fig.placement.row0)
        if key not in cache:
            cache[key] = layer_chip_energy(chip, fig, tech, counts)
        layers.append(cache[key])
    out = {"layers": layers}
    first = layers[0]["decode"]
    clock = chip.clock_mhz * 1e6
    for run in ("decode", "prefill"):
        tokens = [1 if run == "decode" else f.prefill_tokens for f in figures]
        comps = {}
        for name in CHIP_ENERGY_COMPONENTS:
            values = [lay[run]["energy_pj"][name] for lay in layers]
            comps[name] = (None if any(v is None for v in values)
                           else sum(v / t for v, t in zip(values, tokens, strict=True)))
        pj = sum(lay[run]["total_pj"] / t for lay, t in zip(layers, tokens, strict=True))
        macs = sum(lay[run]["cell_macs"] / t for lay, t in zip(layers, tokens, strict=True))
        cycles = sum(lay[run]["cycles"] / t for lay, t in zip(layers, tokens, strict=True))
        offchip = sum(lay[run]["offchip_bytes"] / t
                      for lay, t in zip(layers, tokens, strict=True))
        mm2 = first["area_mm2"]
        out[run] = {
            "pj_per_token": pj, "cycles_per_token": cycles,
            "tokens_per_s": clock / cycles if cycles else 0.0,
            "tops_per_w": 2 * macs / (pj * 1e-12) / 1e12 if pj else 0.0,
            "tops_per_mm2": (2 * macs / (cycles / clock) / mm2 / 1e12
                             if mm2 and cycles else None),
            "offchip_bytes_per_token": offchip, "components_pj": comps,
        }
    out["load_pj"] = sum(lay["load_pj"] for lay in layers)
    out["load_cycles"] = sum(f.load_cycles for f in figures)
    if plan is not None:
        out["load_pj"], out["load_cycles"] = _model_load(chip, plan, tech, counts)
    out.update(area_mm2=first["area_mm2"], area_um2=first["area_um2"],
               peak_tops_per_mm2=first["peak_tops_per_mm2"], tech=tech.name,
               notes=first["notes"])
    return out
