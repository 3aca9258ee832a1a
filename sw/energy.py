"""Energy and area of a macro from exact event counts and a sourced technology file.

A technology file (TOML; ``sw/tech/22nm.toml`` by default, ``45nm`` packaged too, any path with
``--tech FILE``) gives per-event energies (fJ) and per-cell areas (µm²), each value with its
source. :func:`load_tech` validates it: a missing, unknown, negative or unsourced value is a
``ValueError`` naming the key.

:func:`energy_breakdown` charges the events of :mod:`sparsecim.sw.events` to components; every
rule is a line below, so the model can be read and checked:

============== =================================================================================
component      energy
============== =================================================================================
cell array     ``macs × mul_8x8 × (w·a)/64`` + adder-tree bits × ``add_per_bit`` + weight bits
               written × ``reg_per_bit`` (the cells are registers)
distribution   routed words × ``act_bits × log2(modes)`` 2:1 muxes + in-cell selects ×
               ``act_bits × meta_bits`` 2:1 muxes, × ``mux2_per_bit``
merge          merge additions × ``pass_sum_bits × add_per_bit`` (upper bound on the width)
buffers        activation bits written × ``sram_write_per_bit`` + read × ``sram_read_per_bit``
accumulators   values read × ``acc_bits × sram_read_per_bit``; written × ``acc_bits ×
               (sram_write_per_bit + add_per_bit)`` (every write passes the accumulate adder);
               MOVE requantizations × ``acc_bits × add_per_bit``
interconnect   the macro's stream bits in and out × ``reg_per_bit`` (chip interconnect:
               :mod:`sparsecim.sw.chip_energy`)
off-chip       not modelled at the macro level (the chip level prices it,
               :mod:`sparsecim.sw.chip_energy`): reported as None
leakage        ``leakage_mw_per_mm2 × area × cycles / clock`` (None without an area)
============== =================================================================================
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..hw.config import MacroConfig, ceil_log2, read_toml
from .area import COMPONENTS as AREA_COMPONENTS
from .area import CellCounts
from .events import Events

__all__ = ["Tech", "load_tech", "TECH_KEYS", "ENERGY_COMPONENTS", "NOT_MODELLED",
           "cell_area_um2", "area_breakdown", "energy_breakdown", "MacroEnergy", "evaluate",
           "layer_energy", "total_energy", "plot_energy_stack"]

#: Every value a technology file must give, by section.
TECH_KEYS = {
    "operating": ("clock_mhz", "leakage_mw_per_mm2"),
    "energy_fj": ("mul_8x8", "add_per_bit", "reg_per_bit", "mux2_per_bit",
                  "sram_read_per_bit", "sram_write_per_bit", "dram_per_bit",
                  "wire_per_bit_mm"),
    # The chip's global buffer (sparsecim.sw.chip_energy): SRAM energies per bit at two sizes,
    # interpolated log-log between them by the buffer's size.
    "global_buffer": ("small_bytes", "small_read_per_bit", "small_write_per_bit",
                      "large_bytes", "large_read_per_bit", "large_write_per_bit"),
    "area_um2": ("inv", "nand2", "nor2", "and2", "or2", "xor2", "xnor2", "mux2", "dff",
                 "sram_bit"),
}

#: Energy components in report order.
ENERGY_COMPONENTS = ("cell array", "distribution", "merge", "buffers", "accumulators",
                     "interconnect", "off-chip memory", "leakage")

#: What the macro level does not model, and why (shown beside the figures).
NOT_MODELLED = ("off-chip memory and chip interconnect are not modelled at the macro level: "
                "the chip level prices them (issue 12, sparsecim.sw.chip_energy)")

_PACKAGED = ("22nm", "45nm")


@dataclass(frozen=True)
class Tech:
    """A validated technology file: ``values[section][key]`` and ``sources[section][key]``."""
    name: str
    node_nm: float
    values: dict
    sources: dict
    path: str

    def __getitem__(self, dotted: str) -> float:
        section, key = dotted.split(".")
        return self.values[section][key]


def load_tech(spec: str | Path = "22nm") -> Tech:
    """Load and validate a technology file: a packaged name (``22nm``, ``45nm``) or a path.

    Raises
    ------
    ValueError
        One line naming the file and the offending key: a missing section or value, an unknown
        key, a value that is not a non-negative number, or one without a ``source``; or a file
        that is not TOML or does not exist.
    """
    if str(spec) in _PACKAGED:
        path = Path(str(resources.files("sparsecim.sw.tech") / f"{spec}.toml"))
    else:
        path = Path(spec)
    label = path.name
    if not path.exists():
        # Not found: say which names are packaged (the likelier mistake is a misspelt name).
        raise ValueError(f"technology file {str(spec)!r} does not exist; packaged are "
                         f"{', '.join(_PACKAGED)}")
    raw = read_toml(path, what="technology file")
    if raw.get("format") != 1:
        raise ValueError(f"{label}: format must be 1, not {raw.get('format')!r}")
    values, sources = {}, {}
    for section, keys in TECH_KEYS.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise ValueError(f"{label}: section [{section}] is missing")
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ValueError(f"{label}: {section}.{unknown[0]} is not a known key; known are "
                             f"{', '.join(keys)}")
        values[section], sources[section] = {}, {}
        for key in keys:
            name = f"{section}.{key}"
            if key not in table:
                raise ValueError(f"{label}: {name} is missing")
            entry = table[key]
            if not isinstance(entry, dict) or "value" not in entry:
                raise ValueError(f"{label}: {name} must be a table "
                                 "{ value = ..., source = \"...\" }, "
                                 f"not {entry!r}")
            value = entry["value"]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{label}: {name} must be a non-negative number, not {value!r}")
            source = entry.get("source")
            if not isinstance(source, str) or not source.strip():
                raise ValueError(f"{label}: {name} must state its source")
            values[section][key] = float(value)
            sources[section][key] = source
    gb = values["global_buffer"]
    if not 0 < gb["small_bytes"] < gb["large_bytes"]:
        raise ValueError(f"{label}: global_buffer.large_bytes must be above small_bytes "
                         f"({gb['small_bytes']:g}) and that above 0, not {gb['large_bytes']:g}")
    return Tech(str(raw.get("name", path.stem)), float(raw.get("node_nm", 0)), values, sources,
                str(path))


# Yosys generic cells as sums of the technology file's cells: two-input gates with an inverted
# input are the gate plus an inverter; flip-flops with an enable add a 2:1 mux, with a
# synchronous reset an AND gate (the Nangate library has neither kind of flip-flop).
_GATES = {
    "$_NOT_": {"inv": 1}, "$_BUF_": {}, "$_AND_": {"and2": 1}, "$_NAND_": {"nand2": 1},
    "$_OR_": {"or2": 1}, "$_NOR_": {"nor2": 1}, "$_XOR_": {"xor2": 1}, "$_XNOR_": {"xnor2": 1},
    "$_ANDNOT_": {"and2": 1, "inv": 1}, "$_ORNOT_": {"or2": 1, "inv": 1}, "$_MUX_": {"mux2": 1},
}


def _cell_parts(kind: str) -> dict:
    if kind in _GATES:
        return _GATES[kind]
    # Flip-flops: $_DFF_P_, $_DFFE_PP_, $_SDFF_PP0_, $_SDFFE_PP0P_, $_SDFFCE_..., $_DFF_PP0_ …
    body = kind.strip("$_")
    if body.startswith(("DFF", "SDFF")):
        parts = Counter({"dff": 1})
        head = body.split("_")[0]
        if "E" in head[head.index("DFF") + 3:]:
            parts["mux2"] += 1
        if head.startswith("S"):
            parts["and2"] += 1
        return dict(parts)
    raise ValueError(f"no area for Yosys cell type {kind!r}")


def cell_area_um2(kind: str, tech: Tech) -> float:
    """Area of one Yosys generic cell of type ``kind`` (e.g. ``$_NAND_``) in ``tech``."""
    return sum(n * tech.values["area_um2"][part] for part, n in _cell_parts(kind).items())


def area_breakdown(counts: CellCounts, tech: Tech) -> dict[str, float]:
    """Area in µm² by component (:data:`sparsecim.sw.area.COMPONENTS` order): generic cells
    priced by :func:`cell_area_um2`, memory bits by ``sram_bit``."""
    out = {}
    for comp in AREA_COMPONENTS:
        um2 = sum(n * cell_area_um2(kind, tech) for kind, n in counts.cells.get(comp, {}).items())
        um2 += counts.memory_bits.get(comp, 0) * tech.values["area_um2"]["sram_bit"]
        out[comp] = um2
    return out


def _tree_bits(rows: int, leaf_bits: int) -> int:
    """Adder bits of one column's balanced tree over ``rows`` leaves of ``leaf_bits`` bits
    (each level one bit wider)."""
    total, width = 0, leaf_bits
    while rows > 1:
        pairs = rows // 2
        total += pairs * (width + 1)
        rows -= pairs
        width += 1
    return total


def energy_breakdown(cfg: MacroConfig, ev: Events, tech: Tech,
                     area_um2: float | None = None) -> dict[str, float | None]:
    """Energy in fJ by component (:data:`ENERGY_COMPONENTS`) for events ``ev`` on ``cfg``;
    the rules are the module docstring's table. ``off-chip memory`` is None (not modelled);
    ``leakage`` is None when ``area_um2`` is None."""
    e = tech.values["energy_fj"]
    op = tech.values["operating"]
    mul = e["mul_8x8"] * cfg.weight_bits * cfg.act_bits / 64
    tree_bits_per_add = (_tree_bits(cfg.rows, cfg.product_bits) / (cfg.rows - 1)
                         if cfg.rows > 1 else 0)
    cells = (ev.macs * mul + ev.tree_adds * tree_bits_per_add * e["add_per_bit"]
             + ev.weight_bits_written * e["reg_per_bit"])
    dist = e["mux2_per_bit"] * cfg.act_bits * (ev.dist_words * ceil_log2(len(cfg.modes))
                                               + ev.cell_selects * cfg.meta_bits)
    merge = ev.merge_adds * cfg.pass_sum_bits * e["add_per_bit"]
    buffers = (ev.act_bits_written * e["sram_write_per_bit"]
               + ev.act_bits_read * e["sram_read_per_bit"])
    accs = cfg.acc_bits * (ev.acc_reads * e["sram_read_per_bit"]
                           + ev.acc_writes * (e["sram_write_per_bit"] + e["add_per_bit"])
                           + ev.requants * e["add_per_bit"])
    link = (ev.bits_in + ev.bits_out) * e["reg_per_bit"]
    leakage = None
    if area_um2 is not None:
        seconds = ev.cycles / (op["clock_mhz"] * 1e6)
        leakage = op["leakage_mw_per_mm2"] * 1e-3 * (area_um2 * 1e-6) * seconds * 1e15
    return dict(zip(ENERGY_COMPONENTS,
                    (cells, dist, merge, buffers, accs, link, None, leakage), strict=True))


@dataclass
class MacroEnergy:
    """Energy and area figures of a run on one macro.

    Attributes
    ----------
    energy_pj : dict
        Energy by component (:data:`ENERGY_COMPONENTS`), pJ; None where not modelled.
    total_pj : float
        Sum of the modelled components.
    macs, cycles : int
        Cell MACs executed and cycles (from the events).
    tops_per_w : float
        ``2 × macs / total energy`` (a MAC is two operations; every cell's MAC counts, as the
        array executes it).
    area_um2 : dict or None
        Area by component (µm²), None if the config's cell counts are not recorded.
    area_mm2, tops_per_mm2, peak_tops_per_mm2 : float or None
        Total area; achieved ``2 × macs / (cycles / clock) / area``; peak ``2 × cells × clock
        / area``.
    notes : list of str
        What is not modelled, and why.
    """
    energy_pj: dict
    total_pj: float
    macs: int
    cycles: int
    tops_per_w: float
    area_um2: dict | None
    area_mm2: float | None
    tops_per_mm2: float | None
    peak_tops_per_mm2: float | None
    tech: str
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def evaluate(cfg: MacroConfig, ev: Events, tech: Tech,
             counts: CellCounts | None = None) -> MacroEnergy:
    """Energy, TOPS/W and (with ``counts``) area and TOPS/mm² of events ``ev`` on ``cfg``."""
    area = area_breakdown(counts, tech) if counts is not None else None
    area_total = sum(area.values()) if area is not None else None
    fj = energy_breakdown(cfg, ev, tech, area_total)
    pj = {k: (v / 1000 if v is not None else None) for k, v in fj.items()}
    total = sum(v for v in pj.values() if v is not None)
    notes = [NOT_MODELLED]
    if area is None:
        notes.append(f"no recorded cell counts for {cfg.slug} (run `make area` or "
                     "`python -m sparsecim.sw.area`): no area, TOPS/mm2 or leakage")
    clock = tech.values["operating"]["clock_mhz"] * 1e6
    tops_mm2 = peak = None
    if area_total:
        mm2 = area_total * 1e-6
        if ev.cycles:
            tops_mm2 = 2 * ev.macs / (ev.cycles / clock) / mm2 / 1e12
        peak = 2 * cfg.cells * clock / mm2 / 1e12
    return MacroEnergy(
        energy_pj=pj, total_pj=total, macs=ev.macs, cycles=ev.cycles,
        tops_per_w=(2 * ev.macs / (total * 1e-12) / 1e12) if total else 0.0,
        area_um2=area, area_mm2=area_total * 1e-6 if area_total is not None else None,
        tops_per_mm2=tops_mm2, peak_tops_per_mm2=peak, tech=tech.name, notes=notes)


def layer_energy(cfg: MacroConfig, ev: Events, tech: Tech, counts: CellCounts | None,
                 tokens: int) -> dict:
    """JSON-ready energy figures of one layer's trace (``tokens`` tokens): the run report's
    ``energy`` of a layer. ``pj_per_token`` is the whole trace's energy (weight loading
    included) over its tokens: decode with one token, prefill with many."""
    figures = evaluate(cfg, ev, tech, counts)
    return {
        "tech": tech.name, "clock_mhz": tech.values["operating"]["clock_mhz"],
        "total_pj": figures.total_pj, "pj_per_token": figures.total_pj / tokens,
        "tops_per_w": figures.tops_per_w,
        "cell_macs": figures.macs, "cycles": figures.cycles,
        "components_pj": figures.energy_pj, "area_mm2": figures.area_mm2,
        "area_um2": figures.area_um2, "tops_per_mm2": figures.tops_per_mm2,
        "peak_tops_per_mm2": figures.peak_tops_per_mm2,
        "events": ev.as_dict(),
        "notes": figures.notes,
    }


def total_energy(layers: list[dict]) -> dict:
    """Sum of :func:`layer_energy` figures over a model's layers (all on one macro): energy
    by component, pJ per token (the layers' sum), TOPS/W over every cell MAC, TOPS/mm²
    over every cycle; area and notes of the macro (the first layer's)."""
    components = {}
    for name in ENERGY_COMPONENTS:
        values = [layer["components_pj"][name] for layer in layers]
        components[name] = (None if any(v is None for v in values) else sum(values))
    total = sum(layer["total_pj"] for layer in layers)
    macs = sum(layer["cell_macs"] for layer in layers)
    cycles = sum(layer["cycles"] for layer in layers)
    first = layers[0]
    tops_mm2 = None
    if first["area_mm2"] and cycles:
        seconds = cycles / (first["clock_mhz"] * 1e6)
        tops_mm2 = 2 * macs / seconds / first["area_mm2"] / 1e12
    return {
        "tech": first["tech"], "clock_mhz": first["clock_mhz"], "total_pj": total,
        "pj_per_token": sum(layer["pj_per_token"] for layer in layers),
        "tops_per_w": 2 * macs / (total * 1e-12) / 1e12 if total else 0.0,
        "cell_macs": macs, "cycles": cycles, "components_pj": components,
        "area_mm2": first["area_mm2"], "area_um2": first["area_um2"],
        "tops_per_mm2": tops_mm2, "peak_tops_per_mm2": first["peak_tops_per_mm2"],
        "notes": first["notes"],
    }


def plot_energy_stack(ax, energies: list[dict], x, components=ENERGY_COMPONENTS) -> None:
    """Stacked bars of ``components_pj`` per token (``pj_per_token / total_pj`` scales them),
    one bar per entry of ``energies`` at positions ``x``, in the order of ``components``
    (default: the macro's; the chip's are :data:`~sparsecim.sw.chip_energy.
    CHIP_ENERGY_COMPONENTS`); components not modelled (None) are named in the legend
    instead."""
    bottom = [0.0] * len(energies)
    missing = []
    for name in components:
        values = [e["components_pj"][name] for e in energies]
        if any(v is None for v in values):
            missing.append(name)
            continue
        scaled = [v * e["pj_per_token"] / e["total_pj"] if e["total_pj"] else 0.0
                  for v, e in zip(values, energies, strict=True)]
        ax.bar(x, scaled, 0.6, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, scaled, strict=True)]
    if missing:
        ax.plot([], [], " ", label="not modelled: " + ", ".join(missing))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
