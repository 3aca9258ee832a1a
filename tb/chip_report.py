"""The chip part of ``sparsecim run --chip``: the run's layers as chip specs, and the report.

:func:`chip_step` turns a run's layers (a layer-shape table's rows, or the records of the
layers that ran) into :class:`~sparsecim.sw.chip_run.LayerSpec` and hands them to
:func:`~sparsecim.sw.chip_run.chip_run` with the model's attention; the figures are all
computed there (and in the chip scheduler). Here they are written out, as
:mod:`sparsecim.tb.report` writes a macro run's:

- ``chip.json``: the chip, the totals, the attention and every row;
- ``chip.csv``: one row per (layer, regime), the columns of :data:`CHIP_CSV_COLUMNS`;
- ``chip.md``: the chip, the totals, the attention line, the table and the plots;
- ``roofline.png``: each row's operational intensity (MACs per off-chip byte) against the
  chip's compute roof (K × cells MACs/cycle) and bandwidth roof (``weight_bw`` × intensity);
- ``chip_cycles.png``: stacked cycles per token per row (fetch / weight load / activation
  load / compute / read), decode and prefill side by side;
- ``chip_energy.png``: stacked decode pJ per token per row by chip energy component
  (:data:`~sparsecim.sw.chip_energy.CHIP_ENERGY_COMPONENTS`).

The energy figures are :func:`~sparsecim.sw.chip_energy.model_chip_energy` of the run's own
figures, priced with the run's technology file (``--tech``).
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from ..sw.chip_run import (
    STACK,
    ChipResult,
    LayerSpec,
    chip_run,
    kv_features,
    roofline,
    shape_specs,
)
from ..sw.markdown import cell, image, section, table_lines
from ..sw.model_shapes import MODELS as SHAPE_TABLES
from ..sw.model_shapes import AttentionShape

__all__ = ["chip_step", "record_specs", "chip_lines", "energy_lines", "write_chip_report",
           "chip_layer_rtl", "CHIP_CSV_COLUMNS"]

#: Columns of ``chip.csv``, in order.
CHIP_CSV_COLUMNS = ("name", "k", "n", "label", "mapping", "copies", "regime", "macros", "tiles",
                    "load_cycles", "load_bytes", "decode_cycles", "prefill_cycles",
                    "decode_bytes", "prefill_bytes", "macs_per_token", "utilization", "bound",
                    "prefill_bound", "decode_pj", "prefill_pj", "load_pj")


def record_specs(records) -> list[LayerSpec]:
    """Chip specs of a run's :class:`~sparsecim.tb.report.LayerRecord` rows (the layers that
    ran, or a shape table's rows with their ``copies``): shape, stored pattern (a ``linear``
    mapping stores the zeros), Monarch blocks from the ``monarch BxS`` label."""
    specs = []
    for r in records:
        monarch = re.fullmatch(r"monarch (\d+)x(\d+)", r.pattern)
        if monarch:
            specs.append(LayerSpec(r.name, r.in_features, r.out_features, (1, 1), r.copies,
                                   r.pattern, r.mapping,
                                   (int(monarch.group(1)), int(monarch.group(2)))))
            continue
        pattern = (1, 1) if r.pattern == "dense" else tuple(int(v) for v in
                                                            r.pattern.split(":"))
        stored = (1, 1) if r.mapping == "linear" else pattern
        specs.append(LayerSpec(r.name, r.in_features, r.out_features, stored, r.copies,
                               r.pattern, r.mapping))
    return specs


def _attention(settings, model):
    """``(attention shapes, kv features, why none)`` of the run's model."""
    from ..sw.pipeline import ShapeTable

    if isinstance(model, ShapeTable):
        shape = model.shape
        return shape.attention, kv_features(shape), ""
    if settings.model == "smollm2":
        shape = SHAPE_TABLES["smollm2-135m"]
        blocks = settings.blocks
    elif settings.model == "synthetic":
        return None, 0, "none: synthetic layers have no attention"
    else:
        shape, blocks = _checkpoint_shape(settings.model), settings.blocks
        if shape is None:
            return None, 0, ("not costed: the attention shape of this checkpoint is not known "
                             "(a Hugging Face folder's config.json gives it)")
    attention = [AttentionShape(a.name, a.heads, a.head_dim, a.count, min(blocks, a.blocks))
                 for a in shape.attention]
    return attention, kv_features(shape, blocks), ""


