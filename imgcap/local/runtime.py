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
   for its ETag, the DLQ, or the resize failure destination), or the timeout names what did not
   (``not_final`` while work is still in flight; ``lost`` only when nothing is left that could
   finish it). With ``--mode batch`` the caption event source waits until every upload is
   resized and the backfill (``batch.py``) has submitted its jobs.
6. OUT gets ``captions/`` and ``errors/`` exactly as stored, ``summary.json``, ``report.html``
   and ``logs/`` (the functions' JSON logs, EMF metric blobs, one line per invocation).

This module is the orchestration only; the parts are in options.py, functions.py, loopback.py,
telemetry.py, ledger.py, summary.py and batch.py. About 490 lines, over the ~300 aimed at:
--keep-running (follow.py), the search stage's pool, --mode batch (the backfill stage starts
between the uploads and the caption event source) and the not_final accounting each added a step
here; each step is one small function.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from imgcap.local.batch import BatchRunner, backfill_when_resized, prepare_batch
from imgcap.local.emulator import BatchVerdict, Outcome, S3EventPump, SqsEventSource
from imgcap.local.follow import Follower
from imgcap.local.functions import (
    CAPTION_SERVICE,
    RESIZE_SERVICE,
    check_handlers,
    function_specs,
    runtime_environment,
    ssm_tunables,
)
from imgcap.local.ledger import Ledger, Uploader, collect_files
from imgcap.local.loopback import client_factory, keep_running, listing_client, servers
from imgcap.local.options import (
    LocalOptions,
    LocalResult,
    LocalRunError,
    LocalTuning,
    check_bedrock_credentials,
)
from imgcap.local.provision import LocalStack, provision
from imgcap.local.search import (
    IndexRunner,
    index_function_spec,
    provision_search,
    search_summary,
    vectors_server,
)
from imgcap.local.servers import endpoint_environment
from imgcap.local.standin import BedrockStandin
from imgcap.local.summary import build_summary, done_line, prepare_out, rate_text, rates, write_outputs
from imgcap.local.telemetry import LogSink, MetricTotals
from imgcap.local.workers import FunctionSpec, InvocationResult, WorkerPool
from imgcap.ops.status import queue_depth
from imgcap.progress import Progress
from lambdas.shared.contract import oversized_fleet_note

NOT_FINAL_LISTED = 20  # how many unfinished keys the timeout message names
POLL_S = 1.0


class _Run:
    """State of one local run (kept together so the steps stay small)."""

    def __init__(self, options: LocalOptions, stream: TextIO) -> None:
        self.options = options
        self.stream = stream
        self.progress: Progress | None = None  # while uploads are being followed
        self.metrics = MetricTotals()
        self.logs = LogSink(options.out / "logs", self.metrics)
        self.standin: BedrockStandin | None = None
        self.vectors_url: str | None = None  # the S3 Vectors stand-in (search on)
        self.index: IndexRunner | None = None
        self.started = time.monotonic()
        self.waited_s: float | None = None  # start to the live line's last update (the rates' window)
        self.on_summary: Callable[[dict[str, Any]], None] | None = None  # e.g. --json printing it

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.write(text)  # keeps a bar being drawn intact
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def on_resize(self, outcome: Outcome) -> None:
        if isinstance(outcome, InvocationResult):
            self.logs.add(RESIZE_SERVICE, outcome)

    def on_batch(self, service: str, outcome: Outcome) -> None:
        if isinstance(outcome, InvocationResult):
            self.logs.add(service, outcome)

    def on_caption(self, outcome: Outcome, event: dict[str, Any], verdict: BatchVerdict) -> None:
        if isinstance(outcome, InvocationResult):
            extra = {
                "records": len(event.get("Records", [])),
                "deleted": len(verdict.succeeded),
                "item_failures": 0 if verdict.whole_batch_failed else len(verdict.failed),
                "whole_batch_failed": verdict.whole_batch_failed,
            }
            self.logs.add(CAPTION_SERVICE, outcome, extra)


def _latency_note(options: LocalOptions) -> str:
    if options.captioner != "standin":
        return ""
    return f" (latency {options.standin_latency.describe()})"


def run_local(
    options: LocalOptions,
    stream: TextIO | None = None,
    on_summary: Callable[[dict[str, Any]], None] | None = None,
) -> LocalResult:
    """Run the pipeline locally on ``options.images``; write everything to ``options.out``."""
    stream = stream or sys.stderr
    if options.captioner not in ("standin", "bedrock"):
        raise LocalRunError(f"--captioner must be standin or bedrock, got {options.captioner!r}")
    check_handlers(options)
    if options.captioner == "bedrock":
        check_bedrock_credentials()
    files = collect_files(options.images)
    options = options.resolved(len(files))
    prepare_out(options.out)
    run = _Run(options, stream)
    run.on_summary = on_summary
    try:
        with servers(options) as (moto_url, standin), vectors_server(options.search) as vectors_url:
            run.standin = standin
            run.vectors_url = vectors_url
            return _run_on_servers(run, files, moto_url, standin)
    finally:
        run.logs.close()


