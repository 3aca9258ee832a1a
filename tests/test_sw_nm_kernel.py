"""The compiled N:M pass loop against a per-cell reference written from the ISA's decoding."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.hw.isa import pack_weight_row_bytes, unpack_weight_rows, weight_row_layout
from sparsecim.sw import golden, nm_kernel

#: Every geometry the kernel decodes: 3-bit positions in 3-byte periods (tiny, flexcim,
#: paper's 64 columns), 2-bit ones (fpga), a partial last period (3 columns), 16-bit
#: operands (int64 sums), 5-bit activations.
CONFIGS = {
    "tiny": preset("tiny"),
    "fpga": preset("fpga"),
    "flexcim": preset("flexcim"),
    "paper": preset("paper"),
    "odd": MacroConfig(rows=3, cols=3, submacros=2, act_depth=6, acc_depth=4, act_bits=5,
                       patterns=((1, 2), (2, 3), (1, 5))),
    "wide": MacroConfig(rows=4, cols=3, submacros=4, act_depth=8, acc_depth=8, weight_bits=16,
                        act_bits=16, acc_bits=40, patterns=((2, 4), (1, 8))),
}


def _expected(cfg, words, rows, entries, base, m):
    """Cell by cell: the weight of row g, column c times the element its position names
    (0 for a position >= m), summed over the rows; positions decoded by the ISA."""
    weights, meta = unpack_weight_rows(cfg, words)
    passes, count = rows.shape[0], entries.shape[1]
    out = np.zeros((passes, count, cfg.cols), dtype=np.int64)
    for b in range(passes):
        for g in range(cfg.weight_rows):
            w, p = weights[rows[b, g]], meta[rows[b, g]]
            for t in range(count):
                picked = np.where(p < m, entries[b, t, base[g] + np.minimum(p, m - 1)], 0)
                out[b, t] += w * picked
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_kernel_equals_the_cell_by_cell_sums(name):
    cfg = CONFIGS[name]
    layout = weight_row_layout(cfg)
    assert nm_kernel.covers(cfg, layout) and nm_kernel.available()
    rng = np.random.default_rng(len(name))
    beats = 3 * cfg.weight_rows
    wlo, whi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
    alo, ahi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
    weights = rng.integers(wlo, whi, size=(beats, cfg.cols))
    # Extreme values too: the sums' bounds are what the accumulator dtype is chosen by.
    weights[0] = wlo
    meta = rng.integers(0, 2 ** cfg.meta_bits, size=(beats, cfg.cols))   # some >= m
    raw = np.zeros((beats, layout.size // 8 + 3), dtype=np.uint8)
    raw[:, :-(-layout.size // 8)] = pack_weight_row_bytes(cfg, weights, meta)
    words = [int.from_bytes(row.tobytes(), "little") for row in raw]
    w_view = golden.unpack_beat_bytes(layout["weight"].shape, raw, None)
    for n, m in cfg.patterns:
        passes, count = 4, 3
        rows = rng.integers(0, beats, size=(passes, cfg.weight_rows))
        rows[0] = np.arange(cfg.weight_rows)                                # a whole load
        entries = rng.integers(alo, ahi, size=(passes, count, cfg.max_pass_inputs))
        entries[0, 0] = alo
        base = golden._nm_base(cfg, n, m)
        got = nm_kernel.nm_pass_sums(cfg, layout, w_view, raw, rows,
                                     entries.astype(np.int8 if cfg.act_bits <= 8 else np.int16),
                                     base, m, golden._kernel_dtype(cfg))
        np.testing.assert_array_equal(got, _expected(cfg, words, rows, entries, base, m),
                                      err_msg=f"{name} {n}:{m}")


def test_accumulator_dtype_follows_the_bound():
    """int32 sums when reduction × 2**(product_bits-2) < 2**31 (flexcim: 2**21), else int64."""
    for name, dtype in [("flexcim", np.int32), ("wide", np.int64)]:
        cfg = CONFIGS[name]
        layout = weight_row_layout(cfg)
        raw = np.zeros((cfg.weight_rows, 64), dtype=np.uint8)
        w_view = golden.unpack_beat_bytes(layout["weight"].shape, raw, None)
        got = nm_kernel.nm_pass_sums(cfg, layout, w_view, raw,
                                     np.arange(cfg.weight_rows)[None],
                                     np.zeros((1, 1, cfg.max_pass_inputs), np.int8),
                                     golden._nm_base(cfg, *cfg.patterns[0]),
                                     cfg.patterns[0][1], golden._kernel_dtype(cfg))
        assert got.dtype == dtype


def test_kernel_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SPARSECIM_NO_JIT", "1")
    assert not nm_kernel.available()
    assert not nm_kernel.activate()
    monkeypatch.setenv("SPARSECIM_NO_JIT", "0")
    assert nm_kernel.available()


def test_dense_only_config_and_positions_off_a_byte_are_not_covered():
    dense = MacroConfig(rows=4, cols=4, submacros=4, act_depth=8, acc_depth=8, patterns=())
    assert not nm_kernel.covers(dense, weight_row_layout(dense))
    # 3 columns of 4-bit weights put the positions at bit 12.
    odd = MacroConfig(rows=4, cols=3, submacros=2, act_depth=8, acc_depth=8, weight_bits=4,
                      patterns=((2, 4),))
    assert weight_row_layout(odd)["meta"].offset == 12
    assert not nm_kernel.covers(odd, weight_row_layout(odd))


def test_a_short_run_does_not_import_numba():
    """A process below the threshold runs N:M traces without importing numba (its load is
    what the threshold saves)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import numpy as np\n"
        "from sparsecim.hw.config import preset\n"
        "from sparsecim.sw.golden import run_trace\n"
        "from sparsecim.sw.schedule import schedule_layer\n"
        "cfg = preset('tiny')\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.integers(-128, 128, size=(1, 64))\n"
        "w = rng.integers(-128, 128, size=(64, 8))\n"
        "w[1::2] = 0\n"
        "result = run_trace(schedule_layer(cfg, x, w, '1:2').trace)\n"
        "assert result.results.size\n"
        "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_process_loads_the_kernel_after_enough_numpy_rows(monkeypatch):
    """Ski rental: numpy until the rows run in numpy reach LOAD_AFTER_ROWS, the kernel from
    the batch that reaches it on; activate() switches at once."""
    monkeypatch.setattr(nm_kernel, "LOAD_AFTER_ROWS", 1000)
    monkeypatch.setattr(nm_kernel, "_state", {"active": False, "numpy_rows": 0})
    assert [nm_kernel.chosen(rows) for rows in (400, 500, 99)] == [False, False, False]
    assert nm_kernel.chosen(1)          # 1000 rows
    assert nm_kernel.chosen(1)
    monkeypatch.setattr(nm_kernel, "_state", {"active": False, "numpy_rows": 0})
    assert nm_kernel.activate()
    assert nm_kernel.chosen(1)


