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

    def __init__(self, *, config: MacroConfig):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config = config
        super().__init__(external_members(config) | {"macro": Out(ControlSignature(config)),
                                                      "data_w": Out(1), "data_last": Out(1),
                                                      "result_last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        regs = _Registers(self.config, self.macro)
        m.d.comb += [self.status.error.eq(regs.error), self.macro.mode.eq(regs.mode),
                     self.macro.split.eq(regs.split), self.macro.shift.eq(regs.shift)]
        fault, mode_next, last_beat = self._checks(m, regs)
        tick = self._counters(m)
        with m.FSM(name="state"):
            self._fetch(m, regs, fault, mode_next, tick)
            self._load_w(m, regs, tick)
            self._load_a(m, regs, last_beat, tick)
            self._compute(m, regs, tick)
            self._read(m, regs, tick)
            self._move(m, regs, tick)
            with m.State("HALT"):
                m.d.comb += self.status.done.eq(1)
        return m

    # Checks of the offered command, in the order of isa.check().

    def _checks(self, m, regs):
        """The fault of the command offered on ``cmd`` (``NONE`` if legal, in the order of
        :func:`~sparsecim.hw.isa.check`), the mode index a CONFIG selects, and the last beat
        of an activation entry in the current pattern; all combinational."""
        opcode = self.cmd.payload.opcode
        defined = Cat(opcode == op for op in Opcode).any()
        mode_ok, mode_next = self._config_check(m)
        last_beat, parts = self._pattern_figures(m, regs)
        zero, beyond = self._range_checks(m, parts)
        fault = Signal(ErrorCode)
        with m.If(~defined):
            m.d.comb += fault.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif((opcode == Opcode.CONFIG) & ~mode_ok):
            m.d.comb += fault.eq(ErrorCode.ILLEGAL_MODE)
        with m.Elif(zero):
            m.d.comb += fault.eq(ErrorCode.ZERO_COUNT)
        with m.Elif(beyond):
            m.d.comb += fault.eq(ErrorCode.ADDRESS_RANGE)
        return fault, mode_next, last_beat

    def _config_check(self, m):
        """``(mode_ok, mode_next)``: the pattern a CONFIG selects, matched against the
        config's list (:func:`~sparsecim.hw.isa.pattern_of`), and its mode index."""
        cfg = self.config
        conf = self.cmd.payload.args.config
        mode_ok = Signal()
        mode_next = Signal.like(self.macro.mode)
        for index, (n, m_) in enumerate(cfg.modes):
            kind = Mode.DENSE if index == 0 else Mode.NM
            # Grouping (split > 0) only in dense; split and shift within their ranges.
            fields_ok = ((conf.split <= (cfg.max_split if index == 0 else 0))
                         & (conf.shift < cfg.acc_bits))
            with m.If((conf.mode == kind) & (conf.n == n) & (conf.m == m_) & fields_ok):
                m.d.comb += [mode_ok.eq(1), mode_next.eq(index)]
        return mode_ok, mode_next

    def _pattern_figures(self, m, regs):
        """``(last_beat, parts)`` of the current pattern: the last beat of an activation
        entry, and the parts of an entry (for COMPUTE's ``part`` check)."""
        cfg = self.config
        parts = Signal(range(cfg.max_parts + 1))
        last_beat = Signal.like(regs.beat)
        with m.Switch(regs.mode):
            for index, pattern in enumerate(cfg.modes):
                with m.Case(index):
                    m.d.comb += [last_beat.eq(cfg.act_beats(*pattern) - 1),
                                 parts.eq(cfg.max_pass_inputs // cfg.pass_inputs(*pattern))]
        return last_beat, parts

    def _range_checks(self, m, parts):
        """``(zero, beyond)`` of the offered command: a zero count, and an address plus count
        beyond a depth (or a part, lane or element out of range)."""
        cfg = self.config
        args = self.cmd.payload.args
        zero = Signal()
        beyond = Signal()
        with m.Switch(self.cmd.payload.opcode):
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
                m.d.comb += [zero.eq(a.count == 0), beyond.eq(self._move_beyond(a))]
            with m.Case(Opcode.READ):
                a = args.read
                m.d.comb += [zero.eq(a.count == 0),
                             beyond.eq(a.addr + a.count > cfg.acc_depth)]
        return zero, beyond

    def _move_beyond(self, a):
        """A MOVE's range check: accumulator entries, the lane window, and the activation
        entries (straight) or the block's columns (transposed)."""
        cfg = self.config
        square = cfg.cols * cfg.cols <= cfg.max_pass_inputs
        straight_beyond = ((a.act_addr + a.count > cfg.act_depth)
                           | ((a.elem + 1) * cfg.cols > cfg.max_pass_inputs))
        transposed_beyond = (a.elem + a.count > cfg.cols) | (not square)
        lanes = Mux(a.lanes == 0, cfg.cols, a.lanes)   # isa.move_window
        return ((a.acc_addr + a.count > cfg.acc_depth)
                | (a.lane + lanes > cfg.cols)
                | (a.dst + lanes > cfg.cols)
                | Mux(a.transpose, transposed_beyond, straight_beyond))

    def _counters(self, m) -> dict:
        """The saturating status counters; returns their tick signals by name. Each state
        raises ``total`` and exactly one category per cycle; the event counters tick with
        the write or issue they count."""
        tick = {name: Signal(name=f"tick_{name}") for name in STATUS_COUNTERS}
        saturated = 2 ** self.config.counter_bits - 1
        for name in STATUS_COUNTERS:
            counter = self.status.counters[name]
            with m.If(tick[name] & (counter != saturated)):
                m.d.sync += counter.eq(counter + 1)
        return tick

    # The states, one method each (called inside the FSM).

    def _fetch(self, m, regs, fault, mode_next, tick):
        cmd, ctrl = self.cmd, self.macro
        opcode, args = cmd.payload.opcode, cmd.payload.args
        with m.State("FETCH"):
            m.d.comb += [cmd.ready.eq(1), tick["total"].eq(1),
                         tick["fetch"].eq(cmd.valid), tick["stall"].eq(~cmd.valid)]
            with m.If(cmd.valid):
                m.d.sync += [regs.current.eq(cmd.payload), regs.step.eq(0), regs.beat.eq(0)]
                with m.If(fault != ErrorCode.NONE):
                    m.d.sync += regs.error.eq(fault)
                    m.next = "HALT"
                with m.Else():
                    with m.Switch(opcode):
                        with m.Case(Opcode.CONFIG):
                            m.d.sync += [regs.mode.eq(mode_next),
                                         regs.split.eq(args.config.split),
                                         regs.shift.eq(args.config.shift)]
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

    def _load_w(self, m, regs, tick):
        dat, ctrl, step = self.data, self.macro, regs.step
        cur = regs.current.args.load_w
        with m.State("LOAD_W"):
            m.d.comb += [dat.ready.eq(1), tick["total"].eq(1), self.data_w.eq(1),
                         self.data_last.eq(step + 1 == cur.count),
                         tick["load"].eq(dat.valid), tick["stall"].eq(~dat.valid),
                         tick["w_rows"].eq(dat.valid), ctrl.w_en.eq(dat.valid),
                         ctrl.w_row.eq(cur.row + step),
                         ctrl.w_data.eq(dat.payload)]
            with m.If(dat.valid):
                m.d.sync += step.eq(step + 1)
                with m.If(step + 1 == cur.count):
                    m.next = "FETCH"

    def _load_a(self, m, regs, last_beat, tick):
        dat, ctrl, step, beat = self.data, self.macro, regs.step, regs.beat
        cur = regs.current.args.load_a
        with m.State("LOAD_A"):
            # Activation lanes fill the low bits of a data beat (act_beat_layout).
            m.d.comb += [dat.ready.eq(1), tick["total"].eq(1),
                         self.data_last.eq((beat == last_beat) & (step + 1 == cur.count)),
                         tick["load"].eq(dat.valid), tick["stall"].eq(~dat.valid),
                         tick["a_beats"].eq(dat.valid), ctrl.a_en.eq(dat.valid),
                         ctrl.a_addr.eq(cur.addr + step),
                         ctrl.a_beat.eq(beat), ctrl.a_data.eq(dat.payload)]
            with m.If(dat.valid):
                with m.If(beat == last_beat):
                    m.d.sync += [beat.eq(0), step.eq(step + 1)]
                    with m.If(step + 1 == cur.count):
                        m.next = "FETCH"
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)

    def _compute(self, m, regs, tick):
        ctrl, step = self.macro, regs.step
        cur = regs.current.args.compute
        with m.State("COMPUTE"):
            m.d.comb += [tick["total"].eq(1), tick["compute"].eq(1), tick["passes"].eq(1),
                         ctrl.issue.eq(1), ctrl.accumulate.eq(cur.accumulate),
                         ctrl.part.eq(cur.part),
                         ctrl.act_addr.eq(cur.act_addr + step),
                         ctrl.acc_addr.eq(cur.acc_addr + step)]
            m.d.sync += step.eq(step + 1)
            with m.If(step + 1 == cur.count):
                m.next = "DRAIN"

        with m.State("DRAIN"):
            # Leave once no write is ahead of this edge: COMPUTE_DRAIN cycles after the
            # last issue, so the next command sees every accumulator write.
            m.d.comb += [tick["total"].eq(1), tick["compute"].eq(1)]
            with m.If(~ctrl.busy):
                m.next = "FETCH"

    def _read(self, m, regs, tick):
        res, ctrl, step = self.result, self.macro, regs.step
        cur = regs.current.args.read
        with m.State("READ"):
            last = step + 1 == cur.count
            m.d.comb += [res.valid.eq(1), res.payload.eq(ctrl.rd_data),
                         self.result_last.eq(last), tick["total"].eq(1),
                         tick["read"].eq(res.ready), tick["stall"].eq(~res.ready)]
            # The read port holds its data while rd_en is low: payload stable until ready.
            with m.If(res.ready):
                m.d.sync += step.eq(step + 1)
                with m.If(last):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += [ctrl.rd_en.eq(1), ctrl.rd_addr.eq(cur.addr + step + 1),
                                 ctrl.rd_bank.eq(cur.bank)]

    def _move(self, m, regs, tick):
        ctrl, step = self.macro, regs.step
        mv = regs.current.args.move
        with m.State("MOVE"):
            # One accumulator entry per cycle, counted as load: write entry `step` (read in
            # the previous cycle) and read the next.
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


class _Registers:
    """The sequencer's state besides its FSM: the command being executed, its progress
    (``step``, and ``beat`` within a LOAD_A entry), the CONFIG state (mode index, 0 = dense
    after reset; split; shift) and the error code."""

    def __init__(self, cfg: MacroConfig, ctrl):
        self.current = Signal(command_layout(cfg), name="current")
        self.step = Signal(range(max(cfg.weight_rows, cfg.act_depth, cfg.acc_depth,
                                     cfg.cols) + 1), name="step")
        self.beat = Signal.like(ctrl.a_beat, name="beat")
        self.mode = Signal.like(ctrl.mode, name="mode")
        self.split = Signal.like(ctrl.split, name="split")
        self.shift = Signal.like(ctrl.shift, name="shift")
        self.error = Signal(ErrorCode, name="error")
