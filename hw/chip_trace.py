"""The chip trace format: chip command words with the beats of their loads (``docs/chip.md``).

A chip trace is a program for a :class:`~sparsecim.hw.config.ChipConfig`: every step is a chip
command word (:func:`~sparsecim.hw.isa.chip_command_layout`: a macro command word, ``target``
and ``span``) and the beats it carries, weight rows (``weight_row_layout``) for a LOAD_W, to
the weight port, or activation beats (``act_beat_layout``) for a LOAD_A, to the activation
port. The file is text, as :mod:`sparsecim.hw.trace`'s (whose parser and beat storage it
shares)::

    sparsecim-chip-trace 1
    isa 6
    chip {"macro": {...}, "macros": 4, ...}
    meta {"workload": "gemm", ...}
    c 00000000000019
    d 00ff7f80...

``c`` lines are chip command words, ``d`` lines the beats of the command before them, in
fixed-width lowercase hex (the width of the port the beats go to). ``#`` starts a comment.

Well-formed (:meth:`ChipTrace.validate`): every word fits its stream and layout, and every
step up to the chip's END (or a command the dispatcher refuses, after which nothing is taken)
carries exactly the beats its macros take: ``count`` rows for a legal LOAD_W; ``count ×
act_beats`` of the addressed macros' current pattern for a legal LOAD_A, where each macro's
pattern follows the legal CONFIGs sent to it in program order (if the macros disagree, the
chip halts with OUT_OF_STEP after the shortest: the step carries that many); none for any
other command. Illegal commands are well-formed: the chip halts on them with an error status.
:func:`plan_chip` is that walk, shared by the validation and the chip models.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from amaranth.hdl import Shape

from .config import ChipConfig
from .isa import (
    COMPUTE_DRAIN,
    ISA_VERSION,
    Command,
    DecodeError,
    ErrorCode,
    Opcode,
    act_beat_layout,
    beat_bytes,
    check,
    check_chip,
    chip_command_layout,
    command_layout,
    data_beats,
    decode,
    decode_chip,
    disassemble,
    encode_chip,
    part_fits,
    pattern_of,
    weight_row_layout,
    words_to_bytes,
)
from .trace import (
    BeatArray,
    Step,
    TraceFile,
    TraceFormatError,
    default_where,
    dump_beats,
    read_header,
    read_steps,
    text_chunks,
)

__all__ = ["CHIP_FORMAT_VERSION", "ChipTrace", "MacroStep", "ChipStep", "ChipPlan",
           "macro_step", "chip_step", "plan_chip", "iter_plan"]

CHIP_FORMAT_VERSION = 1
_MAGIC = "sparsecim-chip-trace"


class MacroStep(NamedTuple):
    """What one macro does with one command word while ``pattern`` is current."""
    opcode: Opcode | None   # None for an undefined opcode
    error: ErrorCode        # NONE, or the error the macro halts with at its fetch
    pattern: tuple          # the pattern after the command (CONFIG changes it)
    beats: int              # data beats it takes (LOAD_W rows, LOAD_A beats)
    busy: int               # cycles after the fetch cycle with every stream ready
    count: int              # the command's count (passes, rows, entries, result beats)


@functools.lru_cache(maxsize=1 << 16)
def macro_step(cfg, word: int, pattern: tuple) -> MacroStep:
    """:class:`MacroStep` of macro command ``word`` run by a macro of ``cfg`` in ``pattern``:
    the checks of :func:`~sparsecim.hw.isa.check` and COMPUTE's part check, and the cycles of
    ``docs/isa.md``. Cached: a program repeats few words."""
    try:
        cmd = decode(cfg, word)
    except DecodeError as exc:
        return MacroStep(None, exc.code, pattern, 0, 0, 0)
    error = check(cfg, cmd)
    if (error == ErrorCode.NONE and cmd.opcode == Opcode.COMPUTE
            and not part_fits(cfg, cmd.part, pattern)):
        error = ErrorCode.ADDRESS_RANGE
    if error != ErrorCode.NONE:
        return MacroStep(cmd.opcode, error, pattern, 0, 0, 0)
    op = cmd.opcode
    if op == Opcode.CONFIG:
        return MacroStep(op, error, tuple(pattern_of(cfg, cmd)), 0, 0, 0)
    if op == Opcode.END:
        return MacroStep(op, error, pattern, 0, 0, 0)
    beats = data_beats(cfg, cmd, pattern)
    busy = {Opcode.COMPUTE: cmd.count + COMPUTE_DRAIN, Opcode.MOVE: cmd.count,
            Opcode.READ: cmd.count}.get(op, beats)
    return MacroStep(op, error, pattern, beats, busy, cmd.count)


def _opcode_value(cfg, macro_word: int) -> int:
    """The opcode field of a macro command word, as a number (also an undefined one)."""
    return (macro_word >> command_layout(cfg)["opcode"].offset) & (
        2 ** Shape.cast(Opcode).width - 1)


class ChipStep(NamedTuple):
    """The dispatcher's view of a chip command word."""
    target: int
    span: int
    word: int               # the macro command word
    end: bool               # END: goes to every macro
    error: ErrorCode        # the dispatcher's error (check_chip), NONE if it goes


