"""``imgcap local --mode batch``: the backfill stage on loopback, with the handlers that ship to Lambda.

What ``infra/constructs/backfill_stage.py`` builds, here:

- ``provision_batch``: the ObjectCreated notification on ``batch/requests/`` (to a local queue the
  event pump drains into the submit function, as the Lambda trigger would), the submit function's
  failure queue, and the ``/<stack>/batch-limits`` parameter ``imgcap backfill`` reads;
- ``BatchRunner``: the submit function (async S3 trigger semantics: ``S3EventPump``), the collect
  function fed by the control plane's state-change events (the EventBridge rule) and by a scheduled
  poll (the EventBridge schedule), and the control plane itself (``batch_standin``), served by the
  Bedrock stand-in;
- ``start_backfill``: what ``imgcap backfill`` does (the same code: selection, estimate, request).

The run: uploads are resized as usual while the caption queue's event source waits; once every
upload is encoded (or final), the backfill starts, its submit claims the images for the job's
lifetime and creates the job; then the caption event source starts, so the online consumer
finishes the messages of images a job holds (``batch_held``) and captions whatever comes back to
the queue (records that failed inside a job, a failed job's records, fewer than a job's minimum).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from imgcap.local.batch_standin import BatchControlPlane, BatchFaults
from imgcap.local.emulator import Outcome, S3EventPump
from imgcap.local.functions import LOCAL_LOG_LEVEL, _spec
from imgcap.local.ledger import Ledger
from imgcap.local.options import LocalTuning
from imgcap.local.provision import LocalStack, add_queue_notifications, create_queue, drop_test_events
from imgcap.local.servers import LOCAL_ACCOUNT, LOCAL_REGION
from imgcap.local.standin import BedrockStandin
from imgcap.local.workers import FunctionSpec, WorkerPool
from imgcap.ops.backfill import job_documents
from imgcap.ops.status import queue_depth
from lambdas.shared import contract
from lambdas.shared.contract import BATCH_REQUESTS_PREFIX, BatchLimits

SUBMIT_SERVICE = "backfill-submit"
COLLECT_SERVICE = "backfill-collect"
BATCH_MEMORY_MB = 1024
BATCH_TIMEOUT_S = 600.0  # each use case keeps 60 s free at its end; the stack gives 15 minutes
POLL_S = 5.0  # the scheduled GetModelInvocationJob poll (the stack: every few minutes)
SETTLED_STATES = frozenset({"collected", "failed"})
WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class BatchStack:
    requests_events_url: str  # ObjectCreated under batch/requests/ -> the submit function
    submit_failure_url: str  # the submit function's async on-failure destination
    role_arn: str  # the Bedrock service role the stack creates (a name only, locally)
    limits: BatchLimits


def provision_batch(*, s3: Any, sqs: Any, ssm: Any, stack: LocalStack, limits: BatchLimits) -> BatchStack:
    events_url, events_arn = create_queue(sqs, f"{stack.stack_name}-batch-requests")
    failures_url, _ = create_queue(sqs, f"{stack.stack_name}-backfill-failures")
    add_queue_notifications(
        s3,
        stack.bucket,
        [
            {
                "Id": "backfill-on-request",
                "QueueArn": events_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": BATCH_REQUESTS_PREFIX}]}},
            }
        ],
    )
    for url in (stack.events_queue_url, events_url):
        drop_test_events(sqs, url)
    ssm.put_parameter(
        Name=f"{stack.ssm_prefix}/{contract.SSM_BATCH_LIMITS_PARAM}",
        Value=contract.batch_limits_json(limits),
        Type="String",
        Overwrite=True,
    )
    return BatchStack(
        requests_events_url=str(events_url),
        submit_failure_url=str(failures_url),
        role_arn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{stack.stack_name}-batch-inference",
        limits=limits,
    )


def batch_function_specs(
    stack: LocalStack, batch: BatchStack, runtime: Mapping[str, str], ssm_max_age_s: int
) -> tuple[FunctionSpec, FunctionSpec]:
    """The submit and collect functions with the environment the contract's builder gives them."""
    env = contract.backfill_environment(
        bucket=stack.bucket,
        queue_url=stack.queue_url,
        ssm_prefix=stack.ssm_prefix,
        ssm_max_age_s=ssm_max_age_s,
        log_level=LOCAL_LOG_LEVEL,
        role_arn=batch.role_arn,
        limits=batch.limits,
    )
    return tuple(  # type: ignore[return-value]
        _spec(f"{stack.stack_name}-{service}", handler, BATCH_MEMORY_MB, BATCH_TIMEOUT_S, runtime, env)
        for service, handler in (
            (SUBMIT_SERVICE, contract.BACKFILL_SUBMIT_HANDLER),
            (COLLECT_SERVICE, contract.BACKFILL_COLLECT_HANDLER),
        )
    )