def _run_on_servers(
    run: _Run, files: Sequence[tuple[str, Path]], moto_url: str, standin: BedrockStandin | None
) -> LocalResult:
    options, tuning = run.options, run.options.effective_tuning
    make = client_factory(moto_url)
    s3, sqs, ssm = make("s3"), make("sqs"), make("ssm")
    stack = provision(
        s3=s3,
        sqs=sqs,
        ssm=ssm,
        stack_name=options.stack_name,
        tunables=ssm_tunables(options),
        max_receive_count=tuning.max_receive_count,
        visibility_timeout_s=tuning.queue_visibility_timeout_s,
    )
    endpoints = {**endpoint_environment(moto_url, standin.url if standin else None), **_vectors_env(run)}
    resize_spec, caption_spec = function_specs(options, stack, endpoints)
    _prepare_search(run, stack, endpoints, make)
    batch = _prepare_batch(run, stack, endpoints, make, standin)  # --mode batch: the backfill stage
    resize_pool = WorkerPool(resize_spec, tuning.resize_concurrency)
    caption_pool = WorkerPool(caption_spec, options.workers)
    pump, source = _event_sources(run, stack, sqs, (resize_spec, caption_spec), resize_pool, caption_pool)
    ledger = Ledger(listing_client(moto_url), sqs, stack)
    uploader = Uploader(ledger)
    _start(run, pump, source, batch)
    try:
        _say_start(run, len(files), batch is not None)
        thread = threading.Thread(
            target=uploader.upload_all, args=(s3, files, stack.bucket), name="uploader", daemon=True
        )
        thread.start()
        if batch is not None:
            backfill_when_resized(
                run.say, batch, ledger, thread, pump, sqs, stack, make, run.started + options.timeout_s
            )
            source.start()
        timed_out = _wait_until_final(
            run, ledger, uploader, len(files), thread, sqs, stack, pump, source, batch
        )
        # Measured before the event sources stop (a stop drops the resize retries still waiting).
        in_flight = _work_in_flight(ledger, pump, source, thread) + (batch.in_flight if batch else 0)
        keep = options.keep_running and not timed_out
        if not keep:
            # let batches still running finish (none, normally: the queues were quiet)
            _stop_event_sources(pump, source, 0.5 if timed_out else tuning.caption_timeout_s + 2)
        ledger.refresh()
        summary = build_summary(
            options=options,
            ledger=ledger,
            upload_errors=uploader.errors,
            metrics=run.metrics,
            last_problem=run.logs.last_problem,
            standin=standin,
            s3=s3,
            bucket=stack.bucket,
            elapsed_s=time.monotonic() - run.started,
            waited_s=run.waited_s,
            timed_out=timed_out,
            resize_pool=resize_pool,
            caption_pool=caption_pool,
            source=source,
            work_in_flight=in_flight,
            never_uploaded=_never_uploaded(files, ledger, uploader),
        )
        _add_stage_summaries(run, summary, make, sqs, batch, stack, ledger)
        report = write_outputs(options.out, options.images, ledger, summary, s3, stack.bucket)
        run.say(done_line(summary))
        _say_search(run, summary)
        run.say(f"summary: {(options.out / 'summary.json').resolve()}\nreport:  {report.resolve()}")
        if run.on_summary is not None:
            run.on_summary(summary)
        if keep:
            _follow(run, ledger, s3, stack, moto_url, standin)
        return LocalResult(summary=summary, out=options.out, report=report)
    finally:
        _stop_event_sources(pump, source, 1.0)
        if batch is not None:
            batch.close()
        if run.index is not None:
            run.index.stop(2.0)
        resize_pool.close()
        caption_pool.close()


def _start(run: _Run, pump: S3EventPump, source: SqsEventSource, batch: BatchRunner | None) -> None:
    pump.start()
    if batch is None:
        source.start()
    else:
        batch.start()  # the caption event source starts once the backfill has been submitted
    if run.index is not None:
        run.index.start()


def _follow(
    run: _Run, ledger: Ledger, s3: Any, stack: LocalStack, moto_url: str, standin: BedrockStandin | None
) -> None:
    """--keep-running: follow new uploads until Ctrl-C."""
    follower = Follower(ledger, s3, stack.bucket, run.stream)
    try:
        keep_running(run.say, moto_url, standin, stack, tick=follower.tick, extra_env=_vectors_env(run))
    finally:
        follower.close()