@functools.cache
def _chip_fields(chip: ChipConfig) -> tuple:
    """``(size, (offset, mask) of cmd, target, span, and of the macro word's opcode)``, read
    once from :func:`~sparsecim.hw.isa.chip_command_layout` (amaranth's layouts compute a
    field's width on every access)."""
    layout = chip_command_layout(chip)

    def field_of(field):
        return field.offset, 2 ** Shape.cast(field.shape).width - 1

    return (layout.size, field_of(layout["cmd"]), field_of(layout["target"]),
            field_of(layout["span"]), field_of(command_layout(chip.macro)["opcode"]))


@functools.lru_cache(maxsize=1 << 12)
def _dispatch_error(chip: ChipConfig, target: int, span: int, end: bool) -> ErrorCode:
    # check_chip reads the macro word only to see whether it is END.
    opcode = Opcode.END if end else Opcode.CONFIG
    return check_chip(chip, target, span, opcode.value << _chip_fields(chip)[4][0])


@functools.lru_cache(maxsize=1 << 16)
def chip_step(chip: ChipConfig, word: int) -> ChipStep:
    """:class:`ChipStep` of chip command ``word`` (cached), as
    :func:`~sparsecim.hw.isa.decode_chip` and :func:`~sparsecim.hw.isa.check_chip` give it.
    Raises ``ValueError`` for a word that is negative or wider than the layout."""
    size, (cmd_at, cmd_mask), (target_at, target_mask), (span_at, span_mask), (op_at, op_mask) \
        = _chip_fields(chip)
    if not isinstance(word, (int, np.integer)) or not 0 <= word < 2 ** size:
        decode_chip(chip, word)         # its one-line error
    word = int(word)
    macro_word = (word >> cmd_at) & cmd_mask
    target, span = (word >> target_at) & target_mask, (word >> span_at) & span_mask
    end = (macro_word >> op_at) & op_mask == Opcode.END.value
    return ChipStep(target, span, macro_word, end, _dispatch_error(chip, target, span, end))


@dataclass
class ChipPlan:
    """The program as the chip runs it, without timing (:func:`plan_chip`).

    Attributes
    ----------
    steps : list of tuple
        ``(target, span, kind, info)`` for every command the dispatcher takes, in order, up
        to the END or the command it refuses. ``kind`` is ``"end"``, ``"refused"`` (``info``
        the dispatcher's ErrorCode), ``"run"`` (``info`` the :class:`MacroStep` every
        addressed macro takes alike) or ``"mixed"`` (``info`` a list of one MacroStep per
        addressed macro: their patterns differ and so does what they do).
    beats : list of int
        Beats step ``i`` must carry (the module docstring's rule).
    ended : bool
        The dispatcher takes an END (or refuses a command): nothing after it is run.
    """
    steps: list = field(default_factory=list)
    beats: list = field(default_factory=list)
    ended: bool = False


