"""The integer-layer steps of ``sparsecim gemm`` and ``sparsecim layer`` in the pipeline
(sw/pipeline.py): operands, pruning, mapping and the INT32 output check, each against a plain
numpy reference. The settings loader and validation are tested through ``run``
(tests/test_tb_run.py, tests/test_tb_cli.py)."""

import numpy as np
import pytest
from conftest import int8
from sparsecim.hw.config import preset
from sparsecim.sw.nm import NMPattern, check_nm
from sparsecim.sw.operands import gemm_operands, random_gemm
from sparsecim.sw.pipeline import (
    RunError,
    gemm_layer,
    int32_outputs,
    layer_operands,
    map_layer,
    prune_layer,
    run_layer,
)

TINY = preset("tiny")


@pytest.mark.parametrize("pattern", [(1, 1), (2, 4), (1, 8)], ids=["dense", "2:4", "1:8"])
def test_gemm_operands_keep_the_largest_weights_of_each_group(pattern):
    x, w = gemm_operands(TINY, 37, 6, 3, 5, pattern)
    dense_x, dense = random_gemm(TINY, 37, 6, 3, 5)
    assert np.array_equal(x, dense_x)
    n, m = pattern
    if pattern == (1, 1):
        assert np.array_equal(w, dense)
        return
    check_nm(w.T, NMPattern(n, m))
    kept = w != 0
    # Every kept weight is the dense one, and no dropped weight of its group (column, m
    # consecutive inputs) is larger in magnitude than a kept one.
    assert np.array_equal(w[kept], dense[kept])
    for col in range(w.shape[1]):
        for lo in range(0, w.shape[0], m):
            group = slice(lo, lo + m)
            keep, drop = np.abs(dense[group, col][kept[group, col]]), \
                np.abs(dense[group, col][~kept[group, col]])
            assert len(keep) == min(n, m, np.count_nonzero(dense[group, col]))
            if len(keep) and len(drop):
                assert keep.min() >= drop.max()


@pytest.mark.parametrize("pattern", [(1, 1), (2, 4)], ids=["dense", "2:4"])
def test_gemm_layer_runs_the_matmul_of_its_operands(pattern):
    mapped = gemm_layer(TINY, 37, 6, 3, 5, pattern)
    x, w = gemm_operands(TINY, 37, 6, 3, 5, pattern)
    reference = x @ w  # int64 numpy matmul, not the pipeline's reference function
    assert np.array_equal(mapped.expected, reference)
    checked = run_layer(mapped)
    assert checked.match and np.array_equal(checked.outputs, reference)
    assert mapped.mapping == ("linear" if pattern == (1, 1) else "nm")


def test_gemm_layer_refuses_a_workload_that_could_wrap():
    with pytest.raises(RunError) as exc:
        gemm_layer(TINY, 200000, 1, 1, 0)
    assert str(exc.value) == ("K must be at most 131071 for 32-bit accumulators (larger K "
                              "could wrap), not 200000")


def test_layer_operands_are_int64_and_checked():
    w, x = layer_operands(TINY, int8((3, 8), 1), int8((2, 8), 2))
    assert (w.dtype, x.dtype) == (np.int64, np.int64)
    assert np.array_equal(w, int8((3, 8), 1)) and np.array_equal(x, int8((2, 8), 2))
    with pytest.raises(RunError) as exc:
        layer_operands(TINY, int8((3, 8), 1), int8((1, 5), 2))
    assert str(exc.value) == "inputs must have 8 columns (in_features of weights (3, 8)), not 5"
    with pytest.raises(RunError) as exc:
        layer_operands(TINY, np.zeros((0, 8), np.int8), np.zeros((0, 8), np.int8))
    assert str(exc.value) == "weights and inputs must be non-empty, not (0, 8) and (0, 8)"
    with pytest.raises(RunError) as exc:
        layer_operands(TINY, np.array([[1, 2], [200, 0]], np.int16), np.ones((1, 2), np.int8))
    assert str(exc.value) == "weights[1, 0] must be in -128..127 (8-bit signed), not 200"


def test_prune_layer_by_magnitude_and_by_wanda():
    w = np.array([[1, 2, 3, 4, -8, 0, 5, 1]])
    x = np.array([[100, 0, 0, 1, 1, 1, 1, 1]])
    # Magnitude, 2:4: the two largest of each group of four (7 non-zeros, 4 kept).
    pruned, count = prune_layer(w, x, (2, 4), "magnitude")
    assert np.array_equal(pruned, [[0, 0, 3, 4, -8, 0, 5, 0]]) and count == 3
    # Wanda scores |w| x input norm: 100, 0, 0, 4 in the first group (channels 1 and 2 carry
    # no input), 8, 0, 5, 1 in the second.
    pruned, count = prune_layer(w, x, (2, 4), "wanda")
    assert np.array_equal(pruned, [[1, 0, 0, 4, -8, 0, 5, 0]]) and count == 3
    same, none = prune_layer(w, x, (1, 1), "magnitude")
    assert same is w and none == 0


def test_map_layer_runs_weights_that_obey_the_pattern_and_names_a_broken_group():
    w = np.zeros((2, 8), dtype=np.int64)
    w[0, [0, 3, 5, 6]] = [7, -3, 100, -128]
    w[1, [1, 2, 4]] = [1, 2, 3]
    x = int8((3, 8), 9).astype(np.int64)
    for mapping, ran in (("auto", "nm"), ("nm", "nm"), ("linear", "linear")):
        mapped = map_layer(TINY, w, x, (2, 4), mapping)
        checked = run_layer(mapped)
        assert mapped.mapping == ran
        assert checked.match and np.array_equal(checked.outputs, x @ w.T)
    w[1, 5:8] = [1, 2, 3]
    with pytest.raises(RunError) as exc:
        map_layer(TINY, w, x, (2, 4))
    assert str(exc.value) == ("weights row 1, inputs 4..7 (group 1) have 4 non-zero weights; "
                              "pattern 2:4 allows at most 2")


def test_outputs_that_do_not_fit_int32_are_refused_not_truncated():
    """Moved from tests/test_tb_cli.py with the check (``_check_int32`` there, now
    :func:`int32_outputs`); the CLI prints the same line for it."""
    y = int32_outputs(np.array([[2 ** 31 - 1, -2 ** 31]]))
    assert y.dtype == np.int32 and y.tolist() == [[2 ** 31 - 1, -2 ** 31]]
    with pytest.raises(RunError) as exc:
        int32_outputs(np.array([[0, 1], [2 ** 31, 0]]))
    assert str(exc.value) == ("output[1, 0] must fit int32 (-2147483648..2147483647) to be "
                              "written, not 2147483648")
