"""Experiments: studies that use the library and write a report, apart from it.

Each module is a command (``python -m sparsecim.sw.experiments.<name>``) taking the macro as a
parameter (``--preset``: a preset name or a TOML file, :func:`sparsecim.hw.config.resolve_macro`).
The library (``sparsecim.sw``, ``sparsecim.tb``) never imports from here.
"""

__all__ = ["markdown_table"]


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: ``header`` and one line per row (values through ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
