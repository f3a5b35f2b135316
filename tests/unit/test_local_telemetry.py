"""imgcap.local.telemetry: the functions' log lines go to OUT/logs/, their EMF metrics are summed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgcap.local.telemetry import LogSink, MetricTotals, json_object
from imgcap.local.workers import InvocationResult
from lambdas.shared.observability import ERROR_CODE_DIMENSION, Metric

pytestmark = pytest.mark.unit


def emf(service: str, values: dict[str, object], **dimensions: str) -> dict[str, object]:
    return {
        "_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": name} for name in values]}]},
        "service": service,
        **dimensions,
        **values,
    }


def test_metric_totals_sum_per_service_and_rejections_by_code() -> None:
    # Given two blobs from resize (one a list of values, one a rejection) and one from caption
    totals = MetricTotals()
    totals.add(emf("resize-encode", {Metric.IMAGES_REJECTED: 1}, **{ERROR_CODE_DIMENSION: "corrupt_image"}))
    totals.add(emf("resize-encode", {Metric.IMAGES_REJECTED: [1, 2]}))
    totals.add(emf("caption", {Metric.MODEL_CALLS: 2.5}))

    # Then totals, per-service counters and the rejection codes add up
    snapshot = totals.snapshot()
    assert snapshot["totals"] == {Metric.IMAGES_REJECTED: 4, Metric.MODEL_CALLS: 2.5}
    assert snapshot["by_service"]["resize-encode"] == {Metric.IMAGES_REJECTED: 4}
    assert snapshot["rejections_by_code"] == {"corrupt_image": 1}
    assert snapshot["emf_blobs"] == 3
    assert totals.total(Metric.MODEL_CALLS) == 2.5


def test_log_sink_splits_logs_metrics_and_invocations(tmp_path: Path) -> None:
    # Given one invocation that logged a JSON warning, plain text and an EMF blob
    metrics = MetricTotals()
    sink = LogSink(tmp_path / "logs", metrics)
    warning = {
        "level": "WARNING",
        "message": "throttled",
        "detail": "retry 2",
        "correlation_id": "images/a.png",
    }
    result = InvocationResult(
        function="T-caption",
        request_id="r1",
        ok=True,
        duration_ms=12.34,
        log_lines=(json.dumps(warning), "plain text", json.dumps(emf("caption", {Metric.MODEL_CALLS: 1}))),
        peak_rss_kb=2048,
    )

    # When it is added and the sink closed
    sink.add("caption", result, {"records": 1})
    sink.close()

    # Then the logs are JSON lines (plain text wrapped), EMF goes to metrics.jsonl, one invocation line
    logs = [json.loads(line) for line in (tmp_path / "logs" / "caption.jsonl").read_text().splitlines()]
    assert logs[0] == warning
    assert logs[1] == {"level": "INFO", "message": "plain text", "service": "caption", "raw": True}
    assert len((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()) == 1
    invocation = json.loads((tmp_path / "logs" / "invocations.jsonl").read_text())
    assert invocation["duration_ms"] == 12.3
    assert invocation["peak_rss_mb"] == 2.0
    assert invocation["records"] == 1
    assert metrics.total(Metric.MODEL_CALLS) == 1
    assert sink.last_problem == {"images/a.png": "throttled (retry 2)"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [('  {"a": 1}\n', {"a": 1}), ("[1]", None), ("{not json", None), ("hello", None)],
)
def test_json_object_accepts_only_json_objects(line: str, expected: object) -> None:
    assert json_object(line) == expected
