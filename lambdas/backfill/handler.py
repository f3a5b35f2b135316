"""Lambda entry points of the backfill stage. Thin: event -> service, logs; state in an environment.

- ``submit_handler``: S3 ObjectCreated under ``batch/requests/`` (async invoke; a failure is retried
  by Lambda, then kept on the failure queue) -> ``Submitter.submit`` for each request document.
- ``collect_handler``: the EventBridge rule (``source: aws.bedrock``, detail-type ``Batch Inference
  Job State Change``) -> ``Collector.on_event``; the scheduled rule (any other event) ->
  ``Collector.poll``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.backfill.adapters import BedrockJobs, BotoBedrockJobs, S3Files
from lambdas.backfill.collect import Collector, CollectResult
from lambdas.backfill.requests import BackfillRequest, is_request_key
from lambdas.backfill.settings import BackfillEnv, BatchModel, backfill_env, model_spec
from lambdas.backfill.submit import Submitter
from lambdas.shared import aws
from lambdas.shared.config import ModelSpec
from lambdas.shared.contract import (
    BATCH_EVENT_DETAIL_TYPE,
    BATCH_EVENT_SOURCE,
    BATCH_FAILED_STATUSES,
    BatchMetric,
)
from lambdas.shared.observability import count, logger, metrics
from lambdas.shared.storage import Queue, S3Store, SqsQueue


class BackfillEnvironment:
    """Adapters of one execution environment; tests and the local runtime pass their own."""

    def __init__(
        self,
        *,
        env: Callable[[], BackfillEnv] = backfill_env,
        spec: Callable[[BackfillEnv], ModelSpec | BatchModel] = model_spec,
        s3: Callable[[], Any] = lambda: aws.client("s3"),
        jobs: Callable[[], BedrockJobs] = lambda: BotoBedrockJobs(aws.client("bedrock")),
        queue: Callable[[BackfillEnv], Queue] | None = None,
    ) -> None:
        self.env = env
        self.spec = spec
        self._s3 = s3
        self._jobs = jobs
        self._queue = queue or (lambda e: SqsQueue(aws.client("sqs"), e.queue_url))

    def submitter(self, remaining_s: Callable[[], float]) -> Submitter:
        env = self.env()
        s3 = self._s3()
        return Submitter(
            store=S3Store(s3, env.bucket),
            files=S3Files(s3, env.bucket),
            jobs=self._jobs(),
            queue=self._queue(env),
            env=env,
            spec=self.spec(env),
            remaining_s=remaining_s,
        )

    def collector(self, remaining_s: Callable[[], float] = lambda: float("inf")) -> Collector:
        env = self.env()
        s3 = self._s3()
        return Collector(
            store=S3Store(s3, env.bucket),
            files=S3Files(s3, env.bucket),
            jobs=self._jobs(),
            queue=self._queue(env),
            online_claim_lease_s=env.online_claim_lease_s,
            remaining_s=remaining_s,
        )


ENVIRONMENT = BackfillEnvironment()


def _remaining(context: LambdaContext | None) -> Callable[[], float]:
    if context is None:
        return lambda: 900.0
    return lambda: context.get_remaining_time_in_millis() / 1000.0


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def submit_handler(
    event: dict[str, Any], context: LambdaContext, environment: BackfillEnvironment = ENVIRONMENT
) -> dict[str, Any]:
    submitter = environment.submitter(_remaining(context))
    store = submitter._store
    results = []
    for record in event.get("Records", []):
        key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
        if not is_request_key(key):
            logger.warning("not a backfill request key; ignored", extra={"key": key})
            continue
        raw, _ = store.get_bytes(key)
        result = submitter.submit(BackfillRequest.from_json(raw))
        logger.info(
            f"backfill request {result.outcome.value}",
            extra={
                "request_key": key,
                "job_name": result.job_name,
                "records": result.records,
                "online": result.online,
                "skipped": result.skipped,
                "handed_on": result.handed_on,
            },
        )
        results.append(
            {
                "request_key": key,
                "outcome": result.outcome.value,
                "job_name": result.job_name,
                "records": result.records,
                "online": result.online,
                "next_request": result.next_request,  # the part that goes on (None: the last one)
            }
        )
    return {"results": results}


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def collect_handler(
    event: dict[str, Any], context: LambdaContext, environment: BackfillEnvironment = ENVIRONMENT
) -> dict[str, Any]:
    collector = environment.collector(_remaining(context))
    if event.get("source") == BATCH_EVENT_SOURCE and event.get("detail-type") == BATCH_EVENT_DETAIL_TYPE:
        arn = job_arn_of(event)
        if arn is None:
            logger.warning("state change event without a job ARN; the poll will find the job")
            return {"collected": []}
        result = collector.on_event(arn)
        found = [] if result is None else [result]
    else:
        found = collector.poll()
    return {
        "collected": [
            {
                "job_name": r.job_name,
                "status": r.status,
                "collected": r.collected,
                "busy": r.busy,
                "counts": r.counts,
            }
            for r in found
        ]
    }


_RECORD_METRICS = {
    "captioned": BatchMetric.RECORDS_CAPTIONED,
    "duplicate": BatchMetric.RECORDS_DUPLICATE,
    "superseded": BatchMetric.RECORDS_SUPERSEDED,
    "error_record": BatchMetric.RECORDS_ERROR_RECORD,
    "requeued": BatchMetric.RECORDS_REQUEUED,
}


def _record_metrics(result: CollectResult) -> None:
    """Counted once, by the collector that settled the job (a second look counts nothing)."""
    if not result.settled_now:
        return
    count(BatchMetric.JOBS_COLLECTED)
    if result.status in BATCH_FAILED_STATUSES:
        count(BatchMetric.JOBS_FAILED)
    for outcome, n in result.counts.items():
        count(_RECORD_METRICS.get(outcome, BatchMetric.RECORDS_REQUEUED), n)
    count(BatchMetric.INPUT_TOKENS, result.input_tokens)
    count(BatchMetric.OUTPUT_TOKENS, result.output_tokens)


def job_arn_of(event: dict[str, Any]) -> str | None:
    """The job ARN of a state-change event: ``detail.batchJobArn``, else the first resource."""
    detail = event.get("detail") or {}
    for name in ("batchJobArn", "jobArn"):
        value = detail.get(name) if isinstance(detail, dict) else None
        if isinstance(value, str) and value:
            return value
    resources = event.get("resources") or []
    if resources and isinstance(resources[0], str):
        return resources[0]
    return None
