"""``make bench``: throughput figures. Printed, never asserted by a test.

- RTL simulation: simulated cycles per wall second on Verilator for the ``make sim`` workload
  (the cocotb process's own wall time from clock start to ``done``, and the whole run with
  process start-up), beside a minimal C++ driver of the same Verilog
  (:mod:`sparsecim.tb.driver`, the ceiling); medians of ``--rtl-repeats`` runs.
- Verilator build: a cold build (Verilog conversion, Verilator, g++) into a fresh folder
  (``build/bench/cold``) and the warm (cached) one after it.
- Golden model: commands and data beats per second on the same trace.
- N:M table: for one large layer (4096 × 4096 INT8, one token, by default) and each pattern
  the macro supports, the cycle model's cycles for the full shape, the speedup over dense
  beside the ideal M/N, weight memory (values + metadata) against dense, and the cycles of a
  smaller layer run on Verilator (RTL-verified: outputs bit-exact, cycles equal to the model).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from ..hw.config import preset
from ..sw.golden import run_trace
from ..sw.mapping import map_nm
from ..sw.nm import NMPattern, memory_bits, prune_magnitude
from ..sw.schedule import predict_counters, schedule_dense, schedule_layer
from .cli import random_gemm
from .cosim import run_rtl
from .driver import build_driver, run_driver
from .verilator import build


def _golden_rate(trace, repeats: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_trace(trace)
        best = min(best, time.perf_counter() - t0)
    return len(trace.steps) / best, len(trace.data) / best


def _pattern_name(pattern) -> str:
    return "dense" if pattern == (1, 1) else f"{pattern[0]}:{pattern[1]}"


def nm_table(preset_name: str, k: int, n: int, tokens: int, rtl_k: int, rtl_n: int,
             rtl: bool = True) -> bool:
    """Print the N:M table; return False if any RTL run failed its checks."""
    cfg = preset(preset_name)
    print(f"\nN:M on {preset_name}: model cycles for {k}x{n} x {tokens} token(s); RTL-verified "
          f"cycles for {rtl_k}x{rtl_n} (random per-channel masks, magnitude-pruned)")
    header = (f"  {'pattern':>7} {'model cycles':>13} {'speedup':>8} {'ideal M/N':>9} "
              f"{'tiles':>6} {'weights+meta KiB':>17} {'vs dense':>8} "
              f"{'RTL cycles':>11} {'model':>7} {'RTL speedup':>11}")
    print(header)
    ok = True
    dense = predict_counters(cfg, k, n, tokens)["total"]
    dense_rtl = None
    x, w = random_gemm(cfg, rtl_k, rtl_n, tokens, seed=1)
    for pattern in cfg.modes:
        cycles = predict_counters(cfg, k, n, tokens, pattern)["total"]
        nm = NMPattern(*pattern)
        bits = memory_bits(n, k, nm, value_bits=cfg.weight_bits)
        tiles = map_nm(cfg, k, n, pattern).arrays
        rtl_cell = model_cell = speed_cell = "-"
        if rtl:
            from .cosim import run_rtl

            pruned = prune_magnitude(w.T, nm).T
            schedule = schedule_layer(cfg, x, pruned, pattern)
            report = run_rtl(schedule.trace,
                             run_dir=f"build/bench/nm-{cfg.slug}-{_pattern_name(pattern)}")
            rtl_cycles = report.rtl_counters["total"]
            ok = ok and report.passed
            dense_rtl = dense_rtl or rtl_cycles
            rtl_cell = f"{rtl_cycles:,}"
            model_cell = "equal" if report.passed else "DIFF"
            speed_cell = f"{dense_rtl / rtl_cycles:.2f}x"
        print(f"  {_pattern_name(pattern):>7} {cycles:>13,} {dense / cycles:>7.2f}x "
              f"{pattern[1] / pattern[0]:>8.1f}x {tiles:>6} {bits['total'] / 8192:>17,.0f} "
              f"{bits['total'] / bits['dense']:>7.1%} {rtl_cell:>11} {model_cell:>7} "
              f"{speed_cell:>11}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsecim.tb.bench", description=__doc__)
    parser.add_argument("--preset", default="flexcim")
    parser.add_argument("--k", type=int, default=768)
    parser.add_argument("--n", type=int, default=768)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rtl-repeats", type=int, default=3, help="RTL runs (medians)")
    parser.add_argument("--warm-only", action="store_true",
                        help="skip the cold build (reuse build/bench/cold if it is current)")
    parser.add_argument("--nm-k", type=int, default=4096, help="N:M table layer inputs")
    parser.add_argument("--nm-n", type=int, default=4096, help="N:M table layer outputs")
    parser.add_argument("--nm-rtl-k", type=int, default=2048, help="RTL-verified layer inputs")
    parser.add_argument("--nm-rtl-n", type=int, default=256, help="RTL-verified layer outputs")
    parser.add_argument("--nm-only", action="store_true", help="print only the N:M table")
    args = parser.parse_args(argv)

    if args.nm_only:
        return 0 if nm_table(args.preset, args.nm_k, args.nm_n, 1, args.nm_rtl_k,
                             args.nm_rtl_n) else 1
    cfg = preset(args.preset)
    x, w = random_gemm(cfg, args.k, args.n, args.tokens, seed=0)
    trace = schedule_dense(cfg, x, w).trace
    workload = f"{args.preset} {args.k}x{args.n}, {args.tokens} tokens"
    print(f"sparsecim bench: {workload}: {len(trace.steps)} commands, "
          f"{len(trace.data)} data beats")

    root = Path("build/bench/cold")
    if not args.warm_only and root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    sim = build(cfg, root=root)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build(cfg, root=root)
    warm_s = time.perf_counter() - t0
    driver = build_driver(sim)
    run_dir = Path(f"build/bench/{cfg.slug}")
    sim_s, run_s, drv_s = [], [], []
    for _ in range(args.rtl_repeats):
        t0 = time.perf_counter()
        rtl = run_rtl(trace, run_dir=run_dir, build_root=root)
        run_s.append(time.perf_counter() - t0)
        sim_s.append(rtl.wall_seconds)
        plain = run_driver(driver, run_dir, limit=4 * rtl.rtl_counters["total"] + 1000)
        drv_s.append(plain.seconds)
    cycles = rtl.rtl_counters["total"]
    sim_rate = cycles / statistics.median(sim_s)
    # The driver counts clock edges from reset on, as the cocotb test's wall time spans.
    drv_rate = plain.cycles / statistics.median(drv_s)
    cmd_rate, beat_rate = _golden_rate(trace, args.repeats)

    rows = [
        ("Verilator build, cold" + (" (skipped: --warm-only)" if args.warm_only else ""),
         f"{cold_s:.1f} s"),
        ("Verilator build, warm (cached)", f"{warm_s:.2f} s"),
        ("RTL run matched golden and cycle model", "yes" if rtl.passed else "NO"),
        ("RTL simulated cycles", f"{cycles:,}"),
        ("RTL simulation, clock start to done (median)", f"{statistics.median(sim_s):.3f} s"),
        ("RTL simulated cycles / wall second (run_rtl)", f"{sim_rate:,.0f}"),
        ("plain C++ driver, same Verilog: cycles / second", f"{drv_rate:,.0f}"),
        ("run_rtl / plain C++ driver", f"{sim_rate / drv_rate:.2f}"),
        ("driver's harness cycles equal the RTL run's",
         "yes" if plain.harness_cycles == rtl.harness_cycles else "NO"),
        ("RTL whole run incl. process start and scoreboard", f"{statistics.median(run_s):.1f} s"),
        ("golden model commands / second", f"{cmd_rate:,.0f}"),
        ("golden model data beats / second", f"{beat_rate:,.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")
    nm_ok = nm_table(args.preset, args.nm_k, args.nm_n, 1, args.nm_rtl_k, args.nm_rtl_n)
    same = plain.harness_cycles == rtl.harness_cycles
    return 0 if rtl.passed and nm_ok and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