def iter_plan(chip: ChipConfig, commands: Iterable[int]):
    """The steps of :class:`ChipPlan` one by one, ``(target, span, kind, info, beats)``;
    stops after the END or the refused command. The walk :func:`plan_chip` and the event
    model share (fast: words and ``(word, pattern)`` pairs are decoded once per run)."""
    cfg = chip.macro
    K = chip.macros
    patterns = [(1, 1)] * K
    words: dict = {}
    runs: dict = {}
    _NONE = ErrorCode.NONE  # noqa: N806 (a local alias, for speed)
    for word in commands:
        info = words.get(word)
        if info is None:
            info = words[word] = chip_step(chip, int(word))
        if info.end:
            yield 0, K, "end", None, 0
            return
        if info.error != _NONE:
            yield info.target, info.span, "refused", info.error, 0
            return
        lo, span = info.target, info.span
        first = patterns[lo]
        if span == 1 or patterns[lo:lo + span].count(first) == span:
            key = (info.word, first)
            run = runs.get(key)
            if run is None:
                run = runs[key] = macro_step(cfg, info.word, first)
            if run.opcode == Opcode.CONFIG and run.pattern != first and run.error == _NONE:
                patterns[lo:lo + span] = [run.pattern] * span
            yield lo, span, "run", run, run.beats
            continue
        mixed = [macro_step(cfg, info.word, p) for p in patterns[lo:lo + span]]
        for k, run in enumerate(mixed):
            if run.opcode == Opcode.CONFIG and run.error == ErrorCode.NONE:
                patterns[lo + k] = run.pattern
        yield lo, span, "mixed", mixed, min(run.beats for run in mixed)


def plan_chip(chip: ChipConfig, commands: Iterable[int]) -> ChipPlan:
    """Walk ``commands`` (chip command words) as the dispatcher and the macros run them,
    following each macro's pattern; see :class:`ChipPlan`. Raises ``ValueError`` for a word
    wider than :func:`~sparsecim.hw.isa.chip_command_layout`."""
    plan = ChipPlan()
    for lo, span, kind, info, beats in iter_plan(chip, commands):
        plan.steps.append((lo, span, kind, info))
        plan.beats.append(beats)
        plan.ended = kind in ("end", "refused")
    return plan


