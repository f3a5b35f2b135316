"""Reading a job's output back and joining it to the record index on ``recordId``. Pure.

Bedrock writes one ``<input file>.jsonl.out`` per input file; each line has ``recordId`` and either
``modelOutput`` (a Converse response body for a Converse job) or ``error``
(``{"errorCode": ..., "errorMessage": ...}``), and the order of the lines is not guaranteed. So the
join never uses positions: each line is looked up by its record id, a line for an unknown or an
already-seen id is counted and skipped, and whatever the index has that no line answered is
``missing`` (a failed, stopped, expired or partially completed job).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lambdas.backfill.records import IndexEntry
from lambdas.caption.model import Verdict, classify_error

OUTPUT_SUFFIX = ".jsonl.out"
MANIFEST_NAME = "manifest.json.out"


class Kind(StrEnum):
    OUTPUT = "output"  # modelOutput present
    ERROR = "error"  # the record failed inside the job
    MISSING = "missing"  # no line for it


@dataclass(frozen=True, slots=True)
class RecordResult:
    kind: Kind
    model_output: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""


@dataclass(slots=True)
class JoinStats:
    lines: int = 0
    unreadable: int = 0  # not JSON, or no recordId
    unknown: int = 0  # a record id the index does not have
    repeated: int = 0  # a second line for an id already answered
    seen: set[str] = field(default_factory=set)


def parse_line(line: bytes | str) -> tuple[str, RecordResult] | None:
    """(record id, result) of one output line; None when it is not a usable line."""
    try:
        body = json.loads(line)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("recordId"), str):
        return None
    rid = body["recordId"]
    output = body.get("modelOutput")
    if isinstance(output, dict) and "error" not in body:
        return rid, RecordResult(Kind.OUTPUT, model_output=output)
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("errorCode", "")
        return rid, RecordResult(
            Kind.ERROR, error_code=str(code), error_message=str(error.get("errorMessage", ""))
        )
    if isinstance(error, str):
        return rid, RecordResult(Kind.ERROR, error_message=error)
    return rid, RecordResult(Kind.ERROR, error_message="the output line has neither modelOutput nor error")


def join(
    index: Mapping[str, IndexEntry], lines: Iterable[bytes | str], stats: JoinStats
) -> Iterator[tuple[IndexEntry, RecordResult]]:
    """Each index entry that a line answers, once, in the order the lines come."""
    for line in lines:
        if not line.strip():
            continue
        stats.lines += 1
        parsed = parse_line(line)
        if parsed is None:
            stats.unreadable += 1
            continue
        rid, result = parsed
        entry = index.get(rid)
        if entry is None:
            stats.unknown += 1
            continue
        if rid in stats.seen:
            stats.repeated += 1
            continue
        stats.seen.add(rid)
        yield entry, result


def missing(index: Mapping[str, IndexEntry], stats: JoinStats) -> Iterator[tuple[IndexEntry, RecordResult]]:
    """The entries no line answered, in record-id order."""
    for rid in sorted(index):
        if rid not in stats.seen:
            yield index[rid], RecordResult(Kind.MISSING)


def verdict(result: RecordResult) -> Verdict:
    """Whether a failed record is final (an error record) or retryable (back to the online path).

    The batch error carries an HTTP-like status: 400 is a validation error (final only when it is
    about the image, as online), 429 and 5xx are retried; the online classification decides.
    """
    status: int | None
    try:
        status = int(result.error_code)
    except ValueError:
        status = None
    code = "ValidationException" if status == 400 else (result.error_code or "BatchRecordError")
    return classify_error(
        code, result.error_message, http_status=status, receive_count=1, model_error_max_attempts=3
    )


def is_output_file(key: str) -> bool:
    return key.endswith(OUTPUT_SUFFIX)


def parse_manifest(raw: bytes) -> dict[str, int]:
    """The counts of ``manifest.json.out`` (totalRecordCount, processedRecordCount, ...)."""
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    if not isinstance(body, dict):
        return {}
    return {k: int(v) for k, v in body.items() if isinstance(v, int) and not isinstance(v, bool)}
