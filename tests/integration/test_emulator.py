"""The event-source emulator against moto (``mock_aws``) and the worker processes it drives.

Event sources: the SQS event shape, partial batch responses, nothing deleted on a failed or
timed-out invocation, moto's own redrive to the DLQ, S3 events delivered as-is with async retries
and the on-failure destination. Workers: Lambda-like context and environment, captured output,
the function timeout enforced by killing and replacing the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imgcap.local.emulator import BatchVerdict, S3EventPump, SqsEventSource, settle_batch, sqs_event_record
from imgcap.local.provision import provision
from imgcap.local.workers import FunctionSpec, WorkerPool

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@dataclass
class FakeOutcome:
    ok: bool = True
    response: Any = None
    timed_out: bool = False
    error_type: str | None = None
    error_message: str | None = None
    request_id: str = "req-1"


@dataclass
class Recorder:
    """A fake ``invoke``: remembers events, answers with a function of the event."""

    answer: Any
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> FakeOutcome:
        self.events.append(json.loads(json.dumps(event)))
        return self.answer(event)


@pytest.fixture
def sqs(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _depth(sqs: Any, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _source(sqs: Any, url: str, arn: str, invoke: Any, batch_size: int = 10) -> SqsEventSource:
    return SqsEventSource(
        sqs=sqs, queue_url=url, queue_arn=arn, region=REGION, invoke=invoke, batch_size=batch_size
    )


# --- the SQS event ----------------------------------------------------------------------------


def test_given_a_received_message_when_converted_then_it_has_the_lambda_sqs_record_shape(sqs: Any) -> None:
    url, arn = _queue(sqs, "shape")
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"v":1}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "image"}},
    )
    message = sqs.receive_message(
        QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"], MaxNumberOfMessages=1
    )["Messages"][0]

    record = sqs_event_record(message, arn, REGION)

    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["md5OfBody"] == hashlib.md5(b'{"v":1}').hexdigest()
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    for name in ("SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"):
        assert record["attributes"][name]
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "image",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }


@pytest.mark.parametrize(
    ("outcome", "succeeded", "whole"),
    [
        (FakeOutcome(response=None), ("a", "b"), False),
        (FakeOutcome(response={}), ("a", "b"), False),
        (FakeOutcome(response={"batchItemFailures": []}), ("a", "b"), False),
        (FakeOutcome(response={"batchItemFailures": [{"itemIdentifier": "b"}]}), ("a",), False),
        (FakeOutcome(response={"batchItemFailures": [{"itemIdentifier": ""}]}), (), True),
        (FakeOutcome(response={"batchItemFailures": [{"itemIdentifier": "zzz"}]}), (), True),
        (FakeOutcome(response={"batchItemFailures": [{"id": "a"}]}), (), True),
        (FakeOutcome(response="ok"), (), True),
        (FakeOutcome(ok=False, error_type="ValueError"), (), True),
        (FakeOutcome(ok=False, timed_out=True, error_type="Sandbox.Timedout"), (), True),
    ],
)
def test_partial_batch_response_rules(outcome: FakeOutcome, succeeded: tuple[str, ...], whole: bool) -> None:
    verdict = settle_batch(["a", "b"], outcome)

    assert verdict.succeeded == succeeded
    assert verdict.whole_batch_failed is whole


# --- the event source mapping -----------------------------------------------------------------


def test_given_a_partial_failure_when_polled_then_only_the_failed_message_stays(sqs: Any) -> None:
    url, arn = _queue(sqs, "partial", VisibilityTimeout="30")
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")

    def fail_m1(event: dict[str, Any]) -> FakeOutcome:
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "m1"]
        return FakeOutcome(response={"batchItemFailures": [{"itemIdentifier": i} for i in failed]})

    invoke = Recorder(fail_m1)

    verdict = _source(sqs, url, arn, invoke).poll_once()

    assert isinstance(verdict, BatchVerdict)
    assert len(invoke.events[0]["Records"]) == 3
    assert len(verdict.succeeded) == 2
    assert len(verdict.failed) == 1
    assert _depth(sqs, url) == (0, 1)  # two deleted; the failed one is in flight until its timeout


def test_given_an_invocation_that_raises_when_polled_then_nothing_is_deleted(sqs: Any) -> None:
    url, arn = _queue(sqs, "raises", VisibilityTimeout="30")
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    invoke = Recorder(lambda _: FakeOutcome(ok=False, error_type="RuntimeError", error_message="boom"))
    source = _source(sqs, url, arn, invoke)

    verdict = source.poll_once()

    assert verdict is not None
    assert verdict.whole_batch_failed
    assert _depth(sqs, url) == (0, 3)
    assert source.stats.whole_batch_failures == 1
    assert source.stats.deleted == 0


def test_given_a_message_that_always_fails_when_received_max_times_then_the_queue_moves_it_to_the_dlq(
    sqs: Any,
) -> None:
    dlq_url, dlq_arn = _queue(sqs, "redrive-dlq")
    url, arn = _queue(
        sqs,
        "redrive",
        VisibilityTimeout="30",
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
    )
    sqs.send_message(QueueUrl=url, MessageBody="poison")

    def fail_and_requeue_now(event: dict[str, Any]) -> FakeOutcome:
        # what the caption handler does for a retryable failure: a short visibility, then fail it
        for record in event["Records"]:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
        return FakeOutcome(
            response={"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
        )

    invoke = Recorder(fail_and_requeue_now)
    source = _source(sqs, url, arn, invoke)

    results = [source.poll_once() for _ in range(3)]

    assert results[0] is not None
    assert results[1] is not None
    assert results[2] is None  # the third receive found it over maxReceiveCount: moved, not delivered
    assert [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in invoke.events] == ["1", "2"]
    assert _depth(sqs, url) == (0, 0)
    moved = sqs.receive_message(QueueUrl=dlq_url)["Messages"]
    assert [m["Body"] for m in moved] == ["poison"]


def test_given_duplicate_deliveries_when_polled_then_each_body_arrives_twice(sqs: Any) -> None:
    url, arn = _queue(sqs, "dupes")
    sqs.send_message(QueueUrl=url, MessageBody="once")
    invoke = Recorder(lambda _: FakeOutcome())
    source = SqsEventSource(
        sqs=sqs,
        queue_url=url,
        queue_arn=arn,
        region=REGION,
        invoke=invoke,
        batch_size=1,
        duplicate_deliveries=True,
    )

    source.poll_once()
    source.poll_once()
    source.poll_once()

    assert [e["Records"][0]["body"] for e in invoke.events] == ["once", "once"]
    assert invoke.events[0]["Records"][0]["messageId"] != invoke.events[1]["Records"][0]["messageId"]
    assert source.stats.duplicates_sent == 1


# --- S3 events -> resize (async invoke) -------------------------------------------------------


def _wait_for(predicate: Any, timeout_s: float = 120.0) -> None:
    """Poll for an outcome; the bound is generous (a busy 2-core machine), never a timing claim."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_given_an_upload_when_its_event_fails_three_times_then_it_lands_on_the_failure_destination(
    sqs: Any,
) -> None:
    s3, ssm = boto3.client("s3", region_name=REGION), boto3.client("ssm", region_name=REGION)
    stack = provision(s3=s3, sqs=sqs, ssm=ssm, stack_name="EmuTest")
    s3.put_object(Bucket=stack.bucket, Key="images/a b+c.jpg", Body=b"not really a jpeg")
    invoke = Recorder(
        lambda _: FakeOutcome(ok=False, error_type="RetryableEventFailure", error_message="s3 down")
    )
    pump = S3EventPump(
        sqs=sqs,
        events_queue_url=stack.events_queue_url,
        failure_queue_url=stack.resize_failure_queue_url,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:EmuTest-resize-encode",
        invoke=invoke,
        retry_delays_s=(0.01, 0.01),
    )
    pump.start()
    try:
        _wait_for(lambda: pump.stats.failed_events == 1)
    finally:
        pump.stop()

    assert len(invoke.events) == 3  # the first try and Lambda's two async retries
    raw_key = invoke.events[0]["Records"][0]["s3"]["object"]["key"]
    assert "+" in raw_key
    assert "%2B" in raw_key
    assert all(e == invoke.events[0] for e in invoke.events)
    record = json.loads(sqs.receive_message(QueueUrl=stack.resize_failure_queue_url)["Messages"][0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == invoke.events[0]
    assert record["responsePayload"]["errorType"] == "RetryableEventFailure"
    assert _depth(sqs, stack.events_queue_url) == (0, 0)


def test_given_replays_when_an_event_succeeds_then_it_is_delivered_again_and_not_sent_to_failure(
    sqs: Any,
) -> None:
    s3, ssm = boto3.client("s3", region_name=REGION), boto3.client("ssm", region_name=REGION)
    stack = provision(s3=s3, sqs=sqs, ssm=ssm, stack_name="EmuReplay")
    s3.put_object(Bucket=stack.bucket, Key="images/x.png", Body=b"x")
    invoke = Recorder(lambda _: FakeOutcome())
    pump = S3EventPump(
        sqs=sqs,
        events_queue_url=stack.events_queue_url,
        failure_queue_url=stack.resize_failure_queue_url,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        invoke=invoke,
        replays=1,
    )
    pump.start()
    try:
        _wait_for(lambda: len(invoke.events) == 2 and pump.in_flight == 0)
    finally:
        pump.stop()

    assert invoke.events[0] == invoke.events[1]
    assert pump.stats.failed_events == 0
    assert pump.stats.replays == 1


# --- worker processes ---------------------------------------------------------------------------
# Handlers for the worker tests: importable by the spawned process as this module's attributes.


def echo_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    print(json.dumps({"level": "INFO", "message": "hello from the worker"}))
    print("plain text line", file=sys.stderr)
    return {
        "event": event,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "bucket": os.environ.get("BUCKET_NAME"),
        "pid": os.getpid(),
    }


def sleepy_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event["sleep_s"]))
    return {"slept": event["sleep_s"], "pid": os.getpid()}


