"""``make bench``: throughput figures. Printed, never asserted by a test.

- RTL simulation: simulated cycles per wall second on Verilator for the ``make sim`` workload
  (the cocotb process's own wall time from clock start to ``done``, and the whole run with
  process start-up).
- Golden model: commands and data beats per second on the same trace.
"""

from __future__ import annotations

import argparse
import time

from ..hw.config import preset
from ..sw.golden import run_trace
from ..sw.schedule import schedule_dense
from .cli import random_gemm
from .cosim import run_rtl
from .verilator import build


def _golden_rate(trace, repeats: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_trace(trace)
        best = min(best, time.perf_counter() - t0)
    return len(trace.steps) / best, len(trace.data) / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsecim.tb.bench", description=__doc__)
    parser.add_argument("--preset", default="flexcim")
    parser.add_argument("--k", type=int, default=768)
    parser.add_argument("--n", type=int, default=768)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    cfg = preset(args.preset)
    x, w = random_gemm(cfg, args.k, args.n, args.tokens, seed=0)
    trace = schedule_dense(cfg, x, w).trace
    workload = f"{args.preset} {args.k}x{args.n}, {args.tokens} tokens"
    print(f"sparsecim bench: {workload}: {len(trace.steps)} commands, "
          f"{len(trace.data)} data beats")

    t0 = time.perf_counter()
    build(cfg)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rtl = run_rtl(trace, run_dir=f"build/bench/{cfg.slug}")
    run_s = time.perf_counter() - t0
    cycles = rtl.rtl_counters["total"]
    cmd_rate, beat_rate = _golden_rate(trace, args.repeats)

    rows = [
        ("Verilator build (cached after the first)", f"{build_s:.1f} s"),
        ("RTL run matched golden and cycle model", "yes" if rtl.passed else "NO"),
        ("RTL simulated cycles", f"{cycles:,}"),
        ("RTL simulation, clock start to done", f"{rtl.wall_seconds:.3f} s"),
        ("RTL simulated cycles / wall second", f"{cycles / rtl.wall_seconds:,.0f}"),
        ("RTL whole run incl. process start and scoreboard", f"{run_s:.1f} s"),
        ("golden model commands / second", f"{cmd_rate:,.0f}"),
        ("golden model data beats / second", f"{beat_rate:,.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")
    return 0 if rtl.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
