"""``imgcap local``: the whole pipeline on loopback servers, with the handlers that ship to Lambda.

Order of a run:
1. moto in server mode (S3, SQS, SSM) and the Bedrock stand-in start on 127.0.0.1;
   ``provision`` creates the bucket, notification, queues and SSM parameters the stack creates.
2. Worker pools (one spawn process per concurrent execution environment) start for the resize
   and caption functions, with Lambda-like environment variables pointing boto3 at loopback.
3. The event-source emulator starts: S3 events -> resize (async semantics), caption queue ->
   caption (event source mapping with batch size B and maximum concurrency C).
4. Every file under ``--images`` is uploaded to ``images/<relative path>``.
5. Progress is shown until every upload has reached a final state (a caption or an error record
   for its ETag, the DLQ, or the resize failure destination), or the timeout names what did not.
6. OUT gets ``captions/`` and ``errors/`` exactly as stored, ``summary.json``, ``report.html``
   and ``logs/`` (the functions' JSON logs, EMF metric blobs, one line per invocation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import mimetypes
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError

from imgcap.local.emulator import BatchVerdict, Outcome, S3EventPump, SqsEventSource
from imgcap.local.faults import FaultSpec
from imgcap.local.provision import LocalStack, provision
from imgcap.local.servers import (
    LOCAL_ACCOUNT,
    LOCAL_CREDENTIALS,
    LOCAL_REGION,
    endpoint_environment,
    moto_server,
)
from imgcap.local.standin import BedrockStandin, StandinConfig
from imgcap.local.workers import FunctionSpec, InvocationResult, WorkerPool
from imgcap.ops.status import queue_depth
from imgcap.report import ReportEntry, write_report
from lambdas.shared import keys
from lambdas.shared.observability import ERROR_CODE_DIMENSION, M

DEFAULT_RPM = 120.0
DEFAULT_CONCURRENCY = 4
DEFAULT_BATCH_SIZE = 4
DEFAULT_TIMEOUT_S = 600.0
NAMESPACE = "ImageCaptioning"
RESIZE_SERVICE = "resize-encode"
CAPTION_SERVICE = "caption"
RESIZE_HANDLER = "lambdas.resize.handler.lambda_handler"
CAPTION_HANDLER = "lambdas.caption.handler.lambda_handler"
NOT_FINAL_LISTED = 20  # how many unfinished keys the timeout message names

# Environment variables a worker inherits from the user's shell (everything else is set here).
_INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "USER",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
)
_INHERITED_AWS = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


class LocalRunError(RuntimeError):
    """The run cannot start (bad input directory, missing handler module, ...)."""


@dataclass(frozen=True, slots=True)
class LocalTuning:
    """Function and queue settings, scaled down from the stack's for a local run."""

    resize_memory_mb: int = 1769
    resize_timeout_s: float = 60.0
    resize_concurrency: int = 2
    caption_memory_mb: int = 512
    caption_timeout_s: float = 30.0
    bedrock_read_timeout_s: float = 2.0  # the stand-in's timeout fault holds longer than this
    bedrock_max_attempts: int = 2
    throttle_backoff_base_s: float = 1.0  # stack: 10 s
    throttle_backoff_max_s: float = 8.0  # stack: 300 s
    model_error_max_attempts: int = 3
    claim_lease_s: float = 45.0  # outlasts the caption timeout, as in the stack
    max_receive_count: int = 20
    visibility_timeout_s: int | None = None  # default: 6x the caption timeout, as in the stack
    async_retry_delays_s: tuple[float, float] = (1.0, 2.0)  # Lambda: about 1 and 2 minutes
    ssm_max_age_s: int = 60

    @property
    def queue_visibility_timeout_s(self) -> int:
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return max(1, math.ceil(6 * self.caption_timeout_s))


@dataclass(frozen=True, slots=True)
class LocalOptions:
    images: Path
    out: Path
    captioner: str = "standin"  # or "bedrock": the real runtime endpoint with the user's credentials
    rpm: float = DEFAULT_RPM  # the stand-in's quota, and the pacing in SSM unless pacing_rpm is set
    concurrency: int = DEFAULT_CONCURRENCY  # event source mapping maximum concurrency C
    batch_size: int = DEFAULT_BATCH_SIZE
    faults: FaultSpec = field(default_factory=FaultSpec)
    stack_name: str = "ImageCaptioning"
    timeout_s: float = DEFAULT_TIMEOUT_S
    policy: str | None = None
    prompt: str | None = None
    model_id: str | None = None
    keep_running: bool = False
    pacing_rpm: float | None = None  # SSM requests-per-minute when it should differ from the quota
    quota_window_s: float = 60.0
    standin_latency_s: tuple[float, float] = (0.3, 0.8)
    standin_seed: int = 0
    tuning: LocalTuning = field(default_factory=LocalTuning)
    replay_s3_events: int = 0  # deliver every S3 event this many extra times (at-least-once)
    duplicate_caption_messages: bool = False  # deliver every caption message a second time
    batching_window_s: float = 0.0  # the event source mapping's MaximumBatchingWindowInSeconds
    settle_s: float = 20.0  # after all uploads are final, wait at most this long for queues to drain
    caption_handler: str = CAPTION_HANDLER
    resize_handler: str = RESIZE_HANDLER


