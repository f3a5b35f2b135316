"""Lambda entry point of the caption stage (SQS event source, partial batch responses).

Thin: read settings (SSM through the Powertools cache, so a new prompt, model or rate applies
within ``SSM_MAX_AGE_SECONDS``), hand each record to ``service.Batch.process`` through Powertools'
``BatchProcessor``, turn outcomes into metrics and logs, and report every delivery that must come
back (throttled, busy, out of time, anonymous garbage) as a batch item failure by raising.
The worker (adapters, pacer, call-time estimate) and the queues live in one ``CaptionEnvironment``
built once per execution environment, so the pacer's state carries over from one invocation to
the next; tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.caption.bedrock import converse_caller
from lambdas.caption.capacity import has_backlog
from lambdas.caption.model import RetryKind
from lambdas.caption.pacing import Pacer
from lambdas.caption.service import Batch, CaptionWorker, Delivery, Outcome, Result, source_key_of
from lambdas.caption.tagging import S3ObjectTags
from lambdas.shared import aws
from lambdas.shared.observability import Metric, count, count_rejection, logger, metrics, tracer
from lambdas.shared.settings import CaptionSettings, caption_settings
from lambdas.shared.storage import Queue, QueueByArn, S3Store


class DeliveryFailed(Exception):
    """Raised for a record that must be reported in ``batchItemFailures``."""


class CaptionEnvironment:
    """What one execution environment keeps between invocations: the worker and the queues by ARN.

    Built once per environment (``ENVIRONMENT`` below is the one Lambda uses); a test or the local
    runtime passes its own to ``lambda_handler(event, context, environment=...)``. The worker is
    rebuilt only when its deploy-time settings change, so the pacer's state carries over.
    """

    def __init__(
        self,
        make_queue: Callable[[str], Queue] = QueueByArn,
        make_worker: Callable[[CaptionSettings], CaptionWorker] | None = None,
    ) -> None:
        self._make_queue = make_queue
        self._make_worker = make_worker or _new_worker
        self._worker_key: tuple[str, float, int, bool] | None = None
        self.worker: CaptionWorker | None = None
        self.queues: dict[str, Queue] = {}

    def worker_for(self, settings: CaptionSettings) -> CaptionWorker:
        key = (
            settings.bucket,
            settings.bedrock_read_timeout_s,
            settings.bedrock_max_attempts,
            settings.write_object_tags,
        )
        if self.worker is None or key != self._worker_key:
            self.worker, self._worker_key = self._make_worker(settings), key
        return self.worker

    def queue_for(self, arn: str) -> Queue:
        if arn not in self.queues:
            self.queues[arn] = self._make_queue(arn)
        return self.queues[arn]


def _new_worker(settings: CaptionSettings) -> CaptionWorker:
    tags = S3ObjectTags(aws.client("s3"), settings.bucket) if settings.write_object_tags else None
    return CaptionWorker(
        store=S3Store(aws.client("s3"), settings.bucket),
        object_tags=tags,
        call_model=converse_caller(settings.bedrock_read_timeout_s, settings.bedrock_max_attempts),
        pacer=Pacer(settings.pacing.worker_rpm, settings.pacing.worker_tpm),
    )


ENVIRONMENT = CaptionEnvironment()


def _delivery(record: SQSRecord, environment: CaptionEnvironment) -> Delivery:
    try:
        receive_count = int(record.attributes.approximate_receive_count)
    except (KeyError, TypeError, ValueError):
        receive_count = 1
    arn = record.get("eventSourceARN")
    queue = None
    if arn:
        queue = environment.queue_for(arn)
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
    elif result.outcome is Outcome.BATCH_HELD:
        count(Metric.HELD_BY_BATCH)
    elif result.outcome is Outcome.REJECTED and result.error_code:
        count_rejection(result.error_code)
    if result.failed:
        count(Metric.DEFERRED)
    if result.output_invalid:
        count(Metric.MODEL_OUTPUT_INVALID)
    if result.object_tags is True:
        count(Metric.OBJECT_TAGS_WRITTEN)
    elif result.object_tags is False:
        count(Metric.OBJECT_TAGS_FAILED)


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


def _handle_record(batch: Batch, record: SQSRecord, environment: CaptionEnvironment) -> str:
    delivery = _delivery(record, environment)
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


def _queue_wait_s(record: dict[str, Any]) -> float | None:
    """Seconds the record waited in the queue before its first receive (None when not given)."""
    attributes = record.get("attributes") or {}
    try:
        sent = float(attributes["SentTimestamp"])
        first = float(attributes["ApproximateFirstReceiveTimestamp"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (first - sent) / 1000.0)


def _backlog(records: list[dict[str, Any]]) -> bool:
    waits = [w for w in (_queue_wait_s(r) for r in records) if w is not None]
    return has_backlog(len(records), max(waits) if waits else None)


def _report_capacity(batch: Batch, worker: CaptionWorker, settings: CaptionSettings) -> None:
    """With a backlog: the fleet's reachable rate as a metric; a shortfall counted and noted."""
    assessment = batch.capacity()
    if assessment is None or not assessment.backlog:
        return
    count(Metric.REACHABLE_RPM, assessment.reachable_rpm)  # a rate: read it as an Average
    if assessment.shortfall:
        count(Metric.CAPACITY_SHORTFALL)
        logger.warning(f"capacity shortfall: {assessment.sentence()}")
        worker.note_capacity(assessment, settings.model.model_id)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, environment: CaptionEnvironment = ENVIRONMENT
) -> dict[str, Any]:
    settings = caption_settings()
    worker = environment.worker_for(settings)
    if not event.get("Records"):  # nothing to do (Powertools rejects an empty batch)
        return {"batchItemFailures": []}
    batch = worker.begin(settings, context.get_remaining_time_in_millis, backlog=_backlog(event["Records"]))
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        return _handle_record(batch, record, environment)

    try:
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        logger.set_correlation_id(None)
    _report_capacity(batch, worker, settings)
    return dict(response)
