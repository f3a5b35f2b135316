"""Versioned JSON documents that travel between the stages and land in the bucket.

- ``ImageMessage``: the SQS message from resize/encode to caption (never the image bytes).
- ``error_record``: what ``errors/<path>.json`` holds (docs/schemas/error-record.schema.json).
Pure: no boto3, no environment.

Times are ISO 8601 in UTC with milliseconds and a ``Z`` (``utc_now_iso``) everywhere a record
holds one. A message from an older resize function (without the resize fields) still reads: its
``resize_policy`` and target size are None, and the caption record says so with nulls.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

MESSAGE_VERSION = 1
RECORD_SCHEMA_VERSION = 1


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InvalidMessage(ValueError):
    """The SQS body is not a message this version of the caption stage understands."""


@dataclass(frozen=True, slots=True)
class ImageMessage:
    bucket: str
    source_key: str
    source_etag: str
    encoded_key: str
    width: int  # original (after EXIF orientation) width
    height: int
    uploaded_at: str  # S3 event time (ISO 8601), for upload-to-caption age
    # How the resize stage made the encoded image (None in a message from an older resize stage).
    resize_policy: str | None = None  # pad / crop / stretch
    target_width: int | None = None  # the encoded image's size, e.g. 1280 x 720
    target_height: int | None = None
    version: int = MESSAGE_VERSION

    def to_json(self) -> str:
        body = asdict(self)
        body["v"] = body.pop("version")
        for name in ("resize_policy", "target_width", "target_height"):
            if body[name] is None:
                del body[name]  # the shape an older caption stage knows
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> ImageMessage:
        try:
            body = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(f"message body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidMessage("message body is not a JSON object")
        version = body.get("v")
        if version != MESSAGE_VERSION:
            raise InvalidMessage(f"unknown message version {version!r} (expected {MESSAGE_VERSION})")
        try:
            msg = cls(
                bucket=_str(body, "bucket"),
                source_key=_str(body, "source_key"),
                source_etag=_str(body, "source_etag"),
                encoded_key=_str(body, "encoded_key"),
                width=_int(body, "width"),
                height=_int(body, "height"),
                uploaded_at=_str(body, "uploaded_at"),
                resize_policy=_str(body, "resize_policy") if "resize_policy" in body else None,
                target_width=_int(body, "target_width") if "target_width" in body else None,
                target_height=_int(body, "target_height") if "target_height" in body else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidMessage(f"message field invalid: {exc}") from exc
        return msg


def _str(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _int(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def error_record(
    *,
    stage: str,
    error_code: str,
    error_type: str,
    message: str,
    retryable: bool,
    bucket: str,
    source_key: str,
    source_etag: str | None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of ``errors/<path>.json``: stage, stable code, exception type, human message."""
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "stage": stage,
        "error_code": error_code,
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
        "source": {"bucket": bucket, "key": source_key, "etag": source_etag},
        "details": details or {},
        "occurred_at": utc_now_iso(),
    }
