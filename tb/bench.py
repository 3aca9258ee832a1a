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
- Software speed (``--sw-only`` prints only this): for the LLaMA-2-7B linear shapes (one
  token) and a whole LLaMA-2-7B token (every linear of the 32 blocks, dense and 2:4), the
  scheduler's wall and CPU seconds (speedups in CPU seconds) and the peak memory of its
  process; the golden model's commands and data beats per CPU second of its process on the
  same traces; each beside the paths before issue 17 (:mod:`sparsecim.sw._reference`)
  measured in the same run, as ratios. Every measurement runs in a fresh process, so that its
  peak RSS is its own.
- Sweep (``--sweep-only`` prints only this): design points per second of ``sparsecim sweep``
  (:func:`sweep_rate`) over a grid of about 10⁴ whole-model points (4 macros × 6 layer-shape
  tables × dense and 4 N:M patterns × 3 mappings × 16 token counts × 2 technologies), on a
  process pool of 2 workers from a cold cache, and a rerun from the cache.
- Chip (``--chip-only`` prints only this): chip commands per second of the chip event model
  (:func:`sparsecim.sw.chip_timing.chip_counters`) on a LLaMA-2-7B-sized dense layer (4096 ×
  11008, 8 tokens) laid out on the ``edge`` chip (:func:`chip_rate`); and design points per
  second of the chip run's figures (:func:`sparsecim.sw.chip_run.chip_run`: placement, the
  chip cycle model on every distinct layer, the attention) for the whole LLaMA-2-7B (224
  linears) at prefill T = 128, over the ``edge`` and ``large`` chips × dense, 2:4, 4:8 and
  1:8 (:func:`chip_points_rate`), one process, each point from scratch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from ..hw.config import chip_preset, preset
from ..hw.isa import Command, Opcode, config_command, encode_chip
from ..sw.chip_timing import chip_counters
from ..sw.golden import run_trace
from ..sw.mapping import map_nm
from ..sw.nm import NMPattern, memory_bits, prune_magnitude
from ..sw.operands import random_gemm
from ..sw.schedule import predict_counters, schedule_dense, schedule_layer
from .cosim import run_rtl
from .driver import build_driver, run_driver
from .verilator import build


def _golden_rate(trace, repeats: int) -> tuple[float, float]:
    from ..sw import nm_kernel

    nm_kernel.activate()   # the steady state of a long run (the make sim trace is dense)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_trace(trace)
        best = min(best, time.perf_counter() - t0)
    return len(trace.steps) / best, trace.data_beats / best


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
                             run_dir=f"build/bench/nm-{cfg.slug}-{str(NMPattern(*pattern))}")
            rtl_cycles = report.rtl_counters["total"]
            ok = ok and report.passed
            dense_rtl = dense_rtl or rtl_cycles
            rtl_cell = f"{rtl_cycles:,}"
            model_cell = "equal" if report.passed else "DIFF"
            speed_cell = f"{dense_rtl / rtl_cycles:.2f}x"
        print(f"  {str(NMPattern(*pattern)):>7} {cycles:>13,} {dense / cycles:>7.2f}x "
              f"{pattern[1] / pattern[0]:>8.1f}x {tiles:>6} {bits['total'] / 8192:>17,.0f} "
              f"{bits['total'] / bits['dense']:>7.1%} {rtl_cell:>11} {model_cell:>7} "
              f"{speed_cell:>11}")
    return ok


#: LLaMA-2-7B's linear shapes as (inputs, outputs): q/k/v/o, gate/up, down.
LLAMA_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096))


def _peak_mb() -> float:
    """This process's peak resident memory in MB. Linux's ``VmHWM`` first: ``ru_maxrss``
    carries the parent's peak across the exec of a spawned worker, so under ``make bench``
    (whose parent has run the RTL) every job showed the parent's 414 MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _operands(cfg, k: int, n: int, pattern: str, seed: int = 0):
    """One token of INT8 activations and a (k, n) INT8 weight matrix in ``pattern``
    (magnitude-pruned; pruning is not timed)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(1, k), dtype=np.int8)
    w = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    if pattern != "dense":
        w = prune_magnitude(w.T, NMPattern.parse(pattern)).T
    return x, w


