"""``imgcap smoke`` against the local runtime, which ``imgcap local --keep-running --json`` keeps up.

One real run (moto, the Bedrock stand-in, worker processes running the shipped handlers) in a
child process, the way an operator would run it: when its first pass is done it prints its summary
as JSON on stdout and the endpoint exports on stderr, then keeps following new uploads. The smoke
test runs in this process against those endpoints. Then SIGTERM ends the child.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from PIL import Image

from imgcap.cli import main
from lambdas.shared.contract import RESIZE_SERVICE

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 240.0  # generous: a busy 2-core machine


class Child:
    """``imgcap local`` in a child process; its stderr read line by line on a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgcap.cli", *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, words: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(words in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{words!r} not printed; stderr so far:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        stdout, _ = self.proc.communicate(timeout=120)
        self._reader.join(timeout=10)
        return self.proc.returncode, stdout


def followed_to_the_end(lines: list[str]) -> int:
    return sum(int(m[1]) for line in lines if (m := re.match(r"new uploads done: (\d+) ", line)))


def test_smoke_passes_against_the_local_runtime_which_follows_the_new_uploads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the local runtime kept running after a first pass over one image
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(images / "first.png")
    out = tmp_path / "out"
    stack = "SmokeLocal"
    child = Child(
        [
            *("local", "--images", str(images), "--out", str(out), "--keep-running", "--json"),
            *("--rpm", "6000", "--concurrency", "2", "--stack-name", stack),
        ]
    )
    try:
        child.wait_for(f"imgcap status --stack-name {stack}", STARTUP_S)
        exports = dict(
            line.strip()[len("export ") :].split("=", 1)
            for line in child.lines
            if line.strip().startswith("export ")
        )
        for name, value in exports.items():
            monkeypatch.setenv(name, value)

        # When the smoke test runs against it
        code = main(["smoke", "--stack-name", stack, "--json", "--poll-interval", "0.5", "--timeout", "180"])
        captured = capsys.readouterr()

        # Then it passes: two captions for the uploaded versions, one corrupt_image rejection
        assert code == 0, captured.err
        result = json.loads(captured.out)
        assert result["verdict"] == "pass"
        assert [(c["expected"], c["got"], c["ok"]) for c in result["checks"]] == [
            ("captioned", "captioned", True),
            ("captioned", "captioned", True),
            ("rejected", "rejected", True),
        ]
        assert "smoke: PASS" in captured.err
        # and it cleaned up after itself, everywhere it wrote
        s3 = boto3.session.Session().client("s3")
        bucket = f"{stack.lower()}-images"
        for prefix in ("images/", "base64_images/", "captions/", "errors/", "claims/"):
            listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{result['folder']}/")
            assert listing.get("KeyCount", 0) == 0, prefix
        assert result["cleaned_up_objects"] >= 6  # 3 uploads, 2 encoded, 2 captions, 1 error record
        # and the functions' logs for the smoke images are already in OUT/logs while it still runs
        resize_log = (out / "logs" / f"{RESIZE_SERVICE}.jsonl").read_text(encoding="utf-8")
        assert f"{result['folder']}/broken.jpg" in resize_log
        # and the runtime follows the three new uploads to their end (on its own 1 s ticks, in one
        # wave or more: each ends with a "new uploads done: N (...)" line)
        deadline = time.monotonic() + STARTUP_S
        while followed_to_the_end(child.lines) < 3 and time.monotonic() < deadline:
            child.wait_for("new uploads done:", STARTUP_S)
            time.sleep(0.5)
    finally:
        returncode, stdout = child.stop()

    # And the first pass printed its summary as one JSON object on stdout, the follower counted the
    # three new uploads, and SIGTERM ended the run cleanly
    summary = json.loads(stdout)
    assert (summary["command"], summary["exit_code"], summary["captioned"]) == ("local", 0, 1)
    assert returncode == 0, "\n".join(child.lines[-30:])
    assert followed_to_the_end(child.lines) == 3, "\n".join(child.lines[-30:])
    assert any(line.startswith("new uploads: ") for line in child.lines)  # the progress display
    assert os.path.exists(out / "summary.json")
