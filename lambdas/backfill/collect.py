"""Collect a finished batch job: each record ends as one caption, one error record, or back online.

Triggered by the EventBridge rule (``Batch Inference Job State Change``, best effort) and by the
scheduled poll (``GetModelInvocationJob`` for every job not yet collected), so one lost event only
delays a job until the next poll. The job's own status always comes from ``GetModelInvocationJob``;
an event only says which job to look at.

For a job in a terminal state, one collector at a time (a conditional write of the job document
is the lock; a lock older than ``lock_s`` is taken over) streams the output files, joins each line
to the record index on ``recordId`` (``output.join``) and settles the record by the online path's
rules:

- ``modelOutput`` -> the caption record of the online path plus ``mode: "batch"`` and the job,
  published by ``versions.publish``: a caption already there for that ETag wins (``duplicate``), a
  version that is no longer current is ``superseded`` and writes nothing; a refusal or an empty
  answer is the same error record as online;
- ``error`` -> final when the online classification says so (an error record), else retryable;
- no line at all (failed, stopped, expired, partially completed job) -> retryable.

A retryable record releases its claim and goes to the online caption queue (one on-demand call),
unless its version is no longer current. Every claim of the job is released once its record is
settled. Collecting twice is harmless: captions are kept (``EXISTS``), messages are deduplicated
by the online path, releases are conditional.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lambdas.backfill import output, records
from lambdas.backfill.adapters import BedrockJobs
from lambdas.backfill.output import Kind, RecordResult
from lambdas.backfill.records import IndexEntry
from lambdas.backfill.settings import BatchModel
from lambdas.backfill.submit import CAPTION_STAGE, model_from_document
from lambdas.caption import model, prompts
from lambdas.caption.claims import Claim, Claims
from lambdas.caption.structured import InvalidStructuredOutput
from lambdas.shared import keys
from lambdas.shared.contract import BATCH_JOBS_PREFIX
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.observability import logger
from lambdas.shared.records import ImageMessage, error_record, utc_now_iso
from lambdas.shared.storage import SOURCE_ETAG_META, ObjectMissing, PreconditionFailed, Queue, Store
from lambdas.shared.versions import Published, Version, is_current, publish, publish_error_record

RUNNING = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
LOCK_S = 900.0  # the collect function's timeout: an older lock's holder has certainly ended
TIME_MARGIN_S = 60.0  # kept free to write the job document back
SETTLE_WORKERS = 16  # each record is a few S3 requests: settled in parallel


class _OutOfTime(Exception):
    pass


class Settled:
    CAPTIONED = "captioned"
    DUPLICATE = "duplicate"  # a caption for this ETag was already there
    SUPERSEDED = "superseded"
    ERROR_RECORD = "error_record"
    REQUEUED = "requeued"  # back to the online caption queue


@dataclass(slots=True)
class CollectResult:
    job_name: str
    status: str
    collected: bool = False
    busy: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    settled_now: bool = False  # this call settled the records (metrics count it once)


class Collector:
    def __init__(
        self,
        *,
        store: Store,
        files: Any,  # adapters.S3Files (list_keys, lines, read)
        jobs: BedrockJobs,
        queue: Queue,
        online_claim_lease_s: float,
        wall: Callable[[], float] = time.time,
        lock_s: float = LOCK_S,
        remaining_s: Callable[[], float] = lambda: float("inf"),
        workers: int = SETTLE_WORKERS,
    ) -> None:
        self._store, self._files, self._jobs, self._queue = store, files, jobs, queue
        self._wall = wall
        self._lock_s = lock_s
        self._remaining_s = remaining_s
        self._workers = workers
        self._tokens_lock = threading.Lock()
        self._claims = Claims(store, lease_s=online_claim_lease_s, wall=wall)

    # ------------------------------------------------------------------ entry points

    def on_event(self, job_arn: str) -> CollectResult | None:
        """An EventBridge state change: find our job by its name and look at it."""
        job = self._jobs.get(job_arn)
        name = str(job.get("jobName", ""))
        if not name or self._store.head(records.job_document_key(name)) is None:
            logger.info(
                "state change of a job that is not a backfill of this stack", extra={"job_arn": job_arn}
            )
            return None
        return self.collect(name, job)

    def poll(self) -> list[CollectResult]:
        """Every job document not yet collected (the fallback for a lost event)."""
        results = []
        for key in self._files.list_keys(BATCH_JOBS_PREFIX):
            if not records.is_job_document_key(key):
                continue
            document, _ = self._read(key)
            if document.get("state") in {"running", "collecting"} and document.get("job_arn"):
                results.append(self.collect(str(document["job_name"])))
        return results

    # ------------------------------------------------------------------ one job

    def collect(self, name: str, job: dict[str, Any] | None = None) -> CollectResult:
        doc_key = records.job_document_key(name)
        document, info_etag = self._read(doc_key)
        if document.get("state") == "collected":
            return CollectResult(
                name, str(document.get("status")), collected=True, counts=document.get("counts", {})
            )
        job = job if job is not None else self._jobs.get(str(document["job_arn"]))
        status = str(job.get("status", ""))
        if status not in TERMINAL:
            if document.get("status") != status:
                document["status"] = status
                self._put(doc_key, document, info_etag)
            return CollectResult(name, status)
        lock_etag = self._lock(doc_key, document, info_etag, status)
        if lock_etag is None:
            return CollectResult(name, status, busy=True)

        spec = model_from_document(document)
        index = records.read_index(self._files.lines(records.job_index_key(name)))
        stats = output.JoinStats()
        counts: Counter[str] = Counter()
        tokens = [0, 0]
        manifest: dict[str, int] = {}
        try:
            with ThreadPoolExecutor(max_workers=self._workers) as pool:
                for key in sorted(self._files.list_keys(records.output_prefix(name))):
                    if output.is_output_file(key):
                        joined = output.join(index, self._files.lines(key), stats)
                        self._settle_all(pool, joined, spec, name, tokens, counts)
                    elif key.endswith(output.MANIFEST_NAME):
                        manifest = output.parse_manifest(self._files.read(key))
                self._settle_all(pool, output.missing(index, stats), spec, name, tokens, counts)
        except _OutOfTime:
            # Settled so far stays settled; the next poll starts again and finds those done quickly
            # (a caption already there is one HEAD, a released claim one failed delete).
            document.update({"state": "running", "status": status})
            document.pop("collecting_since", None)
            self._put(doc_key, document, lock_etag)
            logger.warning("out of time while collecting; the next poll goes on", extra={"job_name": name})
            return CollectResult(name, status, busy=True, counts=dict(counts))

        document.update(
            {
                "status": status,
                "state": "collected",
                "collected_at": utc_now_iso(),
                "counts": dict(counts),
                "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
                "manifest": manifest,
                "lines": {
                    "read": stats.lines,
                    "unreadable": stats.unreadable,
                    "unknown": stats.unknown,
                    "repeated": stats.repeated,
                },
                "message": str(job.get("message", "") or ""),
            }
        )
        document.pop("collecting_since", None)
        self._put(doc_key, document, lock_etag)
        logger.info("batch job collected", extra={"job_name": name, "status": status, "counts": dict(counts)})
        return CollectResult(
            name,
            status,
            collected=True,
            counts=dict(counts),
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            settled_now=True,
        )

    def _settle_all(
        self,
        pool: ThreadPoolExecutor,
        pairs: Iterator[tuple[IndexEntry, RecordResult]],
        spec: BatchModel,
        name: str,
        tokens: list[int],
        counts: Counter[str],
    ) -> None:
        """Settle records a chunk at a time in parallel (a chunk of lines in memory at most)."""
        chunk_size = self._workers * 4
        while True:
            chunk = list(itertools.islice(pairs, chunk_size))
            if not chunk:
                return
            if self._remaining_s() < TIME_MARGIN_S:
                raise _OutOfTime
            for outcome in pool.map(lambda pair: self._settle(pair[0], pair[1], spec, name, tokens), chunk):
                counts[outcome] += 1

    def _lock(self, doc_key: str, document: dict[str, Any], etag: str, status: str) -> str | None:
        since = document.get("collecting_since")
        if isinstance(since, int | float) and self._wall() - since < self._lock_s:
            return None
        document.update({"state": "collecting", "collecting_since": self._wall(), "status": status})
        try:
            return self._store.put_json(doc_key, document, if_match=etag)
        except PreconditionFailed:
            return None

    # ------------------------------------------------------------------ one record

    def _settle(
        self, entry: IndexEntry, result: RecordResult, spec: BatchModel, name: str, tokens: list[int]
    ) -> str:
        """One record's end; its claim is released after the record is stored (before a requeue)."""
        if result.kind is Kind.OUTPUT:
            assert result.model_output is not None
            outcome = self._caption(entry, result.model_output, spec, name, tokens)
        elif result.kind is Kind.ERROR and (verdict := output.verdict(result)).retry is None:
            code = verdict.code or ErrorCode.MODEL_ERROR
            outcome = self._error(entry, code, verdict.message, verdict.error_type, name)
        else:
            return self._requeue(entry)
        if outcome != Settled.REQUEUED:  # a requeue released it already
            self._release(entry)
        return outcome

    def _release(self, entry: IndexEntry) -> None:
        self._claims.release(Claim(keys.claim_key(entry.source_key, entry.source_etag), entry.claim_etag))

    def _caption(
        self, entry: IndexEntry, response: Any, spec: BatchModel, name: str, tokens: list[int]
    ) -> str:
        image_spec = prompts.spec_for_image(spec.spec, spec.rules, entry.source_key)  # as the job sent it
        input_tokens, output_tokens, _ = model.usage_of(response)
        with self._tokens_lock:  # paid for, whatever the answer turns out to be
            tokens[0] += input_tokens
            tokens[1] += output_tokens
        try:
            answer = model.parse_response(response, structured_output=image_spec.structured)
        except Rejection as rejection:
            return self._error(entry, rejection.code, rejection.message, rejection.error_type, name)
        except InvalidStructuredOutput:
            # Online, this is retried like a model error and recorded after the allowed attempts.
            return self._requeue(entry)
        record = model.caption_record(
            _message(self._store.bucket, entry),
            image_spec,
            answer,
            latency_ms=0.0,
            receive_count=1,
            captioned_at=utc_now_iso(),
        )
        record.update({"mode": "batch", "batch_job": name, "record_id": entry.record_id})
        caption_key = keys.caption_key(entry.source_key)

        def write(if_none_match: bool, if_match: str | None) -> str:
            return self._store.put_json(
                caption_key,
                record,
                metadata={SOURCE_ETAG_META: entry.source_etag},
                if_none_match=if_none_match,
                if_match=if_match,
            )

        published = publish(self._store, caption_key, _version(entry), write, replace_same_version=False)
        return {
            Published.WRITTEN: Settled.CAPTIONED,
            Published.EXISTS: Settled.DUPLICATE,
            Published.SUPERSEDED: Settled.SUPERSEDED,
        }[published]

    def _error(self, entry: IndexEntry, code: ErrorCode, text: str, error_type: str, name: str) -> str:
        record = error_record(
            stage=CAPTION_STAGE,
            error_code=code.value,
            error_type=error_type,
            message=text,
            retryable=False,
            bucket=self._store.bucket,
            source_key=entry.source_key,
            source_etag=entry.source_etag,
            details={"mode": "batch", "batch_job": name, "record_id": entry.record_id},
        )
        published = publish_error_record(self._store, record)
        return Settled.SUPERSEDED if published is Published.SUPERSEDED else Settled.ERROR_RECORD

    def _requeue(self, entry: IndexEntry) -> str:
        self._release(entry)  # first, so the online consumer can take the claim
        if not is_current(self._store, _version(entry)):
            return Settled.SUPERSEDED
        self._queue.send(_message(self._store.bucket, entry).to_json())
        return Settled.REQUEUED

    # ------------------------------------------------------------------ documents

    def _read(self, key: str) -> tuple[dict[str, Any], str]:
        raw, info = self._store.get_bytes(key)
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise ValueError(f"{key} is not a job document")
        return document, info.etag

    def _put(self, key: str, document: dict[str, Any], etag: str) -> None:
        try:
            self._store.put_json(key, document, if_match=etag)
        except (PreconditionFailed, ObjectMissing):
            logger.info("job document changed meanwhile; left to the other writer", extra={"key": key})


def _message(bucket: str, entry: IndexEntry) -> ImageMessage:
    return ImageMessage(
        bucket=bucket,
        source_key=entry.source_key,
        source_etag=entry.source_etag,
        encoded_key=keys.encoded_key(entry.source_key),
        width=entry.width,
        height=entry.height,
        uploaded_at=entry.uploaded_at or utc_now_iso(),
        resize_policy=entry.resize_policy,
        target_width=entry.target_width,
        target_height=entry.target_height,
    )


def _version(entry: IndexEntry) -> Version:
    return Version(entry.source_key, entry.source_etag)
