"""``imgcap redrive``: move messages from the dead-letter queue back to the caption queue.

A receive / send / delete loop: receive up to 10 from the DLQ (hidden from other readers while we
work), send the same bodies and message attributes to the caption queue, then delete from the DLQ
only what was sent. SQS's own ``StartMessageMoveTask`` does the same server-side on AWS, but the
local moto server does not implement it; this loop behaves identically on both. A crash between
send and delete can leave a copy in both queues: the caption stage is idempotent per source ETag,
so a duplicate never pays for a second model call.

The loop is bounded: it stops at ``--max`` messages, at the first empty long-poll receive, or at
the first batch of which nothing could be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from imgcap.ops.aws import error_code
from imgcap.ops.context import OpsContext
from imgcap.ops.status import queue_depth
from imgcap.progress import Progress

SQS_BATCH = 10
DEFAULT_MAX = 10_000
_HIDE_WHILE_MOVING_S = 120  # a received DLQ message stays invisible this long if we crash


@dataclass(slots=True)
class RedriveResult:
    moved: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    """Message attributes as SendMessage takes them (received ones carry extra empty lists)."""
    out: dict[str, Any] = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        value = {k: attr[k] for k in ("DataType", "StringValue", "BinaryValue") if k in attr}
        if "DataType" in value:
            out[name] = value
    return out


def _send(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    """Send the batch; (indices sent, failure reasons). Falls back to one by one when too large."""
    entries = []
    for i, m in enumerate(messages):
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
        attrs = _attributes(m)
        if attrs:
            entry["MessageAttributes"] = attrs
        entries.append(entry)
    try:
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except ClientError as exc:
        if "BatchRequestTooLong" not in error_code(exc):
            raise
        sent: list[int] = []
        reasons: list[str] = []
        for i, entry in enumerate(entries):
            try:
                sqs.send_message(QueueUrl=queue_url, **{k: v for k, v in entry.items() if k != "Id"})
                sent.append(i)
            except ClientError as one:
                reasons.append(f"{messages[i].get('MessageId', '?')}: {error_code(one)}")
        return sent, reasons
    sent_ids = [int(s["Id"]) for s in response.get("Successful", [])]
    reasons = [
        f"{messages[int(f['Id'])].get('MessageId', '?')}: {f.get('Code', '')} {f.get('Message', '')}".strip()
        for f in response.get("Failed", [])
    ]
    return sent_ids, reasons


def move_messages(
    sqs: Any,
    source_url: str,
    target_url: str,
    *,
    max_messages: int = DEFAULT_MAX,
    wait_seconds: int = 1,
    progress: Progress | None = None,
) -> RedriveResult:
    result = RedriveResult()
    while result.moved + result.failed < max_messages:
        want = min(SQS_BATCH, max_messages - result.moved - result.failed)
        received = sqs.receive_message(
            QueueUrl=source_url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=_HIDE_WHILE_MOVING_S,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            break
        sent, reasons = _send(sqs, target_url, received)
        if sent:
            sqs.delete_message_batch(
                QueueUrl=source_url,
                Entries=[{"Id": str(i), "ReceiptHandle": received[i]["ReceiptHandle"]} for i in sent],
            )
        result.moved += len(sent)
        result.failed += len(reasons)
        result.failures.extend(reasons)
        if progress is not None:
            progress.advance(len(sent), outcome="moved")
            if reasons:
                progress.advance(len(reasons), outcome="failed")
        if not sent:
            break  # nothing in this batch could be sent: stop rather than spin
    return result


def run(ctx: OpsContext, *, max_messages: int = DEFAULT_MAX) -> RedriveResult:
    dlq_url = ctx.stack.require_dlq()
    queue_url = ctx.stack.require_queue()
    sqs = ctx.clients.sqs
    before = queue_depth(sqs, dlq_url)
    total = min(max_messages, before.visible) if before.visible else None
    with Progress("redrive", total=total, stream=ctx.err, unit="msg") as progress:
        result = move_messages(sqs, dlq_url, queue_url, max_messages=max_messages, progress=progress)
    for reason in result.failures:
        ctx.err.write(f"imgcap redrive: not moved: {reason}\n")
    after = queue_depth(sqs, dlq_url)
    ctx.say(
        f"moved {result.moved} message(s) from the dead-letter queue to the caption queue"
        + (f", {result.failed} could not be sent (left in the DLQ)" if result.failed else "")
        + f"; the DLQ now holds about {after.visible + after.in_flight}"
    )
    return result
