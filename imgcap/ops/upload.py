"""``imgcap upload DIR``: ``aws s3 sync DIR s3://BUCKET/images/`` with progress and skip-unchanged.

Filters work like ``aws s3 sync``'s ``--exclude``/``--include`` (AWS CLI reference, "Use of Exclude
and Include Filters"): every file is included by default, the filters are applied in the order
given and the last one that matches a file decides; each pattern is matched against the file's
path relative to DIR (POSIX separators) with ``*`` (any characters, ``/`` included), ``?``,
``[seq]`` and ``[!seq]``. So ``--exclude '*' --include '*.jpg'`` sends only JPEGs, and
``--include '*.jpg' --exclude '*'`` sends nothing.

Key layout: ``images/[SUBDIR/]<path relative to DIR>`` with POSIX separators, any file type (the
resize stage records an error for what it cannot use). A file is skipped when the object already
there has the same size and the same MD5: files under 8 MiB are sent with one ``PutObject`` (with
``Content-MD5``, so S3 verifies the bytes and the ETag is the MD5 on SSE-S3 buckets); larger ones
go through multipart ``upload_file`` and carry their MD5 as ``md5`` metadata, because a multipart
ETag is not an MD5. Every upload carries that metadata, so KMS-encrypted buckets compare too.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import mimetypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from imgcap.ops.aws import OpsError, explain
from imgcap.ops.bucket import ObjectSummary, list_objects, map_concurrently
from imgcap.ops.context import OpsContext, human_bytes
from imgcap.progress import Progress
from lambdas.shared import keys

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MD5_METADATA = "md5"  # S3 returns user metadata keys in lower case
_CHUNK = 1024 * 1024

UPLOADED = "uploaded"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: Path
    relative: str  # POSIX path below DIR
    key: str
    size: int


@dataclass(slots=True)
class UploadSummary:
    uploaded: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_uploaded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (key, ETag) of each upload
    dry_run: bool = False
    would_upload: int = 0  # dry run: files that would be sent (new or changed)
    would_upload_bytes: int = 0
    destination: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "destination": self.destination,
            "dry_run": self.dry_run,
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes_uploaded": self.bytes_uploaded,
            "failures": [{"file": f, "reason": r} for f, r in self.failures],
        }
        if self.dry_run:
            out["would_upload"] = self.would_upload
            out["would_upload_bytes"] = self.would_upload_bytes
        return out


def normalise_prefix(prefix: str | None) -> str:
    """``--prefix`` as a clean relative folder below ``images/`` ('' for none)."""
    if not prefix:
        return ""
    parts = [p for p in prefix.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise OpsError(f"--prefix {prefix!r} must not contain '..'")
    return "/".join(parts)


def object_key(relative: str, prefix: str) -> str:
    return keys.IMAGES_PREFIX + (f"{prefix}/" if prefix else "") + relative


EXCLUDE = "exclude"
INCLUDE = "include"
Filter = tuple[str, str]  # (EXCLUDE or INCLUDE, pattern), in command-line order


def is_included(relative: str, filters: Sequence[Filter]) -> bool:
    """aws s3 sync's rule: included unless excluded; the last matching filter wins."""
    included = True
    for kind, pattern in filters:
        if fnmatch.fnmatchcase(relative, pattern.replace("\\", "/")):
            included = kind == INCLUDE
    return included


def plan(root: Path, prefix: str = "", filters: Sequence[Filter] = ()) -> list[LocalFile]:
    """Every regular file below ``root`` (sorted by relative path) that the filters keep."""
    if not root.is_dir():
        raise OpsError(f"{root} is not a directory")
    found: list[LocalFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if not path.is_file():
                continue  # sockets, broken symlinks, ...
            relative = path.relative_to(root).as_posix()
            if not is_included(relative, filters):
                continue
            found.append(LocalFile(path, relative, object_key(relative, prefix), path.stat().st_size))
    return found


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_unchanged(s3: Any, bucket: str, local: LocalFile, md5_hex: str, remote: ObjectSummary) -> bool:
    """Same size and same MD5 (the ETag of a single-part upload, else our ``md5`` metadata)."""
    if remote.size != local.size:
        return False
    if "-" not in remote.etag and remote.etag == md5_hex:
        return True
    head = s3.head_object(Bucket=bucket, Key=local.key)
    return str(head.get("Metadata", {}).get(MD5_METADATA, "")) == md5_hex


def _content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def send(s3: Any, bucket: str, local: LocalFile, md5_hex: str) -> str:
    """Upload one file; the new object's ETag (what the pipeline's records will name)."""
    metadata = {MD5_METADATA: md5_hex}
    content_type = _content_type(local.path)
    if local.size < MULTIPART_THRESHOLD:
        body = local.path.read_bytes()
        response = s3.put_object(
            Bucket=bucket,
            Key=local.key,
            Body=body,
            ContentType=content_type,
            ContentMD5=base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii"),
            Metadata=metadata,
        )
        return str(response.get("ETag", "")).strip('"')
    s3.upload_file(
        str(local.path),
        bucket,
        local.key,
        ExtraArgs={"ContentType": content_type, "Metadata": metadata},
        Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, max_concurrency=4),
    )
    return str(s3.head_object(Bucket=bucket, Key=local.key).get("ETag", "")).strip('"')