def scheduled_event() -> dict[str, Any]:
    """What the EventBridge schedule sends the collect function (anything but a state change)."""
    return {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "region": LOCAL_REGION,
        "detail": {},
    }


class BatchRunner:
    """The backfill stage of a local run: submit, collect (events + poll) and the control plane."""

    def __init__(
        self,
        *,
        s3: Any,
        sqs: Any,
        batch: BatchStack,
        specs: tuple[FunctionSpec, FunctionSpec],
        standin: BedrockStandin,
        faults: BatchFaults,
        retry_delays_s: tuple[float, ...],
        on_result: Callable[[str, Outcome], None],
        poll_s: float = POLL_S,
    ) -> None:
        self._sqs = sqs
        self._s3 = s3
        self.batch = batch
        self._on_result = on_result
        self._poll_s = poll_s
        submit_spec, collect_spec = specs
        self._submit_pool = WorkerPool(submit_spec, 1)
        self._collect_pool = WorkerPool(collect_spec, 1)
        self.plane = BatchControlPlane(
            s3=s3,
            answer=standin.answer_record,
            on_event=self._deliver_event,
            faults=faults,
            min_records=batch.limits.min_records,
            region=LOCAL_REGION,
        )
        standin.control_plane = self.plane
        self._standin = standin
        self.pump = S3EventPump(
            sqs=sqs,
            events_queue_url=batch.requests_events_url,
            failure_queue_url=batch.submit_failure_url,
            function_arn=submit_spec.arn,
            invoke=self._invoke_submit,
            concurrency=1,
            retry_delays_s=retry_delays_s,
            on_result=lambda outcome: on_result(SUBMIT_SERVICE, outcome),
        )
        # Events are delivered one at a time (the rule's async invocations), polls on a timer.
        self._events = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-events")
        self._lock = threading.Lock()
        self._pending = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="batch-poll", daemon=True)
        self.polls = 0
        self.events_delivered = 0
        self.backfill_report: dict[str, Any] = {}  # what `imgcap backfill` reported
        self._handled: dict[str, str | None] = {}  # request key -> the part it handed on (None: last)

    def start(self) -> None:
        self.pump.start()
        self._poller.start()

    def _invoke_submit(self, event: dict[str, Any]) -> Outcome:
        outcome = self._submit_pool.invoke(event)
        response = getattr(outcome, "response", None)
        if getattr(outcome, "ok", False) and isinstance(response, dict):
            with self._lock:
                for result in response.get("results") or []:
                    if isinstance(result, dict) and result.get("request_key"):
                        self._handled[str(result["request_key"])] = result.get("next_request")
        return outcome

    # ------------------------------------------------------------------ collect invocations

    def _collect(self, event: dict[str, Any]) -> None:
        outcome = self._collect_pool.invoke(event)
        self._on_result(COLLECT_SERVICE, outcome)

    def _deliver_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._pending += 1
        self._events.submit(self._run_event, event)

    def _run_event(self, event: dict[str, Any]) -> None:
        try:
            self._collect(event)
            with self._lock:
                self.events_delivered += 1
        finally:
            with self._lock:
                self._pending -= 1

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                self._pending += 1
            try:
                self._collect(scheduled_event())
                self.polls += 1
            finally:
                with self._lock:
                    self._pending -= 1

    # ------------------------------------------------------------------ state

    @property
    def in_flight(self) -> int:
        """Submits running, events being delivered, polls running, jobs Bedrock has not ended."""
        with self._lock:
            pending = self._pending
        return self.pump.in_flight + pending + self.plane.running()

    def submits_done(self) -> bool:
        """The request's chain of parts has been submitted: from the first part, each handled part
        names the next until one names none; or a part failed for good (its event is on the
        failure queue: its images keep their online messages). Read from the submit function's
        results, not from queue counts, which can lag behind an S3 notification."""
        first = str(self.backfill_report.get("request_key") or "")
        if not first:
            return True  # nothing was started (no images, or they went to the online queue)
        with self._lock:
            key: str | None = first
            seen = 0
            while key is not None and key in self._handled and seen <= len(self._handled):
                key, seen = self._handled[key], seen + 1
        if key is None:
            return True
        return self.pump.stats.failed_events > 0 and self.pump.in_flight == 0

    def job_documents(self, bucket: str) -> list[dict[str, Any]]:
        """The job documents (``imgcap backfill --status`` reads the same), by job name."""
        return sorted(job_documents(self._s3, bucket), key=lambda d: str(d.get("job_name", "")))

    def quiet(self, bucket: str) -> bool:
        """Every job Bedrock ended has been collected, and nothing of the stage is running."""
        if self.in_flight or not self.submits_done():
            return False
        if queue_depth(self._sqs, self.batch.requests_events_url).total:
            return False
        return all(d.get("state") in SETTLED_STATES for d in self.job_documents(bucket))

    def summary(self, bucket: str, ledger: Ledger) -> dict[str, Any]:
        """summary.json's ``batch``: jobs, how their records ended, captions by mode, and the
        price of the batch captions at batch and at on-demand prices (the same tokens)."""
        jobs = [
            {
                "job_name": d.get("job_name"),
                "status": d.get("status"),
                "state": d.get("state"),
                "records": d.get("records"),
                "counts": d.get("counts", {}),
                "manifest": d.get("manifest", {}),
            }
            for d in self.job_documents(bucket)
        ]
        outcomes: dict[str, int] = {}
        for job in jobs:
            for name, n in (job["counts"] or {}).items():
                outcomes[name] = outcomes.get(name, 0) + int(n)
        failures = queue_depth(self._sqs, self.batch.submit_failure_url).total
        by_mode: dict[str, int] = {}
        batch_usd = on_demand_usd = 0.0
        for upload in ledger.uploads.values():
            record = ledger.caption_for(upload)
            if record is None:
                continue
            mode = str(record.get("mode") or "online")
            by_mode[mode] = by_mode.get(mode, 0) + 1
            usage = record.get("usage") or {}
            if mode == "batch" and isinstance(usage, dict):
                tokens = float(usage.get("input_tokens") or 0), float(usage.get("output_tokens") or 0)
                model = str(record.get("model_id") or "")
                batch_usd += contract.model_cost_usd(model, *tokens, batch=True) or 0.0
                on_demand_usd += contract.model_cost_usd(model, *tokens) or 0.0
        return {
            "backfill": self.backfill_report,
            "jobs": jobs,
            "records": outcomes,
            "captions_by_mode": dict(sorted(by_mode.items())),
            "batch_captions_usd": round(batch_usd, 6),
            "same_captions_on_demand_usd": round(on_demand_usd, 6),
            "price_ratio": round(batch_usd / on_demand_usd, 3) if on_demand_usd else None,
            "control_plane": self.plane.stats(),
            "state_change_events_delivered": self.events_delivered,
            "polls": self.polls,
            "submit_failures": failures,
            "limits": json.loads(contract.batch_limits_json(self.batch.limits)),
        }

    @staticmethod
    def done_line(figures: Mapping[str, Any]) -> str:
        jobs = figures["jobs"]
        statuses = ", ".join(f"{j['job_name']} {j['status']}" for j in jobs) or "none"
        records = ", ".join(f"{k} {v}" for k, v in sorted(figures["records"].items())) or "none"
        modes = ", ".join(f"{k} {v}" for k, v in figures["captions_by_mode"].items()) or "none"
        ratio = figures["price_ratio"]
        price = ""
        if ratio is not None:
            batch_usd, on_demand = figures["batch_captions_usd"], figures["same_captions_on_demand_usd"]
            price = f"; batch captions ${batch_usd:.4f} vs ${on_demand:.4f} on demand ({ratio:.2f}x)"
        return f"batch: jobs {statuses}; records {records}; captions by mode: {modes}{price}"

    def stop(self) -> None:
        self._stop.set()
        self.pump.signal_stop()
        self.plane.close()
        self.pump.stop()
        self._poller.join(timeout=60.0)  # a daemon thread: a hung poll does not hold the exit
        self._events.shutdown(wait=True, cancel_futures=True)
        self._standin.control_plane = None

    def close(self) -> None:
        """Stop everything (idempotent) and end the functions' execution environments."""
        if not self._stop.is_set():
            self.stop()
        self._submit_pool.close()
        self._collect_pool.close()


