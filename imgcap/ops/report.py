"""``imgcap report --out report.html``: the local runtime's gallery, built from a stack's bucket.

Each upload under ``images/`` (sorted by key, at most ``--limit``) becomes one entry: its bytes,
its caption record and its error record when they exist. Error records whose upload is gone
(``source_missing``) are shown too. Each image is reduced to the report's small JPEG preview as soon
as it is read; an upload above ``--max-image-mb`` is previewed from its 1280x720 encoded copy.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcap.ops.bucket import (
    ObjectSummary,
    RecordUnreadable,
    list_objects,
    list_sources,
    map_concurrently,
    read_bytes,
    read_json,
    source_key_of,
)
from imgcap.ops.context import OpsContext
from imgcap.ops.upload import normalise_prefix
from imgcap.progress import Progress
from lambdas.shared import keys

DEFAULT_LIMIT = 200
DEFAULT_MAX_IMAGE_MB = 40.0  # the report's own preview limit


@dataclass(frozen=True, slots=True)
class Selected:
    source_key: str
    image: ObjectSummary | None  # None: only an error record is left
    caption_key: str | None
    error_key: str | None


def _optional_json(s3: Any, bucket: str, key: str | None) -> dict[str, Any] | None:
    if key is None:
        return None
    try:
        return read_json(s3, bucket, key)
    except RecordUnreadable as exc:
        return {"error_code": "unreadable_record", "message": str(exc), "stage": "report"}


def _image_bytes(s3: Any, bucket: str, item: Selected, max_bytes: int) -> bytes | None:
    if item.image is None:
        return None
    if item.image.size <= max_bytes:
        return read_bytes(s3, bucket, item.source_key)
    encoded = read_bytes(s3, bucket, keys.encoded_key(item.source_key))
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def select(
    images: Sequence[ObjectSummary],
    caption_keys: set[str],
    error_keys: dict[str, str],
    limit: int,
) -> list[Selected]:
    """Uploads first (by key), then error records without an upload; at most ``limit``."""
    chosen: list[Selected] = []
    for image in sorted(images, key=lambda o: o.key)[:limit]:
        c_key, e_key = keys.caption_key(image.key), keys.error_key(image.key)
        chosen.append(
            Selected(
                image.key,
                image,
                c_key if c_key in caption_keys else None,
                e_key if e_key in error_keys else None,
            )
        )
    with_upload = {keys.error_key(image.key) for image in images}
    for e_key, source_key in sorted(error_keys.items(), key=lambda kv: kv[1]):
        if len(chosen) >= limit:
            break
        if e_key not in with_upload:
            chosen.append(Selected(source_key, None, None, e_key))
    return chosen


def run(
    ctx: OpsContext,
    *,
    out: Path,
    limit: int = DEFAULT_LIMIT,
    prefix: str | None = None,
    max_image_mb: float = DEFAULT_MAX_IMAGE_MB,
    concurrency: int = 8,
) -> Path:
    from imgcap.report import ReportEntry, thumbnail_jpeg, write_report

    clean = normalise_prefix(prefix)
    rel_prefix = f"{clean}/" if clean else ""
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    images = list_sources(s3, bucket, keys.IMAGES_PREFIX + rel_prefix)
    caption_keys = {o.key for o in list_objects(s3, bucket, keys.CAPTIONS_PREFIX + rel_prefix)}
    # Error keys map to their upload by name; records of very long (hashed) keys carry source.key.
    error_keys = {
        o.key: source_key_of({}, o.key, keys.ERRORS_PREFIX, keys.ERROR_SUFFIX)
        for o in list_objects(s3, bucket, keys.ERRORS_PREFIX + rel_prefix)
    }
    chosen = select(images, caption_keys, error_keys, max(0, limit))
    max_bytes = int(max_image_mb * 1024 * 1024)

    def load(item: Selected) -> Any:
        caption = _optional_json(s3, bucket, item.caption_key)
        error = _optional_json(s3, bucket, item.error_key)
        source_key = item.source_key
        if item.image is None and error is not None:
            source_key = source_key_of(error, item.error_key or "", keys.ERRORS_PREFIX, keys.ERROR_SUFFIX)
        data = _image_bytes(s3, bucket, item, max_bytes)
        # Keep only a small preview in memory, not every full-size upload until the page is written.
        preview = thumbnail_jpeg(data) if data else None
        return ReportEntry(source_key=source_key, image_bytes=preview, caption=caption, error=error)

    entries: list[Any] = []
    failures = 0
    with Progress("report", total=len(chosen), stream=ctx.err, enabled=len(chosen) >= 50) as progress:
        for item, entry in map_concurrently(
            load, chosen, concurrency, on_done=lambda _i, _r: progress.advance()
        ):
            if isinstance(entry, Exception):
                failures += 1
                ctx.warn(f"left out {item.source_key}: {type(entry).__name__}: {entry}")
            else:
                entries.append(entry)

    captioned = sum(1 for e in entries if e.caption is not None)
    rejected = sum(1 for e in entries if e.error is not None)
    # Tiles describe the bucket (under the prefix), not only the entries shown.
    with_caption = sum(1 for o in images if keys.caption_key(o.key) in caption_keys)
    with_error = sum(1 for o in images if keys.error_key(o.key) in error_keys)
    summary = {
        "images": len(images),
        "captioned": with_caption,
        "rejected": len(error_keys),
        "pending": sum(
            1
            for o in images
            if keys.caption_key(o.key) not in caption_keys and keys.error_key(o.key) not in error_keys
        ),
        "uploads_with_error": with_error,
        "shown": len(entries),
        "stack": ctx.stack.name,
        "bucket": bucket,
        "region": ctx.stack.region,
    }
    if len(images) > limit:
        summary["note"] = f"first {limit} of {len(images)} images by key (raise --limit to see more)"
    where = f"s3://{bucket}/{keys.IMAGES_PREFIX}{rel_prefix}"
    path = write_report(out, entries, title=f"Image captions: {ctx.stack.name} ({where})", summary=summary)
    ctx.say(
        f"wrote {path} ({len(entries)} entries: {captioned} captioned, {rejected} with errors"
        + (f", {failures} left out" if failures else "")
        + ")"
    )
    return Path(path)
