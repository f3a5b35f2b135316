"""Resize/encode stage against moto: S3 events in, base64 objects + SQS messages or error records out."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from lambdas.shared import aws, keys
from lambdas.shared.config import SSM_DEFAULTS
from lambdas.shared.records import ImageMessage
from tests.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

BUCKET = "resize-test-bucket"
PREFIX = "/ResizeTest"


def _jpeg(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _event_for(s3: Any, *source_keys: str) -> dict[str, Any]:
    """An S3 ObjectCreated event with keys URL-encoded the way S3 encodes them."""
    records = []
    for key in source_keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-24T07:00:00.000Z",
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


@pytest.fixture
def stage(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from aws_lambda_powertools.utilities import parameters

    from lambdas.resize import handler
    from lambdas.shared import settings

    with mock_aws():
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        ssm = boto3.client("ssm")
        s3.create_bucket(Bucket=BUCKET)
        queue_url = sqs.create_queue(QueueName="caption")["QueueUrl"]
        for name, value in SSM_DEFAULTS.items():
            ssm.put_parameter(Name=f"{PREFIX}/{name}", Value=value, Type="String")
        monkeypatch.setenv("BUCKET_NAME", BUCKET)
        monkeypatch.setenv("QUEUE_URL", queue_url)
        monkeypatch.setenv("SSM_PREFIX", PREFIX)
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "resize-encode")
        # every cache that holds clients or settings is per test
        settings.env_settings.cache_clear()
        aws.client.cache_clear()
        handler._adapters.cache_clear()
        parameters.clear_caches()
        yield {"s3": s3, "sqs": sqs, "ssm": ssm, "queue_url": queue_url, "handler": handler}
        settings.env_settings.cache_clear()
        aws.client.cache_clear()
        handler._adapters.cache_clear()
        parameters.clear_caches()


def _messages(sqs: Any, queue_url: str) -> list[ImageMessage]:
    out: list[ImageMessage] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(ImageMessage.from_json(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_given_event_with_several_encoded_keys_when_handled_then_every_record_encoded_and_queued(stage):
    # Given three uploads whose names need URL-encoding (space, '+', unicode)
    s3, sqs = stage["s3"], stage["sqs"]
    names = ["images/trips/a b.jpg", "images/x+y.jpg", "images/caf\u00e9/\u00fcber.jpg"]
    for i, key in enumerate(names):
        s3.put_object(Bucket=BUCKET, Key=key, Body=_jpeg((800 + i * 100, 600)))
    # When one event carrying all three records is handled
    result = stage["handler"].lambda_handler(_event_for(s3, *names), FakeLambdaContext())
    # Then each has its base64 object (a 1280x720 PNG, with the source ETag in metadata) and message
    assert result["outcomes"] == {"resized": 3}
    messages = {m.source_key: m for m in _messages(sqs, stage["queue_url"])}
    assert set(messages) == set(names)
    for key in names:
        obj = s3.get_object(Bucket=BUCKET, Key=keys.encoded_key(key))
        png = base64.b64decode(obj["Body"].read(), validate=True)
        with Image.open(io.BytesIO(png)) as img:
            assert (img.format, img.size) == ("PNG", (1280, 720))
        etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        assert obj["Metadata"]["source-etag"] == etag
        msg = messages[key]
        assert msg.source_etag == etag
        assert msg.encoded_key == keys.encoded_key(key)
        assert msg.bucket == BUCKET
        assert msg.height == 600


def test_given_one_bad_record_when_handled_then_error_record_and_others_succeed(stage):
    s3, sqs = stage["s3"], stage["sqs"]
    s3.put_object(Bucket=BUCKET, Key="images/good.jpg", Body=_jpeg())
    s3.put_object(Bucket=BUCKET, Key="images/notes.jpg", Body=b"<html>not an image</html>")
    s3.put_object(Bucket=BUCKET, Key="images/empty.png", Body=b"")
    event = _event_for(s3, "images/notes.jpg", "images/good.jpg", "images/empty.png")

    result = stage["handler"].lambda_handler(event, FakeLambdaContext())

    assert result["outcomes"] == {"resized": 1, "rejected": 2}
    assert [m.source_key for m in _messages(sqs, stage["queue_url"])] == ["images/good.jpg"]
    notes = json.loads(s3.get_object(Bucket=BUCKET, Key="errors/notes.jpg.json")["Body"].read())
    assert notes["stage"] == "resize"
    assert notes["error_code"] == "unsupported_format"
    assert notes["retryable"] is False
    assert notes["source"]["key"] == "images/notes.jpg"
    assert notes["message"]
    meta = s3.head_object(Bucket=BUCKET, Key="errors/notes.jpg.json")["Metadata"]
    etag = s3.head_object(Bucket=BUCKET, Key="images/notes.jpg")["ETag"].strip('"')
    assert meta == {"source-etag": etag, "stage": "resize"}
    empty = json.loads(s3.get_object(Bucket=BUCKET, Key="errors/empty.png.json")["Body"].read())
    assert empty["error_code"] == "empty_file"


def test_given_duplicate_event_when_handled_again_then_no_reencode_but_message_resent(stage):
    s3, sqs = stage["s3"], stage["sqs"]
    s3.put_object(Bucket=BUCKET, Key="images/dup.jpg", Body=_jpeg())
    event = _event_for(s3, "images/dup.jpg")
    stage["handler"].lambda_handler(event, FakeLambdaContext())
    first = s3.head_object(Bucket=BUCKET, Key="base64_images/dup.jpg.txt")

    result = stage["handler"].lambda_handler(event, FakeLambdaContext())

    assert result["outcomes"] == {"duplicate": 1}
    second = s3.head_object(Bucket=BUCKET, Key="base64_images/dup.jpg.txt")
    assert second["ETag"] == first["ETag"]
    assert second["LastModified"] == first["LastModified"]
    # the message goes out again (a crash between write and send loses nothing); captioning dedupes
    assert len(_messages(sqs, stage["queue_url"])) == 2


def test_given_object_replaced_after_event_when_handled_then_superseded_without_output(stage):
    s3, sqs = stage["s3"], stage["sqs"]
    s3.put_object(Bucket=BUCKET, Key="images/v.jpg", Body=_jpeg(color=(1, 2, 3)))
    stale_event = _event_for(s3, "images/v.jpg")
    s3.put_object(Bucket=BUCKET, Key="images/v.jpg", Body=_jpeg(color=(9, 9, 9)))  # new version

    result = stage["handler"].lambda_handler(stale_event, FakeLambdaContext())

    assert result["outcomes"] == {"superseded": 1}
    assert _messages(sqs, stage["queue_url"]) == []


def test_given_reupload_of_fixed_file_when_handled_then_old_error_record_removed(stage):
    s3 = stage["s3"]
    s3.put_object(Bucket=BUCKET, Key="images/fix.jpg", Body=b"garbage")
    stage["handler"].lambda_handler(_event_for(s3, "images/fix.jpg"), FakeLambdaContext())
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="errors/")["KeyCount"] == 1

    s3.put_object(Bucket=BUCKET, Key="images/fix.jpg", Body=_jpeg())
    stage["handler"].lambda_handler(_event_for(s3, "images/fix.jpg"), FakeLambdaContext())

    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="errors/")["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="base64_images/")["KeyCount"] == 1


def test_given_folder_marker_and_test_event_when_handled_then_ignored(stage):
    s3 = stage["s3"]
    s3.put_object(Bucket=BUCKET, Key="images/trips/", Body=b"")
    result = stage["handler"].lambda_handler(_event_for(s3, "images/trips/"), FakeLambdaContext())
    assert result["outcomes"] == {"ignored": 1}
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="errors/")["KeyCount"] == 0
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    assert stage["handler"].lambda_handler(test_event, FakeLambdaContext())["outcomes"] == {}


def test_given_missing_ssm_parameter_when_invoked_then_cold_start_error_names_it(stage):
    from lambdas.shared.config import ConfigError

    stage["ssm"].delete_parameter(Name=f"{PREFIX}/resize-policy")
    with pytest.raises(ConfigError, match="/ResizeTest/resize-policy"):
        stage["handler"].lambda_handler({"Records": []}, FakeLambdaContext())


def test_given_s3_outage_for_one_record_when_handled_then_others_done_and_event_retried(stage, monkeypatch):
    s3 = stage["s3"]
    s3.put_object(Bucket=BUCKET, Key="images/ok.jpg", Body=_jpeg())
    s3.put_object(Bucket=BUCKET, Key="images/flaky.jpg", Body=_jpeg())
    event = _event_for(s3, "images/flaky.jpg", "images/ok.jpg")
    from botocore.exceptions import ClientError

    from lambdas.shared.storage import S3Store

    real_get = S3Store.get_bytes

    def flaky_get(self, key, if_match=None):
        if key == "images/flaky.jpg":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")
        return real_get(self, key, if_match)

    monkeypatch.setattr(S3Store, "get_bytes", flaky_get)
    with pytest.raises(stage["handler"].RetryableEventFailure, match="1 record"):
        stage["handler"].lambda_handler(event, FakeLambdaContext())
    # the healthy record was fully handled before the event was handed back for a retry
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="base64_images/")["KeyCount"] == 1


def test_given_upload_deleted_before_processing_when_handled_then_source_missing_record(stage):
    # Given an event for an object that was deleted before the function read it
    s3 = stage["s3"]
    s3.put_object(Bucket=BUCKET, Key="images/gone.jpg", Body=_jpeg())
    event = _event_for(s3, "images/gone.jpg")
    s3.delete_object(Bucket=BUCKET, Key="images/gone.jpg")
    # When it is handled
    result = stage["handler"].lambda_handler(event, FakeLambdaContext())
    # Then it ends as an error record, not a crash and not silence
    assert result["outcomes"] == {"rejected": 1}
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="errors/gone.jpg.json")["Body"].read())
    assert record["error_code"] == "source_missing"
    assert record["source"]["key"] == "images/gone.jpg"
    assert _messages(stage["sqs"], stage["queue_url"]) == []


def test_given_upload_over_the_memory_derived_byte_limit_when_handled_then_rejected_unread(
    stage, monkeypatch
):
    from lambdas.shared import settings

    # Given a 128 MB function (about 10 MB readable) and an 11 MB upload
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    settings.env_settings.cache_clear()
    s3 = stage["s3"]
    s3.put_object(Bucket=BUCKET, Key="images/huge.png", Body=b"\0" * (11 * 1024 * 1024))
    event = _event_for(s3, "images/huge.png")

    from lambdas.shared.storage import S3Store

    def never_read(self, key, if_match=None):
        raise AssertionError(f"{key} must be rejected from its size, without being read")

    monkeypatch.setattr(S3Store, "get_bytes", never_read)
    # When it is handled
    result = stage["handler"].lambda_handler(event, FakeLambdaContext())
    # Then it is rejected as too large, from the event's size alone
    assert result["outcomes"] == {"rejected": 1}
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="errors/huge.png.json")["Body"].read())
    assert record["error_code"] == "file_too_large"
    assert "11,534,336 bytes" in record["message"]