def _schedule_job(preset_name: str, k: int, n: int, pattern: str, old: bool) -> dict:
    """In a fresh process: schedule one layer; time, commands, beats, peak RSS before and
    after."""
    from ..sw._reference import schedule_layer_reference

    cfg = preset(preset_name)
    x, w = _operands(cfg, k, n, pattern)
    before = _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    schedule = (schedule_layer_reference if old else schedule_layer)(cfg, x, w, pattern)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    trace = schedule.trace
    return {"seconds": seconds, "cpu": cpu, "commands": len(trace.steps),
            "beats": trace.data_beats, "operands_mb": before, "peak_mb": _peak_mb()}


def _token_job(preset_name: str, pattern: str) -> dict:
    """In a fresh process: schedule every linear of a LLaMA-2-7B token (one weight matrix per
    distinct shape, reused by its layers; each trace dropped after it is built)."""
    from ..sw.model_shapes import model_shape

    cfg = preset(preset_name)
    operands = {shape: _operands(cfg, *shape, pattern) for shape in LLAMA_SHAPES}
    layers = commands = beats = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for linear in model_shape("llama-2-7b").linears:
        x, w = operands[(linear.inputs, linear.outputs)]
        for _ in range(linear.count * linear.blocks):
            trace = schedule_layer(cfg, x, w, pattern).trace
            layers += 1
            commands += len(trace.steps)
            beats += trace.data_beats
            del trace
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "layers": layers, "commands": commands, "beats": beats, "peak_mb": _peak_mb()}


def _golden_job(preset_name: str, k: int, n: int, pattern: str, path: str,
                repeats: int) -> dict:
    """In a fresh process: the golden model on one layer's trace, ``path`` ``"kernel"`` (N:M
    passes in :mod:`~sparsecim.sw.nm_kernel`, activated first), ``"numpy"`` (the kernel off)
    or ``"old"`` (the path before issue 17); the best of ``repeats`` in CPU seconds of this
    process (``seconds``) and in wall seconds (``wall``), and the CPU seconds of the first
    run (``first``: with the kernel, its load from numba's disk cache)."""
    import os

    from ..sw import nm_kernel
    from ..sw._reference import run_trace_reference

    cfg = preset(preset_name)
    trace = schedule_layer(cfg, *_operands(cfg, k, n, pattern), pattern).trace
    if path == "numpy":
        os.environ["SPARSECIM_NO_JIT"] = "1"
    run = run_trace_reference if path == "old" else run_trace
    c0 = time.process_time()
    if path == "kernel":
        nm_kernel.activate()
    run(trace)
    first = time.process_time() - c0
    best = wall = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run(trace)
        best = min(best, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - t0)
    return {"commands": len(trace.steps), "beats": trace.data_beats, "seconds": best,
            "wall": wall, "first": first}


def _in_fresh_process(job, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job, *args).result()


