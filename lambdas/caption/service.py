"""Caption one queued image: the stage's use case over injected adapters (no event shapes here).

For one delivery of an ``ImageMessage``:

1. parse it; a body that is not a message is an ``invalid_message`` error record when it names
   an image, and a batch item failure (so it ends in the DLQ) when it names none;
2. take the claim ``claims/<path>.<etag>.json`` (``claims.Claims``). Held by anyone else and
   younger than the lease -> a duplicate if the caption for this ETag is already there; held by
   a backfill job that Bedrock has accepted -> ``batch_held``, finished: the job's collector ends
   the image (a caption, an error record, or a new message to this queue); else a batch item
   failure with a backed-off visibility (next time it finds the caption). Older than the lease
   (its holder's invocation has ended) -> taken over;
3. with the claim held, check for a caption (or a caption-stage error record) for this ETag ->
   duplicate, no model call: the one check that cannot race, because a writer stores its caption
   before releasing. The caption key's state read here is also the snapshot the caption is
   later written conditionally on (``versions.publish``);
4. read ``base64_images/<path>.txt``: gone -> ``encoded_missing``; made for another ETag -> a newer
   upload superseded this message (its own message will be captioned); not base64 PNG ->
   ``encoded_invalid``;
5. wait for the pacer, unless the wait plus one expected call would not fit in the invocation's
   remaining time: then this and every later message of the batch go back to the queue, hidden
   until the pacer will have a slot (so waiting for a slow quota never uses up receives);
6. call the model once, bounded by the time left. Throttles, transient faults and configuration
   faults (access, model id, refused parameters) -> batch item failure with a backed-off, jittered
   visibility (no sleeping); faults about the image and refusals -> ``errors/<path>.json``;
   success -> ``captions/<path>.json``. Both are published only while this version is still the
   source's current one (``versions.publish``); a stale version ends as ``superseded``. The
   prompt (and format) is the image's folder rule, if any (``prompts``); a structured answer that
   does not validate is a model error: retried until ``model_error_max_attempts``, then
   ``model_output_invalid``. With ``writeObjectTags``, the tags then go onto the upload (``tagging``);
7. release the claim, conditionally on our own put.

The claim is released on every path that gets past step 2, retryable failures included: a
throttled call cost nothing, and whichever delivery of the image comes back first may then make
the call; the caption check under the claim keeps it to one successful paid call. After an
``errors/`` record for a model failure, duplicates of that ETag make no call either; to try an
image again, delete its error record and re-send its message (or upload it again).

Over 500 lines: the one use case and its outcomes read top to bottom in one place; the pieces
that stand alone already live beside it (claims, pacing, capacity, backoff, model, structured).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from lambdas.caption import model, prompts
from lambdas.caption.backoff import MAX_VISIBILITY_S, requeue_soon, visibility_backoff
from lambdas.caption.capacity import MIN_SAMPLES, Assessment, assess
from lambdas.caption.claims import Claims
from lambdas.caption.model import CallBudgetTooSmall, ModelCallError, RetryKind
from lambdas.caption.pacing import CallTimeEstimate, Pacer
from lambdas.caption.structured import InvalidStructuredOutput
from lambdas.caption.tagging import ObjectTagger
from lambdas.shared import keys
from lambdas.shared.contract import CAPTION_SAFETY_MARGIN_S
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.observability import logger
from lambdas.shared.records import ImageMessage, InvalidMessage, error_record, utc_now_iso
from lambdas.shared.settings import CaptionSettings
from lambdas.shared.storage import SOURCE_ETAG_META, STAGE_META, ObjectMissing, Queue, Store
from lambdas.shared.versions import (
    Published,
    Snapshot,
    Version,
    is_current,
    publish,
    publish_error_record,
    version_of,
)

STAGE = "caption"
# Kept free at the end of an invocation for the caption write, the claim release and the response.
SAFETY_MARGIN_S = CAPTION_SAFETY_MARGIN_S
# A configuration fault is noted in ``health/caption.json`` at most this often per environment.
HEALTH_NOTE_INTERVAL_S = 60.0


class Outcome(StrEnum):
    CAPTIONED = "captioned"
    DUPLICATE = "duplicate"  # a caption (or a final error) for this ETag exists: no model call
    SUPERSEDED = "superseded"  # the encoded object belongs to a newer upload
    REJECTED = "rejected"  # errors/ record written, message finished
    DEFERRED = "deferred"  # retryable model failure: back to the queue, backed off
    BUSY = "busy"  # another delivery holds the claim: back to the queue, backed off
    BATCH_HELD = "batch_held"  # a submitted backfill job holds the image: its collector settles it
    STOPPED = "stopped"  # no time left in this invocation: back to the queue soon
    UNATTRIBUTABLE = "unattributable"  # not a message and names no image: fails until the DLQ


FAILED_OUTCOMES = frozenset({Outcome.DEFERRED, Outcome.BUSY, Outcome.STOPPED, Outcome.UNATTRIBUTABLE})


class ModelCaller(Protocol):
    def __call__(self, request: dict[str, Any], budget_s: float) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One SQS delivery, reduced to what the use case needs."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    queue: Queue | None  # for ChangeMessageVisibility; None if the source queue is unknown


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    source_key: str | None = None
    source_etag: str | None = None
    error_code: str | None = None
    retry: RetryKind | None = None
    visibility_s: int | None = None  # the visibility timeout set for a failed delivery
    detail: str = ""
    model_called: bool = False
    latency_ms: float | None = None  # our own measure of the model call
    input_tokens: int = 0
    output_tokens: int = 0
    pacing_wait_ms: float | None = None
    age_s: float | None = None  # upload -> caption written
    truncated: bool = False  # the caption stopped at maxTokens
    output_invalid: bool = False  # a structured answer that did not validate (retried or recorded)
    object_tags: bool | None = None  # True written, False failed, None not asked for

    @property
    def failed(self) -> bool:
        """True when the delivery must be reported as a batch item failure."""
        return self.outcome in FAILED_OUTCOMES


class CaptionWorker:
    """What lives for the whole execution environment: adapters, the pacer, the call-time estimate."""

    def __init__(
        self,
        *,
        store: Store,
        call_model: ModelCaller,
        pacer: Pacer,
        call_time: CallTimeEstimate | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        safety_margin_s: float = SAFETY_MARGIN_S,
        object_tags: ObjectTagger | None = None,
    ) -> None:
        self.store = store
        self.call_model = call_model
        self.pacer = pacer
        self.call_time = call_time or CallTimeEstimate()
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.rand = rand
        self.safety_margin_s = safety_margin_s
        self.object_tags = object_tags  # set only when the stack enables writeObjectTags
        self._health_noted_at: dict[str, float] = {}  # health document key -> when last written

    def _note_health(self, key: str, build: Callable[[float], dict[str, Any]]) -> None:
        """Write ``health/<key>`` for ``imgcap status``: best effort, at most once an interval per
        document and environment (``build`` gets the wall-clock time)."""
        now = self.wall()
        last = self._health_noted_at.get(key)
        if last is not None and now - last < HEALTH_NOTE_INTERVAL_S:
            return
        self._health_noted_at[key] = now
        try:
            self.store.put_json(key, build(now))
        except Exception:
            logger.warning(f"could not write the health record {key}", exc_info=True)

    def note_configuration_fault(self, code: str, message: str, model_id: str) -> None:
        """Record the latest configuration fault for ``imgcap status`` (best effort, rate-limited).

        Every image it hit waits in the queue (then the DLQ); this one document is what tells the
        operator why, in words, without reading logs.
        """
        self._note_health(
            keys.CAPTION_HEALTH_KEY,
            lambda now: {
                "kind": "configuration_fault",
                "error_type": code,
                "message": message,
                "model_id": model_id,
                "occurred_at": utc_now_iso(),
                "epoch": now,
            },
        )

    def note_capacity(self, assessment: Assessment, model_id: str) -> None:
        """Record a capacity shortfall for ``imgcap status`` (best effort, rate-limited)."""
        self._note_health(
            keys.CAPACITY_HEALTH_KEY,
            lambda now: assessment.document(epoch=now, occurred_at=utc_now_iso(), model_id=model_id),
        )

    def begin(
        self, settings: CaptionSettings, remaining_ms: Callable[[], int], *, backlog: bool = False
    ) -> Batch:
        """Start one invocation: apply the current pacing settings (state kept) and its deadline.

        ``backlog``: work was waiting when this batch was delivered (``capacity.has_backlog``).
        """
        self.pacer.configure(settings.pacing.worker_rpm, settings.pacing.worker_tpm)
        return Batch(self, settings, remaining_ms, backlog=backlog)


class Batch:
    """One invocation's records, processed in order; once out of time, every later one is handed back."""

    def __init__(
        self,
        worker: CaptionWorker,
        settings: CaptionSettings,
        remaining_ms: Callable[[], int],
        *,
        backlog: bool = False,
    ) -> None:
        self._w = worker
        self._s = settings
        self._remaining_ms = remaining_ms
        self._backlog = backlog
        self.stopped = False
        self._handed_back = 0
        self._claims = Claims(worker.store, lease_s=settings.claim_lease_s, wall=worker.wall)

    def capacity(self) -> Assessment | None:
        """Whether the fleet can reach its target rate, once enough calls have been timed."""
        if self._w.call_time.samples < MIN_SAMPLES:
            return None
        pacing = self._s.pacing
        return assess(
            requests_per_minute=pacing.requests_per_minute,
            tokens_per_minute=pacing.tokens_per_minute,
            tokens_per_call=model.reserved_tokens(self._s.model),
            concurrency=pacing.max_concurrency,
            call_s=self._w.call_time.average_s,
            backlog=self._backlog,
        )

    # ------------------------------------------------------------------ the use case

    def process(self, delivery: Delivery) -> Result:
        if self.stopped or self._time_for_call() < 0:
            return self._stop(
                delivery,
                None,
                "not enough time left in this invocation for a model call",
                hide_s=self._w.pacer.wait_time(model.reserved_tokens(self._s.model)),
            )
        try:
            message = self._parse(delivery.body)
        except InvalidMessage as exc:
            return self._invalid(delivery, str(exc))

        # The claim comes first and the caption check right after it: that one check, under the
        # claim, is both the duplicate shortcut and the check that cannot race. A separate check
        # before the claim (this stage made one until issue 13) only repeated the same HEAD of the
        # caption key on every image: a duplicate still ends before the encoded object is read or
        # a call is made, and one whose claim is held still finds its caption (below).
        claim = self._claims.take(message.source_key, message.source_etag, delivery.message_id)
        if claim is None:
            # Held by another delivery or a batch job: if its caption is already there, this
            # delivery is a finished duplicate, not one to bring back.
            if self._has_caption(message):
                return self._done(message, Outcome.DUPLICATE, "a caption for this ETag exists")
            job = self._submitted_job_holding(message)
            if job is not None:
                return self._done(
                    message,
                    Outcome.BATCH_HELD,
                    f"batch job {job} holds this image: its collector writes the caption or the error "
                    "record, or sends the image back to this queue",
                )
            visibility = self._backoff(delivery)
            self._change_visibility(delivery, visibility)
            return self._done(
                message,
                Outcome.BUSY,
                "another delivery of this image is being captioned",
                visibility_s=visibility,
            )
        try:
            return self._claimed(message, delivery)
        finally:
            self._claims.release(claim)

    def _claimed(self, message: ImageMessage, delivery: Delivery) -> Result:
        """With the claim held: the duplicate checks, then the encoded image, then the call."""
        snapshot = self._w.store.head(keys.caption_key(message.source_key))
        if version_of(snapshot) == message.source_etag:
            return self._done(message, Outcome.DUPLICATE, "a caption for this ETag exists")
        if self._has_final_error(message):
            return self._done(message, Outcome.DUPLICATE, "a caption-stage error record for this ETag exists")

        try:
            encoded, info = self._w.store.get_bytes(message.encoded_key)
        except ObjectMissing:
            return self._reject(
                message, ErrorCode.ENCODED_MISSING, "the encoded image object does not exist", "NoSuchKey"
            )
        found_etag = info.metadata.get(SOURCE_ETAG_META)
        if found_etag != message.source_etag:
            return self._done(
                message,
                Outcome.SUPERSEDED,
                f"the encoded image belongs to source ETag {found_etag!r}, not this message's",
            )
        try:
            png = model.decode_png(encoded)
        except Rejection as rejection:
            return self._reject(message, rejection.code, rejection.message, rejection.error_type)
        del encoded
        return self._caption(message, delivery, png, Snapshot(snapshot))

    def _submitted_job_holding(self, message: ImageMessage) -> str | None:
        """A backfill job that holds this version and has been created in Bedrock (its document
        says running or collecting, with a job ARN): the message can finish, because the job's
        collector ends the image as a caption or an error record, or sends it back to this queue.
        A hold whose job is not created yet (or failed to be) keeps the message: backed off."""
        job = self._claims.batch_job_holding(message.source_key, message.source_etag)
        if job is None:
            return None
        try:
            raw, _ = self._w.store.get_bytes(keys.batch_job_document_key(job))
            document = json.loads(raw)
        except (ObjectMissing, ValueError):
            return None
        if not isinstance(document, dict) or not document.get("job_arn"):
            return None
        return job if document.get("state") in {"running", "collecting"} else None

    def _caption(self, message: ImageMessage, delivery: Delivery, png: bytes, snapshot: Snapshot) -> Result:
        """Pacing, the one paid call, the record (``snapshot``: the caption key read under the claim)."""
        w = self._w
        spec = prompts.spec_for_image(self._s.model, self._s.prompts, message.source_key)
        reserved = model.reserved_tokens(spec)
        allowance = self._time_for_call()
        wait = w.pacer.reserve(reserved, max_wait_s=allowance) if allowance >= 0 else None
        if wait is None:
            reason = "the pacing wait plus one call would not fit in the time left"
            return self._stop(delivery, message, reason, hide_s=w.pacer.wait_time(reserved))
        if wait > 0:
            w.sleep(wait)
        waited_ms = wait * 1000.0

        request = model.converse_request(spec, png)
        started = w.clock()
        try:
            response = w.call_model(request, self._remaining_ms() / 1000.0 - w.safety_margin_s)
        except CallBudgetTooSmall as exc:
            w.pacer.settle(reserved, 0)
            return self._stop(delivery, message, str(exc))
        except ModelCallError as exc:
            return self._call_failed(message, delivery, exc, (w.clock() - started) * 1000.0, waited_ms)
        elapsed_s = w.clock() - started
        w.call_time.observe(elapsed_s)
        input_tokens, output_tokens, total_tokens = model.usage_of(response)
        if total_tokens > 0:
            w.pacer.settle(reserved, total_tokens)
        called = {
            "model_called": True,
            "latency_ms": elapsed_s * 1000.0,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "pacing_wait_ms": waited_ms,
        }
        try:
            answer = model.parse_response(response, structured_output=spec.structured)
        except Rejection as rejection:
            return self._reject(message, rejection.code, rejection.message, rejection.error_type, **called)
        except InvalidStructuredOutput as invalid:
            return self._output_invalid(message, delivery, invalid, called)

        record = model.caption_record(
            message,
            spec,
            answer,
            latency_ms=elapsed_s * 1000.0,
            receive_count=delivery.receive_count,
            captioned_at=utc_now_iso(),
        )
        caption_key = keys.caption_key(message.source_key)

        def write(if_none_match: bool, if_match: str | None) -> str:
            return w.store.put_json(
                caption_key,
                record,
                metadata={SOURCE_ETAG_META: message.source_etag},
                if_none_match=if_none_match,
                if_match=if_match,
            )

        # The caption key was read under the claim, before the call and before publish's currency
        # check: that read is publish's step 1 (a caption written since makes the write fail, and
        # publish then reads it afresh), so it is not read a second time here.
        published = publish(
            w.store, caption_key, _version(message), write, replace_same_version=False, snapshot=snapshot
        )
        if published is Published.SUPERSEDED:
            return self._done(
                message, Outcome.SUPERSEDED, "a newer upload replaced the image during the call", **called
            )
        if published is Published.EXISTS:
            return self._done(
                message, Outcome.DUPLICATE, "a caption for this ETag appeared meanwhile", **called
            )
        return self._done(
            message,
            Outcome.CAPTIONED,
            f"{answer.output_tokens} output tokens, stopReason {answer.stop_reason}",
            age_s=model.age_seconds(message.uploaded_at, w.wall()),
            truncated=answer.truncated,
            object_tags=self._write_object_tags(message, answer),
            **called,
        )

    def _output_invalid(
        self,
        message: ImageMessage,
        delivery: Delivery,
        invalid: InvalidStructuredOutput,
        called: dict[str, Any],
    ) -> Result:
        """Like a model error: back to the queue until the allowed attempts are used, then recorded."""
        attempts = self._s.model_error_max_attempts
        text = f"the model's structured answer did not validate: {invalid}"
        if delivery.receive_count >= attempts:
            text += f" (failed on {delivery.receive_count} of {attempts} allowed attempts)"
            return self._reject(
                message,
                ErrorCode.MODEL_OUTPUT_INVALID,
                text,
                "InvalidStructuredOutput",
                output_invalid=True,
                **called,
            )
        visibility = self._backoff(delivery)
        self._change_visibility(delivery, visibility)
        return self._done(
            message,
            Outcome.DEFERRED,
            text,
            retry=RetryKind.TRANSIENT,
            visibility_s=visibility,
            output_invalid=True,
            **called,
        )

    def _write_object_tags(self, message: ImageMessage, answer: model.ModelAnswer) -> bool | None:
        """Opt-in: the structured tags onto the source object (``tagging``), best effort."""
        tagger = self._w.object_tags
        if tagger is None or not self._s.write_object_tags or answer.structured is None:
            return None
        try:
            if not is_current(self._w.store, _version(message)):
                return None  # a newer upload: its own caption tags it
            tagger.tag(message.source_key, answer.structured.tags)
        except Exception:
            logger.warning(
                "could not write the object tags", exc_info=True, extra={"key": message.source_key}
            )
            return False
        return True

    def _call_failed(
        self,
        message: ImageMessage,
        delivery: Delivery,
        exc: ModelCallError,
        latency_ms: float,
        waited_ms: float,
    ) -> Result:
        verdict = model.classify_error(
            exc.code,
            exc.message,
            http_status=exc.http_status,
            receive_count=delivery.receive_count,
            model_error_max_attempts=self._s.model_error_max_attempts,
        )
        called: dict[str, Any] = {"model_called": True, "latency_ms": latency_ms, "pacing_wait_ms": waited_ms}
        if verdict.retry is None:
            code = verdict.code or ErrorCode.MODEL_ERROR
            return self._reject(message, code, verdict.message, verdict.error_type, **called)
        if verdict.retry is RetryKind.CONFIGURATION:
            self._w.note_configuration_fault(exc.code, exc.message, self._s.model.model_id)
        visibility = self._backoff(delivery)
        self._change_visibility(delivery, visibility)
        return self._done(
            message,
            Outcome.DEFERRED,
            f"{verdict.error_type}: {verdict.message}",
            retry=verdict.retry,
            visibility_s=visibility,
            **called,
        )

    # ------------------------------------------------------------------ message parsing

    def _parse(self, body: str) -> ImageMessage:
        message = ImageMessage.from_json(body)
        if message.bucket != self._s.bucket:
            raise InvalidMessage(
                f"message names bucket {message.bucket!r}, this stage serves {self._s.bucket!r}"
            )
        try:
            expected = keys.encoded_key(message.source_key)
        except keys.KeyError_ as exc:
            raise InvalidMessage(str(exc)) from exc
        if message.encoded_key != expected:
            raise InvalidMessage(
                f"encoded_key {message.encoded_key!r} is not the one derived from source_key"
            )
        return message

    def _invalid(self, delivery: Delivery, reason: str) -> Result:
        """An attributable bad message gets an error record; an anonymous one goes to the DLQ.

        A body that names no image cannot get an ``errors/`` record (there is no key to put it
        under), and finishing it would drop it without a trace. So it is reported as a batch item
        failure every time, with the queue's normal visibility, and SQS moves it to the DLQ after
        ``maxReceiveCount`` receives, where the DLQ alarm shows it to an operator.
        """
        source_key, source_etag = attribution(delivery.body)
        if source_key is None:
            return Result(Outcome.UNATTRIBUTABLE, detail=f"invalid message naming no image: {reason}")
        published = self._write_error(
            source_key, source_etag, ErrorCode.INVALID_MESSAGE, reason, "InvalidMessage", retryable=False
        )
        return Result(
            Outcome.SUPERSEDED if published is Published.SUPERSEDED else Outcome.REJECTED,
            source_key=source_key,
            source_etag=source_etag,
            error_code=ErrorCode.INVALID_MESSAGE.value,
            detail=reason,
        )

    # ------------------------------------------------------------------ exactly-once

    def _has_caption(self, message: ImageMessage) -> bool:
        """A caption of this very ETag is stored."""
        return version_of(self._w.store.head(keys.caption_key(message.source_key))) == message.source_etag

    def _has_final_error(self, message: ImageMessage) -> bool:
        """A caption-stage ``errors/`` record for this very ETag: the outcome is already final."""
        try:
            info = self._w.store.head(keys.error_key(message.source_key))
        except Exception:  # e.g. no read access to errors/: degrade to "not known", never fail the message
            logger.warning("cannot read the error record; assuming none", exc_info=True)
            return False
        return (
            info is not None
            and info.metadata.get(STAGE_META) == STAGE
            and version_of(info) == message.source_etag
        )

    # ------------------------------------------------------------------ time and the queue

    def _time_for_call(self) -> float:
        """Seconds that may still be spent waiting for the pacer (negative: not even one call fits)."""
        remaining_s = self._remaining_ms() / 1000.0
        return remaining_s - self._w.call_time.expected_s - self._w.safety_margin_s

    def _backoff(self, delivery: Delivery) -> int:
        return visibility_backoff(
            delivery.receive_count, self._s.backoff_base_s, self._s.backoff_max_s, self._w.rand
        )

    def _stop(
        self, delivery: Delivery, message: ImageMessage | None, reason: str, *, hide_s: float = 0.0
    ) -> Result:
        """Hand this and every later record back: soon, or when the pacer will have a slot for it.

        Hiding a message for the pacing wait (not 2-4 s) is what keeps a slow quota share from
        using up ``maxReceiveCount`` with receives that could never have made a call.
        """
        self.stopped = True
        # This worker makes one call per pacing interval: the k-th record it hands back cannot be
        # its call before k further intervals, so it is hidden until then (not all until the next).
        hide_s += self._handed_back * self._w.pacer.request_interval_s
        self._handed_back += 1
        visibility = max(requeue_soon(self._w.rand), min(math.ceil(hide_s), MAX_VISIBILITY_S))
        self._change_visibility(delivery, visibility)
        source_key, source_etag = (
            (message.source_key, message.source_etag) if message else attribution(delivery.body)
        )
        return Result(
            Outcome.STOPPED,
            source_key=source_key,
            source_etag=source_etag,
            visibility_s=visibility,
            detail=reason,
        )

    def _change_visibility(self, delivery: Delivery, seconds: int) -> None:
        """Best effort: if it fails, the message still comes back after the queue's own timeout."""
        if delivery.queue is None:
            logger.warning("source queue unknown; visibility left unchanged", extra={"seconds": seconds})
            return
        try:
            delivery.queue.change_visibility(delivery.receipt_handle, seconds)
        except Exception:
            logger.warning(
                "could not change the message visibility", exc_info=True, extra={"seconds": seconds}
            )

    # ------------------------------------------------------------------ records

    def _reject(
        self, message: ImageMessage, code: ErrorCode, text: str, error_type: str, **extra: Any
    ) -> Result:
        published = self._write_error(
            message.source_key, message.source_etag, code, text, error_type, retryable=False
        )
        if published is Published.SUPERSEDED:
            detail = f"not recorded, a newer upload replaced the image: {text}"
            return self._done(message, Outcome.SUPERSEDED, detail, error_code=code.value, **extra)
        return self._done(message, Outcome.REJECTED, text, error_code=code.value, **extra)

    def _write_error(
        self,
        source_key: str,
        source_etag: str | None,
        code: ErrorCode,
        text: str,
        error_type: str,
        *,
        retryable: bool,
    ) -> Published:
        record = error_record(
            stage=STAGE,
            error_code=code.value,
            error_type=error_type,
            message=text,
            retryable=retryable,
            bucket=self._s.bucket,
            source_key=source_key,
            source_etag=source_etag,
        )
        return publish_error_record(self._w.store, record)

    @staticmethod
    def _done(message: ImageMessage, outcome: Outcome, detail: str, **fields: Any) -> Result:
        return Result(
            outcome, source_key=message.source_key, source_etag=message.source_etag, detail=detail, **fields
        )


def source_key_of(body: str) -> str | None:
    """The source key a message body names (for log correlation), even if the body is invalid."""
    return attribution(body)[0]


def attribution(body: str) -> tuple[str | None, str | None]:
    """(source key, ETag) an invalid body still names, if its key is a usable ``images/`` key."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    source_key = document.get("source_key")
    if not isinstance(source_key, str):
        return None, None
    try:
        keys.error_key(source_key)
    except keys.KeyError_:
        return None, None
    etag = document.get("source_etag")
    return source_key, etag if isinstance(etag, str) and etag else None


def _version(message: ImageMessage) -> Version:
    return Version(message.source_key, message.source_etag)
