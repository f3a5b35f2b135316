"""The operator CLI (`imgcap upload|status|report|redrive|reprocess|export`) against the local moto server.

One moto server per module; every test provisions its own stack (unique name) exactly like the
local runtime does, points boto3 at the server through AWS_ENDPOINT_URL_* and runs ``imgcap.cli.main``.
The bucket is seeded with realistic caption/error records (docs/contracts.md): the pipeline itself
is not run here.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from PIL import Image

from imgcap.cli import main
from lambdas.shared import keys
from tests.integration.ops_env import Env, assert_plain, env, moto_url, run, seed_pipeline_state

pytestmark = pytest.mark.integration
__all__ = ["env", "moto_url"]  # fixtures


# -- upload ------------------------------------------------------------------------------------------
def test_upload_syncs_folder_skips_unchanged_and_prints_plain_progress(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a folder with a nested path containing a space, a non-image file and a "large" file
    # (threshold lowered so the multipart path runs on a small file)
    from imgcap.ops import upload

    monkeypatch.setattr(upload, "MULTIPART_THRESHOLD", 4096)
    (tmp_path / "trips" / "day 1").mkdir(parents=True)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "trips" / "day 1" / "a b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 40)

    # When it is uploaded
    code, out, err = run(capsys, "upload", str(tmp_path), "--stack-name", env.name)

    # Then every file lands under images/ with POSIX keys, and the log has no control characters
    assert code == 0, err
    assert "uploaded 3 file(s)" in out
    assert "skipped 0" in out
    assert "failed 0" in out
    for key in ("images/trips/day 1/a b.jpg", "images/notes.txt", "images/big.bin"):
        assert env.exists(key), key
    big = env.s3.head_object(Bucket=env.stack.bucket, Key="images/big.bin")
    assert "-" in big["ETag"]  # multipart: the ETag is not an MD5, the md5 metadata is
    assert_plain(err)
    assert err.strip().splitlines()[-1].startswith("upload: 3/3 (100%)")

    # When it is uploaded again unchanged, then nothing is sent
    code, out, err = run(capsys, "upload", str(tmp_path), "--stack-name", env.name)
    assert code == 0
    assert "uploaded 0 file(s)" in out
    assert "skipped 3 unchanged" in out

    # When one file changes (same size, different bytes), then only that one is sent
    (tmp_path / "notes.txt").write_text("NOT an image")
    code, out, _ = run(capsys, "upload", str(tmp_path), "--stack-name", env.name)
    assert code == 0
    assert "uploaded 1 file(s)" in out
    assert "skipped 2 unchanged" in out
    body = env.s3.get_object(Bucket=env.stack.bucket, Key="images/notes.txt")["Body"].read()
    assert body == b"NOT an image"


def test_upload_with_prefix_and_exclude(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a folder with an image and a hidden file
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    # When uploaded below a subfolder, excluding dot files
    code, out, _ = run(
        capsys, "upload", str(tmp_path), "--stack-name", env.name, "--prefix", "/batch 7/", "--exclude", ".*"
    )
    # Then the key carries the prefix and the excluded file is not sent
    assert code == 0, out
    assert env.exists("images/batch 7/x.png")
    assert not env.exists("images/batch 7/.DS_Store")


def test_upload_of_missing_directory_is_a_one_line_error(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a path that does not exist, when uploading it, then exit 2 with one line and no traceback
    code, out, err = run(capsys, "upload", "/nonexistent/imgcap-dir", "--stack-name", env.name)
    assert code == 2
    assert out == ""
    assert err.strip() == "imgcap: /nonexistent/imgcap-dir is not a directory"


# -- status ------------------------------------------------------------------------------------------
def test_status_counts_prefixes_queues_errors_tokens_and_cost(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two captions, one error record, one pending image, two queued messages and one dead letter
    seed_pipeline_state(env)
    env.s3.put_object(Bucket=env.stack.bucket, Key="images/empty-folder/", Body=b"")  # folder marker
    for i in range(2):
        env.sqs.send_message(QueueUrl=env.stack.queue_url, MessageBody=json.dumps({"v": 1, "i": i}))
    env.sqs.send_message(QueueUrl=env.stack.dlq_url, MessageBody='{"v":1}')

    # When status runs with --json
    code, out, err = run(capsys, "status", "--stack-name", env.name, "--json")

    # Then the numbers are the seeded ones and the cost uses the Nova Pro list prices
    assert code == 0, err
    status = json.loads(out)
    assert status["prefixes"]["images/"]["objects"] == 4  # the folder marker is not an upload
    assert status["prefixes"]["captions/"]["objects"] == 2
    assert status["prefixes"]["errors/"]["objects"] == 1
    assert status["pending"] == 1
    assert status["pending_examples"] == ["images/pending.png"]
    assert status["caption_queue"]["visible"] == 2
    assert status["dead_letter_queue"]["visible"] == 1
    assert status["recent_errors_by_code"] == {"corrupt_image": 1}
    assert status["recent_errors"][0]["source_key"] == "images/broken.png"
    assert status["usage"]["input_tokens"] == 3200
    assert status["usage"]["output_tokens"] == 200
    assert status["usage"]["estimated_cost_usd"] == pytest.approx(3.2 * 0.0008 + 0.2 * 0.0032)
    assert_plain(err)

    # When status runs as text with other prices, then it reads as a summary with the override
    code, out, _ = run(capsys, "status", "--stack-name", env.name, "--input-price-per-1k", "0.001")
    assert code == 0
    assert "pending: 1 image(s)" in out
    assert "dead-letter queue  1 waiting" in out
    assert "imgcap redrive" in out
    assert "corrupt_image" in out
    assert f"${3.2 * 0.001 + 0.2 * 0.0032:.4f}" in out


# -- report ------------------------------------------------------------------------------------------
def test_report_writes_gallery_from_the_bucket(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given captions, an error record and a pending image in the bucket
    seed_pipeline_state(env)
    out_file = tmp_path / "out" / "report.html"

    # When the report is written
    code, out, err = run(capsys, "report", "--stack-name", env.name, "--out", str(out_file))

    # Then it holds every upload with its caption or its error
    assert code == 0, err
    html = out_file.read_text(encoding="utf-8")
    assert "A red square." in html
    assert "A blue, square tile." in html
    assert "corrupt_image" in html or "cannot identify image file" in html
    assert "pending.png" in html
    assert "4 entries: 2 captioned, 1 with errors" in out


# -- redrive -----------------------------------------------------------------------------------------
def test_redrive_moves_dead_letters_back_bounded_by_max(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # Given three messages (one with a message attribute) in the dead-letter queue
    bodies = [json.dumps({"v": 1, "source_key": f"images/{i}.png"}) for i in range(3)]
    for i, body in enumerate(bodies):
        attrs = {"origin": {"DataType": "String", "StringValue": "test"}} if i == 0 else {}
        env.sqs.send_message(QueueUrl=env.stack.dlq_url, MessageBody=body, MessageAttributes=attrs)

    # When at most two are redriven, then two move and one stays
    code, out, err = run(capsys, "redrive", "--stack-name", env.name, "--max", "2")
    assert code == 0, err
    assert "moved 2 message(s)" in out
    assert env.depth(env.stack.queue_url) == 2
    assert_plain(err)

    # When the rest is redriven, then the DLQ is empty and the queue holds the same bodies
    code, out, _ = run(capsys, "redrive", "--stack-name", env.name)
    assert code == 0
    assert "moved 1 message(s)" in out
    assert env.depth(env.stack.dlq_url) == 0
    received = env.sqs.receive_message(
        QueueUrl=env.stack.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    assert [
        m["MessageAttributes"]["origin"]["StringValue"] for m in received if "MessageAttributes" in m
    ] == ["test"]


# -- reprocess ---------------------------------------------------------------------------------------
def test_reprocess_deletes_records_and_retriggers_with_a_copy_event(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given captioned images under trips/ and elsewhere, with claim and encoded objects
    etags = seed_pipeline_state(env)
    target = "images/trips/a b.png"
    env.put_json(keys.claim_key(target, etags[target]), {"owner": "x"})
    env.put_json(keys.encoded_key(target), {"stand-in": "base64"})

    # When reprocess runs as a dry run, then nothing changes and the cost is spelled out
    code, out, _ = run(capsys, "reprocess", "--stack-name", env.name, "--prefix", "trips", "--dry-run")
    assert code == 0
    assert "would reprocess images/trips/a b.png" in out
    assert "2 paid model call(s)" in out
    assert env.exists(keys.caption_key(target))

    # When reprocess runs for trips/
    code, out, err = run(capsys, "reprocess", "--stack-name", env.name, "--prefix", "trips", "--yes")

    # Then the records are gone, the encoded copy stays, the image is unchanged but re-announced
    assert code == 0, err
    assert "re-triggered 2 image(s)" in out
    assert not env.exists(keys.caption_key(target))
    assert not env.exists(keys.claim_key(target, etags[target]))
    assert env.exists(keys.encoded_key(target))
    assert env.exists(keys.error_key("images/broken.png"))  # outside the prefix: untouched
    head = env.s3.head_object(Bucket=env.stack.bucket, Key=target)
    assert head["ETag"].strip('"') == etags[target]
    assert "reprocess-requested-at" in head["Metadata"]
    copied = sorted(
        unquote_plus(r["s3"]["object"]["key"]) for r in env.drain_events() if "Copy" in r["eventName"]
    )
    assert copied == ["images/trips/a b.png", "images/trips/c.png"]

    # When --reencode is given, then the encoded copy is deleted too
    code, _, _ = run(
        capsys, "reprocess", "--stack-name", env.name, "--prefix", "trips", "--reencode", "--yes"
    )
    assert code == 0
    assert not env.exists(keys.encoded_key(target))


def test_reprocess_refuses_an_empty_prefix_without_all(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # Given any stack, when --prefix is empty, then nothing is done and --all is suggested
    code, _, err = run(capsys, "reprocess", "--stack-name", env.name, "--prefix", "/")
    assert code == 2
    assert "--all" in err


# -- export ------------------------------------------------------------------------------------------
def test_export_jsonl_and_csv_manifests(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given two captions and one error record
    etags = seed_pipeline_state(env)

    # When exported as JSON Lines to standard output
    code, out, err = run(capsys, "export", "--stack-name", env.name, "--format", "jsonl")

    # Then one row per caption, sorted by image key, with the manifest fields
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image_key"] for r in rows] == ["images/trips/a b.png", "images/trips/c.png"]
    first = rows[0]
    assert first["caption"] == "A red square."
    assert first["encoded_key"] == "base64_images/trips/a b.png.txt"
    assert first["model_id"] == "us.amazon.nova-pro-v1:0"
    assert (first["input_tokens"], first["output_tokens"]) == (1500, 120)
    assert first["stop_reason"] == "end_turn"
    assert first["source_etag"] == etags["images/trips/a b.png"]
    assert "wrote 2 row(s)" in err

    # When exported as CSV with error rows to a file
    target = tmp_path / "manifest.csv"
    code, out, _ = run(
        capsys,
        "export",
        "--stack-name",
        env.name,
        "--format",
        "csv",
        "--include-errors",
        "--out",
        str(target),
    )
    assert code == 0
    assert out == ""
    table = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert [(r["image_key"], r["status"]) for r in table] == [
        ("images/broken.png", "error"),
        ("images/trips/a b.png", "captioned"),
        ("images/trips/c.png", "captioned"),
    ]
    assert table[0]["error_code"] == "corrupt_image"
    assert table[0]["input_tokens"] == ""
    assert table[2]["caption"] == "A blue, square tile."  # the comma survives CSV quoting


# -- stack resolution and errors -----------------------------------------------------------------------
def test_wrong_stack_name_is_one_clear_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a name with neither SSM parameters nor a CloudFormation stack
    # When any command runs against it
    for argv in (["status"], ["redrive"], ["export"], ["upload", "."]):
        code, out, err = run(capsys, *argv, "--stack-name", "NoSuchStack")
        # Then exit 3 (the stack is not reachable), one line naming the checks, no traceback
        assert code == 3
        assert out == ""
        assert err == (
            "imgcap: stack 'NoSuchStack' not found: no SSM parameters under /NoSuchStack and no "
            "CloudFormation stack named NoSuchStack (check --stack-name / AWS_REGION)\n"
        )


def test_aws_region_decides_where_the_stack_is_looked_up(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stack provisioned in us-east-1, when AWS_REGION names another region
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    code, _, err = run(capsys, "status", "--stack-name", env.name)
    # Then AWS_REGION wins (as in the AWS CLI) and the stack is not found there
    assert code == 3
    assert f"stack '{env.name}' not found" in err


def test_missing_credentials_is_one_clear_line(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no credentials anywhere (no env vars, no shared files, no instance metadata)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)

    # When a command runs
    code, out, err = run(capsys, "status", "--stack-name", env.name)

    # Then exit 3 with one line that says how to configure credentials
    assert code == 3
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "no usable AWS credentials found" in err
    assert "aws configure" in err
    assert "AWS_PROFILE" in err
    assert "Traceback" not in err


def test_stack_found_from_cloudformation_outputs_and_cross_checked(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a CloudFormation stack whose outputs name the provisioned bucket and queues, and
    # no SSM parameters under its own name
    other = f"Cfn{uuid.uuid4().hex[:8]}"
    outputs = {
        "BucketName": env.stack.bucket,
        "QueueUrl": env.stack.queue_url,
        "DeadLetterQueueUrl": env.stack.dlq_url,
        "DashboardName": f"{other}-dashboard",
    }
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    env.cfn.create_stack(StackName=other, TemplateBody=json.dumps(template))
    env.put_image("images/only.png")

    # When status runs against it, then the stack outputs are used (dashboard included)
    code, out, err = run(capsys, "status", "--stack-name", other, "--json", "--no-usage")
    assert code == 0, err
    status = json.loads(out)
    assert status["bucket"] == env.stack.bucket
    assert status["dashboard"] == f"{other}-dashboard"
    assert status["pending"] == 1

    # When SSM disagrees with the outputs, then the outputs win and a warning says so
    env.ssm.put_parameter(Name=f"/{other}/s3-bucket", Value="stale-bucket", Type="String")
    code, out, err = run(capsys, "status", "--stack-name", other, "--json", "--no-usage")
    assert code == 0
    assert json.loads(out)["bucket"] == env.stack.bucket
    assert "imgcap: warning: /" in err
    assert "stale-bucket" in err
    assert "using the stack output" in err


# -- help --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", ["upload", "status", "report", "redrive", "reprocess", "export", "dlq", "smoke"]
)
def test_every_subcommand_has_readable_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the CLI, when --help is asked of a subcommand, then it exits 0 with usage and a description
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: imgcap {command}")
    assert "--stack-name NAME" in text
    assert "AWS_PROFILE" in text
    if command == "reprocess":
        assert "paid" in text
        assert "--dry-run" in text


def test_top_level_help_lists_operator_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # Given the CLI, when --help is asked, then every operator command is listed with its summary
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("local", "upload", "status", "report", "redrive", "reprocess", "export", "dlq", "smoke"):
        assert f"    {command}" in text
    assert "exit codes:" in text
    assert "--json" in text


def test_status_says_when_the_fleet_is_too_small_and_prices_1000_captions(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given captions and a recent capacity note from a caption worker (issue 13)
    import time

    from lambdas.caption.capacity import assess

    seed_pipeline_state(env)
    note = assess(
        requests_per_minute=200,
        tokens_per_minute=400_000,
        tokens_per_call=2_000,
        concurrency=10,
        call_s=4.3,
        backlog=True,
    ).document(epoch=time.time(), occurred_at="2026-12-01T10:00:00Z", model_id="us.amazon.nova-pro-v1:0")
    env.s3.put_object(Bucket=env.stack.bucket, Key="health/capacity.json", Body=json.dumps(note).encode())

    # When status runs as JSON and as text
    code, out, err = run(capsys, "status", "--stack-name", env.name, "--json")
    assert code == 0, err
    status = json.loads(out)
    code, text, _ = run(capsys, "status", "--stack-name", env.name)

    # Then the shortfall is one sentence with the fix, and 1,000 captions have a Bedrock price
    assert status["capacity_shortfall"]["suggested_max_concurrency"] == 18
    [sentence] = [s for s in status["attention"] if "too small for the quota" in s]
    assert "10 workers can do ~140 of the 200 requests/minute configured" in sentence
    assert "`-c maxConcurrency=18`" in sentence
    assert "attention: The caption fleet is too small" in text
    cost = status["cost_per_1000_captions"]
    assert cost["bedrock_usd"] == pytest.approx(status["usage"]["estimated_cost_usd"] / 2 * 1000, rel=1e-3)
    assert cost["lambda_usd"] is None  # no function names and no AWS/Lambda metrics here
    assert "per 1,000 captions: Bedrock $" in text


def test_status_ignores_a_capacity_note_older_than_fifteen_minutes(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    seed_pipeline_state(env)
    old = {"kind": "capacity_shortfall", "message": "at the observed ...", "epoch": time.time() - 3600}
    env.s3.put_object(Bucket=env.stack.bucket, Key="health/capacity.json", Body=json.dumps(old).encode())
    code, out, err = run(capsys, "status", "--stack-name", env.name, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["capacity_shortfall"] is None
    assert not [s for s in status["attention"] if "too small for the quota" in s]
