"""Issue 16 figures: one backfill job's submit and collect over moto, with the fake control plane.

N images of ~2.4 MB base64 each (the size of a 1280x720 PNG), one request, the real submit and
collect handlers in process (moto S3 and SQS, ``tests/batch_fakes.FakeBedrockJobs`` answering every
record). Prints one JSON object: JSONL bytes and per-line overhead, files, seconds for each step,
and how the records ended. In-process moto is the bottleneck here, not the functions: the times
say nothing about Lambda's S3 throughput, the byte counts are exact.

    python -m bench.bench_backfill [--images 40]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time

import boto3
from moto import mock_aws

from lambdas.shared.contract import BatchLimits
from tests.integration import test_backfill as harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        os.environ.setdefault(name, value)
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    payload = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(1_800_000))
    harness.PNG_B64 = payload  # what World.seed writes as each encoded object
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=harness.BUCKET)
        sqs = boto3.client("sqs")
        url = sqs.create_queue(QueueName="caption-queue")["QueueUrl"]
        world = harness.World(s3, sqs, url, BatchLimits(min_records=10, max_file_bytes=100_000_000))
        items = [world.seed(f"bench{i}.jpg") for i in range(args.images)]
        started = time.perf_counter()
        submitted = world.submit(world.request(items))["results"][0]
        submit_s = time.perf_counter() - started
        (job,) = world.bedrock.created
        inputs = world.keys(f"batch/input/{job['jobName']}/")
        size = sum(s3.head_object(Bucket=harness.BUCKET, Key=k)["ContentLength"] for k in inputs)
        world.bedrock.finish(s3, job["jobArn"])
        started = time.perf_counter()
        (collected,) = world.collect({"source": "aws.events"})["collected"]
        collect_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "images": args.images,
                "records": submitted["records"],
                "base64_bytes_per_image": len(payload),
                "input_files": len(inputs),
                "input_bytes": size,
                "overhead_bytes_per_line": (size - args.images * len(payload)) / args.images,
                "submit_s": round(submit_s, 2),
                "collect_s": round(collect_s, 2),
                "counts": collected["counts"],
            }
        )
    )


if __name__ == "__main__":
    main()
