"""Random chip programs for the chip models' fuzz tests and the chip RTL regressions.

Built as :mod:`sparsecim.tb.randprog` builds macro programs, and with its generator: every
macro command comes from randprog's rules (independent of :func:`~sparsecim.hw.isa.check`
and of the golden model), sent to a random range of macros ``target .. target + span - 1``.
Each macro keeps its own pattern: CONFIGs go to ranges, so the macros drift apart; before a
command whose meaning depends on the pattern (LOAD_A, COMPUTE) the range is made uniform by a
CONFIG if it is not. Between random commands come whole layers on a range (CONFIG, LOAD_W,
LOAD_A, COMPUTE, READ), as a schedule emits them.

A program starts, unless told not to, with randprog's prologue broadcast to every macro (so
the RTL reads no memory it never wrote), then per-macro weights and activations that make the
macros differ. An illegal program ends in one command that halts the chip, and records the
error it must raise (``meta["expect"]``) and, when the program alone fixes it, the macro
(``meta["expect_macro"]``: K for the dispatcher and OUT_OF_STEP).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape

from ..hw.chip_trace import ChipTrace
from ..hw.config import ChipConfig
from ..hw.isa import ErrorCode, Opcode, act_beat_layout, chip_command_layout, pack_beats
from ..hw.trace import Step
from .randprog import ILLEGAL_KINDS, _Gen, _word

__all__ = ["random_chip_program", "CHIP_ILLEGAL_KINDS"]

#: What an illegal chip program's last command breaks, and the error it must raise: the
#: macro's kinds (randprog), a span of 0 or a range past the chip (the dispatcher), or a
#: LOAD_A over macros whose patterns differ (OUT_OF_STEP).
CHIP_ILLEGAL_KINDS = {
    **ILLEGAL_KINDS,
    "span-zero": ErrorCode.ZERO_COUNT,
    "span-range": ErrorCode.ADDRESS_RANGE,
    "out-of-step": ErrorCode.OUT_OF_STEP,
}


class _ChipGen(_Gen):
    """randprog's generator whose commands go to the range ``lo .. lo + span - 1``."""

    def __init__(self, chip: ChipConfig, rng: np.random.Generator):
        self.chip = chip
        self.patterns = [(1, 1)] * chip.macros
        self.lo, self.span = 0, chip.macros
        super().__init__(chip.macro, rng)
        self.trace = ChipTrace(chip)
        layout = chip_command_layout(chip)
        self.offsets = (layout["cmd"].offset, layout["target"].offset, layout["span"].offset)

    @property
    def pattern(self) -> tuple[int, int]:
        """The pattern of the current range (made uniform before it matters)."""
        return self.patterns[self.lo]

    @pattern.setter
    def pattern(self, value: tuple[int, int]) -> None:
        self.patterns[self.lo:self.lo + self.span] = [tuple(value)] * self.span

    def at(self, lo: int, span: int) -> None:
        self.lo, self.span = lo, span

    def add(self, word: int, data=()) -> None:
        cmd, target, span = self.offsets
        self.trace.steps.append(Step(word << cmd | self.lo << target | self.span << span,
                                     list(data)))

    def random_range(self) -> None:
        K = self.chip.macros
        if self.pick(0, 2) == 0:
            self.at(0, K)
        else:
            lo = self.pick(0, K - 1)
            self.at(lo, self.pick(1, K - lo))

    def uniform(self) -> None:
        """A CONFIG to the range if its macros' patterns differ."""
        if len(set(self.patterns[self.lo:self.lo + self.span])) > 1:
            self.config(self.cfg.modes[self.pick(0, len(self.cfg.modes) - 1)])

    def layer(self) -> None:
        """A layer's commands on the current range, as a schedule emits them."""
        cfg, pick = self.cfg, self.pick
        self.config(cfg.modes[pick(0, len(cfg.modes) - 1)])
        rows = pick(1, min(cfg.weight_rows, 8))
        self.load_w(0, rows)
        count = pick(1, min(cfg.act_depth, cfg.acc_depth, 3))
        self.load_a(0, count)
        self.compute(0, 0, count, pick(0, 1))
        self.add(_word(cfg, Opcode.READ, addr=0, count=count, bank=0))

    def out_of_step(self) -> None:
        """A LOAD_A over two groups of macros whose patterns give different beat counts."""
        cfg, K = self.cfg, self.chip.macros
        by_beats = {}
        for pattern in cfg.modes:
            by_beats.setdefault(cfg.act_beats(*pattern), pattern)
        if K < 2 or len(by_beats) < 2:
            raise ValueError("out-of-step needs 2 macros and 2 patterns of different lengths")
        short, long = (by_beats[b] for b in sorted(by_beats)[:2])
        first, second = (short, long) if self.pick(0, 1) else (long, short)
        lo = self.pick(0, K - 2)
        cut = self.pick(lo + 1, K - 1)
        end = self.pick(cut + 1, K)
        self.at(lo, cut - lo)
        self.config(first)
        self.at(cut, end - cut)
        self.config(second)
        self.at(lo, end - lo)
        count = self.pick(1, min(cfg.act_depth, 2))
        beats = count * min(cfg.act_beats(*first), cfg.act_beats(*second))
        low, high = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
        self.add(_word(cfg, Opcode.LOAD_A, addr=0, count=count),
                 pack_beats(act_beat_layout(cfg),
                            self.rng.integers(low, high, size=(beats, cfg.act_lanes))))

    def bad_range(self, kind: str) -> None:
        """A command the dispatcher refuses: span 0, or a range past the chip."""
        K = self.chip.macros
        layout = chip_command_layout(self.chip)
        target_top = 2 ** Shape.cast(layout["target"].shape).width - 1
        span_top = 2 ** Shape.cast(layout["span"].shape).width - 1
        if kind == "span-zero":
            self.at(self.pick(0, target_top), 0)
        else:
            if target_top + span_top <= K:
                raise ValueError(f"no range passes a chip of {K} macros within the fields")
            while True:
                target, span = self.pick(0, target_top), self.pick(1, span_top)
                if target + span > K:
                    break
            self.at(target, span)
        self.add(_word(self.cfg, Opcode.COMPUTE, act_addr=0, acc_addr=0, count=1,
                       accumulate=0))


