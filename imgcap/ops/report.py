"""``imgcap report --out report.html``: the local runtime's gallery, built from a stack's bucket.

Each upload under ``images/`` (sorted by key; all of them unless ``--limit`` asks for fewer, and
then the page and the CLI line say "N of M") becomes one entry: its caption record and its error
record when they exist, its upload and the encoded 1280x720 PNG the model was sent. Error records
whose upload is gone (``source_missing``) are shown too. Each entry's images are written to the
report's files folder as soon as they are read, so memory holds only the records; an upload above
``--max-image-mb`` is not downloaded (its preview is made from the encoded copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcap.ops.aws import OpsError
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

DEFAULT_LIMIT: int | None = None  # every entry
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
    if item.image is None or item.image.size > max_bytes:
        return None
    return read_bytes(s3, bucket, item.source_key)


def _model_png(s3: Any, bucket: str, item: Selected) -> bytes | None:
    from imgcap.report import encoded_png

    if item.image is None:
        return None
    return encoded_png(read_bytes(s3, bucket, keys.encoded_key(item.source_key)))


def select(
    images: Sequence[ObjectSummary],
    caption_keys: set[str],
    error_keys: dict[str, str],
    limit: int | None = None,
) -> tuple[list[Selected], int]:
    """Uploads first (by key), then error records without an upload; at most ``limit`` (None: all).

    Also returns how many there are in all, so a limited page can say "N of M".
    """
    with_upload = {keys.error_key(image.key) for image in images}
    orphans = sorted(
        ((e_key, source_key) for e_key, source_key in error_keys.items() if e_key not in with_upload),
        key=lambda kv: kv[1],
    )
    total = len(images) + len(orphans)
    cap = total if limit is None else max(0, limit)
    chosen: list[Selected] = []
    for image in sorted(images, key=lambda o: o.key)[:cap]:
        c_key, e_key = keys.caption_key(image.key), keys.error_key(image.key)
        chosen.append(
            Selected(
                image.key,
                image,
                c_key if c_key in caption_keys else None,
                e_key if e_key in error_keys else None,
            )
        )
    for e_key, source_key in orphans[: max(0, cap - len(chosen))]:
        chosen.append(Selected(source_key, None, None, e_key))
    return chosen, total


def run(
    ctx: OpsContext,
    *,
    out: Path,
    limit: int | None = DEFAULT_LIMIT,
    prefix: str | None = None,
    max_image_mb: float = DEFAULT_MAX_IMAGE_MB,
    concurrency: int = 8,
) -> Path:
    from imgcap.report import ReportAssets, ReportEntry, ReportPathError, report_path, write_report

    try:
        path = report_path(out)  # a bad --out fails before any listing or download
    except ReportPathError as exc:
        raise OpsError(f"--out {exc}") from None
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
    chosen, total = select(images, caption_keys, error_keys, limit)
    max_bytes = int(max_image_mb * 1024 * 1024)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        assets = ReportAssets(path)
        assets.prepare()
    except OSError as exc:
        raise OpsError(f"--out {out}: cannot write the report there ({exc.strerror or exc})") from None

    def load(item: Selected) -> Any:
        caption = _optional_json(s3, bucket, item.caption_key)
        error = _optional_json(s3, bucket, item.error_key)
        source_key = item.source_key
        if item.image is None and error is not None:
            source_key = source_key_of(error, item.error_key or "", keys.ERRORS_PREFIX, keys.ERROR_SUFFIX)
        # The images go to their files now; memory keeps only the records.
        previews = assets.write(
            source_key, _image_bytes(s3, bucket, item, max_bytes), _model_png(s3, bucket, item)
        )
        return ReportEntry(
            source_key=source_key, image_bytes=None, caption=caption, error=error, previews=previews
        )

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

    captioned = sum(1 for e in entries if e.status == "captioned")
    with_errors = sum(1 for e in entries if e.status == "failed")
    pending = sum(1 for e in entries if e.status == "pending")
    # Bucket-wide figures go to the page's summary block; the header counts the entries shown.
    summary = {
        "stack": ctx.stack.name,
        "bucket": bucket,
        "region": ctx.stack.region,
        "prefix": f"{keys.IMAGES_PREFIX}{rel_prefix}",
        "uploads": len(images),
        "uploads_with_caption": sum(1 for o in images if keys.caption_key(o.key) in caption_keys),
        "error_records": len(error_keys),
        "entries_in_bucket": total,
        "entries_shown": len(entries),
    }
    limited = len(chosen) < total
    hints = [f"first {len(chosen)} by key (--limit {limit}; drop it to see all)"] if limited else []
    if failures:
        hints.append(f"{failures} could not be read (see the warnings imgcap printed)")
    where = f"s3://{bucket}/{keys.IMAGES_PREFIX}{rel_prefix}"
    try:
        write_report(
            path,
            entries,
            title=f"Image captions: {ctx.stack.name} ({where})",
            summary=summary,
            total=total if limited or failures else None,
            limit_hint="; ".join(hints) or None,
        )
    except (ReportPathError, OSError) as exc:
        raise OpsError(f"--out {out}: cannot write the report ({exc})") from None
    scope = f"{len(entries)} of {total} entries" if len(entries) < total else f"{len(entries)} entries"
    ctx.say(
        f"wrote {path} ({scope}: {captioned} captioned, {with_errors} with errors, {pending} without a result"
        + (f", {failures} left out" if failures else "")
        + ")"
    )
    return Path(path)