@dataclass(frozen=True, slots=True)
class LocalResult:
    summary: dict[str, Any]
    out: Path
    report: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.summary.get("lost", 1) == 0 else 1


# --- metrics and logs from the workers --------------------------------------------------------


class MetricTotals:
    """Sums EMF blobs (Powertools' metric output) per service and metric name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_service: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.rejections: dict[str, float] = defaultdict(float)
        self.blobs = 0

    def add(self, blob: Mapping[str, Any]) -> None:
        directives = (blob.get("_aws") or {}).get("CloudWatchMetrics") or []
        service = str(blob.get("service", "unknown"))
        with self._lock:
            self.blobs += 1
            for directive in directives:
                for metric in directive.get("Metrics") or []:
                    name = metric.get("Name")
                    raw = blob.get(name)
                    values = raw if isinstance(raw, list) else [raw]
                    total = sum(float(v) for v in values if isinstance(v, int | float))
                    self.by_service[service][name] += total
                    if name == M.IMAGES_REJECTED and ERROR_CODE_DIMENSION in blob:
                        self.rejections[str(blob[ERROR_CODE_DIMENSION])] += total

    def total(self, name: str) -> float:
        with self._lock:
            return sum(c.get(name, 0.0) for c in self.by_service.values())

    def snapshot(self) -> dict[str, Any]:
        def clean(value: float) -> float:
            return int(value) if float(value).is_integer() else round(value, 3)

        with self._lock:
            totals: dict[str, float] = defaultdict(float)
            for counter in self.by_service.values():
                for name, value in counter.items():
                    totals[name] += value
            return {
                "totals": {k: clean(v) for k, v in sorted(totals.items())},
                "by_service": {
                    s: {k: clean(v) for k, v in sorted(c.items())} for s, c in sorted(self.by_service.items())
                },
                "rejections_by_code": {k: clean(v) for k, v in sorted(self.rejections.items())},
                "emf_blobs": self.blobs,
            }


class LogSink:
    """Writes each function's log lines to OUT/logs/<service>.jsonl and pulls EMF blobs out."""

    def __init__(self, logs_dir: Path, metrics: MetricTotals) -> None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        self._dir = logs_dir
        self._metrics = metrics
        self._lock = threading.Lock()
        self._files: dict[str, TextIO] = {}
        self.last_problem: dict[str, str] = {}  # correlation id (source key) -> last warning/error

    def _file(self, name: str) -> TextIO:
        if name not in self._files:
            self._files[name] = (self._dir / f"{name}.jsonl").open("a", encoding="utf-8")
        return self._files[name]

    def add(self, service: str, result: InvocationResult, extra: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            logs, emf = self._file(service), self._file("metrics")
            for raw in result.log_lines:
                doc = _json_object(raw)
                if doc is not None and "_aws" in doc:
                    self._metrics.add(doc)
                    emf.write(raw.rstrip() + "\n")
                    continue
                line = raw
                if doc is None:  # plain text (print, a warning): wrapped so the file stays JSON lines
                    doc = {"level": "INFO", "message": raw, "service": service, "raw": True}
                    line = json.dumps(doc, ensure_ascii=False)
                logs.write(line.rstrip() + "\n")
                level = str(doc.get("level", "")).upper()
                correlation = doc.get("correlation_id")
                if level in ("WARNING", "ERROR", "CRITICAL") and isinstance(correlation, str):
                    detail = doc.get("detail")
                    text = str(doc.get("message", "")) + (f" ({detail})" if detail else "")
                    self.last_problem[correlation] = text[:300]
            record = {
                "function": result.function,
                "request_id": result.request_id,
                "started_at": result.started_at,
                "duration_ms": round(result.duration_ms, 1),
                "ok": result.ok,
                "timed_out": result.timed_out,
                "error_type": result.error_type,
                "error_message": result.error_message,
                "cold_start": result.cold_start,
                "init_ms": round(result.init_ms, 1) if result.init_ms is not None else None,
                "peak_rss_mb": round(result.peak_rss_kb / 1024, 1),
                "worker_pid": result.worker_pid,
                **(extra or {}),
            }
            self._file("invocations").write(json.dumps(record) + "\n")

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# --- uploads and their final states -----------------------------------------------------------


@dataclass
class Upload:
    key: str
    path: Path
    size: int
    etag: str = ""
    uploaded_at: float = 0.0


def collect_files(images: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``images`` as (``images/<relative posix path>``, path), sorted."""
    if not images.is_dir():
        raise LocalRunError(f"--images {images} is not a directory")
    found: list[tuple[str, Path]] = []
    for path in sorted(images.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(images).as_posix()
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            print(
                f"skipping {path!s}: its name is not valid UTF-8, so it cannot be an S3 key", file=sys.stderr
            )
            continue
        found.append((keys.IMAGES_PREFIX + rel, path))
    return found


def _parse_iso(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Ledger:
    """Which uploads reached which final state, read back from the bucket and the queues."""

    def __init__(self, s3: Any, sqs: Any, stack: LocalStack) -> None:
        self._s3 = s3
        self._sqs = sqs
        self._stack = stack
        self._lock = threading.Lock()
        self.uploads: dict[str, Upload] = {}
        self.captions: dict[str, tuple[str, dict[str, Any]]] = {}  # caption key -> (object etag, record)
        self.errors: dict[str, tuple[str, dict[str, Any]]] = {}
        self.encoded: set[str] = set()
        self.dead_letters: dict[str, dict[str, Any]] = {}  # source key -> DLQ message facts
        self.resize_failures: dict[str, dict[str, Any]] = {}  # source key -> destination record facts

    def add_upload(self, upload: Upload) -> None:
        with self._lock:
            self.uploads[upload.key] = upload

    def _list(self, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._stack.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = str(obj.get("ETag", "")).strip('"')
        return out

    def _fetch(
        self, listing: Mapping[str, str], cache: dict[str, tuple[str, dict[str, Any]]], key: str
    ) -> None:
        etag = listing.get(key)
        if etag is None or (key in cache and cache[key][0] == etag):
            return
        try:
            body = self._s3.get_object(Bucket=self._stack.bucket, Key=key)["Body"].read()
            doc = json.loads(body)
        except Exception:
            return  # replaced or half-visible: the next refresh reads it again
        if isinstance(doc, dict):
            cache[key] = (etag, doc)

    def _drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Read messages without consuming them: they stay in the queue, invisible for 12 hours."""
        out: list[dict[str, Any]] = []
        for _ in range(100):
            response = self._sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                VisibilityTimeout=43_200,
                WaitTimeSeconds=0,
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            out.extend(messages)
        return out

    def refresh(self) -> None:
        with self._lock:
            uploads = list(self.uploads.values())
        captions = self._list(keys.CAPTIONS_PREFIX)
        errors = self._list(keys.ERRORS_PREFIX)
        encoded = self._list(keys.ENCODED_PREFIX)
        for upload in uploads:
            self._fetch(captions, self.captions, keys.caption_key(upload.key))
            self._fetch(errors, self.errors, keys.error_key(upload.key))
        self.encoded = {u.key for u in uploads if keys.encoded_key(u.key) in encoded}
        for message in self._drain(self._stack.dlq_url):
            doc = _json_object(message.get("Body", "")) or {}
            key = doc.get("source_key")
            if isinstance(key, str):
                # moto carries the count over to the DLQ; our own peek above added one more
                count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
                self.dead_letters[key] = {"etag": doc.get("source_etag"), "receive_count": max(0, count - 1)}
        for message in self._drain(self._stack.resize_failure_queue_url):
            from lambdas.resize.events import object_refs

            doc = _json_object(message.get("Body", "")) or {}
            payload = doc.get("requestPayload") or {}
            response = doc.get("responsePayload") or {}
            for ref in object_refs(payload):
                self.resize_failures[ref.key] = {
                    "etag": ref.etag,
                    "error_type": response.get("errorType"),
                    "error_message": response.get("errorMessage"),
                }

    def caption_for(self, upload: Upload) -> dict[str, Any] | None:
        entry = self.captions.get(keys.caption_key(upload.key))
        if entry and (entry[1].get("source") or {}).get("etag") == upload.etag:
            return entry[1]
        return None

    def error_for(self, upload: Upload) -> dict[str, Any] | None:
        entry = self.errors.get(keys.error_key(upload.key))
        if entry and (entry[1].get("source") or {}).get("etag") in (upload.etag, None, ""):
            return entry[1]
        return None

    def state(self, upload: Upload) -> str | None:
        if not upload.etag:
            return None
        if self.caption_for(upload) is not None:
            return "captioned"
        if self.error_for(upload) is not None:
            return "rejected"
        dead = self.dead_letters.get(upload.key)
        if dead is not None and dead.get("etag") in (upload.etag, None):
            return "dead_lettered"
        failed = self.resize_failures.get(upload.key)
        if failed is not None and failed.get("etag") in (upload.etag, None):
            return "resize_failed"
        return None

    def states(self) -> dict[str, str | None]:
        with self._lock:
            uploads = list(self.uploads.values())
        return {u.key: self.state(u) for u in uploads}


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """One line every second on a terminal (rewritten with \\r); plain lines every 10 s otherwise."""

    def __init__(self, stream: TextIO, plain_interval_s: float = 10.0) -> None:
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._plain_interval = plain_interval_s
        self._last_plain = -math.inf
        self._width = 0

    def show(self, line: str, *, force: bool = False) -> None:
        if self._tty:
            pad = max(0, self._width - len(line))
            self._stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self._stream.flush()
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self._plain_interval:
            self._last_plain = now
            self._stream.write(line + "\n")
            self._stream.flush()

    def done(self) -> None:
        if self._tty and self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0

    def say(self, text: str) -> None:
        self.done()
        self._stream.write(text + "\n")
        self._stream.flush()


# --- the run ----------------------------------------------------------------------------------


def _client_factory(moto_url: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=LOCAL_REGION,
    )
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)

    def make(service: str) -> Any:
        return session.client(service, endpoint_url=moto_url, config=config)

    return make


def _base_environment(captioner: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith(("PYTHON", "LC_"))}
    env.pop("PYTHONSTARTUP", None)
    if captioner == "bedrock":
        env.update({k: os.environ[k] for k in _INHERITED_AWS if k in os.environ})
    return env


def function_specs(
    options: LocalOptions, stack: LocalStack, endpoints: Mapping[str, str]
) -> tuple[FunctionSpec, FunctionSpec]:
    """The two functions with the environment the stack gives them (local values scaled down)."""
    tuning = options.tuning
    common = {
        **_base_environment(options.captioner),
        **endpoints,
        "AWS_REGION": endpoints.get("AWS_DEFAULT_REGION", LOCAL_REGION),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "BUCKET_NAME": stack.bucket,
        "SSM_PREFIX": stack.ssm_prefix,
        "SSM_MAX_AGE_SECONDS": str(tuning.ssm_max_age_s),
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    common.setdefault("AWS_DEFAULT_REGION", common["AWS_REGION"])
    resize_name = f"{options.stack_name}-resize-encode"
    caption_name = f"{options.stack_name}-caption"
    resize = FunctionSpec(
        name=resize_name,
        handler=options.resize_handler,
        env={
            **common,
            "AWS_LAMBDA_FUNCTION_NAME": resize_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(tuning.resize_memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{resize_name}",
            "POWERTOOLS_SERVICE_NAME": RESIZE_SERVICE,
            "QUEUE_URL": stack.queue_url,
        },
        memory_mb=tuning.resize_memory_mb,
        timeout_s=tuning.resize_timeout_s,
        region=common["AWS_REGION"],
        account=LOCAL_ACCOUNT,
    )
    caption = FunctionSpec(
        name=caption_name,
        handler=options.caption_handler,
        env={
            **common,
            "AWS_LAMBDA_FUNCTION_NAME": caption_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(tuning.caption_memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{caption_name}",
            "POWERTOOLS_SERVICE_NAME": CAPTION_SERVICE,
            "MAX_CONCURRENCY": str(options.concurrency),
            "THROTTLE_BACKOFF_BASE_SECONDS": f"{tuning.throttle_backoff_base_s:g}",
            "THROTTLE_BACKOFF_MAX_SECONDS": f"{tuning.throttle_backoff_max_s:g}",
            "MODEL_ERROR_MAX_ATTEMPTS": str(tuning.model_error_max_attempts),
            "BEDROCK_READ_TIMEOUT_SECONDS": f"{tuning.bedrock_read_timeout_s:g}",
            "BEDROCK_MAX_ATTEMPTS": str(tuning.bedrock_max_attempts),
            "CLAIM_LEASE_SECONDS": f"{tuning.claim_lease_s:g}",
        },
        memory_mb=tuning.caption_memory_mb,
        timeout_s=tuning.caption_timeout_s,
        region=common["AWS_REGION"],
        account=LOCAL_ACCOUNT,
    )
    return resize, caption


def ssm_tunables(options: LocalOptions) -> dict[str, str]:
    """The SSM tunables a run overrides: pacing rpm, and the --policy/--prompt/--model-id options."""
    values = {"requests-per-minute": f"{options.pacing_rpm or options.rpm:g}"}
    if options.policy:
        values["resize-policy"] = options.policy
    if options.prompt:
        values["prompt"] = options.prompt
    if options.model_id:
        values["model-id"] = options.model_id
    return values


def _check_handlers(options: LocalOptions) -> None:
    import importlib.util

    for path in (options.resize_handler, options.caption_handler):
        module = path.rpartition(".")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise LocalRunError(f"handler module {module} not found (run from the project directory)")


def _check_bedrock_credentials() -> None:
    """``--captioner bedrock`` calls the real service: fail early when no credentials are found."""
    import boto3

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise LocalRunError(
            "--captioner bedrock needs AWS credentials with bedrock:InvokeModel (AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and model access enabled; none were found"
        )
    if not session.region_name:
        raise LocalRunError("--captioner bedrock needs a region: set AWS_REGION or AWS_DEFAULT_REGION")


def _prepare_out(out: Path) -> None:
    """Create OUT and remove what an earlier run wrote there (only our own artefacts)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name in ("captions", "errors", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("summary.json", "report.html"):
        (out / name).unlink(missing_ok=True)


def _safe_target(out: Path, key: str) -> Path | None:
    target = (out / key).resolve()
    return target if target.is_relative_to(out.resolve()) else None


class _Run:
    """State of one local run (kept together so the steps stay small)."""

    def __init__(self, options: LocalOptions, stream: TextIO) -> None:
        self.options = options
        self.progress = Progress(stream)
        self.metrics = MetricTotals()
        self.logs = LogSink(options.out / "logs", self.metrics)
        self.standin: BedrockStandin | None = None
        self.uploaded = 0
        self.upload_errors: list[tuple[str, str]] = []  # (key, why the upload failed)
        self.started = time.monotonic()
        self._lock = threading.Lock()

    # -- callbacks from the emulator

    def on_resize(self, outcome: Outcome) -> None:
        if isinstance(outcome, InvocationResult):
            self.logs.add(RESIZE_SERVICE, outcome)

    def on_caption(self, outcome: Outcome, event: dict[str, Any], verdict: BatchVerdict) -> None:
        if isinstance(outcome, InvocationResult):
            extra = {
                "records": len(event.get("Records", [])),
                "deleted": len(verdict.succeeded),
                "item_failures": 0 if verdict.whole_batch_failed else len(verdict.failed),
                "whole_batch_failed": verdict.whole_batch_failed,
            }
            self.logs.add(CAPTION_SERVICE, outcome, extra)

    # -- uploads

    def upload_all(self, s3: Any, ledger: Ledger, files: Sequence[tuple[str, Path]], bucket: str) -> None:
        def one(item: tuple[str, Path]) -> None:
            key, path = item
            data = path.read_bytes()
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            upload = Upload(key=key, path=path, size=len(data))
            try:
                response = s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
            except Exception as exc:  # reported as not final (lost) with the reason in summary.json
                with self._lock:
                    self.upload_errors.append((key, str(exc)))
                return
            upload.etag = str(response["ETag"]).strip('"')
            upload.uploaded_at = time.time()
            ledger.add_upload(upload)
            with self._lock:
                self.uploaded += 1

        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload") as pool:
            list(pool.map(one, files))


def _reset_moto(moto_url: str) -> None:
    """Start from empty backends: moto keeps its state per process, across server instances."""
    import urllib.request

    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback moto server
        response.read()


@contextmanager
def _servers(options: LocalOptions) -> Iterator[tuple[str, BedrockStandin | None]]:
    with ExitStack() as stack:
        moto = stack.enter_context(moto_server())
        _reset_moto(moto.url)
        standin: BedrockStandin | None = None
        if options.captioner == "standin":
            config = StandinConfig(
                rpm=options.rpm,
                window_s=options.quota_window_s,
                latency_s=options.standin_latency_s,
                faults=options.faults,
                timeout_hold_s=min(60.0, options.tuning.bedrock_read_timeout_s + 1.0),
                seed=options.standin_seed,
            )
            standin = stack.enter_context(BedrockStandin(config).serve())
        yield moto.url, standin


def run_local(options: LocalOptions, stream: TextIO | None = None) -> LocalResult:
    """Run the pipeline locally on ``options.images``; write everything to ``options.out``."""
    stream = stream or sys.stderr
    if options.captioner not in ("standin", "bedrock"):
        raise LocalRunError(f"--captioner must be standin or bedrock, got {options.captioner!r}")
    _check_handlers(options)
    if options.captioner == "bedrock":
        _check_bedrock_credentials()
    files = collect_files(options.images)
    _prepare_out(options.out)
    run = _Run(options, stream)
    try:
        with _servers(options) as (moto_url, standin):
            run.standin = standin
            return _run_on_servers(run, files, moto_url, standin)
    finally:
        run.logs.close()


def _run_on_servers(
    run: _Run, files: Sequence[tuple[str, Path]], moto_url: str, standin: BedrockStandin | None
) -> LocalResult:
    options = run.options
    make = _client_factory(moto_url)
    s3, sqs, ssm = make("s3"), make("sqs"), make("ssm")
    stack = provision(
        s3=s3,
        sqs=sqs,
        ssm=ssm,
        stack_name=options.stack_name,
        tunables=ssm_tunables(options),
        max_receive_count=options.tuning.max_receive_count,
        visibility_timeout_s=options.tuning.queue_visibility_timeout_s,
    )
    endpoints = endpoint_environment(moto_url, standin.url if standin else None)
    resize_spec, caption_spec = function_specs(options, stack, endpoints)
    resize_pool = WorkerPool(resize_spec, options.tuning.resize_concurrency)
    caption_pool = WorkerPool(caption_spec, options.concurrency)
    pump = S3EventPump(
        sqs=sqs,
        events_queue_url=stack.events_queue_url,
        failure_queue_url=stack.resize_failure_queue_url,
        function_arn=resize_spec.arn,
        invoke=resize_pool.invoke,
        concurrency=options.tuning.resize_concurrency,
        retry_delays_s=options.tuning.async_retry_delays_s,
        replays=options.replay_s3_events,
        on_result=run.on_resize,
    )
    source = SqsEventSource(
        sqs=sqs,
        queue_url=stack.queue_url,
        queue_arn=stack.queue_arn,
        region=caption_spec.region,
        invoke=caption_pool.invoke,
        batch_size=options.batch_size,
        max_concurrency=options.concurrency,
        duplicate_deliveries=options.duplicate_caption_messages,
        batching_window_s=options.batching_window_s,
        on_result=run.on_caption,
    )
    ledger = Ledger(s3, sqs, stack)
    pump.start()
    source.start()
    try:
        run.progress.say(
            f"imgcap local: {len(files)} file(s), captioner={options.captioner}, rpm={options.rpm:g}, "
            f"concurrency={options.concurrency}, batch size={options.batch_size}, "
            f"faults={options.faults.describe()}"
        )
        uploader = threading.Thread(
            target=run.upload_all, args=(s3, ledger, files, stack.bucket), name="uploader", daemon=True
        )
        uploader.start()
        timed_out = _wait_until_final(run, ledger, files, uploader, sqs, stack, pump, source)
        keep = options.keep_running and not timed_out
        if not keep:
            # let batches still running finish (none, normally: the queues were quiet)
            _stop_event_sources(pump, source, 0.5 if timed_out else options.tuning.caption_timeout_s + 2)
        ledger.refresh()
        summary = _summary(run, ledger, standin, s3, stack, timed_out, resize_pool, caption_pool, source)
        result = _write_outputs(run, ledger, summary, s3, stack)
        if keep:
            _keep_running(run, moto_url, standin, stack)
        return result
    finally:
        _stop_event_sources(pump, source, 1.0)
        resize_pool.close()
        caption_pool.close()


def _stop_event_sources(pump: S3EventPump, source: SqsEventSource, grace_s: float) -> None:
    pump.signal_stop()
    source.signal_stop()
    pump.stop()
    source.stop(timeout_s=grace_s)


def _progress_line(run: _Run, ledger: Ledger, total: int, states: Mapping[str, str | None]) -> str:
    counts = Counter(s for s in states.values() if s)
    failed = counts["rejected"] + counts["dead_lettered"] + counts["resize_failed"]
    elapsed = time.monotonic() - run.started
    rate = counts["captioned"] / elapsed * 60 if elapsed > 0 else 0.0
    line = (
        f"[{elapsed:6.1f}s] uploaded {run.uploaded}/{total} | resized {len(ledger.encoded)} | "
        f"captioned {counts['captioned']} | failed {failed} | {rate:.1f} captions/min"
    )
    if run.standin is not None:
        stats = run.standin.stats()
        line += f" | model calls {stats['requests']} (throttled {stats['throttled']})"
    return line


def _wait_until_final(
    run: _Run,
    ledger: Ledger,
    files: Sequence[tuple[str, Path]],
    uploader: threading.Thread,
    sqs: Any,
    stack: LocalStack,
    pump: S3EventPump,
    source: SqsEventSource,
) -> bool:
    """Poll until every upload is final and the queues are quiet; True when the timeout hit."""
    options = run.options
    deadline = run.started + options.timeout_s
    all_final_at: float | None = None
    while True:
        try:
            ledger.refresh()
        except Exception as exc:  # a transient loopback hiccup must not end the run
            run.progress.say(f"(refresh failed, retrying: {exc})")
        states = ledger.states()
        run.progress.show(_progress_line(run, ledger, len(files), states))
        uploads_done = not uploader.is_alive()
        if uploads_done and all(states.values()):
            now = time.monotonic()
            all_final_at = all_final_at or now
            quiet = (
                pump.in_flight == 0
                and source.in_flight == 0
                and queue_depth(sqs, stack.events_queue_url).total == 0
                and queue_depth(sqs, stack.queue_url).total == 0
            )
            if quiet or now - all_final_at >= options.settle_s:
                run.progress.show(_progress_line(run, ledger, len(files), states), force=True)
                run.progress.done()
                return False
        if time.monotonic() >= deadline:
            run.progress.show(_progress_line(run, ledger, len(files), states), force=True)
            waiting = sorted(k for k, s in states.items() if not s)
            listed = ", ".join(waiting[:NOT_FINAL_LISTED]) + (
                " ..." if len(waiting) > NOT_FINAL_LISTED else ""
            )
            run.progress.say(
                f"TIMEOUT after {options.timeout_s:g} s: {len(waiting)} upload(s) not final: {listed}"
            )
            return True
        time.sleep(1.0)


def _keep_running(run: _Run, moto_url: str, standin: BedrockStandin | None, stack: LocalStack) -> None:
    env = endpoint_environment(moto_url, standin.url if standin else None)
    lines = [f"export {k}={v}" for k, v in sorted(env.items())]
    run.progress.say(
        "Servers and functions are still running: new uploads are processed too (Ctrl-C to stop).\n"
        "In another shell:\n  " + "\n  ".join(lines) + f"\n  imgcap status --stack-name {stack.stack_name}"
    )
    import signal

    def stop_on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with suppress(ValueError):  # only the main thread may set handlers; elsewhere Ctrl-C alone works
        signal.signal(signal.SIGTERM, stop_on_term)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        run.progress.say("stopping")


def _busy_window(ledger: Ledger, standin: BedrockStandin | None, source: SqsEventSource) -> float | None:
    """Seconds from the first model call to the last caption written."""
    first = None
    if standin is not None:
        first = standin.stats().get("first_call_at")
    first = first or source.stats.first_invoke_at
    written = [_parse_iso(doc.get("captioned_at")) for _, doc in ledger.captions.values()]
    last = max((t for t in written if t is not None), default=None)
    if first is None or last is None or last <= first:
        return None
    return last - first


def _duplicate_paid_calls(standin: BedrockStandin, ledger: Ledger, s3: Any, bucket: str) -> int:
    """Paid (answered) calls beyond one per distinct upload whose encoded image had that content."""
    sources: Counter[str] = Counter()
    for upload in ledger.uploads.values():
        if upload.key not in ledger.encoded:
            continue
        try:
            text = s3.get_object(Bucket=bucket, Key=keys.encoded_key(upload.key))["Body"].read()
            sources[hashlib.sha256(base64.b64decode(text)).hexdigest()] += 1
        except (binascii.Error, ValueError, ClientError) as exc:  # gone or unreadable: not a source
            print(f"(could not read {upload.key}'s encoded image: {exc})", file=sys.stderr)
    paid: Mapping[str, int] = standin.stats()["paid_by_image"]
    return sum(max(0, n - max(1, sources.get(sha, 0))) for sha, n in paid.items())


def _summary(
    run: _Run,
    ledger: Ledger,
    standin: BedrockStandin | None,
    s3: Any,
    stack: LocalStack,
    timed_out: bool,
    resize_pool: WorkerPool,
    caption_pool: WorkerPool,
    source: SqsEventSource,
) -> dict[str, Any]:
    options = run.options
    states = ledger.states()
    counts = Counter(s for s in states.values() if s)
    not_final = sorted(k for k, s in states.items() if not s) + sorted(k for k, _ in run.upload_errors)
    ages: list[float] = []
    input_tokens = output_tokens = 0
    for upload in ledger.uploads.values():
        record = ledger.caption_for(upload)
        if record is None:
            continue
        usage = record.get("usage") or {}
        input_tokens += int(usage.get("input_tokens") or 0)
        output_tokens += int(usage.get("output_tokens") or 0)
        start, end = _parse_iso(record.get("uploaded_at")), _parse_iso(record.get("captioned_at"))
        if start is not None and end is not None:
            ages.append(max(0.0, end - start))
    busy = _busy_window(ledger, standin, source)
    metrics = run.metrics.snapshot()
    totals = metrics["totals"]
    rejected_by_code = Counter(
        str((ledger.error_for(u) or {}).get("error_code"))
        for u in ledger.uploads.values()
        if states[u.key] == "rejected"
    )
    stand = standin.stats() if standin else None
    summary: dict[str, Any] = {
        "images": len(ledger.uploads) + len(run.upload_errors),
        "captioned": counts["captioned"],
        "rejected": counts["rejected"],
        "dead_lettered": counts["dead_lettered"],
        "resize_failed": counts["resize_failed"],
        "lost": len(not_final),
        "model_calls": stand["requests"] if stand else int(totals.get(M.MODEL_CALLS, 0)),
        "paid_calls": stand["paid_calls"] if stand else None,
        "throttled": stand["throttled"] if stand else int(totals.get(M.MODEL_THROTTLES, 0)),
        "duplicate_paid_calls": _duplicate_paid_calls(standin, ledger, s3, stack.bucket) if standin else None,
        "duplicates_avoided": int(totals.get(M.DUPLICATES_AVOIDED, 0)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "elapsed_s": round(time.monotonic() - run.started, 2),
        "caption_busy_s": round(busy, 2) if busy else None,
        "captions_per_minute": round(counts["captioned"] / busy * 60, 2) if busy else None,
        "rpm": options.rpm,
        "pacing_rpm": options.pacing_rpm or options.rpm,
        "concurrency": options.concurrency,
        "batch_size": options.batch_size,
        "captioner": options.captioner,
        "faults": options.faults.describe(),
        "upload_to_caption_p50_s": _round(percentile(ages, 50)),
        "upload_to_caption_p95_s": _round(percentile(ages, 95)),
        "upload_to_caption_max_s": _round(max(ages) if ages else None),
        "timed_out": timed_out,
        "not_final": not_final,
        "upload_errors": [{"key": k, "error": e} for k, e in run.upload_errors],
        "rejected_by_code": dict(sorted(rejected_by_code.items())),
        "dead_letters": [
            {
                "key": key,
                "receive_count": facts["receive_count"],
                "last_problem": run.logs.last_problem.get(key, ""),
            }
            for key, facts in sorted(ledger.dead_letters.items())
        ],
        "resize_failures": [{"key": k, **v} for k, v in sorted(ledger.resize_failures.items())],
        "metrics": metrics,
        "functions": {
            RESIZE_SERVICE: resize_pool.stats.as_dict(resize_pool.spec.memory_mb),
            CAPTION_SERVICE: caption_pool.stats.as_dict(caption_pool.spec.memory_mb),
        },
        "event_source": {
            "batches": source.stats.batches,
            "records": source.stats.records,
            "deleted": source.stats.deleted,
            "item_failures": source.stats.item_failures,
            "whole_batch_failures": source.stats.whole_batch_failures,
            "duplicates_sent": source.stats.duplicates_sent,
        },
    }
    if stand is not None:
        stand = dict(stand)
        stand.pop("paid_by_image", None)
        summary["standin"] = stand
    return summary


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _write_outputs(
    run: _Run, ledger: Ledger, summary: dict[str, Any], s3: Any, stack: LocalStack
) -> LocalResult:
    out = run.options.out
    for prefix in (keys.CAPTIONS_PREFIX, keys.ERRORS_PREFIX):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = _safe_target(out, obj["Key"])
                if target is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read())
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    entries = [_report_entry(ledger, upload, summary) for upload in ledger.uploads.values()]
    report = write_report(
        out / "report.html",
        entries,
        title=f"imgcap local: {run.options.images}",
        summary={k: v for k, v in summary.items() if not isinstance(v, dict | list)},
    )
    run.progress.say(
        f"done: {summary['captioned']} captioned, {summary['rejected']} rejected, "
        f"{summary['dead_lettered']} dead-lettered, {summary['resize_failed']} resize failures, "
        f"{summary['lost']} lost; model calls {summary['model_calls']} (throttled {summary['throttled']}); "
        f"{summary['captions_per_minute']} captions/min over {summary['caption_busy_s']} s"
    )
    run.progress.say(f"summary: {(out / 'summary.json').resolve()}\nreport:  {report.resolve()}")
    return LocalResult(summary=summary, out=out, report=report)


def _report_entry(ledger: Ledger, upload: Upload, summary: Mapping[str, Any]) -> ReportEntry:
    caption = ledger.caption_for(upload)
    error = None if caption else ledger.error_for(upload)
    if caption is None and error is None:
        dead = ledger.dead_letters.get(upload.key)
        failed = ledger.resize_failures.get(upload.key)
        if dead is not None:
            reason = next((d["last_problem"] for d in summary["dead_letters"] if d["key"] == upload.key), "")
            error = {
                "stage": "caption",
                "error_code": "dead_lettered",
                "message": f"moved to the DLQ after {dead['receive_count']} receives. {reason}".strip(),
            }
        elif failed is not None:
            error = {
                "stage": "resize",
                "error_code": "resize_failed",
                "message": f"{failed.get('error_type')}: {failed.get('error_message')}",
            }
        else:
            error = {"stage": "-", "error_code": "lost", "message": "no final state before the run ended"}
    data: bytes | None = None
    if upload.size <= 40 * 1024 * 1024:
        try:
            data = upload.path.read_bytes()
        except OSError:
            data = None
    return ReportEntry(source_key=upload.key, image_bytes=data, caption=caption, error=error)
