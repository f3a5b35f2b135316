"""Lambda entry point of the index stage (SQS event source, partial batch responses).

Thin: settings from the environment, the batch to ``service.IndexWorker.run`` (which decides every
message first and then writes the batch's vectors in one put and one delete), then Powertools'
``BatchProcessor`` turns each message's outcome into the partial batch response: a deferred or
invalid message raises in its record handler and is listed in ``batchItemFailures``. The worker
(adapters and the pacer, whose state carries over between invocations) lives in one
``IndexEnvironment`` per execution environment; tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.index.bedrock import BedrockEmbedder
from lambdas.index.embeddings import EmbeddingRetry, EmbeddingSpec
from lambdas.index.service import Delivery, IndexWorker, ItemResult, Outcome, RequestPacer
from lambdas.index.settings import IndexSettings, index_settings
from lambdas.index.vectors import VectorIndex
from lambdas.shared import aws
from lambdas.shared.contract import IndexMetric
from lambdas.shared.observability import count, logger, metrics, tracer
from lambdas.shared.storage import Queue, QueueByArn, S3Store


class DeliveryFailed(Exception):
    """Raised for a record that must be reported in ``batchItemFailures``."""


def _new_worker(settings: IndexSettings) -> IndexWorker:
    pacer = RequestPacer(settings.worker_rpm)
    embedder = BedrockEmbedder(
        aws.client(
            "bedrock-runtime",
            max_attempts=settings.bedrock_max_attempts,
            read_timeout=settings.bedrock_read_timeout_s,
        ),
        EmbeddingSpec(settings.embedding_model_id, settings.embedding_dimension),
    )
    return IndexWorker(
        store=S3Store(aws.client("s3"), settings.bucket),
        index=VectorIndex(aws.client("s3vectors"), settings.vector_bucket, settings.index_name),
        embed=embedder.embed,
        pacer=pacer,
        embedding_input=settings.embedding_input,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
    )


class IndexEnvironment:
    """The worker and the queues by ARN, kept across invocations of one execution environment."""

    def __init__(
        self,
        make_queue: Callable[[str], Queue] = QueueByArn,
        make_worker: Callable[[IndexSettings], IndexWorker] = _new_worker,
    ) -> None:
        self._make_queue = make_queue
        self._make_worker = make_worker
        self._settings: IndexSettings | None = None
        self.worker: IndexWorker | None = None
        self.queues: dict[str, Queue] = {}

    def worker_for(self, settings: IndexSettings) -> IndexWorker:
        if self.worker is None or settings != self._settings:
            self.worker, self._settings = self._make_worker(settings), settings
        return self.worker

    def queue_for(self, arn: str) -> Queue:
        if arn not in self.queues:
            self.queues[arn] = self._make_queue(arn)
        return self.queues[arn]


ENVIRONMENT = IndexEnvironment()


def _delivery(record: dict[str, Any], environment: IndexEnvironment) -> Delivery:
    try:
        receive_count = int(record.get("attributes", {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        receive_count = 1
    arn = record.get("eventSourceARN")
    return Delivery(
        message_id=str(record.get("messageId", "")),
        receipt_handle=str(record.get("receiptHandle", "")),
        body=str(record.get("body", "")),
        receive_count=max(receive_count, 1),
        queue=environment.queue_for(arn) if arn else None,
    )


def _record_metrics(result: ItemResult) -> None:
    if result.embedding_calls:
        count(IndexMetric.EMBEDDING_CALLS, result.embedding_calls)
    if result.puts:
        count(IndexMetric.VECTORS_PUT, result.puts)
    if result.deletes:
        count(IndexMetric.VECTORS_DELETED, result.deletes)
    if result.outcome is Outcome.SKIPPED and result.caption_keys:
        count(IndexMetric.INDEX_SKIPPED)
    if result.retry is EmbeddingRetry.THROTTLED:
        count(IndexMetric.EMBEDDING_THROTTLES)
    elif result.retry is not None:
        count(IndexMetric.EMBEDDING_ERRORS)
    if result.failed:
        count(IndexMetric.INDEX_DEFERRED)


def _log(result: ItemResult) -> None:
    extra = {
        "outcome": result.outcome.value,
        "message_id": result.message_id,
        "caption_keys": result.caption_keys[:10],
        "puts": result.puts,
        "deletes": result.deletes,
        "embedding_calls": result.embedding_calls,
        "retry": None if result.retry is None else result.retry.value,
        "visibility_s": result.visibility_s,
        "detail": result.detail,
    }
    if result.failed:
        logger.warning(f"{result.outcome.value}: {result.detail}", extra=extra)
    else:
        logger.info(result.outcome.value, extra=extra)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, environment: IndexEnvironment = ENVIRONMENT
) -> dict[str, Any]:
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    worker = environment.worker_for(index_settings())
    deliveries = [_delivery(r, environment) for r in records]
    results = worker.run(deliveries, lambda: context.get_remaining_time_in_millis() / 1000.0)
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        result = results[record.message_id]
        _record_metrics(result)
        _log(result)
        if result.failed:
            raise DeliveryFailed(f"{result.outcome.value}: {result.detail}")
        return result.outcome.value

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