def _add_stage_summaries(
    run: _Run,
    summary: dict[str, Any],
    make: Any,
    sqs: Any,
    batch: BatchRunner | None,
    stack: LocalStack,
    ledger: Ledger,
) -> None:
    """The optional stages' parts of summary.json: search, and the backfill (--mode batch)."""
    _add_search_summary(run, summary, make, sqs)
    summary["mode"] = run.options.mode
    if batch is not None:
        summary["batch"] = batch.summary(stack.bucket, ledger)
        run.say(batch.done_line(summary["batch"]))


def _work_in_flight(
    ledger: Ledger, pump: S3EventPump, source: SqsEventSource, thread: threading.Thread
) -> int:
    """Invocations running, messages queued, and 1 while files are still being uploaded."""
    try:
        queued = ledger.queued_messages()
    except Exception:  # the queues cannot be asked: count the work as still there, never as lost
        queued = 1
    return pump.in_flight + source.in_flight + queued + (1 if thread.is_alive() else 0)


def _never_uploaded(files: Sequence[tuple[str, Path]], ledger: Ledger, uploader: Uploader) -> list[str]:
    """Files the uploader had not stored (nor failed to store) when the run stopped waiting."""
    failed = {k for k, _ in uploader.errors}
    return [k for k, _ in files if k not in ledger.uploads and k not in failed]


def _event_sources(
    run: _Run,
    stack: LocalStack,
    sqs: Any,
    specs: tuple[FunctionSpec, FunctionSpec],
    resize_pool: WorkerPool,
    caption_pool: WorkerPool,
) -> tuple[S3EventPump, SqsEventSource]:
    """The resize function's S3 trigger and the caption queue's event source mapping."""
    options, tuning = run.options, run.options.effective_tuning
    resize_spec, caption_spec = specs
    pump = S3EventPump(
        sqs=sqs,
        events_queue_url=stack.events_queue_url,
        failure_queue_url=stack.resize_failure_queue_url,
        function_arn=resize_spec.arn,
        invoke=resize_pool.invoke,
        concurrency=tuning.resize_concurrency,
        retry_delays_s=tuning.async_retry_delays_s,
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
        max_concurrency=options.workers,
        duplicate_deliveries=options.duplicate_caption_messages,
        batching_window_s=options.batching_window_s,
        on_result=run.on_caption,
    )
    return pump, source


def _say_start(run: _Run, files: int, batch: bool) -> None:
    options = run.options
    run.say(
        f"imgcap local: {files} file(s), captioner={options.captioner}{_latency_note(options)}, "
        f"pacing_rpm={options.pacing_rpm or options.rpm:g}, "
        + (f"standin_quota_rpm={options.rpm:g}, " if options.captioner == "standin" else "")
        + f"concurrency={options.workers}, batch size={options.batch_size}, "
        f"faults={options.faults.describe()}"
        + (f", mode=batch, batch faults={options.batch_faults.describe()}" if batch else "")
    )
    note = oversized_fleet_note(options.pacing_rpm or options.rpm, options.workers)
    if note:
        run.say(f"warning: {note.replace('maxConcurrency', '--concurrency')}")


def _prepare_batch(
    run: _Run, stack: LocalStack, endpoints: dict[str, str], make: Any, standin: BedrockStandin | None
) -> BatchRunner | None:
    """The backfill stage (--mode batch): request notification, limits, functions, control plane."""
    if run.options.mode != "batch":
        return None
    if standin is None:
        raise LocalRunError("--mode batch needs --captioner standin (its batch control plane)")
    options = run.options
    return prepare_batch(
        make=make,
        stack=stack,
        runtime=runtime_environment(options, endpoints),
        standin=standin,
        faults=options.batch_faults,
        limits=options.batch_limits,
        tuning=options.effective_tuning,
        on_result=run.on_batch,
    )


def _prepare_search(run: _Run, stack: LocalStack, endpoints: dict[str, str], make: Any) -> None:
    """The search stage (search on): index queue, notifications, vector index, index function."""
    if not run.vectors_url:
        return
    s3, sqs, ssm = make("s3"), make("sqs"), make("ssm")
    vectors = make("s3vectors", run.vectors_url)
    search = provision_search(s3=s3, sqs=sqs, ssm=ssm, s3vectors=vectors, stack=stack)
    spec = index_function_spec(stack, search, runtime_environment(run.options, endpoints))
    run.index = IndexRunner(
        sqs=sqs, search=search, spec=spec, on_result=lambda o, e, v: run.logs.add("index", o)
    )


