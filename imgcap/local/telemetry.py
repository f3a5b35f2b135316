"""What the functions report: their JSON log lines to OUT/logs/, their EMF metric blobs summed."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from imgcap.local.workers import InvocationResult
from lambdas.shared.observability import ERROR_CODE_DIMENSION, Metric


class MetricTotals:
    """Sums EMF blobs (Powertools' metric output) per service and metric name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_service: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.rejections: dict[str, float] = defaultdict(float)
        self.blobs = 0

    def add(self, blob: Mapping[str, Any]) -> None:
        directives = (blob.get("_aws") or {}).get("CloudWatchMetrics") or []
        service = str(blob.get("service", "unknown"))
        with self._lock:
            self.blobs += 1
            for directive in directives:
                for metric in directive.get("Metrics") or []:
                    name = metric.get("Name")
                    raw = blob.get(name)
                    values = raw if isinstance(raw, list) else [raw]
                    total = sum(float(v) for v in values if isinstance(v, int | float))
                    self.by_service[service][name] += total
                    if name == Metric.IMAGES_REJECTED and ERROR_CODE_DIMENSION in blob:
                        self.rejections[str(blob[ERROR_CODE_DIMENSION])] += total

    def total(self, name: str) -> float:
        with self._lock:
            return sum(c.get(name, 0.0) for c in self.by_service.values())

    def snapshot(self) -> dict[str, Any]:
        def clean(value: float) -> float:
            return int(value) if float(value).is_integer() else round(value, 3)

        with self._lock:
            totals: dict[str, float] = defaultdict(float)
            for counter in self.by_service.values():
                for name, value in counter.items():
                    totals[name] += value
            return {
                "totals": {k: clean(v) for k, v in sorted(totals.items())},
                "by_service": {
                    s: {k: clean(v) for k, v in sorted(c.items())} for s, c in sorted(self.by_service.items())
                },
                "rejections_by_code": {k: clean(v) for k, v in sorted(self.rejections.items())},
                "emf_blobs": self.blobs,
            }


class LogSink:
    """Writes each function's log lines to OUT/logs/<service>.jsonl and pulls EMF blobs out."""

    def __init__(self, logs_dir: Path, metrics: MetricTotals) -> None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        self._dir = logs_dir
        self._metrics = metrics
        self._lock = threading.Lock()
        self._files: dict[str, TextIO] = {}
        self.last_problem: dict[str, str] = {}  # correlation id (source key) -> last warning/error

    def _file(self, name: str) -> TextIO:
        if name not in self._files:
            # line-buffered: OUT/logs is current while a run (or --keep-running) goes on
            self._files[name] = (self._dir / f"{name}.jsonl").open("a", encoding="utf-8", buffering=1)
        return self._files[name]

    def add(self, service: str, result: InvocationResult, extra: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            logs, emf = self._file(service), self._file("metrics")
            for raw in result.log_lines:
                doc = json_object(raw)
                if doc is not None and "_aws" in doc:
                    self._metrics.add(doc)
                    emf.write(raw.rstrip() + "\n")
                    continue
                line = raw
                if doc is None:  # plain text (print, a warning): wrapped so the file stays JSON lines
                    doc = {"level": "INFO", "message": raw, "service": service, "raw": True}
                    line = json.dumps(doc, ensure_ascii=False)
                logs.write(line.rstrip() + "\n")
                level = str(doc.get("level", "")).upper()
                correlation = doc.get("correlation_id")
                if level in ("WARNING", "ERROR", "CRITICAL") and isinstance(correlation, str):
                    detail = doc.get("detail")
                    text = str(doc.get("message", "")) + (f" ({detail})" if detail else "")
                    self.last_problem[correlation] = text[:300]
            record = {
                "function": result.function,
                "request_id": result.request_id,
                "started_at": result.started_at,
                "duration_ms": round(result.duration_ms, 1),
                "ok": result.ok,
                "timed_out": result.timed_out,
                "error_type": result.error_type,
                "error_message": result.error_message,
                "cold_start": result.cold_start,
                "init_ms": round(result.init_ms, 1) if result.init_ms is not None else None,
                "peak_rss_mb": round(result.peak_rss_kb / 1024, 1),
                "worker_pid": result.worker_pid,
                **(extra or {}),
            }
            self._file("invocations").write(json.dumps(record) + "\n")

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def json_object(line: str) -> dict[str, Any] | None:
    """One log line as a JSON object; None for plain text, bad JSON or another JSON type."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