def busy_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    total = sum(i * i for i in range(int(event["n"])))
    return {"total": total}


def failing_handler(event: dict[str, Any], context: Any) -> None:
    raise ValueError(f"bad event {event['n']}")


# Function timeout of the worker tests: generous, so that only the test about the timeout meets it.
WORKER_TIMEOUT_S = 120.0


def _spec(handler: str, timeout_s: float = WORKER_TIMEOUT_S) -> FunctionSpec:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("PYTHON")}
    env["BUCKET_NAME"] = "worker-test-bucket"
    return FunctionSpec(
        name="worker-test", handler=f"{__name__}.{handler}", env=env, memory_mb=256, timeout_s=timeout_s
    )


@pytest.fixture
def pool_factory() -> Iterator[Any]:
    pools: list[WorkerPool] = []

    def make(handler: str, timeout_s: float = WORKER_TIMEOUT_S) -> WorkerPool:
        pool = WorkerPool(_spec(handler, timeout_s), size=1)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def test_given_a_worker_when_invoked_then_context_environment_and_output_are_lambda_like(
    pool_factory: Any,
) -> None:
    pool = pool_factory("echo_handler")

    first = pool.invoke({"n": 1})
    second = pool.invoke({"n": 2})

    assert first.ok
    assert first.cold_start
    assert not second.cold_start
    body = first.response
    assert body["event"] == {"n": 1}
    assert body["function_name"] == "worker-test"
    assert body["memory"] == 256
    assert body["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:worker-test"
    assert body["request_id"] == first.request_id
    assert 0 < body["remaining_ms"] <= WORKER_TIMEOUT_S * 1000
    assert body["bucket"] == "worker-test-bucket"
    assert body["pid"] != os.getpid()
    assert body["pid"] == second.response["pid"]
    assert '{"level": "INFO", "message": "hello from the worker"}' in first.log_lines
    assert "plain text line" in first.log_lines
    assert first.peak_rss_kb > 1000
    assert first.init_ms is not None
    assert second.init_ms is None


def test_given_a_handler_that_overruns_the_timeout_when_invoked_then_it_is_killed_and_replaced(
    pool_factory: Any,
) -> None:
    pool = pool_factory("sleepy_handler", timeout_s=1.0)

    overrun = pool.invoke({"sleep_s": 600})
    after = pool.invoke({"sleep_s": 0})

    assert overrun.timed_out
    assert not overrun.ok
    assert overrun.error_type == "Sandbox.Timedout"
    # killed at the timeout, not when the handler would have finished (the bound only says "not
    # 600 s": a busy machine may be slow to notice the deadline)
    assert 1000 <= overrun.duration_ms < 120_000
    assert after.ok
    assert after.cold_start
    assert after.response["pid"] != overrun.worker_pid
    assert pool.stats.timeouts == 1
    assert pool.stats.environments_replaced == 1


def test_given_a_handler_that_raises_when_invoked_then_the_error_is_reported_and_logged(
    pool_factory: Any,
) -> None:
    pool = pool_factory("failing_handler")

    result = pool.invoke({"n": 7})

    assert not result.ok
    assert not result.timed_out
    assert (result.error_type, result.error_message) == ("ValueError", "bad event 7")
    logged = [json.loads(line) for line in result.log_lines if line.startswith("{")]
    assert logged[-1]["errorType"] == "ValueError"
    assert logged[-1]["errorMessage"] == "bad event 7"


def test_given_a_missing_handler_module_when_invoked_then_an_import_error_is_reported(
    pool_factory: Any,
) -> None:
    pool = pool_factory("no_such_handler")

    result = pool.invoke({})

    assert not result.ok
    assert result.error_type == "Runtime.ImportModuleError"


def test_given_invocations_when_they_compute_or_wait_then_cpu_time_counts_only_the_computing(
    pool_factory: Any,
) -> None:
    sleeper, busy = pool_factory("sleepy_handler"), pool_factory("busy_handler")

    slept = sleeper.invoke({"sleep_s": 1})
    computed = busy.invoke({"n": 3_000_000})

    assert slept.ok
    assert computed.ok
    # Waiting costs wall-clock time but next to no CPU, however busy the machine is
    assert slept.duration_ms >= 1000
    assert 0 <= slept.cpu_ms < 500
    assert computed.cpu_ms > 0
    assert busy.stats.max_cpu_ms == computed.cpu_ms
