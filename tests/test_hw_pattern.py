import pickle

import pytest
from sparsecim.hw.config import PRESETS, MacroConfig, preset
from sparsecim.hw.isa import Command, Mode, Opcode, config_command, decode, encode, pattern_of
from sparsecim.hw.pattern import Pattern, as_pattern
from sparsecim.sw.nm import NMPattern


def test_nm_pattern_is_the_contract_pattern():
    assert NMPattern is Pattern


@pytest.mark.parametrize("n, m", [(1, 1), (2, 4), (1, 8), (4, 4)])
def test_pattern_is_its_pair(n, m):
    pattern = Pattern(n, m)
    assert pattern == (n, m) and hash(pattern) == hash((n, m))
    assert tuple(pattern) == (n, m) and (pattern.n, pattern.m) == (n, m)
    assert pickle.loads(pickle.dumps(pattern)) == pattern
    assert type(pickle.loads(pickle.dumps(pattern))) is Pattern


@pytest.mark.parametrize("value, expected", [
    (None, (1, 1)), ("dense", (1, 1)), (" 2 : 4 ", (2, 4)), ((4, 4), (1, 1)), ((1, 2), (1, 2)),
    (Pattern(8, 8), (1, 1)), (Pattern(2, 8), (2, 8)), ([1, 4], (1, 4)),
])
def test_as_pattern_is_canonical(value, expected):
    pattern = as_pattern(value)
    assert type(pattern) is Pattern and pattern == expected


@pytest.mark.parametrize("value, message", [
    (3, "pattern must be 'dense', 'n:m', an NMPattern or an (n, m) pair, not 3"),
    ((5, 4), "n must be an integer from 1 to m=4, not 5"),
    ("5:4", "pattern must be 'N:M' with 1 <= N <= M, or 'dense', not '5:4'"),
])
def test_as_pattern_rejects(value, message):
    with pytest.raises(ValueError) as info:
        as_pattern(value)
    assert str(info.value) == message


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_stores_patterns_as_pattern(name):
    cfg = preset(name)
    assert all(type(p) is Pattern for p in cfg.modes)
    assert cfg.modes[0] == Pattern(1, 1) and cfg.modes[1:] == cfg.patterns
    assert cfg.pattern_names() == ", ".join(f"{n}:{m}" for n, m in cfg.patterns)
    assert MacroConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_command_round_trips_through_the_isa(name):
    cfg = preset(name)
    for pattern in cfg.modes:
        cmd = config_command(pattern)
        mode = Mode.DENSE if pattern == (1, 1) else Mode.NM
        assert cmd == Command(Opcode.CONFIG, mode=mode, n=pattern[0], m=pattern[1])
        selected = pattern_of(cfg, decode(cfg, encode(cfg, cmd)))
        assert type(selected) is Pattern and selected == pattern
