"""The sequencer: executes the command stream, moves data, counts cycles, reports errors."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import MacroConfig
from .isa import (
    STATUS_COUNTERS,
    ErrorCode,
    Mode,
    Opcode,
    command_layout,
    counters_layout,
    result_layout,
)
from .macro import ControlSignature

__all__ = ["status_signature", "external_members", "Sequencer"]


def status_signature(config: MacroConfig) -> wiring.Signature:
    """Signature of the status port (a plain :class:`wiring.Signature`, compared structurally).

    Members
    -------
    done : Out(1)
        High from the cycle after the END or erroring fetch cycle until reset.
    error : Out(ErrorCode)
        ``NONE``, or from the cycle after the erroring fetch cycle until reset, the code of the
        command that halted the sequencer.
    counters : Out(counters_layout(config))
        Saturating counters, :data:`~sparsecim.hw.isa.STATUS_COUNTERS` in order, zero after
        reset. Every cycle from reset to the halt (the END or erroring fetch cycle included)
        adds one to ``total`` and to exactly one of ``fetch``, ``load``, ``compute``, ``read``
        and ``stall``. The event counters add one per pass issued (``passes``), per weight row
        written (``w_rows``) and per activation beat written (``a_beats``). A counter shows an
        event from the next cycle on, and all stop at the halt.
    """
    return wiring.Signature({
        "done": Out(1),
        "error": Out(ErrorCode),
        "counters": Out(counters_layout(config)),
    })


def external_members(config: MacroConfig) -> dict:
    """The streams and status the sequencer shares with the outside world; the top level's
    signature is exactly these, so they are stated once."""
    return {
        "cmd": In(stream.Signature(command_layout(config))),
        "data": In(stream.Signature(config.data_bits)),
        "result": Out(stream.Signature(result_layout(config))),
        "status": Out(status_signature(config)),
    }


class Sequencer(wiring.Component):
    """Fetches commands, checks them, and drives the macro one command at a time.

    Its timing is the cycle model of :func:`sparsecim.hw.isa.cycles`, plus stall cycles:

    - FETCH: ``cmd.ready`` high. A cycle with ``cmd.valid`` accepts and checks the command
      (counted as *fetch*); one without counts as *stall*. Checks, in the order of
      :func:`~sparsecim.hw.isa.check`: undefined opcode (``ILLEGAL_OPCODE``), CONFIG with a
      pattern the config does not list (``ILLEGAL_MODE``, see
      :func:`~sparsecim.hw.isa.pattern_of`), ``count == 0`` (``ZERO_COUNT``), address plus
      count beyond the depth (``ADDRESS_RANGE``). An error goes to HALT. CONFIG sets the
      pattern (``macro.mode``) and stays in FETCH; END goes to HALT; the others run.
    - LOAD_W, LOAD_A: ``data.ready`` high; each cycle with ``data.valid`` writes one beat
      (*load*), one without is a *stall*. LOAD_W takes ``count`` beats, LOAD_A
      ``count × act_beats(n, m)`` for the current pattern.
    - COMPUTE: ``count`` cycles issuing passes ``i`` (``act_addr + i``, ``acc_addr + i``), then
      ``COMPUTE_DRAIN`` cycles until the macro's last write; all are *compute*.
    - READ: ``result.valid`` high with entry ``addr + k``; a cycle with ``result.ready``
      (*read*) sends it, one without is a *stall*. The READ's fetch cycle already reads entry
      ``addr`` so that beats stream one per cycle.
    - MOVE: ``count`` cycles (*load*), each writing one requantized accumulator entry into the
      activation buffer; like READ, the fetch cycle already reads the first entry.
    - HALT: ``status.done`` high; no stream is ready or valid; counters stop. Only ``rst``
      leaves it.

    ``rst`` returns to FETCH with mode DENSE (index 0), split 0, shift 0, error NONE and
    counters zero. COMPUTE also checks that its ``part`` exists in the current pattern
    (``ADDRESS_RANGE`` otherwise, :func:`~sparsecim.hw.isa.part_fits`).

    Parameters
    ----------
    config : MacroConfig

    Members
    -------
    cmd : In(stream.Signature(command_layout(config)))
        Command words; ``ready`` exactly in FETCH cycles.
    data : In(stream.Signature(config.data_bits))
        Weight rows (``weight_row_layout``) and activation beats (``act_beat_layout`` in the
        low bits) for LOAD_W and LOAD_A; ``ready`` exactly in LOAD_W and LOAD_A cycles.
    result : Out(stream.Signature(result_layout(config)))
        Accumulator entries sent by READ; ``valid`` from the cycle after the READ's fetch
        cycle until its last beat is taken, payload stable while ``ready`` is low.
    status : Out(status_signature(config))
        ``done``, ``error`` and the performance counters, all registered.
    macro : Out(ControlSignature(config))
        Drives the :class:`~sparsecim.hw.macro.Macro`: writes in the cycle of the data
        handshake, one pass issue per COMPUTE cycle, accumulator reads for READ.
    data_w : Out(1)
        High in LOAD_W cycles (``data.ready`` is for a weight row), low in LOAD_A cycles: the
        chip routes its weight and activation ports by it (:class:`~sparsecim.hw.chip.Chip`).
    data_last : Out(1)
        High in a LOAD_W or LOAD_A cycle whose data handshake, if it happens, takes the
        command's last beat (combinational, independent of ``data.valid``).
    result_last : Out(1)
        High in a READ cycle whose result beat is the command's last.
    """

    def __init__(self, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__(external_members(config) | {"macro": Out(ControlSignature(config)),
                                                      "data_w": Out(1), "data_last": Out(1),
                                                      "result_last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cmd, dat, res, ctrl, status = self.cmd, self.data, self.result, self.macro, self.status
        opcode = cmd.payload.opcode
        args = cmd.payload.args

        current = Signal(command_layout(cfg))  # the command being executed
        cur = current.args
        step = Signal(range(max(cfg.weight_rows, cfg.act_depth, cfg.acc_depth, cfg.cols) + 1))
        beat = Signal.like(ctrl.a_beat)        # beat within the LOAD_A entry `step`
        mode = Signal.like(ctrl.mode)          # index into cfg.modes; 0 (dense) after reset
        split = Signal.like(ctrl.split)
        shift = Signal.like(ctrl.shift)
        error = Signal(ErrorCode)
        m.d.comb += [status.error.eq(error), ctrl.mode.eq(mode), ctrl.split.eq(split),
                     ctrl.shift.eq(shift)]

        # Checks of the offered command, in the order of isa.check().
        defined = Cat(opcode == op for op in Opcode).any()
        # The pattern a CONFIG selects, matched against the config's list (isa.pattern_of).
        conf = args.config
        mode_ok = Signal()
        mode_next = Signal.like(mode)
        for index, (n, m_) in enumerate(cfg.modes):
            kind = Mode.DENSE if index == 0 else Mode.NM
            # Grouping (split > 0) only in dense; split and shift within their ranges.
            fields_ok = ((conf.split <= (cfg.max_split if index == 0 else 0))
                         & (conf.shift < cfg.acc_bits))
            with m.If((conf.mode == kind) & (conf.n == n) & (conf.m == m_) & fields_ok):
                m.d.comb += [mode_ok.eq(1), mode_next.eq(index)]
        # Parts of an entry in the current pattern, for COMPUTE's `part` check.
        parts = Signal(range(cfg.max_parts + 1))
        # Beats per activation entry in the current pattern.
        last_beat = Signal.like(beat)
        with m.Switch(mode):
            for index, pattern in enumerate(cfg.modes):
                with m.Case(index):
                    m.d.comb += [last_beat.eq(cfg.act_beats(*pattern) - 1),
                                 parts.eq(cfg.max_pass_inputs // cfg.pass_inputs(*pattern))]
        zero = Signal()
        beyond = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD_W):
                a = args.load_w
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq(a.row + a.count > cfg.weight_rows)]
            with m.Case(Opcode.LOAD_A):
                a = args.load_a
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq(a.addr + a.count > cfg.act_depth)]
            with m.Case(Opcode.COMPUTE):
                a = args.compute
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq((a.act_addr + a.count > cfg.act_depth)
                                       | (a.acc_addr + a.count > cfg.acc_depth)
                                       | (a.part >= parts))]
            with m.Case(Opcode.MOVE):
                a = args.move
                square = cfg.cols * cfg.cols <= cfg.max_pass_inputs
                straight_beyond = ((a.act_addr + a.count > cfg.act_depth)
                                   | ((a.elem + 1) * cfg.cols > cfg.max_pass_inputs))
                transposed_beyond = (a.elem + a.count > cfg.cols) | (not square)
                lanes = Mux(a.lanes == 0, cfg.cols, a.lanes)   # isa.move_window
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq((a.acc_addr + a.count > cfg.acc_depth)
                                       | (a.lane + lanes > cfg.cols)
                                       | (a.dst + lanes > cfg.cols)
                                       | Mux(a.transpose, transposed_beyond,
                                             straight_beyond))]
            with m.Case(Opcode.READ):
                a = args.read
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq(a.addr + a.count > cfg.acc_depth)]
        fault = Signal(ErrorCode)
        with m.If(~defined):
            m.d.comb += fault.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif((opcode == Opcode.CONFIG) & ~mode_ok):
            m.d.comb += fault.eq(ErrorCode.ILLEGAL_MODE)
        with m.Elif(zero):
            m.d.comb += fault.eq(ErrorCode.ZERO_COUNT)
        with m.Elif(beyond):
            m.d.comb += fault.eq(ErrorCode.ADDRESS_RANGE)

        # Counters: each state raises `total` and exactly one category per cycle; the event
        # counters tick with the write or issue they count.
        tick = {name: Signal(name=f"tick_{name}") for name in STATUS_COUNTERS}
        saturated = 2 ** cfg.counter_bits - 1
        for name in STATUS_COUNTERS:
            counter = status.counters[name]
            with m.If(tick[name] & (counter != saturated)):
                m.d.sync += counter.eq(counter + 1)

        with m.FSM(name="state"):
            with m.State("FETCH"):
                m.d.comb += [cmd.ready.eq(1), tick["total"].eq(1),
                             tick["fetch"].eq(cmd.valid), tick["stall"].eq(~cmd.valid)]
                with m.If(cmd.valid):
                    m.d.sync += [current.eq(cmd.payload), step.eq(0), beat.eq(0)]
                    with m.If(fault != ErrorCode.NONE):
                        m.d.sync += error.eq(fault)
                        m.next = "HALT"
                    with m.Else():
                        with m.Switch(opcode):
                            with m.Case(Opcode.CONFIG):
                                m.d.sync += [mode.eq(mode_next), split.eq(conf.split),
                                             shift.eq(conf.shift)]
                            with m.Case(Opcode.LOAD_W):
                                m.next = "LOAD_W"
                            with m.Case(Opcode.LOAD_A):
                                m.next = "LOAD_A"
                            with m.Case(Opcode.COMPUTE):
                                m.next = "COMPUTE"
                            with m.Case(Opcode.READ):
                                # Read entry `addr` now, so the first beat is valid next cycle.
                                m.d.comb += [ctrl.rd_en.eq(1), ctrl.rd_addr.eq(args.read.addr),
                                             ctrl.rd_bank.eq(args.read.bank)]
                                m.next = "READ"
                            with m.Case(Opcode.MOVE):
                                # Likewise: entry `acc_addr` is read during the fetch cycle.
                                m.d.comb += [ctrl.rd_en.eq(1),
                                             ctrl.rd_addr.eq(args.move.acc_addr),
                                             ctrl.rd_bank.eq(args.move.bank)]
                                m.next = "MOVE"
                            with m.Case(Opcode.END):
                                m.next = "HALT"

            with m.State("LOAD_W"):
                m.d.comb += [dat.ready.eq(1), tick["total"].eq(1), self.data_w.eq(1),
                             self.data_last.eq(step + 1 == cur.load_w.count),
                             tick["load"].eq(dat.valid), tick["stall"].eq(~dat.valid),
                             tick["w_rows"].eq(dat.valid), ctrl.w_en.eq(dat.valid),
                             ctrl.w_row.eq(cur.load_w.row + step),
                             ctrl.w_data.eq(dat.payload)]
                with m.If(dat.valid):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step + 1 == cur.load_w.count):
                        m.next = "FETCH"

            with m.State("LOAD_A"):
                # Activation lanes fill the low bits of a data beat (act_beat_layout).
                m.d.comb += [dat.ready.eq(1), tick["total"].eq(1),
                             self.data_last.eq((beat == last_beat)
                                               & (step + 1 == cur.load_a.count)),
                             tick["load"].eq(dat.valid), tick["stall"].eq(~dat.valid),
                             tick["a_beats"].eq(dat.valid), ctrl.a_en.eq(dat.valid),
                             ctrl.a_addr.eq(cur.load_a.addr + step),
                             ctrl.a_beat.eq(beat), ctrl.a_data.eq(dat.payload)]
                with m.If(dat.valid):
                    with m.If(beat == last_beat):
                        m.d.sync += [beat.eq(0), step.eq(step + 1)]
                        with m.If(step + 1 == cur.load_a.count):
                            m.next = "FETCH"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)

            with m.State("COMPUTE"):
                m.d.comb += [tick["total"].eq(1), tick["compute"].eq(1), tick["passes"].eq(1),
                             ctrl.issue.eq(1), ctrl.accumulate.eq(cur.compute.accumulate),
                             ctrl.part.eq(cur.compute.part),
                             ctrl.act_addr.eq(cur.compute.act_addr + step),
                             ctrl.acc_addr.eq(cur.compute.acc_addr + step)]
                m.d.sync += step.eq(step + 1)
                with m.If(step + 1 == cur.compute.count):
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                # Leave once no write is ahead of this edge: COMPUTE_DRAIN cycles after the
                # last issue, so the next command sees every accumulator write.
                m.d.comb += [tick["total"].eq(1), tick["compute"].eq(1)]
                with m.If(~ctrl.busy):
                    m.next = "FETCH"

            with m.State("READ"):
                last = step + 1 == cur.read.count
                m.d.comb += [res.valid.eq(1), res.payload.eq(ctrl.rd_data),
                             self.result_last.eq(last), tick["total"].eq(1),
                             tick["read"].eq(res.ready), tick["stall"].eq(~res.ready)]
                # The read port holds its data while rd_en is low: payload stable until ready.
                with m.If(res.ready):
                    m.d.sync += step.eq(step + 1)
                    with m.If(last):
                        m.next = "FETCH"
                    with m.Else():
                        m.d.comb += [ctrl.rd_en.eq(1),
                                     ctrl.rd_addr.eq(cur.read.addr + step + 1),
                                     ctrl.rd_bank.eq(cur.read.bank)]

            with m.State("MOVE"):
                # One accumulator entry per cycle, counted as load: write entry `step` (read
                # in the previous cycle) and read the next.
                mv = cur.move
                m.d.comb += [tick["total"].eq(1), tick["load"].eq(1),
                             ctrl.mv_en.eq(1), ctrl.mv_transpose.eq(mv.transpose),
                             ctrl.mv_addr.eq(Mux(mv.transpose, mv.act_addr, mv.act_addr + step)),
                             ctrl.mv_elem.eq(Mux(mv.transpose, mv.elem + step, mv.elem)),
                             ctrl.mv_lane.eq(mv.lane), ctrl.mv_dst.eq(mv.dst),
                             ctrl.mv_lanes.eq(mv.lanes)]
                m.d.sync += step.eq(step + 1)
                with m.If(step + 1 == mv.count):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += [ctrl.rd_en.eq(1), ctrl.rd_addr.eq(mv.acc_addr + step + 1),
                                 ctrl.rd_bank.eq(mv.bank)]

            with m.State("HALT"):
                m.d.comb += status.done.eq(1)
        return m
