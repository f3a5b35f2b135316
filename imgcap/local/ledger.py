"""The uploads of a local run and the final state each reached, read back from the bucket and queues."""

from __future__ import annotations

import mimetypes
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from imgcap.local.options import LocalRunError
from imgcap.local.provision import LocalStack
from imgcap.local.telemetry import json_object
from imgcap.ops.bucket import list_objects, read_json
from imgcap.ops.status import queue_depth
from lambdas.shared import keys

UPLOAD_THREADS = 4


@dataclass
class Upload:
    key: str
    path: Path
    size: int
    etag: str = ""
    uploaded_at: float = 0.0


def collect_files(images: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``images`` as (``images/<relative posix path>``, path), sorted."""
    if not images.is_dir():
        raise LocalRunError(f"--images {images} is not a directory")
    found: list[tuple[str, Path]] = []
    for path in sorted(images.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(images).as_posix()
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            print(
                f"skipping {path!s}: its name is not valid UTF-8, so it cannot be an S3 key", file=sys.stderr
            )
            continue
        found.append((keys.IMAGES_PREFIX + rel, path))
    return found


class Ledger:
    """Which uploads reached which final state, read back from the bucket and the queues."""

    def __init__(self, s3: Any, sqs: Any, stack: LocalStack) -> None:
        self._s3 = s3
        self._sqs = sqs
        self._stack = stack
        self._lock = threading.Lock()
        self.uploads: dict[str, Upload] = {}
        self.captions: dict[str, tuple[str, dict[str, Any]]] = {}  # caption key -> (object etag, record)
        self.errors: dict[str, tuple[str, dict[str, Any]]] = {}
        self.encoded: set[str] = set()
        # Named after the final state each one means (summary.json uses the same names).
        self.dead_lettered: dict[str, dict[str, Any]] = {}  # source key -> DLQ message facts
        self.resize_failed: dict[str, dict[str, Any]] = {}  # source key -> destination record facts

    def add_upload(self, upload: Upload) -> None:
        with self._lock:
            self.uploads[upload.key] = upload

    def _list(self, prefix: str) -> dict[str, str]:
        return {o.key: o.etag for o in list_objects(self._s3, self._stack.bucket, prefix)}

    def _fetch(self, listing: dict[str, str], cache: dict[str, tuple[str, dict[str, Any]]], key: str) -> None:
        etag = listing.get(key)
        if etag is None or (key in cache and cache[key][0] == etag):
            return
        try:
            doc = read_json(self._s3, self._stack.bucket, key)
        except Exception:
            return  # replaced or half-visible: the next refresh reads it again
        cache[key] = (etag, doc)

    def _drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Read messages without consuming them: they stay in the queue and visible
        (``imgcap dlq`` and ``imgcap redrive`` still see them)."""
        from imgcap.ops.dlq import peek_messages

        return peek_messages(self._sqs, queue_url, limit=1000)

    def refresh(self) -> None:
        with self._lock:
            uploads = list(self.uploads.values())
        captions = self._list(keys.CAPTIONS_PREFIX)
        errors = self._list(keys.ERRORS_PREFIX)
        for upload in uploads:
            self._fetch(captions, self.captions, keys.caption_key(upload.key))
            self._fetch(errors, self.errors, keys.error_key(upload.key))
        # Once every upload so far is known to be encoded (resize runs well ahead of captioning),
        # re-listing base64_images/ (thousands of keys, every poll) could only say it again: an
        # encoded object stays for the run. So it is listed only while some upload is not.
        if any(u.key not in self.encoded for u in uploads):
            encoded = self._list(keys.ENCODED_PREFIX)
            self.encoded = {u.key for u in uploads if keys.encoded_key(u.key) in encoded}
        for message in self._drain(self._stack.dlq_url):
            doc = json_object(message.get("Body", "")) or {}
            key = doc.get("source_key")
            if isinstance(key, str):
                # moto carries the count over to the DLQ; our own first peek added one more (and
                # every later peek another: the count is taken from the first)
                count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
                known = self.dead_lettered.get(key)
                if known is None or known.get("etag") != doc.get("source_etag"):
                    self.dead_lettered[key] = {
                        "etag": doc.get("source_etag"),
                        "receive_count": max(0, count - 1),
                    }
        for message in self._drain(self._stack.resize_failure_queue_url):
            from lambdas.resize.events import object_refs

            doc = json_object(message.get("Body", "")) or {}
            payload = doc.get("requestPayload") or {}
            response = doc.get("responsePayload") or {}
            for ref in object_refs(payload):
                self.resize_failed[ref.key] = {
                    "etag": ref.etag,
                    "error_type": response.get("errorType"),
                    "error_message": response.get("errorMessage"),
                }

    def caption_for(self, upload: Upload) -> dict[str, Any] | None:
        entry = self.captions.get(keys.caption_key(upload.key))
        if entry and (entry[1].get("source") or {}).get("etag") == upload.etag:
            return entry[1]
        return None

    def error_for(self, upload: Upload) -> dict[str, Any] | None:
        entry = self.errors.get(keys.error_key(upload.key))
        if entry and (entry[1].get("source") or {}).get("etag") in (upload.etag, None, ""):
            return entry[1]
        return None

    def state(self, upload: Upload) -> str | None:
        if not upload.etag:
            return None
        if self.caption_for(upload) is not None:
            return "captioned"
        if self.error_for(upload) is not None:
            return "rejected"
        dead = self.dead_lettered.get(upload.key)
        if dead is not None and dead.get("etag") in (upload.etag, None):
            return "dead_lettered"
        failed = self.resize_failed.get(upload.key)
        if failed is not None and failed.get("etag") in (upload.etag, None):
            return "resize_failed"
        return None

    def states(self) -> dict[str, str | None]:
        with self._lock:
            uploads = list(self.uploads.values())
        return {u.key: self.state(u) for u in uploads}

    def caption_times(self) -> list[float]:
        """When each current caption was written (epoch seconds, from its ``captioned_at``), sorted."""
        with self._lock:
            uploads = list(self.uploads.values())
        times = [parse_iso((self.caption_for(u) or {}).get("captioned_at")) for u in uploads]
        return sorted(t for t in times if t is not None)

    def queued_messages(self) -> int:
        """Messages still waiting or in flight in the S3-event and caption queues (not the DLQ)."""
        return sum(
            queue_depth(self._sqs, url).total for url in (self._stack.events_queue_url, self._stack.queue_url)
        )


def parse_iso(text: Any) -> float | None:
    """A record's ISO-8601 timestamp as epoch seconds; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Uploader:
    """Puts every file into the bucket (a few at a time) and enters each stored upload in the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()
        self.uploaded = 0
        self.errors: list[tuple[str, str]] = []  # (key, why the upload failed)

    def upload_all(self, s3: Any, files: Sequence[tuple[str, Path]], bucket: str) -> None:
        def one(item: tuple[str, Path]) -> None:
            key, path = item
            data = path.read_bytes()
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            upload = Upload(key=key, path=path, size=len(data))
            try:
                response = s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
            except Exception as exc:  # summary.json: upload_failed, with the reason
                with self._lock:
                    self.errors.append((key, str(exc)))
                return
            upload.etag = str(response["ETag"]).strip('"')
            upload.uploaded_at = time.time()
            self._ledger.add_upload(upload)
            with self._lock:
                self.uploaded += 1

        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload") as pool:
            list(pool.map(one, files))
