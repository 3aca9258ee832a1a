"""The distribution network: routes an activation entry to the sub-macro rows for the pattern."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import MacroConfig
from .submacro import choices

__all__ = ["entry_layout", "offered_layout", "Distribution", "source"]


def entry_layout(config: MacroConfig) -> data.ArrayLayout:
    """An activation buffer entry: ``max_act_beats × act_lanes`` signed activations."""
    return data.ArrayLayout(signed(config.act_bits), config.max_act_beats * config.act_lanes)


def offered_layout(config: MacroConfig) -> data.ArrayLayout:
    """What every sub-macro receives: ``[sub][row][position]`` activations."""
    row = data.ArrayLayout(signed(config.act_bits), choices(config))
    return data.ArrayLayout(data.ArrayLayout(row, config.rows), config.submacros)


def source(config: MacroConfig, mode: int, sub: int, row: int, position: int) -> int | None:
    """Entry element offered to ``position`` of ``row`` of sub-macro ``sub`` in mode index
    ``mode`` (into ``config.modes``), or None for a constant 0.

    - Dense (mode 0): element ``sub·rows + row`` at every position, so that the metadata
      does not matter.
    - ``n:m``: sub-macro ``sub`` is in cluster ``c = sub // n``; its row ``row`` takes input
      group ``c·rows + row``, whose ``m`` activations are elements ``(c·rows + row)·m + p``
      for positions ``p < m``; positions ``>= m`` get 0.

    The golden model executes the same rule (it imports this function for its index table).
    """
    n, m = config.modes[mode]
    if mode == 0:
        return sub * config.rows + row
    if position >= m:
        return None
    return ((sub // n) * config.rows + row) * m + position


class Distribution(wiring.Component):
    """Multiplexes each offered activation among the entry elements the modes route to it.

    Combinational; ``mode`` must hold still while passes are in flight (the sequencer changes
    it only between commands, after a COMPUTE has drained).

    Parameters
    ----------
    config : MacroConfig

    Members
    -------
    mode : In(range(len(config.modes)))
        Index of the current pattern in ``config.modes`` (0 is dense).
    entry : In(entry_layout(config))
        The activation entry of the pass.
    offered : Out(offered_layout(config))
        ``offered[s][r][p] = entry[source(config, mode, s, r, p)]`` (0 where None), same cycle.
    """

    def __init__(self, *, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__({
            "mode": In(range(len(config.modes))),
            "entry": In(entry_layout(config)),
            "offered": Out(offered_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        width = cfg.act_bits
        entry = self.entry.as_value()
        # One case per mode, each a fixed wiring: the muxes are the mode select. A row's
        # offered activations are one contiguous slice of the entry (an N:M group) or one
        # element repeated (dense), so each (sub-macro, row) is a single assignment.
        with m.Switch(self.mode):
            for mode, (_, group) in enumerate(cfg.modes):
                with m.Case(mode):
                    for s in range(cfg.submacros):
                        for r in range(cfg.rows):
                            first = source(cfg, mode, s, r, 0)
                            if mode == 0:
                                value = entry[first * width:(first + 1) * width].replicate(
                                    choices(cfg))
                            else:
                                # Zero-extended: positions >= m are 0.
                                value = entry[first * width:(first + group) * width]
                            m.d.comb += self.offered[s][r].as_value().eq(value)
        return m
