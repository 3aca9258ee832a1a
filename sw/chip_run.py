"""Whole-model figures on a chip: the linears placed on K macros, the attention costed apart.

A chip run (``sparsecim run --chip NAME``) takes the layers of a model (:class:`LayerSpec`:
shape, N:M pattern or Monarch blocks, how many identical copies), places every copy on the
chip with the chip scheduler (:func:`sparsecim.sw.schedule.chip.plan_chip`, resident or
streamed by capacity) and prices each with its exact figures
(:func:`sparsecim.sw.schedule.chip.model_figures`: the chip cycle model on the scheduler's own
commands). Nothing here computes a cycle of a linear: this module only adds the figures up.

What it adds:

- **Rows** (:class:`ChipRow`): the copies of one spec in one regime, their figures totalled.
- **Attention** (:class:`AttentionCost`): the score and context products (activation ×
  activation) and the KV cache are *costed on a named unit*, not mapped onto the macros
  (a CIM cell holds a weight written once; K/V change every token). The unit
  (:func:`attention_unit`) is a digital INT8 MAC array beside the global buffer; its
  throughput is stated in every report (default: one macro's cells, MACs per cycle). MACs per
  token come from the model's shape table (:meth:`~sparsecim.sw.model_shapes.ModelShape.
  attention_macs`, every token attending to a context of ``T`` positions: exact for an
  encoder and for the decode step after a ``T``-token prompt, an upper bound for a causal
  prefill). The KV cache (K and V, ``act_bits`` each, all blocks) stays in the global buffer
  if it takes at most half of it, else it lives off chip, and then a decode token reads the
  whole cache through the off-chip port (shared with the weights) and a prefill token writes
  and reads its own K/V once. The unit's cycles are ``max(MACs / throughput, off-chip bytes /
  weight_bw)``; softmax, scaling and norms are not counted. A model without attention
  (synthetic layers) says so.
- **The model** (:class:`ChipResult`): cycles per token of decode and of a ``T``-token prefill
  (layers one after the other, as a token's layers depend on each other, plus the attention),
  tokens/s at the chip's clock, off-chip bytes per token, the one-time load of the resident
  layers (apart), the macros needed to hold the whole model resident, cell utilisation and
  the bound.

Roofline terms (:func:`roofline`): a layer's operational intensity is its MACs per off-chip
byte (weights and metadata as the weight rows carry them); the compute roof is ``K × cells``
MACs per cycle and the bandwidth roof ``weight_bw`` bytes per cycle times the intensity. A
resident layer moves no weight byte per token: its intensity is infinite (drawn at the right
edge).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..hw.config import ChipConfig
from ..hw.pattern import as_pattern
from .model_shapes import AttentionShape, ModelShape
from .schedule.chip import ChipLayer, load_phase, model_figures, place_model

if TYPE_CHECKING:
    from .energy import Tech

__all__ = ["LayerSpec", "ChipRow", "AttentionUnit", "AttentionCost", "ChipResult",
           "attention_unit", "attention_cost", "shape_specs", "kv_features", "chip_run",
           "roofline", "STACK"]

#: Components of the stacked cycles per layer, in drawing order (:attr:`ChipRow.stack`).
STACK = ("fetch", "weight load", "activation load", "compute", "read")


@dataclass(frozen=True)
class LayerSpec:
    """A layer of the model as the chip run sees it.

    Attributes
    ----------
    name : str
        ``blocks.0.q`` for a linear, ``q`` for a shape table's row.
    k, n : int
        Inputs and outputs.
    pattern : tuple of (int, int)
        The stored pattern (``(1, 1)``: dense, or an N:M run densely by a linear mapping).
    copies : int
        Identical layers this spec stands for (a table row's count per block times blocks).
    label : str
        The structure for the report (``"2:4"``, ``"dense"``, ``"monarch 24x24"``).
    mapping : str
        ``nm``, ``linear`` or ``monarch-*``.
    monarch : tuple of (int, int) or None
        ``(blocks, block)`` of a rank-1 Monarch layer: it runs as its two block-diagonal
        factors, ``2 × blocks`` dense ``block × block`` products, each placed as a layer of
        its own (blocks on separate macros, the latency-optimized layout); the middle
        transpose and requantization are not priced.
    """
    name: str
    k: int
    n: int
    pattern: tuple = (1, 1)
    copies: int = 1
    label: str = ""
    mapping: str = "nm"
    monarch: tuple | None = None

    def parts(self) -> list[tuple[str, int, int, tuple]]:
        """``(suffix, k, n, pattern)`` of the chip layers one copy runs as."""
        if self.monarch is None:
            return [("", self.k, self.n, tuple(self.pattern))]
        blocks, block = self.monarch
        return [(f".{side}{b}", block, block, (1, 1)) for side in "rl" for b in range(blocks)]

    @property
    def macs_per_token(self) -> int:
        """MACs one token takes through one copy, with the kept weights."""
        if self.monarch is not None:
            blocks, block = self.monarch
            return 2 * blocks * block * block
        n, m = self.pattern
        return self.n * (-(-self.k // m)) * n


@dataclass
class ChipRow:
    """The copies of one :class:`LayerSpec` that share a regime, with their figures totalled
    (a Monarch copy whose block products land in both regimes appears in both rows, each
    with its parts).

    Cycle, byte and MAC figures are totals over ``copies`` (per token where so named);
    ``utilization`` and ``bound`` are those of one copy (all are priced alike).

    Attributes
    ----------
    name, label, mapping : str
    k, n, copies : int
    regime : str
        ``resident`` (weights loaded once) or ``streamed`` (fetched for every token / chunk).
    macros : int
        Resident: the distinct macros all the row's copies occupy (small layers may share
        a macro on disjoint rows). Streamed: the most macros of the pool one copy uses.
    tiles : int
        Tiles of one copy (one macro each would hold it resident, unshared).
    load_cycles, load_bytes : int
        The one-time load of resident copies (0 when streamed).
    decode_cycles : int
        Cycles of one decode token.
    prefill_cycles : float
        Cycles per token of a ``tokens``-token prefill.
    decode_bytes, prefill_bytes : float
        Off-chip weight bytes per token (rows as the weight port carries them: weights and
        metadata).
    macs_per_token : int
    utilization : float
        Cell utilisation: kept weights over the cells of the tiles.
    bound, prefill_bound : str
        ``bandwidth`` or ``compute``.
    stack, prefill_stack : dict
        Cycles per token by :data:`STACK` component (see :func:`_stack`).
    decode_pj, prefill_pj : float or None
        Energy per token of the row's copies (:func:`~sparsecim.sw.chip_energy.
        layer_chip_energy`, summed; the resident load not in it); None without a ``tech``.
    load_pj : float
        The one-time load of the resident copies, each priced alone (0 when streamed).
    energy_stack, prefill_energy_stack : dict
        pJ per token by :data:`~sparsecim.sw.chip_energy.CHIP_ENERGY_COMPONENTS` (a
        component is None when not modelled: no macro area).
    """
    name: str
    label: str
    mapping: str
    k: int
    n: int
    copies: int
    regime: str
    macros: int
    tiles: int
    load_cycles: int
    load_bytes: int
    decode_cycles: int
    prefill_cycles: float
    decode_bytes: float
    prefill_bytes: float
    macs_per_token: int
    utilization: float
    bound: str
    prefill_bound: str
    stack: dict = field(default_factory=dict)
    prefill_stack: dict = field(default_factory=dict)
    decode_pj: float | None = None
    prefill_pj: float | None = None
    load_pj: float = 0.0
    energy_stack: dict = field(default_factory=dict)
    prefill_energy_stack: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _stack(counters: dict, tokens: int, macros: int) -> dict:
    """Cycles per token by component (:data:`STACK`), from a run's chip counters and its
    macros' summed counters (``counters["macro"]``): *fetch* and *compute* are the macros'
    mean command-fetch and compute cycles; *weight load* the weight port's cycles, a row
    moving (``w_load``) or the port waiting for off-chip bandwidth credit (``bw_stall``);
    *activation load* and *read* the activation and result ports' (``a_load``, ``read``).
    The components overlap in time (loads into some macros run under compute in others), so
    they may add up to more or less than the total."""
    macro = counters.get("macro", {})
    share = max(macros, 1) * tokens
    return {
        "fetch": macro.get("fetch", 0) / share,
        "weight load": (counters["w_load"] + counters["bw_stall"]) / tokens,
        "activation load": counters["a_load"] / tokens,
        "compute": macro.get("compute", 0) / share,
        "read": counters["read"] / tokens,
    }


@dataclass(frozen=True)
class AttentionUnit:
    """The unit the attention products run on: ``name`` and its ``macs_per_cycle`` (INT8)."""
    name: str
    macs_per_cycle: int
    note: str


def attention_unit(chip: ChipConfig, macs_per_cycle: int = 0) -> AttentionUnit:
    """The attention unit of ``chip``: a digital INT8 MAC array of ``macs_per_cycle`` MACs a
    cycle (0: one macro's cells, the throughput of one macro, e.g. 4096 on ``flexcim``).

    Raises
    ------
    ValueError
        If ``macs_per_cycle`` is negative.
    """
    if not isinstance(macs_per_cycle, int) or macs_per_cycle < 0:
        raise ValueError(f"attention_macs must be a non-negative integer, not "
                         f"{macs_per_cycle!r}")
    rate = macs_per_cycle or chip.macro.cells
    default = "" if macs_per_cycle else " (default: one macro's cells)"
    return AttentionUnit("attention unit (digital INT8 MAC array beside the global buffer)",
                         rate, f"{rate} MACs/cycle{default}")


@dataclass(frozen=True)
class AttentionCost:
    """The attention of a model on :class:`AttentionUnit` at context ``context``.

    Attributes
    ----------
    unit : AttentionUnit
    context : int
        Positions every token attends to (the run's tokens).
    decode_macs, prefill_macs : int
        MACs per token (score and context products of every head and block).
    kv_bytes_per_token : int
        K and V one token adds to the cache (all blocks).
    kv_cache_bytes : int
        The cache at ``context`` tokens.
    kv_place : str
        ``global buffer`` or ``off-chip memory``.
    decode_bytes, prefill_bytes : int
        Off-chip bytes per token for the KV cache.
    decode_cycles, prefill_cycles : int
        Unit cycles per token.
    """
    unit: AttentionUnit
    context: int
    decode_macs: int
    prefill_macs: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    kv_place: str
    decode_bytes: int
    prefill_bytes: int
    decode_cycles: int
    prefill_cycles: int

    def as_dict(self) -> dict:
        return asdict(self)


def kv_features(shape: ModelShape, blocks: int | None = None) -> int:
    """K and V features one token adds per position: the outputs of the ``k`` and ``v``
    linears (cross-attention ones excluded), summed over the blocks (the first ``blocks``)."""
    total = 0
    for lin in shape.linears:
        if re.fullmatch(r"(.*\.)?[kv]", lin.name):
            total += lin.outputs * lin.count * (lin.blocks if blocks is None
                                                else min(blocks, lin.blocks))
    return total


def attention_cost(chip: ChipConfig, attention: Sequence[AttentionShape], kv: int,
                   context: int, unit: AttentionUnit) -> AttentionCost:
    """Cost the attention (see the module docstring) of ``attention`` (shapes with their
    blocks) with ``kv`` K/V features per token, at ``context`` positions, on ``unit``.

    Raises
    ------
    ValueError
        If ``context`` is not a positive integer.
    """
    if not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive integer, not {context!r}")
    act = -(-chip.macro.act_bits // 8)
    macs = sum(att.macs(context) for att in attention)
    kv_token = kv * act
    cache = kv_token * context
    on_chip = cache <= chip.buffer_bytes // 2
    decode_bytes = 0 if on_chip else cache + kv_token
    prefill_bytes = 0 if on_chip else 2 * kv_token

    def cycles(offchip: int) -> int:
        return max(-(-macs // unit.macs_per_cycle), -(-offchip // chip.weight_bw))

    return AttentionCost(unit=unit, context=context, decode_macs=macs, prefill_macs=macs,
                         kv_bytes_per_token=kv_token, kv_cache_bytes=cache,
                         kv_place="global buffer" if on_chip else "off-chip memory",
                         decode_bytes=decode_bytes, prefill_bytes=prefill_bytes,
                         decode_cycles=cycles(decode_bytes),
                         prefill_cycles=cycles(prefill_bytes))


def shape_specs(shape: ModelShape, block_patterns: Sequence, *, linear: bool = False
                ) -> list[LayerSpec]:
    """The layer specs of a shape table with one pattern per block.

    Parameters
    ----------
    shape : ModelShape
    block_patterns : sequence
        One pattern per block (``"2:4"``, ``(2, 4)``, ``"dense"``), as many as the table's
        most blocks; rows of fewer blocks take the first ones. Blocks of the same pattern
        make one spec per row.
    linear : bool
        Store every layer dense (the ``linear`` mapping runs the pattern's zeros).

    Raises
    ------
    ValueError
        If the count of patterns is not the table's blocks, or a pattern is malformed.
    """
    blocks = max(lin.blocks for lin in shape.linears)
    if len(block_patterns) != blocks:
        raise ValueError(f"block patterns must be one per block ({blocks}), not "
                         f"{len(block_patterns)}")
    patterns = [tuple(as_pattern(p)) for p in block_patterns]
    specs = []
    for lin in shape.linears:
        counts: dict[tuple, int] = {}
        for b in range(lin.blocks):
            counts[patterns[b]] = counts.get(patterns[b], 0) + lin.count
        for pattern, copies in counts.items():
            label = "dense" if pattern == (1, 1) else f"{pattern[0]}:{pattern[1]}"
            stored = (1, 1) if linear else pattern
            specs.append(LayerSpec(lin.name, lin.inputs, lin.outputs, stored, copies, label,
                                   "linear" if linear or pattern == (1, 1) else "nm"))
    return specs


@dataclass
class ChipResult:
    """A model on a chip: rows, attention, totals (:func:`chip_run`).

    Attributes
    ----------
    chip : ChipConfig
    chip_name : str
    tokens : int
        The prefill length T (and the decode context).
    rows : list of ChipRow
    attention : AttentionCost or None
    attention_note : str
        What was done with the attention (costed on which unit, or why there is none).
    summary : dict
        See :func:`_summary`.
    energy : dict or None
        The model's energy and area (:func:`~sparsecim.sw.chip_energy.model_chip_energy` on
        the run's own figures and plan, its per-layer ``layers`` left out: the rows carry
        them), of the linears only (the attention unit is not priced; a note says so); None
        when the run had no ``tech``.
    """
    chip: ChipConfig
    chip_name: str
    tokens: int
    rows: list
    attention: AttentionCost | None
    attention_note: str
    summary: dict
    energy: dict | None = None

    def as_dict(self) -> dict:
        return {"chip": self.chip.to_dict() | {"name": self.chip_name, "slug": self.chip.slug},
                "tokens": self.tokens, "summary": self.summary,
                "attention": None if self.attention is None else self.attention.as_dict(),
                "attention_note": self.attention_note, "energy": self.energy,
                "rows": [r.as_dict() for r in self.rows]}


def chip_run(chip: ChipConfig, specs: Sequence[LayerSpec], tokens: int, *,
             chip_name: str = "", attention: Sequence[AttentionShape] | None = None,
             kv: int = 0, attention_macs: int = 0, why_no_attention: str = "",
             tech: Tech | None = None) -> ChipResult:
    """Place every copy of ``specs`` on ``chip`` and total the figures.

    Parameters
    ----------
    chip : ChipConfig
    specs : sequence of LayerSpec
    tokens : int
        Prefill length T (decode is always one token, at context T).
    chip_name : str
        How the report names the chip (a preset name or a file).
    attention : sequence of AttentionShape, optional
        The model's attention; None (with ``why_no_attention``) when it has none or it is
        unknown.
    kv : int
        K/V features a token adds (:func:`kv_features`).
    attention_macs : int
        The attention unit's MACs per cycle (0: default of :func:`attention_unit`).
    tech : Tech, optional
        Price the run (:attr:`ChipResult.energy`, the rows' pJ) with this technology; the
        macro's area from its recorded cell counts (none recorded: said in the notes).

    Raises
    ------
    ValueError
        If ``specs`` is empty, ``tokens`` is not positive, or the chip's macro does not run a
        layer's pattern (the message names the layer).
    """
    specs = list(specs)
    if not specs:
        raise ValueError("a chip run needs at least one layer")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    cfg = chip.macro
    layers, owner = [], []
    for index, spec in enumerate(specs):
        for suffix, k, n, pattern in spec.parts():
            if not cfg.supports(*pattern):
                raise ValueError(f"layer {spec.name}: pattern {pattern[0]}:{pattern[1]} is not "
                                 f"supported by the chip's macro; supported are dense and "
                                 f"{cfg.pattern_names() or 'nothing else'}")
            for copy in range(spec.copies):
                layers.append(ChipLayer(f"{spec.name}#{copy}{suffix}", k, n, pattern))
                owner.append((index, copy))
    plan = place_model(chip, layers, tokens)
    figures = model_figures(chip, layers, prefill_tokens=tokens, plan=plan)
    energy = None
    if tech is not None:
        from .chip_energy import model_chip_energy  # lazy: chip_energy imports sweep_model

        energy = model_chip_energy(chip, figures, tech, plan=plan)
    rows = _rows(specs, owner, figures, tokens,
                 energy["layers"] if energy is not None else [None] * len(figures))
    unit = attention_unit(chip, attention_macs)
    cost, note = None, why_no_attention or "none: the model has no attention products"
    if attention:
        cost = attention_cost(chip, attention, kv, tokens, unit)
        note = (f"costed on the {unit.name}, {unit.note}, context {tokens}; KV cache "
                f"{cost.kv_cache_bytes:,} B in the {cost.kv_place}")
    summary = _summary(chip, specs, rows, cost, figures, plan.pool[1])
    # The model's one-time load: every resident layer loaded in one go (the rows price each
    # alone, so their sum double-counts the start and end of each load phase).
    load = load_phase(plan)
    summary["load_cycles"] = load["total"] if load else 0
    summary["load_seconds"] = summary["load_cycles"] / (chip.clock_mhz * 1e6)
    summary["load_bytes"] = load["w_load"] * chip.weight_row_bytes if load else 0
    if energy is not None:
        energy = {k: v for k, v in energy.items() if k != "layers"}
        energy["notes"] = list(energy["notes"]) + [
            "linears only: the attention unit's energy is not priced"]
        if energy["area_mm2"] is None:
            energy["notes"].append("energies lack leakage and the interconnect's wires "
                                   "(no macro area)")
    return ChipResult(chip, chip_name or chip.slug, tokens, rows, cost, note, summary,
                      energy)


def _add_pj(a, b):
    return None if a is None or b is None else a + b


def _row_energy(priced) -> dict:
    """pJ fields of a :class:`ChipRow` from ``(LayerFigures, layer_chip_energy dict)`` of
    its layers (empty without energies)."""
    if any(e is None for _, e in priced):
        return {}
    out = {"decode_pj": sum(e["decode_pj_per_token"] for _, e in priced),
           "prefill_pj": sum(e["prefill_pj_per_token"] for _, e in priced),
           "load_pj": sum(e["load_pj"] for _, e in priced)}
    for key, run in (("energy_stack", "decode"), ("prefill_energy_stack", "prefill")):
        stack: dict = {}
        for fig, e in priced:
            tokens = 1 if run == "decode" else fig.prefill_tokens
            for name, value in e[run]["energy_pj"].items():
                stack[name] = _add_pj(stack.get(name, 0.0),
                                      None if value is None else value / tokens)
        out[key] = stack
    return out


def _rows(specs, owner, figures, tokens: int, energies) -> list[ChipRow]:
    """Group the priced chip layers by (spec, regime); a Monarch copy's parts add up
    (``energies``: each figure's :func:`layer_chip_energy`, or None)."""
    groups: dict[tuple, list] = {}
    lay_energy: dict[tuple, list] = {}
    for (index, copy), fig, lay in zip(owner, figures, energies, strict=True):
        groups.setdefault((index, fig.resident), []).append((copy, fig))
        lay_energy.setdefault((index, fig.resident), []).append((fig, lay))
    rows = []
    for (index, resident), items in groups.items():
        spec = specs[index]
        copies = len({copy for copy, _ in items})
        parts = len(spec.parts())

        def total(get, items=items):
            return sum(get(fig) for _, fig in items)

        first = items[0][1]
        stack, prefill_stack = {}, {}
        for _, fig in items:
            for key, value in _stack(fig.decode, 1, fig.macros).items():
                stack[key] = stack.get(key, 0.0) + value
            for key, value in _stack(fig.prefill, tokens, fig.macros).items():
                prefill_stack[key] = prefill_stack.get(key, 0.0) + value
        decode = total(lambda f: f.decode_cycles)
        bw = total(lambda f: f.decode_cycles if f.bound == "bandwidth" else 0)
        prefill = total(lambda f: f.prefill_cycles_per_token)
        pbw = total(lambda f: f.prefill_cycles_per_token if f.prefill_bound == "bandwidth"
                    else 0)
        rows.append(ChipRow(
            name=spec.name, label=spec.label or _label(spec.pattern), mapping=spec.mapping,
            k=spec.k, n=spec.n, copies=copies,
            regime="resident" if resident else "streamed",
            macros=(len(_macros(fig for _, fig in items)) if resident
                    else max(fig.macros for _, fig in items)),
            tiles=sum(len(fig.placement.mapping.tiles) for _, fig in items[:parts]),
            load_cycles=total(lambda f: f.load_cycles), load_bytes=total(lambda f: f.load_bytes),
            decode_cycles=decode, prefill_cycles=prefill,
            decode_bytes=total(lambda f: f.weight_bytes_per_token),
            prefill_bytes=total(lambda f: f.prefill_weight_bytes_per_token),
            macs_per_token=total(lambda f: f.placement.mapping.macs_per_token),
            utilization=first.utilization,
            bound="bandwidth" if 2 * bw > decode else "compute",
            prefill_bound="bandwidth" if 2 * pbw > prefill else "compute",
            stack=stack, prefill_stack=prefill_stack,
            **_row_energy(lay_energy[(index, resident)])))
    return rows


def _macros(figures) -> set:
    """The distinct macros ``figures``' placements occupy (small layers may share one)."""
    used = set()
    for fig in figures:
        used.update(range(fig.placement.base, fig.placement.base + fig.placement.macros))
    return used


def _label(pattern) -> str:
    return "dense" if tuple(pattern) == (1, 1) else f"{pattern[0]}:{pattern[1]}"


def _summary(chip: ChipConfig, specs, rows: list[ChipRow], attention: AttentionCost | None,
             figures, pool: int) -> dict:
    """Model totals: per token, decode and prefill; the one-time load apart."""
    hz = chip.clock_mhz * 1e6
    att_d = attention.decode_cycles if attention else 0
    att_p = attention.prefill_cycles if attention else 0
    decode = sum(r.decode_cycles for r in rows) + att_d
    prefill = sum(r.prefill_cycles for r in rows) + att_p
    decode_bytes = sum(r.decode_bytes for r in rows) + (attention.decode_bytes if attention
                                                        else 0)
    prefill_bytes = sum(r.prefill_bytes for r in rows) + (attention.prefill_bytes if attention
                                                          else 0)
    linear_macs = sum(r.macs_per_token for r in rows)
    att_macs = attention.decode_macs if attention else 0
    peak = chip.macros * chip.macro.cells
    tiles = sum(len(f.placement.mapping.tiles) for f in figures)
    slots = sum(f.placement.mapping.slots for f in figures)
    bw_d = sum(r.decode_cycles for r in rows if r.bound == "bandwidth")
    bw_p = sum(r.prefill_cycles for r in rows if r.prefill_bound == "bandwidth")
    streamed = [f for f in figures if not f.resident]
    return {
        "layers": sum(len(s.parts()) * s.copies for s in specs),
        "resident_layers": sum(f.resident for f in figures),
        "streamed_layers": len(streamed),
        "macros": chip.macros,
        "macros_to_hold": tiles,
        "fits": tiles <= chip.macros,
        "resident_macros": len(_macros(f for f in figures if f.resident)),
        "pool_macros": pool,
        "load_cycles": sum(r.load_cycles for r in rows),
        "load_bytes": sum(r.load_bytes for r in rows),
        "load_seconds": sum(r.load_cycles for r in rows) / hz,
        "decode_cycles": decode,
        "prefill_cycles": prefill,
        "decode_tokens_per_s": hz / decode,
        "prefill_tokens_per_s": hz / prefill,
        "decode_bytes": decode_bytes,
        "prefill_bytes": prefill_bytes,
        "linear_macs": linear_macs,
        "attention_macs": att_macs,
        "attention_decode_cycles": att_d,
        "attention_prefill_cycles": att_p,
        "utilization": slots / (tiles * chip.macro.cells),
        "decode_compute_utilization": linear_macs / (decode * peak),
        "prefill_compute_utilization": linear_macs / (prefill * peak),
        "decode_bound": "bandwidth" if 2 * bw_d > decode - att_d else "compute",
        "prefill_bound": "bandwidth" if 2 * bw_p > prefill - att_p else "compute",
        "decode_stack": {k: sum(r.stack[k] for r in rows) for k in STACK},
        "prefill_stack": {k: sum(r.prefill_stack[k] for r in rows) for k in STACK},
        "peak_macs_per_cycle": peak,
        "weight_bw": chip.weight_bw,
        "clock_mhz": chip.clock_mhz,
        "weight_bytes": sum(f.placement.mapping.weight_bytes for f in figures),
        "meta_bytes": sum(f.placement.mapping.meta_bytes for f in figures),
        "offchip_fits": (sum(f.placement.mapping.weight_bytes + f.placement.mapping.meta_bytes
                             for f in figures) <= chip.offchip_bytes),
    }


def roofline(chip: ChipConfig, row: ChipRow, *, prefill: bool = False) -> dict:
    """A row's point on the roofline: ``intensity`` (MACs per off-chip byte; ``inf`` when it
    moves none), ``achieved`` MACs per cycle, and the ``roof`` at that intensity
    (``min(K × cells, weight_bw × intensity)``)."""
    cycles = row.prefill_cycles if prefill else row.decode_cycles
    traffic = row.prefill_bytes if prefill else row.decode_bytes
    intensity = row.macs_per_token / traffic if traffic else math.inf
    peak = chip.macros * chip.macro.cells
    return {"intensity": intensity, "achieved": row.macs_per_token / cycles,
            "roof": min(peak, chip.weight_bw * intensity)}
