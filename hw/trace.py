"""The trace file format: a program of command words with the data beats each one carries.

A trace is what the scheduler emits and what every level runs: the golden model, the Amaranth
simulation and the Verilator testbench. The file is text, exact and diff-able::

    sparsecim-trace 1
    isa 1
    config {"acc_bits": 32, ...}
    meta {"workload": "gemm", ...}
    c 0000019
    d 00ff7f80...
    ...

``c`` lines are command words and ``d`` lines the data beats that follow their command, both in
fixed-width lowercase hex. ``#`` starts a comment line. :meth:`Trace.dump` gives a
human-readable listing with decoded commands and lane values.

Legality is decided here, once, for every level (:meth:`Trace.validate`): a trace is
*well-formed* if every word is non-negative hex that fits its stream and every command that
runs (up to the first END or illegal command, as the sequencer runs them) finds all its data
beats, each fitting its beat layout (no bits set above the lanes of a LOAD_A beat or the
fields of a LOAD_W beat, which the RTL would ignore and the golden model refuses). An illegal
*command* (undefined opcode, bad mode, zero count, address out of range) is well-formed: the
sequencer halts on it with an error status, and every level agrees on which.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import MacroConfig
from .isa import (
    ISA_VERSION,
    Command,
    DecodeError,
    ErrorCode,
    Opcode,
    act_beat_layout,
    beat_bytes,
    bytes_to_words,
    check,
    command_layout,
    data_beats,
    decode,
    disassemble,
    encode,
    part_fits,
    pattern_of,
    unpack_beats,
    unpack_weight_rows,
    weight_row_layout,
    words_to_bytes,
)

__all__ = ["FORMAT_VERSION", "BeatArray", "Step", "Trace", "TraceFormatError"]

#: Beats written per chunk by :meth:`Trace.save`, so that a large trace's text is never held
#: whole.
_SAVE_CHUNK = 1 << 16

FORMAT_VERSION = 1
_MAGIC = "sparsecim-trace"
_HEX = re.compile(r"[0-9a-fA-F]+")


@functools.lru_cache(maxsize=1 << 16)
def _run_word(cfg: MacroConfig, word: int, pattern: tuple[int, int]):
    """``(command, pattern after it, data beats it takes)`` for a command word the sequencer
    runs with ``pattern`` current, or None if it halts there (END or illegal). Cached: a
    trace repeats few words."""
    try:
        cmd = decode(cfg, word)
    except DecodeError:
        return None
    if check(cfg, cmd) != ErrorCode.NONE or cmd.opcode == Opcode.END:
        return None
    if cmd.opcode == Opcode.COMPUTE and not part_fits(cfg, cmd.part, pattern):
        return None
    if cmd.opcode == Opcode.CONFIG:
        return cmd, pattern_of(cfg, cmd), 0
    return cmd, pattern, data_beats(cfg, cmd, pattern)


class TraceFormatError(ValueError):
    """A trace that is not well-formed; the message names the file line (or, for a trace
    built in memory, the command or beat) and the offending value."""


class BeatArray(Sequence):
    """Data beats held as their byte view, a sequence of ``int`` words.

    ``raw`` is ``uint8`` ``(beats, nbytes)``, each row one word in little-endian order (as
    :func:`~sparsecim.hw.isa.pack_beat_bytes` gives them). Indexing gives ``int`` words and
    slicing gives a :class:`BeatArray`, so code that reads a list of words reads this
    unchanged; bulk consumers (the golden model, :meth:`Trace.save`) use ``raw`` and never
    build a Python ``int`` per beat.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: np.ndarray):
        raw = np.asarray(raw)
        if raw.dtype != np.uint8 or raw.ndim != 2:
            raise ValueError(f"beat bytes must be a 2-D uint8 array, not {raw.dtype} "
                             f"{raw.shape}")
        self.raw = raw

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return BeatArray(self.raw[index])
        return int.from_bytes(self.raw[index].tobytes(), "little")

    def __iter__(self):
        return iter(bytes_to_words(self.raw))

    def __eq__(self, other):
        if isinstance(other, BeatArray):
            return list(self) == list(other)
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"BeatArray({len(self)} beats of {self.raw.shape[1]} bytes)"