def software_table(preset_name: str, old: bool = True, token: bool = True,
                   repeats: int = 3) -> None:
    """Print the software speed figures (see the module docstring)."""
    print(f"\nSoftware speed on {preset_name}, one token, LLaMA-2-7B shapes (inputs x outputs); "
          f"old = the paths before issue 17, same run")
    print(f"  {'schedule':<24} {'commands':>9} {'beats':>10} {'time':>8} {'CPU':>8} "
          f"{'peak RSS':>9} {'(operands)':>10} {'old CPU':>9} {'old peak':>9} {'speedup':>8}")
    for pattern in ("dense", "2:4"):
        for k, n in LLAMA_SHAPES:
            new = _in_fresh_process(_schedule_job, preset_name, k, n, pattern, False)
            row = (f"  {f'{k}x{n} {pattern}':<24} {new['commands']:>9,} {new['beats']:>10,} "
                   f"{new['seconds']:>7.2f}s {new['cpu']:>7.2f}s {new['peak_mb']:>7,.0f}MB "
                   f"{new['operands_mb']:>8,.0f}MB")
            if old:
                # CPU seconds: the machine is shared, wall times swing with its load.
                ref = _in_fresh_process(_schedule_job, preset_name, k, n, pattern, True)
                row += (f" {ref['cpu']:>8.2f}s {ref['peak_mb']:>7,.0f}MB "
                        f"{ref['cpu'] / new['cpu']:>7.1f}x")
            print(row)
    if token:
        for pattern in ("dense", "2:4"):
            tok = _in_fresh_process(_token_job, preset_name, pattern)
            print(f"  {f'whole token {pattern}':<24} {tok['commands']:>9,} {tok['beats']:>10,} "
                  f"{tok['seconds']:>7.1f}s {tok['cpu']:>7.1f}s {tok['peak_mb']:>7,.0f}MB   "
                  f"({tok['layers']} linears scheduled one after the other)")
    print(f"  {'golden model':<24} {'commands':>9} {'beats':>10} {'cmd/s':>10} {'beats/s':>12} "
          f"{'CPU s':>7} {'old cmd/s':>10} {'old beats/s':>12} {'old CPU s':>9} {'speedup':>8}"
          "  (rates per CPU second, best of the repeats)")
    numpy_rows = []
    for pattern in ("dense", "2:4"):
        for k, n in LLAMA_SHAPES:
            new = _in_fresh_process(_golden_job, preset_name, k, n, pattern, "kernel", repeats)
            row = (f"  {f'{k}x{n} {pattern}':<24} {new['commands']:>9,} {new['beats']:>10,} "
                   f"{new['commands'] / new['seconds']:>10,.0f} "
                   f"{new['beats'] / new['seconds']:>12,.0f} {new['seconds']:>7.3f}")
            if old:
                ref = _in_fresh_process(_golden_job, preset_name, k, n, pattern, "old", 1)
                row += (f" {ref['commands'] / ref['seconds']:>10,.0f} "
                        f"{ref['beats'] / ref['seconds']:>12,.0f} {ref['seconds']:>9.2f} "
                        f"{ref['seconds'] / new['seconds']:>7.1f}x")
            print(row)
            if pattern != "dense":
                alone = _in_fresh_process(_golden_job, preset_name, k, n, pattern, "numpy",
                                          repeats)
                numpy_rows.append(
                    f"  {f'{k}x{n} {pattern}':<24} numpy "
                    f"{alone['beats'] / alone['seconds']:>12,.0f} beats/s, kernel "
                    f"{new['beats'] / new['seconds']:>12,.0f} "
                    f"({alone['seconds'] / new['seconds']:.1f}x); kernel's first run "
                    f"{new['first']:.2f} s CPU (its load included)")
    print("  N:M passes, compiled kernel (sw/nm_kernel.py) against numpy's formulation, same run:")
    for row in numpy_rows:
        print(row)


#: The bench's sweep grid (:func:`sweep_rate`): 4 × 6 × 5 × 3 × 16 × 2 = 11,520 points.
SWEEP_GRID = (
    '[sweep]\n'
    'macro = ["tiny", "flexcim", "paper", {rows = 32, cols = 32, submacros = 8, '
    'act_depth = 64, acc_depth = 64, patterns = [[1, 4], [2, 4], [2, 8], [4, 8]]}]\n'
    'model = ["bert-large", "bart-large", "gpt2-medium", "llama-2-7b", "smollm2-135m", '
    '"opt-1.3b"]\n'
    'sparsify = ["dense", "wanda"]\n'
    'pattern = ["2:4", "1:4", "2:8", "4:8"]\n'
    'mapping = ["auto", "linear", "nm"]\n'
    'tokens = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]\n'
    'tech = ["22nm", "45nm"]\n')


