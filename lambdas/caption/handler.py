"""Lambda entry point of the caption stage (SQS event source, partial batch responses).

Thin: read settings (SSM through the Powertools cache, so a new prompt, model or rate applies
within ``SSM_MAX_AGE_SECONDS``), hand each record to ``service.Batch.process`` through Powertools'
``BatchProcessor``, turn outcomes into metrics and logs, and report every delivery that must come
back (throttled, busy, out of time, anonymous garbage) as a batch item failure by raising.
The worker (adapters, pacer, call-time estimate) is built once per execution environment, so the
pacer's state carries over from one invocation to the next.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.caption.bedrock import converse_caller
from lambdas.caption.model import RetryKind
from lambdas.caption.pacing import Pacer
from lambdas.caption.service import Batch, CaptionWorker, Delivery, Outcome, Result, source_key_of
from lambdas.shared import aws
from lambdas.shared.observability import Metric, count, count_rejection, logger, metrics, tracer
from lambdas.shared.settings import CaptionSettings, caption_settings
from lambdas.shared.storage import S3Store, SqsQueue


class DeliveryFailed(Exception):
    """Raised for a record that must be reported in ``batchItemFailures``."""


class QueueByArn:
    """The event source queue, found from its ARN with GetQueueUrl on first use.

    The caption function has no queue URL in its environment; ``arn:aws:sqs:REGION:ACCOUNT:NAME``
    names it, and GetQueueUrl answers correctly against real SQS and moto alike.
    """

    def __init__(self, arn: str) -> None:
        self.arn = arn
        self._queue: SqsQueue | None = None

    def _resolve(self) -> SqsQueue:
        if self._queue is None:
            parts = self.arn.split(":")
            if len(parts) != 6 or parts[2] != "sqs":
                raise ValueError(f"not an SQS queue ARN: {self.arn!r}")
            sqs = aws.client("sqs")
            url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
            self._queue = SqsQueue(sqs, url)
        return self._queue

    def send(self, body: str) -> str:
        return self._resolve().send(body)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._resolve().change_visibility(receipt_handle, seconds)


# Per execution environment: the worker (keyed by its deploy-time settings) and one queue per ARN.
_WORKERS: dict[tuple[str, float, int], CaptionWorker] = {}
_QUEUES: dict[str, QueueByArn] = {}


def worker_for(settings: CaptionSettings) -> CaptionWorker:
    key = (settings.bucket, settings.bedrock_read_timeout_s, settings.bedrock_max_attempts)
    worker = _WORKERS.get(key)
    if worker is None:
        worker = CaptionWorker(
            store=S3Store(aws.client("s3"), settings.bucket),
            call_model=converse_caller(settings.bedrock_read_timeout_s, settings.bedrock_max_attempts),
            pacer=Pacer(settings.pacing.worker_rpm, settings.pacing.worker_tpm),
        )
        _WORKERS.clear()
        _WORKERS[key] = worker
    return worker


def reset_environment() -> None:
    """Forget the worker and queues, as a fresh execution environment would (tests, local runtime)."""
    _WORKERS.clear()
    _QUEUES.clear()


def _delivery(record: SQSRecord) -> Delivery:
    try:
        receive_count = int(record.attributes.approximate_receive_count)
    except (KeyError, TypeError, ValueError):
        receive_count = 1
    arn = record.get("eventSourceARN")
    queue = None
    if arn:
        queue = _QUEUES.get(arn) or _QUEUES.setdefault(arn, QueueByArn(arn))
    return Delivery(
        message_id=record.message_id,
        receipt_handle=record.receipt_handle,
        body=record.body,
        receive_count=max(receive_count, 1),
        queue=queue,
    )


def _record_call_metrics(result: Result) -> None:
    if not result.model_called:
        return
    count(Metric.MODEL_CALLS)
    if result.latency_ms is not None:
        count(Metric.MODEL_LATENCY, result.latency_ms, unit=MetricUnit.Milliseconds)
    if result.pacing_wait_ms is not None:
        count(Metric.PACING_WAIT_MS, result.pacing_wait_ms, unit=MetricUnit.Milliseconds)
    if result.input_tokens:
        count(Metric.INPUT_TOKENS, result.input_tokens)
    if result.output_tokens:
        count(Metric.OUTPUT_TOKENS, result.output_tokens)
    if result.retry is RetryKind.THROTTLED:
        count(Metric.MODEL_THROTTLES)
    elif result.retry is RetryKind.TRANSIENT:
        count(Metric.MODEL_TRANSIENT_ERRORS)
    elif result.retry is RetryKind.CONFIGURATION:
        count(Metric.MODEL_CONFIGURATION_ERRORS)


def _record_metrics(result: Result) -> None:
    _record_call_metrics(result)
    if result.outcome is Outcome.CAPTIONED:
        count(Metric.CAPTIONS_WRITTEN)
        if result.truncated:
            count(Metric.CAPTIONS_TRUNCATED)
        if result.age_s is not None:
            count(Metric.END_TO_END_AGE, result.age_s, unit=MetricUnit.Seconds)
    elif result.outcome is Outcome.DUPLICATE:
        count(Metric.DUPLICATES_AVOIDED)
    elif result.outcome is Outcome.SUPERSEDED:
        count(Metric.SUPERSEDED)
    elif result.outcome is Outcome.REJECTED and result.error_code:
        count_rejection(result.error_code)
    if result.failed:
        count(Metric.DEFERRED)


def _log(result: Result, delivery: Delivery) -> None:
    extra = {
        "outcome": result.outcome.value,
        "message_id": delivery.message_id,
        "receive_count": delivery.receive_count,
        "source_key": result.source_key,
        "source_etag": result.source_etag,
        "error_code": result.error_code,
        "visibility_s": result.visibility_s,
        "latency_ms": None if result.latency_ms is None else round(result.latency_ms, 1),
        "pacing_wait_ms": None if result.pacing_wait_ms is None else round(result.pacing_wait_ms, 1),
        "retry": None if result.retry is None else result.retry.value,
        "truncated": result.truncated,
        "detail": result.detail,
    }
    if result.outcome is Outcome.UNATTRIBUTABLE:
        logger.error(f"{result.outcome.value}: {result.detail}", extra=extra)
    elif result.outcome is Outcome.REJECTED or result.failed:
        logger.warning(f"{result.outcome.value}: {result.source_key}", extra=extra)
    else:
        logger.info(f"{result.outcome.value}: {result.source_key}", extra=extra)


def _handle_record(batch: Batch, record: SQSRecord) -> str:
    delivery = _delivery(record)
    logger.set_correlation_id(source_key_of(delivery.body))
    try:
        with tracer.provider.in_subsegment("## caption_message") as subsegment:
            subsegment.put_annotation("message_id", delivery.message_id)
            result = batch.process(delivery)
    except Exception:
        logger.exception(
            "unexpected failure; the message comes back after the visibility timeout",
            extra={"message_id": delivery.message_id, "receive_count": delivery.receive_count},
        )
        count(Metric.DEFERRED)
        raise
    _record_metrics(result)
    _log(result, delivery)
    if result.failed:
        raise DeliveryFailed(f"{result.outcome.value}: {result.detail}")
    return result.outcome.value


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = caption_settings()
    worker = worker_for(settings)
    if not event.get("Records"):  # nothing to do (Powertools rejects an empty batch)
        return {"batchItemFailures": []}
    batch = worker.begin(settings, context.get_remaining_time_in_millis)
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        return _handle_record(batch, record)

    try:
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        logger.set_correlation_id(None)
    return dict(response)
