"""Dense tiling: coverage, order and the figures computed from it."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, ceil_log2, preset
from sparsecim.sw.mapping import Tile, map_dense, map_nm

SHAPES = [("tiny", 16, 4), ("tiny", 37, 9), ("tiny", 1, 1), ("tiny", 100, 10),
          ("flexcim", 768, 768), ("flexcim", 1000, 33), ("flexcim", 127, 1)]


@pytest.mark.parametrize("name, k, n", SHAPES, ids=[f"{s[0]}-{s[1]}x{s[2]}" for s in SHAPES])
def test_tiles_cover_every_weight_exactly_once(name, k, n):
    cfg = preset(name)
    mapping = map_dense(cfg, k, n)
    cover = np.zeros((k, n), dtype=int)
    for tile in mapping.tiles:
        assert 0 < tile.rows <= cfg.reduction and 0 < tile.cols <= cfg.cols
        cover[tile.k0:tile.k1, tile.n0:tile.n1] += 1
    assert (cover == 1).all()
    assert mapping.arrays == mapping.k_tiles * mapping.n_tiles


def test_tiles_are_n_major_with_partial_tiles_at_the_high_edges():
    # tiny: 16 global rows (4 rows x P=4) x 4 columns.
    mapping = map_dense(preset("tiny"), 20, 5)
    assert mapping.tiles == (Tile(0, 16, 0, 4), Tile(16, 20, 0, 4),
                             Tile(0, 16, 4, 5), Tile(16, 20, 4, 5))
    assert [(t.rows, t.cols) for t in mapping.tiles] == [(16, 4), (4, 4), (16, 1), (4, 1)]


def test_k_is_tiled_over_all_submacros():
    # 2 sub-macros of 8 rows: a K tile is 16 deep, not 8.
    cfg = MacroConfig(rows=8, cols=2, submacros=2, act_depth=4, acc_depth=4)
    mapping = map_dense(cfg, 33, 2)
    assert [(t.k0, t.k1) for t in mapping.tiles] == [(0, 16), (16, 32), (32, 33)]


def test_flexcim_768_fills_every_cell():
    mapping = map_dense(preset("flexcim"), 768, 768)
    # 768/128 = 6 K tiles, 768/32 = 24 N tiles, no padding.
    assert (mapping.k_tiles, mapping.n_tiles, mapping.arrays) == (6, 24, 144)
    assert mapping.utilization == 1.0
    assert mapping.weight_bytes == 768 * 768
    assert mapping.array_bytes == 144 * 4096
    assert mapping.macs_per_token == 768 * 768


@pytest.mark.parametrize("name, k, n, arrays, utilization", [
    # tiny arrays are 16 x 4 = 64 cells. K=100: 7 K tiles (6 full + 4 rows); N=10: 3 N tiles.
    ("tiny", 100, 10, 21, 1000 / (21 * 64)),
    ("tiny", 37, 9, 9, 333 / (9 * 64)),
    ("tiny", 1, 1, 1, 1 / 64),
    # flexcim arrays are 128 x 32 = 4096 cells. K=1000: 8 K tiles; N=33: 2 N tiles.
    ("flexcim", 1000, 33, 16, 33000 / (16 * 4096)),
    ("flexcim", 128, 32, 1, 1.0),
], ids=["tiny-100x10", "tiny-37x9", "tiny-1x1", "flexcim-1000x33", "flexcim-one-array"])
def test_padded_edges_lower_utilization(name, k, n, arrays, utilization):
    mapping = map_dense(preset(name), k, n)
    assert mapping.arrays == arrays
    assert mapping.utilization == pytest.approx(utilization, rel=1e-15)


def test_weight_bytes_round_up_for_narrow_weights():
    cfg = MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8, weight_bits=4)
    mapping = map_dense(cfg, 3, 3)
    assert mapping.weight_bytes == 5          # 9 weights x 4 bits = 36 bits
    assert mapping.array_bytes == 32          # one 64-cell array x 4 bits


def test_numpy_integers_are_accepted():
    mapping = map_dense(preset("tiny"), np.int64(17), np.int32(5))
    assert (mapping.k, mapping.n, mapping.arrays) == (17, 5, 4)
    assert type(mapping.k) is int


@pytest.mark.parametrize("k, n, message", [
    (0, 4, "k must be a positive integer, not 0"),
    (4, -1, "n must be a positive integer, not -1"),
    (4.0, 4, "k must be a positive integer, not 4.0"),
    (True, 4, "k must be a positive integer, not True"),
], ids=["zero", "negative", "float", "bool"])
def test_bad_shapes_are_refused(k, n, message):
    with pytest.raises(ValueError) as exc:
        map_dense(preset("tiny"), k, n)
    assert str(exc.value) == message


@pytest.mark.parametrize("pattern, inputs, tiles", [
    ((1, 1), 128, 32 * 128), ((2, 4), 256, 16 * 128), ((4, 8), 256, 16 * 128),
    ((1, 2), 256, 16 * 128), ((1, 4), 512, 8 * 128), ((2, 8), 512, 8 * 128),
    ((1, 8), 1024, 4 * 128)])
def test_nm_tiles_cover_m_over_n_times_the_inputs(pattern, inputs, tiles):
    """flexcim, 4096 × 4096: rows × (P/n) × m inputs per tile, so M/N fewer tiles."""
    cfg = preset("flexcim")
    mapping = map_nm(cfg, 4096, 4096, pattern)
    n, m = pattern
    assert mapping.pass_inputs == 32 * (4 // n) * m == inputs
    assert mapping.arrays == tiles
    assert mapping.slots == 4096 * 4096 * n // m
    assert mapping.utilization == 1.0
    assert mapping.weight_bytes == 4096 * 4096 * n // m
    assert mapping.meta_bytes == 4096 * 4096 * n // m * ceil_log2(m) // 8
    assert mapping.macs_per_token == mapping.slots


def test_nm_partial_groups_and_edges_lower_utilization():
    cfg = preset("tiny")
    mapping = map_nm(cfg, 10, 5, (2, 4))
    # 3 groups of 4 (the last partial) keep 2 each: 5 outputs × 3 × 2 = 30 slots on
    # one K tile (32 inputs) × 2 N tiles of 64 cells.
    assert (mapping.groups, mapping.slots, mapping.arrays) == (3, 30, 2)
    assert mapping.utilization == 30 / 128
    with pytest.raises(ValueError, match="pattern 3:4 is not supported"):
        map_nm(cfg, 10, 5, (3, 4))