def sweep_rate(workers: int = 2, out: str = "build/bench/sweep") -> dict:
    """Points per second of a sweep of :data:`SWEEP_GRID` on a process pool of ``workers``,
    from a cold cache (``out`` is emptied first; pool start-up included) and again from the
    cache. Prints the figures and returns them."""
    from .sweep import load_spec, run_sweep

    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    spec_path = root / "spec.toml"
    spec_path.write_text(SWEEP_GRID, encoding="utf-8")
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    load_s = time.perf_counter() - t0
    cold = run_sweep(spec, root / "out", executor="process", workers=workers)
    warm = run_sweep(spec, root / "out", executor="process", workers=workers)
    figures = {"points": len(spec.points), "failed": cold.failed, "spec_s": load_s,
               "cold_s": cold.seconds, "cold_rate": len(spec.points) / cold.seconds,
               "cached_s": warm.seconds, "rows": len(cold.rows)}
    print(f"sparsecim bench: sweep of {len(spec.points):,} whole-model points "
          f"({cold.failed} failed), process pool of {workers}")
    rows = [("spec read and resolved", f"{load_s:.2f} s"),
            ("sweep, cold cache (pool start-up included)", f"{cold.seconds:.1f} s"),
            ("design points / second", f"{figures['cold_rate']:,.0f}"),
            ("rerun from the cache (nothing computed)", f"{warm.seconds:.1f} s"),
            ("table rows (per layer + totals)", f"{len(cold.rows):,}")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")
    return figures


def _chip_layer_words(chip, k: int, n: int, tokens: int) -> list[int]:
    """Chip command words of a dense ``k × n`` layer over ``tokens`` tokens, laid out as a
    chip schedule does it: each round gives every macro one weight tile of the same output
    columns (a different slice of the reduction), loads its activations, computes on all
    macros at once and reads the K partial sums as one summed beat per token."""
    cfg = chip.macro
    macros = chip.macros
    tiles_k, tiles_n = -(-k // cfg.reduction), -(-n // cfg.cols)
    entries = min(tokens, cfg.act_depth, cfg.acc_depth)
    words = [encode_chip(chip, config_command("dense"), target=0, span=macros)]
    for _ in range(tiles_n):
        for first in range(0, tiles_k, macros):
            span = min(macros, tiles_k - first)
            for m in range(span):
                words.append(encode_chip(chip, Command(Opcode.LOAD_W, row=0,
                                                       count=cfg.weight_rows), target=m))
                words.append(encode_chip(chip, Command(Opcode.LOAD_A, addr=0, count=entries),
                                         target=m))
            words.append(encode_chip(chip, Command(Opcode.COMPUTE, act_addr=0, acc_addr=0,
                                                   count=entries, accumulate=0), span=span))
            words.append(encode_chip(chip, Command(Opcode.READ, addr=0, count=entries),
                                     span=span))
    words.append(encode_chip(chip, Command(Opcode.END)))
    return words


def chip_rate(chip_name: str = "edge", k: int = 4096, n: int = 11008, tokens: int = 8,
              repeats: int = 3) -> float:
    """Print and return the chip event model's speed (chip commands per CPU second of this
    process, median of ``repeats``: steadier than wall time on a shared machine) on a
    LLaMA-2-7B-sized dense layer (``k × n``, ``tokens`` tokens)."""
    chip = chip_preset(chip_name)
    words = _chip_layer_words(chip, k, n, tokens)
    seconds = []
    for _ in range(repeats):
        t0 = time.process_time()
        timing = chip_counters(chip, words)
        seconds.append(time.process_time() - t0)
    rate = len(words) / statistics.median(seconds)
    print(f"chip event model ({chip_name}, {k}x{n} layer, {tokens} tokens): {len(words):,} "
          f"chip commands, {timing.counters['total']:,} cycles, {rate:,.0f} chip commands / "
          f"CPU second")
    return rate


CHIP_POINTS = tuple((chip, pattern) for chip in ("edge", "large")
                    for pattern in ("dense", "2:4", "4:8", "1:8"))


def chip_points_rate(points=CHIP_POINTS, tokens: int = 128) -> dict:
    """Design points per second of whole-model chip figures on LLaMA-2-7B: one
    :func:`~sparsecim.sw.chip_run.chip_run` per ``(chip preset, pattern)`` of ``points``.
    Prints a line per point and the rate; returns the figures."""
    from ..hw.config import CHIP_PRESETS
    from ..hw.pattern import as_pattern
    from ..sw.chip_run import chip_run, kv_features, shape_specs
    from ..sw.model_shapes import MODELS

    shape = MODELS["llama-2-7b"]
    blocks = max(lin.blocks for lin in shape.linears)
    print(f"\nsparsecim bench: chip figures of the whole LLaMA-2-7B ({len(points)} design "
          f"points, prefill T = {tokens}, every linear placed and priced exactly)")
    seconds = []
    for chip, pattern in points:
        t0 = time.perf_counter()
        specs = shape_specs(shape, [as_pattern(pattern)] * blocks)
        result = chip_run(CHIP_PRESETS[chip], specs, tokens, chip_name=chip,
                          attention=shape.attention, kv=kv_features(shape))
        seconds.append(time.perf_counter() - t0)
        s = result.summary
        print(f"  {chip:<6} {pattern:<6} {seconds[-1]:6.1f} s   decode "
              f"{s['decode_tokens_per_s']:9.3f} tokens/s, prefill {s['prefill_tokens_per_s']:9.2f}"
              f" tokens/s, {s['decode_bound']}-bound")
    total = sum(seconds)
    print(f"  design points / second: {len(points) / total:.3f} ({total:.1f} s for "
          f"{len(points)}; slowest {max(seconds):.1f} s)")
    return {"points": len(points), "seconds": total, "rate": len(points) / total}


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
    parser.add_argument("--sw-only", action="store_true",
                        help="print only the software speed figures")
    parser.add_argument("--sweep-only", action="store_true",
                        help="print only the sweep's design points per second")
    parser.add_argument("--chip-only", action="store_true",
                        help="print only the chip figures: the event model's chip commands "
                             "per second and whole-LLaMA-2-7B design points per second")
    parser.add_argument("--no-old", action="store_true",
                        help="skip the paths before issue 17 in the software figures")
    args = parser.parse_args(argv)

    if args.sw_only:
        software_table(args.preset, old=not args.no_old)
        return 0
    if args.sweep_only:
        sweep_rate()
        return 0
    if args.chip_only:
        chip_rate()
        chip_points_rate()
        return 0

    if args.nm_only:
        return 0 if nm_table(args.preset, args.nm_k, args.nm_n, 1, args.nm_rtl_k,
                             args.nm_rtl_n) else 1
    cfg = preset(args.preset)
    x, w = random_gemm(cfg, args.k, args.n, args.tokens, seed=0)
    trace = schedule_dense(cfg, x, w).trace
    workload = f"{args.preset} {args.k}x{args.n}, {args.tokens} tokens"
    print(f"sparsecim bench: {workload}: {len(trace.steps)} commands, "
          f"{trace.data_beats} data beats")

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
    sim_s, run_s, drv_s, sim_cpu, drv_cpu = [], [], [], [], []
    for _ in range(args.rtl_repeats):
        t0 = time.perf_counter()
        rtl = run_rtl(trace, run_dir=run_dir, build_root=root)
        run_s.append(time.perf_counter() - t0)
        sim_s.append(rtl.wall_seconds)
        sim_cpu.append(rtl.cpu_seconds)
        plain = run_driver(driver, run_dir, limit=4 * rtl.rtl_counters["total"] + 1000)
        drv_s.append(plain.seconds)
        drv_cpu.append(plain.cpu_seconds)
    cycles = rtl.rtl_counters["total"]
    sim_rate = cycles / statistics.median(sim_s)
    # The driver counts clock edges from reset on, as the cocotb test's wall time spans.
    drv_rate = plain.cycles / statistics.median(drv_s)
    cpu_ratio = (cycles / statistics.median(sim_cpu)) / (plain.cycles / statistics.median(drv_cpu))
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
        ("run_rtl / plain C++ driver, cycles per CPU second", f"{cpu_ratio:.2f}"),
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
    software_table(args.preset, old=not args.no_old)
    sweep_rate()
    chip_rate()
    chip_points_rate()
    same = plain.harness_cycles == rtl.harness_cycles
    return 0 if rtl.passed and nm_ok and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