@dataclass
class ChipTrace(TraceFile):
    """A program for a chip.

    Parameters
    ----------
    config : ChipConfig
        The chip the trace is encoded for; every word width follows from it.
    steps : list of Step
        Chip command words in program order, each with its beats (weight rows for a LOAD_W,
        activation beats for a LOAD_A; a list of ``int`` or a :class:`BeatArray`).
    meta : dict
        Free-form JSON-serialisable description of the workload.
    isa_version : int
    """

    config: ChipConfig
    steps: list[Step] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    isa_version: int = ISA_VERSION

    def append(self, cmd: Command, data=None, *, target: int = 0, span: int = 1) -> None:
        """Encode ``cmd`` for macros ``target .. target + span - 1`` and append it with its
        beats."""
        beats = data if isinstance(data, BeatArray) else list(data or [])
        self.steps.append(Step(encode_chip(self.config, cmd, target=target, span=span), beats))

    @property
    def commands(self) -> list[int]:
        """The ``cmd`` stream: every chip command word in order."""
        return [step.command for step in self.steps]

    def _opcode(self, step: Step) -> int:
        return _opcode_value(self.config.macro, chip_step(self.config, step.command).word)

    def _stream(self, opcode: Opcode) -> list[int]:
        return [beat for step in self.steps
                if self._opcode(step) == opcode.value for beat in step.data]

    @property
    def weights(self) -> list[int]:
        """The ``weights`` stream: the beats of every LOAD_W step in order."""
        return self._stream(Opcode.LOAD_W)

    @property
    def acts(self) -> list[int]:
        """The ``acts`` stream: the beats of every LOAD_A step in order."""
        return self._stream(Opcode.LOAD_A)

    def stream_array(self, opcode: Opcode) -> np.ndarray:
        """The ``weights`` (``Opcode.LOAD_W``) or ``acts`` (``Opcode.LOAD_A``) stream as its
        byte view: ``uint8`` ``(beats, beat_bytes(port bits))``, little-endian rows, with no
        Python ``int`` per beat for steps that hold a :class:`BeatArray`."""
        macro = self.config.macro
        bits = (weight_row_layout(macro) if opcode == Opcode.LOAD_W
                else act_beat_layout(macro)).size
        nbytes = beat_bytes(bits)
        parts = [np.zeros((0, nbytes), dtype=np.uint8)]
        for step in self.steps:
            if not len(step.data) or self._opcode(step) != opcode.value:
                continue
            if isinstance(step.data, BeatArray):
                raw = step.data.raw
                fixed = np.zeros((len(raw), nbytes), dtype=np.uint8)
                fixed[:, :min(nbytes, raw.shape[1])] = raw[:, :nbytes]
                parts.append(fixed)
            else:
                parts.append(words_to_bytes(step.data, nbytes))
        return np.concatenate(parts)

    def plan(self) -> ChipPlan:
        """:func:`plan_chip` of the command words."""
        return plan_chip(self.config, self.commands)

    # File I/O

    def _digits(self) -> dict:
        macro = self.config.macro
        return {"c": -(-chip_command_layout(self.config).size // 4),
                Opcode.LOAD_W: -(-weight_row_layout(macro).size // 4),
                Opcode.LOAD_A: -(-act_beat_layout(macro).size // 4)}

    def _text_chunks(self):
        digits = self._digits()
        header = (f"{_MAGIC} {CHIP_FORMAT_VERSION}\nisa {self.isa_version}\n"
                  f"chip {self.config.to_json()}\n"
                  f"meta {json.dumps(self.meta, sort_keys=True)}\n")
        return text_chunks(header, self.steps, digits["c"], lambda step: digits[
            Opcode.LOAD_W if self._opcode(step) == Opcode.LOAD_W.value else Opcode.LOAD_A])

    @classmethod
    def from_text(cls, text: str, *, source: str = "<chip trace>") -> ChipTrace:
        """Parse a chip trace file's text.

        Raises
        ------
        TraceFormatError
            For a wrong magic or version, a bad header or chip, a word that is not hex or is
            wider than its stream, a beat before the first command, or a trace that is not
            well-formed (:meth:`validate`); the message names the line.
        """
        lines = text.splitlines()
        _, body_start, meta, chip_text = read_header(lines, source, _MAGIC,
                                                     CHIP_FORMAT_VERSION, "chip")
        try:
            chip = ChipConfig.from_dict(json.loads(chip_text[1]))
        except (ValueError, json.JSONDecodeError) as exc:
            raise TraceFormatError(f"{source}:{chip_text[0]}: bad chip: {exc}") from None
        trace = cls(chip, meta=meta)
        macro = chip.macro
        limits = {"c": chip_command_layout(chip).size,
                  "d": max(weight_row_layout(macro).size, act_beat_layout(macro).size)}
        trace.validate(where=read_steps(lines, body_start, source, limits, trace.steps))
        return trace

    def validate(self, *, where=None) -> None:
        """Check that the trace is well-formed (the module docstring).

        Parameters
        ----------
        where : callable, optional
            ``where(kind, index)`` names command ``index`` (``kind`` ``"c"``) or beat
            ``index`` of the whole trace, counted over all steps (``"d"``), or the end of the
            trace (``index`` None); by default ``"command 3"``, ``"data beat 7"``.

        Raises
        ------
        TraceFormatError
            For a word that is not an integer or is wider than its stream, a beat with bits
            set outside its layout, or a step that carries the wrong number of beats.
        """
        if where is None:
            where = default_where
        macro = self.config.macro
        cmd_bits = chip_command_layout(self.config).size
        bits = {Opcode.LOAD_W.value: weight_row_layout(macro).size,   # beat widths by opcode
                Opcode.LOAD_A.value: act_beat_layout(macro).size}
        beat = 0
        for index, step in enumerate(self.steps):
            _check_word(step.command, cmd_bits, index, where)
            if len(step.data):
                self._check_beats(step, index, beat, bits, where)
            beat += len(step.data)
        self._check_beat_counts(where)

    def _check_beats(self, step: Step, index: int, beat: int, bits: dict, where) -> None:
        # The beats of step ``index`` (its first beat is beat ``beat`` of the trace): a
        # LOAD_W's or LOAD_A's, each at most ``bits[opcode]`` wide (its port's layout).
        chip, macro = self.config, self.config.macro
        word = chip_step(chip, int(step.command)).word
        top = bits.get(_opcode_value(macro, word))
        if top is None:
            raise TraceFormatError(f"{where('c', index)}: only LOAD_W and LOAD_A carry beats, "
                                   f"not {disassemble(macro, word)} ({len(step.data)} beats)")
        bad = _first_wide(step.data, top)
        if bad is not None:
            value = step.data[bad]
            shown = f"{value:#x}" if isinstance(value, (int, np.integer)) else repr(value)
            raise TraceFormatError(
                f"{where('d', beat + bad)}: beat must be an integer of at most {top} bits "
                f"(its port's layout), not {shown}")

    def _check_beat_counts(self, where) -> None:
        # Every step carries the beats its command takes (the plan's count).
        chip, macro = self.config, self.config.macro
        for index, need in enumerate(self.plan().beats):
            have = len(self.steps[index].data)
            if have != need:
                text = disassemble(macro, chip_step(chip, self.steps[index].command).word)
                raise TraceFormatError(f"{where('c', index)}: {text} takes {need} beats, the "
                                       f"step carries {have}")

    def dump(self, max_beats: int = 2) -> str:
        """Human-readable listing: decoded commands with their macro range, and up to
        ``max_beats`` beats of each shown as lane values."""
        chip, macro = self.config, self.config.macro
        out = [f"# chip trace for {chip.slug}, ISA {self.isa_version}, {len(self.steps)} "
               f"commands, {len(self.weights)} weight rows, {len(self.acts)} activation beats",
               f"# meta {json.dumps(self.meta, sort_keys=True)}"]
        digits = self._digits()["c"]
        for index, step in enumerate(self.steps):
            info = chip_step(chip, step.command)
            where = "all" if info.end else f"{info.target}+{info.span}"
            out.append(f"{index:6d}  c {step.command:0{digits}x}  [{where}] "
                       f"{disassemble(macro, info.word)}")
            out += dump_beats(macro, info.word, step.data, max_beats, acts_otherwise=True)
        return "\n".join(out) + "\n"


def _check_word(word, cmd_bits: int, index: int, where) -> None:
    # Command ``index``'s word: an integer of at most ``cmd_bits`` bits (the chip command
    # layout).
    if not isinstance(word, (int, np.integer)) or not 0 <= word < 2 ** cmd_bits:
        raise TraceFormatError(f"{where('c', index)}: chip command word must be an integer of "
                               f"at most {cmd_bits} bits, not {word!r}")


def _first_wide(beats, top: int) -> int | None:
    """Index of the first beat that is not an integer of at most ``top`` bits, or None
    (a :class:`BeatArray` is checked on its bytes)."""
    if isinstance(beats, BeatArray):
        raw = beats.raw
        whole, spare = divmod(top, 8)
        over = raw[:, whole + 1:].any(axis=1) if spare else raw[:, whole:].any(axis=1)
        if spare and raw.shape[1] > whole:
            over = over | (raw[:, whole] >> spare).astype(bool)
        hits = np.flatnonzero(over)
        return int(hits[0]) if len(hits) else None
    for index, value in enumerate(beats):
        if not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** top:
            return index
    return None
