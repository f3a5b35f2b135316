"""Adapters of the backfill stage: the Bedrock control plane, streamed S3 writes, listings, lines.

- ``BedrockJobs``: create / get / list / stop a model invocation job (boto3 ``bedrock``). Tests
  and the local runtime pass any object with these methods.
- ``S3Files``: write a large object in parts (multipart upload, one part buffered at a time, so
  memory stays at ``PART_BYTES`` whatever the file size), list keys, read an object line by line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

PART_BYTES = 8 * 1024 * 1024  # S3's minimum part is 5 MiB (every part but the last)


class BedrockJobs(Protocol):
    def create(
        self,
        *,
        job_name: str,
        role_arn: str,
        model_id: str,
        input_uri: str,
        output_uri: str,
        timeout_hours: int,
    ) -> str: ...

    def get(self, job_arn: str) -> dict[str, Any]: ...

    def stop(self, job_arn: str) -> None: ...


class BotoBedrockJobs:
    """``bedrock`` control-plane client; the client request token makes a retried create a no-op."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def create(
        self,
        *,
        job_name: str,
        role_arn: str,
        model_id: str,
        input_uri: str,
        output_uri: str,
        timeout_hours: int,
    ) -> str:
        response = self._client.create_model_invocation_job(
            jobName=job_name,
            roleArn=role_arn,
            clientRequestToken=job_name,
            modelId=model_id,
            modelInvocationType="Converse",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}},
            timeoutDurationInHours=timeout_hours,
        )
        return str(response["jobArn"])

    def get(self, job_arn: str) -> dict[str, Any]:
        return dict(self._client.get_model_invocation_job(jobIdentifier=job_arn))

    def stop(self, job_arn: str) -> None:
        self._client.stop_model_invocation_job(jobIdentifier=job_arn)


class FileSink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class S3Files:
    def __init__(self, s3: Any, bucket: str, part_bytes: int = PART_BYTES) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._part_bytes = part_bytes

    def open(self, key: str, content_type: str = "application/jsonl") -> FileSink:
        return _MultipartSink(self._s3, self.bucket, key, content_type, self._part_bytes)

    def list_keys(self, prefix: str) -> Iterator[str]:
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def lines(self, key: str) -> Iterator[bytes]:
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_lines(chunk_size=1024 * 1024)
        finally:
            body.close()

    def read(self, key: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)


class _MultipartSink:
    def __init__(self, s3: Any, bucket: str, key: str, content_type: str, part_bytes: int) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._content_type = content_type
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._part_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._upload_id is None:
            created = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type
            )
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        response = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(self._buffer),
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})
        self._buffer = bytearray()

    def close(self) -> None:
        if self._upload_id is None:  # small file: one plain put
            self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), ContentType=self._content_type
            )
            return
        if self._buffer:
            self._flush()
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
