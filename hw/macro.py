"""The macro: P sub-macros, the merging tree, the activation buffer and the output accumulator."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
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
    split : Out(range(config.max_split + 1))
        Current merging (``2**split`` groups, group ``j`` writing bank ``j``); changes only
        between commands.
    shift : Out(range(config.acc_bits))
        Current requantization shift of MOVE; changes only between commands.
    issue : Out(1)
        Issue one compute pass this cycle (see :class:`Macro` for its pipeline).
    act_addr : Out(unsigned), the COMPUTE ``act_addr`` operand shape
        Activation entry of the pass; sampled with ``issue``.
    acc_addr : Out(unsigned), the COMPUTE ``acc_addr`` operand shape
        Accumulator entry the pass writes; sampled with ``issue``.
    accumulate : Out(1)
        Add to the entry's old value (1) or overwrite it (0); sampled with ``issue``.
    part : Out(unsigned), the COMPUTE ``part`` operand shape
        The pass reads entry elements from ``part × pass_inputs`` on; sampled with ``issue``.
    busy : In(1)
        High while a pass (issued this cycle or earlier) still has its accumulator write
        ahead after this cycle's clock edge. A command may start in the cycle after the first
        cycle with ``busy`` low and see every write.
    rd_en : Out(1)
        Read bank ``rd_bank`` of accumulator entry ``rd_addr`` at the clock edge.
    rd_addr : Out(unsigned), the READ ``addr`` operand shape
    rd_bank : Out(unsigned), the READ ``bank`` operand shape
    rd_data : In(result_layout(config))
        The entry read at the last edge with ``rd_en``; holds while ``rd_en`` is low.
    mv_en : Out(1)
        Write a window of the requantized ``rd_data`` into activation entry ``mv_addr`` at
        the clock edge: its ``n`` lanes from ``mv_lane`` (``n = mv_lanes``, ``cols`` for 0),
        lane ``mv_lane + t`` to element ``mv_elem·cols + mv_dst + t``, or with
        ``mv_transpose`` to element ``(mv_dst + t)·cols + mv_elem`` (MOVE; see
        :func:`~sparsecim.hw.isa.requantize` and :func:`~sparsecim.hw.isa.move_window`).
        The window must fit (``mv_lane + n <= cols``, ``mv_dst + n <= cols``).
    mv_addr : Out(unsigned), the MOVE ``act_addr`` operand shape
    mv_elem : Out(unsigned), the MOVE ``elem`` operand shape
    mv_transpose : Out(1)
    mv_lane, mv_dst, mv_lanes : Out(unsigned), the MOVE ``lane``, ``dst``, ``lanes`` shapes
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
            "split": Out(range(config.max_split + 1)),
            "shift": Out(range(config.acc_bits)),
            "issue": Out(1),
            "act_addr": Out(_operand_shape(config, Opcode.COMPUTE, "act_addr")),
            "acc_addr": Out(_operand_shape(config, Opcode.COMPUTE, "acc_addr")),
            "accumulate": Out(1),
            "part": Out(_operand_shape(config, Opcode.COMPUTE, "part")),
            "busy": In(1),
            "rd_en": Out(1),
            "rd_addr": Out(_operand_shape(config, Opcode.READ, "addr")),
            "rd_bank": Out(_operand_shape(config, Opcode.READ, "bank")),
            "rd_data": In(result_layout(config)),
            "mv_en": Out(1),
            "mv_addr": Out(_operand_shape(config, Opcode.MOVE, "act_addr")),
            "mv_elem": Out(_operand_shape(config, Opcode.MOVE, "elem")),
            "mv_transpose": Out(1),
            "mv_lane": Out(_operand_shape(config, Opcode.MOVE, "lane")),
            "mv_dst": Out(_operand_shape(config, Opcode.MOVE, "dst")),
            "mv_lanes": Out(_operand_shape(config, Opcode.MOVE, "lanes")),
        })


class Macro(wiring.Component):
    """P sub-macros whose column sums a merging tree adds, with the buffers around them.

    Global weight row ``g`` is row ``g % rows`` of sub-macro ``g // rows``. The distribution
    network routes the activation entry to the sub-macro rows for the current ``mode``
    (:func:`~sparsecim.hw.distribute.source`); each cell selects its activation by its metadata.

    Compute pass pipeline, one pass may issue per cycle. A pass issued in cycle ``t``:

    - ``t``: reads activation entry ``act_addr`` (synchronous read port);
    - ``t+1``: part ``part`` of the entry drives the sub-macros, the merging tree sums them in
      ``2**split`` groups, and the group sums are registered; accumulator entry ``acc_addr``
      is read;
    - ``t+2``: writes bank ``j`` of that entry for every group ``j`` at the clock edge: the
      group sum plus the bank's old value if ``accumulate``, else the sum alone, wrapped to
      ``acc_bits`` signed. Other banks keep their contents.

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

    def __init__(self, *, config: MacroConfig):
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
            subs.append(sub := SubMacro(config=cfg))
            m.submodules[f"sub{index}"] = sub
        m.submodules.merge = merge = MergeTree(config=cfg)
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
        # lands on element b·act_lanes + l. The write port is element-granular: LOAD_A writes
        # one beat's elements, MOVE one accumulator entry's worth, each a mask over the entry.
        width = cfg.act_bits
        beats = cfg.max_act_beats
        elements = beats * cfg.act_lanes
        m.submodules.act_mem = act_mem = memory.Memory(
            shape=elements * width, depth=cfg.act_depth, init=[])
        act_wr = act_mem.write_port(granularity=width)
        act_rd = act_mem.read_port()
        m.d.comb += act_rd.addr.eq(ctrl.act_addr)

        rq = Signal(data.ArrayLayout(signed(width), cfg.cols))  # requantized rd_data
        for c in range(cfg.cols):
            m.d.comb += rq[c].eq(_requantize(cfg, ctrl.rd_data[c], ctrl.shift))
        # The window: lane mv_lane + t lands on lane mv_dst + t, i.e. the lanes rotate down
        # by (mv_lane - mv_dst) mod cols; `window` marks the destination lanes written.
        rotate = Signal(range(cfg.cols))
        m.d.comb += rotate.eq(Mux(ctrl.mv_lane >= ctrl.mv_dst, ctrl.mv_lane - ctrl.mv_dst,
                                  ctrl.mv_lane + cfg.cols - ctrl.mv_dst))
        rq_bits = Signal(cfg.cols * width)
        m.d.comb += rq_bits.eq(Cat(rq.as_value(), rq.as_value()) >> (rotate * width))
        n_lanes = Mux(ctrl.mv_lanes == 0, cfg.cols, ctrl.mv_lanes)
        window = Signal(cfg.cols)
        for c in range(cfg.cols):
            m.d.comb += window[c].eq((c >= ctrl.mv_dst) & (c < ctrl.mv_dst + n_lanes))
        reps = -(-elements // cfg.cols)
        # Straight: element e gets lane e % cols. Transpose: element e gets lane e // cols
        # (rows of the cols × cols block), only for e < cols².
        straight = rq_bits.replicate(reps)[:elements * width]
        block = Cat(rq_bits[c * width:(c + 1) * width].replicate(cfg.cols)
                    for c in range(cfg.cols))
        transposed = block if cfg.cols * cfg.cols <= elements else block[:elements * width]
        column = Cat(Cat(window[c], Const(0, cfg.cols - 1)) for c in range(cfg.cols)
                     if c * cfg.cols < elements)
        with m.If(ctrl.a_en):
            m.d.comb += [
                act_wr.addr.eq(ctrl.a_addr),
                act_wr.data.eq(ctrl.a_data.as_value().replicate(beats)),
                act_wr.en.eq(((1 << cfg.act_lanes) - 1) << (ctrl.a_beat * cfg.act_lanes)),
            ]
        with m.Elif(ctrl.mv_en & ~ctrl.mv_transpose):
            m.d.comb += [
                act_wr.addr.eq(ctrl.mv_addr),
                act_wr.data.eq(straight),
                act_wr.en.eq(window << (ctrl.mv_elem * cfg.cols)),
            ]
        with m.Elif(ctrl.mv_en):
            m.d.comb += [
                act_wr.addr.eq(ctrl.mv_addr),
                act_wr.data.eq(transposed),
                act_wr.en.eq(column << ctrl.mv_elem),
            ]

        # Part `part` of the entry: shifted down by part × pass_inputs(mode) elements, the
        # offset registered with the pass so that it meets the entry read in cycle t+1.
        offset = Signal(range(elements * width + 1))
        with m.Switch(ctrl.mode):
            for index, pattern in enumerate(cfg.modes):
                with m.Case(index):
                    m.d.sync += offset.eq(ctrl.part * (cfg.pass_inputs(*pattern) * width))
        m.submodules.distribute = dist = Distribution(config=cfg)
        m.d.comb += [dist.mode.eq(ctrl.mode), dist.entry.eq(act_rd.data >> offset)]
        for index, sub in enumerate(subs):
            m.d.comb += sub.act.eq(dist.offered[index])

        # Accumulator: P banks side by side in each entry; one read and one write port for
        # the pass pipeline (a write enables the banks of the groups), one read for READ/MOVE.
        banks = cfg.submacros
        bank_bits = result_layout(cfg).size
        m.submodules.acc_mem = acc_mem = memory.Memory(
            shape=data.ArrayLayout(result_layout(cfg), banks), depth=cfg.acc_depth, init=[])
        acc_wr = acc_mem.write_port(granularity=1)  # one bank (array element) per enable bit
        acc_rd = acc_mem.read_port()
        out_rd = acc_mem.read_port()
        out_bank = Signal.like(ctrl.rd_bank)
        with m.If(ctrl.rd_en):
            m.d.sync += out_bank.eq(ctrl.rd_bank)
        m.d.comb += [
            out_rd.en.eq(ctrl.rd_en),
            out_rd.addr.eq(ctrl.rd_addr),
            ctrl.rd_data.eq(out_rd.data.as_value().word_select(out_bank, bank_bits)),
        ]

        # Stage 1 (cycle t+1): activations arrive; group sums are registered at its end.
        s1_valid = Signal()
        s1_acc_addr = Signal.like(ctrl.acc_addr)
        s1_accumulate = Signal()
        m.d.sync += [
            s1_valid.eq(ctrl.issue),
            s1_acc_addr.eq(ctrl.acc_addr),
            s1_accumulate.eq(ctrl.accumulate),
        ]
        m.d.comb += [acc_rd.addr.eq(s1_acc_addr), merge.split.eq(ctrl.split)]

        # Stage 2 (cycle t+2): read-modify-write of the accumulator entry's group banks.
        s2_valid = Signal()
        s2_acc_addr = Signal.like(ctrl.acc_addr)
        s2_accumulate = Signal()
        groups = Signal.like(merge.groups, reset_less=True)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_acc_addr.eq(s1_acc_addr),
            s2_accumulate.eq(s1_accumulate),
            groups.eq(merge.groups),
        ]
        # No forwarding from stage 2 to the stage-1 read: this assumes that passes in flight
        # together write distinct entries. The sequencer guarantees it: the passes of one
        # COMPUTE use increasing distinct acc addresses, and it drains (waits for ~busy)
        # before fetching the next command.
        written = Signal(banks)  # banks of the 2**split groups
        with m.Switch(ctrl.split):
            for split in range(cfg.max_split + 1):
                with m.Case(split):
                    m.d.comb += written.eq((1 << 2 ** split) - 1)
        m.d.comb += [acc_wr.addr.eq(s2_acc_addr),
                     acc_wr.en.eq(Mux(s2_valid, written, 0))]
        for b in range(banks):
            for c in range(cfg.cols):
                old = Mux(s2_accumulate, acc_rd.data[b][c], 0)
                # Assigning to an acc_bits lane is the documented two's complement wrap.
                m.d.comb += acc_wr.data[b][c].eq(old + groups[b][c])

        # A pass in stage 2 writes at this edge; only passes before it are still ahead.
        m.d.comb += ctrl.busy.eq(ctrl.issue | s1_valid)
        return m


def _requantize(cfg: MacroConfig, value, shift):
    """MOVE's requantization (:func:`~sparsecim.hw.isa.requantize`): round half up after an
    arithmetic shift right by ``shift``, saturate to ``act_bits`` signed."""
    wide = value + (Const(1, cfg.acc_bits + 1) << shift >> 1)  # + 2**(shift-1), 0 for shift 0
    shifted = wide >> shift
    lo, hi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1) - 1
    return Mux(shifted < lo, lo, Mux(shifted > hi, hi, shifted))
