"""The index stage's use case: a batch of queue messages -> vectors put and deleted, in few calls.

Per message: its jobs (``domain.jobs_from_body``), each decided from the bucket *as it is now*
(events come late, twice and out of order; the current caption and image say what is true):

- upsert: read the caption; if the image is gone, or is a newer upload than the caption describes,
  the vector is deleted (the new caption, when it comes, puts it back); otherwise embed (paced to
  this worker's share of the embeddings quota) and queue a put;
- remove: delete the vector unless the caption and its image are both there now (a re-upload
  restored them; its own caption event keeps the vector right).

Then one ``PutVectors`` (<= 500 a call) and one ``DeleteVectors`` for the whole batch, the last
decision per vector key winning; after the put, each image is HEADed again and a vector whose
image was deleted or re-uploaded meanwhile is deleted in the same call (the currency re-check).
A message whose embedding was throttled or failed, or that the
batch had no time left for, is handed back with a backed-off visibility and reported as a batch
item failure; after ``maxReceiveCount`` receives SQS moves it to the index DLQ. The caption stage
never waits on any of this: the index queue is fed by S3 notifications of caption writes.

Reads only (``captions/``, ``base64_images/`` for image input, HEAD of ``images/``): the stage never
writes to the bucket, so it cannot trigger itself or any other stage.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from lambdas.caption.backoff import requeue_soon, visibility_backoff
from lambdas.caption.pacing import TokenBucket
from lambdas.index.domain import (
    Action,
    CaptionFacts,
    IndexJob,
    InvalidIndexMessage,
    caption_facts,
    embedding_text,
    jobs_from_body,
    vector_key,
    vector_metadata,
)
from lambdas.index.embeddings import EmbeddingError, EmbeddingRetry, Purpose
from lambdas.index.vectors import VectorRecord
from lambdas.shared.contract import META_SOURCE_ETAG, META_SOURCE_KEY
from lambdas.shared.storage import ObjectMissing, Queue, Store

# Keep this much of the invocation free for the final put/delete calls and the response.
FLUSH_RESERVE_S = 10.0


class Embed(Protocol):
    def __call__(
        self, purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None
    ) -> list[float]: ...


class Index(Protocol):
    def put(self, records: Sequence[VectorRecord]) -> int: ...
    def delete(self, keys: Sequence[str]) -> int: ...


class Outcome(Enum):
    INDEXED = "indexed"  # a vector was put
    REMOVED = "removed"  # a vector was deleted (image or caption gone, or superseded)
    SKIPPED = "skipped"  # nothing to do (test event, other prefix, still-current object)
    DEFERRED = "deferred"  # handed back: throttled, failed, or no time left
    INVALID = "invalid"  # not a message this stage understands (kept for the DLQ)


@dataclass(frozen=True, slots=True)
class Delivery:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    queue: Queue | None = None


@dataclass(slots=True)
class ItemResult:
    message_id: str
    outcome: Outcome = Outcome.SKIPPED
    detail: str = ""
    retry: EmbeddingRetry | None = None
    visibility_s: int | None = None
    puts: int = 0
    deletes: int = 0
    embedding_calls: int = 0
    caption_keys: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.DEFERRED, Outcome.INVALID)


class RequestPacer:
    """One request bucket per worker (``rpm`` = its share of the quota); waits with ``sleep``."""

    def __init__(
        self,
        requests_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.bucket = TokenBucket(requests_per_minute / 60.0, 1.0, clock())
        self.waited_s = 0.0

    def acquire(self, budget_s: float) -> bool:
        """Take one request, waiting at most ``budget_s``; False (nothing taken) if that is too short."""
        now = self._clock()
        self.bucket.refill(now)
        wait = self.bucket.wait_for(1.0)
        if wait > budget_s:
            return False
        if wait > 0:
            self._sleep(wait)
            self.waited_s += wait
            self.bucket.refill(self._clock())
        self.bucket.take(1.0)
        return True


class OutOfTime(Exception):
    """The pacer could not admit a call within the invocation's time left."""


@dataclass(slots=True)
class _Decision:
    record: VectorRecord | None  # None: delete the key
    owner: str  # message id


