"""Output files and folders: checked before any work, written atomically.

Every file the CLI and ``sparsecim run`` leave behind is written by :func:`atomic_write`:
under a temporary name in the same folder, then renamed over the final name, so a reader
never sees half a file, and an interrupted or failed write leaves the old file (or none).
Paths are checked up front (:func:`check_output_file`, :func:`check_output_folder`) so that a
bad ``--out`` fails in a second, not after the simulation, and with one line naming it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["OutputError", "atomic_write", "check_output_file", "check_output_folder"]


class OutputError(ValueError):
    """An output path that cannot take the output; the message names the path."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_folder(path: str | Path, *, what: str) -> Path:
    """Make sure ``path`` is a folder that exists (created, with its parents, if need be).

    Raises
    ------
    OutputError
        If ``path`` is a file, lies under a file, or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} must be a folder, not the file {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be created: {_reason(exc)}") from None
    return path


def check_output_file(path: str | Path, *, what: str, suffix: str) -> Path:
    """Make sure ``path`` can take an output file ending in ``suffix`` (its folder is
    created if need be). The suffix is required, not added: numpy would silently write
    ``PATH.npy`` for a ``PATH`` without it.

    Raises
    ------
    OutputError
        If ``path`` does not end in ``suffix``, is a folder, or its folder cannot be made.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} must name a {suffix} file, not the folder {path}")
    if path.suffix != suffix:
        raise OutputError(f"{what} must name a {suffix} file, not {str(path)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {path} cannot be written: {path.parent} is a file, not a "
                          f"folder") from None
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be written: {_reason(exc)}") from None
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    On any exception (``KeyboardInterrupt`` included) the temporary file is removed and
    ``path`` is left as it was.

    Raises
    ------
    OutputError
        If the file cannot be written (the message names ``path`` and the reason).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
