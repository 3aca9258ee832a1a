"""Run a trace on the RTL under Verilator and cocotb; the entry point for tests and the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.trace import Trace
from ..sw.events import Events, count_events
from ..sw.golden import GoldenResult, run_trace
from .harness import HARNESS_TOP
from .verilator import BUILD_ROOT, build

__all__ = ["StreamPauses", "Pauses", "RtlReport", "run_rtl", "run_rtl_batch", "stream_plusargs"]


class StreamPauses:
    """Pause probabilities of a harness's streams, one dataclass field per stream named as
    the harness names it; shared by :class:`Pauses` and the chip's
    :class:`~sparsecim.tb.chip_cosim.ChipPauses`."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"pause {f.name} must be in [0, 1), not {value!r}")

    def plusargs(self) -> list[str]:
        # The harness compares an 8-bit LFSR byte against a threshold.
        return [f"+{f.name}_pause={round(getattr(self, f.name) * 256)}"
                for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class Pauses(StreamPauses):
    """Probability that a stream idles in a cycle: valid low on ``cmd``/``data`` (the
    harness plays them), ready low on ``result``. Each in [0, 1)."""
    cmd: float = 0.0
    data: float = 0.0
    result: float = 0.0


@dataclass
class RtlReport:
    """What the scoreboard found, plus where the run's files are."""
    passed: bool
    report: dict
    run_dir: Path
    waves: Path | None

    def __getattr__(self, name):
        try:
            return self.report[name]
        except KeyError:
            raise AttributeError(name) from None


def run_rtl(trace: Trace, *, run_dir: str | Path, pauses: Pauses = Pauses(), seed: int = 1,
            reset_at: int | None = None, waves: bool = False, quiet: bool = True,
            build_root: Path | None = None, golden: GoldenResult | None = None,
            events: Events | None = None) -> RtlReport:
    """Run ``trace`` on the Verilator build of its config and scoreboard it.

    The golden model runs once, here (or not at all when ``golden`` is given); the cocotb
    process gets its results from ``golden.npz`` and its counters from the job file, and
    never parses the trace.

    Parameters
    ----------
    trace : Trace
        The program.
    run_dir : path
        Folder for the run's files (trace, stream files, job, golden results, report, log,
        waves).
    pauses : Pauses
        Random idle cycles on each stream.
    seed : int
        Seed of the harness LFSRs.
    reset_at : int or None
        Assert reset again this many cycles after the first reset and rerun the trace from
        its start; the scoreboard checks the run after that reset.
    waves : bool
        Record a waveform (FST where liblz4 is available, VCD otherwise).
    golden : GoldenResult, optional
        ``run_trace(trace)`` if the caller has already run it; it is trusted to be of this
        trace.
    events : Events, optional
        ``count_events(trace)`` if the caller has already counted them (trusted likewise).

    Returns
    -------
    RtlReport
        ``passed`` is true only if every result word, the error status and every counter
        agree with the golden model and the cycle model.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sim = build(trace.config, waves=waves, root=build_root or BUILD_ROOT)
    trace_path = run_dir / "trace.txt"
    trace.save(trace_path)
    cmd_file, data_file, result_file = (run_dir / f"{s}.hex" for s in ("cmd", "data", "result"))
    cmd_file.write_text("".join(f"{w:x}\n" for w in trace.commands))
    data_file.write_text("".join(f"{w:x}\n" for w in trace.data))
    result_file.write_text("")
    report_path = run_dir / "report.json"
    report_path.unlink(missing_ok=True)

    if golden is None:
        golden = run_trace(trace)
    golden_path = run_dir / "golden.npz"
    np.savez(golden_path, results=golden.results)
    model_cycles = golden.counters["total"]
    job = {
        "config": trace.config.to_dict(),
        "golden": {"results": str(golden_path), "counters": dict(golden.counters),
                   "error": golden.error.name, "halted": golden.halted,
                   "commands": golden.commands, "data_left": golden.data_left},
        "events": (events or count_events(trace)).rtl_counters(),
        "result_file": str(result_file),
        "report": str(report_path),
        "reset_at": reset_at,
        "timeout_cycles": _timeout(model_cycles, pauses),
    }
    _simulate(sim, run_dir, job, pauses=pauses, seed=seed, waves=waves, quiet=quiet)
    report = json.loads(report_path.read_text())
    wave_file = None
    if sim.waves:
        wave_file = run_dir / f"dump.{sim.waves}"
    return RtlReport(report["passed"], report, run_dir, wave_file)


def _timeout(cycles: int, pauses) -> int:
    slowest = 1.0 / (1.0 - max(dataclasses.astuple(pauses)))
    # Generous: stalls stretch the run by about 1/(1-p); a hang still ends.
    return int(4 * slowest * cycles) + 1000


def _reap_interrupted(tb) -> None:
    """Kill and wait every still-unwaited child process held by the frames ``tb`` went through.

    On Ctrl-C, ``subprocess.run`` (which the cocotb runner starts the simulator with) kills
    its child but, by design, does not wait for it after a ``KeyboardInterrupt``; the
    ``Popen``, unreachable but for the interrupted frames, would be left unwaited (a zombie
    and a ``ResourceWarning`` at exit)."""
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, subprocess.Popen) and value.returncode is None:
                value.kill()
                value.wait()
        tb = tb.tb_next


def stream_plusargs(run_dir: Path, pauses, seed: int) -> list[str]:
    """Plusargs of the harness: ``+<s>_file=run_dir/<s>.hex`` for every stream of ``pauses``
    (a dataclass of one pause probability per stream, in harness stream names), the seed and
    the pause thresholds."""
    names = [f.name for f in dataclasses.fields(pauses)]
    return ([f"+{name}_file={run_dir / f'{name}.hex'}" for name in names]
            + [f"+seed={seed}", *pauses.plusargs()])


def _simulate(sim, run_dir: Path, job: dict, *, pauses, seed: int, waves: bool,
              quiet: bool, test_module: str = "sparsecim.tb.cocotb_top") -> None:
    """Run the cocotb test ``test_module`` on ``sim`` for ``job`` (stream files in
    ``run_dir``, one per field of ``pauses``)."""
    report_path = Path(job["report"])
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=1))

    runner = sim.runner
    log = io.StringIO()
    redirect = contextlib.redirect_stdout(log) if quiet else contextlib.nullcontext()
    try:
        with redirect:
            runner.test(
                test_module=test_module,
                hdl_toplevel=HARNESS_TOP,
                build_dir=sim.build_dir,
                test_dir=run_dir,
                results_xml=str(run_dir / "results.xml"),
                plusargs=stream_plusargs(run_dir, pauses, seed),
                extra_env={"SPARSECIM_JOB": str(job_path)},
                waves=waves,
                log_file=run_dir / "sim.log",
            )
    except SystemExit:
        # Under pytest the runner exits on a failed cocotb test; the report says why.
        pass
    except KeyboardInterrupt as exc:
        _reap_interrupted(exc.__traceback__)
        raise
    if not report_path.exists():
        raise RuntimeError(f"simulation ended without a report; see {run_dir / 'sim.log'}")


@dataclass
class BatchReport:
    """What the scoreboard found over a batch: ``passed``, the number of ``segments`` and
    of ``segments_passed``, the ``failed`` ones with their problems, ``rtl_cycles``."""
    passed: bool
    report: dict
    run_dir: Path

    def __getattr__(self, name):
        try:
            return self.report[name]
        except KeyError:
            raise AttributeError(name) from None


def run_rtl_batch(traces: list[Trace], *, run_dir: str | Path, pauses: Pauses = Pauses(),
                  seed: int = 1, quiet: bool = True,
                  build_root: Path | None = None) -> BatchReport:
    """Run many traces under one simulator start, each scoreboarded as :func:`run_rtl` does.

    The traces' words are concatenated in the stream files; before each trace the harness is
    reset with ``resume`` set, so it continues where the previous trace stopped.

    Parameters
    ----------
    traces : list of Trace
        Programs for one config. Each must halt on its last command (END or an illegal one)
        and consume exactly its data beats, or the next would start in the wrong place; and
        must not read state it did not write (the RTL keeps its memories across the resets).

    Raises
    ------
    ValueError
        For traces of different configs, or one that does not halt exactly at its end.
    """
    if not traces:
        raise ValueError("traces must be at least one trace, not none")
    cfg = traces[0].config
    timeouts = []
    for index, trace in enumerate(traces):
        if trace.config != cfg:
            raise ValueError(f"trace {index} must be for {cfg.slug}, not {trace.config.slug}")
        golden = run_trace(trace)
        if not golden.halted or golden.commands != len(trace.steps) or golden.data_left:
            raise ValueError(f"trace {index} must halt on its last command with no data left "
                             f"over, not after {golden.commands} of {len(trace.steps)} "
                             f"commands with {golden.data_left} beats left")
        timeouts.append(_timeout(golden.counters["total"], pauses))
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sim = build(cfg, root=build_root or BUILD_ROOT)
    (run_dir / "cmd.hex").write_text("".join(f"{w:x}\n" for t in traces for w in t.commands))
    (run_dir / "data.hex").write_text("".join(f"{w:x}\n" for t in traces for w in t.data))
    (run_dir / "result.hex").write_text("")
    report_path = run_dir / "report.json"
    report_path.unlink(missing_ok=True)
    job = {"segments": [t.to_text() for t in traces], "timeout_cycles": timeouts,
           "result_file": str(run_dir / "result.hex"), "report": str(report_path)}
    _simulate(sim, run_dir, job, pauses=pauses, seed=seed, waves=False, quiet=quiet)
    report = json.loads(report_path.read_text())
    return BatchReport(report["passed"], report, run_dir)
