import dataclasses
import json
import re

import pytest
from sparsecim.hw.config import PRESETS, MacroConfig, ceil_log2, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = preset(name)
    assert MacroConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.reduction == cfg.rows * cfg.submacros
    assert cfg.cells == cfg.rows * cfg.cols * cfg.submacros


def test_flexcim_preset_is_four_32x32_submacros():
    cfg = preset("flexcim")
    assert (cfg.submacros, cfg.rows, cfg.cols) == (4, 32, 32)
    assert (cfg.weight_bits, cfg.act_bits) == (8, 8)
    assert cfg.reduction == 128


def test_widths_grow_so_nothing_truncates():
    cfg = preset("flexcim")
    # 8x8 signed products need 16 bits; 32 of them 21 bits; 4 sub-macros 23 bits.
    assert cfg.product_bits == 16
    assert cfg.column_sum_bits == 21
    assert cfg.pass_sum_bits == 23
    worst = cfg.reduction * 128 * 128
    assert worst <= 2 ** (cfg.pass_sum_bits - 1) - 1


def test_max_reduction_is_the_largest_k_that_cannot_wrap():
    cfg = preset("flexcim")
    k = cfg.max_reduction()
    assert k * 2 ** 14 <= 2 ** 31 - 1 < (k + 1) * 2 ** 14


def test_slugs_differ_between_presets():
    slugs = {cfg.slug for cfg in PRESETS.values()}
    assert len(slugs) == len(PRESETS)
    assert preset("flexcim").slug == "p4r32c32-w8a8acc32-ad64od64-nm12_14_18_24_28_48"
    dense_only = dataclasses.replace(preset("flexcim"), patterns=())
    assert dense_only.slug == "p4r32c32-w8a8acc32-ad64od64"


def test_flexcim_supports_the_flexcim_patterns_and_derives_the_nm_sizes():
    cfg = preset("flexcim")
    for pattern in [(1, 1), (1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (1, 8)]:
        assert cfg.supports(*pattern)
    assert not cfg.supports(2, 2) and not cfg.supports(1, 16)
    assert cfg.modes[0] == (1, 1) and len(cfg.modes) == 7
    assert (cfg.max_m, cfg.meta_bits) == (8, 3)
    # rows × (P/n) × m inputs per pass: dense 128; 2:4 and 4:8 256; 1:8 1024.
    assert [cfg.pass_inputs(n, m) for n, m in [(1, 1), (2, 4), (4, 8), (1, 8)]] == \
        [128, 256, 256, 1024]
    assert cfg.max_pass_inputs == 1024
    assert cfg.max_act_beats == -(-1024 // cfg.act_lanes)
    with pytest.raises(ValueError, match="pattern 3:8 is not supported by this macro; "
                       "supported are dense and 1:2, 1:4, 1:8, 2:4, 2:8, 4:8"):
        cfg.pass_inputs(3, 8)


@pytest.mark.parametrize("patterns, message", [
    (((2, 2),), "pattern 2:2 must have 1 <= n < m <= 16"),
    (((0, 4),), "pattern 0:4 must have 1 <= n < m <= 16"),
    (((1, 32),), "pattern 1:32 must have 1 <= n < m <= 16"),
    (((3, 4),), "pattern 3:4 needs n to divide submacros (4)"),
    (((8, 16),), "pattern 8:16 needs n to divide submacros (4)"),
    (((2, 4), (2, 4)), "patterns must not repeat a pattern"),
    (((2, "4"),), "patterns must hold (n, m) integer pairs, not (2, '4')"),
    (((2, 4, 8),), "patterns must hold (n, m) integer pairs"),
    ("2:4", "patterns must be a sequence of (n, m) pairs"),
], ids=str)
def test_invalid_patterns_are_named(patterns, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(preset("tiny"), patterns=patterns)


def test_patterns_are_canonical_and_json_round_trips():
    a = dataclasses.replace(preset("tiny"), patterns=[(2, 4), (1, 2)])
    b = dataclasses.replace(preset("tiny"), patterns=((1, 2), (2, 4)))
    assert a == b and a.patterns == ((1, 2), (2, 4)) and hash(a) == hash(b)
    assert MacroConfig.from_dict(json.loads(a.to_json())) == a


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").rows = 3


@pytest.mark.parametrize("field, value, message", [
    ("rows", 0, "rows must be a positive integer, not 0"),
    ("cols", -2, "cols must be a positive integer, not -2"),
    ("act_depth", 1.5, "act_depth must be a positive integer, not 1.5"),
    ("submacros", 3, "submacros must be a power of two, not 3"),
    ("weight_bits", 1, "weight_bits must be an integer from 2 to 16, not 1"),
    ("act_bits", 17, "act_bits must be an integer from 2 to 16, not 17"),
    ("acc_bits", 16, "acc_bits must be an integer from 23 (the pass sum width) to 64, not 16"),
    ("counter_bits", 8, "counter_bits must be an integer from 16 to 64, not 8"),
], ids=lambda v: str(v))
def test_invalid_fields_are_named(field, value, message):
    fields = preset("flexcim").to_dict() | {field: value}
    with pytest.raises(ValueError) as exc:
        MacroConfig(**fields)
    assert str(exc.value) == message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError) as exc:
        preset("huge")
    assert str(exc.value) == ("preset must be one of ['flexcim', 'fpga', 'paper', 'tiny'], "
                              "not 'huge'")


def test_fpga_preset_is_two_2x2_submacros_with_narrow_patterns():
    """Small enough for an iCE40 UP5K: 8 cells (its 8 DSPs), m <= 4, 16-bit counters."""
    cfg = preset("fpga")
    assert (cfg.submacros, cfg.rows, cfg.cols, cfg.cells) == (2, 2, 2, 8)
    assert cfg.patterns == ((1, 2), (1, 4), (2, 4))
    assert (cfg.max_m, cfg.meta_bits, cfg.counter_bits) == (4, 2, 16)
    # 1:4 is the widest pass: 2 rows x 2 clusters x 4 inputs.
    assert cfg.max_pass_inputs == 16
    assert cfg.slug == "p2r2c2-w8a8acc32-ad4od4-cnt16-nm12_14_24"
    assert not cfg.supports(4, 8)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError) as exc:
        MacroConfig.from_dict(preset("tiny").to_dict() | {"banks": 2})
    assert str(exc.value).startswith("config has unknown fields ['banks']")


@pytest.mark.parametrize("value, expected", [(1, 0), (2, 1), (3, 2), (32, 5), (33, 6)])
def test_ceil_log2(value, expected):
    assert ceil_log2(value) == expected
