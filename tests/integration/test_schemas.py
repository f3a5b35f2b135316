"""Real records against docs/schemas/: the shipped resize and caption handlers on moto write a caption
and error records of both stages, and ``imgcap export`` of that bucket writes rows; each validates.

Bedrock is faked at the client boundary (Stubber); everything else is the code that ships. One
message per caption invocation, so each stubbed answer belongs to a known image.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from PIL import Image

from imgcap.cli import main
from imgcap.ops import export
from imgcap.ops.aws import AwsClients
from imgcap.ops.context import OpsContext
from imgcap.ops.stack import StackRef
from lambdas.shared import aws, keys
from lambdas.shared.config import SSM_BUCKET_PARAM, SSM_DEFAULTS
from tests.conftest import _FAKE_AWS
from tests.lambda_context import FakeLambdaContext
from tests.schemas import assert_valid

pytestmark = pytest.mark.integration

BUCKET = "schema-test-bucket"
PREFIX = "/SchemaTest"
GOOD, BROKEN, REFUSED = "images/trips/a b.jpg", "images/broken.png", "images/refused.png"


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _answer(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 1620, "outputTokens": 12, "totalTokens": 1632},
        "metrics": {"latencyMs": 840},
    }


def _reset_caches() -> None:
    from aws_lambda_powertools.utilities import parameters

    from lambdas.resize import handler as resize_handler
    from lambdas.shared import settings

    settings.env_settings.cache_clear()
    aws.client.cache_clear()
    resize_handler._adapters.cache_clear()
    parameters.clear_caches()


def _s3_event(s3: Any, *source_keys: str) -> dict[str, Any]:
    records = []
    for key in source_keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-12-01T09:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": head["ContentLength"],
                        "eTag": head["ETag"].strip('"'),
                    },
                },
            }
        )
    return {"Records": records}


def _sqs_records(sqs: Any, queue_url: str, queue_arn: str) -> dict[str, dict[str, Any]]:
    """Every message on the caption queue as a Lambda SQS event record, by source key."""
    out: dict[str, dict[str, Any]] = {}
    for _ in range(10):  # bounded
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=60
        ).get("Messages", [])
        if not batch:
            break
        for m in batch:
            out[json.loads(m["Body"])["source_key"]] = {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
    return out


@pytest.fixture(scope="module")
def bucket_documents() -> Iterator[dict[str, Any]]:
    """Given three uploads (a photo, a broken file, one the model refuses) through both handlers."""
    from lambdas.caption import bedrock
    from lambdas.caption import handler as caption_handler
    from lambdas.resize import handler as resize_handler

    monkeypatch = pytest.MonkeyPatch()  # module scope: the handlers run once for every test here
    for name, value in _FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("SSM_PREFIX", PREFIX)
    _reset_caches()
    try:
        with mock_aws():
            s3, sqs, ssm = boto3.client("s3"), boto3.client("sqs"), boto3.client("ssm")
            s3.create_bucket(Bucket=BUCKET)
            queue_url = sqs.create_queue(QueueName="caption")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            values = {
                **SSM_DEFAULTS,
                "resize-policy": "crop",
                "requests-per-minute": "600000",
                "tokens-per-minute": "1000000000",
            }
            for name, value in values.items():
                ssm.put_parameter(Name=f"{PREFIX}/{name}", Value=value, Type="String")
            # what the stack provisions, so `imgcap export --stack-name SchemaTest` finds this bucket
            ssm.put_parameter(Name=f"{PREFIX}/{SSM_BUCKET_PARAM}", Value=BUCKET, Type="String")
            s3.put_object(Bucket=BUCKET, Key=GOOD, Body=_jpeg((800, 600), (200, 30, 30)))
            s3.put_object(Bucket=BUCKET, Key=BROKEN, Body=b"\x89PNG\r\n\x1a\nnot really a png")
            s3.put_object(Bucket=BUCKET, Key=REFUSED, Body=_jpeg((300, 500), (20, 20, 200)))

            # When the resize handler gets the S3 event
            monkeypatch.setenv("QUEUE_URL", queue_url)
            monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "resize-encode")
            resize_handler.lambda_handler(_s3_event(s3, GOOD, BROKEN, REFUSED), FakeLambdaContext())

            # ... and the caption handler each message (one per invocation, each with its answer)
            monkeypatch.delenv("QUEUE_URL")
            monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "caption")
            monkeypatch.setenv("MAX_CONCURRENCY", "2")
            _reset_caches()
            client = boto3.client("bedrock-runtime")
            monkeypatch.setattr(bedrock, "bedrock_client", lambda attempts, read_timeout: client)
            stubber = Stubber(client)
            environment = caption_handler.CaptionEnvironment()
            records = _sqs_records(sqs, queue_url, queue_arn)
            assert set(records) == {GOOD, REFUSED}  # the broken file never reached the queue
            answers = {
                GOOD: _answer('=HYPERLINK("x") a red field, "quoted", with commas'),
                REFUSED: _answer("", "content_filtered"),
            }
            for key, record in records.items():
                stubber.add_response("converse", answers[key])
                with stubber:
                    caption_handler.lambda_handler(
                        {"Records": [record]}, FakeLambdaContext(timeout_s=120.0), environment=environment
                    )
            stubber.assert_no_pending_responses()

            def read(key: str) -> dict[str, Any]:
                document: dict[str, Any] = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
                return document

            stack = StackRef(
                name="SchemaTest", region="us-east-1", bucket=BUCKET, queue_url=None, dlq_url=None
            )
            exports: dict[str, str] = {}
            for fmt in ("jsonl", "csv"):
                out, err = io.StringIO(), io.StringIO()
                ctx = OpsContext(clients=AwsClients(), stack=stack, out=out, err=err)
                export.run(ctx, fmt=fmt, include_errors=True, concurrency=2)
                exports[fmt] = out.getvalue()
            yield {
                "caption": read(keys.caption_key(GOOD)),
                "resize_error": read(keys.error_key(BROKEN)),
                "caption_error": read(keys.error_key(REFUSED)),
                "exports": exports,
            }
    finally:
        monkeypatch.undo()
        _reset_caches()


def test_the_caption_record_conforms_and_says_how_the_model_saw_the_image(
    bucket_documents: dict[str, Any],
) -> None:
    record = bucket_documents["caption"]
    assert_valid("caption-record", record, GOOD)
    assert record["resize"] == {"policy": "crop", "width": 1280, "height": 720}
    assert record["service_latency_ms"] == 840
    assert record["source"]["key"] == GOOD


def test_error_records_of_both_stages_conform(bucket_documents: dict[str, Any]) -> None:
    resize_error, caption_error = bucket_documents["resize_error"], bucket_documents["caption_error"]
    assert_valid("error-record", resize_error, BROKEN)
    assert_valid("error-record", caption_error, REFUSED)
    assert (resize_error["stage"], caption_error["stage"]) == ("resize", "caption")
    assert caption_error["error_code"] == "model_rejected"


def test_exported_rows_conform_and_keep_every_field(bucket_documents: dict[str, Any]) -> None:
    rows = [json.loads(line) for line in bucket_documents["exports"]["jsonl"].splitlines()]
    assert [(r["image_key"], r["status"]) for r in rows] == [
        (BROKEN, "error"),
        (REFUSED, "error"),
        (GOOD, "captioned"),
    ]
    for row in rows:
        assert_valid("export-row", row, row["image_key"])
    good = rows[2]
    caption = bucket_documents["caption"]
    assert (good["resize_policy"], good["resize_width"], good["resize_height"]) == ("crop", 1280, 720)
    assert good["caption"] == caption["caption"]  # JSON Lines: the text as the model wrote it
    assert good["service_latency_ms"] == caption["service_latency_ms"]
    assert good["prompt"] == caption["prompt"]
    assert good["uploaded_at"] == caption["uploaded_at"]


def test_the_csv_export_has_the_same_rows_with_formulas_defused(bucket_documents: dict[str, Any]) -> None:
    table = list(csv.DictReader(io.StringIO(bucket_documents["exports"]["csv"])))
    jsonl = [json.loads(line) for line in bucket_documents["exports"]["jsonl"].splitlines()]
    assert list(table[0]) == list(jsonl[0])  # the same columns in the same order
    good = table[2]
    assert good["caption"] == "'" + bucket_documents["caption"]["caption"]
    assert good["resize_policy"] == "crop"


def test_the_cli_chooses_fields_and_refuses_unknown_ones_in_one_line(
    bucket_documents: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # When `imgcap export --fields` is run on the bucket the handlers wrote
    argv = ["export", "--stack-name", "SchemaTest", "--format", "csv", "--include-errors"]
    assert main([*argv, "--fields", "image_key,resize_policy,error_code"]) == 0
    out = capsys.readouterr().out
    # Then only those columns, in that order
    assert out.splitlines() == [
        "image_key,resize_policy,error_code",
        f"{BROKEN},,corrupt_image",
        f"{REFUSED},,model_rejected",
        f"{GOOD},crop,",  # a space needs no quotes
    ]
    # ... an unknown field is one line and exit 2, never a traceback
    assert _exit_code([*argv, "--fields", "image_key,captoin"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "unknown field(s) captoin" in err
    # ... and an empty list is an argument error (exit 2)
    assert _exit_code([*argv, "--fields", " , "]) == 2
    assert "--fields needs at least one field name" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """``main``'s exit code, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_schemas_live_where_the_readme_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name in ("summary", "caption-record", "error-record", "export-row"):
        assert f"docs/schemas/{name}.schema.json" in readme
