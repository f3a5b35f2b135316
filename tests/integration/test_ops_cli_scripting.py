"""The operator CLI as scripts use it, against a moto server: --json everywhere, upload --dryrun /
--quiet / --wait, the non-consuming DLQ listing, the resize failure queue in status, and the
reprocess prompt on a terminal.

The pipeline itself does not run here: the records a running pipeline would write (caption,
error record, DLQ message) are seeded for the exact ETags the uploads get (single-part uploads:
the MD5 of the bytes).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lambdas.shared import keys
from lambdas.shared.records import error_record
from tests.integration.ops_env import (
    Env,
    assert_plain,
    caption_record,
    env,
    moto_url,
    run,
    seed_pipeline_state,
)

pytestmark = pytest.mark.integration
__all__ = ["env", "moto_url"]  # fixtures


def one_json(out: str, command: str, code: int) -> dict[str, Any]:
    """stdout is exactly one JSON object, naming the command and its exit code."""
    document = json.loads(out)
    assert isinstance(document, dict)
    assert document["command"] == command
    assert document["exit_code"] == code
    assert document["ok"] is (code == 0)
    return document


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, "PNG")
    return buf.getvalue()


def dlq_message(env: Env, key: str, etag: str) -> None:
    body = {"v": 1, "bucket": env.stack.bucket, "source_key": key, "source_etag": etag}
    env.sqs.send_message(QueueUrl=env.stack.dlq_url, MessageBody=json.dumps(body))


def receive_all(env: Env, url: str, expected: int) -> list[dict[str, Any]]:
    """Receive (bounded) until ``expected`` distinct messages were seen or the queue gives no more."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(20):
        batch = env.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages", []
        )
        if not batch:
            break
        seen.update({m["MessageId"]: m for m in batch})
        if len(seen) >= expected:
            break
    return list(seen.values())


# -- --json on every operator command -------------------------------------------------------------
def test_every_operator_command_prints_one_json_object_with_json(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack with captions, an error record, a pending image and a dead letter
    seed_pipeline_state(env)
    dlq_message(env, "images/pending.png", "x")
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "new.png").write_bytes(png_bytes((1, 2, 3)))
    base = ["--stack-name", env.name, "--json"]

    # When each command runs with --json, then stdout is one JSON object and human text went to stderr
    code, out, err = run(capsys, "upload", str(folder), "--dryrun", *base)
    doc = one_json(out, "upload", code)
    assert (doc["dry_run"], doc["would_upload"], doc["uploaded"]) == (True, 1, 0)
    assert "(dryrun) upload" in err

    code, out, err = run(capsys, "upload", str(folder), *base)
    assert one_json(out, "upload", code)["uploaded"] == 1
    assert "uploaded 1 file(s)" in err

    code, out, _ = run(capsys, "status", *base)
    doc = one_json(out, "status", code)
    assert doc["prefixes"]["images/"]["objects"] == 5
    assert doc["dead_letter_queue"]["visible"] == 1

    code, out, err = run(capsys, "report", "--out", str(tmp_path / "r.html"), *base)
    assert one_json(out, "report", code)["out"] == str(tmp_path / "r.html")
    assert "wrote" in err

    code, out, _ = run(capsys, "export", "--out", str(tmp_path / "m.jsonl"), *base)
    assert one_json(out, "export", code)["captions"] == 2

    code, out, _ = run(capsys, "dlq", *base)
    doc = one_json(out, "dlq", code)
    assert [d["source_key"] for d in doc["images"]] == ["images/pending.png"]

    code, out, _ = run(capsys, "reprocess", "--prefix", "trips", "--dry-run", *base)
    assert one_json(out, "reprocess", code)["selected"] == 2

    code, out, _ = run(capsys, "reprocess", "--prefix", "trips", "--yes", *base)
    assert one_json(out, "reprocess", code)["triggered"] == 2

    code, out, _ = run(capsys, "redrive", *base)
    assert one_json(out, "redrive", code)["moved"] == 1

    # And a failure is one JSON object too (exit 3: the stack is not reachable)
    code, out, err = run(capsys, "status", "--stack-name", "NoSuchStack", "--json")
    doc = one_json(out, "status", 3)
    assert doc["error"] in err
    assert len(err.splitlines()) == 1


