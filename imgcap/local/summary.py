"""The end of a local run: summary.json's figures, and OUT's captions, errors, summary and report."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from imgcap.local.emulator import SqsEventSource
from imgcap.local.functions import CAPTION_SERVICE, RESIZE_SERVICE
from imgcap.local.ledger import Ledger, Upload, parse_iso
from imgcap.local.options import LocalOptions
from imgcap.local.standin import BedrockStandin
from imgcap.local.telemetry import MetricTotals
from imgcap.local.workers import WorkerPool
from imgcap.ops.bucket import list_objects, read_bytes
from imgcap.report import ReportEntry, encoded_png, write_report
from lambdas.shared import contract, keys
from lambdas.shared.contract import auto_concurrency, cost_per_1000_captions, reachable_rpm
from lambdas.shared.observability import Metric

REPORT_IMAGE_MAX_BYTES = 40 * 1024 * 1024  # larger uploads get no thumbnail in report.html


SUMMARY_SCHEMA_VERSION = 1  # docs/schemas/summary.schema.json

# Metrics whose EMF unit is not a count: summed, so their name gets the unit (the handlers emit
# them with these units: lambdas/caption/handler.py, lambdas/resize/handler.py).
METRIC_UNITS = {
    Metric.RESIZE_MS: "ms",
    Metric.MODEL_LATENCY: "ms",
    Metric.PACING_WAIT_MS: "ms",
    Metric.END_TO_END_AGE: "s",
}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as the records' ISO 8601 form (UTC, milliseconds, ``Z``); None stays None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def captions_per_minute(captions: int, seconds: float | None) -> float | None:
    """The one definition of the rate: ``captions`` over ``seconds``, per minute; None without time."""
    if seconds is None or seconds <= 0:
        return None
    return round(captions / seconds * 60, 2)


@dataclass(frozen=True, slots=True)
class Rates:
    """Captions per minute two ways, from the same function (the live line and summary.json).

    ``run``: every caption over the whole run so far, from the start (servers starting, uploads,
    waiting included) to now, or to the moment the run stopped waiting (summary.json's waited_s).
    ``steady``: the steady state, from the first caption to the last: the captions after the first
    over that window (so one caption has no steady rate, and a slow start does not count).
    """

    captioned: int
    run_s: float
    steady_s: float | None
    run: float | None
    steady: float | None


def rates(caption_times: Sequence[float], run_s: float) -> Rates:
    """``caption_times``: when each caption was written (epoch seconds), any order."""
    steady_s = max(caption_times) - min(caption_times) if len(caption_times) > 1 else None
    return Rates(
        captioned=len(caption_times),
        run_s=run_s,
        steady_s=steady_s,
        run=captions_per_minute(len(caption_times), run_s),
        steady=captions_per_minute(len(caption_times) - 1, steady_s),
    )


def rate_text(r: Rates) -> str:
    """The rates as the live line and the final line print them (labelled, same numbers)."""
    run = "-" if r.run is None else f"{r.run:.1f}"
    steady = "-" if r.steady is None else f"{r.steady:.1f}"
    return f"{run} captions/min over the run, {steady} steady"


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


def _with_units(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Metric sums named with their unit (``ModelLatency`` -> ``ModelLatency_total_ms``)."""
    return {(f"{k}_total_{METRIC_UNITS[k]}" if k in METRIC_UNITS else k): v for k, v in figures.items()}


def metric_figures(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(snapshot)
    out["totals"] = _with_units(snapshot["totals"])
    out["by_service"] = {s: _with_units(c) for s, c in snapshot["by_service"].items()}
    return out


def _standin_figures(stand: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in stand.items() if k != "paid_by_image"}
    out["first_call_at"] = iso(stand.get("first_call_at"))
    out["last_ok_at"] = iso(stand.get("last_ok_at"))
    return out


def split_unfinished(
    unfinished: Sequence[str], work_in_flight: int, never_uploaded: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(not_final, lost): uploads without a final state are not final while any work is in flight
    (or files wait to be uploaded), and lost only when nothing is left that could finish them."""
    keys_ = sorted(unfinished) + sorted(never_uploaded)
    if work_in_flight > 0 or never_uploaded:
        return keys_, []
    return [], keys_


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
    work_in_flight: int = 0,
    never_uploaded: Sequence[str] = (),
    waited_s: float | None = None,
) -> dict[str, Any]:
    """Everything summary.json holds (docs/schemas/summary.schema.json).

    ``last_problem``: the last warning logged per source key. ``waited_s``: from the start until
    the run stopped waiting (every upload final, or the timeout), the window of the run rate and
    of the live line's last update, so both show the same figure. ``work_in_flight``: invocations
    running and messages queued when the run stopped waiting; ``never_uploaded``: files the
    uploader had not stored yet. An upload without a final state is ``not_final`` while any work
    is still in flight (a run that timed out), and ``lost`` only when nothing anywhere could
    still finish it: the work vanished.
    """
    finished = time.time()
    states = ledger.states()
    failed = {k for k, _ in upload_errors}
    # an upload may have landed since the caller looked: each file is counted once
    never_uploaded = [k for k in never_uploaded if k not in states and k not in failed]
    counts = Counter(s for s in states.values() if s)
    not_final, lost = split_unfinished(
        sorted(k for k, s in states.items() if not s), work_in_flight, never_uploaded
    )
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
    waited = elapsed_s if waited_s is None else min(waited_s, elapsed_s)
    rate = rates(ledger.caption_times(), waited)
    snapshot = metrics.snapshot()
    totals = snapshot["totals"]
    rejected_by_code = Counter(
        str((ledger.error_for(u) or {}).get("error_code"))
        for u in ledger.uploads.values()
        if states[u.key] == "rejected"
    )
    stand = standin.stats() if standin else None
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "started_at": iso(finished - elapsed_s),
        "finished_at": iso(finished),
        "images": len(ledger.uploads) + len(upload_errors) + len(never_uploaded),
        "captioned": counts["captioned"],
        "rejected": counts["rejected"],
        "dead_lettered": counts["dead_lettered"],
        "resize_failed": counts["resize_failed"],
        "upload_failed": len(upload_errors),
        "not_final": len(not_final),
        "lost": len(lost),
        "model_calls": stand["requests"] if stand else int(totals.get(Metric.MODEL_CALLS, 0)),
        "paid_calls": stand["paid_calls"] if stand else None,
        "throttled": stand["throttled"] if stand else int(totals.get(Metric.MODEL_THROTTLES, 0)),
        "duplicate_paid_calls": duplicate_paid_calls(standin, ledger, s3, bucket) if standin else None,
        "duplicates_avoided": int(totals.get(Metric.DUPLICATES_AVOIDED, 0)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "estimated_cost_usd": round(cost_usd, 6),
        "elapsed_s": round(elapsed_s, 2),
        "waited_s": round(waited, 2),
        "steady_s": _round(rate.steady_s),
        "captions_per_minute_run": rate.run,
        "captions_per_minute_steady": rate.steady,
        "pacing_rpm": options.pacing_rpm or options.rpm,
        "standin_quota_rpm": options.rpm if options.captioner == "standin" else None,
        "concurrency": options.workers,
        "batch_size": options.batch_size,
        "captioner": options.captioner,
        "faults": options.faults.describe(),
        "upload_to_caption_p50_s": _round(percentile(ages, 50)),
        "upload_to_caption_p95_s": _round(percentile(ages, 95)),
        "upload_to_caption_max_s": _round(max(ages) if ages else None),
        "timed_out": timed_out,
        "not_final_keys": not_final,
        "lost_keys": lost,
        "upload_failed_details": [{"key": k, "error": e} for k, e in upload_errors],
        "rejected_by_code": dict(sorted(rejected_by_code.items())),
        "dead_lettered_details": [
            {
                "key": key,
                "receive_count": facts["receive_count"],
                "last_problem": last_problem.get(key, ""),
            }
            for key, facts in sorted(ledger.dead_lettered.items())
        ],
        "resize_failed_details": [{"key": k, **v} for k, v in sorted(ledger.resize_failed.items())],
        "metrics": metric_figures(snapshot),
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
    summary["cost_per_1000_captions"] = _cost(summary, resize_pool, caption_pool)
    summary["capacity"] = _capacity(options, totals)
    if stand is not None:
        summary["standin"] = _standin_figures(stand)
    return summary


def _cost(summary: Mapping[str, Any], *pools: WorkerPool) -> dict[str, Any]:
    """Measured: the run's tokens at the list price, its invocations' GB-seconds at Lambda's."""
    gb_seconds = sum(p.stats.gb_seconds(p.spec.memory_mb) for p in pools)
    cost = cost_per_1000_captions(
        captions=int(summary["captioned"]),
        input_tokens=float(summary["input_tokens"] or 0),
        output_tokens=float(summary["output_tokens"] or 0),
        gb_seconds=gb_seconds,
        lambda_requests=sum(p.stats.invocations for p in pools),
        bedrock_usd=summary.get("estimated_cost_usd"),  # each caption at its model and tier
    )
    return {**cost, "lambda_gb_seconds": round(gb_seconds, 3)}


def _capacity(options: LocalOptions, totals: Mapping[str, float]) -> dict[str, Any]:
    """What the caption fleet could do at the call time it measured (issue 13)."""
    calls = totals.get(Metric.MODEL_CALLS, 0)
    observed = totals.get(Metric.MODEL_LATENCY, 0) / calls / 1000 if calls else None
    return {
        "concurrency": options.workers,
        "auto": options.concurrency_was_auto,
        "expected_call_s": round(options.expected_latency_s, 2),
        "observed_call_s": _round(observed),
        "reachable_rpm": round(reachable_rpm(options.workers, observed), 1) if observed else None,
        "suggested_concurrency": auto_concurrency(options.rpm, observed) if observed else None,
        "shortfall_reports": int(totals.get(Metric.CAPACITY_SHORTFALL, 0)),
    }


def done_line(summary: Mapping[str, Any]) -> str:
    """The one line a run ends with (the rates as the live line showed them)."""
    steady_s = summary.get("steady_s")
    r = Rates(
        captioned=summary["captioned"],
        run_s=summary["waited_s"],
        steady_s=steady_s,
        run=summary["captions_per_minute_run"],
        steady=summary["captions_per_minute_steady"],
    )
    lost = summary.get("lost_keys") or []
    return (
        f"done: {summary['captioned']} captioned, {summary['rejected']} rejected, "
        f"{summary['dead_lettered']} dead-lettered, {summary['resize_failed']} resize failed, "
        f"{summary['upload_failed']} upload failed, {summary['not_final']} not final, "
        f"{summary['lost']} lost"
        + (f" ({', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''})" if lost else "")
        + f"; model calls {summary['model_calls']} (throttled {summary['throttled']}); "
        f"{rate_text(r)} ({summary['waited_s']:g} s run"
        + (f", {steady_s:g} s first to last caption)" if steady_s is not None else ")")
    )


def prepare_out(out: Path) -> None:
    """Create OUT and remove what an earlier run wrote there (only our own artefacts)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("captions", "errors", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("summary.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "report_files", ignore_errors=True)


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
        model_png_for=lambda key: encoded_png(read_bytes(s3, bucket, keys.encoded_key(key))),
    )


def report_entry(ledger: Ledger, upload: Upload, summary: Mapping[str, Any]) -> ReportEntry:
    """One upload's row in report.html: its caption, its error record, or why it has neither."""
    caption = ledger.caption_for(upload)
    error = None if caption else ledger.error_for(upload)
    if caption is None and error is None:
        dead = ledger.dead_lettered.get(upload.key)
        failed = ledger.resize_failed.get(upload.key)
        if dead is not None:
            details = summary.get("dead_lettered_details") or []
            reason = next((d["last_problem"] for d in details if d["key"] == upload.key), "")
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
        elif upload.key in (summary.get("lost_keys") or ()):
            error = {"stage": "-", "error_code": "lost", "message": "no final state and no work left for it"}
        else:
            error = {"stage": "-", "error_code": "not_final", "message": "still in flight when the run ended"}
    # The report reads the file (and the encoded copy) only while writing its image files.
    path = upload.path if upload.size <= REPORT_IMAGE_MAX_BYTES else None
    return ReportEntry(source_key=upload.key, image_bytes=None, caption=caption, error=error, image_path=path)
