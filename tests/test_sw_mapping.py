import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.mapping import map_dense


@pytest.mark.parametrize("name, k, n", [("tiny", 16, 4), ("tiny", 37, 9), ("tiny", 1, 1),
                                        ("flexcim", 768, 768), ("flexcim", 1000, 33)],
                         ids=lambda v: str(v))
def test_tiles_cover_every_weight_exactly_once(name, k, n):
    cfg = preset(name)
    mapping = map_dense(cfg, k, n)
    cover = np.zeros((k, n), dtype=int)
    for tile in mapping.tiles:
        assert 0 < tile.rows <= cfg.reduction and 0 < tile.cols <= cfg.cols
        cover[tile.k0:tile.k1, tile.n0:tile.n1] += 1
    assert (cover == 1).all()
    assert mapping.arrays == mapping.k_tiles * mapping.n_tiles


def test_flexcim_768_fills_every_cell():
    mapping = map_dense(preset("flexcim"), 768, 768)
    # 768/128 = 6 K tiles, 768/32 = 24 N tiles, no padding.
    assert (mapping.k_tiles, mapping.n_tiles, mapping.arrays) == (6, 24, 144)
    assert mapping.utilization == 1.0
    assert mapping.weight_bytes == 768 * 768
    assert mapping.macs_per_token == 768 * 768


def test_padded_edges_lower_utilization():
    # tiny: 16-deep x 4-wide arrays of 64 cells. 37x9 needs 3 x 3 tiles.
    mapping = map_dense(preset("tiny"), 37, 9)
    assert mapping.arrays == 9
    assert mapping.utilization == pytest.approx(37 * 9 / (9 * 64))
    assert mapping.array_bytes == 9 * 64


@pytest.mark.parametrize("k, n, message", [
    (0, 4, "k must be a positive integer, not 0"),
    (4, -1, "n must be a positive integer, not -1"),
    (4.0, 4, "k must be a positive integer, not 4.0"),
])
def test_bad_shapes_are_refused(k, n, message):
    with pytest.raises(ValueError) as exc:
        map_dense(preset("tiny"), k, n)
    assert str(exc.value) == message
