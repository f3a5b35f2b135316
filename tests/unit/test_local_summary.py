"""imgcap.local.summary: percentiles, timestamps, OUT's housekeeping and the report's entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcap.local.ledger import Ledger, Upload
from imgcap.local.summary import done_line, parse_iso, percentile, prepare_out, report_entry, safe_target
from lambdas.shared import keys

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([], 50, None), ([3.0], 95, 3.0), ([4.0, 1.0, 3.0, 2.0], 50, 2.0), ([4.0, 1.0, 3.0, 2.0], 95, 4.0)],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == expected


def test_parse_iso_reads_z_and_offsets_and_ignores_the_rest() -> None:
    assert parse_iso("1970-01-01T00:01:00Z") == 60.0
    assert parse_iso("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_iso("yesterday") is None
    assert parse_iso(None) is None


def test_prepare_out_removes_only_our_own_artefacts(tmp_path: Path) -> None:
    # Given an OUT from an earlier run with a file of the user's
    for name in ("captions/a.json", "logs/x.jsonl", "summary.json", "report.html", "mine.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    prepare_out(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_safe_target_keeps_keys_below_out(tmp_path: Path) -> None:
    assert safe_target(tmp_path, "captions/a.png.json") == (tmp_path / "captions/a.png.json").resolve()
    assert safe_target(tmp_path, "captions/../../escape.json") is None


def test_report_entry_explains_an_upload_without_a_record(tmp_path: Path) -> None:
    # Given uploads: captioned, dead-lettered, failed in resize, and lost
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    ledger = Ledger(None, None, None)  # no refresh here: the ledger's state is set directly
    uploads = {name: Upload(key=f"images/{name}.png", path=image, size=3, etag="e1") for name in "cdrl"}
    ledger.captions[keys.caption_key("images/c.png")] = ("x", {"source": {"etag": "e1"}, "caption": "A."})
    ledger.dead_letters["images/d.png"] = {"etag": "e1", "receive_count": 5}
    ledger.resize_failures["images/r.png"] = {
        "etag": "e1",
        "error_type": "MemoryError",
        "error_message": "big",
    }
    summary = {"dead_letters": [{"key": "images/d.png", "last_problem": "model timeout"}]}

    entries = {name: report_entry(ledger, u, summary) for name, u in uploads.items()}

    assert entries["c"].caption == {"source": {"etag": "e1"}, "caption": "A."}
    assert entries["c"].error is None
    assert entries["c"].image_bytes == b"png"
    assert entries["d"].error == {
        "stage": "caption",
        "error_code": "dead_lettered",
        "message": "moved to the DLQ after 5 receives. model timeout",
    }
    assert entries["r"].error == {
        "stage": "resize",
        "error_code": "resize_failed",
        "message": "MemoryError: big",
    }
    assert entries["l"].error is not None
    assert entries["l"].error["error_code"] == "lost"


def test_done_line_names_every_outcome() -> None:
    summary = {
        "captioned": 10,
        "rejected": 2,
        "dead_lettered": 0,
        "resize_failed": 0,
        "lost": 0,
        "model_calls": 11,
        "throttled": 1,
        "captions_per_minute": 60.0,
        "caption_busy_s": 10.0,
    }
    assert done_line(summary) == (
        "done: 10 captioned, 2 rejected, 0 dead-lettered, 0 resize failures, 0 lost; "
        "model calls 11 (throttled 1); 60.0 captions/min over 10.0 s"
    )