def _checkpoint_shape(path: str):
    from ..sw.models.hf import read_config, shape_table

    folder = Path(path)
    if not folder.is_dir():
        return None
    try:
        return shape_table(read_config(folder), folder.name)
    except ValueError:
        return None


def chip_step(settings, records) -> ChipResult:
    """The chip figures of a run (:class:`~sparsecim.tb.run.RunSettings` with a chip) whose
    layers are ``records``.

    Raises
    ------
    RunError
        For a layer the chip's macro cannot run (the message names it).
    """
    from ..sw.energy import load_tech
    from ..sw.pipeline import RunError, ShapeTable, resolve_model
    from ..sw.schedule import as_pattern

    chip = settings.chip_config()
    model = resolve_model(settings.model)
    if isinstance(model, ShapeTable):
        declared = "dense" if settings.sparsify == "dense" else settings.pattern
        blocks = max(lin.blocks for lin in model.shape.linears)
        specs = shape_specs(model.shape, [as_pattern(declared)] * blocks,
                            linear=settings.mapping == "linear")
    else:
        specs = record_specs(records)
    attention, kv, why = _attention(settings, model)
    try:
        return chip_run(chip, specs, settings.tokens,
                        chip_name=settings.chip or "from a [chip] table",
                        attention=attention, kv=kv, attention_macs=settings.attention_macs,
                        why_no_attention=why, tech=load_tech(settings.tech))
    except ValueError as exc:
        raise RunError(f"chip: {exc}") from None


def chip_layer_rtl(settings, name: str, mapped, folder: Path):
    """Run a layer of a chip run alone on the chip: its chip trace
    (:func:`~sparsecim.sw.schedule.chip.schedule_chip`, placed as
    :func:`~sparsecim.sw.schedule.chip.place_model` places it alone) on the chip golden model,
    whose assembled outputs must equal the layer's integer reference, then on the chip RTL
    (:func:`~sparsecim.tb.chip_cosim.run_chip_rtl`: results bit for bit, every chip and macro
    counter equal to the chip cycle model's). With ``rtl_sample`` K, only K output tiles'
    columns (seeded, as a macro run samples them) run, as one narrower layer.

    Returns
    -------
    RtlFigures
        ``cycles`` the chip RTL's ``total`` (equal to the chip cycle model's when ``match``),
        ``match`` the golden check and the RTL scoreboard together.
    """
    import numpy as np

    from ..sw.chip_golden import run_chip_trace
    from ..sw.pipeline import RtlFigures, sample_tiles
    from ..sw.schedule.chip import ChipLayer, schedule_chip
    from .chip_cosim import ChipPauses, run_chip_rtl

    chip = settings.chip_config()
    cfg = chip.macro
    x, w = mapped.operands
    columns = np.arange(w.shape[1])
    tiles = None
    if settings.rtl_sample and settings.rtl_sample < mapped.n_tiles:
        tiles = sample_tiles(settings.seed, name, mapped.n_tiles, settings.rtl_sample)
        columns = np.concatenate([np.arange(j * cfg.cols, min((j + 1) * cfg.cols, w.shape[1]))
                                  for j in tiles])
    pattern = (1, 1) if mapped.mapping == "linear" else tuple(mapped.pattern)
    schedule = schedule_chip(chip, [ChipLayer(name, w.shape[0], len(columns), pattern)], [x],
                             [w[:, columns]])
    golden = run_chip_trace(schedule.trace)
    (out,) = schedule.assemble(golden.results)
    golden_ok = bool(np.array_equal(out, mapped.expected[:, columns]))
    pause = settings.pause
    rtl = run_chip_rtl(schedule.trace, run_dir=folder, golden=golden,
                       pauses=ChipPauses(pause, pause, pause, pause))
    return RtlFigures(cycles=int(rtl.rtl_cycles), match=golden_ok and bool(rtl.passed),
                      run_dir=str(rtl.run_dir), coverage=len(columns) / w.shape[1],
                      tiles=tiles)


