"""N:M sparsity: patterns, masks, pruning, checking and compression, against plain loops."""

import itertools
import math
import pickle
import re

import numpy as np
import pytest
from sparsecim.sw import nm
from sparsecim.sw.nm import (
    NMCompressed,
    NMPattern,
    NMPatternError,
    activation_norms,
    check_nm,
    compress,
    decompress,
    memory_bits,
    nm_mask,
    prune_by_score,
    prune_magnitude,
    prune_wanda,
    wanda_scores,
)

# Sparse patterns with m <= 16 take nm_mask's comparison path, the m > 16 ones its sort path.
SPARSE = [NMPattern(n, m) for n, m in
          [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8), (1, 8), (3, 5), (5, 20), (7, 32)]]
PATTERNS = [NMPattern(1, 1), NMPattern(4, 4), *SPARSE]
SHAPES = [(5, 16), (3, 13), (4, 1), (1, 7), (6, 37), (2, 64)]


def _exactly(message):
    return "^" + re.escape(message) + "$"


def _group_slices(in_features, m):
    return [range(g, min(g + m, in_features)) for g in range(0, in_features, m)]


def _ref_mask(scores, pattern):
    """Keep the n highest scores of each group, ties to the lower index: a Python sort."""
    scores = np.asarray(scores)
    mask = np.zeros(scores.shape, dtype=bool)
    for o in range(scores.shape[0]):
        for inputs in _group_slices(scores.shape[1], pattern.m):
            ranked = sorted(inputs, key=lambda i: (-scores[o, i].item(), i))
            for i in ranked[:pattern.n]:
                mask[o, i] = True
    return mask


def _ref_violations(weights, pattern):
    """(row, group, first input, last input, count) of every over-full group, row-major."""
    found = []
    for o in range(weights.shape[0]):
        for g, inputs in enumerate(_group_slices(weights.shape[1], pattern.m)):
            count = sum(1 for i in inputs if weights[o, i] != 0)
            if count > pattern.n:
                found.append((o, g, inputs[0], inputs[-1], count))
    return found


def _random_nm(rng, shape, pattern, dtype=np.int8):
    """A matrix obeying ``pattern`` built group by group: 0 to min(n, r) random non-zeros at
    random positions, so some groups (and rows) have fewer than n."""
    w = np.zeros(shape, dtype=dtype)
    for o in range(shape[0]):
        for inputs in _group_slices(shape[1], pattern.m):
            k = rng.integers(0, min(pattern.n, len(inputs)) + 1)
            for i in rng.choice(list(inputs), size=k, replace=False):
                w[o, i] = rng.choice([-1, 1]) * rng.integers(1, 100)
    return w


@pytest.fixture(params=["compare", "sort"])
def mask_path(request, monkeypatch):
    """Run nm_mask through its comparison path (m <= threshold) or force the sort path."""
    if request.param == "sort":
        monkeypatch.setattr(nm, "_RANK_MAX_M", 0)
    return request.param


# --- NMPattern ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, n, m", [
    ("1:2", 1, 2), ("2:4", 2, 4), ("1:4", 1, 4), ("4:8", 4, 8), ("2:8", 2, 8), ("1:8", 1, 8),
    ("dense", 1, 1), ("4:4", 4, 4),
], ids=lambda v: str(v))
def test_parse_and_str_round_trip(text, n, m):
    pattern = NMPattern.parse(text)
    assert pattern == NMPattern(n, m)
    assert str(pattern) == text
    assert NMPattern.parse(str(pattern)) == pattern


@pytest.mark.parametrize("text, expected", [
    (" 2 : 4 ", NMPattern(2, 4)), ("\t1:8\n", NMPattern(1, 8)), (" Dense ", NMPattern(1, 1)),
    ("1:1", NMPattern(1, 1)), ("08:16", NMPattern(8, 16)),
])
def test_parse_tolerates_whitespace_and_case(text, expected):
    assert NMPattern.parse(text) == expected


@pytest.mark.parametrize("text", ["0:4", "5:4", "2:", "a:b", "2:4:8", "", " ", "-1:4", "2/4",
                                  "2.0:4", "\uff12:4", "sparse"])
def test_parse_rejects_bad_text(text):
    with pytest.raises(ValueError, match=_exactly(
            f"pattern must be 'N:M' with 1 <= N <= M, or 'dense', not {text!r}")):
        NMPattern.parse(text)


def test_parse_rejects_non_strings():
    with pytest.raises(ValueError, match=_exactly("pattern text must be a str, not 24")):
        NMPattern.parse(24)


