"""Reading the pipeline's bucket: listings by prefix and JSON records, fetched concurrently."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from imgcap.ops.aws import error_code
from lambdas.shared import keys

T = TypeVar("T")
R = TypeVar("R")

PIPELINE_PREFIXES = (keys.IMAGES_PREFIX, keys.ENCODED_PREFIX, keys.CAPTIONS_PREFIX, keys.ERRORS_PREFIX)


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    key: str
    size: int
    etag: str  # without quotes
    last_modified: datetime | None


class RecordUnreadable(Exception):
    """A caption/error object that is missing or is not a JSON object."""


def list_objects(s3: Any, bucket: str, prefix: str) -> list[ObjectSummary]:
    """Every object under ``prefix`` (paginated), folder markers included."""
    found: list[ObjectSummary] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found.append(
                ObjectSummary(
                    key=str(item["Key"]),
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")).strip('"'),
                    last_modified=item.get("LastModified"),
                )
            )
    return found


def list_sources(s3: Any, bucket: str, prefix: str = keys.IMAGES_PREFIX) -> list[ObjectSummary]:
    """Uploads under ``images/`` (folder markers are not uploads)."""
    return [o for o in list_objects(s3, bucket, prefix) if not keys.is_folder_marker(o.key)]


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
            raise RecordUnreadable(f"{key}: missing") from exc
        raise
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RecordUnreadable(f"{key}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise RecordUnreadable(f"{key}: not a JSON object")
    return document


def read_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise


def map_concurrently(
    fn: Callable[[T], R],
    items: Iterable[T],
    concurrency: int,
    on_done: Callable[[T, R | BaseException], None] | None = None,
) -> Iterator[tuple[T, R | Exception]]:
    """Apply ``fn`` to every item on a thread pool; yields (item, result or the exception raised).

    Results come back in the order of ``items``. Exceptions are returned, not raised, so one bad
    object never hides the others; the caller decides what an exception means.
    """

    def guarded(item: T) -> R | Exception:
        try:
            result: R | Exception = fn(item)
        except Exception as exc:  # returned to the caller, which reports it
            result = exc
        if on_done is not None:
            on_done(item, result)
        return result

    materialised: Sequence[T] = list(items)
    if not materialised:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(materialised)))) as pool:
        yield from zip(materialised, pool.map(guarded, materialised), strict=True)


def read_records(
    s3: Any,
    bucket: str,
    record_keys: Iterable[str],
    concurrency: int,
    on_done: Callable[[str, object], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Exception]]:
    """Read many JSON records: (documents by key, failures by key)."""
    documents: dict[str, dict[str, Any]] = {}
    failures: dict[str, Exception] = {}
    for key, result in map_concurrently(
        lambda k: read_json(s3, bucket, k), record_keys, concurrency, on_done=on_done
    ):
        if isinstance(result, Exception):
            failures[key] = result
        else:
            documents[key] = result
    return documents, failures


def as_dict(value: object) -> dict[str, Any]:
    """A nested record field as a dict ({} when absent or of the wrong type)."""
    return value if isinstance(value, dict) else {}


def source_key_of(record: dict[str, Any], record_key: str, prefix: str, suffix: str) -> str:
    """The upload a caption/error record describes: its ``source.key``, else derived from its key.

    Derived keys of very long paths are hashed, so the record's own ``source.key`` is preferred.
    """
    source = record.get("source")
    if isinstance(source, dict) and isinstance(source.get("key"), str) and source["key"]:
        return str(source["key"])
    rel = record_key[len(prefix) :] if record_key.startswith(prefix) else record_key
    if suffix and rel.endswith(suffix):
        rel = rel[: -len(suffix)]
    return keys.IMAGES_PREFIX + rel