def test_run_trace_switches_to_the_kernel_with_the_same_results(monkeypatch):
    """One process running the same N:M trace again and again: numpy first, the kernel once
    the rows add up; every run gives the reference's results and counters."""
    from sparsecim.sw._reference import run_trace_reference
    from sparsecim.sw.golden import run_trace
    from sparsecim.sw.schedule import schedule_layer

    cfg = preset("flexcim")
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(2, 512))
    w = rng.integers(-128, 128, size=(512, 64))
    w[1::2] = 0                                     # 1:2 along the inputs of every output
    trace = schedule_layer(cfg, x, w, "1:2").trace
    monkeypatch.setattr(nm_kernel, "_state", {"active": False, "numpy_rows": 0})
    run_trace(trace)
    per_run = nm_kernel._state["numpy_rows"]
    assert per_run > 0
    monkeypatch.setattr(nm_kernel, "LOAD_AFTER_ROWS", 2 * per_run)
    monkeypatch.setattr(nm_kernel, "_state", {"active": False, "numpy_rows": 0})
    reference = run_trace_reference(trace)
    active = []
    for _ in range(3):
        run = run_trace(trace)
        active.append(nm_kernel._state["active"])
        np.testing.assert_array_equal(run.results, reference.results)
        assert run.counters == reference.counters
    assert active == [False, True, True]
