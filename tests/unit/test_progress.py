"""imgcap.progress: a bar on a terminal, sparse plain lines elsewhere. A fake clock, no sleeping."""

from __future__ import annotations

import io
import threading

import pytest

from imgcap.progress import Progress

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_non_terminal_prints_at_most_one_line_per_interval_and_a_final_line() -> None:
    # Given a log stream (not a terminal) and a 10 s interval
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress("upload", total=100, stream=stream, interval_s=10, clock=clock)

    # When 100 items finish over 25 s, one every 0.25 s
    for _ in range(100):
        clock.now += 0.25
        progress.advance(outcome="uploaded")
    progress.close()

    # Then there is a line at 10 s and at 20 s, plus the final one, and no control characters
    lines = stream.getvalue().splitlines()
    assert lines == [
        "upload: 40/100 (40%) [uploaded 40] 10.0s 4.0/s",
        "upload: 80/100 (80%) [uploaded 80] 20.0s 4.0/s",
        "upload: 100/100 (100%) [uploaded 100] 25.0s 4.0/s",
    ]
    assert "\r" not in stream.getvalue()
    assert "\x1b" not in stream.getvalue()


def test_short_job_on_a_non_terminal_prints_only_its_final_line_once() -> None:
    # Given a job that ends within one interval, when closed twice, then exactly one line appears
    clock, stream = FakeClock(), io.StringIO()
    with Progress("redrive", total=3, stream=stream, clock=clock) as progress:
        progress.advance(2, outcome="moved")
        progress.advance(outcome="failed")
    progress.close()
    assert stream.getvalue() == "redrive: 3/3 (100%) [failed 1, moved 2] 0.0s\n"


def test_terminal_rewrites_one_bar_in_place_and_ends_with_a_newline() -> None:
    # Given a terminal
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress("reprocess", total=4, stream=stream, tty=True, clock=clock)

    # When items finish 1 s apart and the job ends
    for _ in range(4):
        clock.now += 1
        progress.advance()
    progress.close()

    # Then every redraw starts with \r on the same line, the bar fills, and only the end has \n
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert out.endswith("\n")
    frames = out.rstrip("\n").split("\r")[1:]
    assert len(frames) == 5  # four advances (1 s apart > refresh) and the final frame
    assert frames[-1].startswith("[" + "#" * 28 + "] reprocess: 4/4 (100%)")
    assert frames[0].startswith("[#######" + "-" * 21 + "] reprocess: 1/4 (25%)")


def test_unknown_total_and_disabled_reporter() -> None:
    # Given no total, then the count alone is shown; given enabled=False, then nothing is written
    clock, stream = FakeClock(), io.StringIO()
    with Progress("scan", stream=stream, clock=clock) as progress:
        progress.advance(7)
    assert stream.getvalue() == "scan: 7 0.0s\n"

    quiet = io.StringIO()
    with Progress("scan", total=5, stream=quiet, clock=clock, enabled=False) as progress:
        progress.advance(5)
    assert quiet.getvalue() == ""
    assert progress.done == 5


def test_advance_is_safe_from_many_threads() -> None:
    # Given 8 threads each finishing 500 items, then the count and outcomes add up exactly
    progress = Progress("threads", total=4000, stream=io.StringIO(), interval_s=0)

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
