"""``sparsecim run`` in ``tb``: the run folder and the RTL step around the pipeline.

The work of a run (model → sparsify → map → schedule → golden → figures) is
:func:`sparsecim.sw.pipeline.run_layers`; this module gives it the RTL step (Verilator
through :func:`~sparsecim.tb.cosim.run_rtl`, a whole layer or ``rtl_sample`` of its output
tiles; :func:`layer_rtl_step` is the same step for the one layer of ``sparsecim gemm`` and
``sparsecim layer``) and writes the report and the resolved settings into the run folder,
each by an atomic rename, with an :data:`INCOMPLETE` marker while the run works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..sw.golden import run_trace
from ..sw.pipeline import (
    MappedLayer,
    RtlFigures,
    RtlStep,
    RunError,
    RunSettings,
    run_layers,
    sample_tiles,
    settings_toml,
    validate_settings,
)
from ..sw.records import LayerRecord, summarize
from .outputs import OutputError, atomic_write, check_output_folder
from .report import write_report

__all__ = ["RunResult", "run", "rtl_step", "layer_rtl_step", "INCOMPLETE"]


def _rtl_tiles(s: RunSettings, name: str, mapped: MappedLayer, folder: Path,
               pauses) -> RtlFigures:
    """Run ``s.rtl_sample`` output tiles of a layer on the RTL.

    Each tile's trace runs alone on the golden model, whose outputs must equal the layer's
    expected columns, and on Verilator, scoreboarded against that golden run. The cycles are
    the sum over the tiles, the match true only if every tile passed both checks.
    """
    from .cosim import run_rtl

    tiles = sample_tiles(s.seed, name, mapped.n_tiles, s.rtl_sample)
    cycles, passed, outputs = 0, True, 0
    for j in tiles:
        schedule, columns = mapped.output_tile(j)
        golden = run_trace(schedule.trace)
        passed = passed and bool(np.array_equal(schedule.assemble(golden.results),
                                                mapped.expected[:, columns]))
        rtl = run_rtl(schedule.trace, run_dir=folder / f"tile{j}", pauses=pauses,
                      golden=golden)
        passed = passed and bool(rtl.passed)
        cycles += int(rtl.rtl_cycles)
        outputs += len(columns)
    return RtlFigures(cycles=cycles, match=passed, run_dir=str(folder.resolve()),
                      coverage=outputs / mapped.expected.shape[1], tiles=tiles)


def layer_rtl_step(run_dir: Path, *, pause: float = 0.0, waves: bool = False,
                   quiet: bool = True) -> RtlStep:
    """The RTL step of one whole layer (:data:`~sparsecim.sw.pipeline.RtlStep`), that of
    ``sparsecim gemm`` and ``sparsecim layer``: the layer's trace on Verilator in ``run_dir``
    with idle probability ``pause`` on every stream, scoreboarded against its golden run (and
    its events). The figures carry the scoreboard's :class:`~sparsecim.tb.cosim.RtlReport`
    as ``report``; ``waves`` records a waveform, ``quiet`` hides the simulator's output."""
    def run_layer_rtl(name: str, mapped: MappedLayer, golden, events) -> RtlFigures:
        from .cosim import Pauses, run_rtl

        rtl = run_rtl(mapped.trace, run_dir=run_dir, pauses=Pauses(pause, pause, pause),
                      waves=waves, quiet=quiet, golden=golden, events=events)
        return RtlFigures(cycles=int(rtl.rtl_cycles), match=bool(rtl.passed),
                          run_dir=str(rtl.run_dir), report=rtl)
    return run_layer_rtl


