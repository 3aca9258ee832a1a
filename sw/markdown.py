"""Markdown pieces every report writes: tables, headings, bullet lists, image links.

One writer for the run reports (:mod:`sparsecim.tb.report`, :mod:`sparsecim.tb.chip_report`,
:mod:`sparsecim.tb.sweep_report`) and the experiments (:mod:`sparsecim.sw.experiments`), so a
table is laid out one way everywhere. The pieces return lists of lines (reports build a list
and join it once) but for :func:`markdown_table`, which returns the joined text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["cell", "table_lines", "markdown_table", "section", "bullets", "image"]

#: Separator cell per alignment letter: ``l`` left, ``r`` right.
_RULES = {"l": "---", "r": "---:"}


def cell(value, spec: str = "", *, none: str = "-") -> str:
    """A figure as table text: ``none`` for ``None``, ``yes``/``no`` for a bool, a number
    through ``format(value, spec)``, anything else through ``str``."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _row(cells: Iterable) -> str:
    # An empty cell is one space wide ("| |"), as the reports wrote it by hand.
    return "|" + "".join(f" {c} |" if c != "" else " |" for c in map(str, cells))


def table_lines(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None,
                *, compact: bool = True) -> list[str]:
    """A Markdown table as lines: the header, the separator, one line per row.

    Parameters
    ----------
    header : sequence of str
        Column titles (an empty title gives an empty header cell).
    rows : iterable of sequences
        One sequence of cells per row, each through ``str`` (format figures first, e.g.
        with :func:`cell`); a row may have fewer cells than the header (a closing note).
    align : str, optional
        One letter per column, ``l`` (left) or ``r`` (right); all left when omitted.
    compact : bool
        ``|---|---:|`` separators when true, ``| --- | ---: |`` when false.

    Raises
    ------
    ValueError
        ``align`` with a letter other than ``l``/``r`` or not one letter per column.
    """
    align = "l" * len(header) if align is None else align
    if len(align) != len(header) or set(align) - set(_RULES):
        raise ValueError(f"table align must be one of l, r per column ({len(header)}), "
                         f"not {align!r}")
    rules = [_RULES[a] for a in align]
    rule = "|" + "|".join(rules) + "|" if compact else "| " + " | ".join(rules) + " |"
    return [_row(header), rule] + [_row(r) for r in rows]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None,
                   *, compact: bool = True) -> str:
    """:func:`table_lines` joined into one text (no final newline)."""
    return "\n".join(table_lines(header, rows, align, compact=compact))


def section(title: str, level: int = 2) -> list[str]:
    """A heading with a blank line on either side (``["", "## title", ""]``)."""
    return ["", "#" * level + " " + title, ""]


def bullets(items: Iterable) -> list[str]:
    """One ``- item`` line per item."""
    return [f"- {item}" for item in items]


def image(name: str, path) -> str:
    """An image link to ``path``'s file name (the image sits beside the report)."""
    return f"![{name}]({Path(path).name})"
