"""Lambda entry point of the resize/encode stage (S3 ``ObjectCreated:*`` on ``images/``).

Thin: parse the event, run ``service.process_object`` on every record, count and log outcomes.
One bad record never fails the others. A transient S3/SQS fault is re-raised after the other
records are done, so Lambda's async retries (then the on-failure destination) keep the event;
records already handled are skipped cheaply on the retry (idempotent by source ETag).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.resize import imaging
from lambdas.resize.events import object_refs
from lambdas.resize.service import Outcome, Result, process_object
from lambdas.shared import aws
from lambdas.shared.observability import Metric, count, count_rejection, logger, metrics, tracer
from lambdas.shared.settings import ResizeSettings, resize_settings
from lambdas.shared.storage import S3Store, SqsQueue


class RetryableEventFailure(RuntimeError):
    """Raised after all records were tried, so Lambda retries the event (idempotently)."""


@lru_cache(maxsize=4)
def _adapters(bucket: str, queue_url: str) -> tuple[S3Store, SqsQueue]:
    return S3Store(aws.client("s3"), bucket), SqsQueue(aws.client("sqs"), queue_url)


def _record_metrics(result: Result) -> None:
    if result.outcome is Outcome.RESIZED:
        count(Metric.IMAGES_RESIZED)
        count(Metric.RESIZE_MS, result.duration_ms, unit=MetricUnit.Milliseconds)
    elif result.outcome is Outcome.DUPLICATE:
        count(Metric.RESIZE_DUPLICATES)
    elif result.outcome is Outcome.REJECTED and result.error_code:
        count_rejection(result.error_code)
    elif result.outcome is Outcome.SUPERSEDED:
        count(Metric.SUPERSEDED)
    elif result.outcome is Outcome.IGNORED:
        count(Metric.FOLDER_MARKERS)


def handle_event(event: dict[str, Any], settings: ResizeSettings) -> dict[str, Any]:
    store, queue = _adapters(settings.bucket, settings.queue_url)
    outcomes: dict[str, int] = {}
    failures: list[str] = []
    for ref in object_refs(event):
        logger.set_correlation_id(ref.key)
        count(Metric.IMAGES_RECEIVED)
        try:
            with tracer.provider.in_subsegment("process_object") as subsegment:
                subsegment.put_annotation("source_key", ref.key[:250])
                result = process_object(
                    ref, store=store, queue=queue, spec=settings.image, encode=imaging.resize_and_encode
                )
        except Exception:
            logger.exception("transient failure; the event will be retried", extra={"source_key": ref.key})
            failures.append(ref.key)
            continue
        _record_metrics(result)
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
        log = logger.warning if result.outcome is Outcome.REJECTED else logger.info
        log(
            f"{result.outcome.value}: {ref.key}",
            extra={
                "source_key": ref.key,
                "source_etag": ref.etag,
                "outcome": result.outcome.value,
                "error_code": result.error_code,
                "detail": result.message,
                "duration_ms": round(result.duration_ms, 1),
            },
        )
    logger.set_correlation_id(None)
    if failures:
        raise RetryableEventFailure(f"{len(failures)} record(s) failed transiently: {failures[:5]}")
    return {"outcomes": outcomes}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_event(event, resize_settings())
