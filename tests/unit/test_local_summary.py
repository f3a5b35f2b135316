"""imgcap.local.summary: percentiles, timestamps, OUT's housekeeping and the report's entries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imgcap.local.ledger import Ledger, Upload
from imgcap.local.summary import (
    METRIC_UNITS,
    captions_per_minute,
    done_line,
    iso,
    metric_figures,
    parse_iso,
    percentile,
    prepare_out,
    rate_text,
    rates,
    report_entry,
    safe_target,
    split_unfinished,
)
from lambdas.shared import keys
from lambdas.shared.observability import Metric

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
    # Given uploads: captioned, dead-lettered, failed in resize, lost, and not final
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    ledger = Ledger(None, None, None)  # no refresh here: the ledger's state is set directly
    uploads = {name: Upload(key=f"images/{name}.png", path=image, size=3, etag="e1") for name in "cdrln"}
    ledger.captions[keys.caption_key("images/c.png")] = ("x", {"source": {"etag": "e1"}, "caption": "A."})
    ledger.dead_lettered["images/d.png"] = {"etag": "e1", "receive_count": 5}
    ledger.resize_failed["images/r.png"] = {
        "etag": "e1",
        "error_type": "MemoryError",
        "error_message": "big",
    }
    summary = {
        "dead_lettered_details": [{"key": "images/d.png", "last_problem": "model timeout"}],
        "lost_keys": ["images/l.png"],
    }

    entries = {name: report_entry(ledger, u, summary) for name, u in uploads.items()}

    assert entries["c"].caption == {"source": {"etag": "e1"}, "caption": "A."}
    assert entries["c"].error is None
    assert entries["c"].image_path == image  # read only while the report writes its files
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
    assert entries["n"].error is not None
    assert entries["n"].error["error_code"] == "not_final"


def test_done_line_names_every_outcome_and_both_rates() -> None:
    summary = {
        "captioned": 10,
        "rejected": 2,
        "dead_lettered": 0,
        "resize_failed": 0,
        "upload_failed": 0,
        "not_final": 1,
        "lost": 0,
        "lost_keys": [],
        "model_calls": 11,
        "throttled": 1,
        "elapsed_s": 21.5,
        "waited_s": 20.0,
        "steady_s": 9.0,
        "captions_per_minute_run": 30.0,
        "captions_per_minute_steady": 60.0,
    }
    assert done_line(summary) == (
        "done: 10 captioned, 2 rejected, 0 dead-lettered, 0 resize failed, 0 upload failed, "
        "1 not final, 0 lost; model calls 11 (throttled 1); "
        "30.0 captions/min over the run, 60.0 steady (20 s run, 9 s first to last caption)"
    )


def test_done_line_without_captions_prints_no_none() -> None:
    summary = {
        "captioned": 0,
        "rejected": 0,
        "dead_lettered": 0,
        "resize_failed": 0,
        "upload_failed": 0,
        "not_final": 0,
        "lost": 1,
        "lost_keys": ["images/a.png"],
        "model_calls": 0,
        "throttled": 0,
        "elapsed_s": 4.0,
        "waited_s": 3.5,
        "steady_s": None,
        "captions_per_minute_run": captions_per_minute(0, 3.5),
        "captions_per_minute_steady": None,
    }
    line = done_line(summary)
    assert "None" not in line
    assert "1 lost (images/a.png)" in line
    assert line.endswith("0.0 captions/min over the run, - steady (3.5 s run)")


def test_captions_per_minute_is_one_definition_over_the_run_and_the_steady_state() -> None:
    # Given captions written at t = 100, 110, 120, 130 s in a run of 60 s
    r = rates([130.0, 100.0, 120.0, 110.0], run_s=60.0)

    # Then the run rate counts every caption over the run, the steady rate the 3 after the first
    assert (r.run, r.steady, r.steady_s) == (4.0, 6.0, 30.0)
    assert rate_text(r) == "4.0 captions/min over the run, 6.0 steady"
    assert captions_per_minute(4, 60.0) == r.run
    assert captions_per_minute(3, 30.0) == r.steady
    # One caption has no steady state; no time has no rate
    assert rates([5.0], run_s=10.0).steady is None
    assert captions_per_minute(3, 0.0) is None
    assert captions_per_minute(3, None) is None


def test_unfinished_uploads_are_not_final_while_work_is_in_flight_and_lost_only_when_none_is() -> None:
    assert split_unfinished(["images/b", "images/a"], work_in_flight=2) == (["images/a", "images/b"], [])
    assert split_unfinished(["images/a"], work_in_flight=0) == ([], ["images/a"])
    assert split_unfinished([], work_in_flight=0, never_uploaded=["images/z"]) == (["images/z"], [])
    assert split_unfinished([], work_in_flight=0) == ([], [])


def test_times_are_iso_8601_utc_and_metric_sums_carry_their_unit() -> None:
    assert iso(60.0) == "1970-01-01T00:01:00.000Z"
    assert parse_iso(iso(1234.5)) == 1234.5
    assert iso(None) is None
    snapshot = {
        "totals": {"ModelLatency": 900, "ModelCalls": 3, "EndToEndAge": 4.5},
        "by_service": {"caption": {"ModelLatency": 900, "PacingWait": 12}},
        "rejections_by_code": {},
        "emf_blobs": 2,
    }
    figures = metric_figures(snapshot)
    assert figures["totals"] == {"ModelLatency_total_ms": 900, "ModelCalls": 3, "EndToEndAge_total_s": 4.5}
    assert figures["by_service"]["caption"] == {"ModelLatency_total_ms": 900, "PacingWait_total_ms": 12}


def test_every_metric_the_handlers_emit_with_a_unit_is_named_with_that_unit() -> None:
    """Given the handlers' metric calls, then summary.json's unit table covers each non-count one."""
    emitted: dict[str, str] = {}
    for handler in ("lambdas/caption/handler.py", "lambdas/resize/handler.py"):
        source = (Path(__file__).resolve().parents[2] / handler).read_text(encoding="utf-8")
        for name, unit in re.findall(r"count\(Metric\.(\w+),[^)]*unit=MetricUnit\.(\w+)\)", source):
            emitted[getattr(Metric, name)] = {"Milliseconds": "ms", "Seconds": "s"}[unit]
    assert emitted == METRIC_UNITS
