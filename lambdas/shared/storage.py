"""Small adapters over S3 and SQS: what the stages need, with S3/SQS errors mapped to our own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError

from lambdas.shared import aws, keys

# Object metadata the stages write and read back (S3 user metadata: x-amz-meta-<name>).
SOURCE_ETAG_META = "source-etag"
STAGE_META = "stage"


class ObjectMissing(Exception):
    """The key does not exist (404 / NoSuchKey)."""


class PreconditionFailed(Exception):
    """A conditional request's condition did not hold (412): IfMatch / IfNoneMatch."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    etag: str  # without quotes
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: Any = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in {"NoSuchKey", "404", "NotFound"} or _status(exc) == 404


def _precondition(exc: ClientError) -> bool:
    return _code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"} or _status(exc) in {
        412,
        409,
    }


class Store(Protocol):
    bucket: str

    def head(self, key: str) -> ObjectInfo | None: ...
    def get_bytes(self, key: str, if_match: str | None = None) -> tuple[bytes, ObjectInfo]: ...
    def put_bytes(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str: ...
    def put_json(
        self,
        key: str,
        document: Any,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str: ...
    def delete(self, key: str, if_match: str | None = None) -> None: ...


class S3Store:
    """Object store on one bucket. ETags are returned without quotes."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            etag=str(r["ETag"]).strip('"'),
            size=int(r.get("ContentLength", 0)),
            metadata=dict(r.get("Metadata", {})),
            last_modified=r.get("LastModified"),
        )

    def get_bytes(self, key: str, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            kwargs["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
        try:
            r = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from exc
            if _precondition(exc):
                raise PreconditionFailed(key) from exc
            raise
        body = r["Body"].read()
        info = ObjectInfo(
            key=key,
            etag=str(r["ETag"]).strip('"'),
            size=int(r.get("ContentLength", len(body))),
            metadata=dict(r.get("Metadata", {})),
            last_modified=r.get("LastModified"),
        )
        return body, info

    def put_bytes(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Write; with ``if_none_match`` only if absent, with ``if_match`` only over that ETag.

        Raises ``PreconditionFailed`` when the condition does not hold. Returns the new ETag.
        """
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "Metadata": metadata or {},
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match:
            kwargs["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
        try:
            r = self._s3.put_object(**kwargs)
        except ClientError as exc:
            if _precondition(exc):
                raise PreconditionFailed(key) from exc
            raise
        return str(r.get("ETag", "")).strip('"')

    def put_json(
        self,
        key: str,
        document: Any,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        body = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False).encode("utf-8")
        return self.put_bytes(
            key,
            body,
            "application/json",
            metadata=metadata,
            if_none_match=if_none_match,
            if_match=if_match,
        )

    def delete(self, key: str, if_match: str | None = None) -> None:
        """Delete; with ``if_match`` only if the object still has that ETag (``PreconditionFailed``).

        A conditional delete of a key that is already gone raises ``ObjectMissing``.
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            kwargs["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
        try:
            self._s3.delete_object(**kwargs)
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from exc
            if _precondition(exc):
                raise PreconditionFailed(key) from exc
            raise


def put_error_record(
    store: Store, record: Mapping[str, Any], *, if_none_match: bool = False, if_match: str | None = None
) -> str:
    """Store an ``errors/`` record (``records.error_record``) under the key derived from its source.

    Tagged with the source ETag and the stage in metadata, so a HEAD tells which upload and which
    stage it belongs to without reading it. Callers go through ``versions.publish`` so a stale
    version never overwrites a newer record.
    """
    source = record["source"]
    return store.put_json(
        keys.error_key(source["key"]),
        record,
        metadata={SOURCE_ETAG_META: source["etag"] or "", STAGE_META: record["stage"]},
        if_none_match=if_none_match,
        if_match=if_match,
    )


class Queue(Protocol):
    def send(self, body: str) -> str: ...
    def change_visibility(self, receipt_handle: str, seconds: int) -> None: ...


class SqsQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    def send(self, body: str) -> str:
        r = self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return str(r["MessageId"])

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=int(seconds)
        )


class QueueByArn:
    """A queue named by its ARN (an SQS event record's ``eventSourceARN``), resolved on first use.

    The caption function has no queue URL in its environment; ``arn:aws:sqs:REGION:ACCOUNT:NAME``
    names it, and GetQueueUrl answers correctly against real SQS and moto alike.
    """

    def __init__(self, arn: str) -> None:
        self.arn = arn
        self._queue: SqsQueue | None = None

    def _resolve(self) -> SqsQueue:
        if self._queue is None:
            parts = self.arn.split(":")
            if len(parts) != 6 or parts[2] != "sqs":
                raise ValueError(f"not an SQS queue ARN: {self.arn!r}")
            sqs = aws.client("sqs")
            url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
            self._queue = SqsQueue(sqs, url)
        return self._queue

    def send(self, body: str) -> str:
        return self._resolve().send(body)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._resolve().change_visibility(receipt_handle, seconds)
