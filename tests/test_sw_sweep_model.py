"""The closed-form event model equals the trace-based counts the run pipeline uses."""

import dataclasses

import pytest
from sparsecim.hw.config import PRESETS
from sparsecim.sw.energy import layer_energy, load_tech
from sparsecim.sw.events import gemm_events
from sparsecim.sw.schedule import predict_counters
from sparsecim.sw.sweep_model import closed_events, point_figures

# (preset, k, n, tokens, declared pattern, stored pattern): dense, N:M, a linear mapping of
# N:M weights, partial tiles, several token chunks (tiny's buffers are 8 deep).
GRID = [
    (preset, k, n, tokens, declared, stored)
    for preset in ("tiny", "flexcim")
    for k, n in ((8, 4), (24, 12), (64, 36), (200, 96))
    for tokens in (1, 3, 17)
    for declared, stored in (((1, 1), (1, 1)), ((2, 4), (2, 4)), ((1, 8), (1, 8)),
                             ((2, 8), (2, 8)), ((2, 4), (1, 1)))
]


def _without_zero_macs(ev):
    values = dataclasses.asdict(ev)
    del values["zero_weight_macs"]
    return values


@pytest.mark.parametrize("preset,k,n,tokens,declared,stored", GRID,
                         ids=[f"{g[0]}-{g[1]}x{g[2]}-t{g[3]}-{g[4][0]}:{g[4][1]}-as"
                              f"{g[5][0]}:{g[5][1]}" for g in GRID])
def test_closed_events_equal_trace_events(preset, k, n, tokens, declared, stored):
    cfg = PRESETS[preset]
    closed = closed_events(cfg, k, n, tokens, stored)
    traced = gemm_events(cfg, k, n, tokens, pattern=declared, run_as=stored)
    assert _without_zero_macs(closed) == _without_zero_macs(traced)
    assert closed.cycles == predict_counters(cfg, k, n, tokens, stored)["total"]


def test_closed_events_equal_direct_count_of_a_large_layer():
    # No extrapolation on the trace side: the whole schedule counted command by command.
    cfg = PRESETS["flexcim"]
    traced = gemm_events(cfg, 576, 192, 5, pattern=(2, 4))
    assert _without_zero_macs(closed_events(cfg, 576, 192, 5, (2, 4))) == \
        _without_zero_macs(traced)


@pytest.mark.parametrize("tech", ["22nm", "45nm"])
def test_point_energy_equals_trace_energy(tech):
    from sparsecim.sw.model_shapes import MODELS

    cfg, t = PRESETS["flexcim"], load_tech(tech)
    rows = MODELS["smollm2-135m"].linears
    figures = point_figures(cfg, rows, 2, (2, 4), (2, 4), t)
    from sparsecim.sw.area import recorded_counts

    for row, fig in zip(rows, figures, strict=True):
        # The trace itself, counted command by command (no closed form on this side).
        ev = gemm_events(cfg, row.inputs, row.outputs, 2, pattern=(2, 4))
        ev = dataclasses.replace(ev, zero_weight_macs=0)
        ref = layer_energy(cfg, ev.scaled(row.total), t, recorded_counts(cfg), 2)
        assert fig["energy_pj"] == ref["total_pj"]
        assert fig["cycles"] == predict_counters(cfg, row.inputs, row.outputs, 2,
                                                 (2, 4))["total"] * row.total


@pytest.mark.parametrize("preset", ["tiny", "flexcim", "paper"])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 5), (64, 36), (576, 1536), (1000, 333)])
@pytest.mark.parametrize("pattern", [(1, 1), (2, 4), (1, 8), (4, 8)])
def test_tiling_equals_map_nm(preset, k, n, pattern):
    from sparsecim.sw.mapping import map_nm
    from sparsecim.sw.sweep_model import tiling

    cfg = PRESETS[preset]
    mapping, closed = map_nm(cfg, k, n, pattern), tiling(cfg, k, n, pattern)
    assert (closed.k_tiles, closed.n_tiles, closed.arrays, closed.macs_per_token) == (
        mapping.k_tiles, mapping.n_tiles, mapping.arrays, mapping.macs_per_token)
    assert closed.utilization == mapping.utilization
    assert list(closed.k_tile_inputs) == [t.rows for t in mapping.tiles[:mapping.k_tiles]]