def sync_one(s3: Any, bucket: str, local: LocalFile, remote: ObjectSummary | None) -> tuple[str, str]:
    """(UPLOADED and the new ETag) or (SKIPPED and the existing one)."""
    md5_hex = file_md5(local.path)
    if remote is not None and is_unchanged(s3, bucket, local, md5_hex, remote):
        return SKIPPED, remote.etag
    return UPLOADED, send(s3, bucket, local, md5_hex)


def would_send(s3: Any, bucket: str, local: LocalFile, remote: ObjectSummary | None) -> str | None:
    """For a dry run: "new", "changed", or None when the file is unchanged (nothing would be sent)."""
    if remote is None:
        return "new"
    if remote.size != local.size:
        return "changed"
    return None if is_unchanged(s3, bucket, local, file_md5(local.path), remote) else "changed"


def _reason(exc: Exception) -> str:
    explained = explain(exc)
    return explained.message if explained is not None else f"{type(exc).__name__}: {exc}"


def run(
    ctx: OpsContext,
    directory: Path,
    *,
    prefix: str | None = None,
    concurrency: int = 8,
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
    quiet: bool = False,
) -> UploadSummary:
    clean_prefix = normalise_prefix(prefix)
    files = plan(directory, clean_prefix, tuple(filters))
    s3 = ctx.clients.s3
    bucket = ctx.stack.bucket
    destination = f"s3://{bucket}/{object_key('', clean_prefix)}"
    summary = UploadSummary(dry_run=dry_run, destination=destination)
    if not files:
        if not quiet:
            ctx.say(f"nothing to upload: no files in {directory} (after filters)")
        return summary

    listing_prefix = object_key("", clean_prefix)
    remote = {o.key: o for o in list_objects(s3, bucket, listing_prefix)}
    if dry_run:
        _dry_run(ctx, files, remote, summary, concurrency, quiet)
        return summary

    with Progress("upload", total=len(files), stream=ctx.err, unit="file", enabled=not quiet) as progress:

        def work(f: LocalFile) -> tuple[str, str]:
            try:
                outcome = sync_one(s3, bucket, f, remote.get(f.key))
            except Exception:
                progress.advance(outcome=FAILED)
                raise
            progress.advance(outcome=outcome[0])
            return outcome

        for f, result in map_concurrently(work, files, concurrency):
            if isinstance(result, Exception):
                summary.failed += 1
                summary.failures.append((f.relative, _reason(result)))
            elif result[0] == SKIPPED:
                summary.skipped += 1
            else:
                summary.uploaded += 1
                summary.bytes_uploaded += f.size
                summary.sent.append((f.key, result[1]))

    for relative, reason in summary.failures:
        ctx.err.write(f"imgcap upload: failed: {relative}: {reason}\n")
    if not quiet:
        ctx.say(
            f"uploaded {summary.uploaded} file(s) ({human_bytes(summary.bytes_uploaded)}), "
            f"skipped {summary.skipped} unchanged, failed {summary.failed} -> {destination}"
        )
    return summary


def _dry_run(
    ctx: OpsContext,
    files: Sequence[LocalFile],
    remote: dict[str, ObjectSummary],
    summary: UploadSummary,
    concurrency: int,
    quiet: bool,
) -> None:
    """List what would be sent (new or changed files only) and count only those."""
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    for f, state in map_concurrently(
        lambda f: would_send(s3, bucket, f, remote.get(f.key)), files, concurrency
    ):
        if isinstance(state, Exception):
            summary.failed += 1
            summary.failures.append((f.relative, _reason(state)))
            ctx.err.write(f"imgcap upload: cannot compare {f.relative}: {_reason(state)}\n")
        elif state is None:
            summary.skipped += 1
        else:
            summary.would_upload += 1
            summary.would_upload_bytes += f.size
            if not quiet:
                ctx.say(f"(dryrun) upload ({state}): {f.relative} to s3://{bucket}/{f.key}")
    if not quiet:
        ctx.say(
            f"dry run: {summary.would_upload} file(s) ({human_bytes(summary.would_upload_bytes)}) would be "
            f"uploaded to {summary.destination}, {summary.skipped} unchanged would be skipped (nothing sent)"
        )