@dataclass
class Step:
    """One command word and the data beats that follow it on the data stream (a list of
    ``int`` words, or a :class:`BeatArray` of the same words)."""
    command: int
    data: list[int] | BeatArray = field(default_factory=list)


class TraceFile:
    """The file I/O shared by :class:`Trace` and the chip trace: a subclass gives
    ``_text_chunks()`` and ``from_text(text, source=...)``."""

    def to_text(self) -> str:
        return "".join(self._text_chunks())

    def save(self, path: str | Path) -> None:
        """Write the file in chunks, so that a large trace's text is never held whole."""
        with open(path, "w") as file:
            for chunk in self._text_chunks():
                file.write(chunk)

    @classmethod
    def load(cls, path: str | Path):
        """Read and parse a trace file (:meth:`from_text`); also a TraceFormatError for a
        file that is not UTF-8 text."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(f"{path}: must be UTF-8 text, not byte "
                                   f"{exc.object[exc.start]:#04x} at offset {exc.start}"
                                   ) from None
        return cls.from_text(text, source=str(path))


@dataclass
class Trace(TraceFile):
    """A program for one macro configuration.

    Parameters
    ----------
    config : MacroConfig
        The macro the trace is encoded for; every word width follows from it.
    steps : list of Step
        Commands in program order, each with its data beats.
    meta : dict
        Free-form JSON-serialisable description of the workload (shapes, seeds, mapping).
    isa_version : int
        ISA version the words were encoded with.
    """

    config: MacroConfig
    steps: list[Step] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    isa_version: int = ISA_VERSION

    def append(self, cmd: Command, data: list[int] | None = None) -> None:
        """Encode ``cmd`` and append it with its data beats."""
        beats = data if isinstance(data, BeatArray) else list(data or [])
        self.steps.append(Step(encode(self.config, cmd), beats))

    @property
    def commands(self) -> list[int]:
        """The command stream: every command word in order."""
        return [step.command for step in self.steps]

    @property
    def data(self) -> list[int]:
        """The data stream: every data beat in order."""
        return [beat for step in self.steps for beat in step.data]

    @property
    def data_beats(self) -> int:
        """Length of the data stream, without building it."""
        return sum(len(step.data) for step in self.steps)

    def data_array(self, extra: int = 0) -> np.ndarray:
        """The data stream as its byte view: ``uint8`` ``(beats, beat_bytes(data_bits))``,
        row ``i`` beat ``i`` in little-endian order (no Python ``int`` per beat for steps
        that hold a :class:`BeatArray`), followed by ``extra`` zero rows.

        Raises
        ------
        ValueError
            If a beat does not fit ``data_bits``.
        """
        nbytes = beat_bytes(self.config.data_bits)
        parts = []
        for step in self.steps:
            if isinstance(step.data, BeatArray):
                raw = step.data.raw
                if raw.shape[1] != nbytes:
                    fixed = np.zeros((raw.shape[0], nbytes), dtype=np.uint8)
                    keep = min(nbytes, raw.shape[1])
                    if raw[:, keep:].any():
                        raise ValueError(f"data beat must fit {self.config.data_bits} bits")
                    fixed[:, :keep] = raw[:, :keep]
                    raw = fixed
                parts.append(raw)
            elif step.data:
                parts.append(words_to_bytes(step.data, nbytes))
        parts.append(np.zeros((extra, nbytes), dtype=np.uint8))
        raw = np.concatenate(parts)
        spare = 8 * nbytes - self.config.data_bits
        if spare and (raw[:, -1] >> (8 - spare)).any():
            bad = int(np.argmax(raw[:, -1] >> (8 - spare) != 0))
            word = int.from_bytes(raw[bad].tobytes(), "little")
            raise ValueError(f"data beat must fit {self.config.data_bits} bits, not {word:#x}")
        return raw

    # File I/O

    def _hex_digits(self) -> tuple[int, int]:
        return (-(-command_layout(self.config).size // 4), -(-self.config.data_bits // 4))

    def _text_chunks(self):
        """The file text in pieces of about :data:`_SAVE_CHUNK` beats each."""
        cmd_digits, data_digits = self._hex_digits()
        header = (f"{_MAGIC} {FORMAT_VERSION}\nisa {self.isa_version}\n"
                  f"config {self.config.to_json()}\n"
                  f"meta {json.dumps(self.meta, sort_keys=True)}\n")
        return text_chunks(header, self.steps, cmd_digits, lambda step: data_digits)

    @classmethod
    def from_text(cls, text: str, *, source: str = "<trace>") -> Trace:
        """Parse a trace file's text.

        Raises
        ------
        TraceFormatError
            For a wrong magic or version, a bad header, a word that is not hex or is wider than
            its stream, or data before the first command; the message names the line.
        """
        lines = text.splitlines()
        header, body_start, meta, config_text = read_header(
            lines, source, _MAGIC, FORMAT_VERSION, "config")
        try:
            config = MacroConfig.from_dict(json.loads(config_text[1]))
        except (ValueError, json.JSONDecodeError) as exc:
            raise TraceFormatError(f"{source}:{config_text[0]}: bad config: {exc}") from None
        trace = cls(config, meta=meta)
        limits = {"c": command_layout(config).size, "d": config.data_bits}
        trace.validate(where=read_steps(lines, body_start, source, limits, trace.steps))
        return trace

    def validate(self, *, where=None) -> None:
        """Check that the trace is well-formed (see the module docstring) by running its
        command stream as the sequencer does: decode, check, follow CONFIG's pattern, and
        hand each command its data beats from the one flat data stream.

        Parameters
        ----------
        where : callable, optional
            ``where(kind, index)`` names command ``index`` (``kind`` ``"c"``) or data beat
            ``index`` (``"d"``), or the end of the trace (``index`` None), in messages;
            :meth:`from_text` names file lines. By default ``"command 3"``, ``"data beat 7"``.

        Raises
        ------
        TraceFormatError
            For a word that is negative or wider than its stream, a command whose data beats
            are missing (a trace cut off), or a beat with bits set outside its layout.
        """
        cfg = self.config
        if where is None:
            where = default_where
        limits = {"c": command_layout(cfg).size, "d": cfg.data_bits}
        for kind, words in (("c", self.commands), ("d", self.data)):
            for index, word in enumerate(words):
                if not isinstance(word, (int, np.integer)) or not 0 <= word < 2 ** limits[kind]:
                    raise TraceFormatError(
                        f"{where(kind, index)}: word must be an integer from 0 to "
                        f"{limits[kind]} bits wide, not {word!r}")
        beat_bits = {Opcode.LOAD_W: weight_row_layout(cfg).size,
                     Opcode.LOAD_A: act_beat_layout(cfg).size}
        data = self.data
        cursor = 0
        pattern = (1, 1)
        for index, word in enumerate(self.commands):
            step = _run_word(cfg, int(word), pattern)
            if step is None:
                return  # END or an illegal command: the sequencer halts, reads nothing more
            cmd, pattern, need = step
            if cursor + need > len(data):
                raise TraceFormatError(
                    f"{where('c', index)}: {cmd} needs {need} data beats, the trace has "
                    f"{len(data) - cursor} left (cut off?)")
            if need:
                top = beat_bits[cmd.opcode]
                for beat in range(cursor, cursor + need):
                    if data[beat] >> top:
                        raise TraceFormatError(
                            f"{where('d', beat)}: {cmd.opcode.name} beat must fit its "
                            f"{top}-bit layout (bits {top} and up unused, must be 0), not "
                            f"{data[beat]:#x}")
            cursor += need

    def dump(self, max_beats: int = 2) -> str:
        """Human-readable listing: decoded commands, and up to ``max_beats`` beats of each
        shown as lane values."""
        cfg = self.config
        out = [f"# trace for {cfg.slug}, ISA {self.isa_version}, {len(self.steps)} commands, "
               f"{len(self.data)} data beats", f"# meta {json.dumps(self.meta, sort_keys=True)}"]
        cmd_digits, _ = self._hex_digits()
        for index, step in enumerate(self.steps):
            out.append(f"{index:6d}  c {step.command:0{cmd_digits}x}  "
                       f"{disassemble(cfg, step.command)}")
            out += dump_beats(cfg, step.command, step.data, max_beats)
        return "\n".join(out) + "\n"


def default_where(kind: str, index: int | None) -> str:
    """The default ``where`` of ``validate``: ``"command 3"``, ``"data beat 7"`` or
    ``"end of trace"``."""
    if index is None:
        return "end of trace"
    return f"{'command' if kind == 'c' else 'data beat'} {index}"


def text_chunks(header: str, steps: list, cmd_digits: int, data_digits):
    """``header``, then the ``c``/``d`` lines of ``steps`` in pieces of about
    :data:`_SAVE_CHUNK` beats each; ``data_digits(step)`` is the hex width of a step's beats
    (asked only of a step that has beats)."""
    yield header
    lines: list[str] = []
    pending = 0
    for step in steps:
        lines.append(f"c {step.command:0{cmd_digits}x}\n")
        if len(step.data):
            width = data_digits(step)
            if isinstance(step.data, BeatArray):
                for start in range(0, len(step.data), _SAVE_CHUNK):
                    lines.append(_hex_lines(step.data.raw[start:start + _SAVE_CHUNK], width))
            else:
                lines.extend(f"d {beat:0{width}x}\n" for beat in step.data)
        pending += len(step.data) + 1
        if pending >= _SAVE_CHUNK:
            yield "".join(lines)
            lines, pending = [], 0
    yield "".join(lines)


def dump_beats(cfg: MacroConfig, word: int, data, max_beats: int, *,
               acts_otherwise: bool = False) -> list[str]:
    """The ``dump`` lines of up to ``max_beats`` of a step's beats, as lane values of the
    macro command ``word``'s opcode (LOAD_W rows, LOAD_A beats; any other opcode in hex, or
    as LOAD_A beats with ``acts_otherwise``)."""
    try:
        opcode = decode(cfg, word).opcode
    except ValueError:
        opcode = None
    if acts_otherwise and opcode != Opcode.LOAD_W:
        opcode = Opcode.LOAD_A
    out = []
    for beat in data[:max_beats]:
        if opcode == Opcode.LOAD_W:
            weights, meta = unpack_weight_rows(cfg, [beat])
            lanes = f"w {weights[0].tolist()}"
            if cfg.meta_bits:
                lanes += f" pos {meta[0].tolist()}"
        elif opcode == Opcode.LOAD_A:
            lanes = unpack_beats(act_beat_layout(cfg), [beat])[0].tolist()
        else:
            lanes = f"{beat:#x}"
        out.append(f"          d {lanes}")
    if len(data) > max_beats:
        out.append(f"          ... {len(data) - max_beats} more beats")
    return out


def _hex_lines(raw: np.ndarray, digits: int) -> str:
    """``d`` lines of beats given as little-endian bytes, ``digits`` hex digits each, built
    as one character array (no Python ``int`` per beat)."""
    if not len(raw):
        return ""
    if raw.shape[1] * 2 < digits:
        raw = np.concatenate([raw, np.zeros((len(raw), -(-digits // 2) - raw.shape[1]),
                                            dtype=np.uint8)], axis=1)
    width = raw.shape[1] * 2
    # Digits beyond ``digits`` must be zero, or the word would not fit its line.
    whole = digits // 2
    if raw[:, whole + digits % 2:].any() or (digits % 2 and (raw[:, whole] >> 4).any()):
        raise ValueError(f"data beat must fit {digits * 4} bits")
    text = np.frombuffer(raw[:, ::-1].tobytes().hex().encode(), dtype="S1")
    text = text.reshape(len(raw), width)[:, width - digits:]
    out = np.empty((len(raw), digits + 3), dtype="S1")
    out[:, 0], out[:, 1], out[:, -1] = b"d", b" ", b"\n"
    out[:, 2:-1] = text
    return out.tobytes().decode()


def read_header(lines: list[str], source: str, magic: str, version: int, config_key: str):
    """The header of a trace file's ``lines`` (shared by :class:`Trace` and the chip trace).

    Returns ``(header, body_start, meta, (lineno, config text))``: ``header`` maps each key
    to ``(lineno, value)``, ``body_start`` is the index of the first ``c``/``d`` line (None if
    there is none). Raises :class:`TraceFormatError` naming the line for a missing, repeated
    or unknown key, a wrong magic version or ISA version, or meta that is not JSON.
    """
    def fail(lineno, message):
        raise TraceFormatError(f"{source}:{lineno}: {message}")

    header = {}
    body_start = None
    for index, line in enumerate(lines):
        lineno = index + 1
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in ("c", "d"):
            body_start = index
            break
        if key in header:
            fail(lineno, f"header key {key!r} given twice")
        header[key] = (lineno, value)
    for key in (magic, "isa", config_key):
        if key not in header:
            fail(1, f"missing header line {key!r}")
    if header[magic][1] != str(version):
        fail(header[magic][0], f"trace format version must be {version}, "
                               f"not {header[magic][1]!r}")
    if header["isa"][1] != str(ISA_VERSION):
        fail(header["isa"][0], f"ISA version must be {ISA_VERSION}, "
                               f"not {header['isa'][1]!r}")
    meta = {}
    if "meta" in header:
        try:
            meta = json.loads(header["meta"][1])
        except json.JSONDecodeError as exc:
            fail(header["meta"][0], f"bad meta: {exc}")
    extra = sorted(set(header) - {magic, "isa", config_key, "meta"})
    if extra:
        fail(header[extra[0]][0], f"unknown header key {extra[0]!r}")
    return header, body_start, meta, header[config_key]


def read_body(lines: list[str], body_start: int | None, source: str, limits: dict,
              steps: list) -> tuple[list[int], list[int]]:
    """Parse the ``c``/``d`` lines from ``body_start`` into ``steps`` (appending
    :class:`Step`); ``limits`` gives each kind's width in bits. Returns the file line of
    every command and of every beat, for :meth:`Trace.validate`'s messages.

    Raises
    ------
    TraceFormatError
        For a line of another kind, a word that is not hex or is wider than its limit, or a
        beat before the first command; the message names the line.
    """
    def fail(lineno, message):
        raise TraceFormatError(f"{source}:{lineno}: {message}")

    cmd_lines, beat_lines = [], []
    for index in range(body_start if body_start is not None else len(lines), len(lines)):
        line = lines[index]
        lineno = index + 1
        if not line.strip() or line.startswith("#"):
            continue
        kind, _, word_text = line.partition(" ")
        if kind not in limits:
            fail(lineno, f"line must start with 'c' or 'd', not {kind!r}")
        # Digits only: int(..., 16) would also take a sign, "0x" and underscores.
        if not _HEX.fullmatch(word_text.strip()):
            fail(lineno, f"{word_text.strip()!r} is not a hex word")
        word = int(word_text.strip(), 16)
        if word >= 2 ** limits[kind]:
            fail(lineno, f"word {word:#x} is wider than {limits[kind]} bits")
        if kind == "c":
            steps.append(Step(word))
            cmd_lines.append(lineno)
        elif not steps:
            fail(lineno, "data beat before the first command")
        else:
            steps[-1].data.append(word)
            beat_lines.append(lineno)
    return cmd_lines, beat_lines


def read_steps(lines: list[str], body_start: int | None, source: str, limits: dict,
               steps: list):
    """:func:`read_body`, returning the ``where`` for ``validate`` that names the file line
    of a command or beat (the last line for the end of the trace)."""
    cmd_lines, beat_lines = read_body(lines, body_start, source, limits, steps)
    last = len(lines)
    return lambda kind, index: f"{source}:" + (
        str(last) if index is None else str((cmd_lines if kind == "c" else beat_lines)[index]))
