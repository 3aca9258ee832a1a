"""The sparsecim command set: opcodes, operand layouts, data-beat layouts and cycle costs.

This module is the only place that states an opcode value, a field width or a bit position.
Hardware uses the layouts as port shapes; software encodes with :func:`encode`; the golden model
and the testbench decode with :func:`decode`. Field widths are functions of a
:class:`~sparsecim.hw.config.MacroConfig`.

Run ``python -m sparsecim.hw.isa`` to print the reference (``docs/isa.md``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth.hdl import Shape, signed
from amaranth.lib import data, enum

from .config import ChipConfig, MacroConfig, ceil_log2, chip_preset, preset
from .pattern import Pattern, as_pattern

__all__ = [
    "ISA_VERSION", "COMPUTE_DRAIN", "COUNTERS", "DecodeError",
    "EVENT_COUNTERS", "STATUS_COUNTERS",
    "Opcode", "Mode", "ErrorCode", "Command", "CycleCost",
    "command_layout", "args_layout", "weight_row_layout", "act_beat_layout", "result_layout",
    "counters_layout", "encode", "decode", "check", "config_command", "pattern_of", "part_fits",
    "OPTIONAL_FIELDS", "requantize", "move_window",
    "data_beats", "result_beats", "cycles",
    "pack_beats", "unpack_beats", "pack_weight_rows", "unpack_weight_rows", "disassemble",
    "beat_bytes", "words_to_bytes", "bytes_to_words", "pack_beat_bytes", "unpack_beat_bytes",
    "pack_weight_row_bytes", "unpack_weight_row_bytes",
    "isa_markdown",
    "CHIP_COUNTERS", "chip_command_layout", "chip_result_layout", "chip_counters_layout",
    "encode_chip", "decode_chip", "check_chip",
]

#: Bumped whenever an encoding or a cycle cost changes; traces record it.
ISA_VERSION = 6

#: Cycles a COMPUTE spends after issuing its last pass: one to read the activation buffer and
#: register the merged column sums, one to read, add and write the accumulator.
COMPUTE_DRAIN = 2

#: Performance counters, in the order of the status port. Every cycle from reset to halt falls
#: in exactly one of fetch/load/compute/read/stall, so they add up to total.
COUNTERS = ("total", "fetch", "load", "compute", "read", "stall")

#: Event counters, after the cycle counters on the status port (ISA 5): compute passes issued,
#: weight rows written (LOAD_W beats) and activation beats written (LOAD_A beats). With the
#: cycle counters they fix every other event count of :mod:`sparsecim.sw.events` exactly.
EVENT_COUNTERS = ("passes", "w_rows", "a_beats")

#: Every counter of the status port, in order.
STATUS_COUNTERS = COUNTERS + EVENT_COUNTERS


class Opcode(enum.Enum, shape=3):
    """Command opcodes. Value 6 is undefined and raises ``ILLEGAL_OPCODE``."""
    CONFIG = 0
    LOAD_W = 1
    LOAD_A = 2
    COMPUTE = 3
    READ = 4
    MOVE = 5
    END = 7


class Mode(enum.Enum, shape=2):
    """Sparsity mode set by CONFIG: dense, or N:M with the ``n`` and ``m`` of the command.
    Other values raise ``ILLEGAL_MODE``."""
    DENSE = 0
    NM = 1


class ErrorCode(enum.Enum, shape=3):
    """Sequencer error status. Any value but NONE halts the sequencer (or the chip)."""
    NONE = 0
    ILLEGAL_OPCODE = 1
    ILLEGAL_MODE = 2
    ZERO_COUNT = 3
    ADDRESS_RANGE = 4
    #: Chip only: the macros a LOAD_A broadcasts to disagree on its length (their patterns
    #: differ), so the activation port cannot serve them together.
    OUT_OF_STEP = 5


@dataclass(frozen=True)
class _OpDoc:
    fmt: str
    action: str
    notes: str
    cycles: str


_DOCS = {
    Opcode.CONFIG: _OpDoc(
        "`mode`, `n`, `m`, [`split`], [`shift`]",
        "Sets the sparsity pattern of the following LOAD_A and COMPUTE commands: DENSE, or NM "
        "with `n` weights kept per group of `m` inputs. In NM the P sub-macros form P/n "
        "clusters of n; row `r` of cluster `c` receives the `m` activations of input group "
        "`c·rows + r` (entry elements `(c·rows + r)·m .. +m-1`), and each cell multiplies the "
        "one its metadata selects (a position `>= m` selects 0). In DENSE, sub-macro `s` row "
        "`r` receives entry element `s·rows + r` and metadata is ignored. `split` sets the "
        "merging: 0 sums all P sub-macros into accumulator bank 0; `s` keeps `2**s` groups of "
        "`P / 2**s` sub-macros apart, group `j` writing bank `j` (block-diagonal layers). "
        "`shift` sets MOVE's requantization.",
        "Reset leaves DENSE (1:1), split 0, shift 0. DENSE needs `n = m = 1`; NM needs an "
        "`n:m` listed in the config's `patterns` and split 0; split must be at most log2(P) "
        "and shift below `acc_bits`; anything else, or an undefined mode, raises ILLEGAL_MODE. "
        "`split` and `shift` default to 0 when a Command omits them.",
        "1"),
    Opcode.LOAD_W: _OpDoc(
        "`row`, `count`",
        "Writes `count` weight rows, global rows `row` .. `row+count-1`, from the next `count` "
        "data beats. Global row `g` is row `g % rows` of sub-macro `g // rows`.",
        "Each beat is one weight row (`weight_row_layout`): weight and metadata of column `c`. "
        "`count = 0` raises ZERO_COUNT; `row + count > rows × submacros` raises ADDRESS_RANGE.",
        "1 + count"),
    Opcode.LOAD_A: _OpDoc(
        "`addr`, `count`",
        "Writes `count` activation buffer entries, `addr` .. `addr+count-1`, each from the next "
        "`act_beats(n, m)` data beats, where `n:m` is the current pattern (an entry holds "
        "`rows × (P/n) × m` activations; `rows × P` in DENSE).",
        "Entry element `j` is lane `j % act_lanes` of beat `j // act_lanes`; every lane of a "
        "beat is written, the entry's later beats keep their contents. `count = 0` raises "
        "ZERO_COUNT; `addr + count > act_depth` raises ADDRESS_RANGE.",
        "1 + count × act_beats(n, m)"),
    Opcode.COMPUTE: _OpDoc(
        "`act_addr`, `acc_addr`, `count`, `accumulate`, [`part`]",
        "Runs `count` passes. Pass `i` multiplies part `part` of activation entry `act_addr+i` "
        "(elements from `part × pass_inputs(n, m)` on) with the whole array, merges the "
        "sub-macros as `split` says and writes accumulator entry `acc_addr+i` of each bank "
        "written: the sum plus the bank's old value if `accumulate`, else the sum alone.",
        "Passes issue one per cycle; accumulators wrap at `acc_bits` (the scheduler refuses "
        "reductions that could wrap). Banks a pass does not write keep their contents. "
        "`count = 0` raises ZERO_COUNT; `act_addr + count > act_depth`, `acc_addr + count > "
        "acc_depth` or `(part + 1) × pass_inputs(n, m) > max_pass_inputs` raises "
        "ADDRESS_RANGE. `part` defaults to 0.",
        f"1 + count + {COMPUTE_DRAIN}"),
    Opcode.READ: _OpDoc(
        "`addr`, `count`, [`bank`]",
        "Sends entries `addr` .. `addr+count-1` of accumulator bank `bank` to the result "
        "stream, one beat each.",
        "Beat lane `c` is column `c` (`result_layout`). `count = 0` raises ZERO_COUNT; "
        "`addr + count > acc_depth` raises ADDRESS_RANGE. `bank` defaults to 0.",
        "1 + count"),
    Opcode.MOVE: _OpDoc(
        "`bank`, `acc_addr`, `act_addr`, `elem`, `count`, `transpose`, [`lane`], [`dst`], "
        "[`lanes`]",
        "Requantizes accumulator entries `acc_addr` .. `acc_addr+count-1` of bank `bank` and "
        "writes a window of their lanes into the activation buffer, so that a layer's outputs "
        "become the next layer's inputs on the macro. The window is the `n` lanes from `lane` "
        "(`n = lanes`, or `cols` if `lanes` is 0); lane `lane + t` of entry `k` becomes "
        "element `elem·cols + dst + t` of activation entry `act_addr + k` (transpose 0), or "
        "element `(dst + t)·cols + elem + k` of activation entry `act_addr` (transpose 1: the "
        "entries are columns of a cols × cols block, written as its rows; Monarch's middle "
        "permutation). With the defaults (`lane = dst = lanes = 0`) every lane moves to the "
        "element of its own index. A window that starts at another lane than `dst` undoes a "
        "rotation of block outputs across the columns by address generation alone. "
        "Requantization: `clamp((v + 2**(shift-1)) >> shift)` to the signed `act_bits` range "
        "(`clamp(v)` for shift 0): round half up, saturate.",
        "Elements outside the window keep their contents. `count = 0` raises ZERO_COUNT. "
        "ADDRESS_RANGE if `acc_addr + count > acc_depth`, `lane + n > cols` or `dst + n > "
        "cols`; with transpose 0 if `act_addr + count > act_depth` or `(elem + 1) × cols > "
        "max_pass_inputs`; with transpose 1 if `elem + count > cols` or `cols × cols > "
        "max_pass_inputs`. `lane`, `dst` and `lanes` default to 0.",
        "1 + count (counted as load)"),
    Opcode.END: _OpDoc(
        "(none)",
        "Halts: `done` rises and stays high until reset; counters stop.",
        "A trace must end with END, or the sequencer waits for more commands.",
        "1"),
}


def _width(n: int) -> int:
    """Bits of an unsigned field that must hold values ``0 .. n``."""
    return max(1, n.bit_length())


def _addr(depth: int) -> int:
    return max(1, ceil_log2(depth))


@functools.cache
def args_layout(cfg: MacroConfig, opcode: Opcode) -> data.StructLayout:
    """Operand layout of ``opcode`` for ``cfg``."""
    fields = {
        Opcode.CONFIG: {"mode": Mode, "n": _width(cfg.submacros), "m": _width(cfg.max_m),
                        "split": _width(cfg.max_split), "shift": _addr(cfg.acc_bits)},
        Opcode.LOAD_W: {"row": _addr(cfg.weight_rows), "count": _width(cfg.weight_rows)},
        Opcode.LOAD_A: {"addr": _addr(cfg.act_depth), "count": _width(cfg.act_depth)},
        Opcode.COMPUTE: {"act_addr": _addr(cfg.act_depth), "acc_addr": _addr(cfg.acc_depth),
                         "count": _width(min(cfg.act_depth, cfg.acc_depth)), "accumulate": 1,
                         "part": _addr(cfg.max_parts)},
        Opcode.READ: {"addr": _addr(cfg.acc_depth), "count": _width(cfg.acc_depth),
                      "bank": _addr(cfg.submacros)},
        Opcode.MOVE: {"bank": _addr(cfg.submacros), "acc_addr": _addr(cfg.acc_depth),
                      "act_addr": _addr(cfg.act_depth),
                      "elem": _addr(max(cfg.cols, cfg.max_pass_inputs // cfg.cols)),
                      "count": _width(max(cfg.acc_depth, cfg.cols)), "transpose": 1,
                      "lane": _addr(cfg.cols), "dst": _addr(cfg.cols), "lanes": _addr(cfg.cols)},
        Opcode.END: {},
    }[opcode]
    return data.StructLayout(fields)


@functools.cache
def command_layout(cfg: MacroConfig) -> data.StructLayout:
    """Layout of one command word: ``opcode`` then a union of per-opcode ``args``."""
    return data.StructLayout({
        "opcode": Opcode,
        "args": data.UnionLayout({op.name.lower(): args_layout(cfg, op) for op in Opcode}),
    })


@functools.cache
def weight_row_layout(cfg: MacroConfig) -> data.StructLayout:
    """A LOAD_W data beat: ``weight``, one signed weight per column, then ``meta``, the
    position of each weight within its group of ``m`` inputs (absent for a dense-only
    config, whose ``meta_bits`` is 0)."""
    fields = {"weight": data.ArrayLayout(signed(cfg.weight_bits), cfg.cols)}
    if cfg.meta_bits:
        fields["meta"] = data.ArrayLayout(cfg.meta_bits, cfg.cols)
    return data.StructLayout(fields)


@functools.cache
def act_beat_layout(cfg: MacroConfig) -> data.ArrayLayout:
    """A LOAD_A data beat: ``act_lanes`` signed activations (top bits unused if any)."""
    return data.ArrayLayout(signed(cfg.act_bits), cfg.act_lanes)


@functools.cache
def result_layout(cfg: MacroConfig) -> data.ArrayLayout:
    """A result beat: one signed accumulator per column."""
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)


@functools.cache
def counters_layout(cfg: MacroConfig) -> data.StructLayout:
    """The counters of the status port, :data:`STATUS_COUNTERS` in order (the cycle counters,
    then the event counters), ``counter_bits`` each."""
    return data.StructLayout({name: cfg.counter_bits for name in STATUS_COUNTERS})


#: Operands a :class:`Command` may omit, with the value it then holds.
OPTIONAL_FIELDS = {
    Opcode.CONFIG: {"split": 0, "shift": 0},
    Opcode.COMPUTE: {"part": 0},
    Opcode.READ: {"bank": 0},
    Opcode.MOVE: {"lane": 0, "dst": 0, "lanes": 0},
}


class Command:
    """One command: an :class:`Opcode` and its operand fields by name (those of
    :data:`OPTIONAL_FIELDS` may be omitted).

    >>> Command(Opcode.LOAD_W, row=0, count=4).count
    4
    """

    __slots__ = ("opcode", "fields")

    def __init__(self, opcode: Opcode, **fields: Any):
        opcode = Opcode(opcode)
        object.__setattr__(self, "opcode", opcode)
        defaults = OPTIONAL_FIELDS.get(opcode, {})
        object.__setattr__(self, "fields", {**fields, **{k: v for k, v in defaults.items()
                                                          if k not in fields}})

    def __getattr__(self, name):
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.opcode.name} has no field {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("Command is immutable")

    def __eq__(self, other):
        return (isinstance(other, Command) and self.opcode == other.opcode
                and self.fields == other.fields)

    def __hash__(self):
        return hash((self.opcode, tuple(sorted(self.fields.items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={_show(v)}" for k, v in self.fields.items())
        return f"Command(Opcode.{self.opcode.name}{', ' if args else ''}{args})"

    def __str__(self):
        args = " ".join(f"{k}={_show(v)}" for k, v in self.fields.items())
        return f"{self.opcode.name} {args}".rstrip()


def _show(value):
    return value.name if isinstance(value, enum.Enum) else value


def _field_shape(field) -> Shape:
    return Shape.cast(field.shape)


def encode(cfg: MacroConfig, cmd: Command) -> int:
    """Encode ``cmd`` as a command word (an ``int`` of ``command_layout(cfg).size`` bits).

    Raises
    ------
    ValueError
        If a field is missing, unknown, or does not fit its width. Semantic limits (address
        ranges, zero counts) are not checked here; see :func:`check`.
    """
    layout = args_layout(cfg, cmd.opcode)
    names = [name for name, _ in layout]
    missing = [n for n in names if n not in cmd.fields]
    unknown = [n for n in cmd.fields if n not in names]
    if unknown:
        raise ValueError(f"{cmd.opcode.name} has no field {unknown[0]!r}; it takes {names}")
    if missing:
        raise ValueError(f"{cmd.opcode.name} needs field {missing[0]!r}; it takes {names}")
    for name, field in layout:
        value = cmd.fields[name]
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            if not isinstance(value, shape):
                raise ValueError(f"{cmd.opcode.name} {name} must be a {shape.__name__}, "
                                 f"not {value!r}")
            continue
        width = _field_shape(field).width
        if not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** width:
            raise ValueError(f"{cmd.opcode.name} {name} must be an integer from 0 to "
                             f"{2 ** width - 1} ({width} bits), not {value!r}")
    fields = {k: (v if isinstance(v, enum.Enum) else int(v)) for k, v in cmd.fields.items()}
    word = command_layout(cfg).const({"opcode": cmd.opcode,
                                      "args": {cmd.opcode.name.lower(): fields}})
    return word.as_bits()


class DecodeError(ValueError):
    """A command word that names no defined opcode; ``code`` is the status it raises."""

    def __init__(self, message: str, code: ErrorCode):
        super().__init__(message)
        self.code = code


def _bits(word: int, field) -> int:
    return (word >> field.offset) & ((1 << _field_shape(field).width) - 1)


def decode(cfg: MacroConfig, word: int) -> Command:
    """Decode a command word.

    Fields of enum shape whose value names no member (for example an unimplemented mode) are
    returned as plain ``int`` so that :func:`check` can report them.

    Raises
    ------
    DecodeError
        If the opcode is undefined (``code`` is ``ILLEGAL_OPCODE``).
    ValueError
        If ``word`` is negative or wider than the command layout.
    """
    layout = command_layout(cfg)
    if not isinstance(word, (int, np.integer)) or not 0 <= word < 2 ** layout.size:
        raise ValueError(f"command word must be an integer of at most {layout.size} bits, "
                         f"not {word!r}")
    raw_op = _bits(word, layout["opcode"])
    try:
        opcode = Opcode(raw_op)
    except ValueError:
        raise DecodeError(f"opcode {raw_op} is not defined", ErrorCode.ILLEGAL_OPCODE) from None
    args_word = _bits(word, layout["args"])
    fields = {}
    for name, field in args_layout(cfg, opcode):
        value = _bits(args_word, field)
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            try:
                value = shape(value)
            except ValueError:
                pass
        fields[name] = value
    return Command(opcode, **fields)


def check(cfg: MacroConfig, cmd: Command) -> ErrorCode:
    """The error status the sequencer raises for ``cmd`` (``NONE`` if it is legal).

    The order of the checks is the hardware's: mode, then zero count, then address range.
    """
    op = cmd.opcode
    if op == Opcode.CONFIG:
        legal = (pattern_of(cfg, cmd) is not None and cmd.split <= cfg.max_split
                 and cmd.shift < cfg.acc_bits and (cmd.mode == Mode.DENSE or cmd.split == 0))
        return ErrorCode.NONE if legal else ErrorCode.ILLEGAL_MODE
    if op == Opcode.END:
        return ErrorCode.NONE
    if cmd.count == 0:
        return ErrorCode.ZERO_COUNT
    if op == Opcode.MOVE:
        _, _, lanes = move_window(cfg, cmd)
        beyond = (cmd.acc_addr + cmd.count > cfg.acc_depth or cmd.lane + lanes > cfg.cols
                  or cmd.dst + lanes > cfg.cols)
        if cmd.transpose:
            beyond |= (cmd.elem + cmd.count > cfg.cols
                       or cfg.cols * cfg.cols > cfg.max_pass_inputs)
        else:
            beyond |= (cmd.act_addr + cmd.count > cfg.act_depth
                       or (cmd.elem + 1) * cfg.cols > cfg.max_pass_inputs)
        return ErrorCode.ADDRESS_RANGE if beyond else ErrorCode.NONE
    limits = {
        Opcode.LOAD_W: [("row", cfg.weight_rows)],
        Opcode.LOAD_A: [("addr", cfg.act_depth)],
        Opcode.COMPUTE: [("act_addr", cfg.act_depth), ("acc_addr", cfg.acc_depth)],
        Opcode.READ: [("addr", cfg.acc_depth)],
    }[op]
    for field, depth in limits:
        if cmd.fields[field] + cmd.count > depth:
            return ErrorCode.ADDRESS_RANGE
    return ErrorCode.NONE


def move_window(cfg: MacroConfig, cmd: Command) -> tuple[int, int, int]:
    """``(lane, dst, n)`` of a MOVE: its ``n`` lanes from ``lane`` go to lanes from ``dst``
    (``n`` is the ``lanes`` field, or ``cols`` when that is 0). Not range-checked; see
    :func:`check`."""
    if cmd.opcode != Opcode.MOVE:
        raise ValueError(f"only MOVE has a lane window, not {cmd.opcode.name}")
    return cmd.lane, cmd.dst, cmd.lanes or cfg.cols


def part_fits(cfg: MacroConfig, part: int, pattern: tuple[int, int]) -> bool:
    """True if part ``part`` of an activation entry exists in ``pattern``:
    ``(part + 1) × pass_inputs <= max_pass_inputs``. COMPUTE checks it against the current
    pattern (ADDRESS_RANGE otherwise); it is separate from :func:`check` because it depends on
    the state CONFIG left, not on the command alone."""
    return (part + 1) * cfg.pass_inputs(*pattern) <= cfg.max_pass_inputs


def pattern_of(cfg: MacroConfig, cmd: Command) -> Pattern | None:
    """The :class:`~sparsecim.hw.pattern.Pattern` a CONFIG command selects (``Pattern(1, 1)``
    for DENSE), or None if the macro does not run it (the command then raises
    ``ILLEGAL_MODE``)."""
    if cmd.opcode != Opcode.CONFIG:
        raise ValueError(f"only CONFIG selects a pattern, not {cmd.opcode.name}")
    pair = (cmd.n, cmd.m)
    if cmd.mode == Mode.DENSE:
        return Pattern(1, 1) if pair == (1, 1) else None
    if cmd.mode == Mode.NM:
        return Pattern(*pair) if pair in cfg.patterns else None
    return None


def config_command(pattern, *, split: int = 0, shift: int = 0) -> Command:
    """The CONFIG command selecting ``pattern`` (a :class:`~sparsecim.hw.pattern.Pattern`,
    ``"2:4"``, ``"dense"`` or an ``(n, m)`` pair): mode DENSE with ``n = m = 1`` for a dense
    pattern, NM otherwise. Whether the macro runs it is :func:`check`'s business.

    Raises
    ------
    ValueError
        If ``pattern`` is not a pattern (see :func:`~sparsecim.hw.pattern.as_pattern`).
    """
    pattern = as_pattern(pattern)
    mode = Mode.DENSE if pattern.is_dense else Mode.NM
    return Command(Opcode.CONFIG, mode=mode, n=pattern.n, m=pattern.m, split=split, shift=shift)


def requantize(cfg: MacroConfig, values, shift: int) -> np.ndarray:
    """MOVE's requantization of accumulator values: round half up after an arithmetic right
    shift by ``shift``, then saturate to the signed ``act_bits`` range."""
    values = np.asarray(values, dtype=np.int64)
    if shift:
        values = (values + (1 << (shift - 1))) >> shift
    lo, hi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1) - 1
    return np.clip(values, lo, hi)


def data_beats(cfg: MacroConfig, cmd: Command, pattern: tuple[int, int] = (1, 1)) -> int:
    """Data-stream beats a legal ``cmd`` consumes while ``pattern`` (``(n, m)``) is current."""
    if cmd.opcode == Opcode.LOAD_W:
        return cmd.count
    if cmd.opcode == Opcode.LOAD_A:
        return cmd.count * cfg.act_beats(*pattern)
    return 0


def result_beats(cfg: MacroConfig, cmd: Command) -> int:
    """Result-stream beats a legal ``cmd`` produces."""
    return cmd.count if cmd.opcode == Opcode.READ else 0


@dataclass(frozen=True)
class CycleCost:
    """Cycles of one command with every stream ready, split as the RTL counters split them."""
    fetch: int = 1
    load: int = 0
    compute: int = 0
    read: int = 0
    stall: int = 0

    @property
    def total(self) -> int:
        return self.fetch + self.load + self.compute + self.read + self.stall

    def __add__(self, other: CycleCost) -> CycleCost:
        return CycleCost(*(getattr(self, f) + getattr(other, f)
                           for f in ("fetch", "load", "compute", "read", "stall")))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


def cycles(cfg: MacroConfig, cmd: Command, pattern: tuple[int, int] = (1, 1)) -> CycleCost:
    """Cycle cost of a legal ``cmd`` when no stream stalls and ``pattern`` (``(n, m)``, set
    by the last CONFIG) is current: the cycle model, per command.

    Every command spends one fetch cycle in which it is accepted and checked; an illegal
    command costs only that cycle before the sequencer halts.
    """
    if cmd.opcode == Opcode.COMPUTE:
        return CycleCost(compute=cmd.count + COMPUTE_DRAIN)
    if cmd.opcode == Opcode.MOVE:
        return CycleCost(load=cmd.count)
    return CycleCost(load=data_beats(cfg, cmd, pattern), read=result_beats(cfg, cmd))


def _lane_range(shape: Shape) -> tuple[int, int]:
    if shape.signed:
        return -(2 ** (shape.width - 1)), 2 ** (shape.width - 1) - 1
    return 0, 2 ** shape.width - 1


def beat_bytes(bits: int) -> int:
    """Bytes of a word of ``bits`` bits in the byte view (little-endian, top bits zero)."""
    return -(-bits // 8)


def words_to_bytes(words, nbytes: int) -> np.ndarray:
    """Words (Python ints) as their byte view: ``uint8`` ``(len(words), nbytes)``,
    little-endian. Raises ``ValueError`` for a negative word or one wider than ``nbytes``."""
    try:
        raw = b"".join([int(word).to_bytes(nbytes, "little") for word in words])
    except OverflowError:
        bad = next(w for w in words if not 0 <= w < 2 ** (8 * nbytes))
        raise ValueError(f"word must fit {8 * nbytes} bits, not {bad:#x}") from None
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, nbytes)


def bytes_to_words(raw: np.ndarray) -> list[int]:
    """Inverse of :func:`words_to_bytes`: each row of little-endian bytes as a Python int."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return [int.from_bytes(row.tobytes(), "little") for row in raw]