# -- upload like aws s3 sync ----------------------------------------------------------------------
def test_dry_run_counts_only_what_would_be_sent_and_quiet_prints_nothing(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given three files already uploaded
    for name, color in (("a.png", (1, 1, 1)), ("b.png", (2, 2, 2)), ("c.png", (3, 3, 3))):
        (tmp_path / name).write_bytes(png_bytes(color))
    code, out, err = run(capsys, "upload", str(tmp_path), "--stack-name", env.name, "--quiet")
    assert code == 0
    assert (out, err) == ("", "")  # --quiet: nothing but failures
    # When one changes (same size, other bytes), one is added, and a dry run looks
    (tmp_path / "b.png").write_bytes(png_bytes((9, 9, 9)))
    (tmp_path / "d.png").write_bytes(png_bytes((4, 4, 4)))
    code, out, _ = run(capsys, "upload", str(tmp_path), "--stack-name", env.name, "--dryrun")
    # Then only the changed and the new file are listed and counted
    assert code == 0
    assert sorted(
        line.split(": ")[1].split(" to ")[0] for line in out.splitlines() if "(dryrun)" in line
    ) == [
        "b.png",
        "d.png",
    ]
    assert "dry run: 2 file(s)" in out
    assert "2 unchanged would be skipped" in out
    assert not env.exists("images/d.png")  # nothing was sent


def test_upload_filters_in_order_like_aws_s3_sync(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep").mkdir()
    for rel in ("a.jpg", "b.png", "keep/c.png", "keep/d.txt"):
        (tmp_path / rel).write_bytes(rel.encode())
    code, out, _ = run(
        capsys,
        "upload",
        str(tmp_path),
        "--stack-name",
        env.name,
        "--exclude",
        "*",
        "--include",
        "*.png",
        "--exclude",
        "keep/*",
        "--include",
        "keep/c.*",
    )
    assert code == 0, out
    present = {k: env.exists(f"images/{k}") for k in ("a.jpg", "b.png", "keep/c.png", "keep/d.txt")}
    assert present == {"a.jpg": False, "b.png": True, "keep/c.png": True, "keep/d.txt": False}


def test_upload_wait_reports_every_final_state_and_fails_when_anything_failed(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given three files, and the records the pipeline will write for exactly these bytes:
    # a caption for one, an error record for one, a DLQ message for the third
    bodies = {
        "ok.png": png_bytes((10, 200, 10)),
        "bad.png": b"\x89PNG broken",
        "stuck.png": png_bytes((5, 5, 250)),
    }
    for name, data in bodies.items():
        (tmp_path / name).write_bytes(data)
    etag = {name: hashlib.md5(data, usedforsecurity=False).hexdigest() for name, data in bodies.items()}
    env.put_json(
        keys.caption_key("images/w/ok.png"),
        caption_record(env, "images/w/ok.png", etag["ok.png"], "A green tile.", (1500, 50)),
    )
    env.put_json(
        keys.error_key("images/w/bad.png"),
        error_record(
            stage="resize",
            error_code="corrupt_image",
            error_type="OSError",
            message="broken data stream",
            retryable=False,
            bucket=env.stack.bucket,
            source_key="images/w/bad.png",
            source_etag=etag["bad.png"],
        ),
    )
    dlq_message(env, "images/w/stuck.png", etag["stuck.png"])

    # When uploaded with --wait
    code, out, err = run(
        capsys, "upload", str(tmp_path), "--stack-name", env.name, "--prefix", "w", "--wait", "--json"
    )

    # Then each is named with its final state, the progress is plain, and the exit code says "failed"
    assert code == 1
    doc = one_json(out, "upload", 1)
    assert doc["wait"]["counts"] == {
        "captioned": 1,
        "rejected": 1,
        "dead_lettered": 1,
        "resize_failed": 0,
        "not_final": 0,
    }
    states = {row["key"]: row["state"] for row in doc["wait"]["images"]}
    assert states == {
        "images/w/bad.png": "rejected",
        "images/w/ok.png": "captioned",
        "images/w/stuck.png": "dead_lettered",
    }
    assert "rejected: images/w/bad.png corrupt_image: broken data stream" in err
    assert "wait: 3/3" in err
    assert_plain(err)
    # and the DLQ message is still there (waiting looked, it did not consume)
    assert len(receive_all(env, env.stack.dlq_url, 1)) == 1


def test_upload_wait_succeeds_when_all_captioned_and_names_what_is_not_final_at_the_timeout(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = png_bytes((7, 7, 7))
    (tmp_path / "one.png").write_bytes(data)
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    # Given nothing will ever finish it: --wait gives up at the timeout and says so (exit 1)
    code, out, err = run(
        capsys,
        "upload",
        str(tmp_path),
        "--stack-name",
        env.name,
        "--wait",
        "--wait-timeout",
        "1",
        "--poll-interval",
        "0.2",
    )
    assert code == 1
    assert "not_final: images/one.png" in err
    assert "1 not_final" in out
    # Given its caption appears, when uploaded again (unchanged, nothing sent) with --wait, then 0
    env.put_json(
        keys.caption_key("images/one.png"), caption_record(env, "images/one.png", etag, "Grey.", (1, 1))
    )
    (tmp_path / "two.png").write_bytes(png_bytes((8, 8, 8)))
    two = hashlib.md5((tmp_path / "two.png").read_bytes(), usedforsecurity=False).hexdigest()
    env.put_json(
        keys.caption_key("images/two.png"), caption_record(env, "images/two.png", two, "Grey too.", (1, 1))
    )
    code, out, _ = run(capsys, "upload", str(tmp_path), "--stack-name", env.name, "--wait")
    assert code == 0
    assert "wait: 1 captioned, 0 rejected" in out


# -- inspecting failures ----------------------------------------------------------------------------
def test_dlq_lists_per_image_with_the_latest_error_and_consumes_nothing(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two copies of one image's message and one of another's in the DLQ, and an error record
    # for the first image; a stack-wide configuration fault in the health record
    dlq_message(env, "images/a.png", "e1")
    dlq_message(env, "images/a.png", "e1")
    dlq_message(env, "images/b c.png", "e2")
    env.sqs.send_message(QueueUrl=env.stack.dlq_url, MessageBody="not json")
    env.put_json(
        keys.error_key("images/a.png"),
        error_record(
            stage="caption",
            error_code="model_error",
            error_type="ModelErrorException",
            message="the model failed",
            retryable=False,
            bucket=env.stack.bucket,
            source_key="images/a.png",
            source_etag="e1",
        ),
    )
    env.put_json(
        keys.CAPTION_HEALTH_KEY,
        {
            "kind": "configuration_fault",
            "error_type": "AccessDeniedException",
            "message": "no access",
            "occurred_at": "2026-12-01T08:00:00Z",
            "epoch": 1,
        },
    )

    # When listed (twice: a listing must leave everything for the next one)
    for _ in range(2):
        code, out, err = run(capsys, "dlq", "--stack-name", env.name, "--json")
        assert code == 0, err
    doc = one_json(out, "dlq", 0)

    # Then per image: copies, receive counts, times, the latest error (its record, else the fault)
    assert doc["messages"] == 4
    assert doc["unreadable"] == 1
    a, b = doc["images"]
    assert (a["source_key"], a["messages"], a["source_etag"]) == ("images/a.png", 2, "e1")
    assert a["receive_count"] >= 1
    assert a["first_seen"] is not None
    assert a["first_seen"] <= a["last_seen"]
    assert a["latest_error"] == "model_error: the model failed"
    assert a["latest_error_source"] == keys.error_key("images/a.png")
    assert b["source_key"] == "images/b c.png"
    assert b["latest_error"] == "AccessDeniedException: no access"
    assert b["latest_error_source"] == keys.CAPTION_HEALTH_KEY

    # The text form names the images and says nothing was consumed
    code, out, _ = run(capsys, "dlq", "--stack-name", env.name)
    assert "images/b c.png" in out
    assert "consumed nothing" in out

    # And every message is still in the queue and receivable now
    assert len(receive_all(env, env.stack.dlq_url, 4)) == 4


def test_status_shows_the_resize_failure_queue(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # Given one upload event the resize function gave up on
    env.sqs.send_message(
        QueueUrl=env.stack.resize_failure_queue_url, MessageBody=json.dumps({"requestPayload": {}})
    )
    code, out, _ = run(capsys, "status", "--stack-name", env.name, "--json", "--no-usage")
    assert code == 0
    assert json.loads(out)["resize_failure_queue"]["visible"] == 1
    code, out, _ = run(capsys, "status", "--stack-name", env.name, "--no-usage")
    assert "resize failures    1 waiting" in out


class Terminal(io.StringIO):
    """Standard input as a terminal that answers with ``text``."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "kept"), [("n\n", 1, True), ("\n", 1, True), ("yes\n", 0, False)])
def test_reprocess_asks_on_a_terminal_and_only_yes_goes_ahead(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    kept: bool,
) -> None:
    # Given captioned images and a terminal on standard input
    seed_pipeline_state(env)
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    # When reprocess runs without --yes
    result, out, err = run(capsys, "reprocess", "--stack-name", env.name, "--prefix", "trips")
    # Then it asked (with the count and the cost) and did only what the answer said
    for words in ("2 image(s)", "paid model call(s)", "[y/N]"):
        assert words in err
    assert result == code
    assert env.exists(keys.caption_key("images/trips/a b.png")) is kept
    if kept:
        assert "not confirmed" in out