@pytest.mark.parametrize("n, m, message", [
    (0, 4, "n must be an integer from 1 to m=4, not 0"),
    (5, 4, "n must be an integer from 1 to m=4, not 5"),
    (2.0, 4, "n must be an integer from 1 to m=4, not 2.0"),
    (True, 4, "n must be an integer from 1 to m=4, not True"),
    (1, 0, "m must be a positive integer, not 0"),
    (1, "4", "m must be a positive integer, not '4'"),
])
def test_pattern_rejects_bad_fields(n, m, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        NMPattern(n, m)


@pytest.mark.parametrize("pattern, dense, density, bits", [
    (NMPattern(1, 1), True, 1.0, 0),
    (NMPattern(4, 4), True, 1.0, 2),
    (NMPattern(1, 2), False, 0.5, 1),
    (NMPattern(2, 4), False, 0.5, 2),
    (NMPattern(1, 4), False, 0.25, 2),
    (NMPattern(4, 8), False, 0.5, 3),
    (NMPattern(1, 8), False, 0.125, 3),
    (NMPattern(1, 3), False, 1 / 3, 2),
    (NMPattern(3, 5), False, 0.6, 3),
    (NMPattern(16, 64), False, 0.25, 6),
    (NMPattern(1, 65), False, 1 / 65, 7),
], ids=str)
def test_pattern_properties(pattern, dense, density, bits):
    assert pattern.is_dense is dense
    assert pattern.density == pytest.approx(density)
    assert pattern.sparsity == pytest.approx(1 - density)
    assert pattern.metadata_bits == bits


@pytest.mark.parametrize("pattern, in_features, groups", [
    (NMPattern(2, 4), 8, 2), (NMPattern(2, 4), 10, 3), (NMPattern(2, 4), 1, 1),
    (NMPattern(2, 4), 0, 0), (NMPattern(1, 1), 7, 7), (NMPattern(1, 8), 4096, 512),
    (NMPattern(3, 5), np.int64(11), 3),
], ids=lambda v: str(v))
def test_pattern_groups(pattern, in_features, groups):
    assert pattern.groups(in_features) == groups


@pytest.mark.parametrize("value", [-1, 2.5, None])
def test_pattern_groups_rejects_bad_in_features(value):
    with pytest.raises(ValueError, match=_exactly(
            f"in_features must be a non-negative integer, not {value!r}")):
        NMPattern(2, 4).groups(value)


def test_patterns_order_by_n_then_m_and_hash_as_plain_ints():
    assert sorted([NMPattern(2, 4), NMPattern(1, 8), NMPattern(1, 2), NMPattern(2, 2)]) == [
        NMPattern(1, 2), NMPattern(1, 8), NMPattern(2, 2), NMPattern(2, 4)]
    numpy_made = NMPattern(np.int64(2), np.int32(4))
    assert type(numpy_made.n) is int and type(numpy_made.m) is int
    assert {numpy_made: 1}[NMPattern(2, 4)] == 1
    assert repr(numpy_made) == "Pattern(n=2, m=4)"


# --- nm_mask ------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_nm_mask_matches_loop_reference_with_many_ties(pattern, mask_path):
    rng = np.random.default_rng([pattern.n, pattern.m])
    for dtype, shape in itertools.product(
            [np.int64, np.int8, np.uint8, np.float64, np.float32], SHAPES):
        # Few distinct values: ties everywhere. Integer extremes check that nothing negates
        # or overflows; the float ones include a signed zero pair.
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            choices = np.array([info.min, 0, info.max], dtype=dtype)
        else:
            choices = np.array([-0.0, 0.0, -1.5, 2.0], dtype=dtype)
        scores = rng.choice(choices, size=shape)
        mask = nm_mask(scores, pattern)
        assert mask.dtype == np.bool_ and mask.shape == shape
        np.testing.assert_array_equal(mask, _ref_mask(scores, pattern))


@pytest.mark.parametrize("pattern", SPARSE, ids=str)
def test_nm_mask_keeps_min_n_r_in_every_group(pattern, mask_path):
    rng = np.random.default_rng(7)
    for shape in SHAPES:
        mask = nm_mask(rng.standard_normal(shape), pattern)
        for inputs in _group_slices(shape[1], pattern.m):
            counts = mask[:, inputs[0]:inputs[-1] + 1].sum(axis=1)
            assert (counts == min(pattern.n, len(inputs))).all()


@pytest.mark.parametrize("scores, pattern, expected", [
    # Ties: the lower index wins.
    ([[1, 1, 1, 1]], NMPattern(2, 4), [[1, 1, 0, 0]]),
    ([[3, 5, 5, 5, 5]], NMPattern(1, 4), [[0, 1, 0, 0, 1]]),
    # Partial last groups of 2 and 1 inputs keep min(n, r).
    ([[5, 1, 2, 9, 3, 7]], NMPattern(2, 4), [[1, 0, 0, 1, 1, 1]]),
    ([[5, 1, 2, 9, 3, 7]], NMPattern(3, 4), [[1, 0, 1, 1, 1, 1]]),
    ([[1, 2, 3, 4, -7]], NMPattern(2, 4), [[0, 0, 1, 1, 1]]),
    # Signs count: the highest score, not the largest magnitude.
    ([[-9, 1, -2, 0]], NMPattern(1, 4), [[0, 1, 0, 0]]),
    ([[-9.5, -1e300, -2.0, -3.0]], NMPattern(2, 4), [[0, 0, 1, 1]]),
], ids=["ties-all-equal", "ties-partial", "partial-2-of-2:4", "partial-2-of-3:4",
        "partial-1-of-2:4", "signed", "float-negative"])
def test_nm_mask_by_hand(scores, pattern, expected, mask_path):
    np.testing.assert_array_equal(nm_mask(np.array(scores), pattern), np.array(expected, bool))


@pytest.mark.parametrize("pattern", [NMPattern(1, 1), NMPattern(3, 3)], ids=str)
def test_nm_mask_dense_keeps_everything(pattern):
    scores = np.random.default_rng(1).standard_normal((3, 7))
    assert nm_mask(scores, pattern).all()


def test_nm_mask_empty_matrices():
    assert nm_mask(np.zeros((0, 8)), NMPattern(2, 4)).shape == (0, 8)
    assert nm_mask(np.zeros((3, 0), dtype=int), NMPattern(2, 4)).shape == (3, 0)


def test_nm_mask_does_not_modify_its_input():
    scores = np.array([[4.0, 3.0, 2.0, 1.0, 5.0]])
    nm_mask(scores, NMPattern(1, 4))
    assert scores.tolist() == [[4.0, 3.0, 2.0, 1.0, 5.0]]


@pytest.mark.parametrize("scores, pattern, message", [
    (np.zeros(8), NMPattern(2, 4), "scores must be a 2-D matrix, not an array of shape (8,)"),
    (np.zeros((1, 2, 4)), NMPattern(2, 4),
     "scores must be a 2-D matrix, not an array of shape (1, 2, 4)"),
    (np.zeros((2, 4), dtype=bool), NMPattern(2, 4),
     "scores must have an integer or floating-point dtype, not bool"),
    (np.zeros((2, 4), dtype=complex), NMPattern(2, 4),
     "scores must have an integer or floating-point dtype, not complex128"),
    (np.array([[0, 1, 2, 3], [1, 2, np.nan, np.inf]]), NMPattern(2, 4),
     "scores[1, 2] must be finite, not nan"),
    (np.array([[0, -np.inf]]), NMPattern(1, 2), "scores[0, 1] must be finite, not -inf"),
    (np.zeros((2, 4)), "2:4", "pattern must be an NMPattern, not '2:4'"),
    (np.zeros((2, 4)), (2, 4), "pattern must be an NMPattern, not (2, 4)"),
], ids=["1-D", "3-D", "bool", "complex", "nan", "inf", "str-pattern", "tuple-pattern"])
def test_nm_mask_rejects_bad_input(scores, pattern, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        nm_mask(scores, pattern)


# --- scores and norms ---------------------------------------------------------------------

def test_activation_norms_match_a_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(-50, 50, size=(9, 6))
    for mean in (False, True):
        expected = [math.sqrt(sum(int(x[t, i]) ** 2 for t in range(9)) / (9 if mean else 1))
                    for i in range(6)]
        got = activation_norms(x, mean=mean)
        assert got.dtype == np.float64 and got.shape == (6,)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_activation_norms_by_hand():
    x = np.array([[3.0, 0.0, -1.0], [4.0, 0.0, 1.0]], dtype=np.float32)
    assert activation_norms(x).tolist() == [5.0, 0.0, math.sqrt(2)]
    assert activation_norms(x, mean=True).tolist() == [math.sqrt(12.5), 0.0, 1.0]


@pytest.mark.parametrize("x, mean, message", [
    (np.zeros(4), False, "x must be a 2-D matrix, not an array of shape (4,)"),
    (np.zeros((0, 4)), True, "x must have at least one token (row), not shape (0, 4)"),
    (np.array([[1.0, np.nan]]), False, "x[0, 1] must be finite, not nan"),
    (np.ones((2, 2)), 1, "mean must be a bool, not 1"),
])
def test_activation_norms_rejects_bad_input(x, mean, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        activation_norms(x, mean=mean)


def test_wanda_scores_match_a_loop():
    rng = np.random.default_rng(4)
    w = rng.integers(-128, 128, size=(5, 7), dtype=np.int8)
    norms = rng.integers(0, 1000, size=7)
    expected = [[abs(int(w[o, i])) * int(norms[i]) for i in range(7)] for o in range(5)]
    scores = wanda_scores(w, norms)
    assert scores.dtype == np.float64
    assert scores.tolist() == expected


@pytest.mark.parametrize("norms, message", [
    (np.ones(3), "act_norms must have shape (4,) to match weights (2, 4), not (3,)"),
    (np.ones((1, 4)), "act_norms must be a 1-D array, not an array of shape (1, 4)"),
    (np.array([1.0, 0.0, 2.0, -1.0]), "act_norms[3] must be non-negative, not -1.0"),
    (np.array([1, -2, 0, 0]), "act_norms[1] must be non-negative, not -2"),
    (np.array([1.0, np.inf, 0, 0]), "act_norms[1] must be finite, not inf"),
])
def test_wanda_scores_rejects_bad_norms(norms, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        wanda_scores(np.ones((2, 4)), norms)


# --- pruning ------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_prune_magnitude_keeps_the_largest_magnitudes(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 1])
    for dtype, shape in itertools.product([np.int8, np.int32, np.float32, np.float64], SHAPES):
        w = rng.integers(-4, 5, size=shape).astype(dtype)  # few values: ties and zeros
        pruned = prune_magnitude(w, pattern)
        assert pruned.dtype == w.dtype and pruned.shape == shape
        check_nm(pruned, pattern)
        keep = _ref_mask(np.abs(w.astype(np.int64)), pattern)
        np.testing.assert_array_equal(pruned, np.where(keep, w, 0))


@pytest.mark.parametrize("pattern", SPARSE, ids=str)
def test_prune_wanda_keeps_the_highest_wanda_scores(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 2])
    for shape in SHAPES:
        w = rng.integers(-20, 21, size=shape, dtype=np.int8)
        norms = rng.integers(0, 30, size=shape[1]).astype(np.float64)
        pruned = prune_wanda(w, norms, pattern)
        assert pruned.dtype == np.int8
        check_nm(pruned, pattern)
        scores = np.array([[abs(int(w[o, i])) * int(norms[i]) for i in range(shape[1])]
                           for o in range(shape[0])])
        np.testing.assert_array_equal(pruned, np.where(_ref_mask(scores, pattern), w, 0))


def test_prune_wanda_keeps_a_small_weight_with_a_huge_norm():
    w = np.array([[1.0, 10.0, 9.0, 8.0], [-2.0, 3.0, -4.0, 5.0]])
    norms = np.array([100.0, 1.0, 1.0, 1.0])
    # Magnitude: 10 and 9, then 5 and -4. Wanda scores: 100 10 9 8, then 200 3 4 5.
    assert prune_magnitude(w, NMPattern(2, 4)).tolist() == [[0, 10, 9, 0], [0, 0, -4, 5]]
    assert prune_wanda(w, norms, NMPattern(2, 4)).tolist() == [[1, 10, 0, 0], [-2, 0, 0, 5]]


def test_prune_magnitude_is_exact_at_integer_extremes():
    w8 = np.array([[-127, 127, -128, 1]], dtype=np.int8)
    assert prune_magnitude(w8, NMPattern(1, 4)).tolist() == [[0, 0, -128, 0]]
    big = np.array([[2 ** 62 + 1, -(2 ** 62) - 2, 2 ** 62 + 2, -(2 ** 63)]], dtype=np.int64)
    # float64 would round all four to the same value; the order must still be exact.
    assert prune_magnitude(big[:, :3], NMPattern(1, 3)).tolist() == [[0, -(2 ** 62) - 2, 0]]
    assert prune_magnitude(big, NMPattern(1, 4)).tolist() == [[0, 0, 0, -(2 ** 63)]]


def test_prune_by_score_returns_a_new_array_with_clean_zeros():
    w = np.array([[-1.0, -2.0, -3.0, -4.0]])
    pruned = prune_by_score(w, np.array([[4, 3, 2, 1]]), NMPattern(1, 4))
    assert pruned.tolist() == [[-1.0, 0.0, 0.0, 0.0]]
    assert not np.signbit(pruned[0, 1:]).any()  # +0.0, not -0.0
    assert w.tolist() == [[-1.0, -2.0, -3.0, -4.0]]


@pytest.mark.parametrize("weights, scores, message", [
    (np.ones((2, 4)), np.ones((2, 5)), "scores must have the shape of weights (2, 4), not (2, 5)"),
    (np.ones(4), np.ones(4), "weights must be a 2-D matrix, not an array of shape (4,)"),
    (np.array([[1.0, np.nan]]), np.ones((1, 2)), "weights[0, 1] must be finite, not nan"),
    (np.ones((1, 2)), np.array([[np.nan, 1.0]]), "scores[0, 0] must be finite, not nan"),
])
def test_prune_by_score_rejects_bad_input(weights, scores, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        prune_by_score(weights, scores, NMPattern(1, 2))


def test_prune_functions_reject_a_non_pattern():
    message = _exactly("pattern must be an NMPattern, not '2:4'")
    with pytest.raises(ValueError, match=message):
        prune_magnitude(np.ones((1, 4)), "2:4")
    with pytest.raises(ValueError, match=message):
        prune_wanda(np.ones((1, 4)), np.ones(4), "2:4")


# --- check_nm -----------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_check_nm_passes_pruned_and_generated_matrices(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 3])
    for shape in SHAPES:
        check_nm(prune_magnitude(rng.standard_normal(shape), pattern), pattern)
        check_nm(_random_nm(rng, shape, pattern), pattern)


@pytest.mark.parametrize("pattern", SPARSE, ids=str)
def test_check_nm_reports_the_first_violation_of_a_loop_reference(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 4])
    raised = 0
    for shape in SHAPES * 3:
        density = rng.uniform(0.1, 0.9)
        w = (rng.random(shape) < density) * rng.integers(1, 9, size=shape)
        found = _ref_violations(w, pattern)
        if not found:
            check_nm(w, pattern)
            continue
        raised += 1
        row, group, first, last, count = found[0]
        allowed = pattern.n
        with pytest.raises(NMPatternError, match=_exactly(
                f"weights row {row}, inputs {first}..{last} (group {group}) have {count} "
                f"non-zero weights; pattern {pattern} allows at most {allowed}")) as info:
            check_nm(w, pattern)
        err = info.value
        assert (err.row, err.group, err.first_input, err.count, err.allowed, err.pattern) == (
            row, group, first, count, allowed, pattern)
    assert raised  # the random densities did produce violations


@pytest.mark.parametrize("plants, first", [
    ([(3, 2), (1, 3)], (1, 3)),  # an earlier row beats an earlier group
    ([(2, 3), (2, 1)], (2, 1)),  # same row: the earlier group
    ([(4, 0), (0, 3)], (0, 3)),
], ids=["rows", "groups", "extremes"])
def test_check_nm_names_the_first_of_two_planted_violations(plants, first):
    w = np.zeros((5, 16), dtype=np.int8)
    for row, group in plants:
        w[row, group * 4:group * 4 + 3] = [1, -2, 3]
    row, group = first
    message = (f"weights row {row}, inputs {group * 4}..{group * 4 + 3} (group {group}) "
               f"have 3 non-zero weights; pattern 2:4 allows at most 2")
    with pytest.raises(NMPatternError, match=_exactly(message)) as info:
        check_nm(w, NMPattern(2, 4))
    assert (info.value.row, info.value.group, info.value.first_input) == (row, group, group * 4)
    assert (info.value.count, info.value.allowed) == (3, 2)
    assert info.value.pattern == NMPattern(2, 4)


def test_check_nm_example_message_and_name():
    w = np.zeros((4, 12))
    w[3, 8:11] = 1.0
    with pytest.raises(NMPatternError, match=_exactly(
            "weights row 3, inputs 8..11 (group 2) have 3 non-zero weights; "
            "pattern 2:4 allows at most 2")):
        check_nm(w, NMPattern(2, 4))
    with pytest.raises(NMPatternError, match=_exactly(
            "wq row 3, inputs 8..11 (group 2) have 3 non-zero weights; "
            "pattern 2:4 allows at most 2")):
        check_nm(w, NMPattern(2, 4), name="wq")


def test_check_nm_partial_last_group_names_its_real_inputs():
    w = np.zeros((1, 10), dtype=int)
    w[0, 8:10] = 5
    with pytest.raises(NMPatternError, match=_exactly(
            "weights row 0, inputs 8..9 (group 2) have 2 non-zero weights; "
            "pattern 1:4 allows at most 1")) as info:
        check_nm(w, NMPattern(1, 4))
    assert info.value.allowed == 1
    check_nm(w, NMPattern(2, 4))


def test_check_nm_dense_patterns_accept_anything():
    w = np.ones((3, 10))
    check_nm(w, NMPattern(1, 1))
    check_nm(w, NMPattern(4, 4))


def test_nm_pattern_error_is_a_value_error_and_pickles():
    err = NMPatternError(3, 2, 8, 3, 2, NMPattern(2, 4))
    assert isinstance(err, ValueError)
    assert str(err) == ("weights row 3, inputs 8..11 (group 2) have 3 non-zero weights; "
                        "pattern 2:4 allows at most 2")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)
    assert (copy.row, copy.group, copy.first_input, copy.count, copy.allowed, copy.pattern) == (
        3, 2, 8, 3, 2, NMPattern(2, 4))


@pytest.mark.parametrize("weights, pattern, message", [
    (np.zeros(4), NMPattern(2, 4), "weights must be a 2-D matrix, not an array of shape (4,)"),
    (np.zeros((1, 1, 4)), NMPattern(2, 4),
     "weights must be a 2-D matrix, not an array of shape (1, 1, 4)"),
    (np.array([[0.0, np.nan, 0.0, 0.0]]), NMPattern(2, 4),
     "weights[0, 1] must be finite, not nan"),
    (np.zeros((1, 4), dtype=bool), NMPattern(2, 4),
     "weights must have an integer or floating-point dtype, not bool"),
    (np.array([["a", "b"]]), NMPattern(1, 2),
     "weights must have an integer or floating-point dtype, not <U1"),
    (np.zeros((1, 4)), "2:4", "pattern must be an NMPattern, not '2:4'"),
], ids=["1-D", "3-D", "nan", "bool", "str", "str-pattern"])
def test_check_nm_rejects_bad_input(weights, pattern, message):
    with pytest.raises(ValueError, match=_exactly(message)) as info:
        check_nm(weights, pattern)
    assert type(info.value) is ValueError


# --- compress / decompress ----------------------------------------------------------------

def _check_compressed_against_loop(c, w, pattern):
    """Every stored slot read back by hand: its input, its value, padding slots zero; every
    non-zero of ``w`` stored exactly once."""
    out, in_features = w.shape
    groups = -(-in_features // pattern.m)
    assert c.values.shape == c.positions.shape == (out, groups, pattern.n)
    assert c.positions.dtype == np.uint8 and c.values.dtype == w.dtype
    assert (c.out_features, c.in_features, c.pattern) == (out, in_features, pattern)
    stored = set()
    for o in range(out):
        for g in range(groups):
            positions = [int(p) for p in c.positions[o, g]]
            assert positions == sorted(set(positions)) and positions[-1] < pattern.m
            for p, value in zip(positions, c.values[o, g], strict=True):
                i = g * pattern.m + p
                if i < in_features:
                    assert value == w[o, i]
                    stored.add((o, i))
                else:
                    assert value == 0
    assert {(int(o), int(i)) for o, i in zip(*np.nonzero(w), strict=True)} <= stored


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_compress_round_trip(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 5])
    for dtype, shape in itertools.product([np.int8, np.int16, np.float32, np.float64],
                                          [*SHAPES, (3, 0), (0, 9)]):
        w = _random_nm(rng, shape, pattern, dtype)
        if shape[0] > 2:
            w[1] = 0  # a whole row without non-zeros
        c = compress(w, pattern)
        _check_compressed_against_loop(c, w, pattern)
        back = decompress(c)
        assert back.dtype == w.dtype and back.shape == w.shape
        np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("pattern", SPARSE, ids=str)
def test_compress_round_trip_of_pruned_matrices(pattern):
    rng = np.random.default_rng([pattern.n, pattern.m, 6])
    for shape in SHAPES:
        w = prune_magnitude(rng.standard_normal(shape).astype(np.float32), pattern)
        c = compress(w, pattern)
        _check_compressed_against_loop(c, w, pattern)
        np.testing.assert_array_equal(decompress(c), w)


@pytest.mark.parametrize("row, pattern, positions, values", [
    ([0, 0, 5, 0], NMPattern(2, 4), [[0, 2]], [[0, 5]]),
    ([0, 3, 0, 4], NMPattern(2, 4), [[1, 3]], [[3, 4]]),
    ([0, 0, 0, 0], NMPattern(2, 4), [[0, 1]], [[0, 0]]),
    ([0, 0, 0, 9], NMPattern(3, 4), [[0, 1, 3]], [[0, 0, 9]]),
    # Partial last group of 1 input (in_features 5): slots 1 and 2 address padding.
    ([1, 0, 2, 0, 7], NMPattern(3, 4), [[0, 1, 2], [0, 1, 2]], [[1, 0, 2], [7, 0, 0]]),
    ([1, 0, 2, 0, 0, 6], NMPattern(3, 4), [[0, 1, 2], [0, 1, 2]], [[1, 0, 2], [0, 6, 0]]),
    ([4, 3, 2], NMPattern(4, 4), [[0, 1, 2, 3]], [[4, 3, 2, 0]]),
    ([4, 0, 2], NMPattern(1, 1), [[0], [0], [0]], [[4], [0], [2]]),
], ids=["fill-below", "two-nonzeros", "all-zero", "fill-two", "partial-1", "partial-2",
        "dense-4:4-partial", "dense-1:1"])
def test_compress_fills_the_lowest_unused_positions(row, pattern, positions, values):
    c = compress(np.array([row]), pattern)
    assert c.positions.tolist() == [positions]
    assert c.values.tolist() == [values]
    assert decompress(c).tolist() == [row]


def test_compress_rejects_a_violating_matrix():
    w = np.zeros((2, 8))
    w[1, 4:8] = [1, 2, 0, 3]
    with pytest.raises(NMPatternError, match=_exactly(
            "w1 row 1, inputs 4..7 (group 1) have 3 non-zero weights; "
            "pattern 2:4 allows at most 2")):
        compress(w, NMPattern(2, 4), name="w1")


def test_compress_rejects_groups_too_large_for_uint8_positions():
    with pytest.raises(ValueError, match=_exactly(
            "pattern.m must be at most 256 for uint8 positions, not 257")):
        compress(np.zeros((1, 300)), NMPattern(1, 257))
    c = compress(np.eye(1, 300, 299), NMPattern(1, 256))
    assert c.positions.tolist() == [[[0], [43]]]


def _valid_fields():
    # 2:4 over 6 inputs: a full group and a partial group of 2.
    return dict(pattern=NMPattern(2, 4), in_features=6,
                values=np.array([[[1, 2], [3, 0]]], dtype=np.int8),
                positions=np.array([[[0, 3], [1, 2]]], dtype=np.uint8))


@pytest.mark.parametrize("change, message", [
    ({"values": np.zeros((1, 3, 2))}, "values must have shape (out_features, 2, 2), not (1, 3, 2)"),
    ({"values": np.zeros((1, 2))}, "values must be a 3-D array, not an array of shape (1, 2)"),
    ({"positions": np.zeros((2, 2, 2), dtype=np.uint8)},
     "positions must have the shape of values (1, 2, 2), not (2, 2, 2)"),
    ({"positions": np.array([[[0, 3], [1, 2]]])}, "positions must have dtype uint8, not int64"),
    ({"positions": np.array([[[0, 4], [1, 2]]], dtype=np.uint8)},
     "positions[0, 0, 1] must be below m=4, not 4"),
    ({"positions": np.array([[[0, 3], [2, 2]]], dtype=np.uint8)},
     "positions[0, 1] must be strictly ascending, not [2, 2]"),
    ({"positions": np.array([[[3, 0], [1, 2]]], dtype=np.uint8)},
     "positions[0, 0] must be strictly ascending, not [3, 0]"),
    ({"values": np.array([[[1, 2], [3, 4]]], dtype=np.int8)},
     "values[0, 1, 1] at padding position 2 (group of 2 inputs) must be 0, not 4"),
    ({"in_features": -1}, "in_features must be a non-negative integer, not -1"),
    ({"pattern": (2, 4)}, "pattern must be an NMPattern, not (2, 4)"),
])
def test_nm_compressed_rejects_broken_invariants(change, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        NMCompressed(**(_valid_fields() | change))


def test_nm_compressed_valid_fields_decompress_by_hand():
    c = NMCompressed(**_valid_fields())
    assert c.out_features == 1
    assert decompress(c).tolist() == [[1, 0, 0, 2, 0, 3]]


def test_decompress_rechecks_and_rejects_other_objects():
    c = NMCompressed(**_valid_fields())
    c.positions[0, 0] = [2, 2]
    with pytest.raises(ValueError, match=_exactly(
            "positions[0, 0] must be strictly ascending, not [2, 2]")):
        decompress(c)
    with pytest.raises(ValueError, match=_exactly("c must be an NMCompressed, not ndarray")):
        decompress(np.zeros((1, 4)))


# --- memory_bits --------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, values, metadata", [
    # 4096 rows x 1024 groups x 2 slots = 8,388,608 slots; x 8 bits, x 2 bits of position.
    (NMPattern(2, 4), 67_108_864, 16_777_216),
    # 4096 x 512 groups x 1 slot = 2,097,152 slots; x 8, x 3.
    (NMPattern(1, 8), 16_777_216, 6_291_456),
    # 4096 x 512 x 2 = 4,194,304 slots; x 8, x 3.
    (NMPattern(2, 8), 33_554_432, 12_582_912),
    # 4096 x 512 x 4 = 8,388,608 slots; x 8, x 3.
    (NMPattern(4, 8), 67_108_864, 25_165_824),
    # 4096 x 1024 x 1 = 4,194,304 slots; x 8, x 2.
    (NMPattern(1, 4), 33_554_432, 8_388_608),
    # Dense: the plain matrix, 4096 x 4096 x 8, no metadata.
    (NMPattern(1, 1), 134_217_728, 0),
    (NMPattern(4, 4), 134_217_728, 0),
    (NMPattern(8, 8), 134_217_728, 0),
], ids=str)
def test_memory_bits_4096_square(pattern, values, metadata):
    assert memory_bits(4096, 4096, pattern) == {
        "values": values, "metadata": metadata, "total": values + metadata,
        "dense": 134_217_728}


@pytest.mark.parametrize("out, inputs, pattern, value_bits, expected", [
    # 3 groups (the last of 2 inputs, padded) x 2 slots x 3 rows = 18 slots; x 4, x 2.
    (3, 10, NMPattern(2, 4), 4, (72, 36, 108, 120)),
    # 4:4 on 10 inputs: dense, so 3 x 10 x 4 with no padding to 12.
    (3, 10, NMPattern(4, 4), 4, (120, 0, 120, 120)),
    # 2 groups of 5 (one partial) x 3 slots x 1 row = 6 slots; x 16, x 3.
    (1, 7, NMPattern(3, 5), 16, (96, 18, 114, 112)),
    (0, 7, NMPattern(3, 5), 8, (0, 0, 0, 0)),
    (2, 0, NMPattern(2, 4), 8, (0, 0, 0, 0)),
])
def test_memory_bits_small_by_hand(out, inputs, pattern, value_bits, expected):
    bits = memory_bits(out, inputs, pattern, value_bits=value_bits)
    assert tuple(bits.values()) == expected
    assert list(bits) == ["values", "metadata", "total", "dense"]


@pytest.mark.parametrize("args, kwargs, message", [
    ((-1, 4, NMPattern(2, 4)), {}, "out_features must be a non-negative integer, not -1"),
    ((4, 4.0, NMPattern(2, 4)), {}, "in_features must be a non-negative integer, not 4.0"),
    ((4, 4, NMPattern(2, 4)), {"value_bits": 0}, "value_bits must be a positive integer, not 0"),
    ((4, 4, NMPattern(2, 4)), {"value_bits": True},
     "value_bits must be a positive integer, not True"),
    ((4, 4, "2:4"), {}, "pattern must be an NMPattern, not '2:4'"),
])
def test_memory_bits_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=_exactly(message)):
        memory_bits(*args, **kwargs)


