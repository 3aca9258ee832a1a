"""The N:M sparsity pattern: one type for the macro config, the ISA, the mappers and the CLI.

A pattern ``n:m`` keeps at most ``n`` non-zero weights in every ``m`` consecutive inputs of an
output channel. It lives in the contract layer because :class:`~sparsecim.hw.config.MacroConfig`
lists the patterns a macro runs and the ISA's CONFIG command selects one; ``sparsecim.sw.nm``
prunes and checks weights against the same type.
"""

from __future__ import annotations

import numbers
import re
from typing import NamedTuple

__all__ = ["Pattern", "as_pattern"]

# ASCII digits only: ``\d`` alone would also accept other scripts' digits.
_PATTERN_TEXT = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*", re.ASCII)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_count(name: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


class _Pair(NamedTuple):
    n: int
    m: int


class Pattern(_Pair):
    """An ``n:m`` sparsity pattern: at most ``n`` non-zero weights in every ``m`` inputs.

    Immutable, hashable and ordered by ``(n, m)``. A named ``(n, m)`` tuple, so it unpacks
    (``n, m = pattern``) and compares equal to the plain pair: the config's TOML and JSON forms
    and the ISA's ``(n, m)`` fields need no conversion. Any ``n == m`` is dense;
    ``Pattern(1, 1)`` is the canonical dense pattern and the only one printed and parsed as
    ``"dense"``.

    Parameters
    ----------
    n : int
        Weights kept per group, ``1 <= n <= m``.
    m : int
        Group size in inputs, ``m >= 1``.

    Raises
    ------
    ValueError
        If ``m`` is not a positive integer or ``n`` not an integer from 1 to ``m``, as
        ``"n must be an integer from 1 to m=4, not 5"``.
    """

    __slots__ = ()

    def __new__(cls, n: int, m: int):
        if not _is_int(m) or m < 1:
            raise ValueError(f"m must be a positive integer, not {m!r}")
        if not _is_int(n) or not 1 <= n <= m:
            raise ValueError(f"n must be an integer from 1 to m={m}, not {n!r}")
        # numpy integers would print as np.int64(2) and hash differently from ints.
        return super().__new__(cls, int(n), int(m))

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse ``"N:M"`` (e.g. ``"2:4"``) or ``"dense"`` (``Pattern(1, 1)``).

        Whitespace around the numbers and the colon is ignored, as is the case of ``dense``.
        ``str(Pattern.parse(s))`` is ``s`` normalised, and ``parse(str(p)) == p``.

        Raises
        ------
        ValueError
            If ``text`` is not a string of that form with ``1 <= N <= M``, as
            ``"pattern must be 'N:M' with 1 <= N <= M, or 'dense', not '5:4'"``.
        """
        if not isinstance(text, str):
            raise ValueError(f"pattern text must be a str, not {text!r}")
        if text.strip().lower() == "dense":
            return cls(1, 1)
        match = _PATTERN_TEXT.fullmatch(text)
        n, m = (int(v) for v in match.groups()) if match else (0, 0)
        if not 1 <= n <= m:
            raise ValueError(f"pattern must be 'N:M' with 1 <= N <= M, or 'dense', not {text!r}")
        return cls(n, m)

    def __str__(self) -> str:
        return "dense" if self.m == 1 else f"{self.n}:{self.m}"

    @property
    def is_dense(self) -> bool:
        """Whether every weight may be kept (``n == m``)."""
        return self.n == self.m

    @property
    def density(self) -> float:
        """Fraction of weights kept, ``n / m``."""
        return self.n / self.m

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned, ``1 - n / m``."""
        return 1 - self.n / self.m

    @property
    def metadata_bits(self) -> int:
        """Bits to store a position within a group, ``ceil(log2 m)`` (0 for ``m == 1``)."""
        return (self.m - 1).bit_length()

    def groups(self, in_features: int) -> int:
        """Groups per row for ``in_features`` inputs, ``ceil(in_features / m)``.

        Raises
        ------
        ValueError
            If ``in_features`` is not a non-negative integer.
        """
        return -(-_check_count("in_features", in_features) // self.m)


def as_pattern(pattern) -> Pattern:
    """The canonical :class:`Pattern` of ``None`` or ``"dense"`` (dense), ``"2:4"``, a
    :class:`Pattern` or an ``(n, m)`` pair. ``n == m`` keeps every weight, so it is dense:
    ``Pattern(1, 1)``.

    Raises
    ------
    ValueError
        If ``pattern`` is none of these, or its ``n``, ``m`` are not ``1 <= n <= m``.
    """
    if pattern is None:
        return Pattern(1, 1)
    if isinstance(pattern, str):
        pattern = Pattern.parse(pattern)
    if not isinstance(pattern, Pattern):
        try:
            n, m = (int(v) for v in pattern)
        except (TypeError, ValueError):
            raise ValueError(f"pattern must be 'dense', 'n:m', an NMPattern or an (n, m) "
                             f"pair, not {pattern!r}") from None
        pattern = Pattern(n, m)  # validates 1 <= n <= m
    return Pattern(1, 1) if pattern.is_dense else pattern
