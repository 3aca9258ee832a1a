"""The random-program generator: its programs are what it says they are (no Verilator)."""

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.hw.isa import ErrorCode, Opcode, check, decode, part_fits, pattern_of
from sparsecim.hw.trace import Trace
from sparsecim.sw.golden import run_trace
from sparsecim.tb.randprog import ILLEGAL_KINDS, random_program


def _pattern_before_last(cfg, trace):
    pattern = (1, 1)
    for word in trace.commands[:-1]:
        cmd = decode(cfg, word)
        assert check(cfg, cmd) == ErrorCode.NONE, str(cmd)
        if cmd.opcode == Opcode.COMPUTE:
            assert part_fits(cfg, cmd.part, pattern), str(cmd)
        if cmd.opcode == Opcode.CONFIG:
            pattern = pattern_of(cfg, cmd)
    return pattern


@pytest.mark.parametrize("name", ["tiny", "fpga", "flexcim"])
def test_legal_programs_are_legal_and_self_contained(name):
    cfg = preset(name)
    rng = np.random.default_rng(3)
    for _ in range(60):
        trace = random_program(cfg, rng)
        # The ISA's own check finds every command legal; the last is END.
        _pattern_before_last(cfg, trace)
        assert decode(cfg, trace.commands[-1]).opcode == Opcode.END
        golden = run_trace(trace)
        assert golden.error == ErrorCode.NONE and golden.halted
        assert golden.commands == len(trace.steps) and golden.data_left == 0
        assert Trace.from_text(trace.to_text()) == trace  # well-formed


@pytest.mark.parametrize("name", ["tiny", "fpga", "flexcim"])
@pytest.mark.parametrize("kind", sorted(ILLEGAL_KINDS))
def test_illegal_programs_halt_on_their_last_command_with_the_error_built_in(name, kind):
    cfg = preset(name)
    rng = np.random.default_rng(4)
    for _ in range(25):
        trace = random_program(cfg, rng, illegal=kind)
        _pattern_before_last(cfg, trace)
        golden = run_trace(trace)
        assert golden.error == ILLEGAL_KINDS[kind] and golden.halted
        assert golden.commands == len(trace.steps) and golden.data_left == 0
        assert trace.meta["expect"] == ILLEGAL_KINDS[kind].name


def test_unknown_illegal_kind_is_refused():
    with pytest.raises(ValueError) as exc:
        random_program(preset("tiny"), np.random.default_rng(0), illegal="odd")
    assert str(exc.value) == "illegal must be one of opcode, mode, zero-count, range, not 'odd'"