@pytest.mark.parametrize("pattern", [NMPattern(1, 2), NMPattern(2, 4), NMPattern(4, 8),
                                     NMPattern(3, 5), NMPattern(5, 16), NMPattern(2, 17)],
                         ids=str)
def test_compress_stores_the_slots_a_loop_picks(pattern):
    """compress (a table by non-zero mask for m <= 16, a cumulative count beyond) against a
    loop: every non-zero, then the lowest unused positions, ascending; partial last groups
    and groups with fewer non-zeros included."""
    rng = np.random.default_rng(pattern.m)
    cols = 3 * pattern.m + 2
    w = rng.integers(-9, 10, size=(6, cols))
    for row in range(6):
        for g0 in range(0, cols, pattern.m):
            group = np.arange(g0, min(g0 + pattern.m, cols))
            w[row, rng.permutation(group)[int(rng.integers(0, pattern.n + 1)):]] = 0
    packed = compress(w, pattern)
    for row in range(6):
        for group, g0 in enumerate(range(0, cols, pattern.m)):
            chunk = list(w[row, g0:g0 + pattern.m]) + [0] * (g0 + pattern.m - cols)
            used = [p for p, v in enumerate(chunk) if v]
            free = [p for p, v in enumerate(chunk) if not v]
            slots = sorted(used + free[:pattern.n - len(used)])
            assert packed.positions[row, group].tolist() == slots
            assert packed.values[row, group].tolist() == [chunk[p] for p in slots]
