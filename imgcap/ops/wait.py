"""Wait until uploaded images are final on a stack: ``imgcap upload --wait`` and ``imgcap smoke``.

An image version (key, ETag) is final when one of these exists for that ETag:
- ``captions/<path>.json`` whose ``source.etag`` is the upload's ETag -> ``captioned``;
- ``errors/<path>.json`` for it -> ``rejected``;
- a message for it in the caption DLQ -> ``dead_lettered`` (read with ``dlq.peek_messages``,
  which consumes nothing);
- an event for it on the resize failure queue (the resize function's async on-failure
  destination) -> ``resize_failed``.
Anything else when the time is up is ``not_final``. Each round lists ``captions/`` and ``errors/``
under the common prefix once and reads only records that are new or changed; a queue is peeked
only when its depth is not 0 and changed since the last peek (a busy DLQ is not read every round,
and each peek adds one to its messages' receive counts).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imgcap.ops.bucket import RecordUnreadable, list_objects, read_json
from imgcap.ops.context import OpsContext
from imgcap.ops.dlq import message_source, peek_messages
from imgcap.ops.status import queue_depth
from imgcap.progress import Progress
from lambdas.shared import keys

CAPTIONED = "captioned"
REJECTED = "rejected"
DEAD_LETTERED = "dead_lettered"
RESIZE_FAILED = "resize_failed"
NOT_FINAL = "not_final"
FAILED_STATES = (REJECTED, DEAD_LETTERED, RESIZE_FAILED, NOT_FINAL)

DEFAULT_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class Sent:
    key: str  # images/...
    etag: str


@dataclass(slots=True)
class Verdicts:
    states: dict[str, str] = field(default_factory=dict)  # key -> state (final ones only)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> caption/error record

    def counts(self, total: int) -> dict[str, int]:
        out = dict.fromkeys((CAPTIONED, REJECTED, DEAD_LETTERED, RESIZE_FAILED), 0)
        for state in self.states.values():
            out[state] += 1
        out[NOT_FINAL] = total - len(self.states)
        return out


def _common_prefix(sent: Sequence[Sent]) -> str:
    """The longest folder (below images/) holding every key: what to list under captions/ and errors/."""
    folders = [keys.relative_path(s.key).rpartition("/")[0] for s in sent]
    if not folders or "" in folders:
        return ""
    common = os.path.commonpath(folders)
    return f"{common}/" if common else ""


class Waiter:
    """Checks, round by round, which of ``sent`` are final."""

    def __init__(self, ctx: OpsContext, sent: Sequence[Sent]) -> None:
        self.ctx = ctx
        self.sent = {s.key: s for s in sent}
        self.verdicts = Verdicts()
        self._seen_objects: dict[str, str] = {}  # record key -> object ETag already read
        self._folder = _common_prefix(sent)
        self._depths: dict[str, int] = {}  # queue URL -> its depth when last peeked

    @property
    def waiting(self) -> list[Sent]:
        return [s for k, s in sorted(self.sent.items()) if k not in self.verdicts.states]

    def _records(self, prefix: str, derive: Callable[[str], str], state: str) -> None:
        s3, bucket = self.ctx.clients.s3, self.ctx.stack.bucket
        wanted = {derive(s.key): s for s in self.waiting}
        if not wanted:
            return
        for obj in list_objects(s3, bucket, prefix + self._folder):
            item = wanted.get(obj.key)
            if item is None or self._seen_objects.get(obj.key) == obj.etag:
                continue
            try:
                record = read_json(s3, bucket, obj.key)
            except RecordUnreadable:
                continue  # replaced while we looked: the next round reads it again
            self._seen_objects[obj.key] = obj.etag
            source = record.get("source") if isinstance(record.get("source"), dict) else {}
            if str((source or {}).get("etag") or "").strip('"') == item.etag:
                self.verdicts.states[item.key] = state
                self.verdicts.records[item.key] = record

    def _queue(
        self, url: str | None, state: str, refs: Callable[[dict[str, Any]], list[tuple[str, str | None]]]
    ) -> None:
        if not url or not self.waiting:
            return
        depth = queue_depth(self.ctx.clients.sqs, url).total
        if depth == 0 or self._depths.get(url) == depth:
            return  # empty, or nothing arrived since the last look: no need to read it again
        self._depths[url] = depth
        for message in peek_messages(self.ctx.clients.sqs, url):
            for key, etag in refs(message):
                item = self.sent.get(key)
                if item is not None and item.key not in self.verdicts.states and etag in (item.etag, None):
                    self.verdicts.states[item.key] = state

    def check(self) -> None:
        """One round: captions, error records, then the DLQ and the resize failure queue."""
        self._records(keys.CAPTIONS_PREFIX, keys.caption_key, CAPTIONED)
        self._records(keys.ERRORS_PREFIX, keys.error_key, REJECTED)
        stack = self.ctx.stack
        self._queue(stack.dlq_url, DEAD_LETTERED, _message_refs)
        self._queue(stack.resize_failure_queue_url, RESIZE_FAILED, _failure_refs)


def _message_refs(message: dict[str, Any]) -> list[tuple[str, str | None]]:
    key, etag = message_source(message)
    return [(key, etag)] if key is not None else []


def _failure_refs(message: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (key, ETag) pairs of a Lambda on-failure destination record (the S3 event it carries)."""
    from lambdas.resize.events import object_refs

    try:
        body = json.loads(message.get("Body") or "")
    except (TypeError, ValueError):
        return []
    payload = body.get("requestPayload") if isinstance(body, dict) else None
    return [(r.key, r.etag) for r in object_refs(payload)] if isinstance(payload, dict) else []


def wait_until_final(
    ctx: OpsContext,
    sent: Sequence[Sent],
    *,
    timeout_s: float,
    poll_s: float = DEFAULT_POLL_S,
    show_progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdicts:
    """Poll until every ``sent`` version is final or ``timeout_s`` has passed; the verdicts."""
    waiter = Waiter(ctx, sent)
    deadline = clock() + timeout_s
    with Progress("wait", total=len(sent), stream=ctx.err, unit="img", enabled=show_progress) as progress:
        while True:
            waiter.check()
            counts = waiter.verdicts.counts(len(sent))
            done = len(sent) - counts[NOT_FINAL]
            fields = [f"{state} {n}" for state, n in counts.items() if n and state != NOT_FINAL]
            progress.update_to(done, fields)
            if not waiter.waiting or clock() >= deadline:
                return waiter.verdicts
            sleep(max(0.0, min(poll_s, deadline - clock())))


def describe(verdicts: Verdicts, sent: Sequence[Sent]) -> list[dict[str, Any]]:
    """One row per sent image: key, etag, state and (for rejections) the error code and message."""
    rows: list[dict[str, Any]] = []
    for item in sorted(sent, key=lambda s: s.key):
        state = verdicts.states.get(item.key, NOT_FINAL)
        row: dict[str, Any] = {"key": item.key, "etag": item.etag, "state": state}
        record = verdicts.records.get(item.key) or {}
        if state == REJECTED:
            row["error_code"] = record.get("error_code")
            row["message"] = record.get("message")
        rows.append(row)
    return rows
