"""FLOW selection: outlier statistics on planted outliers, normalisation, the integer program
against brute force, infeasibility, tolerance, weighting, the M direction and dense ends."""

import dataclasses
import itertools
from fractions import Fraction

import numpy as np
import pytest
from sparsecim.sw import flow
from sparsecim.sw.flow import (
    RELEASED_CHOICES,
    FlowInfeasible,
    FlowPlan,
    block_outlier_stats,
    mean_pairwise_distance,
    min_max_normalise,
    pattern_costs,
    select_patterns,
)
from sparsecim.sw.nm import NMPattern, wanda_scores

P = NMPattern.parse
DENSE = NMPattern(1, 1)


def _brute_pairwise(positions):
    p = np.asarray(positions, dtype=np.float64)
    diffs = np.abs(p[:, None] - p[None, :])
    n = len(p)
    return diffs[np.triu_indices(n, 1)].sum() / (n * (n - 1) / 2)


# --------------------------------------------------------------------------------------------
# Mean pairwise distance and outlier statistics


@pytest.mark.parametrize("seed", range(4))
def test_mean_pairwise_distance_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 10_000, size=int(rng.integers(2, 300)))
    assert mean_pairwise_distance(ints) == pytest.approx(_brute_pairwise(ints), rel=1e-12)
    reals = rng.normal(size=50) * 100
    assert mean_pairwise_distance(reals) == pytest.approx(_brute_pairwise(reals), rel=1e-12)


def test_mean_pairwise_distance_by_hand_and_unsorted():
    assert mean_pairwise_distance([40, 10, 20]) == 20.0        # (10 + 30 + 20) / 3
    assert mean_pairwise_distance([5, 5]) == 0.0
    # Large positions: the integer numerator is exact.
    big = np.array([0, 2**40, 2**41], dtype=np.int64)
    assert mean_pairwise_distance(big) == float(Fraction(4 * 2**40, 3))


@pytest.mark.parametrize("positions, message", [
    ([3], "positions must hold at least two values, not 1"),
    ([[1, 2]], "positions must be a non-empty 1-D sequence, not an array of shape (1, 2)"),
    ([1.0, np.nan], "positions[1] must be finite, not nan"),
])
def test_mean_pairwise_distance_rejects_bad_positions(positions, message):
    with pytest.raises(ValueError) as info:
        mean_pairwise_distance(positions)
    assert str(info.value) == message


def test_outlier_stats_of_planted_outliers_by_hand():
    scores = np.ones(1000)
    scores[[10, 20, 40]] = 100.0
    stats = block_outlier_stats(scores, 5.0)
    # Mean (997 + 300) / 1000 = 1.297, threshold 6.485: exactly the three planted scores.
    assert stats.mean_score == pytest.approx(1.297)
    assert stats.threshold == pytest.approx(6.485)
    assert (stats.count, stats.used, stats.size) == (3, 3, 1000)
    assert stats.ratio == pytest.approx(0.3)                   # percent
    assert stats.locality == pytest.approx(1 / 20)             # mean of 10, 30, 20


def test_outlier_threshold_is_strict():
    scores = np.array([1.0, 1.0, 2.0, 4.0])                    # mean 2
    assert block_outlier_stats(scores, 1.0).count == 1         # 2.0 is not above 2.0
    assert block_outlier_stats(scores, 0.5).count == 2         # nor 1.0 above 1.0


def test_outlier_positions_are_flattened_row_major_and_subset_is_the_first():
    scores = np.ones((4, 10))
    for row, col in [(0, 5), (1, 0), (3, 9), (2, 2)]:
        scores[row, col] = 1000.0
    # Flattened positions 5, 10, 22, 39; the first two give distance 5.
    stats = block_outlier_stats(scores, 3.0, subset_size=2)
    assert (stats.count, stats.used) == (4, 2)
    assert stats.locality == pytest.approx(1 / 5)
    full = block_outlier_stats(scores, 3.0)
    assert full.locality == pytest.approx(1 / _brute_pairwise([5, 10, 22, 39]))
    assert full.ratio == pytest.approx(10.0)


@pytest.mark.parametrize("planted, count", [([], 0), ([7], 1)])
def test_locality_is_zero_below_two_outliers(planted, count):
    scores = np.ones(100)
    scores[planted] = 1e4
    stats = block_outlier_stats(scores, 5.0)
    assert stats.count == count and stats.locality == 0.0
    assert stats.ratio == pytest.approx(count)


