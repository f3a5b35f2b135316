"""``imgcap dlq``'s grouping of DLQ messages per image (pure: messages in, rows out)."""

from __future__ import annotations

import json
from typing import Any

from imgcap.ops.dlq import group, message_source


def message(key: str | None, sent_ms: int, receives: int, etag: str = "e1") -> dict[str, Any]:
    body = json.dumps({"v": 1, "source_key": key, "source_etag": etag}) if key else "garbage"
    return {
        "Body": body,
        "Attributes": {"SentTimestamp": str(sent_ms), "ApproximateReceiveCount": str(receives)},
    }


def test_messages_are_grouped_per_image_with_counts_times_and_the_latest_error() -> None:
    # Given two copies for one image (sent a minute apart), one for another, and one unreadable body
    messages = [
        message("images/b.png", 1_764_576_060_000, 21),
        message("images/a.png", 1_764_576_000_000, 3, etag="e2"),
        message("images/b.png", 1_764_576_000_000, 25),
        message(None, 1_764_576_000_000, 1),
    ]
    errors = {"images/b.png": ("model_error: the model failed", "2025-12-01T08:01:00Z", "errors/b.png.json")}

    # When grouped
    rows, unreadable = group(messages, errors.get)

    # Then one row per image, sorted by key, with the highest receive count and first/last sent time
    assert unreadable == 1
    assert [(r.source_key, r.messages, r.receive_count, r.source_etag) for r in rows] == [
        ("images/a.png", 1, 3, "e2"),
        ("images/b.png", 2, 25, "e1"),
    ]
    b = rows[1]
    assert (b.first_seen, b.last_seen) == ("2025-12-01T08:00:00Z", "2025-12-01T08:01:00Z")
    assert (b.latest_error, b.latest_error_source) == ("model_error: the model failed", "errors/b.png.json")
    assert rows[0].latest_error is None


def test_message_source_reads_only_caption_queue_messages() -> None:
    assert message_source(message("images/x.png", 0, 1)) == ("images/x.png", "e1")
    assert message_source({"Body": "[1, 2]"}) == (None, None)
    assert message_source({"Body": json.dumps({"source_key": 7})}) == (None, None)
    assert message_source({}) == (None, None)
