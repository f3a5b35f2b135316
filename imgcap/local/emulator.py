"""Event sources the way Lambda drives them, for the two functions of the pipeline.

- ``S3EventPump``: S3 notifications (moto's own, URL-encoded keys and all) arrive on a local
  "s3-events" queue that stands in for the function's S3 trigger. Each event body goes to the
  resize function as is, with asynchronous-invocation semantics: on an error the event is retried
  up to twice (Lambda waits about 1 and 2 minutes; locally the delays are scaled down), then the
  event goes to the on-failure destination (the resize-failure queue) in Lambda's destination
  record format.
- ``SqsEventSource``: polls the caption queue like an event source mapping: ``ReceiveMessage``
  with all attributes, batches of up to B messages, at most C concurrent invocations (maximum
  concurrency), the exact SQS event shape, partial batch responses (only records not listed in
  ``batchItemFailures`` are deleted). When the invocation fails or times out nothing is deleted:
  the messages come back after the visibility timeout and the queue itself moves a message to
  the DLQ once it has been received ``maxReceiveCount`` times.

Both take an ``invoke`` callable (a worker pool's, or a fake in tests): the emulator never
reimplements handler logic.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

RECEIVE_WAIT_S = 1  # long-poll wait; short so stopping is prompt


class Outcome(Protocol):
    """What the emulator needs from an invocation result (``workers.InvocationResult`` fits)."""

    @property
    def ok(self) -> bool: ...
    @property
    def response(self) -> Any: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...


Invoke = Callable[[dict[str, Any]], Outcome]


# --- pure helpers -----------------------------------------------------------------------------


def lambda_message_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """SQS ReceiveMessage ``MessageAttributes`` -> the Lambda event's ``messageAttributes``."""
    out: dict[str, Any] = {}
    for name, value in (attributes or {}).items():
        entry: dict[str, Any] = {
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": list(value.get("BinaryListValues", [])),
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            entry["binaryValue"] = value["BinaryValue"]
        out[name] = entry
    return out


def sqs_event_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One ``Records[]`` entry of the SQS event Lambda builds from a received message."""
    body = message.get("Body", "")
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {str(k): str(v) for k, v in (message.get("Attributes") or {}).items()},
        "messageAttributes": lambda_message_attributes(message.get("MessageAttributes")),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    succeeded: tuple[str, ...]  # message ids to delete
    failed: tuple[str, ...]  # left on the queue
    whole_batch_failed: bool
    reason: str = ""


def settle_batch(message_ids: Sequence[str], outcome: Outcome) -> BatchVerdict:
    """Which records of a batch succeeded, by Lambda's rules for ``ReportBatchItemFailures``.

    Success of the whole batch: a null/empty response or a null/empty ``batchItemFailures``.
    Failure of the whole batch: the invocation failed or timed out, the response is not an
    object, or an item's ``itemIdentifier`` is missing, empty or not a message of this batch.
    """
    ids = tuple(message_ids)

    def whole(reason: str) -> BatchVerdict:
        return BatchVerdict((), ids, True, reason)

    if not outcome.ok:
        return whole("timeout" if outcome.timed_out else f"function error {outcome.error_type}")
    response = outcome.response
    if response is None or response == {}:
        return BatchVerdict(ids, (), False)
    if not isinstance(response, dict):
        return whole("invalid response")
    failures = response.get("batchItemFailures")
    if failures is None or failures == []:
        return BatchVerdict(ids, (), False)
    if not isinstance(failures, list):
        return whole("invalid batchItemFailures")
    failed: list[str] = []
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in ids:
            return whole(f"invalid itemIdentifier {identifier!r}")
        if identifier not in failed:
            failed.append(identifier)
    return BatchVerdict(tuple(i for i in ids if i not in failed), tuple(failed), False)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_destination_record(
    event: dict[str, Any], outcome: Outcome, function_arn: str, attempts: int
) -> dict[str, Any]:
    """What Lambda sends to an asynchronous invocation's on-failure destination."""
    return {
        "version": "1.0",
        "timestamp": _iso_now(),
        "requestContext": {
            "requestId": outcome.request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorMessage": outcome.error_message or "",
            "errorType": outcome.error_type or "Unhandled",
        },
    }


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- S3 -> resize (asynchronous invocation) ---------------------------------------------------


@dataclass
class PumpStats:
    events: int = 0
    invocations: int = 0
    retries: int = 0
    failed_events: int = 0
    replays: int = 0


class S3EventPump:
    """Drain the s3-events queue into the resize function with async-invoke retry semantics."""

    def __init__(
        self,
        *,
        sqs: Any,
        events_queue_url: str,
        failure_queue_url: str,
        function_arn: str,
        invoke: Invoke,
        concurrency: int = 2,
        retry_delays_s: Sequence[float] = (1.0, 2.0),
        replays: int = 0,
        on_result: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._sqs = sqs
        self._events_url = events_queue_url
        self._failure_url = failure_queue_url
        self._arn = function_arn
        self._invoke = invoke
        self._delays = tuple(retry_delays_s)
        self._replays = replays
        self._on_result = on_result
        # Lambda keeps accepted async events in its own queue; threads beyond the worker count
        # let waiting retries sleep without holding up new events.
        self._executor = ThreadPoolExecutor(
            max_workers=max(2, concurrency * 2), thread_name_prefix="s3-event"
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._receive_loop, name="s3-event-pump", daemon=True)
        self.stats = PumpStats()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def start(self) -> None:
        self._thread.start()

    def signal_stop(self) -> None:
        """Stop taking new events (returns at once; ``stop`` waits)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=RECEIVE_WAIT_S + 5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._events_url, MaxNumberOfMessages=10, WaitTimeSeconds=RECEIVE_WAIT_S
                )
            except Exception:
                if self._stop.wait(0.5):
                    return
                continue
            messages = response.get("Messages", [])
            for message in messages:
                self._accept(message)
            # Accepted (or an s3:TestEvent with no records): they now live in the invoke queue.
            # One DeleteMessageBatch per receive instead of a DeleteMessage per event: the same
            # deletes, a tenth of the requests to the loopback server.
            self._delete_accepted(messages)

    def _delete_accepted(self, messages: Sequence[dict[str, Any]]) -> None:
        for chunk in _chunks(list(messages), 10):
            # Not deleted: the event comes back after the visibility timeout and is delivered
            # again, which asynchronous invocation allows (the resize stage is idempotent).
            with suppress(Exception):
                self._sqs.delete_message_batch(
                    QueueUrl=self._events_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                    ],
                )

    def _accept(self, message: dict[str, Any]) -> None:
        try:
            event = json.loads(message.get("Body") or "{}")
        except ValueError:
            event = {}
        if isinstance(event, dict) and event.get("Records"):
            copies = 1 + self._replays
            with self._lock:
                self._in_flight += copies
                self.stats.events += 1
                self.stats.replays += self._replays
            for _ in range(copies):
                self._executor.submit(self._deliver, event)

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            attempts = 0
            while True:
                attempts += 1
                outcome = self._invoke(event)
                with self._lock:
                    self.stats.invocations += 1
                if self._on_result is not None:
                    self._on_result(outcome)
                if outcome.ok or self._stop.is_set():
                    return  # done, or the runtime is shutting down (nothing is sent on shutdown)
                if attempts > len(self._delays):
                    break
                with self._lock:
                    self.stats.retries += 1
                if self._stop.wait(self._delays[attempts - 1]):
                    return
            record = failure_destination_record(event, outcome, self._arn, attempts)
            self._sqs.send_message(QueueUrl=self._failure_url, MessageBody=json.dumps(record))
            with self._lock:
                self.stats.failed_events += 1
        finally:
            with self._lock:
                self._in_flight -= 1


# --- SQS -> caption (event source mapping) ----------------------------------------------------


@dataclass
class SourceStats:
    batches: int = 0
    records: int = 0
    deleted: int = 0
    item_failures: int = 0
    whole_batch_failures: int = 0
    duplicates_sent: int = 0
    first_invoke_at: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)


class SqsEventSource:
    """An event source mapping on one queue: batch size B, maximum concurrency C."""

    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        invoke: Invoke,
        batch_size: int = 4,
        max_concurrency: int = 2,
        duplicate_deliveries: bool = False,
        batching_window_s: float = 0.0,
        on_result: Callable[[Outcome, dict[str, Any], BatchVerdict], None] | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch size must be between 1 and 10")
        if max_concurrency < 1:
            raise ValueError("maximum concurrency must be at least 1")
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._region = region
        self._invoke = invoke
        self._batch_size = batch_size
        self._duplicate = duplicate_deliveries
        self._window_s = batching_window_s
        self._duplicated_bodies: set[str] = set()
        self._on_result = on_result
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._poll_loop, name=f"esm-poller-{i}", daemon=True)
            for i in range(max_concurrency)
        ]
        self.stats = SourceStats()

    @property
    def in_flight(self) -> int:
        """Invocations running right now."""
        with self._lock:
            return self._busy

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def signal_stop(self) -> None:
        """Stop polling after the current batches (returns at once; ``stop`` waits)."""
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def poll_once(self) -> BatchVerdict | None:
        """Receive one batch and invoke the function with it (what each poller does in a loop).

        With a batching window (``MaximumBatchingWindowInSeconds``) the poller keeps receiving
        until the batch is full or the window, counted from the first message, has passed.
        """
        messages = self._receive(self._batch_size)
        if not messages:
            return None
        window_ends = time.monotonic() + self._window_s
        while len(messages) < self._batch_size and time.monotonic() < window_ends and not self._stop.is_set():
            messages += self._receive(self._batch_size - len(messages))
        if self._duplicate:
            self._send_duplicates(messages)
        event = {"Records": [sqs_event_record(m, self._arn, self._region) for m in messages]}
        with self._lock:
            self._busy += 1
            self.stats.batches += 1
            self.stats.records += len(messages)
            if self.stats.first_invoke_at is None:
                self.stats.first_invoke_at = time.time()
        try:
            outcome = self._invoke(event)
        finally:
            with self._lock:
                self._busy -= 1
        ids = [m["MessageId"] for m in messages]
        verdict = settle_batch(ids, outcome)
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        self._delete([handles[i] for i in verdict.succeeded])
        with self._lock:
            self.stats.deleted += len(verdict.succeeded)
            self.stats.item_failures += 0 if verdict.whole_batch_failed else len(verdict.failed)
            if verdict.whole_batch_failed:
                self.stats.whole_batch_failures += 1
                self.stats.reasons[verdict.reason] = self.stats.reasons.get(verdict.reason, 0) + 1
        if self._on_result is not None:
            self._on_result(outcome, event, verdict)
        return verdict

    def _receive(self, count: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=count,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=RECEIVE_WAIT_S,
        )
        return list(response.get("Messages", []))

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                if self._stop.wait(0.5):
                    return

    def _delete(self, receipt_handles: Sequence[str]) -> None:
        for chunk in _chunks(list(receipt_handles), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
            )

    def _send_duplicates(self, messages: Sequence[dict[str, Any]]) -> None:
        """At-least-once delivery made visible: each distinct body is delivered a second time."""
        for message in messages:
            body = message.get("Body", "")
            with self._lock:
                if body in self._duplicated_bodies:
                    continue
                self._duplicated_bodies.add(body)
                self.stats.duplicates_sent += 1
            self._sqs.send_message(QueueUrl=self._url, MessageBody=body)
