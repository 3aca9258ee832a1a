"""The report of a sweep: Pareto fronts, the best point per objective, one plot per pair of
objectives (Markdown and PNG in the sweep folder). Printing and plotting only: the figures come
from :mod:`sparsecim.tb.sweep`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..sw.markdown import image, section, table_lines

__all__ = ["OBJECTIVES", "MAXIMIZED", "totals", "pareto_front", "summary",
           "write_sweep_report", "fmt"]

#: Objectives: column of ``points.csv`` to label. Minimized but for :data:`MAXIMIZED`.
OBJECTIVES = {"tokens_per_s": "tokens / s", "pj_per_token": "energy (pJ / token)",
              "area_mm2": "area (mm², macro or chip)", "perplexity": "perplexity (sparse)",
              "cosine": "embedding cosine"}

#: Objectives a larger value of is better.
MAXIMIZED = frozenset({"tokens_per_s", "cosine"})


def totals(rows: list) -> list:
    """The ``total`` rows of the points that succeeded."""
    return [r for r in rows if r["layer"] == "total" and r["status"] == "ok"]


def _has(row: dict, objectives) -> bool:
    return all(row.get(o) not in (None, "") for o in objectives)


def _cost(row: dict, objective: str) -> float:
    """The objective as a cost (smaller is better)."""
    value = float(row[objective])
    return -value if objective in MAXIMIZED else value


def pareto_front(points: list, objectives) -> list:
    """The points no other point beats: none is at least as good in every objective and
    better in one (:data:`MAXIMIZED` ones larger, the others smaller). Points missing an
    objective (no recorded area) are left out. Sorted best first by the first objective."""
    candidates = [p for p in points if _has(p, objectives)]
    values = [tuple(_cost(p, o) for o in objectives) for p in candidates]
    front = []
    for i, v in enumerate(values):
        if not any(all(a <= b for a, b in zip(w, v, strict=True)) and w != v
                   for j, w in enumerate(values) if j != i):
            front.append(candidates[i])
    return sorted(front, key=lambda p: _cost(p, objectives[0]))


def _label(row: dict) -> str:
    pattern = "dense" if row["sparsify"] == "dense" else f"{row['sparsify']} {row['pattern']}"
    chip = "" if row.get("chip", "none") in ("none", "") else f"chip {row['chip']} · "
    return (f"{chip}{row['macro']} · {row['model']} · {pattern} · {row['mapping']} · "
            f"{row['tokens']} tok · {row['tech']}")


def summary(result) -> dict:
    """Counts, and per model (a front across models would compare different work) the best
    point per objective, the three-objective Pareto front and the front of each pair, of a
    :class:`~sparsecim.tb.sweep.SweepResult`."""
    ok = totals(result.rows)
    models = {}
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model]
        # The objectives some point of the model has: a shape table has no quality, a
        # macro without recorded cell counts no area.
        objectives = [o for o in OBJECTIVES if any(_has(r, [o]) for r in mine)]
        best = {o: min((r for r in mine if _has(r, [o])), key=lambda r, o=o: _cost(r, o))
                for o in objectives}
        models[model] = {
            "points": len(mine), "best": best, "objectives": objectives,
            "front": pareto_front(mine, objectives),
            "pair_fronts": {pair: pareto_front(mine, list(pair))
                            for pair in itertools.combinations(objectives, 2)}}
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
             f"(failures are rows with status `failed` in `points.csv`). Objectives: "
             f"tokens per second (the clock over cycles per token; more is better), energy per "
             f"token and area (less is better; for macros or chips whose cell counts are "
             f"recorded). A point on one macro (chip `none`) prices the macro's events only: "
             f"its weights arrive a row a cycle, with no off-chip bandwidth limit or energy; a "
             f"chip point includes off-chip memory, the global buffer and the interconnect. "
             f"Every figure is a whole model (all its linear layers); fronts are per model."]
    for model, part in info["models"].items():
        lines += section(f"{model} ({part['points']} points)") + table_lines(
            ["best in", "value", "point"],
            [[OBJECTIVES[o], fmt(row[o]), _label(row)] for o, row in part["best"].items()],
            "lrl")
        front, objectives = part["front"], part["objectives"]
        names = ", ".join(OBJECTIVES[o] for o in objectives)
        rows = [[fmt(row[o]) for o in objectives] + [_label(row)] for row in front[:20]]
        if len(front) > 20:  # a closing row: empty figures, the count of the rest
            rows.append([""] * len(objectives) + [f"... {len(front) - 20} more"])
        lines += ["", f"Pareto front ({names}): {len(front)} of {part['points']} points "
                      f"(points lacking one of them left out)", ""]
        lines += table_lines([OBJECTIVES[o] for o in objectives] + ["point"], rows,
                             "r" * len(objectives) + "l")
    ok = totals(result.rows)
    if plots and ok:
        lines += section("Plots")
        for pair in itertools.combinations(OBJECTIVES, 2):
            if not any(_has(row, pair) for row in ok):
                continue  # no point has both (no recorded area): nothing to plot
            name = f"{pair[0]}-{pair[1]}"
            fronts = {m: part["pair_fronts"][pair] for m, part in info["models"].items()
                      if pair in part["pair_fronts"]}
            path = out / f"{name}.png"
            _plot(ok, fronts, pair, path)
            files[name] = path
            lines.append(image(name, path))
    lines += ["", "The table: `pandas.read_csv(\"points.csv\")`, one row per point per layer "
                  "and a `total` row per point.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    files["markdown"] = path
    return files
