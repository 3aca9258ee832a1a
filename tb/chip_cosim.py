"""Run chip traces on the chip RTL under Verilator and cocotb, scoreboarded against the chip
golden model (:func:`sparsecim.sw.chip_golden.run_chip_trace`).

The same harness, build cache and cocotb runner as a macro's :mod:`sparsecim.tb.cosim`: the
harness of :class:`~sparsecim.hw.chip.Chip` has players for ``cmd``, ``weights`` and ``acts``
and a recorder for ``result`` (:mod:`sparsecim.tb.harness`), the cocotb module
:mod:`sparsecim.tb.chip_cocotb` applies resets and reads the status, and this module
compares. What is compared is ``docs/chip.md``'s promise: results bit for bit; with no pauses
every chip and macro counter exactly; with pauses the counters pauses cannot move
(:data:`PAUSE_EXACT_CHIP`, :data:`PAUSE_EXACT_MACRO`); after an error only ``done``,
``error`` and ``error_macro``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.isa import COUNTERS, EVENT_COUNTERS, ErrorCode, chip_result_layout, unpack_beats
from .cosim import StreamPauses, _simulate, _timeout
from .scoreboard import RESET_MARK
from .verilator import BUILD_ROOT, build

__all__ = ["ChipPauses", "ChipRtlReport", "PAUSE_EXACT_CHIP", "PAUSE_EXACT_MACRO",
           "compare_chip", "run_chip_rtl", "run_chip_rtl_batch"]

#: Chip counters that stay exact under stream pauses (``docs/chip.md``).
PAUSE_EXACT_CHIP = ("dispatch", "w_load", "a_load", "read")
#: Macro counters that stay exact under stream pauses.
PAUSE_EXACT_MACRO = ("fetch", "load", "compute", "read", *EVENT_COUNTERS)


@dataclass(frozen=True)
class ChipPauses(StreamPauses):
    """Probability that a chip stream idles in a cycle: valid low on ``cmd``, ``weights`` and
    ``acts`` (the harness plays them), ready low on ``result``. Each in [0, 1)."""
    cmd: float = 0.0
    weights: float = 0.0
    acts: float = 0.0
    result: float = 0.0

    @property
    def any(self) -> bool:
        return any(dataclasses.astuple(self))


@dataclass
class ChipRtlReport:
    """What the scoreboard found: ``passed``, the ``problems`` of every failed segment (each
    prefixed with its index), ``segments`` and ``segments_passed``, ``rtl_cycles`` (the chip
    ``total`` summed over segments), ``wall_seconds`` of the simulation, the run folder, and
    ``results``: the result beats the RTL sent for each segment (``(beats, cols)`` arrays)."""
    passed: bool
    problems: list
    segments: int
    segments_passed: int
    rtl_cycles: int
    wall_seconds: float
    run_dir: Path
    results: list = dataclasses.field(default_factory=list, repr=False)


def _run_golden(trace):
    from ..sw.chip_golden import run_chip_trace
    return run_chip_trace(trace)


def compare_chip(golden, rtl: dict, results: np.ndarray, *, paused: bool) -> list[str]:
    """Problems (empty if none) of one RTL run against the golden model's result.

    Parameters
    ----------
    golden : ChipGoldenResult
        ``results`` (beats × cols), ``error``, ``error_macro``, ``counters`` and
        ``macro_counters``.
    rtl : dict
        The status :mod:`~sparsecim.tb.chip_cocotb` read (``counters``, ``macros``,
        ``error``, ``error_macro``, ``done``, ``timed_out``, ``harness_cycles``,
        ``harness_error``).
    results : ndarray
        Result beats the harness recorded after the run's last reset.
    paused : bool
        The streams paused: compare only :data:`PAUSE_EXACT_CHIP` and
        :data:`PAUSE_EXACT_MACRO`.
    """
    problems = []
    if rtl["harness_error"]:
        problems.append("the harness could not read a stream file")
    if rtl["timed_out"] or not rtl["done"]:
        return problems + ["the chip never raised done (timed out)"]
    if rtl["error"] != golden.error.name:
        problems.append(f"error {rtl['error']}, golden {golden.error.name}")
    if golden.error != ErrorCode.NONE:
        if rtl["error_macro"] != golden.error_macro:
            problems.append(f"error_macro {rtl['error_macro']}, golden {golden.error_macro}")
        return problems  # after an error nothing else is promised
    want = np.asarray(golden.results)
    if results.shape != want.shape:
        problems.append(f"RTL sent {results.shape[0]} result beats, golden {want.shape[0]}")
    else:
        diff = np.argwhere(results != want)
        if diff.size:
            beat, lane = diff[0]
            problems.append(f"{len(diff)} result lanes differ; first beat {beat} lane {lane}: "
                            f"RTL {results[beat, lane]}, golden {want[beat, lane]}")
    chip_names = PAUSE_EXACT_CHIP if paused else tuple(golden.counters)
    macro_names = PAUSE_EXACT_MACRO if paused else tuple(golden.macro_counters[0])
    for name in chip_names:
        if rtl["counters"][name] != golden.counters[name]:
            problems.append(f"chip {name} {rtl['counters'][name]}, "
                            f"golden {golden.counters[name]}")
    for k, (got, expected) in enumerate(zip(rtl["macros"], golden.macro_counters,
                                            strict=True)):
        problems += [f"macro {k} {name} {got[name]}, golden {expected[name]}"
                     for name in macro_names if got[name] != expected[name]]
        if got["total"] != sum(got[name] for name in COUNTERS if name != "total"):
            problems.append(f"macro {k} total {got['total']} is not the sum of its categories")
    # The harness counts the cycles before done itself: the chip's total, independently.
    if rtl["counters"]["total"] != rtl["harness_cycles"]:
        problems.append(f"chip total {rtl['counters']['total']}, harness counted "
                        f"{rtl['harness_cycles']} cycles")
    return problems


def _recorded_groups(chip, path: Path) -> list[np.ndarray]:
    """The result beats the harness recorded after each reset, one array per reset."""
    groups = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line == RESET_MARK:
            groups.append([])
        elif line:
            groups[-1].append(int(line, 16))
    layout = chip_result_layout(chip)
    return [unpack_beats(layout, g) if g else np.zeros((0, chip.macro.cols), dtype=np.int64)
            for g in groups]


def _check_batchable(index: int, golden, trace) -> None:
    """A trace after which the next starts in the right place: it halts on END without error,
    every command taken (the chip golden model says so)."""
    if golden.error != ErrorCode.NONE or not golden.halted:
        raise ValueError(f"trace {index} must halt on END without error to be batched, not "
                         f"with {golden.error.name}; run it alone with run_chip_rtl")
    plan = trace.plan()
    if len(plan.steps) != len(trace.steps):
        raise ValueError(f"trace {index} must end with its END, not have "
                         f"{len(trace.steps) - len(plan.steps)} commands after it")


def run_chip_rtl_batch(traces: list, *, run_dir: str | Path, pauses: ChipPauses = ChipPauses(),
                       seed: int = 1, reset_at: int | None = None, waves: bool = False,
                       quiet: bool = True, build_root: Path | None = None,
                       goldens: list | None = None) -> ChipRtlReport:
    """Run chip traces under one simulator start and scoreboard each against the golden model.

    The traces' words are concatenated in the stream files; before each the chip is reset
    with the harness's ``resume`` set, so it continues where the previous one stopped.

    Parameters
    ----------
    traces : list of ChipTrace
        Programs for one chip. With more than one, each must halt on its END without error
        (a trace that errs leaves words unread: run it alone).
    run_dir : path
        Folder of the stream files, the job, the report and the logs.
    pauses : ChipPauses
        Random idle cycles on each stream.
    seed : int
        Seed of the harness's LFSRs.
    reset_at : int, optional
        Reset again this many cycles into the first trace and run it from its start; the
        scoreboard checks the run after that reset.
    goldens : list, optional
        ``run_chip_trace`` of each trace, if the caller has them.

    Raises
    ------
    ValueError
        For no traces, traces of different chips, or a batched trace that does not halt on
        its END without error.
    """
    if not traces:
        raise ValueError("traces must be at least one chip trace, not none")
    chip = traces[0].config
    goldens = goldens or [_run_golden(t) for t in traces]
    for index, (trace, golden) in enumerate(zip(traces, goldens, strict=True)):
        if trace.config != chip:
            raise ValueError(f"trace {index} must be for {chip.slug}, not {trace.config.slug}")
        if len(traces) > 1:
            _check_batchable(index, golden, trace)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sim = build(chip, waves=waves, root=build_root or BUILD_ROOT)
    for name, words in (("cmd", "commands"), ("weights", "weights"), ("acts", "acts")):
        (run_dir / f"{name}.hex").write_text(
            "".join(f"{w:x}\n" for t in traces for w in getattr(t, words)))
    result_file = run_dir / "result.hex"
    result_file.write_text("")
    report_path = run_dir / "report.json"
    report_path.unlink(missing_ok=True)
    segments = []
    for index, golden in enumerate(goldens):
        # The model's count, which the RTL cannot beat: the wait for done is one timer up
        # to it (tb/cocotb_top._wait_done). A trace that errs has no counters: its halt
        # cycle sizes the timeout and done is awaited from the start.
        expected = golden.counters["total"] if golden.counters else None
        cycles = expected if expected is not None else golden.halt + 1
        segments.append({"timeout_cycles": _timeout(cycles, pauses),
                         "expected_cycles": expected,
                         "reset_at": reset_at if index == 0 else None})
    job = {"config": chip.to_dict(), "segments": segments, "report": str(report_path)}
    _simulate(sim, run_dir, job, pauses=pauses, seed=seed, waves=waves, quiet=quiet,
              test_module="sparsecim.tb.chip_cocotb")
    report = json.loads(report_path.read_text())
    groups = _recorded_groups(chip, result_file)
    if reset_at is not None and groups:
        groups.pop(0)  # beats recorded before the mid-trace reset
    problems, passed, cycles = [], 0, 0
    for index, golden in enumerate(goldens):
        if index >= len(report["segments"]):
            problems.append(f"segment {index}: not run (an earlier one timed out)")
            continue
        rtl = report["segments"][index]
        found = compare_chip(golden, rtl, groups[index], paused=pauses.any)
        cycles += rtl["counters"]["total"]
        passed += not found
        problems += [f"segment {index}: {p}" for p in found]
    return ChipRtlReport(passed == len(traces), problems, len(traces), passed, cycles,
                         report["wall_seconds"], run_dir, groups[:len(traces)])


def run_chip_rtl(trace, *, run_dir: str | Path, pauses: ChipPauses = ChipPauses(),
                 seed: int = 1, reset_at: int | None = None, waves: bool = False,
                 quiet: bool = True, build_root: Path | None = None,
                 golden=None) -> ChipRtlReport:
    """Run one chip trace on the RTL and scoreboard it (:func:`run_chip_rtl_batch` of one
    trace; it may end in an error)."""
    return run_chip_rtl_batch([trace], run_dir=run_dir, pauses=pauses, seed=seed,
                              reset_at=reset_at, waves=waves, quiet=quiet,
                              build_root=build_root,
                              goldens=None if golden is None else [golden])
