"""A fake Bedrock control plane for batch jobs (moto has no CreateModelInvocationJob).

``FakeBedrockJobs`` keeps jobs in memory with the fields ``GetModelInvocationJob`` returns, and
``finish`` plays Bedrock's part over a real (moto) S3 client: it reads every ``.jsonl`` input file
of the job, answers each record with ``answer(record_id, model_input)`` (a Converse response body,
or ``{"error": ...}``), writes ``<job id>/<file>.jsonl.out`` with the lines in reverse order (the
docs promise no order) and ``manifest.json.out``, and sets the terminal status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


def converse_answer(
    text: str = "A blue rectangle on white.", stop_reason: str = "end_turn"
) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 1600, "outputTokens": 20, "totalTokens": 1620},
        "metrics": {"latencyMs": 900},
    }


@dataclass
class FakeBedrockJobs:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    fail_create: Exception | None = None

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
        if self.fail_create is not None:
            raise self.fail_create
        for job in self.jobs.values():  # the client request token makes a retried create a no-op
            if job["jobName"] == job_name:
                return str(job["jobArn"])
        job_id = f"job{len(self.jobs) + 1:08d}"
        arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/{job_id}"
        self.jobs[arn] = {
            "jobArn": arn,
            "jobName": job_name,
            "modelId": model_id,
            "roleArn": role_arn,
            "status": "Submitted",
            "modelInvocationType": "Converse",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": input_uri}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": output_uri}},
            "timeoutDurationInHours": timeout_hours,
            "_id": job_id,
        }
        self.created.append(dict(self.jobs[arn]))
        return arn

    def get(self, job_arn: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[job_arn].items() if not k.startswith("_")}

    def stop(self, job_arn: str) -> None:
        self.jobs[job_arn]["status"] = "Stopped"

    def set_status(self, job_arn: str, status: str) -> None:
        self.jobs[job_arn]["status"] = status

    def finish(
        self,
        s3: Any,
        job_arn: str,
        answer: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda _rid, _inp: {
            "modelOutput": converse_answer()
        },
        status: str = "Completed",
        skip: Collection[str] = (),
    ) -> list[dict[str, Any]]:
        """Answer every record (except ``skip``), write the outputs, set ``status``; returns the inputs."""
        job = self.jobs[job_arn]
        in_bucket, in_prefix = _split(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        out_bucket, out_prefix = _split(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        inputs: list[dict[str, Any]] = []
        success = errors = 0
        listing = s3.list_objects_v2(Bucket=in_bucket, Prefix=in_prefix).get("Contents", [])
        for item in listing:
            key = item["Key"]
            if not key.endswith(".jsonl"):
                continue
            lines = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read().decode().splitlines()
            out_lines = []
            for line in lines:
                record = json.loads(line)
                inputs.append(record)
                if record["recordId"] in skip:
                    continue
                reply = answer(record["recordId"], record["modelInput"])
                if "error" in reply:
                    errors += 1
                else:
                    success += 1
                out_lines.append(json.dumps({"recordId": record["recordId"], "modelInput": {}, **reply}))
            name = key[len(in_prefix) :]
            s3.put_object(
                Bucket=out_bucket,
                Key=f"{out_prefix}{job['_id']}/{name}.out",
                Body=("\n".join(reversed(out_lines)) + "\n").encode(),
            )
        manifest = {
            "totalRecordCount": len(inputs),
            "processedRecordCount": success + errors,
            "successRecordCount": success,
            "errorRecordCount": errors,
            "inputTokenCount": 1600 * success,
            "outputTokenCount": 20 * success,
        }
        s3.put_object(
            Bucket=out_bucket,
            Key=f"{out_prefix}{job['_id']}/manifest.json.out",
            Body=json.dumps(manifest).encode(),
        )
        job["status"] = status
        return inputs


def _split(uri: str) -> tuple[str, str]:
    assert uri.startswith("s3://"), uri
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def state_change_event(job_arn: str, job_name: str, status: str) -> dict[str, Any]:
    """An EventBridge event as the Bedrock user guide shows it (detail fields the collector may read)."""
    return {
        "version": "0",
        "id": "00000000-0000-0000-0000-000000000000",
        "detail-type": "Batch Inference Job State Change",
        "source": "aws.bedrock",
        "account": ACCOUNT,
        "time": "2026-12-01T10:00:00Z",
        "region": REGION,
        "resources": [job_arn],
        "detail": {"batchJobArn": job_arn, "batchJobName": job_name, "status": status},
    }