def _lanes_contiguous(layout: data.ArrayLayout, width: int) -> bool:
    return all(layout[i].offset == i * width for i in range(layout.length))


def _uint_dtype(width: int):
    return next(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                if width <= 8 * np.dtype(t).itemsize)


@functools.lru_cache(maxsize=256)
def _pack_geometry(layout: data.ArrayLayout):
    """``(width, signed, lo, hi, nbytes, contiguous)`` of a beat layout's lanes, computed
    once per layout (Amaranth builds each lane's field anew on every access)."""
    shape = Shape.cast(layout.elem_shape)
    lo, hi = _lane_range(shape)
    return (shape.width, shape.signed, lo, hi, beat_bytes(layout.size),
            _lanes_contiguous(layout, shape.width))


def pack_beat_bytes(layout: data.ArrayLayout, values) -> np.ndarray:
    """:func:`pack_beats` as the byte view: ``uint8`` ``(beats, beat_bytes(layout.size))``.

    Lanes of 8, 16, 32 or 64 bits at their natural offsets are a little-endian view of the
    values; narrower lanes are ORed into one integer per ``lcm(width, 8)`` bits (the 3-bit
    positions: 8 lanes in 3 bytes); anything else goes through a bit array. The words are those
    of the bit-by-bit definition either way (tested against it for every width)."""
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        values = values.astype(np.int64)
    if values.ndim != 2 or values.shape[1] > layout.length:
        raise ValueError(f"beat values must have shape (beats, <= {layout.length}), "
                         f"not {values.shape}")
    width, signed, lo, hi, nbytes, contiguous = _pack_geometry(layout)
    info = np.iinfo(values.dtype)
    # A dtype whose whole range fits the lane needs no scan of the values.
    if values.size and (info.min < lo or info.max > hi) and (
            values.min() < lo or values.max() > hi):
        bad = values[(values < lo) | (values > hi)][0]
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"lane value must be in {lo}..{hi} ({width}-bit {kind}), not {bad}")
    beats, lanes = values.shape
    udtype = _uint_dtype(width)
    if width == udtype.itemsize * 8 and contiguous and values.dtype.itemsize == udtype.itemsize:
        # Lanes as wide as the values' own dtype: their little-endian bytes are the beat
        # (two's complement is the same bits), one copy.
        own = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
        flat = own.view(np.uint8).reshape(beats, -1)
        if flat.shape[1] == nbytes:
            # Never a view of the caller's array.
            return flat.copy() if np.may_share_memory(own, values) else flat
        out = np.zeros((beats, nbytes), dtype=np.uint8)
        out[:, :flat.shape[1]] = flat
        return out
    # Two's complement in the lane's own width: the cast to the unsigned dtype wraps modulo
    # its size, the mask down to the lane.
    unsigned = values.astype(udtype)
    if width < udtype.itemsize * 8:
        unsigned &= udtype.type((1 << width) - 1)
    out = np.zeros((beats, nbytes), dtype=np.uint8)
    if width == udtype.itemsize * 8 and contiguous:
        flat = unsigned.astype(udtype.newbyteorder("<")).view(np.uint8).reshape(beats, -1)
        out[:, :flat.shape[1]] = flat
        return out
    period = math.lcm(width, 8)
    if period <= 64 and contiguous:
        # Narrow lanes: ``period // width`` lanes fill ``period // 8`` whole bytes; OR them
        # into one integer per period and take its little-endian bytes.
        per, period_bytes = period // width, period // 8
        groups = -(-lanes // per)
        wdtype = np.dtype(np.uint32 if period <= 32 else np.uint64)
        if lanes % per:
            spread = np.zeros((beats, groups * per), dtype=udtype)
            spread[:, :lanes] = unsigned
        else:
            spread = unsigned
        spread = spread.reshape(beats, groups, per)
        word = spread[:, :, 0].astype(wdtype)
        for lane in range(1, per):
            word |= spread[:, :, lane].astype(wdtype) << wdtype.type(lane * width)
        flat = (word.astype(wdtype.newbyteorder("<")).view(np.uint8)
                .reshape(beats, groups, wdtype.itemsize)[:, :, :period_bytes]
                .reshape(beats, -1))
        keep = min(nbytes, flat.shape[1])
        out[:, :keep] = flat[:, :keep]
        return out
    bits = np.zeros((beats, nbytes * 8), dtype=np.uint8)
    lane_bits = np.empty((beats, lanes, width), dtype=np.uint8)
    for bit in range(width):
        lane_bits[:, :, bit] = (unsigned >> udtype.type(bit)) & udtype.type(1)
    if contiguous:
        bits[:, :lanes * width] = lane_bits.reshape(beats, lanes * width)
    else:
        for lane in range(lanes):
            offset = layout[lane].offset
            bits[:, offset:offset + width] = lane_bits[:, lane]
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_beat_bytes(layout: data.ArrayLayout, raw: np.ndarray,
                      dtype=np.int64) -> np.ndarray:
    """:func:`unpack_beats` from the byte view: ``raw`` is ``uint8`` ``(beats, >= bytes of
    layout.size)`` (bytes beyond the layout are ignored); returns ``(beats, lanes)`` in
    ``dtype``, or with ``dtype=None`` in the smallest dtype that holds a lane (for byte-wide
    lanes a view of ``raw``, no copy)."""
    raw = np.asarray(raw, dtype=np.uint8)
    shape, contiguous = _lane_geometry(layout)
    width = shape.width
    beats = raw.shape[0]
    if width in (8, 16, 32, 64) and contiguous:
        # Byte-aligned lanes: a little-endian view is the decoding.
        lanes = raw[:, :layout.length * width // 8]
        if width > 8:
            lanes = np.ascontiguousarray(lanes)
        kind = "i" if shape.signed else "u"
        view = lanes.view(f"<{kind}{width // 8}")
        return view if dtype is None else view.astype(dtype)
    period = math.lcm(width, 8)
    if width < 8 and contiguous:
        # Lanes narrower than a byte (the 3-bit positions: 8 lanes in 3 bytes): every byte
        # of a period looks up, in a table of its 256 values, its bits of each lane already
        # in that lane's own byte; ORing a period's lookups gives its lanes as bytes.
        per, period_bytes = period // width, period // 8
        groups = -(-layout.length // per)
        chunks = _period_chunks(raw, groups, period_bytes)
        tables = _narrow_tables(width)
        word = tables[0][chunks[:, :, 0]]
        for byte in range(1, period_bytes):
            word |= tables[byte][chunks[:, :, byte]]
        values = word.view(np.uint8).reshape(beats, groups, 8)[:, :, :per]
        values = values.reshape(beats, groups * per)[:, :layout.length]
        return _signed_lanes(values, shape, dtype)
    if period <= 64 and contiguous:
        # Narrow lanes: ``period // width`` lanes in every ``period // 8`` bytes; read each
        # period as one integer, then shift and mask all its lanes at once.
        per, period_bytes = period // width, period // 8
        groups = -(-layout.length // per)
        wdtype = np.dtype(np.uint32 if period <= 32 else np.uint64)
        chunks = _period_chunks(raw, groups, period_bytes)
        word = np.zeros((beats, groups), dtype=wdtype)
        for byte in range(period_bytes):
            word |= chunks[:, :, byte].astype(wdtype) << wdtype.type(8 * byte)
        shifts = (np.arange(per) * width).astype(wdtype)
        values = ((word[:, :, None] >> shifts) & wdtype.type((1 << width) - 1))
        values = values.reshape(beats, groups * per)[:, :layout.length]
        return _signed_lanes(values, shape, dtype)
    offsets = np.array([layout[lane].offset for lane in range(layout.length)])
    if width <= 25:
        # Each lane lies within the 4 bytes from its first: gather them as a little-endian
        # uint32 per lane, shift and mask (no bit array).
        padded = np.zeros((beats, raw.shape[1] + 4), dtype=np.uint8)
        padded[:, :raw.shape[1]] = raw
        first = offsets // 8
        word = np.zeros((beats, layout.length), dtype=np.uint32)
        for byte in range(4):
            word |= padded[:, first + byte].astype(np.uint32) << np.uint32(8 * byte)
        values = (word >> (offsets % 8).astype(np.uint32)) & np.uint32((1 << width) - 1)
    else:
        nbits = layout.size
        bits = np.unpackbits(raw[:, :beat_bytes(nbits)], axis=1, count=nbits,
                             bitorder="little")
        values = np.zeros((beats, layout.length), dtype=np.uint64)
        for bit in range(width):
            values |= bits[:, offsets + bit].astype(np.uint64) << np.uint64(bit)
    return _signed_lanes(values, shape, dtype)


@functools.lru_cache(maxsize=256)
def _lane_geometry(layout: data.ArrayLayout) -> tuple[Shape, bool]:
    """A beat layout's lane shape and whether its lanes lie back to back from bit 0 (read
    once per layout: amaranth builds every lane's field on access)."""
    shape = Shape.cast(layout.elem_shape)
    return shape, _lanes_contiguous(layout, shape.width)


def _period_chunks(raw: np.ndarray, groups: int, period_bytes: int) -> np.ndarray:
    """The first ``groups × period_bytes`` bytes of each beat as ``(beats, groups,
    period_bytes)``: a view of ``raw`` when it has them all, else zero-padded."""
    size = groups * period_bytes
    if raw.shape[1] >= size:
        return raw[:, :size].reshape(raw.shape[0], groups, period_bytes)
    chunks = np.zeros((raw.shape[0], size), dtype=np.uint8)
    chunks[:, :raw.shape[1]] = raw
    return chunks.reshape(raw.shape[0], groups, period_bytes)


@functools.cache
def _narrow_tables(width: int) -> np.ndarray:
    """Lookup tables for lanes of ``width < 8`` bits: entry ``[k, v]`` is a little-endian
    ``uint64`` whose byte ``j`` holds the bits of lane ``j`` of a ``lcm(width, 8)``-bit period
    that byte ``k`` of the period contributes when it has value ``v``."""
    period = math.lcm(width, 8)
    values = np.arange(256, dtype=np.uint64)
    tables = np.zeros((period // 8, 256), dtype=np.uint64)
    for k in range(period // 8):
        for lane in range(period // width):
            lo, hi = max(lane * width, 8 * k), min((lane + 1) * width, 8 * k + 8)
            if lo < hi:
                bits = (values >> np.uint64(lo - 8 * k)) & np.uint64((1 << (hi - lo)) - 1)
                tables[k] |= bits << np.uint64(lo - lane * width + 8 * lane)
    return tables.astype("<u8")


def _signed_lanes(values: np.ndarray, shape: Shape, dtype) -> np.ndarray:
    """Unsigned lane values as the lane's type: ``dtype``, or with ``None`` the smallest
    dtype that holds it."""
    width = shape.width
    if dtype is None:
        dtype = _uint_dtype(width) if not shape.signed else next(
            np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64)
            if width <= 8 * np.dtype(t).itemsize)
    if not shape.signed:
        return values.astype(dtype, copy=False)   # values is always a fresh array here
    out = values.astype(np.int64)
    if width < 64:
        out -= (out >> (width - 1)) << width  # two's complement sign bit
    return out.astype(dtype)


def _check_words(words, size: int, what: str) -> list:
    words = list(words)
    limit = 2 ** size
    for word in words:
        if not 0 <= word < limit:
            raise ValueError(f"{what} must fit {size} bits, not {word:#x}")
    return words


def pack_beats(layout: data.ArrayLayout, values) -> list[int]:
    """Pack rows of lane values into beat words as ``layout`` places them.

    ``values`` has shape ``(beats, lanes)`` with ``lanes <= layout.length``; missing lanes are
    zero. Lanes are signed or unsigned as ``layout.elem_shape`` says. Raises ``ValueError`` for
    a value outside the lane's range. :func:`pack_beat_bytes` gives the same words as bytes.
    """
    return bytes_to_words(pack_beat_bytes(layout, values))


def unpack_beats(layout: data.ArrayLayout, words) -> np.ndarray:
    """Inverse of :func:`pack_beats`: beat words to an ``int64`` array ``(beats, lanes)``."""
    size = layout.size  # computed by amaranth on every access: hoisted out of the loop
    words = _check_words(words, size, "beat word")
    return unpack_beat_bytes(layout, words_to_bytes(words, beat_bytes(size)))


@functools.cache
def _weight_row_fields(cfg: MacroConfig):
    """``(weight lanes, meta lanes or None, meta bit offset, bits, bytes)`` of a LOAD_W beat,
    computed once per config."""
    layout = weight_row_layout(cfg)
    meta = layout["meta"] if cfg.meta_bits else None
    return (layout["weight"].shape, meta and meta.shape, meta.offset if meta else 0,
            layout.size, beat_bytes(layout.size))


def pack_weight_row_bytes(cfg: MacroConfig, weights, meta=None) -> np.ndarray:
    """:func:`pack_weight_rows` as the byte view: ``uint8`` ``(rows, beat_bytes(data_bits))``.
    The metadata field starts on a byte boundary (after ``cols`` whole weights), so the two
    fields pack separately into their own bytes."""
    weight_lanes, meta_lanes, shift, size, nbytes = _weight_row_fields(cfg)
    weights = np.asarray(weights)
    head = pack_beat_bytes(weight_lanes, weights)
    if meta is not None:
        meta = np.asarray(meta)
        if meta.shape != weights.shape:
            raise ValueError(f"meta must have the shape of weights {weights.shape}, "
                             f"not {meta.shape}")
        if not cfg.meta_bits and meta.any():
            raise ValueError("metadata must be 0 on a dense-only config (meta_bits is 0)")
    if meta is None or not cfg.meta_bits:
        if head.shape[1] == nbytes:
            return head
        out = np.zeros((head.shape[0], nbytes), dtype=np.uint8)
        out[:, :head.shape[1]] = head
        return out
    tail = pack_beat_bytes(meta_lanes, meta)
    if shift % 8:
        # Not byte-aligned (weight_bits × cols not a multiple of 8): merge at the bit level.
        bits = np.zeros((head.shape[0], nbytes * 8), dtype=np.uint8)
        bits[:, :shift] = np.unpackbits(head, axis=1, count=shift, bitorder="little")
        bits[:, shift:size] = np.unpackbits(tail, axis=1, count=size - shift,
                                            bitorder="little")
        return np.packbits(bits, axis=1, bitorder="little")
    out = np.empty((head.shape[0], nbytes), dtype=np.uint8)
    out[:, :shift // 8] = head[:, :shift // 8]
    out[:, shift // 8:shift // 8 + tail.shape[1]] = tail
    out[:, shift // 8 + tail.shape[1]:] = 0
    return out


def unpack_weight_row_bytes(cfg: MacroConfig, raw: np.ndarray,
                            dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unpack_weight_rows` from the byte view ``(rows, >= beat_bytes(data_bits))``;
    ``dtype`` as for :func:`unpack_beat_bytes`."""
    layout = weight_row_layout(cfg)
    raw = np.asarray(raw, dtype=np.uint8)
    field = layout["weight"]
    weights = unpack_beat_bytes(field.shape, raw, dtype)
    if not cfg.meta_bits:
        return weights, np.zeros(weights.shape, dtype=dtype or np.uint8)
    shift = layout["meta"].offset
    if shift % 8:
        bits = np.unpackbits(raw, axis=1, count=layout.size, bitorder="little")[:, shift:]
        tail = np.packbits(bits, axis=1, bitorder="little")
    else:
        tail = raw[:, shift // 8:]
    return weights, unpack_beat_bytes(layout["meta"].shape, tail, dtype)


def pack_weight_rows(cfg: MacroConfig, weights, meta=None) -> list[int]:
    """LOAD_W beat words from ``weights`` and ``meta``, both ``(rows, <= cols)``; ``meta``
    (each weight's position in its group) defaults to zeros. Raises ``ValueError`` for a
    weight or a position out of its range, or metadata given to a dense-only config.
    :func:`pack_weight_row_bytes` gives the same words as bytes."""
    return bytes_to_words(pack_weight_row_bytes(cfg, weights, meta))


def unpack_weight_rows(cfg: MacroConfig, words) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_weight_rows`: ``(weights, meta)``, each ``(rows, cols)``
    ``int64`` (``meta`` is zeros for a dense-only config)."""
    layout = weight_row_layout(cfg)
    words = _check_words(words, layout.size, "weight row word")
    return unpack_weight_row_bytes(cfg, words_to_bytes(words, beat_bytes(layout.size)))


# --- The chip level (ISA 6): K macros under one command stream (docs/chip.md). ---

#: Chip counters, in the order of the chip status port: cycles from reset to the chip's halt,
#: cycles the dispatcher hands a command to the macro queues, cycles the weight port moves a
#: row, cycles the activation port moves a beat, cycles the result port moves a beat, and
#: cycles the weight port's macros are all waiting and a row is offered but the bandwidth
#: credit is short. Each macro keeps its own :data:`STATUS_COUNTERS` beside them.
CHIP_COUNTERS = ("total", "dispatch", "w_load", "a_load", "read", "bw_stall")


@functools.cache
def chip_command_layout(chip: ChipConfig) -> data.StructLayout:
    """A chip command word: the macro command word ``cmd`` (:func:`command_layout`), then the
    macros it addresses, ``target`` .. ``target + span - 1``. END ignores both and goes to
    every macro."""
    return data.StructLayout({
        "cmd": command_layout(chip.macro),
        "target": _addr(chip.macros),
        "span": _width(chip.macros),
    })


@functools.cache
def chip_result_layout(chip: ChipConfig) -> data.ArrayLayout:
    """A chip result beat: per column, the sum of the addressed macros' accumulators, with
    ``ceil(log2 K)`` bits more than one accumulator so that the sum never wraps."""
    return data.ArrayLayout(signed(chip.result_bits_per_lane), chip.macro.cols)


@functools.cache
def chip_counters_layout(chip: ChipConfig) -> data.StructLayout:
    """The chip counters, :data:`CHIP_COUNTERS` in order, ``counter_bits`` each."""
    return data.StructLayout({name: chip.macro.counter_bits for name in CHIP_COUNTERS})


def encode_chip(chip: ChipConfig, cmd: Command, *, target: int = 0, span: int = 1) -> int:
    """Encode ``cmd`` for the macros ``target .. target + span - 1`` as a chip command word.

    Raises
    ------
    ValueError
        As :func:`encode`, or if ``target`` or ``span`` does not fit its field. Whether the
        range lies on the chip is :func:`check_chip`'s question (the dispatcher's check).
    """
    layout = chip_command_layout(chip)
    for name, value in (("target", target), ("span", span)):
        width = _field_shape(layout[name]).width
        if not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** width:
            raise ValueError(f"chip command {name} must be an integer from 0 to "
                             f"{2 ** width - 1} ({width} bits), not {value!r}")
    word = encode(chip.macro, cmd)
    return (word << layout["cmd"].offset | int(target) << layout["target"].offset
            | int(span) << layout["span"].offset)


def decode_chip(chip: ChipConfig, word: int) -> tuple[int, int, int]:
    """``(target, span, macro command word)`` of a chip command word; the macro word is
    decoded (and its opcode judged) by :func:`decode` with ``chip.macro``.

    Raises
    ------
    ValueError
        If ``word`` is negative or wider than :func:`chip_command_layout`.
    """
    layout = chip_command_layout(chip)
    if not isinstance(word, (int, np.integer)) or not 0 <= word < 2 ** layout.size:
        raise ValueError(f"chip command word must be an integer of at most {layout.size} "
                         f"bits, not {word!r}")
    word = int(word)
    return (_bits(word, layout["target"]), _bits(word, layout["span"]),
            _bits(word, layout["cmd"]))


def check_chip(chip: ChipConfig, target: int, span: int, macro_word: int) -> ErrorCode:
    """The error the dispatcher raises for a chip command (``NONE`` if it dispatches it).

    END is never refused (it goes to every macro). Otherwise ``span == 0`` raises ZERO_COUNT
    and ``target + span > K`` ADDRESS_RANGE. Everything else about the command is judged by
    the macros that run it (:func:`check`).
    """
    if _bits(macro_word, command_layout(chip.macro)["opcode"]) == Opcode.END.value:
        return ErrorCode.NONE
    if span == 0:
        return ErrorCode.ZERO_COUNT
    if target + span > chip.macros:
        return ErrorCode.ADDRESS_RANGE
    return ErrorCode.NONE


def disassemble(cfg: MacroConfig, word: int) -> str:
    """One line of text for a command word, also for illegal ones."""
    try:
        return str(decode(cfg, word))
    except DecodeError as exc:
        return f"<illegal: {exc}>"


def isa_markdown(cfg: MacroConfig, name: str) -> str:
    """The ISA reference for ``cfg`` (preset ``name``) as Markdown: ``docs/isa.md``."""
    layout = command_layout(cfg)
    out = [
        "# sparsecim ISA reference",
        "",
        "Generated by `python -m sparsecim.hw.isa` from `hw/isa.py`; do not edit.",
        f"ISA version {ISA_VERSION}. Field widths below are for the `{name}` preset "
        f"(`{cfg.slug}`); every width is a function of `MacroConfig`.",
        "",
        f"A command word is {layout.size} bits: `opcode` in bits "
        f"[{layout['opcode'].offset}, {layout['opcode'].offset + Shape.cast(Opcode).width}) "
        f"and the operands from bit {layout['args'].offset} up. "
        f"Data beats are {cfg.data_bits} bits, result beats {cfg.result_bits} bits.",
        "",
        "Cycles are those of the cycle model with no stream stalls; stalls add cycles counted "
        "by the `stall` counter. After its fetch cycle a command runs to completion before the "
        "next is fetched.",
        "",
        "| opcode | value | operands | cycles |",
        "| --- | --- | --- | --- |",
    ]
    for op in Opcode:
        out.append(f"| {op.name} | {op.value} | {_DOCS[op].fmt} | {_DOCS[op].cycles} |")
    for op in Opcode:
        doc = _DOCS[op]
        out += ["", f"## {op.name} ({op.value})", "", f"**Format.** {doc.fmt}", ""]
        fields = args_layout(cfg, op)
        if list(fields):
            out += ["| field | bits | width |", "| --- | --- | --- |"]
            base = layout["args"].offset
            for fname, field in fields:
                width = _field_shape(field).width
                lo = base + field.offset
                out.append(f"| `{fname}` | [{lo}, {lo + width}) | {width} |")
            out.append("")
        out += [f"**Action.** {doc.action}", "", f"**Notes.** {doc.notes}", "",
                f"**Cycles.** {doc.cycles}"]
    out += ["", "## Enumerations", ""]
    for enum_cls in (Mode, ErrorCode):
        members = ", ".join(f"{m.name} = {m.value}" for m in enum_cls)
        out.append(f"- `{enum_cls.__name__}` ({Shape.cast(enum_cls).width} bits): {members}")
    out += [
        "",
        "## Data and result beats",
        "",
        f"- Weight row (LOAD_W): {cfg.cols} lanes of {cfg.weight_bits}-bit signed weights; "
        f"weight `c` in bits [{cfg.weight_bits}·c, {cfg.weight_bits}·(c+1))"
        + (f", then {cfg.cols} lanes of {cfg.meta_bits}-bit metadata; position `c` in bits "
           f"[{cfg.cols * cfg.weight_bits} + {cfg.meta_bits}·c, ...)." if cfg.meta_bits
           else "."),
        f"- Activations (LOAD_A): {cfg.act_lanes} lanes of {cfg.act_bits}-bit signed per beat. "
        "Entry size and beats per entry by pattern: "
        + ", ".join(f"{'dense' if (n, m) == (1, 1) else f'{n}:{m}'} "
                    f"{cfg.pass_inputs(n, m)} in {cfg.act_beats(n, m)}"
                    for n, m in cfg.modes) + ".",
        f"- Result (READ): {cfg.cols} lanes of {cfg.acc_bits}-bit signed accumulators.",
        f"- Counters (status): cycles {', '.join(COUNTERS)}, then events "
        f"{', '.join(EVENT_COUNTERS)} (compute passes issued, LOAD_W beats, LOAD_A beats); "
        f"{cfg.counter_bits} bits each, saturating.",
        "",
    ]
    out += _chip_markdown(chip_preset("edge"), "edge")
    return "\n".join(out)


def _chip_markdown(chip: ChipConfig, name: str) -> list[str]:
    layout = chip_command_layout(chip)
    out = ["## Chip command words (ISA 6)", "",
           f"Widths for the `{name}` chip preset (K = {chip.macros}); the timing is "
           "`docs/chip.md`. A chip command word is the macro command word followed by the "
           "range of macros it addresses:", "",
           "| field | bits | width |", "| --- | --- | --- |"]
    for fname, field in layout:
        width = Shape.cast(field.shape).width
        out.append(f"| `{fname}` | [{field.offset}, {field.offset + width}) | {width} |")
    out += ["",
            "- CONFIG, COMPUTE and MOVE go to every macro of the range; LOAD_W rows and LOAD_A "
            "beats are broadcast to all of them; READ sums their beats lane by lane "
            f"({chip.result_bits_per_lane}-bit lanes). END goes to every macro.",
            "- The dispatcher raises ZERO_COUNT for `span = 0` and ADDRESS_RANGE for "
            "`target + span > K`; OUT_OF_STEP when the macros of a LOAD_A disagree on its "
            "length.",
            f"- Chip counters: {', '.join(CHIP_COUNTERS)}; every macro keeps its own.", ""]
    return out


if __name__ == "__main__":
    print(isa_markdown(preset("flexcim"), "flexcim"), end="")
