"""Monarch projection: the convention against brute-force loops, recovery of Monarch matrices,
optimality, and agreement with the scheduled layer's integer reference."""

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.monarch import (
    MonarchFactors,
    default_blocks,
    monarch_apply,
    monarch_dense,
    monarch_project,
    output_from_blocks,
    random_monarch,
    relative_error,
    schedule_factors,
)
from sparsecim.sw.schedule.monarch import monarch_reference

SHAPES = [(16, 16, 4, 4, 1), (9, 9, 3, 3, 1), (48, 36, 6, 4, 2), (12, 30, 5, 3, 1),
          (64, 64, 4, 4, 4), (20, 8, 2, 5, 2)]
IDS = [f"{m}x{n}-k{k}-j{j}-r{r}" for m, n, k, j, r in SHAPES]


def _loop_dense(f: MonarchFactors) -> np.ndarray:
    """M = P_out · L · P_mid · R built as explicit permutation and block-diagonal matrices."""
    k, j, r = f.k, f.j, f.rank
    i, o = f.right.shape[2], f.left.shape[1]
    n, mid, m = k * i, k * r * j, j * o
    right = np.zeros((mid, n))
    for kk in range(k):
        right[kk * r * j:(kk + 1) * r * j, kk * i:(kk + 1) * i] = f.right[kk]
    p_mid = np.zeros((mid, mid))       # value a·j + jj -> position jj·(k·r) + a
    for a in range(k * r):
        for jj in range(j):
            p_mid[jj * k * r + a, a * j + jj] = 1
    left = np.zeros((m, mid))
    for jj in range(j):
        left[jj * o:(jj + 1) * o, jj * k * r:(jj + 1) * k * r] = f.left[jj]
    p_out = np.zeros((m, m))           # z[jj, c] (position jj·o + c) -> output c·j + jj
    for jj in range(j):
        for c in range(o):
            p_out[c * j + jj, jj * o + c] = 1
    return p_out @ left @ p_mid @ right


@pytest.mark.parametrize("m, n, k, j, r", SHAPES, ids=IDS)
def test_dense_matches_permutation_product(m, n, k, j, r):
    f = random_monarch(m, n, k=k, j=j, rank=r, seed=m + n)
    np.testing.assert_allclose(monarch_dense(f), _loop_dense(f), rtol=0, atol=1e-12)
    assert monarch_dense(f).shape == (m, n)


@pytest.mark.parametrize("m, n, k, j, r", SHAPES, ids=IDS)
def test_project_recovers_monarch_to_machine_precision(m, n, k, j, r):
    f = random_monarch(m, n, k=k, j=j, rank=r, seed=7)
    w = monarch_dense(f)
    g = monarch_project(w, k=k, j=j, rank=r)
    assert relative_error(w, g) < 1e-13
    assert g.right.shape == f.right.shape and g.left.shape == f.left.shape


@pytest.mark.parametrize("m, n, k, j, r", SHAPES, ids=IDS)
def test_apply_matches_dense(m, n, k, j, r):
    f = random_monarch(m, n, k=k, j=j, rank=r, seed=3)
    x = np.random.default_rng(0).standard_normal((5, n))
    np.testing.assert_allclose(monarch_apply(f, x), x @ monarch_dense(f).T, rtol=1e-12,
                               atol=1e-12)


def test_square_default_is_b_blocks_of_b():
    w = np.random.default_rng(1).standard_normal((36, 36))
    f = monarch_project(w)
    assert (f.k, f.j, f.rank) == (6, 6, 1)
    assert f.right.shape == (6, 6, 6) and f.left.shape == (6, 6, 6)
    assert f.parameters == 2 * 6 ** 3


def test_projection_is_the_sum_of_per_slice_svd_residuals():
    """Error² = sum over slices of the discarded singular values² (Eckart-Young), and no
    perturbation of the factors does better."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((24, 18))
    k, j, r = 3, 4, 2
    f = monarch_project(w, k=k, j=j, rank=r)
    o, i = 24 // j, 18 // k
    expected = 0.0
    for kk in range(k):
        for jj in range(j):
            block = np.array([[w[c * j + jj, kk * i + a] for a in range(i)] for c in range(o)])
            expected += (np.linalg.svd(block, compute_uv=False)[r:] ** 2).sum()
    err = np.linalg.norm(w - monarch_dense(f)) ** 2
    assert err == pytest.approx(expected, rel=1e-10)
    for seed in range(5):
        noise = np.random.default_rng(seed)
        g = MonarchFactors(f.right + 1e-3 * noise.standard_normal(f.right.shape),
                           f.left + 1e-3 * noise.standard_normal(f.left.shape), r)
        assert np.linalg.norm(w - monarch_dense(g)) ** 2 > err


@pytest.mark.parametrize("b, s", [(4, 4), (3, 3), (5, 5), (6, 6)])
def test_factors_run_on_monarch_reference(b, s):
    """Projected factors go to schedule_monarch unchanged: its integer reference (shift 0,
    no saturation) reassembled by output_from_blocks equals x · Mᵀ."""
    cfg = preset("flexcim")
    f = random_monarch(s * s, b * s, k=b, j=s, integer=2, seed=b)
    g = monarch_project(monarch_dense(f), k=b, j=s)   # float factors of the same matrix
    r_blocks, l_blocks = schedule_factors(f)
    assert r_blocks.shape == (b, s, s) and l_blocks.shape == (s, s, b)
    x = np.random.default_rng(b).integers(-3, 4, (4, b * s))
    z = monarch_reference(cfg, x, r_blocks, l_blocks, shift=0)
    assert np.abs(z).max() < 128 * 2 * b   # the middle values stayed below saturation
    dense = monarch_dense(f).astype(np.int64)
    np.testing.assert_array_equal(output_from_blocks(z), x @ dense.T)
    np.testing.assert_allclose(x @ monarch_dense(g).T, x @ dense.T, atol=1e-9)


def test_schedule_factors_rejects_other_forms():
    f = random_monarch(48, 36, k=6, j=4, rank=2)
    with pytest.raises(ValueError, match=r"^schedule_monarch takes rank 1 with i = j = o, "
                                         r"not rank 2, i=6, j=4, o=12$"):
        schedule_factors(f)


def test_default_blocks():
    assert [default_blocks(n) for n in (576, 1536, 192, 1024, 4096, 7, 12)] == \
        [24, 32, 12, 32, 64, 1, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=7), "k must divide the 36 inputs, not 7"),
    (dict(j=5), "j must divide the 24 outputs, not 5"),
    (dict(k=0), "k must be a positive integer, not 0"),
    (dict(rank=5, k=6, j=6), "rank must be at most min(o, i) = 4 for slices of 4 x 6, not 5"),
])
def test_project_rejects_bad_blocks(kwargs, message):
    with pytest.raises(ValueError) as info:
        monarch_project(np.ones((24, 36)), **kwargs)
    assert str(info.value) == message


def test_project_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"^w must be a non-empty real 2-D matrix, not an "
                                         r"array of shape \(4,\) and dtype float64$"):
        monarch_project(np.ones(4))
    with pytest.raises(ValueError, match="^w must be finite$"):
        monarch_project(np.full((4, 4), np.nan))


def test_factors_reject_inconsistent_shapes():
    with pytest.raises(ValueError, match=r"^right \(k, r·j, i\) and left \(j, o, k·r\) must "
                                         r"agree with rank 1, not shapes \(2, 3, 4\) and "
                                         r"\(2, 5, 2\)$"):
        MonarchFactors(np.ones((2, 3, 4)), np.ones((2, 5, 2)))
