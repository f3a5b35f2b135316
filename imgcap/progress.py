"""A small progress reporter for long operator and local-runtime jobs.

On a terminal it draws one bar that rewrites itself with ``\\r``. Anywhere else (a pipe, a CI log,
a file) it prints plain lines, at most one every ``interval_s`` seconds plus a final line, with no
control characters, so logs stay readable. Thread-safe: worker threads call ``advance``.

    with Progress("upload", total=len(files)) as progress:
        for f in files:
            ...
            progress.advance(outcome="uploaded")
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_TTY_REFRESH_S = 0.1  # redraw the bar at most ten times a second
_DEFAULT_LINE_INTERVAL_S = 10.0
_BAR_WIDTH = 28


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


class Progress:
    """Counts finished items (optionally by outcome) and shows how far a job has got."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        interval_s: float = _DEFAULT_LINE_INTERVAL_S,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = _is_terminal(self._stream) if tty is None else tty
        self._interval_s = _TTY_REFRESH_S if self._tty else max(0.0, interval_s)
        self._clock = clock
        self._enabled = enabled
        self._lock = threading.Lock()
        self._done = 0
        self._outcomes: Counter[str] = Counter()
        self._started = clock()
        # A terminal gets the bar at once; a log gets its first line only after one interval, so a
        # short job prints just its final line.
        self._last_emit: float | None = None if self._tty else self._started
        self._closed = False
        self._drawn_width = 0

    # -- counting -------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return self._done

    @property
    def outcomes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._outcomes)

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total

    def advance(self, n: int = 1, outcome: str | None = None) -> None:
        """Record ``n`` finished items (of kind ``outcome``) and redraw when it is time to."""
        with self._lock:
            self._done += n
            if outcome:
                self._outcomes[outcome] += n
            now = self._clock()
            if self._last_emit is None or now - self._last_emit >= self._interval_s:
                self._emit(now, final=False)

    def close(self) -> None:
        """Print the final state once (a last line, or the finished bar and a newline)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._emit(self._clock(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- rendering ------------------------------------------------------------------------------
    def render(self, now: float | None = None) -> str:
        """The status text without any control characters (also what a non-terminal sees)."""
        elapsed = max(0.0, (self._clock() if now is None else now) - self._started)
        parts = [f"{self.label}:"]
        if self.total:
            pct = min(100.0, 100.0 * self._done / self.total)
            parts.append(f"{self._done}/{self.total} ({pct:.0f}%)")
        else:
            parts.append(f"{self._done}")
        if self._outcomes:
            parts.append("[" + ", ".join(f"{k} {v}" for k, v in sorted(self._outcomes.items())) + "]")
        rate = self._done / elapsed if elapsed > 0 else 0.0
        parts.append(f"{elapsed:.1f}s")
        if rate > 0:
            parts.append(f"{rate:.1f}/s")
        return " ".join(parts)

    def _bar(self) -> str:
        if not self.total:
            return ""
        filled = min(_BAR_WIDTH, int(_BAR_WIDTH * self._done / self.total))
        return "[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "] "

    def _emit(self, now: float, *, final: bool) -> None:
        if not self._enabled:
            return
        self._last_emit = now
        text = self.render(now)
        if self._tty:
            line = self._bar() + text
            columns = shutil.get_terminal_size((100, 20)).columns
            line = line[: max(20, columns - 1)]
            pad = " " * max(0, self._drawn_width - len(line))
            self._drawn_width = len(line)
            self._stream.write("\r" + line + pad + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