def random_chip_program(chip: ChipConfig, rng: np.random.Generator, *,
                        illegal: str | None = None, max_body: int = 16,
                        prologue: bool = True, tail: int = 0) -> ChipTrace:
    """A random chip program: (the broadcast prologue, then per-macro loads,) 1 to
    ``max_body`` random legal commands or layers on random ranges, then END; or, with
    ``illegal`` (a key of :data:`CHIP_ILLEGAL_KINDS`), a command that halts the chip instead
    of END, followed by up to ``tail`` random legal commands and END (macros the error does
    not halt keep running them until the chip halts, and those behind a halted macro wait).

    ``meta`` records ``expect`` (the error's name, ``NONE`` for a legal program) and
    ``expect_macro`` (the macro that must report it, K for the dispatcher and OUT_OF_STEP, or
    None when timing decides which of several macros fetches it first).
    """
    if illegal is not None and illegal not in CHIP_ILLEGAL_KINDS:
        raise ValueError(f"illegal must be one of {', '.join(CHIP_ILLEGAL_KINDS)}, "
                         f"not {illegal!r}")
    gen = _ChipGen(chip, rng)
    K, cfg = chip.macros, chip.macro
    if prologue:
        gen.prologue()
        for k in range(K):               # macros differ from here on
            gen.at(k, 1)
            gen.load_w(0, cfg.weight_rows)
            gen.load_a(0, min(cfg.act_depth, 2))
    for _ in range(gen.pick(1, max_body)):
        gen.random_range()
        if gen.pick(0, 3) == 0:
            gen.layer()
        else:
            gen.uniform()
            gen.legal()
    expect_macro = None
    if illegal is None:
        gen.at(0, K)
        gen.add(_word(cfg, Opcode.END))
    elif illegal in ILLEGAL_KINDS:
        gen.random_range()
        gen.uniform()
        gen.illegal(illegal)
        expect_macro = gen.lo if gen.span == 1 else None
    elif illegal == "out-of-step":
        gen.out_of_step()
        expect_macro = K
    else:
        gen.bad_range(illegal)
        expect_macro = K
    if illegal is not None and tail:
        for _ in range(gen.pick(0, tail)):
            gen.random_range()
            gen.uniform()
            gen.legal()
        gen.at(0, K)
        gen.add(_word(cfg, Opcode.END))
    expect = CHIP_ILLEGAL_KINDS[illegal] if illegal else ErrorCode.NONE
    gen.trace.meta = {"workload": "random chip program", "expect": expect.name,
                      "expect_macro": expect_macro}
    return gen.trace

