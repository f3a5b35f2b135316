"""Bedrock batch inference on loopback: the control-plane calls a backfill makes, and the job itself.

Served by the Bedrock stand-in's HTTP server (``AWS_ENDPOINT_URL_BEDROCK`` points at it), in the
REST shape boto3's ``bedrock`` client sends and parses:

- ``POST /model-invocation-job`` (CreateModelInvocationJob): the client request token makes a
  repeated create return the same job; a second job with the same name is a ``ConflictException``;
- ``GET /model-invocation-job/{id or ARN}`` (Get), ``GET /model-invocation-jobs`` (List, filters
  ``statusEquals`` and ``nameContains``), ``POST /model-invocation-job/{id}/stop`` (Stop).

A created job runs in a thread of its own, as Bedrock runs it: ``Submitted`` -> ``Validating``
(a job below the minimum number of records fails here, as Bedrock's validation does) ->
``InProgress`` -> a terminal status. It reads every ``.jsonl`` file under the job's input URI from
S3 (moto), answers each record as the stand-in answers Converse (``BedrockStandin.answer_record``:
no per-minute quota, which batch inference does not count against), and writes
``<output URI><job id>/<file>.jsonl.out`` (lines in reverse order: Bedrock promises no order) and
``manifest.json.out`` with the counts. Each state change is announced on ``on_event`` as the
EventBridge event Bedrock sends (``source: aws.bedrock``, ``Batch Inference Job State Change``).

Faults (``BatchFaults``, ``imgcap local --batch-faults``), deterministic by position:
- ``failed_records=S``: a share S of records gets an error line instead of an answer; the odd
  ones a 429 (retryable: the collector sends them back online), the even ones a 400 about the
  image (final: an error record);
- ``partial_jobs=N``: the first N jobs stop after 60% of their records, ``PartiallyCompleted``
  (the unanswered ones have no output line: the collector sends them back online);
- ``failed_jobs=N``: the next N jobs end ``Failed`` without any output;
- ``drop_events=N``: the first N terminal state-change events are never delivered (the collector's
  scheduled poll must find those jobs).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from lambdas.shared.contract import BATCH_EVENT_DETAIL_TYPE, BATCH_EVENT_SOURCE

TERMINAL = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
PARTIAL_SHARE = 0.6  # a partially completed job answers this share of its records
ACCOUNT = "123456789012"

_JOB = re.compile(r"^/model-invocation-job/(?P<id>[^/]+)$")
_STOP = re.compile(r"^/model-invocation-job/(?P<id>[^/]+)/stop$")
_ID = re.compile(r"(?:^|/)(?P<id>[a-z0-9]{12})$")

Reply = tuple[int, dict[str, Any], str | None]  # HTTP status, JSON body, x-amzn-ErrorType
Answer = Callable[[str, Mapping[str, Any]], dict[str, Any]]  # (model id, model input) -> line fields


class BatchFaultError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BatchFaults:
    failed_records: float = 0.0
    partial_jobs: int = 0
    failed_jobs: int = 0
    drop_events: int = 0

    def describe(self) -> str:
        parts = [
            f"{name}={getattr(self, name):g}"
            for name in ("failed_records", "partial_jobs", "failed_jobs", "drop_events")
            if getattr(self, name)
        ]
        return ",".join(parts) or "none"


def parse_batch_faults(text: str | None) -> BatchFaults:
    """``failed_records=0.05,partial_jobs=1,failed_jobs=0,drop_events=1`` (any subset)."""
    values: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in BatchFaults.__dataclass_fields__:
            raise BatchFaultError(
                f"--batch-faults: {part.strip()!r} is not NAME=VALUE with NAME one of "
                "failed_records, partial_jobs, failed_jobs, drop_events"
            )
        try:
            value = float(raw)
        except ValueError:
            raise BatchFaultError(f"--batch-faults: {name} must be a number, got {raw!r}") from None
        if name == "failed_records" and not 0.0 <= value <= 1.0:
            raise BatchFaultError("--batch-faults: failed_records is a share between 0 and 1")
        if name != "failed_records" and (value < 0 or value != int(value)):
            raise BatchFaultError(f"--batch-faults: {name} is a whole number of jobs or events")
        values[name] = value
    return BatchFaults(
        failed_records=values.get("failed_records", 0.0),
        partial_jobs=int(values.get("partial_jobs", 0)),
        failed_jobs=int(values.get("failed_jobs", 0)),
        drop_events=int(values.get("drop_events", 0)),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


@dataclass
class _Job:
    fields: dict[str, Any]
    number: int
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return str(self.fields["jobArn"]).rsplit("/", 1)[-1]


class BatchControlPlane:
    """Jobs, their runner threads and the events; ``handle`` serves one HTTP request."""

    def __init__(
        self,
        *,
        s3: Any,
        answer: Answer,
        on_event: Callable[[dict[str, Any]], None],
        faults: BatchFaults | None = None,
        min_records: int = 1,
        region: str = "us-east-1",
        step_s: float = 0.2,
    ) -> None:
        self._s3 = s3
        self._answer = answer
        self._on_event = on_event
        self.faults = faults or BatchFaults()
        self._min_records = min_records
        self._region = region
        self._step_s = step_s
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}  # by job id
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._events_dropped = 0
        self.events_sent = 0
        self.records_answered = 0

    # ------------------------------------------------------------------ HTTP

    def handle(self, method: str, path: str, query: str, body: bytes) -> Reply | None:
        """The reply to a control-plane request, or None when the path is not one of ours."""
        if method == "POST" and path == "/model-invocation-job":
            return self._create(body)
        if method == "GET" and path == "/model-invocation-jobs":
            return self._list(parse_qs(query))
        stop = _STOP.match(path)
        if method == "POST" and stop:
            return self._stop(unquote(stop.group("id")))
        job = _JOB.match(path)
        if method == "GET" and job:
            found = self._find(unquote(job.group("id")))
            if found is None:
                return _not_found(job.group("id"))
            with self._lock:
                return 200, dict(found.fields), None
        return None

    def _create(self, body: bytes) -> Reply:
        try:
            doc = json.loads(body or b"{}")
            name = str(doc["jobName"])
            role_arn = str(doc["roleArn"])
            model_id = str(doc["modelId"])
            input_uri = str(doc["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
            output_uri = str(doc["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
            _split_uri(input_uri), _split_uri(output_uri)
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"message": f"Invalid CreateModelInvocationJob request: {exc}"}, "ValidationException"
        token = str(doc.get("clientRequestToken") or "")
        with self._lock:
            for job in self._jobs.values():
                if job.fields["jobName"] == name:
                    if token and job.fields.get("clientRequestToken") == token:
                        return 200, {"jobArn": job.fields["jobArn"]}, None  # a retried create
                    return 409, {"message": f"A job named {name} already exists."}, "ConflictException"
            job_id = secrets.token_hex(6)
            arn = f"arn:aws:bedrock:{self._region}:{ACCOUNT}:model-invocation-job/{job_id}"
            now = _now()
            job = _Job(
                {
                    "jobArn": arn,
                    "jobName": name,
                    "modelId": model_id,
                    "clientRequestToken": token,
                    "roleArn": role_arn,
                    "status": "Submitted",
                    "message": "",
                    "submitTime": now,
                    "lastModifiedTime": now,
                    "inputDataConfig": doc["inputDataConfig"],
                    "outputDataConfig": doc["outputDataConfig"],
                    "timeoutDurationInHours": int(doc.get("timeoutDurationInHours") or 24),
                    "modelInvocationType": str(doc.get("modelInvocationType") or "InvokeModel"),
                },
                number=len(self._jobs) + 1,
            )
            self._jobs[job_id] = job
            thread = threading.Thread(target=self._run, args=(job,), name=f"batch-job-{job_id}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return 200, {"jobArn": arn}, None

    def _list(self, query: Mapping[str, list[str]]) -> Reply:
        status = (query.get("statusEquals") or [""])[0]
        contains = (query.get("nameContains") or [""])[0]
        with self._lock:
            rows = [
                dict(j.fields)
                for j in self._jobs.values()
                if (not status or j.fields["status"] == status) and contains in j.fields["jobName"]
            ]
        rows.sort(key=lambda r: str(r["submitTime"]), reverse=True)
        return 200, {"invocationJobSummaries": rows}, None

    def _stop(self, identifier: str) -> Reply:
        job = self._find(identifier)
        if job is None:
            return _not_found(identifier)
        with self._lock:
            if job.fields["status"] in TERMINAL:
                return 400, {"message": f"The job is already {job.fields['status']}."}, "ValidationException"
        job.stop.set()
        self._set(job, "Stopping")
        return 200, {}, None

    def _find(self, identifier: str) -> _Job | None:
        match = _ID.search(identifier)
        with self._lock:
            return self._jobs.get(match.group("id")) if match else None

    # ------------------------------------------------------------------ running a job

    def _set(
        self, job: _Job, status: str, message: str = "", counts: Mapping[str, int] | None = None
    ) -> None:
        with self._lock:
            if job.fields["status"] == status:
                return
            job.fields.update({"status": status, "lastModifiedTime": _now(), **(counts or {})})
            if message:
                job.fields["message"] = message
            if status in TERMINAL:
                job.fields["endTime"] = job.fields["lastModifiedTime"]
            event = self._event(job)
            drop = status in TERMINAL and self._events_dropped < self.faults.drop_events
            if drop:
                self._events_dropped += 1
            else:
                self.events_sent += 1
        if not drop:
            self._on_event(event)

    def _event(self, job: _Job) -> dict[str, Any]:
        return {
            "version": "0",
            "id": secrets.token_hex(16),
            "detail-type": BATCH_EVENT_DETAIL_TYPE,
            "source": BATCH_EVENT_SOURCE,
            "account": ACCOUNT,
            "time": job.fields["lastModifiedTime"],
            "region": self._region,
            "resources": [job.fields["jobArn"]],
            "detail": {
                "batchJobArn": job.fields["jobArn"],
                "batchJobName": job.fields["jobName"],
                "status": job.fields["status"],
                "batchModelId": job.fields["modelId"],
            },
        }

    def _pause(self) -> bool:
        """Wait one step; True when the run should end (closing)."""
        return self._closing.wait(self._step_s)

    def _run(self, job: _Job) -> None:
        try:
            self._run_job(job)
        except Exception as exc:  # a stand-in bug must still end the job, as Bedrock would
            self._set(job, "Failed", f"Internal error in the batch stand-in: {exc}")

    def _run_job(self, job: _Job) -> None:
        if self._pause():
            return
        self._set(job, "Validating")
        files = self._input_files(job)
        total = sum(len(lines) for _, lines in files)
        if self._pause():
            return
        if total < self._min_records:
            self._set(
                job,
                "Failed",
                f"The job has {total} records; a job needs at least {self._min_records} (Service Quotas).",
            )
            return
        self._set(job, "InProgress", counts={"totalRecordCount": total})
        faults = self.faults
        if job.number <= faults.partial_jobs + faults.failed_jobs and job.number > faults.partial_jobs:
            if not self._pause():
                self._set(job, "Failed", "The job failed: an internal error occurred (injected fault).")
            return
        limit = int(total * PARTIAL_SHARE) if job.number <= faults.partial_jobs else total
        counts = self._answer_files(job, files, limit)
        if job.stop.is_set():
            status = "Stopped"
        elif counts["processedRecordCount"] < total:
            status = "PartiallyCompleted"
        else:
            status = "Completed"
        self._set(job, status, counts=counts)

    def _input_files(self, job: _Job) -> list[tuple[str, list[bytes]]]:
        bucket, prefix = _split_uri(job.fields["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        files = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if key.endswith(".jsonl"):
                    body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    files.append((key[len(prefix) :], [line for line in body.splitlines() if line.strip()]))
        return sorted(files)

    def _answer_files(self, job: _Job, files: list[tuple[str, list[bytes]]], limit: int) -> dict[str, int]:
        out_bucket, out_prefix = _split_uri(job.fields["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        model_id = str(job.fields["modelId"])
        counts = dict.fromkeys(
            (
                "processedRecordCount",
                "successRecordCount",
                "errorRecordCount",
                "inputTokenCount",
                "outputTokenCount",
            ),
            0,
        )
        position = 0
        for name, lines in files:
            out_lines = []
            for line in lines:
                if position >= limit or job.stop.is_set() or self._closing.is_set():
                    break
                position += 1
                out_lines.append(self._record_line(model_id, line, position, counts))
            body = b"".join(
                json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in reversed(out_lines)
            )
            self._s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{job.job_id}/{name}.out", Body=body)
        manifest = {"totalRecordCount": sum(len(lines) for _, lines in files), **counts}
        self._s3.put_object(
            Bucket=out_bucket,
            Key=f"{out_prefix}{job.job_id}/manifest.json.out",
            Body=json.dumps(manifest).encode(),
        )
        return counts

    def _record_line(
        self, model_id: str, line: bytes, position: int, counts: dict[str, int]
    ) -> dict[str, Any]:
        try:
            record = json.loads(line)
            record_id = str(record["recordId"])
            model_input = record["modelInput"]
        except (ValueError, KeyError, TypeError):
            counts["processedRecordCount"] += 1
            counts["errorRecordCount"] += 1
            return {"recordId": "", "error": {"errorCode": 400, "errorMessage": "Malformed record."}}
        share = self.faults.failed_records
        failed = share > 0 and int(position * share) != int((position - 1) * share)
        counts["processedRecordCount"] += 1
        if failed:
            counts["errorRecordCount"] += 1
            retryable = int(position * share) % 2 == 1
            error = (
                {"errorCode": 429, "errorMessage": "Too many requests, please wait before trying again."}
                if retryable
                else {
                    "errorCode": 400,
                    "errorMessage": "Unable to process the provided image: it does not adhere to the "
                    "expected standards (injected fault).",
                }
            )
            with self._lock:
                self.records_answered += 1
            return {"recordId": record_id, "modelInput": {}, "error": error}
        answered = self._answer(model_id, model_input)
        with self._lock:
            self.records_answered += 1
        output = answered.get("modelOutput")
        if isinstance(output, dict):
            usage = output.get("usage") or {}
            counts["successRecordCount"] += 1
            counts["inputTokenCount"] += int(usage.get("inputTokens", 0))
            counts["outputTokenCount"] += int(usage.get("outputTokens", 0))
            return {"recordId": record_id, "modelInput": {}, "modelOutput": output}
        counts["errorRecordCount"] += 1
        return {"recordId": record_id, "modelInput": {}, "error": answered.get("error")}

    # ------------------------------------------------------------------ reporting and shutdown

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(j.fields) for j in self._jobs.values()]

    def running(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.fields["status"] not in TERMINAL)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "jobs": len(self._jobs),
                "running": sum(1 for j in self._jobs.values() if j.fields["status"] not in TERMINAL),
                "records_answered": self.records_answered,
                "events_sent": self.events_sent,
                "events_dropped": self._events_dropped,
                "faults": self.faults.describe(),
            }

    def close(self, timeout_s: float = 5.0) -> None:
        self._closing.set()
        for thread in list(self._threads):
            thread.join(timeout=timeout_s)


def _line(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"


def _not_found(identifier: str) -> Reply:
    return 404, {"message": f"Could not find the job {identifier}."}, "ResourceNotFoundException"
