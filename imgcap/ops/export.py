"""``imgcap export``: one manifest row per caption, as JSON Lines or CSV.

For dataset builders and search indexers: the image key, the encoded (1280x720 PNG, base64) key,
the caption, the model, token counts, stop reason, when it was captioned and the source ETag that
says which version of the image the caption describes. ``--include-errors`` adds one row per
error record (``status`` = ``error``, with its stage, code and message). Rows are sorted by image key.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from imgcap.ops.bucket import as_dict, list_objects, read_records, source_key_of
from imgcap.ops.context import OpsContext
from imgcap.progress import Progress
from lambdas.shared import keys

FORMATS = ("jsonl", "csv")
CAPTION_COLUMNS = (
    "image_key",
    "encoded_key",
    "caption",
    "model_id",
    "input_tokens",
    "output_tokens",
    "stop_reason",
    "captioned_at",
    "source_etag",
    # caption-format structured (issue 15): empty for text captions; tags a JSONL array, in CSV ";"-joined
    "alt_text",
    "tags",
    "text_in_image",
)
ERROR_COLUMNS = ("status", "stage", "error_code", "error_message")
_PROGRESS_FROM = 200


@dataclass(frozen=True, slots=True)
class ExportResult:
    captions: int
    errors: int
    unreadable: int
    destination: str


def caption_row(record: dict[str, Any], record_key: str) -> dict[str, Any]:
    usage = as_dict(record.get("usage"))
    image_key = source_key_of(record, record_key, keys.CAPTIONS_PREFIX, keys.CAPTION_SUFFIX)
    encoded = record.get("encoded_key")
    if not encoded:
        try:
            encoded = keys.encoded_key(image_key)
        except keys.KeyError_:
            encoded = ""
    return {
        "image_key": image_key,
        "encoded_key": encoded,
        "caption": record.get("caption", ""),
        "model_id": record.get("model_id", ""),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "stop_reason": record.get("stop_reason", ""),
        "captioned_at": record.get("captioned_at", ""),
        "source_etag": str(as_dict(record.get("source")).get("etag") or "").strip('"'),
        "alt_text": record.get("alt_text", ""),
        "tags": record.get("tags") if isinstance(record.get("tags"), list) else [],
        "text_in_image": record.get("text_in_image", ""),
    }


def error_row(record: dict[str, Any], record_key: str) -> dict[str, Any]:
    image_key = source_key_of(record, record_key, keys.ERRORS_PREFIX, keys.ERROR_SUFFIX)
    return {
        "image_key": image_key,
        "encoded_key": "",
        "caption": "",
        "model_id": "",
        "input_tokens": None,
        "output_tokens": None,
        "stop_reason": "",
        "captioned_at": "",
        "source_etag": str(as_dict(record.get("source")).get("etag") or "").strip('"'),
        "status": "error",
        "stage": record.get("stage", ""),
        "error_code": record.get("error_code", ""),
        "error_message": record.get("message", ""),
    }


def columns(include_errors: bool) -> tuple[str, ...]:
    return CAPTION_COLUMNS + (ERROR_COLUMNS if include_errors else ())


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return ";".join(str(v) for v in value) if isinstance(value, list) else value


def write_rows(fh: TextIO, rows: Iterable[dict[str, Any]], fmt: str, include_errors: bool) -> int:
    cols = columns(include_errors)
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(fh, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_cell(row.get(c)) for c in cols})
            count += 1
    else:
        for row in rows:
            fh.write(json.dumps({c: row.get(c) for c in cols}, ensure_ascii=False) + "\n")
            count += 1
    return count


def _read(ctx: OpsContext, prefix: str, concurrency: int) -> tuple[dict[str, dict[str, Any]], int]:
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    record_keys = [o.key for o in list_objects(s3, bucket, prefix) if o.key.endswith(".json")]
    show = len(record_keys) >= _PROGRESS_FROM
    with Progress(
        f"reading {prefix}", len(record_keys), stream=ctx.err, unit="record", enabled=show
    ) as progress:
        documents, failures = read_records(
            s3, bucket, record_keys, concurrency, on_done=lambda _k, _r: progress.advance()
        )
    for key, exc in sorted(failures.items()):
        ctx.warn(f"skipped {key}: {exc}")
    return documents, len(failures)


def _rows(
    captions: dict[str, dict[str, Any]], errors: dict[str, dict[str, Any]], include_errors: bool
) -> Iterator[dict[str, Any]]:
    rows = [dict(caption_row(doc, key), status="captioned") for key, doc in captions.items()]
    if include_errors:
        rows += [error_row(doc, key) for key, doc in errors.items()]
    rows.sort(key=lambda r: (str(r["image_key"]), str(r.get("status", ""))))
    yield from rows


def _write_atomically(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(
    ctx: OpsContext,
    *,
    fmt: str = "jsonl",
    out: Path | None = None,
    include_errors: bool = False,
    concurrency: int = 16,
) -> ExportResult:
    captions, bad_captions = _read(ctx, keys.CAPTIONS_PREFIX, concurrency)
    errors: dict[str, dict[str, Any]] = {}
    bad_errors = 0
    if include_errors:
        errors, bad_errors = _read(ctx, keys.ERRORS_PREFIX, concurrency)
    buffer = io.StringIO()
    written = write_rows(buffer, _rows(captions, errors, include_errors), fmt, include_errors)
    if out is None or str(out) == "-":
        ctx.out.write(buffer.getvalue())
        destination = "standard output"
    else:
        _write_atomically(out, buffer.getvalue())
        destination = str(out)
    ctx.err.write(
        f"imgcap export: wrote {written} row(s) ({len(captions)} caption(s)"
        + (f", {len(errors)} error(s)" if include_errors else "")
        + f") as {fmt} to {destination}\n"
    )
    return ExportResult(len(captions), len(errors), bad_captions + bad_errors, destination)
