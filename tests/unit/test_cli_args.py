"""Bad arguments and bad local paths: one line on stderr, exit 2, no traceback, before any AWS call.

The unit tier blocks sockets, so a command that reached for AWS before refusing would fail here
with NetworkBlocked instead of exiting 2.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from imgcap.cli import main, version
from imgcap.exits import EXIT_CODES, EXIT_USAGE


def call(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits (errors, --help, --version)
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_usage_error(code: int, out: str, err: str) -> None:
    assert code == EXIT_USAGE, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert "usage:" not in err  # not the whole usage text


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG")
    return folder


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, ["--version"])
    assert code == 0
    assert out.strip() == f"imgcap {version()}"
    assert out.strip() != "imgcap unknown"  # the installed distribution's version


def test_help_documents_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, ["--help"])
    assert code == 0
    for number, meaning in EXIT_CODES.items():
        assert f"  {number}  {meaning}" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--output", "json"],  # once read as --output-price-per-1k
        ["status", "--no-us"],  # no abbreviations anywhere
        ["upload", "--dry", "."],
        ["status", "--recent", "0"],
        ["status", "--input-price-per-1k", "cheap"],
        ["upload"],  # DIR missing
        ["nosuchcommand"],
        [],
        ["report"],  # --out missing
        ["export", "--format", "xml"],
        ["reprocess", "--prefix", "a", "--all"],
        ["redrive", "--max", "-1"],
        ["dlq", "--max", "x"],
        ["smoke", "--timeout", "0"],
        ["local", "--images", "x"],  # --out missing
        ["local", "--imag", "x", "--out", "y"],  # no abbreviations for local either
        ["local", "--images", "x", "--out", "y", "--rpm", "fast"],
        ["local", "--images", "x", "--out", "y", "--batch-size", "11"],
        ["local", "--images", "x", "--out", "y", "--concurrency", "many"],
        ["upload", ".", "--wait-timeout", "-5"],
    ],
)
def test_argparse_errors_are_one_line_with_a_hint(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = call(capsys, argv)
    assert_one_line_usage_error(code, out, err)
    assert out == ""
    assert "--help" in err  # the hint


def test_bad_local_paths_for_operator_commands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder_named_html = tmp_path / "gallery.html"
    folder_named_html.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# keep me")
    cases = [
        (["upload", str(tmp_path / "missing")], "is not a directory"),
        (["upload", str(blocker)], "is not a directory"),
        (["report", "--out", str(folder_named_html)], "is a directory"),
        (["report", "--out", str(blocker / "r.html")], "is a file, not a folder"),
        (["report", "--out", str(readme)], "is a file, not a folder"),  # not .html: taken for a folder
        (["export", "--out", str(tmp_path)], "is a directory"),
        (["export", "--json"], "--json needs --out"),
        (["reprocess", "--prefix", "/"], "--all"),
    ]
    for argv, words in cases:
        code, out, err = call(capsys, argv)
        assert_one_line_usage_error(code, out, err)
        assert words in err, (argv, err)
        assert out == "" if "--json" not in argv else json.loads(out)["ok"] is False
    assert readme.read_text() == "# keep me"


def test_unwritable_output_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a folder this user may not write in (read-only; as root, where modes do not bind,
    # os.access is told so)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
        )
    # When a report is to be written there, then one line and exit 2
    code, out, err = call(capsys, ["report", "--out", str(locked / "r.html")])
    assert_one_line_usage_error(code, out, err)
    assert "cannot write" in err


def test_a_usage_error_with_json_is_still_one_json_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "x.html").mkdir()
    code, out, err = call(capsys, ["report", "--out", str(tmp_path / "x.html"), "--json"])
    assert_one_line_usage_error(code, out, err)
    document = json.loads(out)
    assert document == {
        "command": "report",
        "ok": False,
        "exit_code": 2,
        "error": err.strip()[len("imgcap: ") :],
    }


def test_reprocess_off_a_terminal_needs_yes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given standard input that is not a terminal (a pipe, cron, CI)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    # When reprocess runs without --yes, then it refuses in one line before touching anything
    code, out, err = call(capsys, ["reprocess", "--prefix", "trips"])
    assert_one_line_usage_error(code, out, err)
    assert "--yes" in err


def test_local_refuses_bad_folders_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: Path
) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # folders but no files
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["--images", str(empty), "--out", str(tmp_path / "o")], "has no files"),
        (["--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        (["--images", str(blocker), "--out", str(tmp_path / "o")], "is not a directory"),
        (["--images", str(images), "--out", str(blocker)], "is a file, not a folder"),
        (["--images", str(images), "--out", str(blocker / "deeper")], "is a file, not a folder"),
        (["--images", str(images), "--out", str(tmp_path / "o"), "--faults", "gremlins=1"], "--faults"),
        (
            ["--images", str(images), "--out", str(tmp_path / "o"), "--batch-faults", "gremlins=1"],
            "--batch-faults",
        ),
        (
            ["--images", str(images), "--out", str(tmp_path / "o"), "--batch-faults", "failed_records=2"],
            "share",
        ),
        (
            ["--images", str(images), "--out", str(tmp_path / "o"), "--batch-limits", "min_records"],
            "NAME=VALUE",
        ),
        (
            ["--images", str(images), "--out", str(tmp_path / "o"), "--batch-limits", "min_records=0"],
            "between",
        ),
        (
            [
                "--images",
                str(images),
                "--out",
                str(tmp_path / "o"),
                "--mode",
                "batch",
                "--captioner",
                "bedrock",
            ],
            "--mode batch needs --captioner standin",
        ),
    ]
    for argv, words in cases:
        code, out, err = call(capsys, ["local", *argv])
        assert_one_line_usage_error(code, out, err)
        assert words in err, (argv, err)
        assert "None" not in err
        assert out == ""
    # with --json the refusal is one JSON object on stdout as well
    code, out, err = call(capsys, ["local", "--images", str(empty), "--out", str(tmp_path / "o"), "--json"])
    assert_one_line_usage_error(code, out, err)
    assert json.loads(out) == {
        "command": "local",
        "ok": False,
        "exit_code": 2,
        "error": err.strip()[len("imgcap local: ") :],
    }