def rtl_step(settings: RunSettings, folder: Path) -> RtlStep:
    """The RTL step of a run (:data:`~sparsecim.sw.pipeline.RtlStep`): each selected layer on
    Verilator under ``folder/<layer>``, with the settings' stream pauses, scoreboarded against
    its golden run (and its events); ``rtl_sample`` of its output tiles when the setting asks
    for fewer than the layer has and the mapping is tiled."""
    def run_layer_rtl(name: str, mapped: MappedLayer, golden, events) -> RtlFigures:
        from .cosim import Pauses

        if settings.chip_config() is not None and mapped.operands is not None:
            from .chip_report import chip_layer_rtl  # the layer's chip trace on the chip RTL

            return chip_layer_rtl(settings, name, mapped, folder / name)
        sample = settings.rtl_sample
        if sample and mapped.output_tile and sample < mapped.n_tiles:
            pauses = Pauses(settings.pause, settings.pause, settings.pause)
            return _rtl_tiles(settings, name, mapped, folder / name, pauses)
        whole = layer_rtl_step(folder / name, pause=settings.pause)
        return whole(name, mapped, golden, events)
    return run_layer_rtl


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    settings : RunSettings
    records : list of LayerRecord
    summary : dict
        :func:`~sparsecim.sw.records.summarize` of the records.
    run_dir : Path
    files : dict
        Report files by kind (``json``, ``csv``, ``markdown``, plot names) and ``settings``.
    """
    settings: RunSettings
    records: list[LayerRecord]
    summary: dict
    run_dir: Path
    files: dict
    chip: object = None

    @property
    def passed(self) -> bool:
        return self.summary["passed"]


def run(settings: RunSettings, *, on_step: Callable[[str, str], None] | None = None
        ) -> RunResult:
    """Run every step for ``settings`` and write the report into its run folder.

    The settings are validated before the folder is touched. While the run works the folder
    holds an :data:`INCOMPLETE` marker (an older run's results are removed first); the report
    and ``settings.toml`` appear, each by an atomic rename, only when every step is done, and
    then the marker goes. A run that fails or is interrupted leaves the marker saying so.

    Parameters
    ----------
    settings : RunSettings
        Validated (from :func:`~sparsecim.sw.pipeline.load_settings`).
    on_step : callable, optional
        ``on_step(kind, text)`` with ``kind`` ``"begin"`` or ``"end"`` around loading the
        model, each layer's golden run and each RTL run, and once ``"plan"`` with the number
        of golden and RTL steps as ``text`` (for a progress bar).

    Returns
    -------
    RunResult

    Raises
    ------
    RunError
        For a mistake in the settings (:func:`~sparsecim.sw.pipeline.validate_settings`), a
        run folder that cannot be written, or one found while loading (a model that cannot be
        loaded, a layer the macro cannot run).
    """
    validate_settings(settings)
    cfg = settings.macro_config()
    try:
        run_dir = check_output_folder(settings.run_dir(), what="run folder")
    except OutputError as exc:
        raise RunError(str(exc)) from None
    folder = _RunFolder(run_dir)
    folder.begin()
    try:
        records, quality = run_layers(cfg, settings, step=on_step,
                                      rtl=rtl_step(settings, run_dir / "rtl"))
        chip = None
        if settings.chip_config() is not None:  # the chip figures (sparsecim.sw.chip_run)
            from .chip_report import chip_step

            if on_step:
                on_step("begin", "chip figures")
            chip = chip_step(settings, records)
            if on_step:
                on_step("end", "chip figures")
        files = folder.publish(records, settings, quality, chip)
    except BaseException as exc:
        folder.abandon(exc)
        raise
    summary = summarize(records)
    if quality is not None:
        summary["quality"] = quality
    return RunResult(settings, records, summary, run_dir, files, chip)


#: The marker file of a run folder whose run has not finished: it says whether the run is
#: still going, failed or was interrupted. The results of a finished run never sit beside it.
INCOMPLETE = "INCOMPLETE"

#: What a run publishes at the top of its folder (the report's files and its settings); a new
#: run removes those of an older one before it starts, so they never mix.
_RESULTS = ("settings.toml", "layers.json", "layers.csv", "report.md", "*.png", "chip.*")


class _RunFolder:
    """The one writer of a run folder's results.

    :meth:`begin` marks the folder :data:`INCOMPLETE` and removes an older run's results;
    :meth:`publish` writes the report and ``settings.toml`` into a private staging folder,
    renames each file into place (each rename atomic) and only then removes the marker;
    :meth:`abandon` records in the marker why the run stopped (failed or interrupted).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.marker = run_dir / INCOMPLETE
        self.staging = run_dir / f".staging{os.getpid()}"

    def _mark(self, text: str) -> None:
        with atomic_write(self.marker) as out:
            out.write(f"{text} ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})\n"
                      "The files here are not the results of a finished run.\n")

    def begin(self) -> None:
        try:
            self._mark("running")
            for pattern in _RESULTS:
                for old in self.run_dir.glob(pattern):
                    old.unlink()
        except OSError as exc:
            raise RunError(f"run folder {self.run_dir} cannot be written: "
                           f"{exc.strerror or exc}") from None

    def publish(self, records: list[LayerRecord], settings: RunSettings,
                quality: dict | None = None, chip=None) -> dict:
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            staged = write_report(records, self.staging, settings=settings.as_dict(),
                                  plots=settings.plots)
            if quality is not None:
                with staged["markdown"].open("a") as report:
                    report.write("\n## Model quality (float weights, sparsified vs dense)\n\n"
                                 + "".join(f"- {key}: {value:.6g}\n" if isinstance(value, float)
                                           else f"- {key}: {value}\n"
                                           for key, value in quality.items()))
            if chip is not None:
                from .chip_report import write_chip_report

                staged.update(write_chip_report(chip, self.staging, plots=settings.plots))
            with atomic_write(self.staging / "settings.toml") as out:
                out.write(settings_toml(settings))
            staged["settings"] = self.staging / "settings.toml"
            files = {}
            for kind, path in staged.items():
                final = self.run_dir / Path(path).name
                os.replace(path, final)
                files[kind] = final
            self.marker.unlink()
        except OSError as exc:
            raise RunError(f"run folder {self.run_dir} cannot be written: "
                           f"{exc.strerror or exc}") from None
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        return files

    def abandon(self, exc: BaseException) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        why = ("interrupted" if isinstance(exc, KeyboardInterrupt)
               else f"failed: {' '.join(str(exc).split()) or type(exc).__name__}")
        with contextlib.suppress(OSError, OutputError):
            self._mark(why)
