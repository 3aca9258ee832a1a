"""Experiments: studies that use the library and write a report, apart from it.

Each module is a command (``python -m sparsecim.sw.experiments.<name>``) taking the macro as a
parameter (``--preset``: a preset name or a TOML file, :func:`sparsecim.hw.config.resolve_macro`).
The library (``sparsecim.sw``, ``sparsecim.tb``) never imports from here; the reports here and
the library's share one Markdown writer, :mod:`sparsecim.sw.markdown` (``markdown_table`` is
re-exported for the callers that import it from here).
"""

from ..markdown import markdown_table

__all__ = ["markdown_table"]
