"""Energy experiments on one macro: calibration against a published DCiM macro, and the cost
of flexibility (the flexible macro against dense-only and fixed-2:4 macros of the same array).

``make energy`` (``python -m sparsecim.sw.energy_eval --out build/energy``) writes
``report.md`` and ``energy_breakdown.png``; the README's tables come from it.

Workloads are random integer GEMMs scheduled by :func:`sparsecim.sw.schedule.schedule_layer`;
their events (:func:`sparsecim.sw.events.count_events`) do not depend on the values except for
the zero-weight count, which the energy model does not charge differently.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.config import MacroConfig
from .area import AREA_CONFIGS, recorded_counts
from .energy import ENERGY_COMPONENTS, MacroEnergy, Tech, evaluate, load_tech
from .events import Events, count_events
from .schedule import schedule_layer

__all__ = ["Published", "CHIH_ISSCC21", "CALIBRATION_BAND", "calibration_config", "gemm_events",
           "calibrate", "flexibility", "plot_energy_stack", "main"]


@dataclass(frozen=True)
class Published:
    """Figures of a published macro."""
    name: str
    node_nm: int
    weight_kbit: int
    bits: int
    tops_per_w: float
    tops_per_mm2: float
    area_mm2: float


#: Chih et al., "An 89TOPS/W and 16.3TOPS/mm2 all-digital SRAM-based full-precision
#: compute-in-memory macro in 22nm for machine-learning edge applications", ISSCC 2021:
#: 64 kb, 4-bit weights and inputs, 0.202 mm².
CHIH_ISSCC21 = Published("Chih et al., ISSCC 2021", 22, 64, 4, 89.0, 16.3, 0.202)

#: The model's TOPS/W must lie within this fraction of the published one: the model is built
#: from standard-cell figures (Aladdin, CACTI), a full-custom DCiM macro does better, so the
#: model should be below it but within an order of magnitude.
CALIBRATION_BAND = (0.1, 1.0)


def calibration_config(published: Published = CHIH_ISSCC21) -> MacroConfig:
    """A dense-only macro holding ``published``'s weights at its precision: 4 sub-macros of
    64 × 64 cells of 4 bits is 64 kb for Chih et al."""
    cells = published.weight_kbit * 1024 // published.bits
    cols = 64
    rows = cells // (4 * cols)
    return MacroConfig(rows=rows, cols=cols, submacros=4, act_depth=64, acc_depth=64,
                       weight_bits=published.bits, act_bits=published.bits)


def gemm_events(cfg: MacroConfig, k: int, n: int, tokens: int, *, pattern=(1, 1),
                run_as=None, seed: int = 0) -> Events:
    """Events of a random ``tokens × k`` by ``k × n`` GEMM whose weights keep ``pattern``
    (``n:m`` per output channel), scheduled in ``run_as`` (default ``pattern``; ``(1, 1)``
    runs the zeros as weights, as a dense macro must)."""
    rng = np.random.default_rng(seed)
    a_top, w_top = 2 ** (cfg.act_bits - 1), 2 ** (cfg.weight_bits - 1)
    x = rng.integers(-a_top, a_top, size=(tokens, k))
    w = rng.integers(-w_top, w_top, size=(k, n))
    keep, group = pattern
    if keep < group:
        ranks = rng.random((k // group, group, n)).argsort(axis=1).argsort(axis=1)
        w = np.where(ranks.reshape(k, n) < keep, w, 0)
    return count_events(schedule_layer(cfg, x, w, run_as or pattern).trace)


def calibrate(tech: Tech, published: Published = CHIH_ISSCC21) -> dict:
    """The model's TOPS/W (and TOPS/mm² where the config's cells are recorded) of a dense GEMM
    that keeps the calibration macro busy (weights loaded once, 64 tokens), beside the
    published figures."""
    cfg = calibration_config(published)
    ev = gemm_events(cfg, cfg.reduction, cfg.cols, 64)
    figures = evaluate(cfg, ev, tech, recorded_counts(cfg))
    return {"published": published, "config": cfg, "figures": figures,
            "ratio": figures.tops_per_w / published.tops_per_w}


def flexibility(tech: Tech, *, tokens: int = 64) -> list[dict]:
    """The flexible ``flexcim`` macro against its dense-only and fixed-2:4 variants (same
    array): area from the recorded cell counts, and energy per dense-equivalent MAC of a
    512 × 64 layer, dense and 2:4 (the dense-only macro runs the 2:4 layer's zeros)."""
    k, n = 4 * AREA_CONFIGS["flexcim"].reduction, 2 * AREA_CONFIGS["flexcim"].cols
    rows = []
    for name in ("flexcim-dense", "flexcim-2:4", "flexcim"):
        cfg = AREA_CONFIGS[name]
        counts = recorded_counts(cfg)
        dense = evaluate(cfg, gemm_events(cfg, k, n, tokens), tech, counts)
        sparse_as = (2, 4) if cfg.supports(2, 4) else (1, 1)
        sparse = evaluate(cfg, gemm_events(cfg, k, n, tokens, pattern=(2, 4),
                                           run_as=sparse_as), tech, counts)
        rows.append({"name": name, "config": cfg, "dense": dense, "sparse": sparse,
                     "sparse_as": sparse_as, "dense_macs": k * n * tokens})
    return rows


def plot_energy_stack(ax, energies: list[dict], x) -> None:
    """Stacked bars of ``components_pj`` per token (``pj_per_token / total_pj`` scales them),
    one bar per entry of ``energies`` at positions ``x``; components not modelled (None) are
    named in the legend instead."""
    bottom = [0.0] * len(energies)
    missing = []
    for name in ENERGY_COMPONENTS:
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
    ax.legend(fontsize=7)


def _as_plot_entry(figures: MacroEnergy, per: int) -> dict:
    return {"components_pj": figures.energy_pj, "total_pj": figures.total_pj,
            "pj_per_token": figures.total_pj / per}


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def report(tech: Tech, out: Path) -> Path:
    """Run :func:`calibrate` and :func:`flexibility`; write ``report.md`` and
    ``energy_breakdown.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    cal = calibrate(tech)
    pub, fig_ = cal["published"], cal["figures"]
    cfg = cal["config"]
    lines = [f"# Energy and area of the macro ({tech.name})", "",
             "Generated by `make energy` (`python -m sparsecim.sw.energy_eval`).", "",
             "## Calibration", "",
             f"Macro configured like {pub.name}: dense only, {cfg.submacros} × {cfg.rows}×"
             f"{cfg.cols} cells of {cfg.weight_bits}-bit weights and {cfg.act_bits}-bit inputs "
             f"({cfg.cells * cfg.weight_bits // 1024} kb), a {cfg.reduction} × {cfg.cols} "
             "GEMM of 64 tokens with its weights loaded once.", "",
             "| figure | model | published | model / published |", "| --- | ---: | ---: | ---: |",
             f"| TOPS/W ({pub.bits} b) | {fig_.tops_per_w:.1f} | {pub.tops_per_w:g} | "
             f"{cal['ratio']:.2f} |",
             f"| TOPS/mm² ({pub.bits} b) | {_fmt(fig_.tops_per_mm2, '.2f')} | "
             f"{pub.tops_per_mm2:g} | "
             + (f"{fig_.tops_per_mm2 / pub.tops_per_mm2:.2f} |" if fig_.tops_per_mm2
                else "not synthesized |"),
             f"| area (mm²) | {_fmt(fig_.area_mm2, '.3f')} | {pub.area_mm2:g} | "
             + (f"{fig_.area_mm2 / pub.area_mm2:.2f} |" if fig_.area_mm2
                else "not synthesized |"),
             "", f"Band checked by the tests: model / published TOPS/W in "
             f"[{CALIBRATION_BAND[0]}, {CALIBRATION_BAND[1]}].", "",
             "Energy by component (pJ): " + ", ".join(
                 f"{k} {_fmt(v, ',.1f')}" for k, v in fig_.energy_pj.items()) + ".",
             "", "## The cost of flexibility", "",
             "Same array (4 × 32×32 INT8 cells); a 512 × 64 layer of 64 tokens, dense and with "
             "a 2:4 mask (the dense-only macro runs the 2:4 layer's zeros). Energy per "
             "dense-equivalent MAC (`tokens × K × N`), leakage included where the area is "
             "recorded.", "",
             "| macro | area (mm²) | area vs dense-only | dense layer (fJ/MAC) | "
             "2:4 layer (fJ/MAC) | 2:4 runs as | cycles dense / 2:4 |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    rows = flexibility(tech)
    base = rows[0]["dense"].area_mm2
    for row in rows:
        d, s = row["dense"], row["sparse"]
        ratio = f"{d.area_mm2 / base:.3f}x" if d.area_mm2 and base else "n/a"
        as_ = "2:4" if row["sparse_as"] != (1, 1) else "dense (zeros stored)"
        lines.append(f"| `{row['name']}` | {_fmt(d.area_mm2, '.4f')} | {ratio} | "
                     f"{d.total_pj * 1000 / row['dense_macs']:.1f} | "
                     f"{s.total_pj * 1000 / row['dense_macs']:.1f} | {as_} | "
                     f"{d.cycles:,} / {s.cycles:,} |")
    if all(row["dense"].area_um2 for row in rows):
        comps = list(rows[0]["dense"].area_um2)
        lines += ["", "Area by component (µm²):", "",
                  "| macro | " + " | ".join(comps) + " |",
                  "| --- | " + " | ".join("---:" for _ in comps) + " |"]
        for row in rows:
            lines.append(f"| `{row['name']}` | " + " | ".join(
                f"{row['dense'].area_um2[c]:,.0f}" for c in comps) + " |")
    lines += ["", "![energy breakdown](energy_breakdown.png)", ""]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    entries, labels = [], []
    for row in rows:
        for kind in ("dense", "sparse"):
            entries.append(_as_plot_entry(row[kind], row["dense_macs"]))
            labels.append(f"{row['name']}\n{'dense' if kind == 'dense' else '2:4'} layer")
    x = np.arange(len(entries))
    plot_energy_stack(ax, entries, x)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("energy per dense-equivalent MAC (pJ)")
    ax.set_title(f"Energy by component, 512 × 64 layer, 64 tokens ({tech.name})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "energy_breakdown.png", dpi=110)
    plt.close(fig)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsecim.sw.energy_eval",
                                     description="Calibration and the cost of flexibility.")
    parser.add_argument("--out", type=Path, default=Path("build/energy"))
    parser.add_argument("--tech", default="22nm", help="technology file (22nm)")
    args = parser.parse_args(argv)
    try:
        tech = load_tech(args.tech)
    except ValueError as exc:
        parser.error(str(exc))
    path = report(tech, args.out)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
