"""Energy experiments on one macro: calibration against a published DCiM macro, and the cost
of flexibility (the flexible macro against dense-only and fixed-2:4 macros of the same array).

``make energy`` (``python -m sparsecim.sw.experiments.energy_eval --out build/energy``) writes
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

from ...hw.config import MacroConfig
from ..area import AREA_CONFIGS, recorded_counts
from ..energy import MacroEnergy, Tech, evaluate, load_tech, plot_energy_stack
from ..events import Events, count_events, gemm_events, layer_events
from ..markdown import cell, table_lines

__all__ = ["Published", "CHIH_ISSCC21", "CALIBRATION_BAND", "calibration_config", "gemm_events",
           "layer_events", "calibrate", "flexibility", "SMOLLM2_FLOW_PLAN", "flexcim_comparison",
           "monarch_comparison",
           "plot_energy_stack", "main"]

#: FLOW's per-block plan for SmolLM2-135M with the released settings (target sparsity 0.5,
#: first and last blocks dense), as `make flow` chose it on the real weights
#: (docs/flow_report.md, column `flow`): an input of the comparison, not a result of it.
SMOLLM2_FLOW_PLAN = tuple(
    (1, 1) if b in (0, 29) else (2, 8) if b in (19, 24, 27, 28) else (2, 4) for b in range(30))

#: FlexCiM's headline figures against existing sparse accelerators (arXiv 2504.14365).
FLEXCIM_PAPER = {"latency": 1.75, "energy": 1.5}

#: arXiv 2510.11192: energy of the capacity-optimized Monarch mapping against Linear.
MONARCH_PAPER_ENERGY = 1.74


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


def _runs_as(cfg: MacroConfig, pattern: tuple) -> tuple:
    """What a macro runs a layer of ``pattern`` as: the pattern itself, or an N:M with the
    same ``n`` per a smaller ``m`` it supports that the weights also satisfy (``2:8`` weights
    are ``2:4`` weights), or dense (the zeros stored)."""
    n, m = pattern
    if cfg.supports(n, m):
        return pattern
    for mm in range(m - 1, n, -1):
        if m % mm == 0 and cfg.supports(n, mm):
            return (n, mm)
    return (1, 1)


def _counts_of_all(names) -> dict:
    """Recorded cell counts of every config named, or None for all of them if one is not
    recorded: leakage is then left out of every macro's energy, so they stay comparable."""
    counts = {name: recorded_counts(AREA_CONFIGS[name]) for name in names}
    if any(c is None for c in counts.values()):
        return dict.fromkeys(names)
    return counts


def flexcim_comparison(tech: Tech, model: str, plan, *, tokens: int = 1) -> dict:
    """FlexCiM's comparison on one model's linear layers: the flexible macro running ``plan``
    (one pattern per block, or one for all), the fixed-2:4 macro running each layer as it can
    (:func:`_runs_as`: 2:8 as 2:4, 4:8 dense) and the dense macro running everything dense.
    Cycles and energy per token, summed over every linear (attention products and off-chip
    traffic are not in it: the macro level does not model them)."""
    from ..model_shapes import model_shape

    shape = model_shape(model)
    blocks = max(lin.blocks for lin in shape.linears)
    per_block = list(plan) if isinstance(plan, (list, tuple)) and isinstance(plan[0], tuple) \
        else [plan] * blocks
    macros = {"flexible": "flexcim", "fixed 2:4": "flexcim-2:4", "dense": "flexcim-dense"}
    all_counts = _counts_of_all(macros.values())
    cache: dict = {}
    out = {}
    for label, name in macros.items():
        cfg = AREA_CONFIGS[name]
        counts = all_counts[name]
        total = Events()
        for lin in shape.linears:
            for block in range(lin.blocks):
                pattern = per_block[block] if label != "dense" else (1, 1)
                run_as = _runs_as(cfg, pattern)
                key = (name, lin.inputs, lin.outputs, pattern, run_as)
                if key not in cache:
                    cache[key] = layer_events(cfg, lin.inputs, lin.outputs, tokens,
                                              pattern=pattern, run_as=run_as)
                total = total + cache[key].scaled(lin.count)
        figures = evaluate(cfg, total, tech, counts)
        out[label] = {"macro": name, "cycles": total.cycles / tokens,
                      "pj": figures.total_pj / tokens, "figures": figures}
    flex = out["flexible"]
    for label in ("fixed 2:4", "dense"):
        out[label]["latency_ratio"] = out[label]["cycles"] / flex["cycles"]
        out[label]["energy_ratio"] = out[label]["pj"] / flex["pj"]
    return out


