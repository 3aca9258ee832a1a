"""A tiny progress printer on stderr for the command line (no dependencies).

Two forms: :class:`Progress` counts steps of a known total and draws a bar; :func:`ticking`
shows the elapsed seconds of one long wait (a Yosys run). Both draw only when stderr is a
terminal (or ``SPARSECIM_PROGRESS=1``), so captured output and error messages stay clean.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

__all__ = ["Progress", "ticking", "enabled"]


def enabled(stream=None) -> bool:
    """True if progress should be drawn on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    flag = os.environ.get("SPARSECIM_PROGRESS")
    if flag is not None:
        return flag == "1"
    return hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """A bar of ``total`` steps: ``label [#####.....] 3/7 text  12 s``.

    Parameters
    ----------
    total : int
        Steps expected (at least 1).
    label : str
        Printed before the bar.
    """

    def __init__(self, total: int, label: str, *, stream=None):
        self.total = max(1, int(total))
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        self.active = enabled(self.stream)
        self.started = time.perf_counter()
        self.text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self.active:
            # Redraw every second, so that the elapsed time moves during a long step.
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._draw(self.text)

    def _draw(self, text: str) -> None:
        if not self.active:
            return
        self.text = text
        width = 24
        filled = width * self.done // self.total
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} {text[:40]:<40} "
                f"{time.perf_counter() - self.started:5.0f} s")
        with self._lock:
            self.stream.write("\r" + line)
            self.stream.flush()

    def start(self, text: str) -> None:
        """Show that the next step (``text``) has begun."""
        self._draw(text)

    def advance(self, text: str = "") -> None:
        """Count one finished step."""
        self.done = min(self.total, self.done + 1)
        self._draw(text)

    def close(self) -> None:
        """End the bar's line."""
        if self.active:
            self._stop.set()
            self._thread.join()
            self._draw(self.text)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def ticking(label: str, *, stream=None, every: float = 1.0):
    """Show ``label ... N s`` while the body runs, updated every ``every`` seconds."""
    stream = stream or sys.stderr
    if not enabled(stream):
        yield
        return
    stop = threading.Event()
    started = time.perf_counter()

    def tick():
        while not stop.wait(every):
            stream.write(f"\r{label} ... {time.perf_counter() - started:.0f} s")
            stream.flush()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        stream.write(f"\r{label} ... {time.perf_counter() - started:.0f} s\n")
        stream.flush()
