"""``imgcap dlq``: what is in the dead-letter queue, per image, without consuming anything.

SQS has no "peek". ``peek_messages`` receives every message with a short visibility timeout (so a
page does not hand back the same messages twice), then sets each one's visibility back to 0 at
once: the messages stay in the queue, visible, for ``imgcap redrive`` or anyone else. The caveats,
also in the README: while a listing runs (seconds) the messages are briefly invisible to other
readers (a redrive running at the same moment would miss them, and if this process dies they come
back after ``PEEK_VISIBILITY_S``), and each listing adds one to every message's
``ApproximateReceiveCount`` (a DLQ has no redrive policy of its own, so nothing moves because of it).

Per source key it shows the receive count, when the image was first and last sent for captioning
(the messages' ``SentTimestamp``; SQS keeps a message's original timestamp when it moves it to the
DLQ), and the latest error the pipeline wrote down for it: its ``errors/`` record if there is one,
else the caption stage's latest configuration fault (``health/caption.json``, stack-wide).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from imgcap.ops.bucket import RecordUnreadable, read_json
from imgcap.ops.context import OpsContext
from lambdas.shared import keys

SQS_BATCH = 10
PEEK_VISIBILITY_S = 30  # hidden this long at most while a listing pages through the queue
MAX_PEEK = 10_000  # bound on one listing


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source_key: str
    source_etag: str | None
    messages: int  # copies of this image's message in the DLQ
    receive_count: int  # the highest ApproximateReceiveCount among them (this listing included)
    first_seen: str | None  # ISO times from SentTimestamp
    last_seen: str | None
    latest_error: str | None
    latest_error_at: str | None
    latest_error_source: str | None  # "errors/<path>.json", "health/caption.json" or None


def _iso_ms(value: object) -> str | None:
    try:
        millis = int(str(value))
    except (TypeError, ValueError):
        return None
    stamp = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")
    return stamp.replace("+00:00", "Z")


def peek_messages(sqs: Any, queue_url: str, *, limit: int = MAX_PEEK) -> list[dict[str, Any]]:
    """Every message in the queue (up to ``limit``), left in the queue and visible again."""
    seen: dict[str, dict[str, Any]] = {}
    handles: list[str] = []
    try:
        while len(seen) < limit:
            batch = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(SQS_BATCH, limit - len(seen)),
                VisibilityTimeout=PEEK_VISIBILITY_S,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                handles.append(str(message["ReceiptHandle"]))
                seen.setdefault(str(message.get("MessageId")), message)
    finally:
        _release(sqs, queue_url, handles)
    return list(seen.values())


def _release(sqs: Any, queue_url: str, handles: list[str]) -> None:
    """Make received messages visible again now (visibility 0), ten at a time."""
    for start in range(0, len(handles), SQS_BATCH):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(handles[start : start + SQS_BATCH])
        ]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def message_source(message: dict[str, Any]) -> tuple[str | None, str | None]:
    """(source key, source ETag) of a caption-queue message body, or (None, None)."""
    try:
        body = json.loads(message.get("Body") or "")
    except (TypeError, ValueError):
        return None, None
    if not isinstance(body, dict) or not isinstance(body.get("source_key"), str):
        return None, None
    etag = body.get("source_etag")
    return str(body["source_key"]), str(etag) if isinstance(etag, str) else None


def _latest_error(ctx: OpsContext, source_key: str, health: dict[str, Any] | None) -> tuple[str, ...] | None:
    try:
        record = read_json(ctx.clients.s3, ctx.stack.bucket, keys.error_key(source_key))
    except (RecordUnreadable, keys.KeyError_):
        record = None
    if record is not None:
        text = f"{record.get('error_code')}: {' '.join(str(record.get('message', '')).split())}"
        return text, str(record.get("occurred_at") or ""), keys.error_key(source_key)
    if health is not None:
        text = f"{health.get('error_type')}: {' '.join(str(health.get('message', '')).split())}"
        return text, str(health.get("occurred_at") or ""), keys.CAPTION_HEALTH_KEY
    return None


def group(
    messages: list[dict[str, Any]], latest: Callable[[str], tuple[str, ...] | None]
) -> tuple[list[DeadLetter], int]:
    """Messages per source key, sorted by key; plus how many bodies named no source key."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    unreadable = 0
    for message in messages:
        key, _ = message_source(message)
        if key is None:
            unreadable += 1
            continue
        by_key.setdefault(key, []).append(message)
    out: list[DeadLetter] = []
    for key in sorted(by_key):
        copies = by_key[key]
        attrs = [m.get("Attributes") or {} for m in copies]
        sent = sorted(int(a["SentTimestamp"]) for a in attrs if str(a.get("SentTimestamp", "")).isdigit())
        error = latest(key)
        out.append(
            DeadLetter(
                source_key=key,
                source_etag=message_source(copies[-1])[1],
                messages=len(copies),
                receive_count=max(int(a.get("ApproximateReceiveCount", 0)) for a in attrs),
                first_seen=_iso_ms(sent[0]) if sent else None,
                last_seen=_iso_ms(sent[-1]) if sent else None,
                latest_error=error[0] if error else None,
                latest_error_at=(error[1] or None) if error else None,
                latest_error_source=error[2] if error else None,
            )
        )
    return out, unreadable


@dataclass(frozen=True, slots=True)
class DlqListing:
    queue_url: str
    messages: int
    images: list[DeadLetter]
    unreadable: int  # messages whose body is not a caption-queue message

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "messages": self.messages,
            "images": [asdict(d) for d in self.images],
            "unreadable": self.unreadable,
        }


def collect(ctx: OpsContext, *, limit: int = MAX_PEEK) -> DlqListing:
    url = ctx.stack.require_dlq()
    messages = peek_messages(ctx.clients.sqs, url, limit=limit)
    try:
        health: dict[str, Any] | None = read_json(ctx.clients.s3, ctx.stack.bucket, keys.CAPTION_HEALTH_KEY)
    except RecordUnreadable:
        health = None
    images, unreadable = group(messages, lambda key: _latest_error(ctx, key, health))
    return DlqListing(queue_url=url, messages=len(messages), images=images, unreadable=unreadable)


def as_text(listing: DlqListing) -> str:
    if not listing.messages:
        return "the dead-letter queue is empty"
    lines = [f"{listing.messages} message(s) for {len(listing.images)} image(s) in the dead-letter queue:"]
    for d in listing.images:
        copies = f", {d.messages} copies" if d.messages > 1 else ""
        lines.append(
            f"  {d.source_key}  received {d.receive_count}x{copies}, first {d.first_seen or '-'}, "
            f"last {d.last_seen or '-'}"
        )
        if d.latest_error:
            lines.append(
                f"    latest error ({d.latest_error_source}, {d.latest_error_at or '-'}): {d.latest_error}"
            )
    if listing.unreadable:
        lines.append(f"  {listing.unreadable} message(s) are not caption-queue messages")
    lines.append("Fix the cause, then `imgcap redrive` (the listing consumed nothing).")
    return "\n".join(lines)
