"""``sparsecim`` command line.

It sits in ``tb`` (the top of the import order hw ← sw ← tb) because it drives the RTL.

Subcommands
-----------
``gemm``
    A random INT8 (tokens × K)·(K × N) product, dense or magnitude-pruned to an N:M pattern
    (``--pattern 2:4``): map, schedule, golden model against the integer matmul reference,
    cycle model, and with ``--rtl`` the same trace on Verilator, scoreboarded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..hw.config import PRESETS, preset
from ..sw.golden import run_trace
from ..sw.nm import NMPattern, prune_magnitude
from ..sw.reference import matmul_reference
from ..sw.schedule import as_pattern, ideal_cycles, schedule_layer

__all__ = ["main"]


class UserError(Exception):
    """A mistake in the command line; printed without a traceback."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), not {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), not {value}")
    return value


def random_gemm(cfg, k: int, n: int, tokens: int, seed: int, pattern=(1, 1)):
    """Uniform random signed operands over the full widths of ``cfg`` (extremes included).

    With an N:M ``pattern`` (``(n, m)``), every output channel (column of ``w``) keeps ``n``
    random positions of each group of ``m`` inputs, and 5% of the kept weights are zeroed
    too, so that some groups hold fewer than ``n`` non-zeros.
    """
    rng = np.random.default_rng(seed)
    a_lo, a_hi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
    w_lo, w_hi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
    x = rng.integers(a_lo, a_hi, size=(tokens, k), dtype=np.int64)
    w = rng.integers(w_lo, w_hi, size=(k, n), dtype=np.int64)
    keep, group = pattern
    if keep < group:
        groups = -(-k // group)
        # A random permutation of each (group, column): its first `keep` ranks survive.
        ranks = rng.random((groups * group, n)).reshape(groups, group, n).argsort(axis=1)
        ranks = ranks.argsort(axis=1).reshape(groups * group, n)[:k]
        w = np.where(ranks < keep, w, 0)
        w[rng.random(w.shape) < 0.05] = 0
    return x, w


def _cmd_gemm(args) -> int:
    from .cosim import Pauses, run_rtl

    cfg = preset(args.preset)
    try:
        pattern = as_pattern(args.pattern)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not cfg.supports(*pattern):
        raise UserError(f"pattern {args.pattern} is not supported by preset {args.preset}; "
                        f"supported are dense and {cfg.pattern_names() or 'nothing else'}")
    x, w = random_gemm(cfg, args.k, args.n, args.tokens, args.seed)
    if pattern != (1, 1):
        # Per output channel (column of w), keep the largest n of every m inputs.
        w = prune_magnitude(w.T, NMPattern(*pattern)).T
    started = time.perf_counter()
    try:
        schedule = schedule_layer(cfg, x, w, pattern)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    trace = schedule.trace
    mapping = schedule.mapping
    t0 = time.perf_counter()
    golden = run_trace(trace)
    golden_s = time.perf_counter() - t0
    ok_golden = np.array_equal(schedule.assemble(golden.results), matmul_reference(x, w))
    model = golden.counters
    ideal = ideal_cycles(mapping, args.tokens)

    name = "dense" if pattern == (1, 1) else f"{pattern[0]}:{pattern[1]}"
    print(f"sparsecim gemm on {args.preset} ({cfg.slug}): "
          f"(tokens {args.tokens} x K {args.k}) . (K {args.k} x N {args.n}) {name}, "
          f"seed {args.seed}")
    print(f"  mapping       {mapping.arrays} array tiles of {mapping.pass_inputs} inputs x "
          f"{cfg.cols} outputs, utilization {mapping.utilization:.1%}")
    print(f"  trace         {len(trace.steps)} commands, {len(trace.data)} data beats")
    print(f"  golden model  outputs equal the int64 matmul reference: "
          f"{'yes' if ok_golden else 'NO'}  ({golden_s:.2f} s)")
    print(f"  cycle model   {model['total']} cycles  (fetch {model['fetch']}, "
          f"load {model['load']}, compute {model['compute']}, read {model['read']})")
    print(f"  ideal cycles  {ideal}  (MACs {mapping.macs_per_token * args.tokens} / "
          f"{cfg.cells} MACs per cycle); model is {model['total'] / ideal:.1f}x ideal")
    failed = not ok_golden
    if args.rtl:
        tag = name.replace(":", "of")
        run_dir = Path(args.run_dir or f"build/runs/gemm-{args.preset}-{args.k}x{args.n}"
                                         f"x{args.tokens}-{tag}-s{args.seed}")
        t0 = time.perf_counter()
        rtl = run_rtl(trace, run_dir=run_dir,
                      pauses=Pauses(args.pause, args.pause, args.pause),
                      waves=args.waves, quiet=not args.verbose)
        rtl_s = time.perf_counter() - t0
        counters = rtl.rtl_counters
        match = "yes" if rtl.outputs_match else "NO"
        print(f"  RTL outputs   match golden: {match}  ({rtl.result_beats} result beats)")
        if rtl.first_mismatch:
            m = rtl.first_mismatch
            print(f"                first mismatch: beat {m['beat']} lane {m['lane']}: "
                  f"RTL {m['rtl']}, golden {m['golden']}")
        same = counters["total"] - counters["stall"] == model["total"]
        print(f"  RTL cycles    {counters['total']} (stall {counters['stall']}) vs model "
              f"{model['total']}: {'equal' if same else 'DIFFERENT'}")
        for problem in rtl.problems:
            print(f"  problem       {problem}")
        print(f"  RTL wall time {rtl_s:.1f} s (sim {rtl.wall_seconds:.2f} s, "
              f"{counters['total'] / max(rtl.wall_seconds, 1e-9):,.0f} cycles/s); "
              f"files in {rtl.run_dir}")
        if rtl.waves:
            print(f"  waves         {rtl.waves}  (open with: gtkwave {rtl.waves}  or surfer)")
        failed = failed or not rtl.passed
    print(f"  wall time     {time.perf_counter() - started:.1f} s")
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsecim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gemm = sub.add_parser("gemm", help="random INT8 matrix product: golden, cycle model, RTL",
                          description="Map and schedule a random INT8 (tokens x K).(K x N) "
                                      "product, check the golden model against an integer "
                                      "matmul, and with --rtl run the trace on Verilator.")
    gemm.add_argument("--preset", default="flexcim", choices=sorted(PRESETS),
                      help="macro configuration (default flexcim)")
    gemm.add_argument("--k", type=_positive, default=768, help="reduction size K (768)")
    gemm.add_argument("--n", type=_positive, default=768, help="output features N (768)")
    gemm.add_argument("--tokens", type=_positive, default=4, help="tokens (4)")
    gemm.add_argument("--seed", type=int, default=0, help="random seed (0)")
    gemm.add_argument("--pattern", default="dense",
                      help="weight sparsity: dense or N:M such as 2:4 (weights are pruned by "
                           "magnitude per output channel); must be supported by the preset")
    gemm.add_argument("--rtl", action="store_true", help="also run on Verilator")
    gemm.add_argument("--pause", type=_fraction, default=0.0,
                      help="idle probability on every stream in the RTL run (0)")
    gemm.add_argument("--waves", action="store_true", help="write a waveform (FST or VCD)")
    gemm.add_argument("--run-dir", help="folder for the RTL run's files")
    gemm.add_argument("--verbose", action="store_true", help="show the simulator's output")
    gemm.set_defaults(func=_cmd_gemm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"sparsecim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