def test_outlier_stats_of_synthetic_wanda_scores_with_planted_channels():
    # A (96, 128) layer, |w| in [0.5, 1], activation norms 1 except three input channels of
    # norm 50: the outliers above 5 × mean are exactly those columns, every row.
    rng = np.random.default_rng(7)
    rows, cols, channels = 96, 128, [3, 4, 90]
    w = rng.uniform(0.5, 1.0, (rows, cols)) * rng.choice([-1, 1], (rows, cols))
    norms = np.ones(cols)
    norms[channels] = 50.0
    scores = wanda_scores(w, norms)
    stats = block_outlier_stats(scores, 5.0, subset_size=10_000)
    positions = np.array([r * cols + c for r in range(rows) for c in channels])
    assert stats.count == positions.size
    assert stats.ratio == pytest.approx(100 * len(channels) / cols)
    assert stats.locality == pytest.approx(1 / _brute_pairwise(positions), rel=1e-12)


def test_clustered_outliers_have_higher_locality_than_spread_ones():
    clustered, spread = np.ones(10_000), np.ones(10_000)
    clustered[5000:5020] = 500.0
    spread[np.arange(20) * 500] = 500.0
    a, b = block_outlier_stats(clustered, 5.0), block_outlier_stats(spread, 5.0)
    assert a.ratio == b.ratio == pytest.approx(0.2)
    assert a.locality > 100 * b.locality


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros(0), 5.0), {}, "scores must be non-empty, not an array of shape (0,)"),
    ((np.array([1.0, np.inf]), 5.0), {}, "scores[1] must be finite, not inf"),
    ((np.ones(4), 0), {}, "hyper_m must be a positive finite number, not 0"),
    ((np.ones(4), "5"), {}, "hyper_m must be a positive finite number, not '5'"),
    ((np.ones(4), 5.0), {"subset_size": 0}, "subset_size must be a positive integer, not 0"),
    ((np.ones(4), 5.0), {"subset_size": 2.0},
     "subset_size must be a positive integer, not 2.0"),
])
def test_block_outlier_stats_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError) as info:
        block_outlier_stats(*args, **kwargs)
    assert str(info.value) == message


def test_released_defaults():
    assert flow.DEFAULT_HYPER_M == 0.5 and flow.OWL_HYPER_M == 5.0
    assert flow.DEFAULT_SUBSET_SIZE == 10_000
    assert [str(c) for c in RELEASED_CHOICES] == ["2:4", "4:4", "2:8", "4:8", "8:8"]


# --------------------------------------------------------------------------------------------
# Normalisation


def test_min_max_normalise_maps_onto_unit_range():
    np.testing.assert_allclose(min_max_normalise([2.0, 4.0, 3.0, 6.0]), [0, 0.5, 0.25, 1])


@pytest.mark.parametrize("values", [[3.0], [1.5, 1.5, 1.5], [0, 0]])
def test_min_max_normalise_all_equal_is_the_middle(values):
    np.testing.assert_array_equal(min_max_normalise(values), np.full(len(values), 0.5))


@pytest.mark.parametrize("values, message", [
    ([], "values must be a non-empty 1-D sequence, not an array of shape (0,)"),
    ([1.0, np.nan], "values[1] must be finite, not nan"),
    (["a"], "values must be real numbers, not dtype <U1"),
])
def test_min_max_normalise_rejects_bad_values(values, message):
    with pytest.raises(ValueError) as info:
        min_max_normalise(values)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# Costs


def test_pattern_costs_by_hand():
    costs = pattern_costs([1.0, 0.5], [0.0, 1.0])
    # Block 0: N goal 8, M goal 8 (1 - 0). Block 1: N goal 4, M goal 0.
    np.testing.assert_allclose(costs, [[6 + 16, 4 + 16, 6 + 0, 4 + 0, 0 + 0],
                                       [2 + 16, 0 + 16, 2 + 32, 0 + 32, 4 + 32]])
    paper = pattern_costs([1.0, 0.5], [0.0, 1.0], m_direction="paper")
    np.testing.assert_allclose(paper, pattern_costs([1.0, 0.5], [1.0, 0.0]))


def test_pattern_costs_scale_with_the_largest_n_and_m_offered():
    choices = [P("1:2"), P("1:4"), P("2:4")]
    # N_max = 2, M_max = 4: Ô = 1 asks for N = 2, D̂ = 0 for M = 4.
    np.testing.assert_allclose(pattern_costs([1.0], [0.0], choices), [[1 + 8, 1, 0]])