def monarch_comparison(tech: Tech, model: str = "bert-large", *, tokens: int = 1) -> dict:
    """2510.11192's comparison on ``flexcim``: every linear of ``model`` as square Monarch
    pieces ``d = b²`` (as :func:`sparsecim.sw.monarch_eval.flexcim_cycles` does) in each macro
    mapping (``linear``, ``latency``, ``capacity``), and dense; energy and cycles per token,
    and Linear's energy over each mapping's. Layers without such pieces are listed apart."""
    from ..model_shapes import model_shape
    from ..schedule.monarch import MAPPINGS, schedule_monarch

    cfg = AREA_CONFIGS["flexcim"]
    counts = recorded_counts(cfg)
    totals = {name: Events() for name in ("dense", *MAPPINGS)}
    skipped = []
    for lin in model_shape(model).linears:
        small, large = sorted((lin.inputs, lin.outputs))
        b = round(small ** 0.5)
        if large % small or b * b != small or b > cfg.rows:
            skipped.append(lin.name)
            continue
        totals["dense"] = totals["dense"] + layer_events(
            cfg, lin.inputs, lin.outputs, tokens).scaled(lin.total)
        zeros = np.zeros((tokens, small), dtype=np.int64)
        for mapping in MAPPINGS:
            sched = schedule_monarch(cfg, zeros, np.zeros((b, b, b), dtype=np.int64),
                                     np.zeros((b, b, b), dtype=np.int64), 0, mapping)
            pieces = lin.total * (large // small)
            totals[mapping] = totals[mapping] + count_events(sched.trace).scaled(pieces)
    out = {"skipped": skipped, "pieces": "square b = sqrt(min(in, out))"}
    for name, ev in totals.items():
        figures = evaluate(cfg, ev, tech, counts)
        out[name] = {"cycles": ev.cycles / tokens, "pj": figures.total_pj / tokens,
                     "figures": figures}
    for name in MAPPINGS:
        out[name]["linear_over"] = out["linear"]["pj"] / out[name]["pj"]
    return out


def monarch_layer_energy(tech: Tech, b: int, *, tokens: int = 1) -> dict:
    """One square Monarch layer ``d = b²`` on ``flexcim`` in each mapping: energy per token
    (pJ) and Linear's over it."""
    from ..schedule.monarch import MAPPINGS, schedule_monarch

    cfg = AREA_CONFIGS["flexcim"]
    zeros = np.zeros((tokens, b * b), dtype=np.int64)
    out = {}
    for mapping in MAPPINGS:
        sched = schedule_monarch(cfg, zeros, np.zeros((b, b, b), dtype=np.int64),
                                 np.zeros((b, b, b), dtype=np.int64), 0, mapping)
        ev = count_events(sched.trace)
        out[mapping] = {"pj": evaluate(cfg, ev, tech, recorded_counts(cfg)).total_pj / tokens,
                        "cycles": ev.cycles / tokens}
    for mapping in MAPPINGS:
        out[mapping]["linear_over"] = out["linear"]["pj"] / out[mapping]["pj"]
    return out


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
    names = ("flexcim-dense", "flexcim-2:4", "flexcim")
    all_counts = _counts_of_all(names)
    for name in names:
        cfg = AREA_CONFIGS[name]
        counts = all_counts[name]
        area = evaluate(cfg, Events(), tech, recorded_counts(cfg))
        dense = evaluate(cfg, gemm_events(cfg, k, n, tokens), tech, counts)
        sparse_as = (2, 4) if cfg.supports(2, 4) else (1, 1)
        sparse = evaluate(cfg, gemm_events(cfg, k, n, tokens, pattern=(2, 4),
                                           run_as=sparse_as), tech, counts)
        rows.append({"name": name, "config": cfg, "dense": dense, "sparse": sparse,
                     "sparse_as": sparse_as, "dense_macs": k * n * tokens,
                     "area_mm2": area.area_mm2, "area_um2": area.area_um2})
    return rows


def _as_plot_entry(figures: MacroEnergy, per: int) -> dict:
    return {"components_pj": figures.energy_pj, "total_pj": figures.total_pj,
            "pj_per_token": figures.total_pj / per}


def _fmt(value, spec):
    return cell(value, spec, none="n/a")


def _ratio(value, published) -> str:
    return f"{value / published:.2f}" if value else "not synthesized"


def _calibration_table(cal: dict, tech: Tech) -> list[str]:
    """The model's figures beside the published ones (and, when synthesized, the density of
    a dense-only INT8 macro)."""
    pub, fig_ = cal["published"], cal["figures"]
    rows = [[f"TOPS/W ({pub.bits} b)", f"{fig_.tops_per_w:.1f}", f"{pub.tops_per_w:g}",
             f"{cal['ratio']:.2f}"],
            [f"TOPS/mm² ({pub.bits} b)", _fmt(fig_.tops_per_mm2, ".2f"),
             f"{pub.tops_per_mm2:g}", _ratio(fig_.tops_per_mm2, pub.tops_per_mm2)],
            ["area (mm²)", _fmt(fig_.area_mm2, ".3f"), f"{pub.area_mm2:g}",
             _ratio(fig_.area_mm2, pub.area_mm2)]]
    # Chih et al.'s density beside a synthesized dense-only INT8 macro (the calibration macro
    # itself is synthesized only if `make area` recorded chih22).
    proxy = AREA_CONFIGS["flexcim-dense"]
    proxy_area = evaluate(proxy, Events(), tech, recorded_counts(proxy)).area_mm2
    published_bit = pub.area_mm2 * 1e6 / (pub.weight_kbit * 1024)
    if proxy_area:
        bit = proxy_area * 1e6 / (proxy.cells * proxy.weight_bits)
        clock = tech.values["operating"]["clock_mhz"]
        peak = 2 * proxy.cells * clock * 1e6 / proxy_area / 1e12
        rows += [["µm² per weight bit (`flexcim-dense`, INT8, synthesized)", f"{bit:.1f}",
                  f"{published_bit:.2f}", f"{bit / published_bit:.1f}"],
                 [f"peak TOPS/mm² (`flexcim-dense`, INT8, {clock:g} MHz)", f"{peak:.2f}", "-",
                  "-"]]
    return table_lines(["figure", "model", "published", "model / published"], rows, "lrrr",
                       compact=False)


def _flexibility_tables(rows: list[dict]) -> list[str]:
    """Energy per dense-equivalent MAC and cycles per macro; area by component when recorded."""
    base = rows[0]["area_mm2"]
    body = []
    for row in rows:
        d, s = row["dense"], row["sparse"]
        body.append([f"`{row['name']}`", _fmt(row["area_mm2"], ".4f"),
                     f"{row['area_mm2'] / base:.3f}×" if row["area_mm2"] and base else "n/a",
                     f"{d.total_pj * 1000 / row['dense_macs']:.1f}",
                     f"{s.total_pj * 1000 / row['dense_macs']:.1f}",
                     "2:4" if row["sparse_as"] != (1, 1) else "dense (zeros stored)",
                     f"{d.cycles:,} / {s.cycles:,}"])
    lines = table_lines(["macro", "area (mm²)", "area vs dense-only", "dense layer (fJ/MAC)",
                         "2:4 layer (fJ/MAC)", "2:4 runs as", "cycles dense / 2:4"], body,
                        "lrrrrlr", compact=False)
    recorded = [row for row in rows if row["area_um2"]]
    if recorded:
        comps = list(recorded[0]["area_um2"])
        lines += ["", "Area by component (µm²):", ""] + table_lines(
            ["macro"] + comps,
            [[f"`{row['name']}`"] + [f"{row['area_um2'][c]:,.0f}" for c in comps]
             for row in recorded], "l" + "r" * len(comps), compact=False)
    return lines


def report(tech: Tech, out: Path) -> Path:
    """Run :func:`calibrate` and :func:`flexibility`; write ``report.md`` and
    ``energy_breakdown.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    cal, rows = calibrate(tech), flexibility(tech)
    pub, fig_ = cal["published"], cal["figures"]
    cfg = cal["config"]
    lines = [f"# Energy and area of the macro ({tech.name})", "",
             "Generated by `make energy` (`python -m sparsecim.sw.experiments.energy_eval`).", "",
             "## Calibration", "",
             f"Macro configured like {pub.name}: dense only, {cfg.submacros} × {cfg.rows}×"
             f"{cfg.cols} cells of {cfg.weight_bits}-bit weights and {cfg.act_bits}-bit inputs "
             f"({cfg.cells * cfg.weight_bits // 1024} kb), a {cfg.reduction} × {cfg.cols} "
             "GEMM of 64 tokens with its weights loaded once.", ""] + _calibration_table(cal, tech)
    lines += ["", f"Band checked by the tests: model / published TOPS/W in "
             f"[{CALIBRATION_BAND[0]}, {CALIBRATION_BAND[1]}].", "",
             "Energy by component (pJ): " + ", ".join(
                 f"{k} {_fmt(v, ',.1f')}" for k, v in fig_.energy_pj.items()) + ".",
             "", "## The cost of flexibility", "",
             "Same array (4 × 32×32 INT8 cells); a 512 × 64 layer of 64 tokens, dense and with "
             "a 2:4 mask (the dense-only macro runs the 2:4 layer's zeros). Energy per "
             "dense-equivalent MAC (`tokens × K × N`); leakage is included only when all three "
             "areas are recorded.", ""] + _flexibility_tables(rows)
    lines += ["", "![energy breakdown](energy_breakdown.png)", ""]
    lines += _paper_sections(tech)
    fig, ax = plt.subplots(figsize=(10, 4.2))
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


def _paper_sections(tech: Tech) -> list[str]:
    lines = ["## FlexCiM's comparison (arXiv 2504.14365)", "",
             "Per token (decode: one token through every linear; weights loaded per token, as "
             "the macro holds one tile at a time), summed over every linear of the model; "
             "attention products and off-chip traffic are not in these figures. The flexible "
             "macro is `flexcim`, the fixed one `flexcim-2:4` (it runs 2:8 layers as 2:4 and "
             "4:8 layers dense), the dense one `flexcim-dense`. The paper reports "
             f"{FLEXCIM_PAPER['latency']}× lower latency and {FLEXCIM_PAPER['energy']}× lower "
             "energy than existing sparse accelerators.", ""]
    cases = [("smollm2-135m", SMOLLM2_FLOW_PLAN, "SmolLM2-135M, FLOW plan (real weights)"),
             ("smollm2-135m", (4, 8), "SmolLM2-135M, uniform 4:8"),
             ("llama-2-7b", (2, 4), "LLaMA-2-7B shapes, uniform 2:4"),
             ("llama-2-7b", (4, 8), "LLaMA-2-7B shapes, uniform 4:8")]
    rows = []
    for model, plan, label in cases:
        r = flexcim_comparison(tech, model, plan)
        f, x, d = r["flexible"], r["fixed 2:4"], r["dense"]
        rows.append([label, f"{f['cycles']:,.0f}", f"{f['pj'] / 1e6:,.2f}",
                     f"{x['latency_ratio']:.2f}× / {x['energy_ratio']:.2f}×",
                     f"{d['latency_ratio']:.2f}× / {d['energy_ratio']:.2f}×"])
    lines += table_lines(["model, plan", "flexible: cycles/token", "flexible: µJ/token",
                          "fixed 2:4: latency × / energy ×", "dense: latency × / energy ×"],
                         rows, "lrrrr", compact=False)
    lines += ["", "A ratio is the other macro's cycles or energy over the flexible macro's "
              "(above 1: the flexible macro is better).", "",
              "## Monarch mappings against Linear (arXiv 2510.11192)", "",
              f"The paper reports {MONARCH_PAPER_ENERGY}× lower energy for the "
              "capacity-optimized mapping than Linear (analog CIM, 256 × 256 arrays, 64 × 64 "
              "blocks). On `flexcim`, one token:", ""]
    bert = monarch_comparison(tech, "bert-large")
    rows = [["BERT-large linears (square pieces, b = 32)"]
            + [f"{bert[k]['pj'] / 1e6:,.2f}" for k in ("dense", "linear", "latency", "capacity")]
            + [f"{bert[k]['linear_over']:.2f}×" for k in ("latency", "capacity")]]
    for b in (16, 8):
        one = monarch_layer_energy(tech, b)
        rows.append([f"one layer d = {b * b} (b = {b})", "-"]
                    + [f"{one[k]['pj'] / 1e6:,.4f}" for k in ("linear", "latency", "capacity")]
                    + [f"{one[k]['linear_over']:.2f}×" for k in ("latency", "capacity")])
    lines += table_lines(["workload", "dense µJ", "Linear µJ", "latency-opt µJ",
                          "capacity-opt µJ", "Linear / latency", "Linear / capacity"], rows,
                         "lrrrrrr", compact=False)
    lines.append("")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsecim.sw.experiments.energy_eval",
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
