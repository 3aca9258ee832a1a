"""Verilog export of the top level.

``python -m sparsecim.hw.export --preset NAME [--out DIR]`` writes
``DIR/<preset>/sparsecim_top.v`` (``DIR`` defaults to ``build/verilog``); ``--preset all``
exports every preset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from amaranth.back import verilog

from .config import PRESETS, MacroConfig
from .top import Top

__all__ = ["TOP_MODULE", "convert", "verilog_text", "main"]

#: Verilog module name of the exported top level.
TOP_MODULE = "sparsecim_top"


def convert(top: Top) -> str:
    """Verilog text of ``top`` (a :class:`~sparsecim.hw.top.Top`) as module ``sparsecim_top``.

    Ports are named after the signature (``cmd__payload``, ``status__counters`` …) plus
    ``clk`` and ``rst``.
    """
    return verilog.convert(top, name=TOP_MODULE, emit_src=False)


def verilog_text(config: MacroConfig) -> str:
    """Verilog text of :class:`~sparsecim.hw.top.Top` for ``config``."""
    return convert(Top(config))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 for a usage error)."""
    parser = argparse.ArgumentParser(
        prog="python -m sparsecim.hw.export",
        description="Write the Verilog of the sparsecim top level for named presets.")
    parser.add_argument("--preset", required=True, metavar="NAME",
                        help=f"one of {', '.join(PRESETS)}, or 'all' for every preset")
    parser.add_argument("--out", default="build/verilog", type=Path, metavar="DIR",
                        help="output folder; writes DIR/<preset>/sparsecim_top.v "
                             "(default: build/verilog)")
    args = parser.parse_args(argv)
    if args.preset == "all":
        names = list(PRESETS)
    elif args.preset in PRESETS:
        names = [args.preset]
    else:
        parser.error(f"--preset must be one of {', '.join(PRESETS)} or 'all', "
                     f"not {args.preset!r}")
    for name in names:
        config = PRESETS[name]
        started = time.perf_counter()
        text = verilog_text(config)
        path = args.out / name / f"{TOP_MODULE}.v"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{name}: {path} ({config.slug}, {len(text) / 1e6:.1f} MB, "
              f"{time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
