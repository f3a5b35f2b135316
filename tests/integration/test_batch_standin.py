"""The batch control plane on the Bedrock stand-in, through boto3's own ``bedrock`` client.

botocore serialises the requests and parses the answers (ARNs, ISO timestamps, error codes), so a
shape the real service would not send fails here. The job's input and output live in a small
in-memory S3 (``MemoryS3``): the control plane only lists, reads and writes objects. Jobs run on
the stand-in's own threads; each wait below polls the job's status with a generous bound and
asserts the outcome, never a duration.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from imgcap.local.batch_standin import BatchControlPlane, BatchFaultError, BatchFaults, parse_batch_faults
from imgcap.local.latency import StandinLatency
from imgcap.local.standin import BedrockStandin, StandinConfig
from lambdas.shared.contract import BATCH_EVENT_DETAIL_TYPE, BATCH_EVENT_SOURCE

BUCKET = "b"
MODEL = "us.amazon.nova-pro-v1:0"
WAIT_S = 120.0


class MemoryS3:
    """list_objects_v2 (through a paginator), get_object and put_object over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:
        with self._lock:
            self.objects[Key] = bytes(Body)

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        with self._lock:
            return {"Body": io.BytesIO(self.objects[Key])}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        owner = self

        class _Pages:
            def paginate(self, *, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:
                with owner._lock:
                    keys = sorted(k for k in owner.objects if k.startswith(Prefix))
                yield {"Contents": [{"Key": k} for k in keys]}

        return _Pages()


def _record(n: int) -> bytes:
    image = Image.new("RGB", (64, 36), ((n * 40) % 256, 120, 200))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "image": {
                            "format": "png",
                            "source": {"bytes": base64.b64encode(buf.getvalue()).decode()},
                        }
                    },
                    {"text": "Describe the image."},
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 300},
    }
    return json.dumps({"recordId": f"R{n:010d}", "modelInput": body}).encode()


@pytest.fixture
def plane() -> Iterator[Any]:
    started: list[Any] = []

    def start(
        records: int = 6, faults: BatchFaults | None = None, min_records: int = 1, step_s: float = 0.02
    ):
        s3 = MemoryS3()
        s3.put_object(
            Bucket=BUCKET, Key="in/job/part-0.jsonl", Body=b"\n".join(_record(i) for i in range(records))
        )
        standin = BedrockStandin(StandinConfig(latency=StandinLatency.uniform(0.0, 0.0)))
        events: list[dict[str, Any]] = []
        control = BatchControlPlane(
            s3=s3,
            answer=standin.answer_record,
            on_event=events.append,
            faults=faults,
            min_records=min_records,
            step_s=step_s,
        )
        standin.control_plane = control
        context = standin.serve()
        context.__enter__()
        started.append((context, control))
        client = boto3.client(
            "bedrock",
            endpoint_url=standin.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60),
        )
        return client, s3, events, standin

    yield start
    for context, control in started:
        control.close()
        context.__exit__(None, None, None)


def _create(client: Any, name: str = "job-1", token: str = "t-1") -> str:
    return str(
        client.create_model_invocation_job(
            jobName=name,
            roleArn="arn:aws:iam::123456789012:role/batch",
            clientRequestToken=token,
            modelId=MODEL,
            modelInvocationType="Converse",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/in/job/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/job/"}},
            timeoutDurationInHours=24,
        )["jobArn"]
    )