def _vectors_env(run: _Run) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL_S3VECTORS": run.vectors_url} if run.vectors_url else {}


def _add_search_summary(run: _Run, summary: dict[str, Any], make: Any, sqs: Any) -> None:
    if run.index is not None:
        summary["search"] = search_summary(make("s3vectors", run.vectors_url), sqs, run.index.search)


def _say_search(run: _Run, summary: dict[str, Any]) -> None:
    found = summary.get("search")
    if found:
        run.say(f"search: {found['vectors']} vector(s) in {found['index']} ({found['embedding_model']})")


def _index_quiet(index: IndexRunner, sqs: Any) -> bool:
    """Every caption indexed (or in the index DLQ): nothing queued or running in the index stage."""
    return index.in_flight == 0 and queue_depth(sqs, index.search.queue_url).total == 0


def _stop_event_sources(pump: S3EventPump, source: SqsEventSource, grace_s: float) -> None:
    pump.signal_stop()
    source.signal_stop()
    pump.stop()
    source.stop(timeout_s=grace_s)


def _live_fields(
    run: _Run, ledger: Ledger, uploader: Uploader, total: int, counts: Counter[str]
) -> list[str]:
    """The live line's fields, most important first (a terminal shows as many as fit)."""
    run.waited_s = time.monotonic() - run.started  # the final line's rates use the last one
    rate = rates(ledger.caption_times(), run.waited_s)
    fields = [
        f"captioned {counts['captioned']}",
        f"errors {counts['rejected'] + counts['dead_lettered'] + counts['resize_failed']}",
        rate_text(rate),
        f"uploaded {uploader.uploaded}/{total}",
        f"resized {len(ledger.encoded)}",
    ]
    if run.standin is not None:
        stats = run.standin.stats()
        fields.append(f"model calls {stats['requests']} (throttled {stats['throttled']})")
    return fields


def _show(progress: Progress, run: _Run, ledger: Ledger, uploader: Uploader, total: int) -> list[str]:
    """Update the live line; the keys that are not final yet."""
    states = ledger.states()
    counts = Counter(s for s in states.values() if s)
    progress.update_to(sum(counts.values()), _live_fields(run, ledger, uploader, total, counts))
    return sorted(k for k, s in states.items() if not s)


def poll_interval_s(uploads: int) -> float:
    """How often the ledger re-lists the bucket: each refresh lists every key of three prefixes,
    so a large run polls less often (1 s up to 100 uploads, at most 5 s) and the polling stays a
    small share of the runtime's CPU instead of growing with the square of the run."""
    return min(5.0, max(POLL_S, uploads / 100))


def _wait_until_final(
    run: _Run,
    ledger: Ledger,
    uploader: Uploader,
    total: int,
    thread: threading.Thread,
    sqs: Any,
    stack: LocalStack,
    pump: S3EventPump,
    source: SqsEventSource,
    batch: BatchRunner | None = None,
) -> bool:
    """Poll until every upload is final and the queues are quiet; True when the timeout hit."""
    options = run.options
    deadline = run.started + options.timeout_s
    all_final_at: float | None = None
    with Progress("local", total=total, stream=run.stream, unit="img") as progress:
        run.progress = progress
        try:
            while True:
                try:
                    ledger.refresh()
                except Exception as exc:  # a transient loopback hiccup must not end the run
                    run.say(f"(refresh failed, retrying: {exc})")
                waiting = _show(progress, run, ledger, uploader, total)
                if not thread.is_alive() and not waiting:
                    now = time.monotonic()
                    all_final_at = all_final_at or now
                    quiet = (
                        pump.in_flight == 0
                        and source.in_flight == 0
                        and queue_depth(sqs, stack.events_queue_url).total == 0
                        and queue_depth(sqs, stack.queue_url).total == 0
                        and (run.index is None or _index_quiet(run.index, sqs))
                        and (batch is None or batch.quiet(stack.bucket))
                    )
                    if quiet or now - all_final_at >= options.settle_s:
                        return False
                if time.monotonic() >= deadline:
                    break
                time.sleep(poll_interval_s(total))
        finally:
            run.progress = None
    listed = ", ".join(waiting[:NOT_FINAL_LISTED]) + (" ..." if len(waiting) > NOT_FINAL_LISTED else "")
    run.say(f"TIMEOUT after {options.timeout_s:g} s: {len(waiting)} upload(s) not final: {listed}")
    return True


# Re-exported for callers that import them from here (tests/e2e, bench/bench_quota.py); the
# definitions live in options.py and functions.py.
__all__ = [
    "LocalOptions",
    "LocalResult",
    "LocalRunError",
    "LocalTuning",
    "function_specs",
    "run_local",
    "ssm_tunables",
]
