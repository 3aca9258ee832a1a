"""Block-diagonal mappings: executing the placements pass by pass reproduces the block product
exactly; array counts, utilization and cycles against hand counts; the same placements bound
to a macro (loads of P sub-macros, macro passes, a second factor after the first)."""

import numpy as np
import pytest
from sparsecim.hw.config import MacroConfig, preset
from sparsecim.sw.blockdiag_map import (
    MAPPINGS,
    BlockDiagonal,
    execute,
    map_blockdiag,
    map_capacity,
    map_latency,
    map_linear,
    map_macro,
    map_monarch,
    monarch_factor_shapes,
    next_start,
    slot_table,
)

CASES = [((16, 64, 64), 256, 256), ((5, 3, 7), 8, 16), ((7, 9, 5), 16, 8),
         ((3, 40, 50), 32, 32), ((6, 4, 4), 16, 16), ((9, 8, 2), 16, 8), ((1, 70, 45), 32, 32),
         ((10, 16, 64), 64, 64)]
IDS = [f"{b}x{i}x{o}-on-{r}x{c}" for (b, i, o), r, c in CASES]


def _loop_product(blocks, x):
    """The block-diagonal product written out element by element."""
    nb, bo, bi = blocks.shape
    y = np.zeros((x.shape[0], nb * bo), dtype=np.int64)
    for t in range(x.shape[0]):
        for q in range(nb):
            for c in range(bo):
                y[t, q * bo + c] = sum(int(blocks[q, c, a]) * int(x[t, q * bi + a])
                                       for a in range(bi))
    return y


@pytest.mark.parametrize("kind", MAPPINGS)
@pytest.mark.parametrize("shape, rows, cols", CASES, ids=IDS)
def test_execute_reproduces_the_block_product(kind, shape, rows, cols):
    bd = BlockDiagonal(*shape)
    rng = np.random.default_rng(sum(shape) + rows)
    blocks = rng.integers(-128, 128, (bd.blocks, bd.block_out, bd.block_in))
    x = rng.integers(-128, 128, (3, bd.in_features))
    mapping = map_blockdiag(kind, bd, rows, cols)
    np.testing.assert_array_equal(execute(mapping, blocks, x), _loop_product(blocks, x))


@pytest.mark.parametrize("kind", MAPPINGS)
@pytest.mark.parametrize("shape, rows, cols", CASES, ids=IDS)
def test_placements_cover_each_weight_once_without_overlap(kind, shape, rows, cols):
    bd = BlockDiagonal(*shape)
    mapping = map_blockdiag(kind, bd, rows, cols)
    cover = {}
    cells = np.zeros((mapping.arrays, rows, cols), dtype=int)
    for p in mapping.placements:
        assert 0 <= p.row0 and p.row0 + p.in1 - p.in0 <= rows
        assert 0 <= p.col0 and p.col0 + p.out1 - p.out0 <= cols
        cells[p.array, p.row0:p.row0 + p.in1 - p.in0, p.col0:p.col0 + p.out1 - p.out0] += 1
        cover[p.block] = cover.get(p.block, 0) + (p.in1 - p.in0) * (p.out1 - p.out0)
    assert cells.max() == 1
    if kind == "linear":
        assert sum(cover.values()) == bd.in_features * bd.out_features
    else:
        assert cover == {q: bd.block_in * bd.block_out for q in range(bd.blocks)}
    in_passes = sorted(n for ps in mapping.passes for n in ps.placements)
    assert in_passes == list(range(len(mapping.placements)))


def test_paper_geometry_counts():
    """16 blocks of 64 × 64 on 256 × 256 arrays: 16 dense tiles, 4 diagonals of 4, 1 full
    array of 16 blocks run one by one."""
    bd = BlockDiagonal(16, 64, 64)
    lin, lat, cap = (map_blockdiag(k, bd, 256, 256) for k in MAPPINGS)
    assert (lin.arrays, lat.arrays, cap.arrays) == (16, 4, 1)
    assert (lin.utilization, lat.utilization, cap.utilization) == (1 / 16, 0.25, 1.0)
    assert (lin.cycles_per_token, lat.cycles_per_token, cap.cycles_per_token) == (1, 1, 16)
    assert (lin.passes_per_token, lat.passes_per_token, cap.passes_per_token) == (16, 4, 16)
    assert cap.weight_bytes() == 65536 and cap.weight_bytes(4) == 32768
    assert cap.macs_per_token == 16 * 64 * 64


