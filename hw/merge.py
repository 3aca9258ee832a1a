"""Balanced adder trees, and the merging tree that sums the P sub-macros' column results."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import MacroConfig

__all__ = ["tree_levels", "balanced_sum", "MergeTree"]


def tree_levels(terms) -> list[list]:
    """Every level of a balanced binary adder tree over ``terms``.

    Level 0 is the terms themselves; level ``k + 1`` adds adjacent pairs of level ``k`` (an odd
    last term passes through). With a power-of-two number of terms, level ``k`` holds the sums
    of aligned groups of ``2**k`` terms, and the last level holds one value, the total.

    Amaranth widens each addition by one bit, so a value of level ``k`` is at most ``k`` bits
    wider than the widest term: nothing truncates, and the total is
    ``ceil(log2(len(terms)))`` bits wider than the widest term.

    Raises
    ------
    ValueError
        If ``terms`` is empty.
    """
    level = list(terms)
    if not level:
        raise ValueError("terms must be a non-empty sequence, not []")
    levels = [level]
    while len(level) > 1:
        pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
        levels.append(level)
    return levels


def balanced_sum(terms):
    """Sum of Amaranth values as a balanced binary adder tree (the last of :func:`tree_levels`).

    The tree has depth ``ceil(log2(len(terms)))``, shallower than a chain of adds.
    """
    return tree_levels(terms)[-1][0]


class MergeTree(wiring.Component):
    """Sums the column sums of the P sub-macros: a balanced adder tree over P per column, with
    a configurable grouping.

    Combinational. The tree is built level by level with :func:`tree_levels`, so level ``k``
    holds the sums of aligned groups of ``2**k`` sub-macros. ``split`` selects a level:
    ``split = 0`` sums all P (dense and N:M), ``split = s`` keeps ``2**s`` groups of
    ``P / 2**s`` sub-macros apart (block-diagonal layers, whose independent blocks run on
    different sub-macros in the same pass).

    Parameters
    ----------
    config : MacroConfig
        Sizes: ``submacros`` inputs of ``cols`` column sums of ``column_sum_bits`` each.

    Members
    -------
    sums : In(ArrayLayout(column, config.submacros))
        ``sums[s][c]``: column ``c`` of sub-macro ``s``, where ``column`` is
        ``ArrayLayout(signed(config.column_sum_bits), config.cols)``.
    split : In(range(config.max_split + 1))
        The grouping: ``2**split`` groups.
    merged : Out(ArrayLayout(signed(config.pass_sum_bits), config.cols))
        ``merged[c] = Σ_s sums[s][c]``, exact, whatever ``split``; same cycle as ``sums``.
    groups : Out(ArrayLayout(ArrayLayout(signed(config.pass_sum_bits), config.cols),
    config.submacros))
        ``groups[j][c]`` = the sum over sub-macros ``j·g .. j·g + g - 1`` (``g = P / 2**split``)
        for ``j < 2**split``, 0 for the others; same cycle as ``sums``.
    """

    def __init__(self, *, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        column = data.ArrayLayout(signed(config.column_sum_bits), config.cols)
        merged = data.ArrayLayout(signed(config.pass_sum_bits), config.cols)
        super().__init__({
            "sums": In(data.ArrayLayout(column, config.submacros)),
            "split": In(range(config.max_split + 1)),
            "merged": Out(merged),
            "groups": Out(data.ArrayLayout(merged, config.submacros)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        top = cfg.max_split  # the last tree level: one value, the total
        for c in range(cfg.cols):
            levels = tree_levels(self.sums[s][c] for s in range(cfg.submacros))
            m.d.comb += self.merged[c].eq(levels[-1][0])
            with m.Switch(self.split):
                for split in range(top + 1):
                    with m.Case(split):
                        # 2**split groups: tree level top - split.
                        for j, value in enumerate(levels[top - split]):
                            m.d.comb += self.groups[j][c].eq(value)
        return m
