"""Macro parameters: the single source of every size and width in sparsecim.

The hardware, the ISA, the mapper, the golden model and the testbench all derive their
sizes from one :class:`MacroConfig`. Nothing else states a width.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .pattern import Pattern

__all__ = ["MacroConfig", "PRESETS", "FLEXCIM_PATTERNS", "MAX_M", "preset", "ceil_log2",
           "load_macro", "macro_from_table", "resolve_macro", "macro_toml",
           "ChipConfig", "CHIP_PRESETS", "chip_preset", "chip_from_table", "load_chip",
           "resolve_chip", "chip_toml"]

#: Largest group width a pattern may have: bounds the metadata and the distribution network.
MAX_M = 16

#: The N:M patterns of the FlexCiM macro (P=4) besides dense.
FLEXCIM_PATTERNS = ((1, 2), (2, 4), (1, 4), (4, 8), (2, 8), (1, 8))


def ceil_log2(value: int) -> int:
    """Smallest ``b`` with ``2**b >= value`` (0 for 1)."""
    return max(0, (value - 1).bit_length())


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True, kw_only=True)
class MacroConfig:
    """Parameters of one DCiM macro.

    The macro holds ``submacros`` (P) sub-macros of ``rows × cols`` weight cells. A compute
    pass multiplies one activation vector of ``rows × submacros`` inputs with all cells and sums
    the P sub-macro column results, giving ``cols`` partial outputs.

    Parameters
    ----------
    rows : int
        Cells per column of one sub-macro (reduction depth of a sub-macro).
    cols : int
        Columns of a sub-macro; one output channel each.
    submacros : int
        Sub-macro count P, a power of two.
    weight_bits, act_bits : int
        Signed weight and activation widths, 2 to 16.
    acc_bits : int
        Signed width of an output accumulator, at least :attr:`pass_sum_bits`, at most 64.
    act_depth : int
        Activation buffer entries; an entry holds one pass worth of activations in any mode
        (:attr:`max_pass_inputs` of them).
    acc_depth : int
        Output accumulator entries; an entry holds ``cols`` accumulators.
    counter_bits : int
        Width of each saturating performance counter, 16 to 64.
    patterns : tuple of Pattern
        The sparse N:M patterns the macro runs besides dense, given as ``(n, m)`` pairs or
        :class:`~sparsecim.hw.pattern.Pattern` and stored as ``Pattern``: ``n``
        weights kept per group of ``m`` inputs. ``n`` must divide ``submacros`` (the P
        sub-macros form P/n clusters of n) and ``1 <= n < m <= MAX_M``. Dense (1:1) is always
        supported and is not listed. Stored sorted; a JSON list of pairs is accepted.

    Raises
    ------
    ValueError
        For any field outside its constraint, as ``"<field> must be <constraint>, not <value>"``.
    """

    rows: int
    cols: int
    submacros: int
    act_depth: int
    acc_depth: int
    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: int = 32
    counter_bits: int = 32
    patterns: tuple = ()

    def __post_init__(self):
        def need(ok, field, constraint):
            if not ok:
                value = getattr(self, field)
                raise ValueError(f"{field} must be {constraint}, not {value!r}")

        for field in ("rows", "cols", "act_depth", "acc_depth"):
            value = getattr(self, field)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 field, "a positive integer")
        need(isinstance(self.submacros, int) and _is_pow2(self.submacros),
             "submacros", "a power of two")
        for field in ("weight_bits", "act_bits"):
            value = getattr(self, field)
            need(isinstance(value, int) and 2 <= value <= 16, field, "an integer from 2 to 16")
        need(isinstance(self.acc_bits, int) and self.pass_sum_bits <= self.acc_bits <= 64,
             "acc_bits", f"an integer from {self.pass_sum_bits} (the pass sum width) to 64")
        need(isinstance(self.counter_bits, int) and 16 <= self.counter_bits <= 64,
             "counter_bits", "an integer from 16 to 64")
        need(isinstance(self.patterns, (tuple, list)), "patterns", "a sequence of (n, m) pairs")
        pairs = []
        for pair in self.patterns:
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                raise ValueError(f"patterns must hold (n, m) integer pairs, not {pair!r}")
            n, m = pair
            if not 1 <= n < m <= MAX_M:
                raise ValueError(f"pattern {n}:{m} must have 1 <= n < m <= {MAX_M} "
                                 "(dense is always supported and is not listed)")
            if self.submacros % n:
                raise ValueError(f"pattern {n}:{m} needs n to divide submacros "
                                 f"({self.submacros}), so that the sub-macros form clusters "
                                 f"of {n}")
            pairs.append(Pattern(n, m))
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"patterns must not repeat a pattern, not {self.patterns!r}")
        # Canonical form, so that equal sets compare (and hash, and slug) equal.
        object.__setattr__(self, "patterns", tuple(sorted(pairs)))

    # Derived sizes. Properties so that they can never disagree with the fields.

    @property
    def reduction(self) -> int:
        """Inputs reduced by one compute pass: ``rows × submacros``."""
        return self.rows * self.submacros

    @property
    def weight_rows(self) -> int:
        """Weight rows of the whole macro, addressed globally as ``sub × rows + row``."""
        return self.rows * self.submacros

    @property
    def cells(self) -> int:
        """Weight cells of the macro (also its peak MACs per cycle)."""
        return self.rows * self.cols * self.submacros

    @property
    def product_bits(self) -> int:
        """Width of one signed weight × activation product."""
        return self.weight_bits + self.act_bits

    @property
    def column_sum_bits(self) -> int:
        """Width of a sub-macro column sum (balanced adder tree over ``rows`` products)."""
        return self.product_bits + ceil_log2(self.rows)

    @property
    def pass_sum_bits(self) -> int:
        """Width of a merged column sum over all P sub-macros."""
        return self.column_sum_bits + ceil_log2(self.submacros)

    @property
    def max_split(self) -> int:
        """Largest merge split: ``log2(P)`` (every sub-macro a group of its own); split ``s``
        keeps ``2**s`` groups of ``P / 2**s`` sub-macros apart, 0 sums all P."""
        return ceil_log2(self.submacros)

    @property
    def modes(self) -> tuple:
        """Every pattern the macro runs, dense first: ``(Pattern(1, 1), *patterns)``. The hardware
        holds the current one as an index into this tuple."""
        return (Pattern(1, 1), *self.patterns)

    def supports(self, n: int, m: int) -> bool:
        """True if the macro runs pattern ``n:m`` (``1:1`` is dense)."""
        return (n, m) == (1, 1) or (n, m) in self.patterns

    def check_pattern(self, n: int, m: int, *, on: str = "this macro") -> None:
        """Raise ``ValueError`` naming the supported patterns unless the macro runs ``n:m``;
        ``on`` names the macro in the message (e.g. ``"preset tiny"``)."""
        if not self.supports(n, m):
            raise ValueError(f"pattern {n}:{m} is not supported by {on}; supported are "
                             f"dense and {self.pattern_names() or 'nothing else'}")

    @property
    def max_m(self) -> int:
        """Largest group width ``m`` of any supported pattern (1 if only dense)."""
        return max([1] + [m for _, m in self.patterns])

    @property
    def meta_bits(self) -> int:
        """Metadata bits per cell: the position of its weight in a group of up to
        :attr:`max_m` inputs (0 if the macro is dense only)."""
        return ceil_log2(self.max_m)

    def pass_inputs(self, n: int = 1, m: int = 1) -> int:
        """Inputs one compute pass covers in pattern ``n:m``: ``rows × (P/n) × m`` (each of the
        ``rows × P/n`` cluster rows takes one group of ``m``); ``reduction`` for dense.

        Raises ``ValueError`` for a pattern the macro does not support."""
        self.check_pattern(n, m)
        return self.rows * (self.submacros // n) * m

    def pattern_names(self) -> str:
        """The supported sparse patterns as text, e.g. ``"1:2, 2:4"``."""
        return ", ".join(str(p) for p in self.patterns)

    @property
    def max_parts(self) -> int:
        """Parts of an activation entry a COMPUTE may address: ``max_pass_inputs`` over the
        narrowest pass."""
        return self.max_pass_inputs // min(self.pass_inputs(n, m) for n, m in self.modes)

    @property
    def max_pass_inputs(self) -> int:
        """Widest activation entry over every supported mode: the activation buffer's width."""
        return max(self.pass_inputs(n, m) for n, m in self.modes)

    @property
    def data_bits(self) -> int:
        """Width of a data-stream beat: one weight row of one sub-macro, each cell's weight and
        its metadata."""
        return self.cols * (self.weight_bits + self.meta_bits)

    @property
    def act_lanes(self) -> int:
        """Activations carried by one data beat."""
        return self.data_bits // self.act_bits

    def act_beats(self, n: int = 1, m: int = 1) -> int:
        """Data beats per activation entry in pattern ``n:m`` (the last may be partly unused);
        dense by default."""
        return -(-self.pass_inputs(n, m) // self.act_lanes)

    @property
    def max_act_beats(self) -> int:
        """Data beats of the widest activation entry (the buffer's beats per entry)."""
        return -(-self.max_pass_inputs // self.act_lanes)

    @property
    def result_bits(self) -> int:
        """Width of a result-stream beat: one accumulator entry."""
        return self.cols * self.acc_bits

    def max_reduction(self) -> int:
        """Largest K whose worst-case dot product fits ``acc_bits`` without wrapping.

        The worst case is every product at ``(-2**(w-1)) × (-2**(a-1)) = 2**(w+a-2)``.
        """
        return (2 ** (self.acc_bits - 1) - 1) // 2 ** (self.product_bits - 2)

    @property
    def slug(self) -> str:
        """Short name of the parameters, used to name build folders."""
        slug = (f"p{self.submacros}r{self.rows}c{self.cols}"
                f"-w{self.weight_bits}a{self.act_bits}acc{self.acc_bits}"
                f"-ad{self.act_depth}od{self.acc_depth}")
        if self.counter_bits != 32:
            slug += f"-cnt{self.counter_bits}"
        if self.patterns:
            slug += "-nm" + "_".join(f"{n}{m}" for n, m in self.patterns)
        return slug

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["patterns"] = [list(pair) for pair in self.patterns]
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> MacroConfig:
        """Build from :meth:`to_dict` output; unknown or missing fields raise ``ValueError``."""
        fields = _known_fields(cls, fields, "config")
        if isinstance(fields.get("patterns"), list):
            fields["patterns"] = tuple(tuple(p) if isinstance(p, list) else p
                                       for p in fields["patterns"])
        return _build(cls, fields, "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_toml(cls, path) -> MacroConfig:
        """Build from a TOML file: the fields as top-level keys or in a ``[macro]`` table
        (``patterns = [[1, 2], [2, 4]]`` or ``["1:2", "2:4"]``); see :func:`load_macro`."""
        return load_macro(path)


PRESETS: dict[str, MacroConfig] = {
    # Small enough that Amaranth simulation and Verilator builds take seconds.
    "tiny": MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8,
                        patterns=FLEXCIM_PATTERNS),
    # FlexCiM default: P=4 sub-macros of 32×32, a 128-deep reduction × 32 outputs.
    "flexcim": MacroConfig(rows=32, cols=32, submacros=4, act_depth=64, acc_depth=64,
                           patterns=FLEXCIM_PATTERNS),
    # Small enough to place and route on an iCE40 UP5K (tb/fpga.py): 2 × 2×2 cells, whose 8
    # products take the UP5K's 8 DSPs; patterns with m <= 4 (narrow activation entries, a 4:1
    # cell select) and 16-bit counters.
    "fpga": MacroConfig(rows=2, cols=2, submacros=2, act_depth=4, acc_depth=4,
                        counter_bits=16, patterns=((1, 2), (2, 4), (1, 4))),
    # Paper scale: 4 × 64×64 (256-deep reduction × 64 outputs); for export and FPGA figures.
    "paper": MacroConfig(rows=64, cols=64, submacros=4, act_depth=128, acc_depth=128,
                         patterns=FLEXCIM_PATTERNS),
}


def preset(name: str) -> MacroConfig:
    """Return the named preset; ``ValueError`` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {name!r}") from None


def _pattern_pair(value):
    # "2:4" in a TOML file reads as the pair (2, 4); anything else is left to the validation.
    if isinstance(value, str) and value.count(":") == 1:
        n, m = value.split(":")
        if n.strip().isdigit() and m.strip().isdigit():
            return (int(n), int(m))
    return value


def _known_fields(cls, fields, what: str) -> dict:
    # from_dict's checks, shared by the macro and the chip: a mapping of known fields.
    if not isinstance(fields, dict):
        raise ValueError(f"{what} must be a mapping of fields, not {fields!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{what} has unknown fields {unknown}; known are {sorted(known)}")
    return dict(fields)


def _build(cls, fields: dict, what: str):
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"{what} is incomplete: {exc}") from None


def _from_table(build, table, where: str, key: str):
    # A config from a TOML [key] table by ``build``; its one-line errors prefixed with ``where``.
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [{key}] must be a table of fields, not {table!r}")
    try:
        return build(table)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _load(path, key: str, from_table):
    # A TOML file's [key] table, or its top-level keys, read by ``from_table``.
    path = Path(path)
    data = read_toml(path, what=f"{key} file")
    if isinstance(data.get(key), dict):
        data = data[key]
    return from_table(data, where=f"{key} file {path}")


def _resolve(spec: str, presets: dict, load, what: str):
    # A preset name of ``presets`` or a ``.toml`` file read by ``load``.
    if spec in presets:
        return presets[spec]
    if str(spec).endswith(".toml"):
        return load(spec)
    raise ValueError(f"{what} must be one of {', '.join(sorted(presets))} or a .toml file, "
                     f"not {spec!r}")


def macro_from_table(table, *, where: str) -> MacroConfig:
    """A :class:`MacroConfig` from a TOML table (a dict of fields), validated as any config.

    Raises
    ------
    ValueError
        As :meth:`MacroConfig.from_dict`, prefixed with ``where`` (e.g. ``"macro file
        my.toml"``), on one line.
    """
    def build(table):
        fields = dict(table)
        if isinstance(fields.get("patterns"), list):
            fields["patterns"] = [_pattern_pair(p) for p in fields["patterns"]]
        return MacroConfig.from_dict(fields)
    return _from_table(build, table, where, "macro")


def read_toml(path, *, what: str) -> dict:
    """The table of the UTF-8 TOML file ``path``: the one reader of the project's TOML inputs
    (macros, run settings, sweep specs, technology files).

    Raises
    ------
    ValueError
        One line naming ``what`` (e.g. ``"settings file"``) and the path: a file that does not
        exist, is a folder, cannot be read, is not UTF-8 or is not valid TOML.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} must be a TOML file, not the folder {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} must be UTF-8 text, not bytes such as "
                         f"{exc.object[exc.start:exc.start + 4]!r} at offset "
                         f"{exc.start}") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid TOML: {exc}") from None


def load_macro(path) -> MacroConfig:
    """Read a macro from a TOML file: its fields as top-level keys or in a ``[macro]`` table.

    Raises
    ------
    ValueError
        If the file does not exist, is not valid TOML, or a field is unknown, missing or
        outside its constraint; one line naming the file and the field.
    """
    return _load(path, "macro", macro_from_table)


def resolve_macro(spec: str) -> MacroConfig:
    """A preset name (:data:`PRESETS`) or the path of a TOML macro file (``*.toml``).

    Raises
    ------
    ValueError
        For an unknown name, as ``"preset must be one of [...] or a .toml file, not 'x'"``,
        or as :func:`load_macro`.
    """
    return _resolve(spec, PRESETS, load_macro, "preset")


def macro_toml(config: MacroConfig, *, comment: str = "") -> str:
    """``config`` as a TOML ``[macro]`` table that :func:`load_macro` reads back."""
    lines = [f"# {comment}"] if comment else []
    lines.append("[macro]")
    for key, value in config.to_dict().items():
        if key == "patterns":
            value = "[" + ", ".join(f'"{n}:{m}"' for n, m in value) + "]"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class ChipConfig:
    """Parameters of an accelerator of ``macros`` (K) identical macros under one command stream.

    The chip's timing contract is ``docs/chip.md`` (the :class:`~sparsecim.hw.chip.Chip`
    docstring restates it): a dispatcher copies each command into the command queues of the
    macros it addresses, every macro runs its own queue, a weight port (off-chip memory, at
    ``weight_bw`` bytes per cycle) and an activation port (the global buffer, one beat per
    cycle, broadcast to the macros a LOAD_A addresses) serve the loads in command order, and a
    result port sums the READ beats of the macros a READ addresses.

    Parameters
    ----------
    macro : MacroConfig
        The macro, every one of the K alike.
    macros : int
        K, from 1 to 4096.
    clock_mhz : float
        Clock frequency, for seconds and tokens/s (0 < f <= 10000).
    weight_bw : int
        Off-chip weight bandwidth in bytes per cycle (1 to 65536). A weight row of
        ``weight_row_bytes`` bytes can pass the weight port once that many bytes of credit
        have accrued (``docs/chip.md``); at ``weight_bw >= weight_row_bytes`` one row a cycle.
    offchip_bytes : int
        Off-chip memory capacity (weights of every streamed layer live there), at least 1.
    buffer_bytes : int
        On-chip activation / global buffer, at least one activation beat: it holds the
        activations of a layer's input and output (and the KV cache, when costed on chip).
    queue : int
        Depth of each macro's command queue, 1 to 64: how far the dispatcher may run ahead of
        a busy macro, which is what lets loads into some macros overlap compute in others.

    Raises
    ------
    ValueError
        For any field outside its constraint, as ``"<field> must be <constraint>, not <value>"``.
    """

    macro: MacroConfig
    macros: int
    clock_mhz: float
    weight_bw: int
    offchip_bytes: int
    buffer_bytes: int
    queue: int = 4

    def __post_init__(self):
        def need(ok, field, constraint):
            if not ok:
                raise ValueError(f"{field} must be {constraint}, not {getattr(self, field)!r}")

        def integer(value):
            return isinstance(value, int) and not isinstance(value, bool)

        need(isinstance(self.macro, MacroConfig), "macro", "a MacroConfig")
        need(integer(self.macros) and 1 <= self.macros <= 4096, "macros",
             "an integer from 1 to 4096")
        need(isinstance(self.clock_mhz, (int, float)) and not isinstance(self.clock_mhz, bool)
             and 0 < self.clock_mhz <= 10000, "clock_mhz", "a number above 0, at most 10000")
        need(integer(self.weight_bw) and 1 <= self.weight_bw <= 65536, "weight_bw",
             "an integer from 1 to 65536 (bytes per cycle)")
        need(integer(self.offchip_bytes) and self.offchip_bytes >= 1, "offchip_bytes",
             "a positive integer")
        need(integer(self.buffer_bytes) and self.buffer_bytes >= self.act_beat_bytes,
             "buffer_bytes", f"an integer of at least one activation beat "
             f"({self.act_beat_bytes} bytes)")
        need(integer(self.queue) and 1 <= self.queue <= 64, "queue",
             "an integer from 1 to 64")
        object.__setattr__(self, "clock_mhz", float(self.clock_mhz))

    @property
    def weight_row_bytes(self) -> int:
        """Bytes one weight row (a LOAD_W beat, weights and metadata) takes off chip."""
        return -(-(self.macro.cols * (self.macro.weight_bits + self.macro.meta_bits)) // 8)

    @property
    def credit_cap(self) -> int:
        """Largest value of the weight port's byte credit: ``weight_row_bytes + weight_bw - 1``.

        A row moves when the credit holds a whole row; capping there would drop the credit
        left over between rows and move rows only every ``ceil(R / weight_bw)`` cycles. One
        row plus one cycle's bandwidth keeps every byte while rows are wanted (the long-run rate
        is exactly ``weight_bw / R`` rows a cycle) and still allows no burst of two rows after
        an idle spell when ``weight_bw < R``."""
        return self.weight_row_bytes + self.weight_bw - 1

    @property
    def act_beat_bytes(self) -> int:
        """Bytes of one activation beat: the activation broadcast width, one beat a cycle."""
        return -(-(self.macro.act_lanes * self.macro.act_bits) // 8)

    @property
    def broadcast_bits(self) -> int:
        """Activation broadcast width in bits: the macro's activation beat, sent to every macro
        a LOAD_A addresses in the same cycle."""
        return self.macro.act_lanes * self.macro.act_bits

    @property
    def cells(self) -> int:
        """Weight cells on the chip."""
        return self.macros * self.macro.cells

    @property
    def result_bits_per_lane(self) -> int:
        """Width of a summed result lane: a macro accumulator plus ceil(log2 K) carry bits."""
        return self.macro.acc_bits + ceil_log2(self.macros)

    @property
    def load_queue(self) -> int:
        """Depth of the weight, activation and result routers' queues: a queued or running
        command of every macro, so that they are never full (``docs/chip.md``)."""
        return self.macros * (self.queue + 1)

    @property
    def slug(self) -> str:
        """Short name of the parameters, used to name build folders."""
        clock = f"{self.clock_mhz:g}".replace(".", "p")
        return (f"k{self.macros}q{self.queue}bw{self.weight_bw}f{clock}"
                f"-buf{self.buffer_bytes}-off{self.offchip_bytes}-{self.macro.slug}")

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["macro"] = self.macro.to_dict()
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> ChipConfig:
        """Build from :meth:`to_dict` output (``macro`` a table of macro fields or a macro
        preset name); unknown or missing fields raise ``ValueError``."""
        fields = _known_fields(cls, fields, "chip")
        macro = fields.get("macro")
        if isinstance(macro, str):
            fields["macro"] = resolve_macro(macro)
        elif isinstance(macro, dict):
            fields["macro"] = macro_from_table(macro, where="chip macro")
        return _build(cls, fields, "chip")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


_KIB, _MIB, _GIB = 1 << 10, 1 << 20, 1 << 30

CHIP_PRESETS: dict[str, ChipConfig] = {
    # Fast Verilator tests: 4 tiny macros. 4 bytes a cycle is below a tiny weight row
    # (4 × (8 + 3) bits = 6 bytes), so the off-chip bandwidth bounds weight loads and the
    # credit path is exercised in every streamed test.
    "tiny4": ChipConfig(macro=PRESETS["tiny"], macros=4, clock_mhz=100.0, weight_bw=4,
                        offchip_bytes=1 * _MIB, buffer_bytes=4 * _KIB, queue=4),
    # `make sim`'s chip: the smallest chip of real macros, 2 flexcim macros, whose Verilator
    # model builds in minutes and runs a SmolLM2 layer in seconds (the K = 2 on
    # flexcim). The edge chip's clock and port (500 MHz, 32 bytes a cycle, below a 44-byte
    # flexcim row, so the credit path paces every streamed row); a 256 KiB buffer, 1 GiB off
    # chip: a SmolLM2-135M block streams, nothing of it is resident on 2 macros.
    "flexcim2": ChipConfig(macro=PRESETS["flexcim"], macros=2, clock_mhz=500.0, weight_bw=32,
                           offchip_bytes=1 * _GIB, buffer_bytes=256 * _KIB, queue=4),
    # An edge chip: 16 flexcim macros (16 × 4 × 32 × 32 = 64 Ki 8-bit cells, 64 KiB of
    # weights), in the range of published digital SRAM-CIM test chips (Chih et al., ISSCC
    # 2021: a 64 kb macro in 0.202 mm² at 22 nm, so 16 such macros are about 3 mm²). 500 MHz,
    # as those macros run at 0.5–1 GHz. One LPDDR4X-4266 x32 channel gives about 17 GB/s:
    # 32 bytes a cycle at 500 MHz. A 1 MiB global buffer holds a 4096-wide layer's
    # activations for 128 tokens at 8 bits (512 KiB) twice over; 4 GiB of LPDDR.
    "edge": ChipConfig(macro=PRESETS["flexcim"], macros=16, clock_mhz=500.0, weight_bw=32,
                       offchip_bytes=4 * _GIB, buffer_bytes=1 * _MIB, queue=4),
    # A large inference chip: 2048 paper-scale macros (4 × 64 × 64 cells each: 32 Mi 8-bit
    # cells, 32 MiB of weights, the on-chip SRAM of a datacenter accelerator), 1 GHz, one
    # HBM2E stack (about 460 GB/s: 448 bytes a cycle at 1 GHz), a 16 MiB global buffer and
    # 16 GiB off chip. It holds a 135 M-parameter model at 4:8 or 1:8 resident only in part.
    "large": ChipConfig(macro=PRESETS["paper"], macros=2048, clock_mhz=1000.0, weight_bw=448,
                        offchip_bytes=16 * _GIB, buffer_bytes=16 * _MIB, queue=4),
}


def chip_preset(name: str) -> ChipConfig:
    """Return the named chip preset; ``ValueError`` naming the known ones otherwise."""
    try:
        return CHIP_PRESETS[name]
    except KeyError:
        raise ValueError(f"chip must be one of {sorted(CHIP_PRESETS)}, not {name!r}") from None


def chip_from_table(table, *, where: str) -> ChipConfig:
    """A :class:`ChipConfig` from a TOML ``[chip]`` table; ``macro`` is a preset name, a
    ``.toml`` macro file or an inline table. One-line ``ValueError`` prefixed with ``where``."""
    return _from_table(ChipConfig.from_dict, table, where, "chip")


def load_chip(path) -> ChipConfig:
    """Read a chip from a TOML file: a ``[chip]`` table (its ``macro`` a preset name, a macro
    file or a ``[chip.macro]`` table), or the chip fields at top level."""
    return _load(path, "chip", chip_from_table)


def resolve_chip(spec: str) -> ChipConfig:
    """A chip preset name (:data:`CHIP_PRESETS`) or the path of a TOML chip file."""
    return _resolve(spec, CHIP_PRESETS, load_chip, "chip")


def chip_toml(config: ChipConfig, *, comment: str = "") -> str:
    """``config`` as a TOML ``[chip]`` table with a ``[chip.macro]`` table; :func:`load_chip`
    reads it back."""
    lines = [f"# {comment}"] if comment else []
    lines.append("[chip]")
    for key, value in config.to_dict().items():
        if key != "macro":
            lines.append(f"{key} = {value}")
    macro = macro_toml(config.macro).replace("[macro]", "[chip.macro]")
    return "\n".join(lines) + "\n\n" + macro
