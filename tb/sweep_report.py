"""The report of a sweep: Pareto fronts, the best point per objective, one plot per pair of
objectives (Markdown and PNG in the sweep folder). Printing and plotting only: the figures come
from :mod:`sparsecim.tb.sweep`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

__all__ = ["OBJECTIVES", "totals", "pareto_front", "summary", "write_sweep_report", "fmt"]

#: Objectives, all minimized: column of ``points.csv`` to label.
OBJECTIVES = {"cycles_per_token": "cycles / token", "pj_per_token": "energy (pJ / token)",
              "area_mm2": "macro area (mm²)"}

_AXES = ("macro", "model", "sparsify", "pattern", "mapping", "tokens", "tech")


def totals(rows: list) -> list:
    """The ``total`` rows of the points that succeeded."""
    return [r for r in rows if r["layer"] == "total" and r["status"] == "ok"]


def _has(row: dict, objectives) -> bool:
    return all(row.get(o) not in (None, "") for o in objectives)


def pareto_front(points: list, objectives) -> list:
    """The points no other point beats: none is at most as large in every objective and
    smaller in one (all minimized). Points missing an objective (no recorded area) are left
    out. Sorted by the first objective."""
    candidates = [p for p in points if _has(p, objectives)]
    values = [tuple(float(p[o]) for o in objectives) for p in candidates]
    front = []
    for i, v in enumerate(values):
        if not any(all(a <= b for a, b in zip(w, v, strict=True)) and w != v
                   for j, w in enumerate(values) if j != i):
            front.append(candidates[i])
    return sorted(front, key=lambda p: float(p[objectives[0]]))


def _label(row: dict) -> str:
    pattern = "dense" if row["sparsify"] == "dense" else f"{row['sparsify']} {row['pattern']}"
    return (f"{row['macro']} · {row['model']} · {pattern} · {row['mapping']} · "
            f"{row['tokens']} tok · {row['tech']}")


def summary(result) -> dict:
    """Counts, and per model (a front across models would compare different work) the best
    point per objective, the three-objective Pareto front and the front of each pair, of a
    :class:`~sparsecim.tb.sweep.SweepResult`."""
    ok = totals(result.rows)
    models = {}
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model]
        best = {}
        for objective in OBJECTIVES:
            have = [r for r in mine if _has(r, [objective])]
            if have:
                best[objective] = min(have, key=lambda r: float(r[objective]))
        models[model] = {
            "points": len(mine), "best": best, "front": pareto_front(mine, list(OBJECTIVES)),
            "pair_fronts": {pair: pareto_front(mine, list(pair))
                            for pair in itertools.combinations(OBJECTIVES, 2)}}
    return {"points": result.computed + result.cached, "computed": result.computed,
            "cached": result.cached, "failed": result.failed, "models": models}


def _plot(points: list, fronts: dict, pair, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = pair
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for index, (model, front) in enumerate(fronts.items()):
        mine = [p for p in points if p["model"] == model and _has(p, pair)]
        ax.scatter([float(p[x]) for p in mine], [float(p[y]) for p in mine], s=8,
                   alpha=0.35, color=f"C{index}", label=model)
        ax.plot([float(p[x]) for p in front], [float(p[y]) for p in front], ".-", lw=1.2,
                color=f"C{index}")
    ax.set_title("each model's points; lines: its Pareto front", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(OBJECTIVES[x])
    ax.set_ylabel(OBJECTIVES[y])
    ax.legend(fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value) -> str:
    """A figure for a table: thousands separated from 100 up, 4 significant digits below."""
    if value in (None, ""):
        return "-"
    value = float(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


def write_sweep_report(result, *, plots: bool = True) -> dict:
    """Write ``report.md`` (and one PNG per pair of objectives) into the sweep folder.

    Returns
    -------
    dict
        Paths by kind: ``markdown``, and ``"<x>-<y>"`` per plot.
    """
    info = summary(result)
    out = Path(result.out)
    files = {}
    lines = [f"# Sweep report: {info['points']} points", "",
             f"Computed {info['computed']}, cached {info['cached']}, failed {info['failed']} "
             f"(failures are rows with status `failed` in `points.csv`). Objectives, all "
             f"minimized: cycles per token, energy per token (macro events; off-chip memory "
             f"not modelled), macro area (for macros whose cell counts are recorded). "
             f"Every figure is a whole model (all its linear layers); fronts are per model."]
    for model, part in info["models"].items():
        lines += ["", f"## {model} ({part['points']} points)", "",
                  "| best in | value | point |", "|---|---:|---|"]
        for objective, row in part["best"].items():
            lines.append(f"| {OBJECTIVES[objective]} | {fmt(row[objective])} | "
                         f"{_label(row)} |")
        front = part["front"]
        lines += ["", f"Pareto front (cycles, energy, area): {len(front)} of "
                      f"{part['points']} points", "",
                  "| cycles / token | pJ / token | mm² | point |", "|---:|---:|---:|---|"]
        for row in front[:20]:
            lines.append(f"| {fmt(row['cycles_per_token'])} | {fmt(row['pj_per_token'])} "
                         f"| {fmt(row['area_mm2'])} | {_label(row)} |")
        if len(front) > 20:
            lines.append(f"| | | | ... {len(front) - 20} more |")
    ok = totals(result.rows)
    if plots and ok:
        lines += ["", "## Plots", ""]
        for pair in itertools.combinations(OBJECTIVES, 2):
            name = f"{pair[0]}-{pair[1]}"
            fronts = {m: part["pair_fronts"][pair] for m, part in info["models"].items()}
            path = out / f"{name}.png"
            _plot(ok, fronts, pair, path)
            files[name] = path
            lines.append(f"![{name}]({path.name})")
    lines += ["", "The table: `pandas.read_csv(\"points.csv\")`, one row per point per layer "
                  "and a `total` row per point.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    files["markdown"] = path
    return files
