"""imgcap.progress: plain lines off a terminal; on a real pseudo-terminal, one line redrawn in place
that fits the width. No sleeping and no timing assertions: intervals are 0 (every update draws) or
effectively infinite (only the final state draws)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
import threading
from collections.abc import Callable, Iterator

import pytest

from imgcap.progress import Progress

pytestmark = pytest.mark.unit

NEVER = 1e9  # an interval no test run reaches: only the final line is drawn
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # everything but \n
LOCAL_FIELDS = [
    "captioned 4",
    "errors 1",
    "30.0 captions/min",
    "uploaded 12/12",
    "resized 12",
    "model calls 5 (throttled 0)",
]


def assert_plain(text: str) -> None:
    assert not CONTROL.search(text), repr(text)


# -- off a terminal ----------------------------------------------------------------------------------
def test_off_a_terminal_every_draw_is_one_plain_line_with_an_eta() -> None:
    # Given a log stream (not a terminal) and no minimum interval
    stream = io.StringIO()

    # When 4 items finish, then one plain line per update plus the final line, without control chars
    with Progress("upload", total=4, stream=stream, unit="file", interval_s=0) as progress:
        for outcome in ("uploaded", "skipped", "uploaded", "uploaded"):
            progress.advance(outcome=outcome)
    out = stream.getvalue()
    assert_plain(out)
    lines = out.splitlines()
    assert len(lines) == 5
    # elapsed<remaining: the ETA (the elapsed time itself depends on how busy the machine is)
    assert re.match(r"upload: 1/4 \(25%\) \[\d\d:\d\d<", lines[0]), lines[0]
    assert lines[0].endswith(", uploaded 1]")
    assert re.match(r"upload: 4/4 \(100%\) \[\d\d:\d\d<00:00, ", lines[-1]), lines[-1]
    assert lines[-1].endswith("file/s, skipped 1, uploaded 3]")


def test_off_a_terminal_a_job_within_one_interval_prints_only_its_final_line_once() -> None:
    # Given the usual sparse interval, when a job ends before it and is closed twice, then one line
    stream = io.StringIO()
    with Progress("redrive", total=3, stream=stream, unit="msg", interval_s=NEVER) as progress:
        progress.advance(2, outcome="moved")
        progress.advance(outcome="failed")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("redrive: 3/3 (100%)")
    assert lines[0].endswith(", failed 1, moved 2]")


def test_off_a_terminal_all_fields_are_printed_and_messages_are_plain_lines_in_order() -> None:
    # Given the local runtime's live line (absolute counts and many fields) and a message meanwhile
    stream = io.StringIO()
    with Progress("local", total=12, stream=stream, unit="img", interval_s=NEVER) as progress:
        progress.update_to(3, LOCAL_FIELDS)
        progress.write("(refresh failed, retrying: boom)")
        progress.update_to(5, LOCAL_FIELDS)
    progress.write("done: 4 captioned")

    # Then: the message, the final line with every field (a log has no width), the last message
    out = stream.getvalue()
    assert_plain(out)
    lines = out.splitlines()
    assert lines[0] == "(refresh failed, retrying: boom)"
    assert lines[1].startswith("local: 5/12 (42%) [")
    assert lines[1].endswith(", " + ", ".join(LOCAL_FIELDS) + "]")
    assert lines[2] == "done: 4 captioned"
    assert progress.done == 5


def test_unknown_total_has_no_percentage_and_a_disabled_reporter_writes_nothing() -> None:
    stream = io.StringIO()
    with Progress("scan", stream=stream, interval_s=NEVER) as progress:
        progress.advance(7)
    assert re.fullmatch(r"scan: 7 \[\d\d:\d\d, [^\]]+it/s\]\n", stream.getvalue()), stream.getvalue()

    quiet = io.StringIO()
    with Progress("scan", total=5, stream=quiet, enabled=False) as progress:
        progress.advance(5, outcome="read")
    assert quiet.getvalue() == ""
    assert progress.done == 5
    assert progress.outcomes == {"read": 5}


def test_advance_is_safe_from_many_threads() -> None:
    # Given 8 threads each finishing 500 items, then the count and outcomes add up exactly
    stream = io.StringIO()
    progress = Progress("threads", total=4000, stream=stream, interval_s=NEVER)

    def work() -> None:
        for i in range(500):
            progress.advance(outcome="even" if i % 2 == 0 else "odd")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    progress.close()
    assert progress.done == 4000
    assert progress.outcomes == {"even": 2000, "odd": 2000}
    assert stream.getvalue().startswith("threads: 4000/4000 (100%)")


# -- on a real pseudo-terminal -----------------------------------------------------------------------
class Terminal:
    """The slave side of a pty with a set size as a text stream; the master side is read meanwhile."""

    def __init__(self, columns: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.stream = os.fdopen(slave, "w", encoding="utf-8")
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # drained all the time, so a full pty buffer never blocks a write
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self._chunks.append(chunk)
            elif self._stop.is_set():
                return

    def output(self) -> str:
        self.stream.flush()
        self._stop.set()
        # The reader drains everything already written before it stops; wait for that, not a clock.
        self._reader.join(timeout=120)
        assert not self._reader.is_alive(), "the terminal reader did not finish"
        return b"".join(self._chunks).decode("utf-8")

    def close(self) -> None:
        self.stream.close()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Callable[[int], Terminal]]:
    opened: list[Terminal] = []

    def make(columns: int) -> Terminal:
        opened.append(Terminal(columns))
        return opened[-1]

    yield make
    for t in opened:
        t.close()


def frames(output: str) -> list[str]:
    """Every state a line was drawn in: the text between carriage returns and newlines."""
    return [f for line in output.replace("\r\n", "\n").split("\n") for f in line.split("\r")]


def screen(output: str, columns: int) -> list[str]:
    """What a terminal of ``columns`` shows: \\r returns, \\n (as \\r\\n) moves down, long text wraps."""
    rows, row, col = [[]], 0, 0
    for char in output:
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            rows.append([])
        else:
            if col == columns:  # the line wraps: the rest lands on a new row, left behind
                row, col = row + 1, 0
                rows.append([])
            cells = rows[row]
            cells.extend(" " * (col + 1 - len(cells)))
            cells[col] = char
            col += 1
    return ["".join(r).rstrip() for r in rows]


def test_on_an_80_column_terminal_the_bar_fits_and_redraws_in_place(
    terminal: Callable[[int], Terminal],
) -> None:
    # Given a pseudo-terminal 80 columns wide
    term = terminal(80)

    # When the local runtime's live line is updated five times, with a message in between
    with Progress("local", total=12, stream=term.stream, unit="img", interval_s=0) as progress:
        for done in (1, 2, 3):
            progress.update_to(done, LOCAL_FIELDS)
        progress.write("(refresh failed, retrying: boom)")
        for done in (8, 12):
            progress.update_to(done, LOCAL_FIELDS)
    out = term.output()

    # Then every frame fits in 80 columns (one spare, so no terminal wraps at the margin)
    drawn = [f for f in frames(out) if f.strip()]
    assert len(drawn) >= 6
    assert all(len(f) <= 79 for f in drawn), [len(f) for f in drawn]
    # and the screen holds exactly the message and one finished bar: nothing wrapped or left behind
    assert screen(out, 80) == ["(refresh failed, retrying: boom)", drawn[-1].rstrip(), ""]
    final = drawn[-1]
    assert final.startswith("local: 100%|")
    assert "| 12/12 [" in final
    assert "captioned 4, errors 1" in final  # the leading fields that fit
    assert "model calls" not in final  # the trailing ones that do not
    assert "█" in final  # a real bar on a UTF-8 terminal
    # and the ETA is shown while it runs
    assert any(re.search(r"\[\d\d:\d\d<\d\d:\d\d", f) for f in drawn[1:-1])


def test_on_a_narrow_terminal_the_bar_and_fields_make_way_but_the_line_still_fits(
    terminal: Callable[[int], Terminal],
) -> None:
    # Given a 40-column pseudo-terminal, when an upload advances, then the count stays, nothing wraps
    term = terminal(40)
    with Progress("upload", total=3, stream=term.stream, unit="file", interval_s=0) as progress:
        for _ in range(3):
            progress.advance(outcome="uploaded")
    out = term.output()
    drawn = [f for f in frames(out) if f.strip()]
    assert all(len(f) <= 39 for f in drawn), drawn
    assert screen(out, 40) == [drawn[-1].rstrip(), ""]
    assert drawn[-1].startswith("upload: 3/3 (100%)")
