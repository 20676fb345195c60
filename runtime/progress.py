"""One self-rewriting progress line on the terminal for long work (standard library only).

The workstation commands (``train``, ``convert``, ``quickstart``) take tens of seconds in places where they would
otherwise print nothing: rolling calibration steps, the TFLite converter, proving parity. The library functions
report such work through a ``progress`` callable, ``progress(what, done=None, total=None)``, and ``TerminalProgress``
is the one the CLI passes: it draws ``what done/total (pct) elapsed`` on one line of the terminal, rewritten in place
at most a few times a second, and with no total a ticking elapsed time (the converter is one long C++ call).

It draws only when standard error is a terminal (never into a pipe, a log file or CI output) and never with
``--quiet``. It writes to its own duplicate of file descriptor 2, taken when it is created, so the line still
reaches the terminal while ``statelite.quiet.filtered_stderr`` holds fd 2 during a conversion. Before any other
output line (``wrap(echo)``) and at the end (``close``) the line is erased, so it never mixes with what stays.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

_ERASE = b"\r\x1b[K"  # to the start of the line, then clear it


def no_progress(what: str, done: int | None = None, total: int | None = None) -> None:
    """The ``progress`` that shows nothing (library calls without a terminal)."""


def prefixed(progress: Callable[..., None] | None, prefix: str) -> Callable[..., None] | None:
    """``progress`` with ``prefix`` put before every ``what`` (a backtest's fold, an auto candidate); None stays None."""
    if progress is None:
        return None
    return lambda what, done=None, total=None: progress(prefix + what, done, total)


class TerminalProgress:
    """``progress(what, done, total)`` drawn as one line on the terminal behind ``fd`` (default: stderr).

    Does nothing at all when ``enabled`` is false or ``fd`` is not a terminal. Use as a context manager, or call
    ``close()``, so the line is erased and the descriptor released.
    """

    def __init__(self, enabled: bool = True, fd: int = 2, interval: float = 0.2):
        self._interval = interval
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._shown = False
        self._what = ""
        self._done: int | None = None
        self._total: int | None = None
        self._started = self._drawn_at = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        if enabled and os.environ.get("TERM") != "dumb":
            try:
                if os.isatty(fd):
                    self._fd = os.dup(fd)
            except OSError:  # a closed or odd descriptor: no progress, nothing else lost
                self._fd = None

    @property
    def active(self) -> bool:
        """Whether anything is drawn (a terminal, not quiet)."""
        return self._fd is not None

    @property
    def reporter(self) -> TerminalProgress | None:
        """This object when it draws, else None: what the commands pass as ``progress``, so that without a terminal
        the library does no progress work at all (``train`` then adds no Keras callback)."""
        return self if self.active else None

    def __call__(self, what: str, done: int | None = None, total: int | None = None) -> None:
        if self._fd is None:
            return
        now = time.monotonic()
        with self._lock:
            if what != self._what:
                self._what, self._started, self._drawn_at = what, now, 0.0
            self._done, self._total = done, total
            finished = total is not None and done is not None and done >= total
            if now - self._drawn_at >= self._interval or finished:
                self._draw(now)
        if total is None:
            self._tick()

    def wrap(self, echo: Callable[..., None]) -> Callable[..., None]:
        """``echo`` that erases the progress line first, so a printed line never lands on top of it."""

        def echo_clear(*args, **kwargs):
            self.clear()
            echo(*args, **kwargs)

        return echo_clear

    def clear(self) -> None:
        """Erase the line; it is drawn again at the next update, as new work (its elapsed time from then)."""
        with self._lock:
            if self._shown and self._fd is not None:
                self._write(_ERASE)
            self._shown = False
            self._what, self._drawn_at = "", 0.0

    def close(self) -> None:
        """Erase the line, stop the ticker and release the descriptor."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        self.clear()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        text = self._what
        if self._total:
            done = min(self._done or 0, self._total)
            text += f" {done:,}/{self._total:,} ({100 * done / self._total:.0f}%)"
        if elapsed >= 1:
            text += f"  {elapsed:.0f} s"
        self._write(_ERASE + text[:200].encode("utf-8", "replace"))
        self._shown, self._drawn_at = True, now

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError:  # the terminal went away: stop drawing, lose nothing else
            os.close(self._fd)
            self._fd = None

    def _tick(self) -> None:
        # Work with no total (one long call) gets its elapsed time redrawn from a daemon thread.
        if self._ticker is not None or self._fd is None:
            return

        def run():
            while not self._stop.wait(0.5):
                with self._lock:
                    if self._fd is not None and self._total is None and self._what:
                        self._draw(time.monotonic())

        self._ticker = threading.Thread(target=run, name="statelite-progress", daemon=True)
        self._ticker.start()