def test_capacity_diagonals_are_rotated_and_remapped():
    """Square slots, filled row slot by row slot: unit e of an array on row slot w = e // k,
    diagonal d = e % k, at (w, (w + d) mod k); the slot table inverts it."""
    bd = BlockDiagonal(20, 4, 4)
    cap = map_capacity(bd, 16, 16)
    for n, p in enumerate(cap.placements):
        e = n % 16
        w, d = divmod(e, 4)
        assert (p.array, p.diagonal, p.row_slot, p.col_slot) == (n // 16, d, w, (w + d) % 4)
        assert (p.block, p.load, p.sub, p.pass_) == (n, n // 16, 0, n)
    table = slot_table(cap)
    assert table.shape == (2, 4, 4)
    for a in range(2):
        for rs in range(4):
            for cs in range(4):
                n = table[a, rs, cs]
                if n >= 0:
                    p = cap.placements[n]
                    assert (p.array, p.row_slot, p.col_slot) == (a, rs, cs)
                    assert cs == (rs + p.diagonal) % 4
    assert (table[1] >= 0).sum() == 4 and (table[1, :, :] == -1).sum() == 12


def test_latency_units_sit_on_the_diagonal_and_fire_together():
    lat = map_latency(BlockDiagonal(10, 4, 8), 16, 32)
    assert lat.arrays == 3
    assert [len(ps.placements) for ps in lat.passes] == [4, 4, 2]
    assert all(p.row_slot == p.col_slot for p in lat.placements)


def test_rectangular_slots():
    """Blocks of 64 inputs × 256 outputs on 256 × 256: one per array on the diagonal, four
    stacked in the capacity mapping."""
    bd = BlockDiagonal(16, 64, 256)
    lat, cap = map_latency(bd, 256, 256), map_capacity(bd, 256, 256)
    assert (lat.arrays, cap.arrays) == (16, 4)
    assert (lat.utilization, cap.utilization) == (0.25, 1.0)
    assert [(p.row_slot, p.col_slot) for p in cap.placements[:4]] == [(0, 0), (1, 0), (2, 0),
                                                                     (3, 0)]


def test_large_blocks_are_tiled():
    """64 × 64 blocks on 32 × 32 arrays: four units per block, one per array either way."""
    bd = BlockDiagonal(3, 64, 64)
    for kind in ("latency", "capacity"):
        mapping = map_blockdiag(kind, bd, 32, 32)
        assert mapping.arrays == 12 and mapping.utilization == 1.0
    assert map_linear(bd, 32, 32).arrays == 36


def test_monarch_factor_shapes():
    right, left = monarch_factor_shapes(4096, 1024, k=16, j=16, rank=4)
    assert right == BlockDiagonal(16, 64, 64) and left == BlockDiagonal(16, 64, 256)
    with pytest.raises(ValueError) as info:
        monarch_factor_shapes(4096, 1024, k=7, j=16)
    assert str(info.value) == "k must divide the 1024 inputs, not 7"


def test_errors():
    with pytest.raises(ValueError) as info:
        map_blockdiag("dense", BlockDiagonal(1, 2, 2), 4, 4)
    assert str(info.value) == "kind must be one of 'linear', 'latency', 'capacity', not 'dense'"
    with pytest.raises(ValueError) as info:
        BlockDiagonal(2, 0, 3)
    assert str(info.value) == "block_in must be a positive integer, not 0"
    with pytest.raises(ValueError) as info:
        map_capacity(BlockDiagonal(2, 2, 2), 4, 0)
    assert str(info.value) == "cols must be a positive integer, not 0"
    with pytest.raises(ValueError) as info:
        slot_table(map_linear(BlockDiagonal(2, 2, 2), 4, 4))
    assert str(info.value) == "slot_table needs a latency or capacity mapping, not 'linear'"
    mapping = map_latency(BlockDiagonal(2, 2, 3), 4, 8)
    with pytest.raises(ValueError) as info:
        execute(mapping, np.ones((2, 2, 3)), np.ones((1, 4)))
    assert str(info.value) == "blocks must have shape (2, 3, 2), not (2, 2, 3)"
    with pytest.raises(ValueError) as info:
        execute(mapping, np.ones((2, 3, 2)), np.ones((1, 5)))
    assert str(info.value) == "x must have shape (tokens, 4), not (1, 5)"


@pytest.mark.parametrize("kind", MAPPINGS)
def test_whole_monarch_layer_through_two_mapped_factors(kind):
    """Both factors of an integer Monarch matrix executed on their mappings, with the middle
    and output permutations as index maps, give exactly x · Mᵀ."""
    from sparsecim.sw.monarch import monarch_dense, random_monarch
    f = random_monarch(48, 36, k=6, j=4, rank=2, integer=3, seed=11)
    right_bd, left_bd = monarch_factor_shapes(48, 36, k=6, j=4, rank=2)
    assert (right_bd.blocks, right_bd.block_out, right_bd.block_in) == f.right.shape
    assert (left_bd.blocks, left_bd.block_out, left_bd.block_in) == f.left.shape
    x = np.random.default_rng(1).integers(-9, 10, (3, 36))
    u = execute(map_blockdiag(kind, right_bd, 16, 16), f.right, x)
    v = u.reshape(3, 6 * 2, 4).transpose(0, 2, 1).reshape(3, -1)      # P_mid
    z = execute(map_blockdiag(kind, left_bd, 16, 16), f.left, v)
    y = z.reshape(3, 4, 12).transpose(0, 2, 1).reshape(3, -1)         # P_out
    np.testing.assert_array_equal(y, x @ monarch_dense(f).astype(np.int64).T)


# Bound to a macro: arrays in loads of P sub-macros, a factor starting at a macro pass -------

@pytest.mark.parametrize("kind", ["latency", "capacity"])
@pytest.mark.parametrize("submacros, start", [(1, 0), (2, 3), (4, 0), (4, 5)])
@pytest.mark.parametrize("shape, rows, cols", CASES, ids=IDS)
def test_macro_placements_execute_and_cover_each_weight_once(kind, submacros, start, shape,
                                                             rows, cols):
    bd = BlockDiagonal(*shape)
    mapping = map_blockdiag(kind, bd, rows, cols, submacros=submacros, start=start)
    rng = np.random.default_rng(sum(shape) + submacros)
    blocks = rng.integers(-128, 128, (bd.blocks, bd.block_out, bd.block_in))
    x = rng.integers(-128, 128, (2, bd.in_features))
    np.testing.assert_array_equal(execute(mapping, blocks, x), _loop_product(blocks, x))
    cells = {}
    for p in mapping.placements:
        assert p.array == p.load * submacros + p.sub and 0 <= p.sub < submacros
        image = cells.setdefault(p.array, np.zeros((rows, cols), dtype=int))
        image[p.row0:p.row0 + p.in1 - p.in0, p.col0:p.col0 + p.out1 - p.out0] += 1
    assert max(image.max() for image in cells.values()) == 1
    # A macro pass runs at most one placement per sub-macro slot set: latency one pass per
    # load (all its units), capacity one unit per sub-macro.
    first = {"latency": start, "capacity": start // mapping.units_per_array}[kind]
    assert min(p.load for p in mapping.placements) == first
    per_pass = {}
    for p in mapping.placements:
        per_pass.setdefault(p.pass_, []).append(p)
    assert sorted(per_pass) == list(range(mapping.macro_passes))
    for placed in per_pass.values():
        assert len({p.load for p in placed}) == 1
        if kind == "capacity":
            assert len({p.sub for p in placed}) == len(placed)


def test_latency_deals_a_load_to_the_sub_macros_first():
    """10 blocks of 4 × 4 on 4 sub-macros of 16 × 16: 4 diagonal slots each, one load, one
    macro pass; block n on sub-macro n % 4, slot n // 4."""
    lat = map_latency(BlockDiagonal(10, 4, 4), 16, 16, submacros=4, start=2)
    assert [(p.load, p.sub, p.row_slot, p.pass_) for p in lat.placements] == \
        [(2, n % 4, n // 4, 0) for n in range(10)]
    assert (lat.arrays, lat.loads, lat.macro_passes, lat.cycles_per_token) == (4, 1, 1, 1)
    assert [len(ps.placements) for ps in lat.passes] == [3, 3, 2, 2]


def test_capacity_runs_one_block_per_sub_macro_and_pass():
    """20 blocks of 4 × 4 on 2 sub-macros of 16 × 16 from macro pass 10: pass q holds blocks
    2q and 2q + 1; 16 passes per load, so passes 0 .. 5 end load 0 and 6 .. 9 start load 1."""
    cap = map_capacity(BlockDiagonal(20, 4, 4), 16, 16, submacros=2, start=10)
    for n, p in enumerate(cap.placements):
        load, e = divmod(10 + n // 2, 16)
        w, d = divmod(e, 4)
        assert (p.pass_, p.sub, p.load, p.row_slot, p.col_slot, p.diagonal) == \
            (n // 2, n % 2, load, w, (w + d) % 4, d)
    assert (cap.macro_passes, cap.loads, cap.arrays, cap.units_per_array) == (10, 2, 4, 16)


def test_macro_binding_is_the_per_array_model_for_one_sub_macro():
    cfg = MacroConfig(rows=16, cols=16, submacros=1, act_depth=16, acc_depth=16)
    for kind in ("latency", "capacity"):
        for shape in ((20, 4, 4), (7, 3, 5), (2, 40, 9)):
            bd = BlockDiagonal(*shape)
            assert map_macro(kind, bd, cfg) == map_blockdiag(kind, bd, 16, 16)


def test_the_second_factor_starts_where_the_first_ends():
    """Latency: the next load. Capacity: the same slot grid shares the first factor's last
    load; another grid starts a new load."""
    cfg = preset("flexcim")                         # 4 sub-macros of 32 × 32
    right, left = map_monarch("capacity", BlockDiagonal(8, 8, 8), BlockDiagonal(8, 8, 8), cfg)
    assert right.macro_passes == left.macro_passes == 2 and left.start == 2
    assert {p.load for p in right.placements + left.placements} == {0}
    right, left = map_monarch("capacity", BlockDiagonal(16, 8, 8), BlockDiagonal(8, 16, 8), cfg)
    assert left.start == 1 * 2 * 4 and {p.load for p in left.placements} == {1}
    right, left = map_monarch("latency", BlockDiagonal(16, 8, 8), BlockDiagonal(8, 16, 8), cfg)
    assert (right.loads, left.start, [p.load for p in left.placements]) == (1, 1, [1] * 8)
    assert next_start(right, BlockDiagonal(8, 16, 8)) == 1


def test_units_per_array():
    bd = BlockDiagonal(16, 64, 64)
    assert [map_blockdiag(k, bd, 256, 256).units_per_array for k in MAPPINGS] == [1, 4, 16]
    assert map_capacity(BlockDiagonal(16, 64, 256), 256, 256).units_per_array == 4


@pytest.mark.parametrize("call, message", [
    (lambda: map_macro("linear", BlockDiagonal(2, 2, 2), preset("tiny")),
     "kind must be one of 'latency', 'capacity', not 'linear'"),
    (lambda: map_latency(BlockDiagonal(2, 2, 2), 4, 4, submacros=0),
     "submacros must be a positive integer, not 0"),
    (lambda: map_capacity(BlockDiagonal(2, 2, 2), 4, 4, start=-1),
     "start must be a non-negative integer, not -1"),
    (lambda: map_blockdiag("linear", BlockDiagonal(2, 2, 2), 4, 4, submacros=2),
     "the linear mapping has one array per load and starts at 0, not submacros=2, start=0"),
])
def test_macro_binding_errors(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
