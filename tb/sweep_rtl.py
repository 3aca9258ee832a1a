"""RTL verification jobs of a sweep: a sampled set of output tiles per design point, chosen by a
seed, run on Verilator and compared with the golden model and the closed-form cycle model.

A shape table has no weights, so a tile's operands are random (seeded by the sweep seed, the
layer and the tile) with the point's declared pattern, scheduled as the point runs it. A job
passes when the golden model's outputs equal the integer matmul, the RTL's results and
counters equal the golden model's (:func:`~sparsecim.tb.cosim.run_rtl`), and the RTL's cycles
equal the closed-form model's (:func:`~sparsecim.sw.sweep_model.closed_events`). Jobs run on
the sweep's executors; each worker builds its Verilator model once per macro, in its own
scratch folder (``OUT/rtl/worker-<pid>/build``).
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from pathlib import Path

import numpy as np

from ..hw.config import MacroConfig
from ..sw.golden import run_trace
from ..sw.model_shapes import MODELS as SHAPE_TABLES
from ..sw.nm import NMPattern, prune_magnitude
from ..sw.pipeline import sample_tiles
from ..sw.reference import matmul_reference
from ..sw.schedule import as_pattern, schedule_layer
from ..sw.sweep_model import closed_events, tiling

__all__ = ["RTL_COLUMNS", "rtl_jobs", "run_rtl_job", "run_rtl_jobs"]

#: Columns of ``rtl.csv``.
RTL_COLUMNS = ("job", "macro", "model", "layer", "inputs", "outputs", "tile", "columns",
               "tokens", "pattern", "runs_as", "golden_match", "rtl_match", "rtl_cycles",
               "model_cycles", "passed", "error")


def _runs_as(point: dict) -> tuple[tuple, tuple]:
    declared = (1, 1) if point["sparsify"] == "dense" else as_pattern(point["pattern"])
    mapping = point["mapping"] if point["mapping"] != "auto" else (
        "linear" if declared == (1, 1) else "nm")
    return declared, (1, 1) if mapping == "linear" else declared


def rtl_jobs(points: list, results: dict, sample: int, seed: int) -> list[dict]:
    """The RTL jobs of the points that succeeded (``results``: key → result): per layer of
    each point's model, ``sample`` output tiles (:func:`sample_tiles` of the run pipeline,
    seeded by ``seed`` and ``model.layer``). Points the RTL cannot tell apart (they differ
    only in technology) share their jobs."""
    jobs = {}
    for point in points:
        if results.get(point["key"], {}).get("status") != "ok":
            continue
        cfg = MacroConfig.from_dict(point["macro_config"])
        declared, stored = _runs_as(point)
        for row in SHAPE_TABLES[point["model"]].linears:
            name = f"{point['model']}.{row.name}"
            n_tiles = tiling(cfg, row.inputs, row.outputs, stored).n_tiles
            for tile in sample_tiles(seed, name, n_tiles, sample):
                job = {"macro": point["macro"], "macro_config": point["macro_config"],
                       "model": point["model"], "layer": row.name, "inputs": row.inputs,
                       "outputs": row.outputs, "tile": tile, "tokens": point["tokens"],
                       "pattern": list(declared), "runs_as": list(stored), "seed": seed}
                text = json.dumps({k: v for k, v in job.items() if k != "macro"},
                                  sort_keys=True)
                key = zlib.crc32(text.encode()).to_bytes(4, "big").hex() + f"-{tile}"
                jobs.setdefault((text, name), {**job, "job": key})
    return list(jobs.values())


def run_rtl_job(job: dict, scratch: str | Path | None = None) -> dict:
    """Run one tile on Verilator (see the module docstring); a row of ``rtl.csv``."""
    from .cosim import run_rtl

    scratch = Path(scratch or job.get("scratch") or "build/sweep/rtl") / f"worker-{os.getpid()}"
    cfg = MacroConfig.from_dict(job["macro_config"])
    k, n, tile, tokens = job["inputs"], job["outputs"], job["tile"], job["tokens"]
    declared, stored = tuple(job["pattern"]), tuple(job["runs_as"])
    columns = min(cfg.cols, n - tile * cfg.cols)
    rng = np.random.default_rng([job["seed"], zlib.crc32(job["layer"].encode()), tile])
    a_top, w_top = 2 ** (cfg.act_bits - 1), 2 ** (cfg.weight_bits - 1)
    x = rng.integers(-a_top, a_top, size=(tokens, k))
    w = rng.integers(-w_top, w_top, size=(k, columns))
    if declared != (1, 1):
        w = prune_magnitude(w.T, NMPattern(*declared)).T
    row = {name: job.get(name, "") for name in RTL_COLUMNS}
    row.update(columns=columns, pattern=f"{declared[0]}:{declared[1]}",
               runs_as=f"{stored[0]}:{stored[1]}", error="")
    try:
        schedule = schedule_layer(cfg, x, w, stored)
        golden = run_trace(schedule.trace)
        row["golden_match"] = bool(np.array_equal(schedule.assemble(golden.results),
                                                  matmul_reference(x, w)))
        rtl = run_rtl(schedule.trace, run_dir=scratch / "runs" / job["job"],
                      build_root=scratch / "build", golden=golden)
        row["rtl_match"] = bool(rtl.passed)
        row["rtl_cycles"] = int(rtl.rtl_cycles)
        row["model_cycles"] = closed_events(cfg, k, columns, tokens, stored).cycles
    except Exception as exc:  # a job's failure is a row, never a lost job
        row.update(passed=False, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return row
    row["passed"] = bool(row["golden_match"] and row["rtl_match"]
                         and row["rtl_cycles"] == row["model_cycles"])
    return row


def _run_batch(batch: list) -> list:
    return [run_rtl_job(job) for job in batch]


def run_rtl_jobs(jobs: list, out: str | Path, *, executor: str = "process",
                 ray_address: str | None = None, workers: int | None = None,
                 on_progress=None) -> tuple[list, Path]:
    """Run ``jobs`` on an executor of :func:`sparsecim.tb.sweep.run_sweep` (one job per
    task) and write ``OUT/rtl.csv``; returns its rows (in job order) and its path."""
    from .sweep import map_batches

    out = Path(out)
    scratch = str((out / "rtl").resolve())
    batches = [[{**job, "scratch": scratch}] for job in jobs]
    stream = map_batches(_run_batch, batches, executor=executor, workers=workers,
                         ray_address=ray_address)
    done = {}
    for rows in stream:
        for row in rows:
            done[row["job"]] = row
        if on_progress:
            on_progress(len(done), len(jobs))
    rows = [done[job["job"]] for job in jobs]
    path = out / "rtl.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, RTL_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows, path
