"""Random programs for the RTL regression: legal ones, and ones that end in an illegal command.

The generator is independent of :func:`~sparsecim.hw.isa.check` and of the golden model: it
builds each command from the ISA's rules as the reference states them (address + count within
the depth, a pattern the macro lists, a part that fits) and writes the words with the field
offsets of :func:`~sparsecim.hw.isa.command_layout`. An illegal program says which error it
was built to raise, so a test can hold the golden model to it before the RTL is held to the
golden model.

Every program starts with a prologue that writes every weight row, every activation entry in
full and every accumulator entry of every bank: the RTL does not clear its memories at reset,
so a program that read state it never wrote would depend on whatever ran before it. After the
prologue the body reads anything, which is what makes programs independent of each other and
lets :func:`~sparsecim.tb.cosim.run_rtl_batch` run thousands under one simulator start.
"""

from __future__ import annotations

import functools

import numpy as np
from amaranth.hdl import Shape

from ..hw.config import MacroConfig
from ..hw.isa import (
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    args_layout,
    command_layout,
    pack_beats,
    pack_weight_rows,
)
from ..hw.trace import Step, Trace

__all__ = ["random_program", "ILLEGAL_KINDS"]

#: What an illegal program's last command breaks, and the error status it must raise.
ILLEGAL_KINDS = {
    "opcode": ErrorCode.ILLEGAL_OPCODE,
    "mode": ErrorCode.ILLEGAL_MODE,
    "zero-count": ErrorCode.ZERO_COUNT,
    "range": ErrorCode.ADDRESS_RANGE,
}


@functools.cache
def _fields(cfg: MacroConfig) -> tuple[int, int, dict]:
    """``(opcode offset, args offset, {opcode: {field: (offset, width)}})`` of ``cfg``."""
    layout = command_layout(cfg)
    ops = {op: {name: (f.offset, Shape.cast(f.shape).width) for name, f in args_layout(cfg, op)}
           for op in Opcode}
    return layout["opcode"].offset, layout["args"].offset, ops


def _word(cfg: MacroConfig, opcode: int, **fields) -> int:
    """A command word; ``opcode`` may be a value no :class:`Opcode` has. Fields must fit."""
    op_offset, args_offset, ops = _fields(cfg)
    opcode = int(getattr(opcode, "value", opcode))
    word = opcode << op_offset
    layout = ops[Opcode(opcode)] if opcode in {op.value for op in Opcode} else {}
    for name, value in fields.items():
        offset, width = layout[name]
        value = int(getattr(value, "value", value))
        if not 0 <= value < 2 ** width:
            raise ValueError(f"{name} must fit {width} bits, not {value}")
        word |= value << (args_offset + offset)
    return word


def _top(cfg: MacroConfig, op: Opcode, name: str) -> int:
    """The largest value field ``name`` of ``op`` can hold."""
    return 2 ** _fields(cfg)[2][op][name][1] - 1


