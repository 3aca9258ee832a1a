"""Helpers and fixtures shared by the test files.

Test files import the helpers (``from conftest import run_cli``: pytest puts ``tests/`` on
``sys.path`` and registers this module as ``conftest``) and request the fixtures by name.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Warnings are errors in the command and its cocotb child, as in the suite, but for cocotb's
# own FutureWarning about +seed (the harness seeds through plusargs, not COCOTB_RANDOM_SEED).
CLI_ENV = os.environ | {
    "PYTHONWARNINGS": "error,ignore:Passing +seed will not be used:FutureWarning"}


def run_cli(*args, cwd=ROOT, env=CLI_ENV):
    """``python -m sparsecim.tb.cli ARGS`` as a user runs it (arguments through ``str``), with
    warnings as errors: the finished process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def int8(shape, seed):
    """Uniform INT8 values over the whole range, as ``np.int8``."""
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)


@pytest.fixture
def cli_main(capsys):
    """The CLI in this process (fast enough for fuzzing): ``cli_main(*args)`` returns status,
    stdout, stderr. An exception escaping ``main`` (a traceback for the user) fails the test by
    itself."""
    from sparsecim.tb.cli import main

    def call(*args):
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exit, after its one line
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return call
