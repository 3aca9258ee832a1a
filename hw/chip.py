"""The chip: K macros under one command stream (``docs/chip.md``, ISA 6)."""

from __future__ import annotations

import functools

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ChipConfig
from .isa import (
    CHIP_COUNTERS,
    ErrorCode,
    Opcode,
    act_beat_layout,
    chip_command_layout,
    chip_counters_layout,
    chip_result_layout,
    command_layout,
    counters_layout,
    result_layout,
    weight_row_layout,
)
from .macro import Macro
from .sequencer import Sequencer, status_signature

__all__ = ["chip_status_signature", "range_layout", "Tile", "Dispatcher", "DataRouter",
           "ResultRouter", "Chip"]


def chip_status_signature(chip: ChipConfig) -> wiring.Signature:
    """Signature of the chip's status port (all members registered).

    Members
    -------
    done : Out(1)
        High from the cycle after the chip halts (every macro done after END, or an error)
        until reset.
    error : Out(ErrorCode)
        ``NONE``, or the error that halted the chip, from the same cycle as ``done``.
    error_macro : Out(range(K + 1))
        The macro whose error halted the chip, or K for the dispatcher and the routers.
    counters : Out(chip_counters_layout(chip))
        :data:`~sparsecim.hw.isa.CHIP_COUNTERS`, saturating, ticking every cycle before
        ``done`` is high.
    macros : Out(ArrayLayout(counters_layout(macro), K))
        Every macro's status counters (each stops at that macro's halt).
    """
    return wiring.Signature({
        "done": Out(1),
        "error": Out(ErrorCode),
        "error_macro": Out(range(chip.macros + 1)),
        "counters": Out(chip_counters_layout(chip)),
        "macros": Out(data.ArrayLayout(counters_layout(chip.macro), chip.macros)),
    })


@functools.cache
def range_layout(chip: ChipConfig) -> data.StructLayout:
    """The macros a command addresses, ``target .. target + span - 1``: the two fields of
    :func:`~sparsecim.hw.isa.chip_command_layout`, as the routers queue them."""
    layout = chip_command_layout(chip)
    return data.StructLayout({"target": layout["target"].shape, "span": layout["span"].shape})


def _range_queue(m, chip: ChipConfig, push, value):
    """A ``chip.load_queue``-deep FIFO of macro ranges, written with ``value`` when ``push``;
    returns the FIFO and the mask of its head's macros (``ranges.r_en`` is left to the caller)."""
    layout = range_layout(chip)
    m.submodules.ranges = ranges = fifo.SyncFIFO(width=layout.size, depth=chip.load_queue)
    m.d.comb += [ranges.w_en.eq(push), ranges.w_data.eq(value)]
    return ranges, _in_range(m, chip, layout(ranges.r_data), "mask")


def _in_range(m: Module, chip: ChipConfig, rng, name: str) -> Signal:
    """A K-bit signal: bit k high iff macro k lies in ``rng`` (a :func:`range_layout` view)."""
    mask = Signal(chip.macros, name=name)
    m.d.comb += mask.eq(Cat((rng.target <= k) & (k < rng.target + rng.span)
                            for k in range(chip.macros)))
    return mask


def _all(mask, flags) -> Signal:
    """Every macro of ``mask`` has its bit of ``flags`` high (true for an empty mask)."""
    return (flags | ~mask).all()