def _si(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def chip_lines(result: ChipResult) -> list[str]:
    """The terminal table and totals of a chip run (the CLI prints them); ``pJ/token`` is a
    row's decode energy (``-`` when the run was not priced)."""
    s, chip = result.summary, result.chip
    cfg = chip.macro
    lines = [f"  chip          {result.chip_name}: {chip.macros} x {cfg.submacros}x{cfg.rows}x"
             f"{cfg.cols} macros, {chip.clock_mhz:g} MHz, off-chip {chip.weight_bw} B/cycle "
             f"({_si(chip.weight_bw * chip.clock_mhz * 1e6, 'B/s')}), buffer "
             f"{chip.buffer_bytes:,} B ({chip.slug})",
             f"  {'layer':<16} {'out x in':>11} {'pattern':>9} {'regime':>9} {'macros':>6} "
             f"{'util':>6} {'decode cyc':>11} {'prefill cyc':>11} {'B/token':>11} "
             f"{'bound':>9} {'pJ/token':>10}"]
    for r in result.rows:
        name = r.name if r.copies == 1 else f"{r.name} x{r.copies}"
        macros = f"{r.macros}" if r.regime == "resident" else f"{r.macros}p"
        lines.append(f"  {name:<16} {f'{r.n}x{r.k}':>11} {r.label:>9} {r.regime:>9} "
                     f"{macros:>6} {r.utilization:>6.1%} {r.decode_cycles:>11,} "
                     f"{r.prefill_cycles:>11,.0f} {r.decode_bytes:>11,.0f} {r.bound:>9} "
                     f"{'-' if r.decode_pj is None else f'{r.decode_pj:.4g}':>10}")
    att = result.attention
    if att is not None:
        lines.append(f"  {'attention':<16} {'':>11} {'':>9} {'unit':>9} {'':>6} {'':>6} "
                     f"{att.decode_cycles:>11,} {att.prefill_cycles:>11,} "
                     f"{att.decode_bytes:>11,} {'':>9}")
    lines += [
        f"  attention     {result.attention_note}",
        f"  chip decode   {s['decode_cycles']:,} cycles/token, "
        f"{s['decode_tokens_per_s']:,.2f} tokens/s, {s['decode_bytes']:,.0f} off-chip B/token, "
        f"{s['decode_bound']}-bound",
        f"  chip prefill  {s['prefill_cycles']:,.0f} cycles/token (T = {result.tokens}), "
        f"{s['prefill_tokens_per_s']:,.2f} tokens/s, {s['prefill_bytes']:,.0f} off-chip "
        f"B/token, {s['prefill_bound']}-bound",
        f"  chip layout   {s['resident_layers']} layer(s) resident on {s['resident_macros']} "
        f"macros, {s['streamed_layers']} streamed through a pool of {s['pool_macros']}; "
        f"{s['macros_to_hold']:,} macros would hold the whole model "
        f"({'fits' if s['fits'] else 'does not fit'} on {s['macros']})",
        f"  one-time load {s['load_cycles']:,} cycles ({s['load_seconds'] * 1e3:.3f} ms), "
        f"{s['load_bytes']:,} B (resident weights, apart from the per-token figures)",
        f"  utilisation   cells {s['utilization']:.1%} of the tiles; compute "
        f"{100 * s['decode_compute_utilization']:.3g}% of the {s['peak_macs_per_cycle']:,} "
        f"MACs/cycle peak in decode, {100 * s['prefill_compute_utilization']:.3g}% in prefill"]
    lines += energy_lines(result)
    if not s["offchip_fits"]:
        lines.append(f"  WARNING       the model's weights ({s['weight_bytes'] + s['meta_bytes']:,}"
                     f" B with metadata) exceed the chip's off-chip memory "
                     f"({chip.offchip_bytes:,} B)")
    return lines


def _pj(value) -> str:
    return cell(value, ",.1f", none="not modelled")


def _name(row) -> str:
    """A row's name, with its copies when it stands for more than one layer."""
    return row.name if row.copies == 1 else f"{row.name} ×{row.copies}"


def energy_lines(result: ChipResult) -> list[str]:
    """The terminal lines of the chip's energy and area (empty without energy figures)."""
    e = result.energy
    if e is None:
        return []
    d, p = e["decode"], e["prefill"]
    lines = [f"  chip energy   {d['pj_per_token']:,.1f} pJ/token decode, "
             f"{p['pj_per_token']:,.1f} pJ/token prefill (T = {result.tokens}), "
             f"{d['tops_per_w']:.3g} / {p['tops_per_w']:.3g} TOPS/W; one-time load "
             f"{e['load_pj']:,.1f} pJ apart ({e['tech']}, linears: attention unit not priced)"]
    comps = d["components_pj"]
    total = d["pj_per_token"] or 1.0
    lines.append("  energy parts  decode: " + ", ".join(
        f"{name} {'n/a' if v is None else f'{100 * v / total:.1f}%'}"
        for name, v in comps.items()))
    if e["area_mm2"] is None:
        lines.append(f"  chip area     not recorded for macro {result.chip.macro.slug} "
                     f"(make area): no TOPS/mm2, and the energies lack leakage and the "
                     f"interconnect's wires")
    else:
        area = e["area_um2"]
        lines.append(f"  chip area     {e['area_mm2']:.3f} mm² (" + ", ".join(
            f"{name} {area[name] * 1e-6:.3f}" for name in area)
            + f"), {d['tops_per_mm2']:.3g} TOPS/mm² decode, {p['tops_per_mm2']:.3g} prefill, "
            f"peak {e['peak_tops_per_mm2']:.3g}")
    return lines


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_chip_report(result: ChipResult, folder, *, plots: bool = True) -> dict:
    """Write ``chip.json``, ``chip.csv``, ``chip.md`` and (with ``plots``) ``roofline.png``
    and ``chip_cycles.png`` into ``folder``; return ``{kind: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["chip_json"] = folder / "chip.json"
    paths["chip_json"].write_text(json.dumps(result.as_dict(), indent=1, default=_json) + "\n")
    paths["chip_csv"] = folder / "chip.csv"
    with paths["chip_csv"].open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CHIP_CSV_COLUMNS)
        for row in result.rows:
            values = row.as_dict()
            writer.writerow([_cell(values[c]) for c in CHIP_CSV_COLUMNS])
    drawn = _plots(result, folder) if plots else {}
    paths.update(drawn)
    paths["chip_markdown"] = folder / "chip.md"
    paths["chip_markdown"].write_text(_markdown(result, drawn))
    return paths


def _json(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    raise TypeError(f"{type(value).__name__} is not JSON")


#: Columns of ``chip.md``'s layer table.
LAYER_HEADER = ("layer", "out x in", "pattern", "regime", "macros", "tiles", "util.",
                "one-time load cycles", "decode cycles/token", "prefill cycles/token",
                "decode B/token", "prefill B/token", "bound (decode / prefill)")


def _markdown(result: ChipResult, plots: dict) -> str:
    s = result.summary
    lines = ["# sparsecim chip report", "", "```text", *chip_lines(result), "```"]
    lines += section("Layers") + table_lines(LAYER_HEADER, [
        [_name(r), f"{r.n} x {r.k}", r.label, r.regime,
         f"{r.macros}" + ("" if r.regime == "resident" else " (pool)"), r.tiles,
         f"{r.utilization:.1%}", f"{r.load_cycles:,}", f"{r.decode_cycles:,}",
         f"{r.prefill_cycles:,.1f}", f"{r.decode_bytes:,.0f}", f"{r.prefill_bytes:,.1f}",
         f"{r.bound} / {r.prefill_bound}"] for r in result.rows],
        "llllrrrrrrrrl", compact=False)
    att = result.attention
    lines += section("Attention") + [f"- {result.attention_note}"]
    if att is not None:
        lines += [f"- {att.decode_macs:,} MACs per token (score and context products, every "
                  f"head and block, context {att.context}); softmax, scaling and norms not "
                  f"counted",
                  f"- KV cache: {att.kv_bytes_per_token:,} B per token, {att.kv_cache_bytes:,} B "
                  f"at {att.context} tokens, in the {att.kv_place} (on chip when it takes at "
                  f"most half the global buffer)",
                  f"- decode: {att.decode_cycles:,} cycles/token, {att.decode_bytes:,} "
                  f"off-chip B/token; prefill: {att.prefill_cycles:,} cycles/token, "
                  f"{att.prefill_bytes:,} off-chip B/token"]
    lines += _energy_markdown(result)
    lines += section("How to read it") + [
              "- Per-token figures are the sum over the layers, run one after the other (a "
              "token's layers depend on each other), plus the attention unit's cycles.",
              "- A resident layer's weights are loaded once (the one-time load, apart); a "
              "streamed layer fetches its weight rows from off chip for every token (decode) "
              "or chunk of tokens (prefill), overlapped with compute in the pool's other "
              "macros.",
              "- bound: bandwidth when the weight port moved a row or waited for bandwidth "
              "credit in more than half the layer's cycles.",
              f"- tokens/s = {result.chip.clock_mhz:g} MHz / cycles per token; "
              f"{s['decode_tokens_per_s']:,.3f} (decode), {s['prefill_tokens_per_s']:,.3f} "
              f"(prefill)."]
    if plots:
        lines += section("Plots") + [image(name, p) for name, p in plots.items()]
    return "\n".join(lines) + "\n"


def _energy_markdown(result: ChipResult) -> list[str]:
    """The "Energy and area" section of ``chip.md`` (empty without energy figures)."""
    e = result.energy
    if e is None:
        return []
    lines = section("Energy and area") + [
             f"Technology {e['tech']}; each layer priced alone on its own chip counters "
             f"(`sparsecim.sw.chip_energy.model_chip_energy`).", ""]
    lines += [f"- note: {note}" for note in e["notes"]]
    d, p = e["decode"], e["prefill"]
    rows = [[label] + [cell(x[key], spec, none="not modelled") for x in (d, p)]
            for label, key, spec in (("pJ / token", "pj_per_token", ",.1f"),
                                     ("TOPS/W", "tops_per_w", ".4g"),
                                     ("TOPS/mm²", "tops_per_mm2", ".4g"),
                                     ("off-chip B / token", "offchip_bytes_per_token", ",.1f"))]
    rows += [[f"{name} (pJ / token)", _pj(d["components_pj"][name]),
              _pj(p["components_pj"][name])] for name in d["components_pj"]]
    lines += [""] + table_lines(["", "decode", "prefill"], rows, "lrr", compact=False)
    lines += ["", f"- one-time load of the resident layers: {e['load_pj']:,.1f} pJ "
              f"({e['load_cycles']:,} cycles), apart from the per-token figures"]
    if e["area_mm2"] is None:
        lines.append("- area: not recorded for the macro (make area)")
    else:
        lines.append(f"- area: {e['area_mm2']:.4f} mm² (" + ", ".join(
            f"{name} {v * 1e-6:.4f} mm²" for name, v in e["area_um2"].items())
            + f"); peak {e['peak_tops_per_mm2']:.4g} TOPS/mm²")
    lines += [""] + table_lines(
        ["layer", "regime", "decode pJ / token", "prefill pJ / token", "load pJ"],
        [[_name(r), r.regime, _pj(r.decode_pj), _pj(r.prefill_pj), f"{r.load_pj:,.1f}"]
         for r in result.rows], "llrrr", compact=False)
    return lines


def _energy_plot(result: ChipResult, folder: Path, plt, np) -> dict:
    """``chip_energy.png``: decode pJ per token per row, stacked by chip component."""
    from ..sw.chip_energy import CHIP_ENERGY_COMPONENTS
    from ..sw.energy import plot_energy_stack

    rows = result.rows
    entries = [{"components_pj": r.energy_stack, "pj_per_token": r.decode_pj,
                "total_pj": r.decode_pj} for r in rows]
    names = [_name(r) for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(rows) + 4.0), 4.5))
    plot_energy_stack(ax, entries, np.arange(len(rows)), CHIP_ENERGY_COMPONENTS)
    ax.set_xticks(np.arange(len(rows)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("pJ per decoded token (sum over copies)")
    ax.set_title(f"Chip energy per layer, decode ({result.energy['tech']})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = folder / "chip_energy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"chip_energy": path}


def _plots(result: ChipResult, folder: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    chip, rows = result.chip, result.rows
    peak = chip.macros * chip.macro.cells
    paths = {}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [(r, roofline(chip, r), roofline(chip, r, prefill=True)) for r in rows]
    finite = [p["intensity"] for _, d, q in points for p in (d, q) if math.isfinite(p["intensity"])]
    ridge = peak / chip.weight_bw
    lo = min(finite + [ridge]) / 4
    hi = max(finite + [ridge]) * 8
    xs = np.geomspace(lo, hi, 200)
    ax.loglog(xs, np.minimum(peak, chip.weight_bw * xs), "k-", linewidth=1.2,
              label=f"roof: {peak:,} MACs/cycle, {chip.weight_bw} B/cycle")
    for kind, marker, index in (("decode", "o", 1), ("prefill", "s", 2)):
        xs_, ys_ = [], []
        for point in points:
            p = point[index]
            xs_.append(p["intensity"] if math.isfinite(p["intensity"]) else hi / 1.5)
            ys_.append(p["achieved"])
        ax.scatter(xs_, ys_, marker=marker, s=24, alpha=0.8, label=f"{kind} (T = "
                   f"{result.tokens})" if kind == "prefill" else kind)
    ax.axvline(hi / 1.5, color="grey", linestyle=":", linewidth=0.8)
    ax.annotate("resident (no weight traffic)", (hi / 1.5, peak), rotation=90, fontsize=7,
                ha="right", va="top")
    ax.set_xlabel("operational intensity (MACs per off-chip byte)")
    ax.set_ylabel("achieved MACs per cycle")
    ax.set_title(f"Roofline: {result.chip_name}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths["roofline"] = folder / "roofline.png"
    fig.savefig(paths["roofline"], dpi=110)
    plt.close(fig)

    names = [_name(r) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2.0), 4.5))
    for offset, attr, hatch in ((-0.2, "stack", None), (0.2, "prefill_stack", "//")):
        bottom = np.zeros(len(rows))
        for index, part in enumerate(STACK):
            values = np.array([getattr(r, attr)[part] for r in rows])
            ax.bar(x + offset, values, 0.4, bottom=bottom, color=f"C{index}", hatch=hatch,
                   label=part if attr == "stack" else None)
            bottom += values
    ax.plot(x - 0.2, [r.decode_cycles for r in rows], "k_", markersize=14,
            label="total (decode)")
    ax.plot(x + 0.2, [r.prefill_cycles for r in rows], "k_", markersize=14)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("cycles per token (sum over copies;\nparts overlap, - is the total)")
    ax.set_title("Cycles per token per layer: decode (plain), prefill (hatched)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths["chip_cycles"] = folder / "chip_cycles.png"
    fig.savefig(paths["chip_cycles"], dpi=110)
    plt.close(fig)
    if result.energy is not None:
        paths.update(_energy_plot(result, folder, plt, np))
    return paths