def test_pattern_costs_reject_values_outside_the_unit_range():
    with pytest.raises(ValueError) as info:
        pattern_costs([0.5, 1.5], [0.0, 0.0])
    assert str(info.value) == "ratio_norm[1] must be in [0, 1], not 1.5"


# --------------------------------------------------------------------------------------------
# Selection against brute force


def _brute(ratios, localities, target, *, choices=RELEASED_CHOICES, tolerance=0.0,
           weights=None, forced=(), m_direction="released"):
    """Optimal objective and every optimal assignment by enumeration, or the neighbours."""
    blocks = len(ratios)
    costs = pattern_costs(min_max_normalise(ratios), min_max_normalise(localities), choices,
                          m_direction=m_direction)
    w = np.ones(blocks) if weights is None else np.asarray(weights, dtype=np.float64)
    free = [b for b in range(blocks) if b not in forced]
    best, best_sets, means = np.inf, [], []
    for combo in itertools.product(range(len(choices)), repeat=len(free)):
        s = np.zeros(blocks)
        for b, c in zip(free, combo, strict=True):
            s[b] = choices[c].sparsity
        mean = float(np.dot(w, s) / w.sum())
        means.append(mean)
        if abs(mean - target) > tolerance + 1e-9:
            continue
        cost = sum(costs[b, c] for b, c in zip(free, combo, strict=True))
        if cost < best - 1e-9:
            best, best_sets = cost, [combo]
        elif abs(cost - best) <= 1e-9:
            best_sets.append(combo)
    below = max((m for m in means if m < target - tolerance), default=None)
    above = min((m for m in means if m > target + tolerance), default=None)
    return best, best_sets, below, above


def _instances():
    rng = np.random.default_rng(2024)
    cases = []
    for index in range(14):
        blocks = int(rng.integers(3, 6))
        ratios = rng.gamma(2.0, 1.0, blocks)
        localities = rng.uniform(1e-5, 1e-3, blocks)
        target = float(rng.choice([0.25, 0.375, 0.5, 0.55, 0.6, 0.7]))
        options = {}
        if index % 3 == 1:
            options["tolerance"] = 0.04
        if index % 4 == 2:
            options["weights"] = rng.uniform(0.5, 3.0, blocks)
            options["tolerance"] = 0.05
        if index % 5 == 3:
            options["m_direction"] = "paper"
        if index % 2:
            options["force_dense_ends"] = False
        if index == 13:
            options["choices"] = [P("1:2"), P("1:4"), P("1:8"), P("2:4"), P("4:8"), DENSE]
        cases.append((ratios, localities, target, options))
    return cases


@pytest.mark.parametrize("case", _instances(), ids=lambda c: f"{len(c[0])}blk-{c[2]}")
def test_selection_matches_brute_force(case):
    ratios, localities, target, options = case
    ends = options.get("force_dense_ends", True)
    forced = (0, len(ratios) - 1) if ends is True else ()
    brute_options = {k: v for k, v in options.items() if k != "force_dense_ends"}
    best, best_sets, below, above = _brute(ratios, localities, target, forced=forced,
                                           **brute_options)
    choices = list(options.get("choices", RELEASED_CHOICES))
    if not best_sets:
        with pytest.raises(FlowInfeasible) as info:
            select_patterns(ratios, localities, target, **options)
        assert info.value.below == (pytest.approx(below) if below is not None else None)
        assert info.value.above == (pytest.approx(above) if above is not None else None)
        return
    plan = select_patterns(ratios, localities, target, **options)
    assert plan.objective == pytest.approx(best, abs=1e-9)
    free = [b for b in range(len(ratios)) if b not in forced]
    combo = tuple(choices.index(plan.patterns[b]) for b in free)
    assert combo in best_sets
    assert all(plan.patterns[b] == DENSE for b in forced) and plan.forced == list(forced)
    w = np.ones(len(ratios)) if "weights" not in options else options["weights"]
    mean = float(np.dot(w, [p.sparsity for p in plan.patterns]) / np.sum(w))
    assert abs(mean - target) <= options.get("tolerance", 0.0) + 1e-9
    assert plan.mean_sparsity == pytest.approx(np.mean([p.sparsity for p in plan.patterns]))


def test_some_brute_force_instances_are_infeasible_and_some_feasible():
    # The cross-check above covers both outcomes.
    outcomes = {bool(_brute(r, d, t, forced=() if o.get("force_dense_ends", True) is False
                            else (0, len(r) - 1),
                            **{k: v for k, v in o.items() if k != "force_dense_ends"})[1])
                for r, d, t, o in _instances()}
    assert outcomes == {True, False}


