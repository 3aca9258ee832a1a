"""Exact cycle models of the chip (``docs/chip.md``) with every stream always valid and ready.

Two models that must agree counter for counter:

- :func:`step_chip`, a plain cycle-stepped simulator: each cycle it evaluates the dispatcher,
  the three routers and every sequencer from the state at the start of the cycle, exactly as
  ``docs/chip.md`` and ``docs/isa.md`` state them, then applies the end-of-cycle updates. It is
  the reference (a loop over cycles × macros: fine up to about 1e5 cycles).
- :func:`chip_counters`, a command-level event model: one pass over the commands in dispatch
  order computes, for every macro a command reaches, its fetch cycle and the cycle it is done
  with it, from closed forms (below), with no loop over cycles. It is what the scheduler
  prices whole models with.

Closed forms (every stream always valid and ready):

- Dispatch. A command taken from ``cmd`` in cycle ``t`` is in ``H`` at ``t + 1``, and ``H``
  is taken again in the cycle it goes, so command ``i`` goes at ``d_i = max(d_{i-1} + 1,
  f_{k, j-Q} + 1 over its macros k)``, ``d_{-1} = 0``: ``f_{k, j-Q}`` is the fetch cycle of
  the command ``Q`` (``ChipConfig.queue``) places before it in macro ``k``'s queue, whose
  fetch makes the room it needs.
- Fetch. Macro ``k`` fetches a command at ``f = max(free_k, d + 1)``: its queue entry is
  readable the cycle after the write, and ``free_k`` is the cycle after the macro's previous
  command ends (``docs/isa.md``: CONFIG 1 cycle, COMPUTE ``1 + count + 2``, MOVE
  ``1 + count``).
- Weight rows. A LOAD_W's macros all wait from ``s = max(f_k + 1, pop of the previous
  LOAD_W + 1)``. The credit at ``s`` is ``c = min(c_last + bw·(s - t_last - 1), cap)`` from
  the credit ``c_last`` just after the last row (cycle ``t_last``; ``R`` at reset,
  ``t_last = -1``). While rows are wanted no byte is capped away (``cap = R + bw - 1``), so
  with ``bw < R`` row ``j`` moves at ``s + max(j, ceil((R·(j+1) - c) / bw))`` and the LOAD_W
  takes ``max(n, ceil((R·n - c) / bw) + 1)`` cycles for ``n`` rows; with ``bw >= R`` one a
  cycle. Every cycle from ``s`` to its last row that moves no row is a ``bw_stall`` cycle.
- Activation beats and result beats move one a cycle from ``s = max(f_k + 1, pop of the
  previous entry + 1)``.

Errors: a macro that fetches an illegal command shows its error from ``f + 1``; the
dispatcher's error shows in every cycle ``H`` holds the refused command, from ``d_{i-1} +
1``; OUT_OF_STEP in the cycle of the shortest macro's last beat. The chip halts at the first
such cycle (priority in one cycle: the lowest-numbered macro's error, then the dispatcher's,
then OUT_OF_STEP; as ``hw/chip.py``), or, without error, one cycle after the last macro
fetches END: ``halt = max_k(e_k) + 1`` and ``total = halt + 1``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..hw.chip_trace import chip_step, iter_plan, macro_step
from ..hw.config import ChipConfig
from ..hw.isa import CHIP_COUNTERS, STATUS_COUNTERS, ErrorCode, Opcode

__all__ = ["ChipTiming", "chip_counters", "step_chip"]

_INF = float("inf")
_MACRO_ERROR, _DISPATCH_ERROR, _OUT_OF_STEP = 0, 1, 2   # priorities within one cycle


@dataclass
class ChipTiming:
    """Outcome of a chip cycle model.

    Attributes
    ----------
    halted : bool
        The chip halts (END reached by every macro, or an error); False if the commands run
        out first.
    error : ErrorCode
    error_macro : int or None
        The macro whose error halted the chip, K for the dispatcher and OUT_OF_STEP, None
        without error.
    halt : int or None
        The cycle at whose end ``done`` is set (``total - 1``).
    counters : dict or None
        :data:`~sparsecim.hw.isa.CHIP_COUNTERS` by name, exact (not saturated); None unless
        the chip halts without error (``docs/chip.md``: counters are not compared after an
        error).
    macro_counters : list of dict or None
        Every macro's :data:`~sparsecim.hw.isa.STATUS_COUNTERS`; None as ``counters``.
    """
    halted: bool
    error: ErrorCode
    error_macro: int | None
    halt: int | None
    counters: dict | None
    macro_counters: list | None


def _outcome(chip: ChipConfig, best, ends, chip_counts, macro_counts) -> ChipTiming:
    """The :class:`ChipTiming` of a run: ``best`` the first error ``(cycle, priority, macro,
    code)`` or None, ``ends`` every macro's END fetch cycle (None if it never fetches one)."""
    if best is not None and best[0] < _INF:
        return ChipTiming(True, best[3], best[2], int(best[0]), None, None)
    if any(end is None or end == _INF for end in ends):
        return ChipTiming(False, ErrorCode.NONE, None, None, None, None)
    halt = max(ends) + 1
    counters = dict(chip_counts, total=halt + 1)
    macros = []
    for end, counts in zip(ends, macro_counts, strict=True):
        total = end + 1
        busy = counts["fetch"] + counts["load"] + counts["compute"] + counts["read"]
        macros.append({name: (total if name == "total" else total - busy if name == "stall"
                              else counts[name]) for name in STATUS_COUNTERS})
    return ChipTiming(True, ErrorCode.NONE, None, halt,
                      {name: counters[name] for name in CHIP_COUNTERS}, macros)


