"""Run reports: every figure per layer as JSON and CSV, and a Markdown page with PNG plots.

A report is built from :class:`LayerRecord` rows (one per mapped layer, made by
:mod:`sparsecim.sw.pipeline`, the records and their totals in
:mod:`sparsecim.sw.records`); nothing here computes a figure, it only writes them out. Plots use
matplotlib's Agg backend (no display needed), imported only when a report is written.

Files written by :func:`write_report` into the run folder:

- ``layers.json``: ``{"settings": {...}, "summary": {...}, "layers": [record, ...]}``;
- ``layers.csv``: one row per layer, the columns of :data:`CSV_COLUMNS`;
- ``report.md``: the summary and the table, with the plots embedded;
- ``utilization.png``, ``cycles.png``, ``patterns.png``, ``speedup.png``, and ``energy.png``
  (energy per token by component, stacked) when the layers have energy figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..sw.markdown import bullets, cell, image, section, table_lines
from ..sw.records import LayerRecord, summarize

__all__ = ["LayerRecord", "CSV_COLUMNS", "summarize", "write_json", "write_csv", "write_plots",
           "write_markdown", "write_report"]


#: Columns of ``layers.csv``, in order.
CSV_COLUMNS = ("name", "out_features", "in_features", "tokens", "copies", "sparsify", "pattern",
               "mapping", "arrays", "k_tiles", "n_tiles", "utilization", "dense_utilization",
               "density", "weight_bytes", "meta_bytes", "macs", "model_cycles",
               "dense_cycles", "speedup", "ideal_cycles", "golden_match", "rel_error",
               "rtl_cycles", "rtl_match", "rtl_coverage", "pj_per_token", "tops_per_w", "macro")

#: Columns of ``report.md``'s layer table.
LAYER_HEADER = ("layer", "shape (out x in)", "pattern", "mapping", "arrays", "util.",
                "weights B", "meta B", "MACs", "model cycles", "dense cycles", "speedup",
                "RTL cycles", "match")


def _cell(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_json(records: list[LayerRecord], path: str | Path, settings: dict | None = None) -> Path:
    """Write ``layers.json`` (settings, summary, every record); return its path."""
    path = Path(path)
    path.write_text(json.dumps({"settings": settings or {}, "summary": summarize(records),
                                "layers": [r.as_dict() for r in records]}, indent=1) + "\n")
    return path


def write_csv(records: list[LayerRecord], path: str | Path) -> Path:
    """Write one row per layer with :data:`CSV_COLUMNS` (booleans as yes/no); return its path."""
    path = Path(path)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            row = record.as_dict()
            writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return path


def write_plots(records: list[LayerRecord], folder: str | Path) -> dict[str, Path]:
    """Draw the four PNG plots into ``folder``; return ``{name: path}``.

    ``utilization``: per layer, this mapping beside the dense one. ``cycles``: per layer, the
    cycle model for this mapping and dense, and the RTL's count where it ran (a marker).
    ``patterns``: the kept fraction of weights per layer (n/m for N:M), labelled with the
    pattern. ``speedup``:
    dense cycles over this mapping's, per layer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder = Path(folder)
    names = [r.name for r in records]
    x = np.arange(len(records))
    width = max(6.0, 0.45 * len(records) + 2.0)
    paths = {}

    def finish(fig, ax, name, ylabel, title):
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[name] = path

    fig, ax = plt.subplots(figsize=(width, 4))
    mapping = records[0].mapping if len({r.mapping for r in records}) == 1 else "mapping"
    ax.bar(x - 0.2, [100 * r.utilization for r in records], 0.4, label=mapping)
    ax.bar(x + 0.2, [100 * r.dense_utilization for r in records], 0.4, label="linear (dense)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    finish(fig, ax, "utilization", "utilization (%)", "Array utilization per layer")

    fig, ax = plt.subplots(figsize=(width, 4))
    ax.bar(x - 0.2, [r.model_cycles for r in records], 0.4, label="cycle model")
    ax.bar(x + 0.2, [r.dense_cycles for r in records], 0.4, label="dense (cycle model)")
    # A sampled layer's RTL cycles are its tiles' only: not comparable, not drawn.
    rtl = [(i, r.rtl_cycles) for i, r in enumerate(records)
           if r.rtl_cycles is not None and r.rtl_tiles is None]
    if rtl:
        ax.plot([i - 0.2 for i, _ in rtl], [c for _, c in rtl], "k*", markersize=10,
                label="RTL (Verilator)")
    ax.legend(fontsize=8)
    finish(fig, ax, "cycles", "cycles", "Cycles per layer")

    fig, ax = plt.subplots(figsize=(width, 4))
    bars = ax.bar(x, [r.density for r in records])
    for bar, r in zip(bars, records, strict=True):
        ax.annotate(r.pattern, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.15)
    finish(fig, ax, "patterns", "kept weights (n/m)", "Pattern (N:M) per layer")

    fig, ax = plt.subplots(figsize=(width, 4))
    ax.bar(x, [r.speedup for r in records])
    ax.axhline(1.0, color="k", linewidth=0.8)
    finish(fig, ax, "speedup", "speedup vs dense (x)", "Speedup over the dense mapping")

    if all(r.energy for r in records):
        from ..sw.energy import plot_energy_stack

        fig, ax = plt.subplots(figsize=(width, 4))
        plot_energy_stack(ax, [r.energy for r in records], x)
        finish(fig, ax, "energy", "energy per token (pJ)",
               f"Energy per token by component ({records[0].energy['tech']})")
    return paths


def write_markdown(records: list[LayerRecord], path: str | Path, *, settings: dict,
                   plots: dict[str, Path]) -> Path:
    """Write ``report.md``: settings, summary, per-layer table, plots; return its path."""
    path = Path(path)
    summary = summarize(records)
    lines = ["# sparsecim run report"] + section("Settings")
    lines += bullets(f"`{key}`: `{value}`" for key, value in settings.items())
    lines += section("Summary")
    if summary["linears"] != summary["layers"]:
        lines.append(f"- rows: {summary['layers']} distinct layers standing for "
                     f"{summary['linears']} linear layers (a row's count is its layers per "
                     f"block times the blocks; its figures are totals over them)")
    if summary["cycle_model_only"]:
        lines += ["- **figures are cycle-model only** (predicted counters, nothing verified): "
                  "a layer-shape table has no weights, so the golden model and the RTL did "
                  "not run"]
    else:
        lines += [f"- layers: {summary['layers']}; golden model matches the integer reference "
                  f"on {summary['golden_matches']} of {summary['golden_layers']}",
                  f"- RTL (Verilator) on {summary['rtl_layers']} layer(s), matching on "
                  f"{summary['rtl_matches']}"]
    result = "PASS" if summary["passed"] else "FAIL"
    if summary["cycle_model_only"]:
        result = "nothing checked (cycle model only)"
    lines += [f"- cycles (cycle model): {summary['model_cycles']:,}; dense: "
              f"{summary['dense_cycles']:,}; speedup {summary['speedup']:.2f}x",
              f"- MACs {summary['macs']:,}; weights {summary['weight_bytes']:,} B + metadata "
              f"{summary['meta_bytes']:,} B",
              f"- result: {result}"] + section("Layers")
    rows = []
    for r in records:
        if r.golden_match is None:
            match = "not run (no weights)"
        else:
            match = "yes" if r.golden_match else "NO"
        if r.rtl_match is not None:
            match += ", RTL " + ("yes" if r.rtl_match else "NO")
        if r.rtl_tiles is not None:
            match += (f" on {len(r.rtl_tiles)} of {r.n_tiles} output tiles "
                      f"({r.rtl_coverage:.1%} of outputs)")
        rtl = f"{r.rtl_cycles:,}" if r.rtl_cycles is not None else (
            "not run (no weights)" if r.golden_match is None else "-")
        name = r.name if r.copies == 1 else f"{r.name} ×{r.copies}"
        rows.append([name, f"{r.out_features} x {r.in_features}", r.pattern, r.mapping, r.arrays,
                     f"{r.utilization:.1%}", f"{r.weight_bytes:,}", f"{r.meta_bytes:,}",
                     f"{r.macs:,}", f"{r.model_cycles:,}", f"{r.dense_cycles:,}",
                     f"{r.speedup:.2f}x", rtl, match])
    lines += table_lines(LAYER_HEADER, rows, "llllrrrrrrrrrl", compact=False)
    lines += _energy_markdown(summary)
    lines += section("Plots")
    for name, plot in plots.items():
        lines += [image(name, plot), ""]
    path.write_text("\n".join(lines))
    return path


def _energy_markdown(summary: dict) -> list[str]:
    energy = summary.get("energy")
    if not energy:
        return ["", "## Energy and area", "", "Not computed."]
    area = energy["area_mm2"]
    lines = ["", f"## Energy and area ({energy['tech']})", "",
             f"- energy per token (all layers): {energy['pj_per_token']:,.1f} pJ; "
             f"{energy['tops_per_w']:.2f} TOPS/W (a MAC is 2 operations, every cell MAC "
             "counted)",
             "- area: " + (f"{area:.4f} mm²; {energy['tops_per_mm2']:.3f} TOPS/mm² achieved, "
                           f"{energy['peak_tops_per_mm2']:.3f} peak at "
                           f"{energy['clock_mhz']:g} MHz" if area else "not recorded")]
    lines += bullets(energy["notes"])
    total = energy["total_pj"]
    lines += [""] + table_lines(
        ["component", "energy (pJ)", "share"],
        [[name, cell(value, ",.1f", none="not modelled"),
          "-" if value is None else f"{value / total:.1%}"]
         for name, value in energy["components_pj"].items()], "lrr", compact=False)
    if energy["area_um2"]:
        whole = sum(energy["area_um2"].values())
        lines += [""] + table_lines(
            ["area component", "µm²", "share"],
            [[name, f"{value:,.0f}", f"{value / whole:.1%}"]
             for name, value in energy["area_um2"].items()], "lrr", compact=False)
    return lines


def write_report(records: list[LayerRecord], folder: str | Path, *, settings: dict,
                 plots: bool = True) -> dict[str, Path]:
    """Write every report file into ``folder`` (created); return ``{kind: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(records, folder / "layers.json", settings),
             "csv": write_csv(records, folder / "layers.csv")}
    drawn = write_plots(records, folder) if plots else {}
    paths.update(drawn)
    paths["markdown"] = write_markdown(records, folder / "report.md", settings=settings,
                                       plots=drawn)
    return paths