def _until_ended(client: Any, arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = client.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {arn} did not end within {WAIT_S} s")


def _output_lines(s3: MemoryS3, arn: str) -> list[dict[str, Any]]:
    job_id = arn.rsplit("/", 1)[-1]
    raw = s3.objects.get(f"out/job/{job_id}/part-0.jsonl.out", b"")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def test_given_a_job_when_created_then_boto3_parses_it_and_it_completes_with_outputs_and_events(plane):
    client, s3, events, standin = plane(records=6)
    arn = _create(client)
    assert arn.startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
    # a retried create (same client request token) is the same job; another token with that name is not
    assert _create(client) == arn
    with pytest.raises(ClientError) as conflict:
        _create(client, token="t-2")
    assert conflict.value.response["Error"]["Code"] == "ConflictException"

    job = _until_ended(client, arn)
    assert job["status"] == "Completed"
    assert job["jobName"] == "job-1"
    assert job["modelInvocationType"] == "Converse"
    assert job["submitTime"] <= job["endTime"]  # botocore parsed both as datetimes
    assert (job["totalRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (6, 6, 0)

    lines = _output_lines(s3, arn)
    assert [line["recordId"] for line in lines] == [f"R{i:010d}" for i in reversed(range(6))]  # no order
    assert all(line["modelOutput"]["output"]["message"]["content"][0]["text"] for line in lines)
    manifest = json.loads(s3.objects[f"out/job/{arn.rsplit('/', 1)[-1]}/manifest.json.out"])
    assert manifest["totalRecordCount"] == manifest["successRecordCount"] == 6
    assert manifest["inputTokenCount"] > 0
    assert manifest["outputTokenCount"] > 0
    # each answer is a paid call of its image; batch answers are counted apart from online ones
    assert standin.stats()["outcomes"]["batch_ok"] == 6
    assert standin.stats()["paid_calls"] == 6

    assert [e["detail"]["status"] for e in events] == ["Validating", "InProgress", "Completed"]
    assert {(e["source"], e["detail-type"]) for e in events} == {
        (BATCH_EVENT_SOURCE, BATCH_EVENT_DETAIL_TYPE)
    }
    assert all(e["resources"] == [arn] and e["detail"]["batchJobArn"] == arn for e in events)

    listed = client.list_model_invocation_jobs(statusEquals="Completed")["invocationJobSummaries"]
    assert [j["jobArn"] for j in listed] == [arn]
    assert client.list_model_invocation_jobs(statusEquals="InProgress")["invocationJobSummaries"] == []


def test_given_faults_then_records_fail_jobs_end_partial_or_failed_and_an_event_is_dropped(plane):
    client, s3, events, _ = plane(
        records=10, faults=BatchFaults(failed_records=0.2, partial_jobs=1, failed_jobs=1, drop_events=1)
    )
    partial = _until_ended(client, _create(client, "job-1", "t-1"))
    assert partial["status"] == "PartiallyCompleted"
    lines = {line["recordId"]: line for line in _output_lines(s3, partial["jobArn"])}
    assert len(lines) == 6  # 60% answered, the rest has no line
    errors = {rid: line["error"]["errorCode"] for rid, line in lines.items() if "error" in line}
    assert errors == {"R0000000004": 429}  # the 5th record: a retryable error line
    failed = _until_ended(client, _create(client, "job-2", "t-2"))
    assert failed["status"] == "Failed"
    assert "injected" in failed["message"]
    assert _output_lines(s3, failed["jobArn"]) == []
    # the first terminal event was dropped: only the second job's end was announced
    ended = [
        e["detail"]["batchJobName"]
        for e in events
        if e["detail"]["status"] not in {"Validating", "InProgress"}
    ]
    assert ended == ["job-2"]


def test_given_too_few_records_or_an_unknown_job_then_bedrock_like_refusals(plane):
    client, _, _, _ = plane(records=3, min_records=5)
    job = _until_ended(client, _create(client))
    assert job["status"] == "Failed"
    assert "at least 5" in job["message"]
    with pytest.raises(ClientError) as missing:
        client.get_model_invocation_job(
            jobIdentifier="arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/000000000000"
        )
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as stopped:
        client.stop_model_invocation_job(jobIdentifier=job["jobArn"])
    assert stopped.value.response["Error"]["Code"] == "ValidationException"


def test_given_a_running_job_when_stopped_then_it_ends_stopped(plane):
    client, _, _, _ = plane(records=4, step_s=0.5)
    arn = _create(client)
    client.stop_model_invocation_job(jobIdentifier=arn)
    assert client.get_model_invocation_job(jobIdentifier=arn)["status"] in {"Stopping", "Stopped"}
    assert _until_ended(client, arn)["status"] == "Stopped"


def test_batch_faults_parse_and_refuse_nonsense():
    assert parse_batch_faults("failed_records=0.05, partial_jobs=1,drop_events=2") == BatchFaults(
        0.05, 1, 0, 2
    )
    assert parse_batch_faults("").describe() == "none"
    for bad in ("gremlins=1", "failed_records=1.5", "partial_jobs=0.5", "drop_events", "failed_jobs=x"):
        with pytest.raises(BatchFaultError):
            parse_batch_faults(bad)