# Aliases of the members the event model tests once per command: a member lookup on an Enum
# class is a slow attribute access on Python 3.11.
_LOAD_W, _LOAD_A, _READ = Opcode.LOAD_W, Opcode.LOAD_A, Opcode.READ
_COMPUTE, _MOVE, _NONE = Opcode.COMPUTE, Opcode.MOVE, ErrorCode.NONE

_EVENTS = ("fetch", "load", "compute", "read", "passes", "w_rows", "a_beats")


def _same(runs) -> bool:
    """The macros of a mixed step (different patterns) still do the same thing."""
    first = runs[0]
    return all(run[:2] == first[:2] and run[3:] == first[3:] for run in runs)


class _EventModel:
    """:func:`chip_counters`'s state over its one pass (the module docstring's closed forms):
    :meth:`run` dispatches each step of the plan and hands it to one handler per kind of
    command; the routers' pops, the weight credit and the counters live here."""

    def __init__(self, chip: ChipConfig):
        K, Q = chip.macros, chip.queue
        self.K = K
        self.R, self.bw, self.cap = chip.weight_row_bytes, chip.weight_bw, chip.credit_cap
        self.free = [0] * K                            # first cycle macro k may fetch again
        # Fetch cycles of each macro's last Q commands (-1: none yet): the oldest one's fetch
        # made the room the next command needs.
        self.rings = [deque([-1] * Q, maxlen=Q) for _ in range(K)]
        self.ends: list = [None] * K
        # The macros' counters as difference arrays over the ranges, summed once at the end.
        self.diff = {name: [0] * (K + 1) for name in _EVENTS}
        self.dispatch = self.w_load = self.a_load = self.read = self.bw_stall = 0
        self.w_pop, self.a_pop, self.r_pop = -1, -1, -1    # the routers' last pops
        self.w_row, self.w_credit = -1, self.R        # last row moved; credit just after it
        self.last_go = 0                               # d_{i-1}: H loads at last_go + 1
        self.best = None                               # (cycle, priority, macro, code)

    def add(self, name: str, lo: int, hi: int, amount: int) -> None:
        row = self.diff[name]
        row[lo] += amount
        row[hi] -= amount

    def error(self, cand) -> None:
        """Keep the earliest error candidate ``(cycle, priority, macro, code)``."""
        self.best = cand if self.best is None else min(self.best, cand)

    def run(self, plan) -> None:
        """Walk ``plan`` (:func:`~sparsecim.hw.chip_trace.iter_plan`'s steps) until nothing
        after a step can run: a refused command, one never dispatched (a queue stays full)
        or dispatched after the chip has halted, or END."""
        rings, free, fetches = self.rings, self.free, self.diff["fetch"]
        for lo, span, kind, info, _ in plan:
            if kind == "refused":
                self.error((self.last_go + 1, _DISPATCH_ERROR, self.K, info))
                return
            # The command goes at d_i and macros lo..hi-1 fetch it.
            hi = lo + span
            go = max(self.last_go + 1, max([ring[0] for ring in rings[lo:hi]]) + 1)
            if go == _INF or (self.best is not None and go >= self.best[0]):
                return
            self.dispatch += 1
            self.last_go = go
            fetch = [f if f > go else go + 1 for f in free[lo:hi]]
            for ring, f in zip(rings[lo:hi], fetch, strict=True):
                ring.append(f)
            fetches[lo] += 1
            fetches[hi] -= 1
            if kind == "end":
                self.ends = fetch
                return
            if kind == "mixed":
                if not _same(info):
                    self._mixed(info, lo, fetch)
                    continue
                info = info[0]
            # One handler per command.
            op = info.opcode
            if info.error != _NONE:
                self._illegal(lo, hi, info, fetch)
            elif op == _LOAD_W:
                self._load_w(lo, hi, info, fetch)
            elif op == _LOAD_A:
                self._load_a(lo, hi, info, fetch)
            elif op == _READ:
                self._read(lo, hi, info, fetch)
            else:
                self._fixed(lo, hi, info, fetch)

    def _illegal(self, lo: int, hi: int, info, fetch: list) -> None:
        # Every macro of the range halts on it; the earliest (lowest) fetch shows first.
        first = min(fetch)
        self.error((first + 1, _MACRO_ERROR, lo + fetch.index(first), info.error))
        self.free[lo:hi] = [_INF] * (hi - lo)
        # A load or READ entry the macros never take blocks its router for good.
        if info.opcode == _LOAD_W:
            self.w_pop = self.w_row = _INF
        elif info.opcode == _LOAD_A:
            self.a_pop = _INF
        elif info.opcode == _READ:
            self.r_pop = _INF

    def _load_w(self, lo: int, hi: int, info, fetch: list) -> None:
        rows = info.count
        start = max(max(fetch) + 1, self.w_pop + 1)    # every macro of the range waits
        if self.w_pop == _INF:
            last = _INF
        else:
            R, bw, cap = self.R, self.bw, self.cap
            # Credit at the start of `start`; no byte is capped away while rows are wanted.
            credit = min(self.w_credit + bw * (start - self.w_row - 1), cap)
            if bw >= R:
                span_rows, self.w_credit = rows, cap
            else:
                span_rows = max(rows, -(-(R * rows - credit) // bw) + 1)
                self.w_credit = credit + bw * span_rows - R * rows
            last = start + span_rows - 1
            self.bw_stall += span_rows - rows
        self.w_load += rows
        self.w_row = self.w_pop = last
        self.free[lo:hi] = [last + 1] * (hi - lo)
        self.add("load", lo, hi, rows)
        self.add("w_rows", lo, hi, rows)

    def _load_a(self, lo: int, hi: int, info, fetch: list) -> None:
        self.a_pop = self._beats(lo, hi, fetch, self.a_pop, info.beats, ("load", "a_beats"))
        self.a_load += info.beats

    def _read(self, lo: int, hi: int, info, fetch: list) -> None:
        self.r_pop = self._beats(lo, hi, fetch, self.r_pop, info.count, ("read",))
        self.read += info.count

    def _beats(self, lo: int, hi: int, fetch: list, pop, beats: int, events) -> int:
        # A LOAD_A's or READ's beats move one a cycle from the cycle after the last fetch of
        # its range, once its router has popped the entry before (at ``pop``); returns the
        # last beat's cycle.
        last = max(max(fetch) + 1, pop + 1) + beats - 1
        self.free[lo:hi] = [last + 1] * (hi - lo)
        for name in events:
            self.add(name, lo, hi, beats)
        return last

    def _fixed(self, lo: int, hi: int, info, fetch: list) -> None:
        # CONFIG, COMPUTE, MOVE: a fixed number of cycles after each macro's fetch.
        busy = info.busy + 1
        self.free[lo:hi] = [f + busy for f in fetch]
        if info.opcode == _COMPUTE:
            self.add("compute", lo, hi, info.busy)
            self.add("passes", lo, hi, info.count)
        elif info.opcode == _MOVE:
            self.add("load", lo, hi, info.busy)

    def _mixed(self, runs, lo: int, fetch: list) -> None:
        """A step whose macros do different things (their patterns differ): a LOAD_A of
        different lengths (OUT_OF_STEP), or a COMPUTE whose part exists in some patterns
        only (the others halt)."""
        span = len(runs)
        if runs[0].opcode == _LOAD_A:
            # LOAD_A's checks do not depend on the pattern: all run it, with different
            # lengths. The beat that ends the shortest one raises OUT_OF_STEP, and the
            # activation router never pops this entry.
            start = max(max(fetch), self.a_pop) + 1   # after the previous LOAD_A's last beat
            self.free[lo:lo + span] = [_INF] * span
            short = min(run.beats for run in runs)
            self.error((start + short - 1, _OUT_OF_STEP, self.K, ErrorCode.OUT_OF_STEP))
            self.a_pop = _INF
            return
        for k, (run, f) in enumerate(zip(runs, fetch, strict=True)):
            if run.error != _NONE:
                self.error((f + 1, _MACRO_ERROR, lo + k, run.error))
                self.free[lo + k] = _INF
                continue
            self.free[lo + k] = f + 1 + run.busy
            self.add("compute", lo + k, lo + k + 1, run.busy)
            self.add("passes", lo + k, lo + k + 1, run.count)

    def macro_counts(self) -> list[dict]:
        """Every macro's event counts (the difference arrays summed)."""
        per = [{} for _ in range(self.K)]
        for name, row in self.diff.items():
            value = 0
            for k in range(self.K):
                value += row[k]
                per[k][name] = value
        return per


def chip_counters(chip: ChipConfig, commands) -> ChipTiming:
    """The command-level event model (module docstring) of chip command words ``commands``.

    Never looks at data beats: the timing with every stream always valid does not depend on
    them. Work per command is a few list operations over its span; the macros' counters are
    kept as difference arrays over the ranges and summed once at the end.
    """
    model = _EventModel(chip)
    model.run(iter_plan(chip, commands))
    counts = {"dispatch": model.dispatch, "w_load": model.w_load, "a_load": model.a_load,
              "read": model.read, "bw_stall": model.bw_stall}
    return _outcome(chip, model.best, model.ends, counts, model.macro_counts())


_STREAMS = {"LOAD_W": "w", "LOAD_A": "a", "READ": "r"}     # a macro's waiting state: router
_STREAM_EVENTS = {"w": ("load", "w_rows"), "a": ("load", "a_beats"), "r": ("read",)}


class _Macro:
    """One sequencer's state in the cycle-stepped simulator."""

    def __init__(self):
        self.queue: deque = deque()
        self.state = "FETCH"
        self.pattern = (1, 1)
        self.step = 0
        self.need = 0
        self.category = ""      # for BUSY: "compute" or "load"
        self.issue = 0          # COMPUTE passes still to issue
        self.error = ErrorCode.NONE
        self.end = None         # cycle it fetched END
        self.counts = dict.fromkeys(STATUS_COUNTERS, 0)

    def tick(self, *names):
        for name in ("total", *names):
            self.counts[name] += 1

    def last_beat(self) -> bool:
        return self.step + 1 == self.need

    def advance(self, cfg, t: int, k: int, moved: dict) -> None:
        """The end of cycle ``t`` for macro ``k``: ``moved[name]`` is the range router
        ``name`` moved a beat to in the cycle (None if none)."""
        if self.state == "HALT":
            return
        if self.state == "FETCH":
            self._fetch(cfg, t)
        elif self.state == "BUSY":
            self.tick(self.category, *(("passes",) if self.step < self.issue else ()))
            self._stepped()
        else:
            # Waiting on a stream: served if its router moved a beat to this macro.
            name = _STREAMS[self.state]
            served = moved[name]
            if served is not None and served[0] <= k < served[1]:
                self.tick(*_STREAM_EVENTS[name])
                self._stepped()
            else:
                self.tick("stall")

    def _stepped(self) -> None:
        self.step += 1
        if self.step == self.need:
            self.state = "FETCH"

    def _fetch(self, cfg, t: int) -> None:
        if not self.queue:
            self.tick("stall")
            return
        self.tick("fetch")
        run = macro_step(cfg, self.queue.popleft(), self.pattern)
        if run.error != ErrorCode.NONE:
            self.error, self.state = run.error, "HALT"
        elif run.opcode == Opcode.END:
            self.state, self.end = "HALT", t
        elif run.opcode == Opcode.CONFIG:
            self.pattern = run.pattern
        elif run.opcode in (Opcode.LOAD_W, Opcode.LOAD_A, Opcode.READ):
            self.state, self.step, self.need = run.opcode.name, 0, run.busy
        else:
            self.state, self.step, self.need = "BUSY", 0, run.busy
            self.category = "compute" if run.opcode == Opcode.COMPUTE else "load"
            self.issue = run.count if run.opcode == Opcode.COMPUTE else 0


class _Stepper:
    """The chip's state in :func:`step_chip`: :meth:`cycle` evaluates one cycle from the
    state at its start, then applies the end-of-cycle updates."""

    def __init__(self, chip: ChipConfig, commands):
        self.chip = chip
        self.words = [int(word) for word in commands]
        self.macros = [_Macro() for _ in range(chip.macros)]
        self.hold = None                   # the word in H
        self.halted = False                # END taken: no further command
        self.taken = 0                     # commands taken from cmd
        self.routers = {"w": deque(), "a": deque(), "r": deque()}   # (lo, hi) ranges
        self.credit = chip.weight_row_bytes
        self.count = dict.fromkeys(CHIP_COUNTERS, 0)

    def _range(self, info) -> tuple[int, int]:
        return (0, self.chip.macros) if info.end else (info.target, info.target + info.span)

    def _dispatcher(self):
        # ``(error, go, info)`` of the word in H: its error, whether it goes this cycle.
        if self.hold is None:
            return ErrorCode.NONE, False, None
        info = chip_step(self.chip, self.hold)
        if info.error != ErrorCode.NONE:
            return info.error, False, info
        lo, hi = self._range(info)
        return ErrorCode.NONE, all(len(self.macros[k].queue) < self.chip.queue
                                   for k in range(lo, hi)), info

    def _routers(self):
        # ``(moved, popped)`` by router: the range its head entry moves a beat to this cycle
        # (None if none) and whether that beat is the entry's last.
        macros = self.macros
        moved, popped = {}, {}
        for name, state in (("w", "LOAD_W"), ("a", "LOAD_A"), ("r", "READ")):
            head = self.routers[name][0] if self.routers[name] else None
            waiting = head is not None and all(macros[k].state == state for k in range(*head))
            allowed = self.credit >= self.chip.weight_row_bytes if name == "w" else True
            moved[name] = head if waiting and allowed else None
            if name == "w" and waiting and not allowed:
                self.count["bw_stall"] += 1
            popped[name] = moved[name] is not None and all(
                macros[k].last_beat() for k in range(*head))
        return moved, popped

    def _error(self, disp_error, out_of_step):
        # ``(error, source)`` shown this cycle, by priority: the lowest macro's, then the
        # dispatcher's, then OUT_OF_STEP.
        for k, mac in enumerate(self.macros):
            if mac.error != ErrorCode.NONE:
                return mac.error, k
        if disp_error != ErrorCode.NONE:
            return disp_error, self.chip.macros
        if out_of_step:
            return ErrorCode.OUT_OF_STEP, self.chip.macros
        return ErrorCode.NONE, None

    def _send(self, info) -> None:
        # The end of a cycle the word in H goes: into its macros' queues and, for a load
        # or READ, its range into the router's queue.
        lo, hi = self._range(info)
        for k in range(lo, hi):
            self.macros[k].queue.append(info.word)
        opcode = macro_step(self.chip.macro, info.word, (1, 1)).opcode
        router = {Opcode.LOAD_W: "w", Opcode.LOAD_A: "a", Opcode.READ: "r"}.get(opcode)
        if router is not None and not info.end:
            self.routers[router].append((lo, hi))
        self.hold = None

    def _idle(self) -> bool:
        # Nothing left to do and no END: the commands ran out.
        macros = self.macros
        return (self.hold is None and self.taken == len(self.words)
                and not any(self.routers.values())
                and all(mac.state in ("FETCH", "HALT") and not mac.queue for mac in macros)
                and any(mac.state == "FETCH" for mac in macros)
                and all(mac.error == ErrorCode.NONE for mac in macros))

    def cycle(self, t: int) -> ChipTiming | None:
        """Cycle ``t``; the outcome once the chip halts or goes idle, else None."""
        chip, macros, count = self.chip, self.macros, self.count
        # --- Combinational: everything from the state at the start of cycle t. ---
        disp_error, go, info = self._dispatcher()
        take = not self.halted and (self.hold is None or go) and self.taken < len(self.words)
        moved, popped = self._routers()
        out_of_step = moved["a"] is not None and not popped["a"] and any(
            macros[k].last_beat() for k in range(*moved["a"]))
        error, source = self._error(disp_error, out_of_step)
        all_done = all(mac.state == "HALT" for mac in macros)
        count["total"] += 1
        count["dispatch"] += go
        for name, counter in (("w", "w_load"), ("a", "a_load"), ("r", "read")):
            count[counter] += moved[name] is not None

        # --- End of cycle t: the sequencers, then the dispatcher and the routers. ---
        for k, mac in enumerate(macros):
            mac.advance(chip.macro, t, k, moved)
        if go:
            self._send(info)
        if take:
            self.hold = self.words[self.taken]
            self.taken += 1
            self.halted = chip_step(chip, self.hold).end
        R = chip.weight_row_bytes
        self.credit = min(self.credit - (R if moved["w"] is not None else 0) + chip.weight_bw,
                          chip.credit_cap)
        for name in self.routers:
            if popped[name]:
                self.routers[name].popleft()

        if error != ErrorCode.NONE:
            return ChipTiming(True, error, source, t, None, None)
        if all_done:
            counters = {name: count[name] for name in CHIP_COUNTERS}
            return ChipTiming(True, ErrorCode.NONE, None, t, counters,
                              [dict(mac.counts) for mac in macros])
        if self._idle():
            return ChipTiming(False, ErrorCode.NONE, None, None, None, None)
        return None


def step_chip(chip: ChipConfig, commands, *, max_cycles: int = 10 ** 6) -> ChipTiming:
    """The cycle-stepped reference simulator of ``docs/chip.md`` (module docstring).

    Raises
    ------
    ValueError
        If the chip runs ``max_cycles`` cycles without halting or going idle.
    """
    stepper = _Stepper(chip, commands)
    for t in range(max_cycles):
        outcome = stepper.cycle(t)
        if outcome is not None:
            return outcome
    raise ValueError(f"the chip did not halt within max_cycles={max_cycles} cycles")
