"""Resize/encode one uploaded object: the stage's use case, over injected adapters.

For each ``images/<path>`` object: read it (only the version the event announced), turn it into an
exact-size PNG (``imaging.resize_and_encode``), store the base64 text at ``base64_images/<path>.txt``
and send one small message to the caption queue. Unusable input becomes ``errors/<path>.json``.

Idempotent: when ``base64_images/<path>.txt`` already holds this source ETag (an S3 event retry, or
a crash between write and send), the encode is skipped but the message is sent again; the caption
stage makes sure a duplicate message costs no second model call.

Versions (``lambdas.shared.versions``): the encoded object and an error record are written only
while this upload is the source's current version, conditionally on what was there, so a slow
encode of an old upload never replaces a newer one's output, and its success only ever clears a
rejection of another, older version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from lambdas.resize.events import ObjectRef
from lambdas.shared import keys
from lambdas.shared.config import ImageSpec
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.records import ImageMessage, error_record, utc_now_iso
from lambdas.shared.storage import SOURCE_ETAG_META, ObjectMissing, PreconditionFailed, Queue, Store
from lambdas.shared.versions import (
    Published,
    Snapshot,
    Version,
    clear_stale,
    publish,
    publish_error_record,
)

STAGE = "resize"
SOURCE_MISSING_MESSAGE = "the upload was deleted before it was processed"


class Outcome(StrEnum):
    RESIZED = "resized"
    DUPLICATE = "duplicate"  # already encoded for this ETag: message re-sent, no re-encode
    REJECTED = "rejected"  # error record written
    SUPERSEDED = "superseded"  # a newer upload replaced the object; its own event will handle it
    IGNORED = "ignored"  # folder marker or key outside images/


@dataclass(frozen=True, slots=True)
class Result:
    key: str
    outcome: Outcome
    error_code: str | None = None
    message: str = ""
    duration_ms: float = 0.0


class Encoded(Protocol):
    """What the encoder returns (structural: ``imaging.EncodedImage`` satisfies it)."""

    @property
    def b64(self) -> bytes: ...
    @property
    def source_format(self) -> str: ...
    @property
    def source_width(self) -> int: ...
    @property
    def source_height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


Encoder = Callable[[bytes, ImageSpec], Encoded]


def max_source_bytes(spec: ImageSpec) -> int:
    """Largest upload we read into memory: one byte per allowed pixel (compressed sizes are far below)."""
    return spec.max_pixels


def _reject(store: Store, ref: ObjectRef, code: ErrorCode, message: str, error_type: str) -> Published:
    """Publish the rejection of this version; a version that is no longer current writes nothing.

    ``source_missing`` is about a version that cannot be current (its object is gone), so it is
    published without the currency check; a later upload's success clears it.
    """
    record = error_record(
        stage=STAGE,
        error_code=code.value,
        error_type=error_type,
        message=message,
        retryable=False,
        bucket=ref.bucket,
        source_key=ref.key,
        source_etag=ref.etag,
    )
    return publish_error_record(store, record, require_current=code is not ErrorCode.SOURCE_MISSING)


def process_object(
    ref: ObjectRef,
    *,
    store: Store,
    queue: Queue,
    spec: ImageSpec,
    encode: Encoder,
    clock: Callable[[], float] = time.perf_counter,
) -> Result:
    """Handle one uploaded object. Permanent problems return REJECTED; S3/SQS faults raise."""
    started = clock()

    def done(outcome: Outcome, code: str | None = None, message: str = "") -> Result:
        return Result(ref.key, outcome, code, message, (clock() - started) * 1000)

    def reject(code: ErrorCode, message: str, error_type: str) -> Result:
        if _reject(store, ref, code, message, error_type) is Published.SUPERSEDED:
            return done(
                Outcome.SUPERSEDED, code.value, f"not recorded, a newer upload replaced it: {message}"
            )
        return done(Outcome.REJECTED, code.value, message)

    if keys.is_folder_marker(ref.key):
        return done(Outcome.IGNORED, message="folder marker")
    try:
        encoded_key = keys.encoded_key(ref.key)
    except keys.KeyError_ as exc:
        return done(Outcome.IGNORED, message=str(exc))

    # Size first: an empty or oversized upload is rejected without reading it.
    if ref.etag is None or ref.size is None:
        head = store.head(ref.key)
        if head is None:
            return reject(ErrorCode.SOURCE_MISSING, SOURCE_MISSING_MESSAGE, "NoSuchKey")
        ref = ObjectRef(ref.bucket, ref.key, ref.etag or head.etag, head.size, ref.event_time)
    size = ref.size or 0
    if size == 0:
        return reject(ErrorCode.EMPTY_FILE, "the upload is empty (0 bytes)", "EmptyFile")
    limit = max_source_bytes(spec)
    if size > limit:
        message = f"the upload is {size:,} bytes; this function reads at most {limit:,} bytes"
        return reject(ErrorCode.FILE_TOO_LARGE, message, "FileTooLarge")

    existing = store.head(encoded_key)
    if existing is not None and existing.metadata.get(SOURCE_ETAG_META) == ref.etag:
        width = int(existing.metadata.get("source-width", "0") or 0)
        height = int(existing.metadata.get("source-height", "0") or 0)
        made = _Made(  # what that object says of itself (None where it says nothing)
            existing.metadata.get("policy") or None,
            _meta_int(existing.metadata, "width"),
            _meta_int(existing.metadata, "height"),
        )
        # Finish what a crashed earlier attempt may have left: the stale rejection, the message.
        clear_stale(store, keys.error_key(ref.key), Version(ref.key, ref.etag))
        _send(queue, ref, encoded_key, width, height, made)
        return done(Outcome.DUPLICATE)

    try:
        data, info = store.get_bytes(ref.key, if_match=ref.etag)
    except PreconditionFailed:
        return done(
            Outcome.SUPERSEDED, message="object changed since the event; the newer upload has its own event"
        )
    except ObjectMissing:
        return reject(ErrorCode.SOURCE_MISSING, SOURCE_MISSING_MESSAGE, "NoSuchKey")

    try:
        encoded = encode(data, spec)
    except Rejection as rejection:
        return reject(rejection.code, rejection.message, rejection.error_type)
    del data

    metadata = {
        SOURCE_ETAG_META: info.etag,
        "source-format": encoded.source_format,
        "source-width": str(encoded.source_width),
        "source-height": str(encoded.source_height),
        "width": str(encoded.width),
        "height": str(encoded.height),
        "policy": spec.policy.value,
    }

    def write(if_none_match: bool, if_match: str | None) -> str:
        return store.put_bytes(
            encoded_key,
            encoded.b64,
            "text/plain",
            metadata=metadata,
            if_none_match=if_none_match,
            if_match=if_match,
        )

    version = Version(ref.key, info.etag)
    # ``existing`` (read above, before the source) is publish's step 1: its currency check and
    # write still follow it, so re-reading the encoded key here would only repeat that HEAD.
    published = publish(
        store, encoded_key, version, write, replace_same_version=False, snapshot=Snapshot(existing)
    )
    if published is Published.SUPERSEDED:
        return done(Outcome.SUPERSEDED, message="a newer upload replaced the object while it was encoded")
    # A re-upload that now succeeds clears an older rejection, never a newer upload's.
    clear_stale(store, keys.error_key(ref.key), version)
    made = _Made(spec.policy.value, encoded.width, encoded.height)
    _send(queue, ref, encoded_key, encoded.source_width, encoded.source_height, made)
    return done(Outcome.RESIZED if published is Published.WRITTEN else Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class _Made:
    """How the encoded image was made: the resize policy and its size (carried to the caption)."""

    policy: str | None
    width: int | None
    height: int | None


def _meta_int(metadata: dict[str, str], name: str) -> int | None:
    value = metadata.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _send(queue: Queue, ref: ObjectRef, encoded_key: str, width: int, height: int, made: _Made) -> None:
    message = ImageMessage(
        bucket=ref.bucket,
        source_key=ref.key,
        source_etag=ref.etag or "",
        encoded_key=encoded_key,
        width=width,
        height=height,
        uploaded_at=ref.event_time or utc_now_iso(),
        resize_policy=made.policy,
        target_width=made.width,
        target_height=made.height,
    )
    queue.send(message.to_json())
