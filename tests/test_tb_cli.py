"""The CLI through its installed entry point, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": ""},
                          timeout=600)


def test_help_lists_subcommands():
    done = _run("--help")
    assert done.returncode == 0
    assert "gemm" in done.stdout


def test_gemm_golden_only_reports_figures():
    done = _run("gemm", "--preset", "tiny", "--k", "37", "--n", "9", "--tokens", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "golden model  outputs equal the int64 matmul reference: yes" in out
    # By hand from the ISA costs: K tiles 16+16+5, N tiles 4+4+1, all 3 tokens resident.
    # CONFIG 1 + LOAD_A of 9 entries (1 + 9*4) + per N tile [LOAD_W 17 + 17 + 6,
    # 3 COMPUTEs of 1+3+2, READ 1+3] * 3 + END 1 = 1 + 37 + 62*3 + 1.
    assert f"cycle model   {1 + 37 + 62 * 3 + 1} cycles" in out
    assert out.rstrip().endswith("RESULT: PASS")


def test_gemm_nm_pattern_reports_its_tiles_and_cycles():
    """1:8 on tiny: a pass covers 4 × 4 × 8 = 128 inputs (26 beats of 5), so K = 300 is 3 K
    tiles; N = 6 is 2 N tiles; 2 tokens, 6 entries resident."""
    done = _run("gemm", "--preset", "tiny", "--k", "300", "--n", "6", "--tokens", "2",
                "--pattern", "1:8")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "(K 300 x N 6) 1:8" in out
    assert "6 array tiles of 128 inputs x 4 outputs" in out
    # CONFIG 1 + LOAD_A (1 + 6*26) + per N tile [2 full K tiles x LOAD_W (1+16), the last
    # K tile's LOAD_W, 3 x COMPUTE (1+2+2), READ (1+2)] + END 1. The last K tile has 44 inputs
    # = 6 groups of 8: rows 0..3 of cluster 0 (sub-macro 0), rows 0..1 of cluster 1
    # (sub-macro 1), so it loads global rows 0..5: 1 + 6.
    per_n_tile = 2 * (1 + 16) + (1 + 6) + 3 * (1 + 2 + 2) + 1 + 2
    assert f"cycle model   {1 + 1 + 6 * 26 + 2 * per_n_tile + 1} cycles" in out
    assert 1 + 1 + 6 * 26 + 2 * per_n_tile + 1 == 277
    assert "golden model  outputs equal the int64 matmul reference: yes" in out


@pytest.mark.cosim
def test_gemm_rtl_passes_with_pauses(tmp_path):
    done = _run("gemm", "--preset", "tiny", "--k", "37", "--n", "9", "--tokens", "3",
                "--rtl", "--pause", "0.3", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTL outputs   match golden: yes" in done.stdout
    assert "vs model 225: equal" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["gemm", "--k", "0"], "argument --k: must be a positive integer, not 0"),
    (["gemm", "--pause", "1.5"], "argument --pause: must be a number in [0, 1), not 1.5"),
    (["gemm", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["gemm", "--preset", "tiny", "--pattern", "3:4"],
     "sparsecim: error: pattern 3:4 is not supported by preset tiny; supported are dense "
     "and 1:2, 1:4, 1:8, 2:4, 2:8, 4:8"),
    (["gemm", "--pattern", "2-4"], "sparsecim: error: pattern must be 'N:M'"),
], ids=["k", "pause", "preset", "unsupported-pattern", "malformed-pattern"])
def test_bad_arguments_fail_cleanly(args, message):
    done = _run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_workload_that_could_wrap_is_refused_without_traceback():
    done = _run("gemm", "--preset", "tiny", "--k", "200000", "--n", "1", "--tokens", "1")
    assert done.returncode == 2
    assert done.stderr == ("sparsecim: error: K must be at most 131071 for 32-bit accumulators "
                           "(larger K could wrap), not 200000\n")
