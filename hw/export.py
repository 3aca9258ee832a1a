"""Verilog export of the top level and of the chip.

``python -m sparsecim.hw.export --preset NAME [--out DIR]`` writes
``DIR/<preset>/sparsecim_top.v`` (``DIR`` defaults to ``build/verilog``); ``--preset all``
exports every preset. ``--chip NAME`` writes ``DIR/chip-<name>/sparsecim_chip.v`` for a chip
preset; ``--chip all`` exports every chip preset small enough to convert
(:data:`CHIP_EXPORT_CELLS`) and names the others.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from amaranth.back import verilog

from .chip import Chip
from .config import CHIP_PRESETS, PRESETS, ChipConfig, MacroConfig
from .top import Top

__all__ = ["TOP_MODULE", "CHIP_MODULE", "CHIP_EXPORT_CELLS", "convert", "verilog_text",
           "chip_verilog_text", "chip_exportable", "main"]

#: Verilog module name of the exported top level.
TOP_MODULE = "sparsecim_top"
#: Verilog module name of the exported chip.
CHIP_MODULE = "sparsecim_chip"
#: Most weight cells a chip may have for its Verilog export. Conversion time and memory grow
#: with the cells: measured, tiny4 (4 × 64 cells, 1.1 MB of Verilog) 5 s, one flexcim macro
#: (4096 cells, 3.2 MB) 29 s, edge (16 flexcim macros, 64 Ki cells, 51 MB) 7.5 CPU-minutes
#: (31 to 38 minutes of wall time on a loaded 2-core machine) and 3.2 GB of memory. large
#: (2048 paper macros, 32 Mi cells, 512 times edge) would take days and terabytes, so it is
#: refused up front.
CHIP_EXPORT_CELLS = 1 << 17


def convert(top, name: str = TOP_MODULE) -> str:
    """Verilog text of ``top`` (a :class:`~sparsecim.hw.top.Top` or
    :class:`~sparsecim.hw.chip.Chip`) as module ``name``.

    Ports are named after the signature (``cmd__payload``, ``status__counters`` …) plus
    ``clk`` and ``rst``.
    """
    return verilog.convert(top, name=name, emit_src=False)


def verilog_text(config: MacroConfig) -> str:
    """Verilog text of :class:`~sparsecim.hw.top.Top` for ``config``."""
    return convert(Top(config=config))


def chip_exportable(chip: ChipConfig) -> bool:
    """Whether ``chip`` is small enough to convert in reasonable time
    (:data:`CHIP_EXPORT_CELLS`)."""
    return chip.cells <= CHIP_EXPORT_CELLS


def chip_verilog_text(chip: ChipConfig) -> str:
    """Verilog text of :class:`~sparsecim.hw.chip.Chip` for ``chip`` as ``sparsecim_chip``."""
    return convert(Chip(chip=chip), CHIP_MODULE)


def _too_large(name: str, chip: ChipConfig) -> str:
    return (f"chip {name}: {chip.macros} {chip.macro.cols}-column macros, {chip.cells} cells, "
            f"is too large to convert to Verilog in reasonable time (limit "
            f"{CHIP_EXPORT_CELLS} cells; the conversion takes minutes per macro)")


def _write(path: Path, text: str, started: float, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"{what}: {path} ({len(text) / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)")


def _names(parser, value: str, known: dict, flag: str) -> list[str]:
    if value == "all":
        return list(known)
    if value in known:
        return [value]
    parser.error(f"{flag} must be one of {', '.join(known)} or 'all', not {value!r}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 for a usage error or a chip too
    large to convert)."""
    parser = argparse.ArgumentParser(
        prog="python -m sparsecim.hw.export",
        description="Write the Verilog of the sparsecim top level or chip for named presets.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", metavar="NAME",
                       help=f"one of {', '.join(PRESETS)}, or 'all' for every preset")
    which.add_argument("--chip", metavar="NAME",
                       help=f"one of {', '.join(CHIP_PRESETS)}, or 'all' for every chip preset "
                            "small enough to convert")
    parser.add_argument("--out", default="build/verilog", type=Path, metavar="DIR",
                        help="output folder; writes DIR/<preset>/sparsecim_top.v or "
                             "DIR/chip-<name>/sparsecim_chip.v (default: build/verilog)")
    args = parser.parse_args(argv)
    if args.preset is not None:
        for name in _names(parser, args.preset, PRESETS, "--preset"):
            config = PRESETS[name]
            started = time.perf_counter()
            _write(args.out / name / f"{TOP_MODULE}.v", verilog_text(config), started,
                   f"{name} ({config.slug})")
        return 0
    names = _names(parser, args.chip, CHIP_PRESETS, "--chip")
    if len(names) == 1 and not chip_exportable(CHIP_PRESETS[names[0]]):
        message = _too_large(names[0], CHIP_PRESETS[names[0]])
        print(f"python -m sparsecim.hw.export: error: {message}", file=sys.stderr)
        return 2
    for name in names:
        chip = CHIP_PRESETS[name]
        if not chip_exportable(chip):
            print(f"skipped {_too_large(name, chip)}")
            continue
        started = time.perf_counter()
        _write(args.out / f"chip-{name}" / f"{CHIP_MODULE}.v", chip_verilog_text(chip), started,
               f"chip {name} ({chip.slug})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