def prepare_batch(
    *,
    make: Callable[..., Any],
    stack: LocalStack,
    runtime: Mapping[str, str],
    standin: BedrockStandin,
    faults: BatchFaults,
    limits: BatchLimits,
    tuning: LocalTuning,
    on_result: Callable[[str, Outcome], None],
) -> BatchRunner:
    s3, sqs = make("s3"), make("sqs")
    batch = provision_batch(s3=s3, sqs=sqs, ssm=make("ssm"), stack=stack, limits=limits)
    return BatchRunner(
        s3=s3,
        sqs=sqs,
        batch=batch,
        specs=batch_function_specs(stack, batch, runtime, tuning.ssm_max_age_s),
        standin=standin,
        faults=faults,
        retry_delays_s=tuning.async_retry_delays_s,
        on_result=on_result,
    )


def resized(ledger: Ledger, pump: S3EventPump, sqs: Any, stack: LocalStack) -> bool:
    """Every upload has its encoded object or a final state, and the resize stage is idle."""
    states = ledger.states()
    if any(key not in ledger.encoded and not state for key, state in states.items()):
        return False
    return pump.in_flight == 0 and queue_depth(sqs, stack.events_queue_url).total == 0


def backfill_when_resized(
    say: Callable[[str], None],
    batch: BatchRunner,
    ledger: Ledger,
    uploads: threading.Thread,
    pump: S3EventPump,
    sqs: Any,
    stack: LocalStack,
    make: Callable[..., Any],
    deadline: float,
) -> None:
    """Wait for the uploads and their resizes, start the backfill, wait until it is submitted.

    At the deadline it returns without a backfill: the run's own wait then names what is not final.
    """
    say("mode batch: waiting for every upload to be resized before the backfill starts")
    while True:
        try:
            ledger.refresh()
            if not uploads.is_alive() and resized(ledger, pump, sqs, stack):
                break
        except Exception as exc:  # a transient loopback hiccup must not end the run
            say(f"(refresh failed, retrying: {exc})")
        if time.monotonic() >= deadline:
            say("mode batch: timed out waiting for the resizes; no backfill started")
            return
        time.sleep(WAIT_S)
    clients = {name: make(name) for name in ("s3", "sqs", "ssm")}
    batch.backfill_report = start_backfill(clients, stack, say)
    while not batch.submits_done() and time.monotonic() < deadline:
        time.sleep(WAIT_S)


