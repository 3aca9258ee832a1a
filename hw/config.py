"""Macro parameters: the single source of every size and width in sparsecim.

The hardware, the ISA, the mapper, the golden model and the testbench all derive their
sizes from one :class:`MacroConfig`. Nothing else states a width.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

__all__ = ["MacroConfig", "PRESETS", "preset", "ceil_log2"]


def ceil_log2(value: int) -> int:
    """Smallest ``b`` with ``2**b >= value`` (0 for 1)."""
    return max(0, (value - 1).bit_length())


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
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
        Activation buffer entries; an entry holds one pass worth of activations.
    acc_depth : int
        Output accumulator entries; an entry holds ``cols`` accumulators.
    counter_bits : int
        Width of each saturating performance counter, 16 to 64.

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
    def data_bits(self) -> int:
        """Width of a data-stream beat: one weight row of one sub-macro."""
        return self.cols * self.weight_bits

    @property
    def act_lanes(self) -> int:
        """Activations carried by one data beat."""
        return self.data_bits // self.act_bits

    @property
    def act_beats(self) -> int:
        """Data beats per activation buffer entry (the last one may be partly unused)."""
        return -(-self.reduction // self.act_lanes)

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
        return slug

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> MacroConfig:
        """Build from :meth:`to_dict` output; unknown or missing fields raise ``ValueError``."""
        if not isinstance(fields, dict):
            raise ValueError(f"config must be a mapping of fields, not {fields!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; known are {sorted(known)}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ValueError(f"config is incomplete: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


PRESETS: dict[str, MacroConfig] = {
    # Small enough that Amaranth simulation and Verilator builds take seconds.
    "tiny": MacroConfig(rows=4, cols=4, submacros=4, act_depth=16, acc_depth=8),
    # FlexCiM default: P=4 sub-macros of 32×32, a 128-deep reduction × 32 outputs.
    "flexcim": MacroConfig(rows=32, cols=32, submacros=4, act_depth=64, acc_depth=64),
    # Paper scale: 4 × 64×64 (256-deep reduction × 64 outputs); for export and FPGA figures.
    "paper": MacroConfig(rows=64, cols=64, submacros=4, act_depth=128, acc_depth=128),
}


def preset(name: str) -> MacroConfig:
    """Return the named preset; ``ValueError`` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {name!r}") from None
