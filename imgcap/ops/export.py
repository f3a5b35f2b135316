"""``imgcap export``: one manifest row per caption, as JSON Lines or CSV.

For dataset builders and search indexers. Every field of the caption record is kept by default
(``--fields a,b,c`` chooses, in that order): nested fields are joined with ``_``
(``source.etag`` -> ``source_etag``, ``resize.policy`` -> ``resize_policy``), the token counts
under ``usage`` keep their own names (``input_tokens``...), lists stay lists (a JSON array in a
CSV cell). ``image_key`` says which image, ``status`` (``captioned``) what the row is. The
familiar columns come first (image_key, encoded_key, caption, model_id, input_tokens,
output_tokens, stop_reason, captioned_at, source_etag, status), the rest sorted by name.
``--include-errors`` adds one row per error record (``status`` = ``error``; its ``message`` is
``error_message``). Rows are sorted by image key; docs/schemas/export-row.schema.json says what
a row holds.

CSV cells that a spreadsheet would run as a formula (a text starting with ``=``, ``+``, ``-``,
``@``, a tab, a carriage return or a NUL) are written with a leading ``'`` so they stay text
(OWASP "CSV Injection", CWE-1236); numbers are written as they are. JSON Lines is data, not a
sheet: unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from imgcap.ops.aws import OpsError
from imgcap.ops.bucket import list_objects, read_records, source_key_of
from imgcap.ops.context import OpsContext
from imgcap.progress import Progress
from lambdas.shared import keys

FORMATS = ("jsonl", "csv")
# The columns every caption row has, first and in this order (what earlier exports held).
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
    "status",
    # caption-format structured (issue 15): empty for text captions; tags a JSONL array, in CSV ";"-joined
    "alt_text",
    "tags",
    "text_in_image",
)
ERROR_COLUMNS = ("stage", "error_code", "error_message")
# Nested objects whose leaves keep their own names (not ``usage_input_tokens``).
_UNPREFIXED = frozenset({"usage"})
# Renamed so an error row's message does not read as a caption's: ``message`` -> ``error_message``.
_ERROR_RENAMES = {"message": "error_message"}
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0")
_PROGRESS_FROM = 200


@dataclass(frozen=True, slots=True)
class ExportResult:
    captions: int
    errors: int
    unreadable: int
    destination: str


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects joined with ``_`` (``usage``'s leaves unprefixed); lists and scalars as they are."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, Mapping):
            inner = "" if (not prefix and name in _UNPREFIXED) else f"{prefix}{name}_"
            out.update(flatten(value, inner))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _etag(record: Mapping[str, Any]) -> str:
    source = record.get("source")
    etag = source.get("etag") if isinstance(source, Mapping) else None
    return str(etag or "").strip('"')


def caption_row(record: dict[str, Any], record_key: str) -> dict[str, Any]:
    image_key = source_key_of(record, record_key, keys.CAPTIONS_PREFIX, keys.CAPTION_SUFFIX)
    row = flatten(record)
    encoded = row.get("encoded_key")
    if not encoded:
        try:
            encoded = keys.encoded_key(image_key)
        except keys.KeyError_:
            encoded = ""
    row.update(image_key=image_key, encoded_key=encoded, source_etag=_etag(record), status="captioned")
    if not isinstance(row.get("tags", []), list):
        row["tags"] = []
    for name in ("caption", "model_id", "stop_reason", "captioned_at", "alt_text", "text_in_image"):
        row.setdefault(name, "")
    return row


def error_row(record: dict[str, Any], record_key: str) -> dict[str, Any]:
    image_key = source_key_of(record, record_key, keys.ERRORS_PREFIX, keys.ERROR_SUFFIX)
    row = {_ERROR_RENAMES.get(k, k): v for k, v in flatten(record).items()}
    row.update(image_key=image_key, source_etag=_etag(record), status="error")
    for name in ("stage", "error_code", "error_message"):
        row.setdefault(name, "")
    return row


def columns(rows: Sequence[Mapping[str, Any]], include_errors: bool) -> tuple[str, ...]:
    """Every column any row has: the familiar ones first, then the rest by name."""
    first = CAPTION_COLUMNS + (ERROR_COLUMNS if include_errors else ())
    rest = sorted({name for row in rows for name in row} - set(first))
    return first + tuple(rest)


def parse_fields(text: str) -> tuple[str, ...]:
    """``--fields a,b,c`` as names (blanks dropped, duplicates kept once); ValueError when empty."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError("--fields needs at least one field name, e.g. --fields image_key,caption")
    return names


def choose(available: Sequence[str], fields: Sequence[str] | None, *, any_rows: bool) -> tuple[str, ...]:
    """The columns to write: ``fields`` (each must be a column of some row), or every available one.

    Without rows any name is taken (the header alone is written): a script's ``--fields`` works
    on an empty bucket too.
    """
    if fields is None:
        return tuple(available)
    unknown = [f for f in fields if f not in available] if any_rows else []
    if unknown:
        raise OpsError(f"--fields: unknown field(s) {', '.join(unknown)}; available: {', '.join(available)}")
    return tuple(fields)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: text a spreadsheet would evaluate gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ";".join(value)  # tags (caption-format structured): one cell, ";"-joined
    elif isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_rows(fh: TextIO, rows: Iterable[Mapping[str, Any]], fmt: str, cols: Sequence[str]) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(fh, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: csv_cell(row.get(c)) for c in cols})
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


def build_rows(
    captions: Mapping[str, dict[str, Any]], errors: Mapping[str, dict[str, Any]], include_errors: bool
) -> list[dict[str, Any]]:
    rows = [caption_row(doc, key) for key, doc in captions.items()]
    if include_errors:
        rows += [error_row(doc, key) for key, doc in errors.items()]
    rows.sort(key=lambda r: (str(r["image_key"]), str(r.get("status", ""))))
    return rows


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
    fields: Sequence[str] | None = None,
) -> ExportResult:
    captions, bad_captions = _read(ctx, keys.CAPTIONS_PREFIX, concurrency)
    errors: dict[str, dict[str, Any]] = {}
    bad_errors = 0
    if include_errors:
        errors, bad_errors = _read(ctx, keys.ERRORS_PREFIX, concurrency)
    rows = build_rows(captions, errors, include_errors)
    cols = choose(columns(rows, include_errors), fields, any_rows=bool(rows))
    buffer = io.StringIO()
    written = write_rows(buffer, rows, fmt, cols)
    if out is None or str(out) == "-":
        ctx.out.write(buffer.getvalue())
        destination = "standard output"
    else:
        _write_atomically(out, buffer.getvalue())
        destination = str(out)
    ctx.err.write(
        f"imgcap export: wrote {written} row(s) ({len(captions)} caption(s)"
        + (f", {len(errors)} error(s)" if include_errors else "")
        + f") with {len(cols)} field(s) as {fmt} to {destination}\n"
    )
    return ExportResult(len(captions), len(errors), bad_captions + bad_errors, destination)