def start_backfill(
    clients: Mapping[str, Any], stack: LocalStack, say: Callable[[str], None]
) -> dict[str, Any]:
    """``imgcap backfill`` (every image, not a dry run) against the loopback stack; its report."""
    from imgcap.ops.aws import AwsClients
    from imgcap.ops.backfill import run
    from imgcap.ops.context import OpsContext
    from imgcap.ops.stack import StackRef

    ref = StackRef(
        name=stack.stack_name,
        region=LOCAL_REGION,
        bucket=stack.bucket,
        queue_url=stack.queue_url,
        dlq_url=stack.dlq_url,
        resize_failure_queue_url=stack.resize_failure_queue_url,
        sources=("ssm",),
    )
    out = io.StringIO()
    ctx = OpsContext(clients=cast(AwsClients, _Clients(clients)), stack=ref, out=out, err=out)
    report = run(ctx, prefix="", dry_run=False)
    for line in out.getvalue().splitlines():
        say(f"backfill: {line}")
    return report


class _Clients:
    """The three clients ``imgcap backfill`` uses, bound to the loopback servers."""

    def __init__(self, clients: Mapping[str, Any]) -> None:
        self.s3 = clients["s3"]
        self.sqs = clients["sqs"]
        self.ssm = clients["ssm"]