class Tile(wiring.Component):
    """One macro: its command queue (``SyncFIFO`` of depth ``chip.queue``), the unchanged
    :class:`~sparsecim.hw.sequencer.Sequencer` and :class:`~sparsecim.hw.macro.Macro`.

    Members
    -------
    push : In(1)
        Write ``word`` into the queue at the end of this cycle (ignored without ``room``);
        the sequencer can fetch it from the next cycle.
    word : In(command_layout(macro))
        The macro command word.
    room : Out(1)
        The queue is not full (at the start of the cycle: a fetch in the same cycle does not
        make room).
    data, result, status, data_w, data_last, result_last
        The sequencer's ports (``docs/isa.md``).
    """

    def __init__(self, *, chip: ChipConfig):
        self.chip = chip
        cfg = chip.macro
        super().__init__({
            "push": In(1), "word": In(command_layout(cfg)), "room": Out(1),
            "data": In(stream.Signature(cfg.data_bits)),
            "result": Out(stream.Signature(result_layout(cfg))),
            "status": Out(status_signature(cfg)),
            "data_w": Out(1), "data_last": Out(1), "result_last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = command_layout(self.chip.macro)
        m.submodules.queue = queue = fifo.SyncFIFO(width=layout.size, depth=self.chip.queue)
        m.submodules.sequencer = seq = Sequencer(config=self.chip.macro)
        m.submodules.macro = macro = Macro(config=self.chip.macro)
        wiring.connect(m, seq.macro, macro.ctrl)
        m.d.comb += [
            queue.w_en.eq(self.push), queue.w_data.eq(self.word), self.room.eq(queue.w_rdy),
            seq.cmd.valid.eq(queue.r_rdy), seq.cmd.payload.eq(queue.r_data),
            queue.r_en.eq(seq.cmd.ready),
            self.data_w.eq(seq.data_w), self.data_last.eq(seq.data_last),
            self.result_last.eq(seq.result_last),
        ]
        wiring.connect(m, wiring.flipped(self.data), seq.data)
        wiring.connect(m, seq.result, wiring.flipped(self.result))
        wiring.connect(m, seq.status, wiring.flipped(self.status))
        return m


class Dispatcher(wiring.Component):
    """The hold register between ``cmd`` and the K command queues (``docs/chip.md``).

    A ``cmd`` handshake in cycle ``t`` loads the hold register ``H`` for ``t + 1``;
    ``cmd.ready = ~halted & ~stop & (~H.valid | go)``. In a cycle where ``H`` is valid:

    - END goes when every queue has room and writes all K queues (``halted`` is set from
      the cycle after END is taken from ``cmd``);
    - another command with ``span == 0`` (ZERO_COUNT) or ``target + span > K``
      (ADDRESS_RANGE) raises ``error`` in that cycle, whatever the queues' room, writes
      nothing and stays in ``H``;
    - another command goes when the queues of its range have room, writing them, and the
      weight (LOAD_W), activation (LOAD_A) or result (READ) router's range queue.

    Members
    -------
    cmd : In(stream.Signature(chip_command_layout(chip)))
    room : In(K)
        Queue k is not full (:attr:`Tile.room`).
    stop : In(1)
        The chip has halted: take no further command.
    push : Out(K)
        Write ``word`` into queue k at the end of this cycle.
    word : Out(command_layout(macro))
    push_w, push_a, push_r : Out(1)
        Write ``range`` into the weight, activation or result router's queue (same edge).
    range : Out(range_layout(chip))
    went : Out(1)
        ``H`` goes this cycle (the ``dispatch`` counter).
    error : Out(ErrorCode)
        The dispatcher's error in this cycle (combinational), ``NONE`` if none.
    """

    def __init__(self, *, chip: ChipConfig):
        self.chip = chip
        super().__init__({
            "cmd": In(stream.Signature(chip_command_layout(chip))),
            "room": In(chip.macros), "stop": In(1),
            "push": Out(chip.macros), "word": Out(command_layout(chip.macro)),
            "push_w": Out(1), "push_a": Out(1), "push_r": Out(1),
            "range": Out(range_layout(chip)), "went": Out(1), "error": Out(ErrorCode),
        })

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        held = Signal(chip_command_layout(chip))
        valid = Signal()
        halted = Signal()
        opcode = held.cmd.opcode
        is_end = opcode == Opcode.END
        m.d.comb += [self.word.eq(held.cmd), self.range.target.eq(held.target),
                     self.range.span.eq(held.span)]
        mask = _in_range(m, chip, self.range, "dispatch_mask")
        mask = Mux(is_end, Const(2 ** chip.macros - 1, chip.macros), mask)
        with m.If(valid & ~is_end):
            with m.If(held.span == 0):
                m.d.comb += self.error.eq(ErrorCode.ZERO_COUNT)
            with m.Elif(held.target + held.span > chip.macros):
                m.d.comb += self.error.eq(ErrorCode.ADDRESS_RANGE)
        go = Signal()
        m.d.comb += [
            go.eq(valid & (self.error == ErrorCode.NONE) & _all(mask, self.room)),
            self.went.eq(go),
            self.push.eq(Mux(go, mask, 0)),
            self.push_w.eq(go & (opcode == Opcode.LOAD_W)),
            self.push_a.eq(go & (opcode == Opcode.LOAD_A)),
            self.push_r.eq(go & (opcode == Opcode.READ)),
            self.cmd.ready.eq(~halted & ~self.stop & (~valid | go)),
        ]
        with m.If(go):
            m.d.sync += valid.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [held.eq(self.cmd.payload), valid.eq(1)]
            # Taking END (not its going) halts the dispatcher: no word after END enters H.
            with m.If(self.cmd.payload.cmd.opcode == Opcode.END):
                m.d.sync += halted.eq(1)
        return m


class DataRouter(wiring.Component):
    """The weight router (``weights=True``) or the activation router (``docs/chip.md``).

    A queue of ranges (``chip.load_queue`` deep, written by the dispatcher, readable from the
    next cycle) whose head is served. A beat moves in a cycle iff every macro of the head's
    range is waiting (``want``), ``src.valid``, and, for weights, ``credit >= R`` (``R`` =
    ``weight_row_bytes``); then ``valid`` is high for exactly those macros and each takes
    ``src.payload``. The head is popped at the end of a cycle where a beat moves and the
    macros' ``last`` are all high.

    Members
    -------
    push : In(1)
        Append ``range`` at the end of this cycle.
    range : In(range_layout(chip))
    src : In(stream.Signature(weight_row_layout or act_beat_layout))
        ``ready`` (independent of ``valid``) when the head's macros all wait (and the credit
        is enough).
    want : In(K)
        Macro k waits for a beat of this router (``data.ready`` and ``data_w`` or its
        complement).
    last : In(K)
        Macro k's ``data_last``.
    valid : Out(K)
        Macro k takes ``src.payload`` this cycle.
    moved : Out(1)
        A beat moves (``w_load`` / ``a_load``).
    bw_stall : Out(1)
        Weights: all the head's macros wait and a row is offered but the credit is short.
    out_of_step : Out(1)
        Activations: a beat moves with some but not all of the range's ``last`` high.
    """

    def __init__(self, *, chip: ChipConfig, weights: bool):
        self.chip = chip
        self.weights = weights
        layout = weight_row_layout(chip.macro) if weights else act_beat_layout(chip.macro)
        super().__init__({
            "push": In(1), "range": In(range_layout(chip)),
            "src": In(stream.Signature(layout)),
            "want": In(chip.macros), "last": In(chip.macros),
            "valid": Out(chip.macros), "moved": Out(1), "bw_stall": Out(1),
            "out_of_step": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        ranges, mask = _range_queue(m, chip, self.push, self.range)
        waiting = ranges.r_rdy & _all(mask, self.want)
        allowed = Signal()
        if self.weights:
            row = chip.weight_row_bytes
            # Capped at a row plus one cycle's bandwidth, not at a row: no byte is dropped
            # while rows are wanted (ChipConfig.credit_cap).
            cap = chip.credit_cap
            credit = Signal(range(cap + 1), init=row)
            m.d.comb += [allowed.eq(credit >= row),
                         self.bw_stall.eq(waiting & self.src.valid & ~allowed)]
            spent = Mux(self.moved, row, 0)
            refill = credit - spent + chip.weight_bw
            m.d.sync += credit.eq(Mux(refill > cap, cap, refill))
        else:
            m.d.comb += allowed.eq(1)
        m.d.comb += [
            self.src.ready.eq(waiting & allowed),
            self.moved.eq(self.src.ready & self.src.valid),
            self.valid.eq(Mux(self.moved, mask, 0)),
            ranges.r_en.eq(self.moved & _all(mask, self.last)),
        ]
        if not self.weights:
            m.d.comb += self.out_of_step.eq(self.moved & (self.last & mask).any()
                                            & ~_all(mask, self.last))
        return m


class ResultRouter(wiring.Component):
    """The result router: READ beats of the head's range, summed lane by lane.

    A beat moves iff every macro of the head's range offers one (``valid``) and
    ``result.ready``; ``result.payload`` is the lane-wise sum of their payloads (sign-extended
    to ``chip.result_bits_per_lane``) and ``result.valid`` is high whenever they all offer
    (combinational from the macros' registered ``valid``). Popped when a beat moves with the
    range's ``last`` all high.

    Members
    -------
    push : In(1)
        Append ``range`` at the end of this cycle.
    range : In(range_layout(chip))
    valid, last : In(K)
        Macro k's ``result.valid`` and ``result_last``.
    payloads : In(ArrayLayout(result_layout(macro), K))
        Macro k's ``result.payload``.
    ready : Out(K)
        Macro k's ``result.ready``: high for the range's macros when a beat moves.
    result : Out(stream.Signature(chip_result_layout(chip)))
    moved : Out(1)
        A beat moves (``read``).
    """

    def __init__(self, *, chip: ChipConfig):
        self.chip = chip
        super().__init__({
            "push": In(1), "range": In(range_layout(chip)),
            "valid": In(chip.macros), "last": In(chip.macros),
            "payloads": In(data.ArrayLayout(result_layout(chip.macro), chip.macros)),
            "ready": Out(chip.macros),
            "result": Out(stream.Signature(chip_result_layout(chip))),
            "moved": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        ranges, mask = _range_queue(m, chip, self.push, self.range)
        lane = signed(chip.result_bits_per_lane)
        for col in range(chip.macro.cols):
            terms = [Mux(mask[k], self.payloads[k][col], 0).as_signed()
                     for k in range(chip.macros)]
            # A balanced adder tree: depth ceil(log2 K) rather than K.
            while len(terms) > 1:
                terms = [a + b for a, b in zip(terms[::2], terms[1::2], strict=False)] + (
                    [terms[-1]] if len(terms) % 2 else [])
            total = Signal(lane, name=f"sum{col}")
            m.d.comb += [total.eq(terms[0]), self.result.payload[col].eq(total)]
        m.d.comb += [
            self.result.valid.eq(ranges.r_rdy & _all(mask, self.valid)),
            self.moved.eq(self.result.valid & self.result.ready),
            self.ready.eq(Mux(self.moved, mask, 0)),
            ranges.r_en.eq(self.moved & _all(mask, self.last)),
        ]
        return m


class Chip(wiring.Component):
    """K macros under one command stream: the timing contract is ``docs/chip.md``.

    Clocked by the implicit ``sync`` domain. A ``cmd`` word taken in cycle ``t`` sits in the
    dispatcher's hold register at ``t + 1``, is written into the addressed macros' queues at
    the end of the cycle it goes, and is fetched by an idle macro at ``t + 2`` at the earliest.
    Loads are served in command order by the weight router (with the off-chip bandwidth
    credit) and the activation router (broadcast); READ beats of a range are summed by the
    result router.

    Parameters
    ----------
    chip : ChipConfig

    Members
    -------
    cmd : In(stream.Signature(chip_command_layout(chip)))
        Chip command words; ``ready`` while the hold register is empty or goes, until the
        END goes or the chip halts.
    weights : In(stream.Signature(weight_row_layout(macro)))
        Rows of the LOAD_W commands in command order; ``ready`` when all macros of the head
        LOAD_W wait and the credit allows a row.
    acts : In(stream.Signature(act_beat_layout(macro)))
        Beats of the LOAD_A commands in command order, broadcast to their range.
    result : Out(stream.Signature(chip_result_layout(chip)))
        READ beats in command order, summed over each READ's range; ``valid`` and payload
        hold until ``ready``.
    status : Out(chip_status_signature(chip))
        ``done``, ``error``, ``error_macro``, the chip counters and every macro's counters,
        all registered.
    """

    def __init__(self, *, chip: ChipConfig):
        if not isinstance(chip, ChipConfig):
            raise TypeError(f"chip must be a ChipConfig, not {chip!r}")
        self.chip = chip
        super().__init__({
            "cmd": In(stream.Signature(chip_command_layout(chip))),
            "weights": In(stream.Signature(weight_row_layout(chip.macro))),
            "acts": In(stream.Signature(act_beat_layout(chip.macro))),
            "result": Out(stream.Signature(chip_result_layout(chip))),
            "status": Out(chip_status_signature(chip)),
        })

    def elaborate(self, platform):
        m = Module()
        chip = self.chip
        k_all = range(chip.macros)
        m.submodules.dispatcher = disp = Dispatcher(chip=chip)
        m.submodules.weight_router = wr = DataRouter(chip=chip, weights=True)
        m.submodules.act_router = ar = DataRouter(chip=chip, weights=False)
        m.submodules.result_router = rr = ResultRouter(chip=chip)
        tiles = [Tile(chip=chip) for _ in k_all]
        for k, tile in enumerate(tiles):
            m.submodules[f"tile{k}"] = tile
        wiring.connect(m, wiring.flipped(self.cmd), disp.cmd)
        wiring.connect(m, wiring.flipped(self.weights), wr.src)
        wiring.connect(m, wiring.flipped(self.acts), ar.src)
        wiring.connect(m, rr.result, wiring.flipped(self.result))
        for router, push in ((wr, disp.push_w), (ar, disp.push_a), (rr, disp.push_r)):
            m.d.comb += [router.push.eq(push), router.range.eq(disp.range)]
        m.d.comb += [
            disp.room.eq(Cat(t.room for t in tiles)), disp.stop.eq(self.status.done),
            wr.want.eq(Cat(t.data.ready & t.data_w for t in tiles)),
            ar.want.eq(Cat(t.data.ready & ~t.data_w for t in tiles)),
            wr.last.eq(Cat(t.data_last for t in tiles)),
            ar.last.eq(Cat(t.data_last for t in tiles)),
            rr.valid.eq(Cat(t.result.valid for t in tiles)),
            rr.last.eq(Cat(t.result_last for t in tiles)),
        ]
        for k, tile in enumerate(tiles):
            m.d.comb += [
                tile.push.eq(disp.push[k]), tile.word.eq(disp.word),
                tile.data.valid.eq(wr.valid[k] | ar.valid[k]),
                # Activation lanes fill the low bits of a data beat (act_beat_layout).
                tile.data.payload.eq(Mux(tile.data_w, wr.src.payload.as_value(),
                                         ar.src.payload.as_value())),
                tile.result.ready.eq(rr.ready[k]),
                rr.payloads[k].eq(tile.result.payload),
                self.status.macros[k].eq(tile.status.counters),
            ]
        self._halt(m, tiles, disp, ar)
        ticks = {"total": 1, "dispatch": disp.went, "w_load": wr.moved, "a_load": ar.moved,
                 "read": rr.moved, "bw_stall": wr.bw_stall}
        saturated = 2 ** chip.macro.counter_bits - 1
        for name in CHIP_COUNTERS:
            counter = self.status.counters[name]
            with m.If(~self.status.done & ticks[name] & (counter != saturated)):
                m.d.sync += counter.eq(counter + 1)
        return m

    def _halt(self, m: Module, tiles, disp: Dispatcher, ar: DataRouter) -> None:
        """``done``, ``error`` and ``error_macro``: set at the end of the first cycle in which
        every macro is done or an error is seen. Priority: the lowest-numbered macro's error,
        then the dispatcher's, then OUT_OF_STEP."""
        status = self.status
        chip = self.chip
        error = Signal(ErrorCode)
        source = Signal(range(chip.macros + 1))
        with m.If(disp.error != ErrorCode.NONE):
            m.d.comb += [error.eq(disp.error), source.eq(chip.macros)]
        with m.Elif(ar.out_of_step):
            m.d.comb += [error.eq(ErrorCode.OUT_OF_STEP), source.eq(chip.macros)]
        # Later assignments win in Amaranth: the loop runs from the highest macro down so
        # that the lowest-numbered erring macro is the one left standing.
        for k in reversed(range(chip.macros)):
            with m.If(tiles[k].status.error != ErrorCode.NONE):
                m.d.comb += [error.eq(tiles[k].status.error), source.eq(k)]
        all_done = Cat(t.status.done for t in tiles).all()
        with m.If(~status.done & (all_done | (error != ErrorCode.NONE))):
            m.d.sync += [status.done.eq(1), status.error.eq(error),
                         status.error_macro.eq(source)]
