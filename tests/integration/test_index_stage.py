"""Integration tier, issue 17: the index handler against moto (S3 notifications -> SQS, SSM) and the
loopback stand-ins (S3 Vectors, Bedrock InvokeModel embeddings), then ``imgcap search`` on the result.

Everything is wired the way the local runtime wires it (``provision`` + ``provision_search``): the
caption written under ``captions/`` is what puts a message on the index queue, through moto's own
S3 notification. Each round receives from the index queue, hands the batch to the real handler,
and deletes what the handler did not report in ``batchItemFailures`` (Lambda's rule).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import jsonschema
import pytest
from moto import mock_aws

from imgcap.cli import main as imgcap_main
from imgcap.local.emulator import sqs_event_record
from imgcap.local.provision import LocalStack, provision
from imgcap.local.search import SearchStack, provision_search
from imgcap.local.standin import BedrockStandin, StandinConfig
from imgcap.local.vectors_standin import VectorsStandin
from imgcap.ops.search import SEARCH_JSON_SCHEMA
from lambdas.index import handler as index_handler
from lambdas.index import settings as index_settings_module
from lambdas.index.embeddings import EmbeddingError, EmbeddingRetry, Purpose
from lambdas.index.service import IndexWorker, RequestPacer
from lambdas.index.vectors import VectorIndex
from lambdas.shared import aws, contract, keys
from lambdas.shared.storage import S3Store
from tests.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

STACK = "IndexTest"
DIM = 256


@dataclass
class Stage:
    stack: LocalStack
    search: SearchStack
    s3: Any
    sqs: Any
    vectors: Any

    def caption(self, source_key: str, body: bytes, caption: str, **extra: Any) -> str:
        etag = self.s3.put_object(Bucket=self.stack.bucket, Key=source_key, Body=body)["ETag"].strip('"')
        record = {
            "caption": caption,
            "source": {"bucket": self.stack.bucket, "key": source_key, "etag": etag},
            "encoded_key": keys.encoded_key(source_key),
            **extra,
        }
        self.s3.put_object(
            Bucket=self.stack.bucket, Key=keys.caption_key(source_key), Body=json.dumps(record)
        )
        return etag

    def vectors_now(self) -> dict[str, dict[str, Any]]:
        index = VectorIndex(self.vectors, self.search.vector_bucket, self.search.index_name)
        return dict(index.entries())

    def drain(self, environment: index_handler.IndexEnvironment, rounds: int = 10) -> list[list[str]]:
        """Deliver the index queue to the handler until it is empty; the failures of each round."""
        failures: list[list[str]] = []
        for _ in range(rounds):
            messages = self.sqs.receive_message(
                QueueUrl=self.search.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                break
            event = {"Records": [sqs_event_record(m, self.search.queue_arn, "us-east-1") for m in messages]}
            response = index_handler.lambda_handler(
                event, FakeLambdaContext(timeout_s=60), environment=environment
            )
            failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
            failures.append(failed)
            for m in messages:
                if m["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=self.search.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return failures


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stage]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with (
        VectorsStandin().serve() as vectors_standin,
        BedrockStandin(StandinConfig(rpm=None)).serve() as bedrock,
        mock_aws(),
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3VECTORS", vectors_standin.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bedrock.url)
        aws.client.cache_clear()
        s3, sqs, ssm = boto3.client("s3"), boto3.client("sqs"), boto3.client("ssm")
        vectors = boto3.client("s3vectors")
        stack = provision(s3=s3, sqs=sqs, ssm=ssm, stack_name=STACK, visibility_timeout_s=0)
        search = provision_search(
            s3=s3,
            sqs=sqs,
            ssm=ssm,
            s3vectors=vectors,
            stack=stack,
            embedding_dimension=DIM,
            max_receive_count=2,
        )
        sqs.set_queue_attributes(QueueUrl=search.queue_url, Attributes={"VisibilityTimeout": "0"})
        env = contract.index_environment(
            bucket=stack.bucket,
            ssm_prefix=stack.ssm_prefix,
            ssm_max_age_s=0,
            log_level="WARNING",
            max_concurrency=1,
            vector_bucket=search.vector_bucket,
            index_name=search.index_name,
            embedding_model_id=search.embedding_model_id,
            embedding_dimension=DIM,
            embedding_input="caption",
            knobs=contract.IndexKnobs(
                embedding_rpm=600_000, throttle_backoff_base_s=0, throttle_backoff_max_s=0
            ),
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        index_settings_module.index_settings.cache_clear()
        try:
            yield Stage(stack, search, s3, sqs, vectors)
        finally:
            index_settings_module.index_settings.cache_clear()
            aws.client.cache_clear()


def test_given_caption_writes_then_one_vector_per_image_replaced_on_reupload_and_deleted_with_the_image(
    stage,
):
    environment = index_handler.IndexEnvironment()
    first = stage.caption("images/trips/car.jpg", b"v1", "a bright red car on a street")
    stage.caption("images/boat.jpg", b"b1", "a small blue boat on a calm lake")
    assert stage.drain(environment) == [[]]
    vectors = stage.vectors_now()
    assert set(vectors) == {"trips/car.jpg", "boat.jpg"}
    assert vectors["trips/car.jpg"]["source_etag"] == first
    assert vectors["trips/car.jpg"]["folder"] == "trips"

    # Re-upload: a new version and its new caption replace the vector under the same key
    second = stage.caption("images/trips/car.jpg", b"v2", "a dark green forest")
    stage.drain(environment)
    vectors = stage.vectors_now()
    assert set(vectors) == {"trips/car.jpg", "boat.jpg"}
    assert vectors["trips/car.jpg"]["source_etag"] == second
    assert vectors["trips/car.jpg"]["caption"] == "a dark green forest"

    # Deleting the image (its ObjectRemoved notification) removes its vector; the caption write
    # trail never made the stage write anything under captions/ or images/
    before = {o["Key"] for o in stage.s3.list_objects_v2(Bucket=stage.stack.bucket).get("Contents", [])}
    stage.s3.delete_object(Bucket=stage.stack.bucket, Key="images/boat.jpg")
    stage.drain(environment)
    assert set(stage.vectors_now()) == {"trips/car.jpg"}
    after = {o["Key"] for o in stage.s3.list_objects_v2(Bucket=stage.stack.bucket).get("Contents", [])}
    assert after == before - {"images/boat.jpg"}


def test_given_embeddings_that_keep_throttling_then_that_message_ends_in_the_index_dlq_and_others_index(
    stage,
):
    calls: list[str] = []

    def make_worker(settings: Any) -> IndexWorker:
        real = index_handler._new_worker(settings)

        def embed(
            purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None
        ) -> list[float]:
            calls.append(text or "")
            if text and "boat" in text:
                raise EmbeddingError("ThrottlingException: Too many requests", EmbeddingRetry.THROTTLED)
            return real.embed(purpose, text=text, image_png=image_png)

        return IndexWorker(
            store=S3Store(aws.client("s3"), settings.bucket),
            index=real.index,
            embed=embed,
            pacer=RequestPacer(600_000),
            backoff_base_s=0,
            backoff_max_s=0,
        )

    environment = index_handler.IndexEnvironment(make_worker=make_worker)
    stage.caption("images/car.jpg", b"c", "a red car")
    stage.caption("images/boat.jpg", b"b", "a blue boat")
    captions_before = stage.s3.get_object(Bucket=stage.stack.bucket, Key="captions/boat.jpg.json")[
        "Body"
    ].read()
    failures = stage.drain(environment)
    assert len(failures[0]) == 1  # the throttled one, reported as a batch item failure
    assert set(stage.vectors_now()) == {"car.jpg"}
    dlq = stage.sqs.receive_message(QueueUrl=stage.search.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(dlq) == 1
    assert "boat.jpg.json" in dlq[0]["Body"]  # moto URL-encodes the key (captions%2Fboat.jpg.json)
    assert sum("boat" in c for c in calls) >= 2  # retried before the DLQ (maxReceiveCount 2)
    # the caption itself is untouched: indexing failures never reach captioning
    after = stage.s3.get_object(Bucket=stage.stack.bucket, Key="captions/boat.jpg.json")["Body"].read()
    assert after == captions_before


def test_given_an_indexed_bucket_then_imgcap_search_finds_the_expected_image_first_and_filters(
    stage, capsys, tmp_path
):
    environment = index_handler.IndexEnvironment()
    stage.caption(
        "images/trips/beach.jpg", b"1", "a bright sandy beach with blue sea and white waves", tags=["beach"]
    )
    stage.caption("images/trips/city.jpg", b"2", "a dark city street at night with yellow lights")
    stage.caption(
        "images/forest.jpg", b"3", "a green forest with tall pine trees beside a lake", tags=["nature"]
    )
    stage.drain(environment)
    assert len(stage.vectors_now()) == 3
    capsys.readouterr()

    assert imgcap_main(["search", "sandy beach blue sea", "--stack-name", STACK, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, SEARCH_JSON_SCHEMA)
    assert document["hits"][0]["key"] == "images/trips/beach.jpg"
    assert [h["distance"] for h in document["hits"]] == sorted(h["distance"] for h in document["hits"])

    assert imgcap_main(["search", "lake", "--stack-name", STACK, "--json", "--folder", "trips"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert {h["folder"] for h in hits} == {"trips"}
    assert "images/forest.jpg" not in {h["key"] for h in hits}

    assert imgcap_main(["search", "street", "--stack-name", STACK, "--json", "--tag", "nature"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["key"] for h in hits] == ["images/forest.jpg"]

    assert imgcap_main(["search", "night lights", "--stack-name", STACK]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.split()[-1] == "images/trips/city.jpg"

    # --html: a gallery with the encoded copy inlined
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really").decode()
    stage.s3.put_object(Bucket=stage.stack.bucket, Key=keys.encoded_key("images/trips/beach.jpg"), Body=png)
    page = tmp_path / "results.html"
    assert imgcap_main(["search", "beach", "--stack-name", STACK, "--html", str(page), "-k", "1"]) == 0
    text = page.read_text()
    assert "1. images/trips/beach.jpg" in text
    assert f"data:image/png;base64,{png}" in text


def test_given_existing_captions_then_reindex_queues_them_and_status_shows_the_lag_closing(stage, capsys):
    environment = index_handler.IndexEnvironment()
    stage.caption("images/a.jpg", b"a", "an orange sunset")
    stage.caption("images/b.jpg", b"b", "a grey staircase")
    stage.sqs.purge_queue(QueueUrl=stage.search.queue_url)  # as if search was turned on later
    capsys.readouterr()
    assert imgcap_main(["status", "--stack-name", STACK, "--json", "--no-usage"]) == 0
    index = json.loads(capsys.readouterr().out)["search_index"]
    assert (index["captions"], index["vectors"], index["not_indexed"]) == (2, 0, 2)

    assert imgcap_main(["reindex", "--stack-name", STACK]) == 0
    assert "queued 2 caption(s)" in capsys.readouterr().out
    stage.drain(environment)
    assert imgcap_main(["reindex", "--stack-name", STACK]) == 0  # idempotent: same keys, same count
    stage.drain(environment)
    assert set(stage.vectors_now()) == {"a.jpg", "b.jpg"}
    capsys.readouterr()
    assert imgcap_main(["status", "--stack-name", STACK, "--no-usage"]) == 0
    assert "lag 0 caption(s) not yet indexed" in capsys.readouterr().out


def test_given_a_stack_without_search_then_search_says_so_in_one_line(stage, capsys):
    ssm = boto3.client("ssm")
    ssm.delete_parameter(Name=f"/{STACK}/{contract.SSM_INDEX_NAME_PARAM}")
    assert imgcap_main(["search", "anything", "--stack-name", STACK]) == 2
    err = capsys.readouterr().err
    assert "search is off for stack 'IndexTest'" in err
    assert "Traceback" not in err


def test_given_an_empty_index_then_search_says_it_is_empty(stage, capsys):
    assert imgcap_main(["search", "anything", "--stack-name", STACK]) == 0
    assert "is empty: nothing has been indexed yet" in capsys.readouterr().err
