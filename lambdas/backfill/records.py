"""Record ids and the record index of a batch job: recordId <-> (source key, ETag). Pure.

A record id must be short and alphanumeric (Bedrock's input format names it an "alphanumeric
string"), so it is never the S3 key itself: keys can be 1,024 bytes of any UTF-8. Each job numbers
its records ``R0000000001``...; the index (one JSON line per record, under ``batch/jobs/``) maps a
number back to the key, the ETag of the version that was sent, the ETag of our claim (to release
it conditionally) and what the online path's message needs if the record goes back to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from lambdas.shared import keys
from lambdas.shared.contract import BATCH_INPUT_PREFIX, BATCH_JOBS_PREFIX, BATCH_OUTPUT_PREFIX

RECORD_ID_DIGITS = 10
_RECORD_ID = re.compile(rf"^R[0-9]{{{RECORD_ID_DIGITS}}}$")
# Bedrock's job-name pattern allows letters, digits and '-' (botocore ModelInvocationJobName).
_JOB_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9-]")
JOB_NAME_MAX = 63


class IndexError_(ValueError):
    """An index line that is not a record of ours."""


def record_id(number: int) -> str:
    if not 0 <= number < 10**RECORD_ID_DIGITS:
        raise ValueError(f"record number out of range: {number}")
    return f"R{number:0{RECORD_ID_DIGITS}d}"


def is_record_id(value: object) -> bool:
    return isinstance(value, str) and bool(_RECORD_ID.match(value))


@dataclass(frozen=True, slots=True)
class IndexEntry:
    record_id: str
    source_key: str
    source_etag: str
    claim_etag: str
    width: int = 0
    height: int = 0
    uploaded_at: str = ""
    # What the encoded object says of how it was made (None where it says nothing), for the records.
    resize_policy: str | None = None
    target_width: int | None = None
    target_height: int | None = None

    def to_line(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> IndexEntry:
        try:
            body = json.loads(line)
            entry = cls(**body)
        except (TypeError, ValueError) as exc:
            raise IndexError_(f"not an index line: {exc}") from exc
        if not is_record_id(entry.record_id) or not entry.source_key or not entry.source_etag:
            raise IndexError_(f"index line without record id, key or ETag: {line!r:.200}")
        keys.relative_path(entry.source_key)  # raises for a key outside images/
        return entry


def made_of(metadata: dict[str, str]) -> tuple[str | None, int | None, int | None]:
    """(policy, width, height) an encoded object's metadata gives; None where it gives nothing."""

    def number(name: str) -> int | None:
        value = metadata.get(name, "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    return metadata.get("policy") or None, number("width"), number("height")


def read_index(lines: Iterable[bytes]) -> dict[str, IndexEntry]:
    """The index by record id; blank lines are skipped, anything else unreadable raises."""
    index: dict[str, IndexEntry] = {}
    for line in lines:
        if line.strip():
            entry = IndexEntry.from_line(line)
            index[entry.record_id] = entry
    return index


def write_index(entries: Iterable[IndexEntry]) -> Iterator[bytes]:
    for entry in entries:
        yield entry.to_line()


# --------------------------------------------------------------------------- where a job lives


def job_name(stack_name: str, backfill_id: str, part: int) -> str:
    """``<stack>-<backfill id>-<part>``, inside Bedrock's job-name pattern and length."""
    tail = f"-{_JOB_NAME_UNSAFE.sub('', backfill_id)[:24]}-{part:03d}"
    head = _JOB_NAME_UNSAFE.sub("", stack_name)[: JOB_NAME_MAX - len(tail)] or "imgcap"
    return f"{head}{tail}"


def job_document_key(name: str) -> str:
    return keys.batch_job_document_key(name)


def job_index_key(name: str) -> str:
    return f"{BATCH_JOBS_PREFIX}{name}.index.jsonl"


def input_prefix(name: str) -> str:
    return f"{BATCH_INPUT_PREFIX}{name}/"


def input_file_key(name: str, number: int) -> str:
    return f"{input_prefix(name)}part-{number:04d}.jsonl"


def output_prefix(name: str) -> str:
    return f"{BATCH_OUTPUT_PREFIX}{name}/"


def is_job_document_key(key: str) -> bool:
    return key.startswith(BATCH_JOBS_PREFIX) and key.endswith(".json") and not key.endswith(".index.jsonl")
