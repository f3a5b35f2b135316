"""Backfill stage against moto (S3, SQS) with the fake Bedrock control plane of tests/batch_fakes.

A complete round trip through the real handlers: a request document -> the submit handler writes
the JSONL input files and the record index and creates the job; the fake Bedrock answers the
records (lines out of order, one failed record, one record it never answers); the state-change
event (or the poll) -> the collect handler publishes captions and error records by the online
path's rules. Claims show that nothing is paid twice.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from lambdas.backfill import handler as backfill_handler
from lambdas.backfill import records
from lambdas.backfill.requests import BackfillRequest, Item
from lambdas.backfill.settings import BackfillEnv
from lambdas.caption.claims import Claims
from lambdas.shared import contract, keys
from lambdas.shared.config import ModelSpec
from lambdas.shared.contract import BatchLimits
from lambdas.shared.storage import S3Store, SqsQueue
from tests.batch_fakes import FakeBedrockJobs, converse_answer, state_change_event
from tests.lambda_context import FakeLambdaContext
from tests.schemas import assert_valid

pytestmark = pytest.mark.integration

BUCKET = "backfill-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/BatchServiceRole"
MIN_RECORDS = 3


def _png_b64() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 18), (10, 120, 200)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue())


PNG_B64 = _png_b64()


class World:
    def __init__(self, s3: Any, sqs: Any, queue_url: str, limits: BatchLimits) -> None:
        self.s3, self.sqs, self.queue_url = s3, sqs, queue_url
        self.store = S3Store(s3, BUCKET)
        self.bedrock = FakeBedrockJobs()
        self.env = BackfillEnv(
            bucket=BUCKET,
            queue_url=queue_url,
            role_arn=ROLE,
            ssm_prefix="/BackfillTest",
            ssm_max_age_s=60,
            limits=limits,
        )
        self.environment = backfill_handler.BackfillEnvironment(
            env=lambda: self.env,
            spec=lambda _env: ModelSpec(),
            s3=lambda: s3,
            jobs=lambda: self.bedrock,
            queue=lambda env: SqsQueue(sqs, env.queue_url),
        )

    def seed(self, name: str, body: str | None = None, encoded: bool = True) -> Item:
        key = f"images/archive/{name}"
        etag = str(self.s3.put_object(Bucket=BUCKET, Key=key, Body=(body or name).encode())["ETag"]).strip(
            '"'
        )
        if encoded:
            self.s3.put_object(
                Bucket=BUCKET,
                Key=keys.encoded_key(key),
                Body=PNG_B64,
                Metadata={
                    "source-etag": etag,
                    "source-width": "64",
                    "source-height": "36",
                    "policy": "pad",
                    "width": "32",
                    "height": "18",
                },
            )
        return Item(key, etag)

    def request(self, items: list[Item], backfill_id: str = "bf1") -> str:
        request = BackfillRequest(backfill_id, 0, tuple(items), "2026-12-01T00:00:00Z", "archive")
        self.s3.put_object(Bucket=BUCKET, Key=request.key, Body=request.to_json())
        return request.key

    def submit(self, request_key: str) -> dict[str, Any]:
        event = {"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": request_key}}}]}
        return backfill_handler.submit_handler(
            event, FakeLambdaContext(timeout_s=900), environment=self.environment
        )

    def collect(self, event: dict[str, Any]) -> dict[str, Any]:
        return backfill_handler.collect_handler(
            event, FakeLambdaContext(timeout_s=900), environment=self.environment
        )

    def caption(self, item: Item) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=keys.caption_key(item.key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def error(self, item: Item) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=BUCKET, Key=keys.error_key(item.key))["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def messages(self) -> list[dict[str, Any]]:
        found = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not got:
                return found
            for m in got:
                found.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def keys(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

    def job_document(self, name: str) -> dict[str, Any]:
        return json.loads(
            self.s3.get_object(Bucket=BUCKET, Key=records.job_document_key(name))["Body"].read()
        )


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="caption-queue")["QueueUrl"]
        limits = BatchLimits(min_records=MIN_RECORDS, max_records_per_file=2, max_file_bytes=10_000_000)
        yield World(s3, sqs, url, limits)


def test_given_a_request_when_submitted_and_the_job_completes_then_every_image_ends_as_one_record(world):
    # Given six archive images with encoded copies
    items = [world.seed(f"img{i}.jpg") for i in range(6)]
    # When the request is submitted
    result = world.submit(world.request(items))["results"][0]
    # Then one Converse job holds all six, in files of at most two records, with an index
    assert result["outcome"] == "submitted"
    assert result["records"] == 6
    (created,) = world.bedrock.created
    name = created["jobName"]
    assert created["modelInvocationType"] == "Converse"
    assert created["roleArn"] == ROLE
    assert created["inputDataConfig"]["s3InputDataConfig"]["s3Uri"] == f"s3://{BUCKET}/batch/input/{name}/"
    inputs = sorted(world.keys(records.input_prefix(name)))
    assert len(inputs) == 3
    first = json.loads(world.s3.get_object(Bucket=BUCKET, Key=inputs[0])["Body"].read().splitlines()[0])
    assert first["modelInput"]["messages"][0]["content"][0]["image"]["source"]["bytes"] == PNG_B64.decode()
    assert "modelId" not in first["modelInput"]
    # ... and the online path cannot take any of them while the job runs, even 20 h after its lease
    online = Claims(world.store, lease_s=900, wall=lambda: time.time() + 20 * 3600)
    assert all(online.take(i.key, i.etag, "online-msg") is None for i in items)
    # (a claim outlives the job's timeout plus margin only: then an online delivery may take it)
    late = Claims(world.store, lease_s=900, wall=lambda: time.time() + 26 * 3600)
    late_claim = late.take(items[0].key, items[0].etag, "late-msg")
    assert late_claim is not None
    late.release(late_claim)

    # Given image 1 is uploaded again while its old version is in the job, and captioned online
    newer = world.seed("img1.jpg", body="a newer upload")
    world.store.put_json(
        keys.caption_key(newer.key), {"caption": "the new version"}, metadata={"source-etag": newer.etag}
    )
    # ... and Bedrock fails record 3 as invalid image, never answers record 5
    arn = created["jobArn"]
    by_id = {e.record_id: e for e in _index(world, name)}
    failed = next(r for r, e in by_id.items() if e.source_key == items[3].key)
    unanswered = next(r for r, e in by_id.items() if e.source_key == items[5].key)

    def answer(rid: str, _input: dict[str, Any]) -> dict[str, Any]:
        if rid == failed:
            return {"error": {"errorCode": 400, "errorMessage": "Unable to process the provided image"}}
        return {"modelOutput": converse_answer(f"caption {rid}")}

    world.bedrock.finish(world.s3, arn, answer, status="PartiallyCompleted", skip={unanswered})
    # When the state-change event arrives
    collected = world.collect(state_change_event(arn, name, "PartiallyCompleted"))["collected"][0]
    # Then each version ends exactly once: 3 captions, 1 error record, 1 superseded, 1 back online
    assert collected["collected"] is True
    assert collected["counts"] == {"captioned": 3, "error_record": 1, "superseded": 1, "requeued": 1}
    for item in (items[0], items[2], items[4]):
        caption = world.caption(item)
        assert_valid("caption-record", caption, "a batch caption record")
        assert caption["resize"] == {"policy": "pad", "width": 32, "height": 18}
        assert (caption["source"]["width"], caption["source"]["height"]) == (64, 36)
        assert caption is not None
        assert caption["mode"] == "batch"
        assert caption["batch_job"] == name
        assert caption["source"]["etag"] == item.etag
        assert caption["caption"].startswith("caption R")
    assert world.caption(newer) == {"caption": "the new version"}  # the new version's caption wins
    error = world.error(items[3])
    assert_valid("error-record", error, "a batch error record")
    assert error is not None
    assert error["error_code"] == "model_rejected"
    assert error["details"]["mode"] == "batch"
    assert world.caption(items[5]) is None
    (message,) = world.messages()
    assert message["resize_policy"] == "pad"
    assert (message["target_width"], message["target_height"], message["width"]) == (32, 18, 64)
    assert message["source_key"] == items[5].key
    assert message["source_etag"] == items[5].etag
    # ... and every claim of the job is released
    assert world.keys("claims/") == []
    doc = world.job_document(name)
    assert doc["state"] == "collected"
    assert doc["manifest"]["errorRecordCount"] == 1
    assert doc["usage"]["input_tokens"] == 4 * 1600  # paid for: the superseded answer too

    # When the poll runs afterwards, or the event comes twice, nothing changes
    assert world.collect({"source": "aws.events", "detail-type": "Scheduled Event"})["collected"] == []
    again = world.collect(state_change_event(arn, name, "PartiallyCompleted"))["collected"][0]
    assert again["collected"] is True
    assert world.messages() == []


def _index(world: World, name: str) -> list[records.IndexEntry]:
    raw = world.s3.get_object(Bucket=BUCKET, Key=records.job_index_key(name))["Body"].read()
    return list(records.read_index(raw.splitlines()).values())


def test_given_a_lost_event_when_the_poll_runs_then_the_job_is_collected(world):
    items = [world.seed(f"p{i}.jpg") for i in range(3)]
    world.submit(world.request(items))
    (created,) = world.bedrock.created
    arn = created["jobArn"]
    # While running, the poll only records the status
    world.bedrock.set_status(arn, "InProgress")
    (running,) = world.collect({"source": "aws.events"})["collected"]
    assert running["collected"] is False
    assert world.job_document(created["jobName"])["status"] == "InProgress"
    world.bedrock.finish(world.s3, arn)
    (done,) = world.collect({"source": "aws.events"})["collected"]
    assert done["counts"] == {"captioned": 3}
    assert all(world.caption(i)["mode"] == "batch" for i in items)


def test_given_fewer_images_than_the_job_minimum_then_they_go_to_the_online_queue(world):
    items = [world.seed(f"s{i}.jpg") for i in range(MIN_RECORDS - 1)]
    result = world.submit(world.request(items))["results"][0]
    assert result["outcome"] == "online"
    assert result["online"] == len(items)
    assert world.bedrock.created == []
    assert sorted(m["source_key"] for m in world.messages()) == sorted(i.key for i in items)
    assert world.keys("claims/") == []
    assert world.keys("batch/input/") == []


def test_given_images_already_captioned_or_claimed_online_then_they_are_not_sent_to_batch(world):
    items = [world.seed(f"c{i}.jpg") for i in range(5)]
    world.store.put_json(
        keys.caption_key(items[0].key), {"caption": "x"}, metadata={"source-etag": items[0].etag}
    )
    online = Claims(world.store, lease_s=900, wall=lambda: 1e12)  # an online delivery holds image 1 now
    assert online.take(items[1].key, items[1].etag, "online-msg") is not None
    missing = world.seed("c-unencoded.jpg", encoded=False)
    result = world.submit(world.request([*items, missing]))["results"][0]
    assert result["records"] == 3
    sent = {e.source_key for e in _index(world, world.bedrock.created[0]["jobName"])}
    assert sent == {items[2].key, items[3].key, items[4].key}


def test_given_a_job_larger_than_the_record_limit_then_the_rest_goes_on_in_the_next_request(world):
    world.env = dataclasses.replace(world.env, limits=BatchLimits(min_records=2, max_records_per_job=3))
    items = [world.seed(f"l{i}.jpg") for i in range(5)]
    first = world.submit(world.request(items, backfill_id="big"))["results"][0]
    assert first["records"] == 3
    (next_key,) = [k for k in world.keys("batch/requests/") if k.endswith("-001.json")]
    second = world.submit(next_key)["results"][0]
    assert second["outcome"] == "submitted"
    assert second["records"] == 2
    names = [c["jobName"] for c in world.bedrock.created]
    sent = [e.source_key for n in names for e in _index(world, n)]
    assert sorted(sent) == sorted(i.key for i in items)  # each image in exactly one job


def test_given_create_fails_then_every_claim_is_released_and_the_error_propagates(world):
    items = [world.seed(f"f{i}.jpg") for i in range(3)]
    world.bedrock.fail_create = RuntimeError("ServiceQuotaExceededException")
    with pytest.raises(RuntimeError):
        world.submit(world.request(items))
    assert world.keys("claims/") == []


def test_given_a_retried_request_event_then_the_same_job_is_submitted_once_with_its_own_claims(world):
    items = [world.seed(f"r{i}.jpg") for i in range(4)]
    key = world.request(items)
    first = world.submit(key)["results"][0]
    # Lambda delivers the same S3 event again (e.g. the first invocation timed out after the create)
    again = world.submit(key)["results"][0]
    assert first["job_name"] == again["job_name"]
    assert again["records"] == 4  # its own claims are still its own, not "claimed by someone else"
    assert len({j["jobArn"] for j in world.bedrock.jobs.values()}) == 1


def test_given_the_collector_runs_out_of_time_then_the_next_poll_finishes_the_job(world):
    from lambdas.backfill.adapters import S3Files
    from lambdas.backfill.collect import Collector

    items = [world.seed(f"t{i}.jpg") for i in range(6)]
    world.submit(world.request(items))
    (created,) = world.bedrock.created
    world.bedrock.finish(world.s3, created["jobArn"])
    clock = iter([1000.0, 0.0])  # time for the first chunk, then none

    def collector(remaining: Any) -> Collector:
        return Collector(
            store=world.store,
            files=S3Files(world.s3, BUCKET),
            jobs=world.bedrock,
            queue=SqsQueue(world.sqs, world.queue_url),
            online_claim_lease_s=900,
            remaining_s=remaining,
            workers=1,
        )

    first = collector(lambda: next(clock)).collect(created["jobName"])
    assert first.busy is True
    assert first.counts == {"captioned": 2}  # the first input file (two records) only
    assert world.job_document(created["jobName"])["state"] == "running"
    (second,) = world.collect({"source": "aws.events"})["collected"]
    assert second["collected"] is True
    assert sum(second["counts"].values()) == 6
    assert all(world.caption(i)["mode"] == "batch" for i in items)
    assert world.keys("claims/") == []
    assert world.messages() == []


def test_given_a_file_larger_than_a_part_then_it_is_written_as_a_multipart_upload(world):
    from lambdas.backfill.adapters import S3Files

    files = S3Files(world.s3, BUCKET, part_bytes=5 * 1024 * 1024)  # S3's smallest part
    line = b"x" * (1024 * 1024 - 1) + b"\n"
    sink = files.open("batch/input/big/part-0001.jsonl")
    for _ in range(11):  # 11 MiB: two full parts and a last, smaller one
        sink.write(line)
    sink.close()
    head = world.s3.head_object(Bucket=BUCKET, Key="batch/input/big/part-0001.jsonl")
    assert head["ContentLength"] == 11 * len(line)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag names its part count
    assert sum(1 for _ in files.lines("batch/input/big/part-0001.jsonl")) == 11


def test_given_events_then_the_job_arn_is_read_from_the_detail_or_the_resources():
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc"
    assert backfill_handler.job_arn_of(state_change_event(arn, "n", "Completed")) == arn
    assert backfill_handler.job_arn_of({"resources": [arn], "detail": {}}) == arn
    assert backfill_handler.job_arn_of({"detail": {}}) is None


def test_given_the_environment_then_settings_parse_and_name_what_is_missing():
    from lambdas.backfill.settings import backfill_env_from
    from lambdas.shared.config import ConfigError

    # the builder the stack uses, read back by the functions' parser
    env = contract.backfill_environment(
        bucket="b",
        queue_url="https://q",
        ssm_prefix="/Stack",
        ssm_max_age_s=60,
        log_level="INFO",
        role_arn=ROLE,
        limits=BatchLimits(min_records=7),
    )
    parsed = backfill_env_from(env)
    assert parsed.limits.min_records == 7
    assert parsed.stack_name == "Stack"
    with pytest.raises(ConfigError, match="BATCH_SERVICE_ROLE_ARN"):
        backfill_env_from({k: v for k, v in env.items() if k != contract.ENV_BATCH_ROLE_ARN})
    with pytest.raises(ConfigError, match="backfillMinRecords"):
        backfill_env_from({**env, contract.ENV_BATCH_LIMITS: '{"min_records": 0}'})


def test_given_the_real_online_consumer_then_batch_and_online_never_both_pay_for_one_image(world):
    """The caption stage's own use case, over the same moto bucket, during and after a job."""
    from lambdas.caption.pacing import Pacer
    from lambdas.caption.service import CaptionWorker, Delivery, Outcome
    from lambdas.shared.config import PacingSpec
    from lambdas.shared.records import ImageMessage
    from lambdas.shared.settings import CaptionSettings

    calls: list[str] = []

    def call_model(request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        calls.append(request["modelId"])
        return converse_answer("an online caption")

    worker = CaptionWorker(store=world.store, call_model=call_model, pacer=Pacer(600_000, 1e9))
    settings = CaptionSettings(
        bucket=BUCKET,
        model=ModelSpec(),
        pacing=PacingSpec(600_000, 1e9, 1),
        backoff_base_s=10,
        backoff_max_s=300,
        model_error_max_attempts=3,
        bedrock_read_timeout_s=50,
        bedrock_max_attempts=2,
        claim_lease_s=900,
    )

    def deliver(item: Item) -> Outcome:
        message = ImageMessage(
            BUCKET, item.key, item.etag, keys.encoded_key(item.key), 32, 18, "2026-12-01T00:00:00Z"
        )
        batch = worker.begin(settings, lambda: 100_000)
        delivery = Delivery("m-" + item.etag, "r", message.to_json(), 1, None)
        return batch.process(delivery).outcome

    items = [world.seed(f"o{i}.jpg") for i in range(4)]
    world.submit(world.request(items))
    (created,) = world.bedrock.created
    # While the job runs, an online delivery of any of its images makes no call and finishes:
    # the job's collector owns the image (a retry would only use up receives until the DLQ)
    assert [deliver(i) for i in items] == [Outcome.BATCH_HELD] * 4
    assert calls == []
    unanswered = next(e.record_id for e in _index(world, created["jobName"]) if e.source_key == items[3].key)
    world.bedrock.finish(world.s3, created["jobArn"], status="PartiallyCompleted", skip={unanswered})
    world.collect(state_change_event(created["jobArn"], created["jobName"], "PartiallyCompleted"))
    # After it: the batch-captioned ones are duplicates, the requeued one is captioned online once
    assert [deliver(i) for i in items[:3]] == [Outcome.DUPLICATE] * 3
    (requeued,) = world.messages()
    assert requeued["source_key"] == items[3].key
    assert deliver(items[3]) is Outcome.CAPTIONED
    assert len(calls) == 1
    assert world.caption(items[3])["caption"] == "an online caption"
    assert "mode" not in world.caption(items[3])

    # A batch hold whose job Bedrock never accepted (no job document saying running) keeps the
    # message: it is backed off, not finished, so nothing is lost if the job is never created
    lonely = world.seed("lonely.jpg")
    world.store.put_json(
        keys.claim_key(lonely.key, lonely.etag),
        {"message_id": "batch:never-created", "claimed_at": time.time(), "held_until": time.time() + 3600},
    )
    assert deliver(lonely) is Outcome.BUSY
    assert len(calls) == 1


def test_given_two_collectors_then_one_settles_the_job_and_a_stale_lock_is_taken_over(world):
    items = [world.seed(f"k{i}.jpg") for i in range(3)]
    world.submit(world.request(items))
    (created,) = world.bedrock.created
    name = created["jobName"]
    world.bedrock.finish(world.s3, created["jobArn"])
    doc_key = records.job_document_key(name)
    document = world.job_document(name)
    # Given another collector holds the lock right now
    world.store.put_json(doc_key, {**document, "state": "collecting", "collecting_since": time.time()})
    (busy,) = world.collect({"source": "aws.events"})["collected"]
    assert busy["busy"] is True
    assert world.caption(items[0]) is None
    # Given its holder died long ago (older than the function timeout)
    world.store.put_json(doc_key, {**document, "state": "collecting", "collecting_since": time.time() - 3600})
    (done,) = world.collect({"source": "aws.events"})["collected"]
    assert done["collected"] is True
    assert done["counts"] == {"captioned": 3}


def test_given_a_folder_prompt_then_the_job_sends_it_and_the_caption_record_says_so(world):
    from lambdas.backfill.settings import BatchModel
    from lambdas.shared.config import FolderPrompt

    rule = FolderPrompt(folder="archive", prompt="Describe {filename} from the {folder} folder.")
    world.environment.spec = lambda _env: BatchModel(ModelSpec(), (rule,))
    items = [world.seed(f"fp{i}.jpg") for i in range(3)]
    world.submit(world.request(items))
    (created,) = world.bedrock.created
    inputs = world.bedrock.finish(world.s3, created["jobArn"])
    texts = {r["modelInput"]["messages"][0]["content"][1]["text"] for r in inputs}
    assert texts == {f"Describe fp{i}.jpg from the archive folder." for i in range(3)}
    world.collect(state_change_event(created["jobArn"], created["jobName"], "Completed"))
    caption = world.caption(items[1])
    assert caption["prompt"] == "Describe fp1.jpg from the archive folder."
    assert caption["prompt_source"] == rule.source
    assert_valid("caption-record", caption, "a batch caption record with a folder prompt")