# --------------------------------------------------------------------------------------------
# Infeasibility, tolerance, weighting


@pytest.fixture
def stats30():
    rng = np.random.default_rng(5)
    return rng.gamma(2.0, 1.0, 30), rng.uniform(1e-5, 1e-3, 30)


def test_infeasible_target_raises_with_the_nearest_achievable(stats30):
    with pytest.raises(FlowInfeasible) as info:
        select_patterns(*stats30, 0.51)
    # 28 free blocks in quarters: 15.25 / 30 and 15.5 / 30.
    assert str(info.value) == (
        "target must be a mean sparsity that 30 blocks (blocks 0 and 29 kept dense) can "
        "reach with 2:4, 4:4, 2:8, 4:8, 8:8, not 0.51; nearest achievable: 0.508333 below, "
        "0.516667 above")
    assert isinstance(info.value, ValueError)
    assert (info.value.target, info.value.tolerance, info.value.blocks) == (0.51, 0.0, 30)
    assert info.value.below == pytest.approx(15.25 / 30)
    assert info.value.above == pytest.approx(15.5 / 30)


def test_infeasible_message_with_tolerance_weights_and_no_neighbour_above():
    with pytest.raises(FlowInfeasible) as info:
        select_patterns([1, 2, 3], [3, 2, 1], 0.8, tolerance=0.01, weights=[1, 1, 2],
                        force_dense_ends=False)
    assert str(info.value) == (
        "target must be a weighted mean sparsity that 3 blocks can reach with 2:4, 4:4, 2:8, "
        "4:8, 8:8, not 0.8 ± 0.01; nearest achievable: 0.75 below")
    assert info.value.above is None


def test_all_blocks_forced_dense_is_infeasible_unless_the_target_is_zero():
    with pytest.raises(FlowInfeasible) as info:
        select_patterns([1, 2], [1, 2], 0.5)
    assert str(info.value) == (
        "target must be a mean sparsity that 2 blocks (blocks 0 and 1 kept dense) can reach "
        "with 2:4, 4:4, 2:8, 4:8, 8:8, not 0.5; nearest achievable: 0 below")
    plan = select_patterns([1, 2], [1, 2], 0.0)
    assert plan.patterns == [DENSE, DENSE] and plan.forced == [0, 1]
    assert plan.mean_sparsity == 0.0 and plan.costs == [None, None]


def test_tolerance_admits_the_nearest_achievable_mean(stats30):
    plan = select_patterns(*stats30, 0.51, tolerance=0.002)
    assert plan.mean_sparsity == pytest.approx(15.25 / 30)
    assert abs(plan.mean_sparsity - 0.51) <= 0.002


def test_equality_target_is_met_exactly_with_dense_ends(stats30):
    plan = select_patterns(*stats30, 0.5)
    assert plan.patterns[0] == plan.patterns[-1] == DENSE
    assert sum(Fraction(p.m - p.n, p.m) for p in plan.patterns) == 15
    assert plan.mean_sparsity == 0.5 and plan.weighted_sparsity is None
    assert all(p in RELEASED_CHOICES for p in plan.patterns[1:-1])


def test_weights_change_which_mean_is_constrained():
    ratios, localities = [1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 3.0, 2.0]
    weights = [1.0, 1.0, 1.0, 5.0]
    plan = select_patterns(ratios, localities, 0.5, weights=weights, force_dense_ends=False)
    assert plan.weighted_sparsity == pytest.approx(
        np.dot(weights, [p.sparsity for p in plan.patterns]) / 8)
    assert plan.weighted_sparsity == pytest.approx(0.5)
    best, best_sets, _, _ = _brute(ratios, localities, 0.5, weights=weights)
    assert plan.objective == pytest.approx(best)
    # Equal weights give the plain mean.
    same = select_patterns(ratios, localities, 0.5, weights=[3, 3, 3, 3], force_dense_ends=False)
    plain = select_patterns(ratios, localities, 0.5, force_dense_ends=False)
    assert same.patterns == plain.patterns and same.weighted_sparsity == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# Direction, ends, choices, invariance


def test_m_direction_released_and_paper_swap_the_group_sizes():
    # Equal ratios (Ô = 0.5, N goal 4); block 1's outliers clustered (D̂ = 1).
    # The only ways to mean 0.5 are 2:4 / 4:8 per block.
    released = select_patterns([1, 1], [1e-5, 1e-3], 0.5, force_dense_ends=False)
    paper = select_patterns([1, 1], [1e-5, 1e-3], 0.5, force_dense_ends=False,
                            m_direction="paper")
    assert released.patterns == [P("4:8"), P("2:4")]   # clustered -> small M
    assert paper.patterns == [P("2:4"), P("4:8")]      # clustered -> large M
    assert (released.m_direction, paper.m_direction) == ("released", "paper")


