"""The end of a local run: summary.json's figures, and OUT's captions, errors, summary and report."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from imgcap.local.emulator import SqsEventSource
from imgcap.local.functions import CAPTION_SERVICE, RESIZE_SERVICE
from imgcap.local.ledger import Ledger, Upload
from imgcap.local.options import LocalOptions
from imgcap.local.standin import BedrockStandin
from imgcap.local.telemetry import MetricTotals
from imgcap.local.workers import WorkerPool
from imgcap.ops.bucket import list_objects, read_bytes
from imgcap.report import ReportEntry, write_report
from lambdas.shared import contract, keys
from lambdas.shared.observability import Metric

REPORT_IMAGE_MAX_BYTES = 40 * 1024 * 1024  # larger uploads get no thumbnail in report.html


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_iso(text: Any) -> float | None:
    """A record's ISO-8601 timestamp as epoch seconds; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def busy_window(ledger: Ledger, standin: BedrockStandin | None, source: SqsEventSource) -> float | None:
    """Seconds from the first model call to the last caption written."""
    first = None
    if standin is not None:
        first = standin.stats().get("first_call_at")
    first = first or source.stats.first_invoke_at
    written = [parse_iso(doc.get("captioned_at")) for _, doc in ledger.captions.values()]
    last = max((t for t in written if t is not None), default=None)
    if first is None or last is None or last <= first:
        return None
    return last - first


def duplicate_paid_calls(standin: BedrockStandin, ledger: Ledger, s3: Any, bucket: str) -> int:
    """Paid (answered) calls beyond one per distinct upload whose encoded image had that content."""
    sources: Counter[str] = Counter()
    for upload in ledger.uploads.values():
        if upload.key not in ledger.encoded:
            continue
        try:
            text = read_bytes(s3, bucket, keys.encoded_key(upload.key))
            if text is None:
                raise ValueError("missing")
            sources[hashlib.sha256(base64.b64decode(text)).hexdigest()] += 1
        except (binascii.Error, ValueError, ClientError) as exc:  # gone or unreadable: not a source
            print(f"(could not read {upload.key}'s encoded image: {exc})", file=sys.stderr)
    paid: Mapping[str, int] = standin.stats()["paid_by_image"]
    return sum(max(0, n - max(1, sources.get(sha, 0))) for sha, n in paid.items())


