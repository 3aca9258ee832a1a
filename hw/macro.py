"""The macro: P sub-macros, the merging tree, the activation buffer and the output accumulator."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .config import MacroConfig, ceil_log2
from .distribute import Distribution
from .isa import (
    Opcode,
    act_beat_layout,
    args_layout,
    result_layout,
    weight_row_layout,
)
from .merge import MergeTree
from .submacro import SubMacro

__all__ = ["ControlSignature", "Macro"]


def _operand_shape(config: MacroConfig, opcode: Opcode, field: str):
    """Shape of a command operand, so that addresses cross from command to macro unchanged."""
    return args_layout(config, opcode)[field].shape


class ControlSignature(wiring.Signature):
    """The sequencer-to-macro interface, with flows as the sequencer sees them.

    Parameters
    ----------
    config : MacroConfig

    Members
    -------
    w_en : Out(1)
        Write ``w_data`` into global weight row ``w_row`` at the clock edge.
    w_row : Out(unsigned), the LOAD_W ``row`` operand shape
        Global weight row: row ``w_row % rows`` of sub-macro ``w_row // rows``.
    w_data : Out(weight_row_layout(config))
        The weight row, lane ``c`` for column ``c``.
    a_en : Out(1)
        Write ``a_data`` as beat ``a_beat`` of activation entry ``a_addr`` at the clock edge.
    a_addr : Out(unsigned), the LOAD_A ``addr`` operand shape
    a_beat : Out(unsigned(max(1, ceil_log2(config.max_act_beats))))
        Beat within the entry: lane ``l`` of beat ``b`` is entry element ``b·act_lanes + l``.
    a_data : Out(act_beat_layout(config))
    mode : Out(range(len(config.modes)))
        Current pattern, an index into ``config.modes``; changes only between commands.
    issue : Out(1)
        Issue one compute pass this cycle (see :class:`Macro` for its pipeline).
    act_addr : Out(unsigned), the COMPUTE ``act_addr`` operand shape
        Activation entry of the pass; sampled with ``issue``.
    acc_addr : Out(unsigned), the COMPUTE ``acc_addr`` operand shape
        Accumulator entry the pass writes; sampled with ``issue``.
    accumulate : Out(1)
        Add to the entry's old value (1) or overwrite it (0); sampled with ``issue``.
    busy : In(1)
        High while a pass (issued this cycle or earlier) still has its accumulator write
        ahead after this cycle's clock edge. A command may start in the cycle after the first
        cycle with ``busy`` low and see every write.
    rd_en : Out(1)
        Read accumulator entry ``rd_addr`` at the clock edge.
    rd_addr : Out(unsigned), the READ ``addr`` operand shape
    rd_data : In(result_layout(config))
        The entry read at the last edge with ``rd_en``; holds while ``rd_en`` is low.
    """

    def __init__(self, config: MacroConfig):
        super().__init__({
            "w_en": Out(1),
            "w_row": Out(_operand_shape(config, Opcode.LOAD_W, "row")),
            "w_data": Out(weight_row_layout(config)),
            "a_en": Out(1),
            "a_addr": Out(_operand_shape(config, Opcode.LOAD_A, "addr")),
            "a_beat": Out(max(1, ceil_log2(config.max_act_beats))),
            "a_data": Out(act_beat_layout(config)),
            "mode": Out(range(len(config.modes))),
            "issue": Out(1),
            "act_addr": Out(_operand_shape(config, Opcode.COMPUTE, "act_addr")),
            "acc_addr": Out(_operand_shape(config, Opcode.COMPUTE, "acc_addr")),
            "accumulate": Out(1),
            "busy": In(1),
            "rd_en": Out(1),
            "rd_addr": Out(_operand_shape(config, Opcode.READ, "addr")),
            "rd_data": In(result_layout(config)),
        })


class Macro(wiring.Component):
    """P sub-macros whose column sums a merging tree adds, with the buffers around them.

    Global weight row ``g`` is row ``g % rows`` of sub-macro ``g // rows``. The distribution
    network routes the activation entry to the sub-macro rows for the current ``mode``
    (:func:`~sparsecim.hw.distribute.source`); each cell selects its activation by its metadata.

    Compute pass pipeline, one pass may issue per cycle. A pass issued in cycle ``t``:

    - ``t``: reads activation entry ``act_addr`` (synchronous read port);
    - ``t+1``: the entry drives the sub-macros, the merging tree sums them, and the merged
      column sums are registered; accumulator entry ``acc_addr`` is read;
    - ``t+2``: writes that entry at the clock edge: the merged sums plus its old value if
      ``accumulate``, else the merged sums alone, wrapped to ``acc_bits`` signed.

    The last pass of a COMPUTE thus writes at the edge ending cycle ``t + COMPUTE_DRAIN``,
    as the cycle model in :mod:`~sparsecim.hw.isa` charges; ``busy`` tells the sequencer when
    that is. A read-out of the entry with ``rd_en`` in ``t+3`` or later sees the new value.

    Memories and weight cells keep their contents over ``rst`` (zero at power-up); only the
    pipeline valid bits reset.

    Parameters
    ----------
    config : MacroConfig

    Members
    -------
    ctrl : In(ControlSignature(config))
        Weight and activation writes, pass issue and ``busy``, accumulator read-out; timing
        per member in :class:`ControlSignature`.
    """

    def __init__(self, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__({"ctrl": In(ControlSignature(config))})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        ctrl = self.ctrl

        subs = []
        for index in range(cfg.submacros):
            subs.append(sub := SubMacro(cfg))
            m.submodules[f"sub{index}"] = sub
        m.submodules.merge = merge = MergeTree(cfg)
        for index, sub in enumerate(subs):
            m.d.comb += merge.sums[index].eq(sub.sums)

        # Weight rows: range compares rather than bit slices, so rows need not be a power of 2.
        for index, sub in enumerate(subs):
            lo = index * cfg.rows
            m.d.comb += [
                sub.we.eq(ctrl.w_en & (ctrl.w_row >= lo) & (ctrl.w_row < lo + cfg.rows)),
                sub.waddr.eq(ctrl.w_row - lo),
                sub.wdata.eq(ctrl.w_data),
            ]

        # Activation buffer: an entry is max_act_beats beats side by side, so beat b lane l
        # lands on element b·act_lanes + l; a granular write port writes one beat of an entry.
        beat_bits = act_beat_layout(cfg).size
        beats = cfg.max_act_beats
        m.submodules.act_mem = act_mem = memory.Memory(
            shape=beat_bits * beats, depth=cfg.act_depth, init=[])
        act_wr = act_mem.write_port(granularity=beat_bits)
        act_rd = act_mem.read_port()
        m.d.comb += [
            act_wr.addr.eq(ctrl.a_addr),
            act_wr.data.eq(ctrl.a_data.as_value().replicate(beats)),
            act_wr.en.eq(Mux(ctrl.a_en, 1 << ctrl.a_beat, 0)),
            act_rd.addr.eq(ctrl.act_addr),
        ]
        m.submodules.distribute = dist = Distribution(cfg)
        m.d.comb += [dist.mode.eq(ctrl.mode), dist.entry.eq(act_rd.data)]
        for index, sub in enumerate(subs):
            m.d.comb += sub.act.eq(dist.offered[index])

        # Accumulator: one read and one write port for the pass pipeline, one read for READ.
        m.submodules.acc_mem = acc_mem = memory.Memory(
            shape=result_layout(cfg), depth=cfg.acc_depth, init=[])
        acc_wr = acc_mem.write_port()
        acc_rd = acc_mem.read_port()
        out_rd = acc_mem.read_port()
        m.d.comb += [
            out_rd.en.eq(ctrl.rd_en),
            out_rd.addr.eq(ctrl.rd_addr),
            ctrl.rd_data.eq(out_rd.data),
        ]

        # Stage 1 (cycle t+1): activations arrive; merged sums are registered at its end.
        s1_valid = Signal()
        s1_acc_addr = Signal.like(ctrl.acc_addr)
        s1_accumulate = Signal()
        m.d.sync += [
            s1_valid.eq(ctrl.issue),
            s1_acc_addr.eq(ctrl.acc_addr),
            s1_accumulate.eq(ctrl.accumulate),
        ]
        m.d.comb += acc_rd.addr.eq(s1_acc_addr)

        # Stage 2 (cycle t+2): read-modify-write of the accumulator entry.
        s2_valid = Signal()
        s2_acc_addr = Signal.like(ctrl.acc_addr)
        s2_accumulate = Signal()
        merged = Signal.like(merge.merged, reset_less=True)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_acc_addr.eq(s1_acc_addr),
            s2_accumulate.eq(s1_accumulate),
            merged.eq(merge.merged),
        ]
        # No forwarding from stage 2 to the stage-1 read: this assumes that passes in flight
        # together write distinct entries. The sequencer guarantees it: the passes of one
        # COMPUTE use increasing distinct acc addresses, and it drains (waits for ~busy)
        # before fetching the next command.
        m.d.comb += [acc_wr.addr.eq(s2_acc_addr), acc_wr.en.eq(s2_valid)]
        for c in range(cfg.cols):
            old = Mux(s2_accumulate, acc_rd.data[c], 0)
            # Assigning to an acc_bits lane is the documented two's complement wrap.
            m.d.comb += acc_wr.data[c].eq(old + merged[c])

        # A pass in stage 2 writes at this edge; only passes before it are still ahead.
        m.d.comb += ctrl.busy.eq(ctrl.issue | s1_valid)
        return m