class IndexWorker:
    """Built once per execution environment; ``run`` handles one batch."""

    def __init__(
        self,
        *,
        store: Store,
        index: Index,
        embed: Embed,
        pacer: RequestPacer,
        embedding_input: str = "caption",
        backoff_base_s: float = 10,
        backoff_max_s: float = 300,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.embed = embed
        self.pacer = pacer
        self.embedding_input = embedding_input
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rand = rand

    # -- one batch

    def run(self, deliveries: Sequence[Delivery], time_left_s: Callable[[], float]) -> dict[str, ItemResult]:
        results: dict[str, ItemResult] = {}
        decisions: dict[str, _Decision] = {}
        for delivery in deliveries:
            result = ItemResult(delivery.message_id)
            results[delivery.message_id] = result
            if time_left_s() <= FLUSH_RESERVE_S:
                self._defer(result, delivery, "no time left in this invocation", soon=True)
                continue
            try:
                jobs = jobs_from_body(delivery.body)
            except InvalidIndexMessage as exc:
                result.outcome, result.detail = Outcome.INVALID, str(exc)
                continue
            self._decide(delivery, jobs, result, decisions, time_left_s)
        self._flush(deliveries, results, decisions)
        return results

    def _decide(
        self,
        delivery: Delivery,
        jobs: Sequence[IndexJob],
        result: ItemResult,
        decisions: dict[str, _Decision],
        time_left_s: Callable[[], float],
    ) -> None:
        mine: dict[str, _Decision] = {}
        try:
            for job in jobs:
                result.caption_keys.append(job.caption_key)
                key = vector_key(job.caption_key)
                if key in decisions or key in mine:
                    continue  # decided from the current objects already in this batch: no second call
                decision = self._job(job, delivery.message_id, result, time_left_s)
                if decision is not None:
                    mine[key] = decision
        except EmbeddingError as exc:
            result.retry = exc.retry
            self._defer(result, delivery, str(exc))
            return
        except OutOfTime:
            self._defer(
                result, delivery, "the embeddings quota share leaves no time in this invocation", soon=True
            )
            return
        except InvalidIndexMessage as exc:
            result.outcome, result.detail = Outcome.INVALID, str(exc)
            return
        decisions.update(mine)  # all of a message's jobs, or none of them

    def _job(
        self, job: IndexJob, owner: str, result: ItemResult, time_left_s: Callable[[], float]
    ) -> _Decision | None:
        facts = self._read_caption(job.caption_key)
        if facts is None:
            return _Decision(None, owner)  # caption gone: no vector
        source = self.store.head(facts.source_key)
        if source is None or source.etag != facts.source_etag:
            return _Decision(None, owner)  # image deleted, or re-uploaded and not captioned yet
        if job.action is Action.REMOVE:
            return None  # both still there (restored): the vector stays as it is
        vector = self._embed(facts, result, time_left_s)
        return _Decision(VectorRecord(vector_key(job.caption_key), vector, vector_metadata(facts)), owner)

    def _read_caption(self, caption_key: str) -> CaptionFacts | None:
        try:
            body, _info = self.store.get_bytes(caption_key)
        except ObjectMissing:
            return None
        try:
            record = json.loads(body)
        except ValueError as exc:
            raise InvalidIndexMessage(f"{caption_key} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise InvalidIndexMessage(f"{caption_key} is not a caption record")
        return caption_facts(record)

    def _image_png(self, facts: CaptionFacts) -> bytes | None:
        if facts.encoded_key is None:
            return None
        try:
            body, _ = self.store.get_bytes(facts.encoded_key)
        except ObjectMissing:
            return None
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _embed(
        self, facts: CaptionFacts, result: ItemResult, time_left_s: Callable[[], float]
    ) -> list[float]:
        text = embedding_text(facts) if self.embedding_input in ("caption", "both") else None
        image = self._image_png(facts) if self.embedding_input in ("image", "both") else None
        if text is None and image is None:
            text = embedding_text(facts)  # image input without an encoded copy: the caption stands in
        parts = (1 if text else 0) + (1 if image is not None else 0)
        for _ in range(parts):  # one paced admission per call the vector needs (Nova: one per part)
            if not self.pacer.acquire(max(0.0, time_left_s() - FLUSH_RESERVE_S)):
                raise OutOfTime
        result.embedding_calls += parts
        return self.embed(Purpose.INDEX, text=text, image_png=image)

    # -- the writes for the whole batch

    def _flush(
        self,
        deliveries: Sequence[Delivery],
        results: dict[str, ItemResult],
        decisions: dict[str, _Decision],
    ) -> None:
        by_id = {d.message_id: d for d in deliveries}
        puts = {key: d for key, d in decisions.items() if d.record is not None}
        deletes = {key: d for key, d in decisions.items() if d.record is None}
        if puts:
            self._write("put", puts, results, by_id)
            # Re-check after publishing: an image deleted or re-uploaded while this batch embedded
            # it (its removal event handled by another worker in between) must not keep a vector.
            for key, decision in puts.items():
                record = decision.record
                if record and not results[decision.owner].failed and not self._still_current(record.metadata):
                    deletes[key] = _Decision(None, decision.owner)
        if deletes:
            self._write("delete", deletes, results, by_id)
        for result in results.values():
            if result.failed:
                continue
            if result.puts:
                result.outcome = Outcome.INDEXED
            elif result.deletes:
                result.outcome = Outcome.REMOVED
            else:
                result.outcome = Outcome.SKIPPED

    def _still_current(self, metadata: dict[str, Any]) -> bool:
        source = self.store.head(str(metadata[META_SOURCE_KEY]))
        return source is not None and source.etag == metadata[META_SOURCE_ETAG]

    def _write(
        self,
        kind: str,
        decided: dict[str, _Decision],
        results: dict[str, ItemResult],
        by_id: dict[str, Delivery],
    ) -> None:
        try:
            if kind == "put":
                self.index.put([d.record for d in decided.values() if d.record is not None])
            else:
                self.index.delete(list(decided))
        except Exception as exc:
            for owner in {d.owner for d in decided.values()}:
                self._defer(results[owner], by_id[owner], f"S3 Vectors {kind} failed: {exc}")
            return
        for decision in decided.values():
            result = results[decision.owner]
            if kind == "put":
                result.puts += 1
            else:
                result.deletes += 1

    def _defer(self, result: ItemResult, delivery: Delivery, detail: str, *, soon: bool = False) -> None:
        result.outcome, result.detail = Outcome.DEFERRED, detail
        rand: Any = self._rand
        if soon:
            seconds = requeue_soon(rand) if rand else requeue_soon()
        elif rand:
            seconds = visibility_backoff(
                delivery.receive_count, self.backoff_base_s, self.backoff_max_s, rand
            )
        else:
            seconds = visibility_backoff(delivery.receive_count, self.backoff_base_s, self.backoff_max_s)
        result.visibility_s = seconds
        if delivery.queue is not None:
            try:
                delivery.queue.change_visibility(delivery.receipt_handle, seconds)
            except Exception:
                result.visibility_s = None
