"""One sub-macro: a rows × cols array of weight cells with one adder tree per column.

A cell holds a weight and its metadata, and selects its own activation (in-cell select)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import MacroConfig, ceil_log2
from .isa import weight_row_layout
from .merge import balanced_sum

__all__ = ["SubMacro", "choices"]


def choices(config: MacroConfig) -> int:
    """Activations offered to each row of a sub-macro: ``2**meta_bits`` (at least ``max_m``,
    a power of two so that every metadata value selects a defined input)."""
    return 2 ** config.meta_bits


class SubMacro(wiring.Component):
    """``rows × cols`` cells of a signed weight and its metadata. Each row receives
    :func:`choices` activations; each cell multiplies the one its metadata selects (the
    in-cell select: any per-column N:M mask runs in one pass), and each column sums its
    products with a balanced adder tree.

    The cells are registers, not a memory, because every cell is read in every cycle. They
    have no reset (like the activation and accumulator buffers, their contents survive ``rst``)
    and start at zero.

    Parameters
    ----------
    config : MacroConfig
        Sizes: ``rows``, ``cols``, ``weight_bits``, ``act_bits``; the output width is
        ``config.column_sum_bits``.

    Members
    -------
    we : In(1)
        Write enable: ``wdata`` replaces row ``waddr`` at the clock edge ending the cycle.
    waddr : In(unsigned(max(1, ceil_log2(config.rows))))
        Row written when ``we``; rows past ``rows - 1`` are ignored.
    wdata : In(weight_row_layout(config))
        Weight and metadata of each column (``weight[c]``, ``meta[c]``).
    act : In(ArrayLayout(ArrayLayout(signed(config.act_bits), choices(config)), config.rows))
        ``act[r][p]``: activation ``p`` offered to row ``r``.
    sums : Out(ArrayLayout(signed(config.column_sum_bits), config.cols))
        ``sums[c] = Σ_r weight[r][c] · act[r][meta[r][c]]``, exact, combinational from ``act``
        and the stored cells (a write is seen from the cycle after ``we``).
    """

    def __init__(self, *, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__({
            "we": In(1),
            "waddr": In(max(1, ceil_log2(config.rows))),
            "wdata": In(weight_row_layout(config)),
            "act": In(data.ArrayLayout(data.ArrayLayout(signed(config.act_bits), choices(config)),
                                       config.rows)),
            "sums": Out(data.ArrayLayout(signed(config.column_sum_bits), config.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cells = [Signal(weight_row_layout(cfg), name=f"row{r}", reset_less=True)
                 for r in range(cfg.rows)]
        for r, row in enumerate(cells):
            with m.If(self.we & (self.waddr == r)):
                m.d.sync += row.eq(self.wdata)
        def selected(r, c):
            if not cfg.meta_bits:
                return self.act[r][0]
            # The in-cell select: one shift of the row's offered activations by the metadata.
            row = self.act[r].as_value()
            return row.word_select(cells[r].meta[c], cfg.act_bits).as_signed()

        for c in range(cfg.cols):
            # Signed × signed is weight_bits + act_bits wide and each tree level adds one bit,
            # so the tree output is exactly column_sum_bits: no truncation anywhere.
            m.d.comb += self.sums[c].eq(
                balanced_sum(cells[r].weight[c] * selected(r, c) for r in range(cfg.rows)))
        return m
