"""The CLI's one progress display: tqdm, with one policy for terminals and for logs.

Why a wrapper around tqdm: the policy lives in one place. On a terminal tqdm redraws one line in
place (``\\r``) at most ten times a second, with a bar and an ETA when the total is known; the line
is fitted to the terminal's width on every redraw (status fields are dropped from the end, then
the bar), so nothing wraps and nothing is left behind. Anywhere else (a pipe, a CI log, a file)
tqdm's own output is discarded and each display becomes one plain line, at most one every
``interval_s`` seconds plus a final line, with no control characters. Thread-safe: worker threads
call ``advance``.

    with Progress("upload", total=len(files), unit="file") as progress:
        for f in files:
            ...
            progress.advance(outcome="uploaded")
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.utils import disp_len

TTY_INTERVAL_S = 0.1  # redraw a terminal line at most ten times a second
LINE_INTERVAL_S = 10.0  # a log gets a line at most this often
MIN_BAR = 8  # a bar narrower than this is dropped instead

# "{postfix}" is tqdm's: ", " and the status fields, or "" when there are none.
_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_NO_BAR = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal behind ``stream`` (COLUMNS or 80 when it cannot be asked)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((80, 24)).columns


class _Discard:
    """Where tqdm's own output goes off a terminal: nowhere (the meter prints plain lines itself)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _Meter(tqdm):
    """tqdm with ``display`` (its documented override point) following the policy above."""

    monitor_interval = 0  # no monitor thread: every meter has a fixed refresh interval

    def __init__(self, *, fields: list[str], plain: TextIO | None, **kwargs: Any) -> None:
        self.fields = fields
        self._plain = plain  # the log stream off a terminal; None on a terminal
        self._ready = False  # tqdm displays once from __init__: a log does not want a 0% line
        super().__init__(**kwargs)
        self._ready = True

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self._plain is not None:
            if self._ready and msg is None:
                self.postfix = ", ".join(self.fields)
                self.bar_format = _NO_BAR if self.total else _NO_TOTAL
                self._plain.write(self.format_meter(**{**self.format_dict, "ncols": None}) + "\n")
                self._plain.flush()
            return True
        self._fit(max(20, terminal_columns(self.fp) - 1))  # the last column would wrap on some
        return bool(super().display(msg, pos))

    def _fit(self, columns: int) -> None:
        """Choose the fields and the bar so the line fits ``columns`` (tqdm trims what still doesn't)."""
        self.ncols = columns
        if not self.total:
            self.bar_format = _NO_TOTAL
            self.postfix = self._longest(_NO_TOTAL, columns) or ""
            return
        with_bar = self._longest(_BAR.replace("{bar}", " " * MIN_BAR), columns)
        if with_bar is not None:
            self.bar_format, self.postfix = _BAR, with_bar
        else:
            self.bar_format, self.postfix = _NO_BAR, self._longest(_NO_BAR, columns) or ""

    def _longest(self, bar_format: str, columns: int) -> str | None:
        """The postfix of the most leading fields that fit; None when the line is too long without any."""
        state = {**self.format_dict, "ncols": None, "bar_format": bar_format}
        for keep in range(len(self.fields), -1, -1):
            postfix = ", ".join(self.fields[:keep])
            if disp_len(self.format_meter(**{**state, "postfix": postfix})) <= columns:
                return postfix
        return None


class Progress:
    """Counts finished items (optionally by outcome) and shows how far a job has got."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        unit: str = "it",
        interval_s: float | None = None,
        tty: bool | None = None,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self._stream = stream if stream is not None else sys.stderr
        self._tty = is_terminal(self._stream) if tty is None else tty
        if interval_s is None:
            interval_s = TTY_INTERVAL_S if self._tty else LINE_INTERVAL_S
        self._lock = threading.Lock()
        self._done = 0
        self._outcomes: Counter[str] = Counter()
        self._fields: list[str] = []
        self._meter: _Meter | None = None
        if enabled:
            self._meter = _Meter(
                fields=self._fields,
                plain=None if self._tty else self._stream,
                file=self._stream if self._tty else _Discard(),
                desc=label,
                total=total,
                unit=unit,
                mininterval=max(0.0, interval_s),
                miniters=0,  # not adaptive: a redraw is due on time alone, also for new fields
                position=0,  # never nested: one line
                leave=True,
                dynamic_ncols=False,  # _Meter fits the width itself on every redraw
                ascii=None if self._tty else True,
                bar_format=_BAR if total else _NO_TOTAL,
            )

    # -- counting -------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return self._done

    @property
    def outcomes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._outcomes)

    @property
    def total(self) -> int | None:
        return None if self._meter is None else self._meter.total

    def set_total(self, total: int | None) -> None:
        with self._lock:
            if self._meter is not None:
                self._meter.total = total

    def advance(self, n: int = 1, outcome: str | None = None) -> None:
        """Record ``n`` finished items (of kind ``outcome``) and redraw when it is time to."""
        with self._lock:
            self._done += n
            if outcome:
                self._outcomes[outcome] += n
                self._fields[:] = [f"{k} {v}" for k, v in sorted(self._outcomes.items())]
            if self._meter is not None:
                self._meter.update(n)

    def update_to(self, done: int, fields: Sequence[str] = ()) -> None:
        """Set the count to ``done`` and the status fields (most important first; a terminal
        shows as many as fit), and redraw when it is time to."""
        with self._lock:
            step, self._done = done - self._done, done
            self._fields[:] = list(fields)
            if self._meter is not None:
                self._meter.update(step)

    def write(self, text: str) -> None:
        """Print a message on its own lines without breaking a bar that is being drawn."""
        with self._lock:
            live = self._tty and self._meter is not None and not self._meter.disable
            if live:
                assert self._meter is not None
                self._meter.clear()
            self._stream.write(text.rstrip("\n") + "\n")
            self._stream.flush()
            if live:
                assert self._meter is not None
                self._meter.refresh()

    def close(self) -> None:
        """Print the final state once (a last line, or the finished bar and a newline)."""
        with self._lock:
            if self._meter is not None:
                self._meter.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