def build_summary(
    *,
    options: LocalOptions,
    ledger: Ledger,
    upload_errors: Sequence[tuple[str, str]],
    metrics: MetricTotals,
    last_problem: Mapping[str, str],
    standin: BedrockStandin | None,
    s3: Any,
    bucket: str,
    elapsed_s: float,
    timed_out: bool,
    resize_pool: WorkerPool,
    caption_pool: WorkerPool,
    source: SqsEventSource,
) -> dict[str, Any]:
    """Everything summary.json holds (``last_problem``: the last warning logged per source key)."""
    states = ledger.states()
    counts = Counter(s for s in states.values() if s)
    not_final = sorted(k for k, s in states.items() if not s) + sorted(k for k, _ in upload_errors)
    ages: list[float] = []
    input_tokens = output_tokens = 0
    cost_usd = 0.0  # each caption at its model and service tier (contract.MODEL_PRICES)
    for upload in ledger.uploads.values():
        record = ledger.caption_for(upload)
        if record is None:
            continue
        usage = record.get("usage") or {}
        input_tokens += int(usage.get("input_tokens") or 0)
        output_tokens += int(usage.get("output_tokens") or 0)
        cost_usd += contract.record_cost_usd(record) or 0.0
        start, end = parse_iso(record.get("uploaded_at")), parse_iso(record.get("captioned_at"))
        if start is not None and end is not None:
            ages.append(max(0.0, end - start))
    busy = busy_window(ledger, standin, source)
    snapshot = metrics.snapshot()
    totals = snapshot["totals"]
    rejected_by_code = Counter(
        str((ledger.error_for(u) or {}).get("error_code"))
        for u in ledger.uploads.values()
        if states[u.key] == "rejected"
    )
    stand = standin.stats() if standin else None
    summary: dict[str, Any] = {
        "images": len(ledger.uploads) + len(upload_errors),
        "captioned": counts["captioned"],
        "rejected": counts["rejected"],
        "dead_lettered": counts["dead_lettered"],
        "resize_failed": counts["resize_failed"],
        "lost": len(not_final),
        "model_calls": stand["requests"] if stand else int(totals.get(Metric.MODEL_CALLS, 0)),
        "paid_calls": stand["paid_calls"] if stand else None,
        "throttled": stand["throttled"] if stand else int(totals.get(Metric.MODEL_THROTTLES, 0)),
        "duplicate_paid_calls": duplicate_paid_calls(standin, ledger, s3, bucket) if standin else None,
        "duplicates_avoided": int(totals.get(Metric.DUPLICATES_AVOIDED, 0)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "estimated_cost_usd": round(cost_usd, 6),
        "elapsed_s": round(elapsed_s, 2),
        "caption_busy_s": round(busy, 2) if busy else None,
        "captions_per_minute": round(counts["captioned"] / busy * 60, 2) if busy else None,
        "rpm": options.rpm,
        "pacing_rpm": options.pacing_rpm or options.rpm,
        "concurrency": options.concurrency,
        "batch_size": options.batch_size,
        "captioner": options.captioner,
        "faults": options.faults.describe(),
        "upload_to_caption_p50_s": _round(percentile(ages, 50)),
        "upload_to_caption_p95_s": _round(percentile(ages, 95)),
        "upload_to_caption_max_s": _round(max(ages) if ages else None),
        "timed_out": timed_out,
        "not_final": not_final,
        "upload_errors": [{"key": k, "error": e} for k, e in upload_errors],
        "rejected_by_code": dict(sorted(rejected_by_code.items())),
        "dead_letters": [
            {
                "key": key,
                "receive_count": facts["receive_count"],
                "last_problem": last_problem.get(key, ""),
            }
            for key, facts in sorted(ledger.dead_letters.items())
        ],
        "resize_failures": [{"key": k, **v} for k, v in sorted(ledger.resize_failures.items())],
        "metrics": snapshot,
        "functions": {
            RESIZE_SERVICE: resize_pool.stats.as_dict(resize_pool.spec.memory_mb),
            CAPTION_SERVICE: caption_pool.stats.as_dict(caption_pool.spec.memory_mb),
        },
        "event_source": {
            "batches": source.stats.batches,
            "records": source.stats.records,
            "deleted": source.stats.deleted,
            "item_failures": source.stats.item_failures,
            "whole_batch_failures": source.stats.whole_batch_failures,
            "duplicates_sent": source.stats.duplicates_sent,
        },
    }
    if stand is not None:
        stand = dict(stand)
        stand.pop("paid_by_image", None)
        summary["standin"] = stand
    return summary


def done_line(summary: Mapping[str, Any]) -> str:
    """The one line a run ends with."""
    return (
        f"done: {summary['captioned']} captioned, {summary['rejected']} rejected, "
        f"{summary['dead_lettered']} dead-lettered, {summary['resize_failed']} resize failures, "
        f"{summary['lost']} lost; model calls {summary['model_calls']} (throttled {summary['throttled']}); "
        f"{summary['captions_per_minute']} captions/min over {summary['caption_busy_s']} s"
    )


def prepare_out(out: Path) -> None:
    """Create OUT and remove what an earlier run wrote there (only our own artefacts)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("captions", "errors", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("summary.json", "report.html"):
        (out / name).unlink(missing_ok=True)


def safe_target(out: Path, key: str) -> Path | None:
    """Where ``key`` goes below OUT; None for a key that would land outside it."""
    target = (out / key).resolve()
    return target if target.is_relative_to(out.resolve()) else None


def write_outputs(
    out: Path, images: Path, ledger: Ledger, summary: dict[str, Any], s3: Any, bucket: str
) -> Path:
    """Copy captions/ and errors/ as stored, write summary.json and report.html; the report's path."""
    for prefix in (keys.CAPTIONS_PREFIX, keys.ERRORS_PREFIX):
        for obj in list_objects(s3, bucket, prefix):
            target = safe_target(out, obj.key)
            data = None if target is None else read_bytes(s3, bucket, obj.key)
            if target is None or data is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    entries = [report_entry(ledger, upload, summary) for upload in ledger.uploads.values()]
    return write_report(
        out / "report.html",
        entries,
        title=f"imgcap local: {images}",
        summary={k: v for k, v in summary.items() if not isinstance(v, dict | list)},
    )


def report_entry(ledger: Ledger, upload: Upload, summary: Mapping[str, Any]) -> ReportEntry:
    """One upload's row in report.html: its caption, its error record, or why it has neither."""
    caption = ledger.caption_for(upload)
    error = None if caption else ledger.error_for(upload)
    if caption is None and error is None:
        dead = ledger.dead_letters.get(upload.key)
        failed = ledger.resize_failures.get(upload.key)
        if dead is not None:
            reason = next((d["last_problem"] for d in summary["dead_letters"] if d["key"] == upload.key), "")
            error = {
                "stage": "caption",
                "error_code": "dead_lettered",
                "message": f"moved to the DLQ after {dead['receive_count']} receives. {reason}".strip(),
            }
        elif failed is not None:
            error = {
                "stage": "resize",
                "error_code": "resize_failed",
                "message": f"{failed.get('error_type')}: {failed.get('error_message')}",
            }
        else:
            error = {"stage": "-", "error_code": "lost", "message": "no final state before the run ended"}
    data: bytes | None = None
    if upload.size <= REPORT_IMAGE_MAX_BYTES:
        try:
            data = upload.path.read_bytes()
        except OSError:
            data = None
    return ReportEntry(source_key=upload.key, image_bytes=data, caption=caption, error=error)
