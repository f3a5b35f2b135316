"""Parse S3 event notifications into object references. Pure: no I/O, no environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    key: str  # URL-decoded
    etag: str | None
    size: int | None
    event_time: str


def object_refs(event: Mapping[str, Any]) -> list[ObjectRef]:
    """Every ``ObjectCreated:*`` record of an S3 event, keys decoded with ``unquote_plus``.

    S3 sends keys URL-encoded with '+' for spaces (``a b+c.jpg`` arrives as ``a+b%2Bc.jpg``).
    The ``s3:TestEvent`` S3 sends when a notification is configured has no ``Records``.
    """
    refs: list[ObjectRef] = []
    for record in event.get("Records") or []:
        if record.get("eventSource") != "aws:s3":
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        raw_key = obj.get("key")
        bucket = (s3.get("bucket") or {}).get("name")
        if not raw_key or not bucket:
            continue
        size = obj.get("size")
        etag = obj.get("eTag") or obj.get("etag")
        refs.append(
            ObjectRef(
                bucket=str(bucket),
                key=unquote_plus(str(raw_key)),
                etag=str(etag).strip('"') if etag else None,
                size=int(size) if isinstance(size, int) else None,
                event_time=str(record.get("eventTime") or ""),
            )
        )
    return refs
