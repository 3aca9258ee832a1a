"""``sparsecim sweep SPEC --out DIR``: the command line of :mod:`sparsecim.tb.sweep` (parsing
and printing only; :mod:`sparsecim.tb.cli` adds it as a subcommand)."""

from __future__ import annotations

import time

__all__ = ["add_sweep_parser", "cmd_sweep"]


def add_sweep_parser(sub) -> None:
    """Add the ``sweep`` subcommand to the CLI's subparsers."""
    sweep = sub.add_parser(
        "sweep", help="design-space sweep: macros x models x sparsity x mappings x tokens x tech "
                      "x chips",
        description="Evaluate every point of a sweep spec (TOML: a [sweep] table of lists per "
                    "axis, or [[point]] tables; see examples/sweep.toml) with the closed-form "
                    "cycle and energy model. Results are cached per point in OUT/cache (a "
                    "rerun computes nothing; an interrupted sweep resumes), the table is "
                    "OUT/points.csv and the report OUT/report.md with Pareto plots.")
    sweep.add_argument("spec", help="the sweep spec (TOML)")
    sweep.add_argument("--out", default="build/sweep", help="sweep folder (build/sweep)")
    sweep.add_argument("--executor", choices=("process", "ray", "inline"), default=None,
                       help="process pool (default), ray (a local Ray, or --ray ADDRESS) or "
                            "inline (this process)")
    sweep.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run the points on the Ray cluster at ADDRESS (ray://host:10001 or "
                            "auto); implies --executor ray")
    sweep.add_argument("--workers", type=int, default=None,
                       help="process pool size (default: the machine's CPUs)")
    sweep.add_argument("--rtl-sample", type=int, default=0, metavar="K",
                       help="also run K sampled output tiles of every layer shape of every "
                            "point on Verilator (random operands of the point's pattern), "
                            "checked against the golden model and the cycle model; OUT/rtl.csv")
    sweep.add_argument("--seed", type=int, default=0,
                       help="seed of the RTL tiles' choice and operands (0)")
    sweep.add_argument("--no-plots", action="store_true", help="report without PNG plots")
    sweep.set_defaults(func=cmd_sweep)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def cmd_sweep(args) -> int:
    """Run the sweep and print its summary. Exit 0 even when points failed (they are
    results); 1 when a sampled RTL tile failed its checks."""
    from .progress import Progress
    from .sweep import SweepError, load_spec, probe_ray_address, run_sweep
    from .sweep_report import OBJECTIVES, fmt, summary, write_sweep_report

    if args.rtl_sample < 0:
        raise SweepError(f"--rtl-sample must be a non-negative integer, not {args.rtl_sample}")
    if args.seed < 0:
        raise SweepError(f"--seed must be a non-negative integer, not {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise SweepError(f"--workers must be a positive integer, not {args.workers}")
    executor = args.executor or ("ray" if args.ray else "process")
    if args.ray and executor != "ray":
        raise SweepError(f"--ray needs executor ray, not {executor}")
    spec = load_spec(args.spec)
    if executor == "ray":
        probe_ray_address(args.ray)  # one line in seconds, not ray.init's minutes of retries
    started = time.perf_counter()
    bar = Progress(len(spec.points), "sparsecim sweep")
    first = {}

    def on_progress(done, cached, failed, total):
        first.setdefault("done", done)
        first.setdefault("at", time.perf_counter())
        rate = (done - first["done"]) / max(1e-9, time.perf_counter() - first["at"])
        eta = f"ETA {_seconds((total - done) / rate)}" if rate > 0 and done < total else ""
        bar.done = done
        bar.start(f"cached {cached} failed {failed} {eta}")

    with bar:
        result = run_sweep(spec, args.out, executor=executor, ray_address=args.ray,
                           workers=args.workers, on_progress=on_progress)
    files = write_sweep_report(result, plots=not args.no_plots)
    info = summary(result)
    print(f"sparsecim sweep {args.spec}: {info['points']} points ({info['computed']} computed, "
          f"{info['cached']} cached, {info['failed']} failed) in "
          f"{_seconds(time.perf_counter() - started)} on {executor}")
    for model, part in info["models"].items():
        names = ", ".join(OBJECTIVES[o] for o in part["objectives"])
        print(f"  {model}: {part['points']} points, Pareto front ({names}) "
              f"{len(part['front'])}")
        for objective, row in part["best"].items():
            pattern = row["pattern"] if row["sparsify"] != "dense" else "dense"
            chip = "" if row["chip"] in ("none", "") else f"chip {row['chip']} "
            print(f"    best {OBJECTIVES[objective]:<26} {fmt(row[objective]):>14}  "
                  f"{chip}{row['macro']} {pattern} {row['mapping']} {row['tokens']} tok "
                  f"{row['tech']}")
    status = 0
    if args.rtl_sample:
        from .sweep_rtl import rtl_jobs, run_rtl_jobs

        results = {r["key"]: r for r in result.rows if r["layer"] == "total"}
        jobs = rtl_jobs(spec.points, results, args.rtl_sample, args.seed)
        rtl_bar = Progress(len(jobs), "sparsecim sweep RTL")
        with rtl_bar:
            rows, path = run_rtl_jobs(
                jobs, args.out, executor=executor, ray_address=args.ray, workers=args.workers,
                on_progress=lambda done, total: (setattr(rtl_bar, "done", done),
                                                 rtl_bar.start(f"{done}/{total} tiles")))
        passed = sum(bool(r["passed"]) for r in rows)
        print(f"  RTL           {passed} of {len(rows)} sampled tiles passed (outputs and "
              f"counters = golden, cycles = closed-form model; seed {args.seed}): {path}")
        status = 0 if passed == len(rows) else 1
    print(f"  table         {result.table}  (one row per point per layer, plus total)")
    print(f"  report        {files['markdown']}"
          + (f"  ({len(files) - 1} plots)" if len(files) > 1 else ""))
    return status