def test_after_solve_reproduces_the_released_order(stats30):
    free = select_patterns(*stats30, 0.5, force_dense_ends=False)
    after = select_patterns(*stats30, 0.5, force_dense_ends="after_solve")
    assert after.patterns[1:-1] == free.patterns[1:-1]
    assert after.patterns[0] == after.patterns[-1] == DENSE
    drop = (free.patterns[0].sparsity + free.patterns[-1].sparsity) / 30
    assert after.mean_sparsity == pytest.approx(0.5 - drop)
    assert after.forced == [0, 29] and after.objective == pytest.approx(free.objective)


def test_hardware_choice_set_reaches_targets_the_released_set_cannot():
    plan = select_patterns([1, 2, 3], [1, 2, 3], 0.875, force_dense_ends=False,
                           choices=[P("1:8"), P("1:2"), DENSE])
    assert plan.patterns == [P("1:8")] * 3
    with pytest.raises(FlowInfeasible):
        select_patterns([1, 2, 3], [1, 2, 3], 0.875, force_dense_ends=False)


def test_affine_rescaling_of_the_statistics_changes_nothing(stats30):
    # Why there is no Lamda: the released scale-and-centre step is undone by normalising.
    ratios, localities = stats30
    plan = select_patterns(ratios, localities, 0.5)
    scaled = select_patterns(0.2 * ratios - 3.0, 0.08 * localities + 1.0, 0.5)
    assert scaled.patterns == plan.patterns


def test_plan_is_a_dataclass_with_reported_fields(stats30):
    plan = select_patterns(*stats30, 0.5)
    assert isinstance(plan, FlowPlan) and dataclasses.is_dataclass(plan)
    assert {f.name for f in dataclasses.fields(plan)} == {
        "patterns", "mean_sparsity", "weighted_sparsity", "target", "tolerance", "objective",
        "costs", "ratio_norm", "locality_norm", "forced", "force_dense_ends", "m_direction",
        "choices"}
    assert len(plan.costs) == 30 and plan.costs[0] is None
    assert plan.objective == pytest.approx(sum(plan.costs[1:-1]))
    assert min(plan.ratio_norm) == 0.0 and max(plan.ratio_norm) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.0}, "target must be a number in [0, 1), not 1.0"),
    ({"target": "0.5"}, "target must be a number in [0, 1), not '0.5'"),
    ({"tolerance": -0.1}, "tolerance must be a non-negative finite number, not -0.1"),
    ({"m_direction": "up"}, "m_direction must be 'released' or 'paper', not 'up'"),
    ({"force_dense_ends": "yes"},
     "force_dense_ends must be True, False or 'after_solve', not 'yes'"),
    ({"force_dense_ends": 1}, "force_dense_ends must be True, False or 'after_solve', not 1"),
    ({"weights": [1, 2]}, "weights must have one value per block (3), not 2"),
    ({"weights": [1, 0, 2]}, "weights[1] must be positive, not 0.0"),
    ({"choices": []}, "choices must be a non-empty sequence of NMPattern, not []"),
    ({"choices": "2:4"}, "choices must be a non-empty sequence of NMPattern, not '2:4'"),
    ({"choices": [P("2:4"), "4:8"]}, "choices[1] must be an NMPattern, not '4:8'"),
    ({"choices": [P("2:4"), P("2:4")]},
     "choices[1] must not repeat an earlier choice, not 2:4"),
    ({"localities": [1.0, 2.0]}, "localities must have one value per block (3), not 2"),
    ({"ratios": [1.0, np.inf, 2.0]}, "ratios[1] must be finite, not inf"),
])
def test_select_patterns_rejects_bad_arguments(kwargs, message):
    args = {"ratios": [1.0, 2.0, 3.0], "localities": [3.0, 2.0, 1.0], "target": 0.5}
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        select_patterns(args.pop("ratios"), args.pop("localities"), args.pop("target"), **args)
    assert str(info.value) == message


def test_choice_patterns_are_validated_by_nmpattern():
    with pytest.raises(ValueError) as info:
        NMPattern(3, 2)
    assert str(info.value) == "n must be an integer from 1 to m=2, not 3"