class _Gen:
    def __init__(self, cfg: MacroConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.trace = Trace(cfg)
        self.pattern = (1, 1)

    def pick(self, lo: int, hi: int) -> int:
        """Uniform in ``lo .. hi`` inclusive."""
        return int(self.rng.integers(lo, hi + 1))

    def add(self, word: int, data=()) -> None:
        self.trace.steps.append(Step(word, list(data)))

    # Legal commands

    def config(self, pattern: tuple[int, int], split: int = 0, shift: int = 0) -> None:
        mode = Mode.DENSE if pattern == (1, 1) else Mode.NM
        self.add(_word(self.cfg, Opcode.CONFIG, mode=mode, n=pattern[0], m=pattern[1],
                       split=split, shift=shift))
        self.pattern = pattern

    def load_w(self, row: int, count: int) -> None:
        cfg = self.cfg
        lo, hi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
        weights = self.rng.integers(lo, hi, size=(count, cfg.cols))
        meta = (self.rng.integers(0, 2 ** cfg.meta_bits, size=(count, cfg.cols))
                if cfg.meta_bits else None)
        self.add(_word(cfg, Opcode.LOAD_W, row=row, count=count),
                 pack_weight_rows(cfg, weights, meta))

    def load_a(self, addr: int, count: int) -> None:
        cfg = self.cfg
        lo, hi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
        beats = count * cfg.act_beats(*self.pattern)
        self.add(_word(cfg, Opcode.LOAD_A, addr=addr, count=count),
                 pack_beats(act_beat_layout(cfg),
                            self.rng.integers(lo, hi, size=(beats, cfg.act_lanes))))

    def compute(self, act_addr: int, acc_addr: int, count: int, accumulate: int,
                part: int = 0) -> None:
        self.add(_word(self.cfg, Opcode.COMPUTE, act_addr=act_addr, acc_addr=acc_addr,
                       count=count, accumulate=accumulate, part=part))

    def prologue(self) -> None:
        """Write every weight row, activation entry (all beats) and accumulator entry."""
        cfg = self.cfg
        widest = max(cfg.modes, key=lambda p: cfg.act_beats(*p))
        self.config(widest)
        self.load_a(0, cfg.act_depth)
        self.config((1, 1), split=cfg.max_split)   # every bank written by a dense pass
        self.load_w(0, cfg.weight_rows)
        step = min(cfg.act_depth, cfg.acc_depth)
        for acc in range(0, cfg.acc_depth, step):
            self.compute(0, acc, min(step, cfg.acc_depth - acc), 0)

    def legal(self) -> None:
        """One random legal command (END aside)."""
        cfg, pick = self.cfg, self.pick
        kind = self.rng.choice(["config", "load_w", "load_a", "compute", "compute", "read",
                                "move"])
        if kind == "config":
            pattern = cfg.modes[pick(0, len(cfg.modes) - 1)]
            split = pick(0, cfg.max_split) if pattern == (1, 1) else 0
            self.config(pattern, split, pick(0, min(cfg.acc_bits - 1,
                                                    _top(cfg, Opcode.CONFIG, "shift"))))
        elif kind == "load_w":
            row = pick(0, cfg.weight_rows - 1)
            self.load_w(row, pick(1, min(cfg.weight_rows - row, 6)))
        elif kind == "load_a":
            addr = pick(0, cfg.act_depth - 1)
            self.load_a(addr, pick(1, min(cfg.act_depth - addr, 3)))
        elif kind == "compute":
            act, acc = pick(0, cfg.act_depth - 1), pick(0, cfg.acc_depth - 1)
            count = pick(1, min(cfg.act_depth - act, cfg.acc_depth - acc,
                                _top(cfg, Opcode.COMPUTE, "count")))
            parts = cfg.max_pass_inputs // cfg.pass_inputs(*self.pattern)
            self.compute(act, acc, count, pick(0, 1), pick(0, parts - 1))
        elif kind == "read":
            addr = pick(0, cfg.acc_depth - 1)
            self.add(_word(cfg, Opcode.READ, addr=addr, count=pick(1, cfg.acc_depth - addr),
                           bank=pick(0, cfg.submacros - 1)))
        else:
            lanes = pick(1, cfg.cols)
            lane, dst = pick(0, cfg.cols - lanes), pick(0, cfg.cols - lanes)
            acc = pick(0, cfg.acc_depth - 1)
            transpose = pick(0, 1) if cfg.cols * cfg.cols <= cfg.max_pass_inputs else 0
            if transpose:
                elem = pick(0, cfg.cols - 1)
                count = pick(1, min(cfg.acc_depth - acc, cfg.cols - elem))
                act = pick(0, cfg.act_depth - 1)
            else:
                elem = pick(0, cfg.max_pass_inputs // cfg.cols - 1)
                act = pick(0, cfg.act_depth - 1)
                count = pick(1, min(cfg.acc_depth - acc, cfg.act_depth - act))
            self.add(_word(cfg, Opcode.MOVE, bank=pick(0, cfg.submacros - 1), acc_addr=acc,
                           act_addr=act, elem=elem, count=count, transpose=transpose,
                           lane=lane, dst=dst, lanes=0 if lanes == cfg.cols else lanes))

    # Illegal commands

    def illegal(self, kind: str) -> None:
        cfg, pick = self.cfg, self.pick
        if kind == "opcode":
            values = [v for v in range(2 ** Shape.cast(Opcode).width)
                      if v not in {op.value for op in Opcode}]
            # Random operand bits: an undefined opcode is refused whatever follows it.
            bits = command_layout(cfg).size - _fields(cfg)[1]
            args = int.from_bytes(self.rng.bytes(-(-bits // 8)), "little") % 2 ** bits
            self.add(_word(cfg, values[pick(0, len(values) - 1)]) | args << _fields(cfg)[1])
        elif kind == "mode":
            choices = ["mode-value", "dense-nm", "unlisted", "split-nm", "split-big"]
            how = choices[pick(0, len(choices) - 1)]
            n_top, m_top = _top(cfg, Opcode.CONFIG, "n"), _top(cfg, Opcode.CONFIG, "m")
            split_top = _top(cfg, Opcode.CONFIG, "split")
            fields = {"mode": Mode.DENSE, "n": 1, "m": 1, "split": 0, "shift": 0}
            if how == "mode-value":
                values = [v for v in range(2 ** Shape.cast(Mode).width)
                          if v not in {mode.value for mode in Mode}]
                fields["mode"] = values[pick(0, len(values) - 1)] if values else Mode.NM
                if not values:  # every mode value defined: fall back to an unlisted pattern
                    fields["n"], fields["m"] = 0, 0
            elif how == "dense-nm":
                while (fields["n"], fields["m"]) == (1, 1):
                    fields["n"], fields["m"] = pick(0, n_top), pick(0, m_top)
            elif how == "unlisted":
                fields["mode"] = Mode.NM
                while (fields["n"], fields["m"]) in cfg.patterns:
                    fields["n"], fields["m"] = pick(0, n_top), pick(0, m_top)
            elif how == "split-nm":
                fields["mode"] = Mode.NM
                fields["n"], fields["m"] = cfg.patterns[pick(0, len(cfg.patterns) - 1)]
                fields["split"] = pick(1, split_top)
            else:
                if split_top <= cfg.max_split:  # no split too big fits the field
                    fields["mode"], fields["n"], fields["m"] = Mode.NM, 0, 0
                else:
                    fields["split"] = pick(cfg.max_split + 1, split_top)
            self.add(_word(cfg, Opcode.CONFIG, **fields))
        elif kind == "zero-count":
            op = [Opcode.LOAD_W, Opcode.LOAD_A, Opcode.COMPUTE, Opcode.READ,
                  Opcode.MOVE][pick(0, 4)]
            self.add(_word(cfg, op, count=0))
        else:
            self._out_of_range()

    def _out_of_range(self) -> None:
        cfg, pick = self.cfg, self.pick

        def beyond(op, addr_field, depth, count_field="count"):
            """An address and count whose end passes ``depth`` (both fitting their fields)."""
            addr_top, count_top = _top(cfg, op, addr_field), _top(cfg, op, count_field)
            while True:
                addr = pick(0, min(addr_top, depth - 1))
                if depth - addr + 1 <= count_top:
                    return addr, pick(depth - addr + 1, count_top)

        how = pick(0, 4)
        if how == 0:
            row, count = beyond(Opcode.LOAD_W, "row", cfg.weight_rows)
            self.add(_word(cfg, Opcode.LOAD_W, row=row, count=count))
        elif how == 1:
            addr, count = beyond(Opcode.LOAD_A, "addr", cfg.act_depth)
            self.add(_word(cfg, Opcode.LOAD_A, addr=addr, count=count))
        elif how == 2:
            addr, count = beyond(Opcode.READ, "addr", cfg.acc_depth)
            self.add(_word(cfg, Opcode.READ, addr=addr, count=count))
        elif how == 3:
            parts = cfg.max_pass_inputs // cfg.pass_inputs(*self.pattern)
            if parts <= _top(cfg, Opcode.COMPUTE, "part"):
                # A part past the entry in the current pattern.
                self.compute(0, 0, 1, 0, pick(parts, _top(cfg, Opcode.COMPUTE, "part")))
            else:
                acc, count = beyond(Opcode.COMPUTE, "acc_addr", cfg.acc_depth)
                self.compute(0, acc, count, 0)
        else:
            acc, count = beyond(Opcode.MOVE, "acc_addr", cfg.acc_depth)
            self.add(_word(cfg, Opcode.MOVE, bank=0, acc_addr=acc, act_addr=0, elem=0,
                           count=count, transpose=0))


def random_program(cfg: MacroConfig, rng: np.random.Generator, *, illegal: str | None = None,
                   max_body: int = 16) -> Trace:
    """A random program: the prologue, 1 to ``max_body`` random legal commands, then END, or,
    with ``illegal`` (a key of :data:`ILLEGAL_KINDS`), an illegal command instead of END.

    The trace's ``meta`` records ``expect``: the error status it must halt with (``NONE`` for
    a legal program).
    """
    if illegal is not None and illegal not in ILLEGAL_KINDS:
        raise ValueError(f"illegal must be one of {', '.join(ILLEGAL_KINDS)}, not {illegal!r}")
    gen = _Gen(cfg, rng)
    gen.prologue()
    for _ in range(gen.pick(1, max_body)):
        gen.legal()
    if illegal is None:
        gen.add(_word(cfg, Opcode.END))
        expect = ErrorCode.NONE
    else:
        gen.illegal(illegal)
        expect = ILLEGAL_KINDS[illegal]
    gen.trace.meta = {"workload": "random program", "expect": expect.name}
    return gen.trace
