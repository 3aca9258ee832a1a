"""Top level: the sequencer and the macro behind command, data and result streams."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring

from .config import MacroConfig
from .macro import Macro
from .sequencer import Sequencer, external_members

__all__ = ["Top"]


class Top(wiring.Component):
    """One DCiM macro with its sequencer: the unit exported to Verilog and simulated.

    Clocked by the implicit ``sync`` domain (``clk``, synchronous ``rst``). Timing of every
    stream is the :class:`~sparsecim.hw.sequencer.Sequencer`'s; the datapath is the
    :class:`~sparsecim.hw.macro.Macro`.

    Parameters
    ----------
    config : MacroConfig

    Members
    -------
    cmd : In(stream.Signature(command_layout(config)))
        Command words (``docs/isa.md``); ``ready`` in fetch cycles only, one word per
        handshake.
    data : In(stream.Signature(config.data_bits))
        Data beats consumed by LOAD_W and LOAD_A in command order; ``ready`` only while one
        of them runs.
    result : Out(stream.Signature(result_layout(config)))
        Accumulator entries produced by READ, one per handshake, from the cycle after the
        READ's fetch; ``valid`` and payload hold until ``ready``.
    status : Out(status_signature(config))
        ``done`` (1), ``error`` (``ErrorCode``) and ``counters`` (``counters_layout``), all
        registered: they show a cycle's effect from the next cycle on.
    """

    def __init__(self, *, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__(external_members(config))

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = sequencer = Sequencer(config=self.config)
        m.submodules.macro = macro = Macro(config=self.config)
        wiring.connect(m, sequencer.macro, macro.ctrl)
        wiring.connect(m, wiring.flipped(self.cmd), sequencer.cmd)
        wiring.connect(m, wiring.flipped(self.data), sequencer.data)
        wiring.connect(m, sequencer.result, wiring.flipped(self.result))
        wiring.connect(m, sequencer.status, wiring.flipped(self.status))
        return m
