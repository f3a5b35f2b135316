"""Shared by the operator CLI's integration tests: a provisioned stack on a moto server, seeded records.

``moto_url`` (one moto server per test module) and ``env`` (a freshly provisioned stack with a
unique name, boto3 pointed at the server through AWS_ENDPOINT_URL_*) are fixtures; test modules
import them from here.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from PIL import Image

from imgcap.cli import main
from imgcap.local.provision import LocalStack, provision
from imgcap.local.servers import endpoint_environment, moto_server
from lambdas.shared import keys
from lambdas.shared.records import error_record

CONTROL_CHARS = ("\r", "\x1b", "\b")


@dataclass
class Env:
    stack: LocalStack
    s3: Any
    sqs: Any
    ssm: Any
    cfn: Any

    @property
    def name(self) -> str:
        return self.stack.stack_name

    def put_image(self, key: str, color: tuple[int, int, int] = (180, 40, 40)) -> str:
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), color).save(buf, "PNG")
        return str(self.s3.put_object(Bucket=self.stack.bucket, Key=key, Body=buf.getvalue())["ETag"]).strip(
            '"'
        )

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.stack.bucket, Key=key, Body=json.dumps(document).encode())

    def exists(self, key: str) -> bool:
        return "Contents" in self.s3.list_objects_v2(Bucket=self.stack.bucket, Prefix=key)

    def drain_events(self) -> list[dict[str, Any]]:
        """Every S3 event record delivered to the local notification queue so far (bounded loop)."""
        records: list[dict[str, Any]] = []
        for _ in range(20):
            messages = self.sqs.receive_message(
                QueueUrl=self.stack.events_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300
            ).get("Messages", [])
            if not messages:
                break
            records += [r for m in messages for r in json.loads(m["Body"]).get("Records", [])]
        return records

    def depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def caption_record(
    env: Env, source_key: str, etag: str, caption: str, tokens: tuple[int, int]
) -> dict[str, Any]:
    """A caption record shaped like the caption stage writes it (docs/contracts.md)."""
    return {
        "schema_version": 1,
        "caption": caption,
        "model_id": "us.amazon.nova-pro-v1:0",
        "prompt": "Generate a detailed description of the image.",
        "inference": {"maxTokens": 300, "temperature": 0.3, "topP": 0.1, "topK": 20},
        "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)},
        "stop_reason": "end_turn",
        "latency_ms": 1234,
        "source": {"bucket": env.stack.bucket, "key": source_key, "etag": etag, "width": 32, "height": 24},
        "encoded_key": keys.encoded_key(source_key),
        "uploaded_at": "2026-11-24T07:00:00.000Z",
        "captioned_at": "2026-11-24T07:00:05.000Z",
        "receive_count": 1,
    }


def seed_pipeline_state(env: Env) -> dict[str, str]:
    """Two captioned images, one rejected upload, one pending image."""
    etags = {
        "images/trips/a b.png": env.put_image("images/trips/a b.png"),
        "images/trips/c.png": env.put_image("images/trips/c.png", (10, 120, 200)),
        "images/broken.png": env.put_image("images/broken.png", (0, 0, 0)),
        "images/pending.png": env.put_image("images/pending.png", (250, 250, 0)),
    }
    env.put_json(
        keys.caption_key("images/trips/a b.png"),
        caption_record(
            env, "images/trips/a b.png", etags["images/trips/a b.png"], "A red square.", (1500, 120)
        ),
    )
    env.put_json(
        keys.caption_key("images/trips/c.png"),
        caption_record(
            env, "images/trips/c.png", etags["images/trips/c.png"], "A blue, square tile.", (1700, 80)
        ),
    )
    env.put_json(
        keys.error_key("images/broken.png"),
        error_record(
            stage="resize",
            error_code="corrupt_image",
            error_type="UnidentifiedImageError",
            message="cannot identify image file",
            retryable=False,
            bucket=env.stack.bucket,
            source_key="images/broken.png",
            source_etag=etags["images/broken.png"],
        ),
    )
    return etags


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as handle:
        yield handle.url


@pytest.fixture
def env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Env:
    for name, value in endpoint_environment(moto_url, bedrock_url="http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    stack_name = f"Ops{uuid.uuid4().hex[:10]}"
    session = boto3.session.Session()
    s3, sqs, ssm = session.client("s3"), session.client("sqs"), session.client("ssm")
    stack = provision(s3=s3, sqs=sqs, ssm=ssm, stack_name=stack_name)
    return Env(stack=stack, s3=s3, sqs=sqs, ssm=ssm, cfn=session.client("cloudformation"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_plain(text: str) -> None:
    for char in CONTROL_CHARS:
        assert char not in text, f"control character {char!r} in non-terminal output: {text!r}"
