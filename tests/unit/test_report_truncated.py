"""Issue 11 item 9: a caption cut at maxTokens is marked in the report, a complete one is not."""

from __future__ import annotations

import json

import pytest

from imgcap.ops.status import Status, Usage, attention_sentences, summarise_usage
from imgcap.report import ReportEntry, render_report

pytestmark = pytest.mark.unit


def _entry(key: str, truncated: bool) -> ReportEntry:
    record = {"caption": f"About {key}", "stop_reason": "max_tokens" if truncated else "end_turn"}
    record["truncated"] = truncated
    return ReportEntry(source_key=key, image_bytes=None, caption=record, error=None)


def test_given_a_truncated_caption_then_only_its_card_carries_the_badge():
    page = render_report(
        [_entry("images/cut.jpg", True), _entry("images/whole.jpg", False)],
        title="t",
        summary={"images": 2, "captioned": 2, "truncated": 1},
    )
    data = page.split('<script type="application/json" id="entries">', 1)[1].split("</script>", 1)[0]
    rows = {row["k"]: row for row in json.loads(data)}
    assert rows["images/cut.jpg"].get("t") == 1  # the page's script draws the badge from this
    assert "t" not in rows["images/whole.jpg"]
    assert "truncated: the model stopped at maxTokens" in page
    assert 'data-count="truncated"><b>1</b><span>truncated</span>' in page


def test_given_truncated_captions_then_status_says_how_to_raise_max_tokens():
    status = Status(
        stack="S",
        bucket="b",
        region=None,
        prefixes={},
        pending=0,
        pending_examples=[],
        stale_captions=0,
        caption_queue=None,
        dead_letter_queue=None,
        errors_total=0,
        recent_errors_by_code={},
        recent_errors=[],
        usage=Usage(captions_read=3, truncated=2),
        prices_per_1k={"input": 0.0008, "output": 0.0032},
        dashboard=None,
        generated_at="2026-12-01T08:00:00Z",
    )
    [sentence] = attention_sentences(status)
    assert sentence.startswith("2 caption(s) stopped at maxTokens")
    assert "max-tokens" in sentence


def test_given_caption_records_then_status_counts_only_the_truncated_ones():
    records = {
        "captions/cut.jpg.json": {"truncated": True, "stop_reason": "max_tokens"},
        "captions/whole.jpg.json": {"truncated": False, "stop_reason": "end_turn"},
        "captions/old.jpg.json": {"stop_reason": "end_turn"},  # written before the flag existed
    }
    usage = summarise_usage(records, unreadable=0)
    assert (usage.captions_read, usage.truncated) == (3, 1)
