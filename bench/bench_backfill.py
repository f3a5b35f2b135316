"""Issue 16 figures: backfill jobs end to end over moto, with the fake Bedrock control plane.

Two runs, each printing one JSON line (the last line holds both):

- ``size``: N images of ~2.4 MB base64 (a 1280x720 PNG's size), one job: JSONL bytes, the
  per-line overhead, files, and the seconds to submit and to collect. In-process moto is the
  bottleneck there: the times say nothing about Lambda's S3 throughput, the byte counts are exact.
- ``faults``: M small images, jobs of at most 120 records (so the request hands on twice), and
  faults: in job 1 some records fail as a bad image (-> error records) and some with a 500 (->
  the online queue); job 2 ends PartiallyCompleted with records never answered (-> online); job 3's
  completion event is dropped (the poll collects it). The requeued records go through the real
  caption use case with a counting model. Checks: every image ends as one caption or one error
  record for its ETag (0 lost), no image is paid for by both paths or twice (0 paid twice), and
  the batch tokens' cost at the batch price against the same tokens on demand.

    python -m bench.bench_backfill [--images 40] [--fault-images 300]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from typing import Any

import boto3
from moto import mock_aws

from lambdas.shared import contract, keys
from lambdas.shared.contract import BatchLimits
from tests.batch_fakes import converse_answer, state_change_event
from tests.integration import test_backfill as harness


def _world(limits: BatchLimits) -> harness.World:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=harness.BUCKET)
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="caption-queue")["QueueUrl"]
    return harness.World(s3, sqs, url, limits)


def size_run(images: int) -> dict[str, Any]:
    payload = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(1_800_000))
    harness.PNG_B64, small = payload, harness.PNG_B64
    try:
        with mock_aws():
            world = _world(BatchLimits(min_records=10, max_file_bytes=100_000_000))
            items = [world.seed(f"bench{i}.jpg") for i in range(images)]
            started = time.perf_counter()
            submitted = world.submit(world.request(items))["results"][0]
            submit_s = time.perf_counter() - started
            (job,) = world.bedrock.created
            inputs = world.keys(f"batch/input/{job['jobName']}/")
            size = sum(world.s3.head_object(Bucket=harness.BUCKET, Key=k)["ContentLength"] for k in inputs)
            world.bedrock.finish(world.s3, job["jobArn"])
            started = time.perf_counter()
            (collected,) = world.collect({"source": "aws.events"})["collected"]
            collect_s = time.perf_counter() - started
    finally:
        harness.PNG_B64 = small
    return {
        "images": images,
        "records": submitted["records"],
        "base64_bytes_per_image": len(payload),
        "input_files": len(inputs),
        "input_bytes": size,
        "overhead_bytes_per_line": (size - images * len(payload)) / images,
        "submit_s": round(submit_s, 2),
        "collect_s": round(collect_s, 2),
        "counts": collected["counts"],
    }


def fault_run(images: int) -> dict[str, Any]:
    from lambdas.caption.pacing import Pacer
    from lambdas.caption.service import CaptionWorker, Delivery
    from lambdas.shared.config import ModelSpec, PacingSpec
    from lambdas.shared.settings import CaptionSettings

    with mock_aws():
        world = _world(BatchLimits(min_records=20, max_records_per_job=120, max_records_per_file=50))
        items = [world.seed(f"f{i:04d}.jpg") for i in range(images)]
        request = world.request(items, backfill_id="faults")
        pending, submitted = [request], []
        while pending:  # each part's object would start the next submit in the stack
            world.submit(pending.pop())
            submitted = world.bedrock.created
            pending = [k for k in world.keys("batch/requests/") if k.endswith(f"-{len(submitted):03d}.json")]
        batch_paid: dict[str, int] = {}
        for number, job in enumerate(submitted):
            by_id = {e.record_id: e for e in harness._index(world, job["jobName"])}
            ids = sorted(by_id)

            def answer(
                rid: str,
                _input: dict[str, Any],
                n: int = number,
                ids: list[str] = ids,
                by_id: dict[str, Any] = by_id,
            ) -> dict[str, Any]:
                position = ids.index(rid)
                if n == 0 and position % 20 == 0:
                    return {
                        "error": {"errorCode": 400, "errorMessage": "Unable to process the provided image"}
                    }
                if n == 0 and position % 20 == 1:
                    return {"error": {"errorCode": 500, "errorMessage": "Internal server error"}}
                key = by_id[rid].source_key
                batch_paid[key] = batch_paid.get(key, 0) + 1
                return {"modelOutput": converse_answer(f"batch caption {rid}")}

            skip = set(ids[::10]) if number == 1 else set()
            status = "PartiallyCompleted" if number == 1 else "Completed"
            world.bedrock.finish(world.s3, job["jobArn"], answer, status=status, skip=skip)
            if number != 2:  # job 3's event is dropped
                world.collect(state_change_event(job["jobArn"], job["jobName"], status))
        world.collect({"source": "aws.events", "detail-type": "Scheduled Event"})  # the poll

        online_paid: dict[str, int] = {}

        def call_model(request: dict[str, Any], budget_s: float) -> dict[str, Any]:
            return converse_answer("online caption")

        worker = CaptionWorker(store=world.store, call_model=call_model, pacer=Pacer(600_000, 1e9))
        settings = CaptionSettings(
            bucket=harness.BUCKET,
            model=ModelSpec(),
            pacing=PacingSpec(600_000, 1e9, 1),
            backoff_base_s=10,
            backoff_max_s=300,
            model_error_max_attempts=3,
            bedrock_read_timeout_s=50,
            bedrock_max_attempts=2,
            claim_lease_s=900,
        )
        requeued = world.messages()
        for body in requeued:
            result = worker.begin(settings, lambda: 100_000).process(
                Delivery(body["source_key"], "r", json.dumps({**body, "v": 1}), 1, None)
            )
            if result.model_called:
                online_paid[body["source_key"]] = online_paid.get(body["source_key"], 0) + 1

        lost, paid_twice, errors, captions, batch_mode = [], [], 0, 0, 0
        for item in items:
            caption, error = world.caption(item), world.error(item)
            if caption is not None and caption["source"]["etag"] == item.etag:
                captions += 1
                batch_mode += caption.get("mode") == "batch"
            elif error is not None and error["source"]["etag"] == item.etag:
                errors += 1
            else:
                lost.append(item.key)
            if batch_paid.get(item.key, 0) + online_paid.get(item.key, 0) > 1:
                paid_twice.append(item.key)
        documents = [world.job_document(j["jobName"]) for j in submitted]
        tokens_in = sum(d["usage"]["input_tokens"] for d in documents)
        tokens_out = sum(d["usage"]["output_tokens"] for d in documents)
        batch_usd = contract.estimate_cost_usd(
            tokens_in,
            tokens_out,
            contract.NOVA_PRO_BATCH_INPUT_PRICE_PER_1K,
            contract.NOVA_PRO_BATCH_OUTPUT_PRICE_PER_1K,
        )
        on_demand_usd = contract.estimate_cost_usd(tokens_in, tokens_out)
        return {
            "images": images,
            "jobs": len(submitted),
            "captions": captions,
            "captions_mode_batch": batch_mode,
            "error_records": errors,
            "requeued_online": len(requeued),
            "online_calls": sum(online_paid.values()),
            "lost": len(lost),
            "paid_twice": len(paid_twice),
            "claims_left": len(world.keys(keys.CLAIMS_PREFIX)),
            "batch_cost_usd": round(batch_usd, 4),
            "same_tokens_on_demand_usd": round(on_demand_usd, 4),
            "job_states": sorted({f"{d['status']}:{d['state']}" for d in documents}),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--fault-images", type=int, default=300)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        os.environ.setdefault(name, value)
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    size = size_run(args.images)
    print(json.dumps({"size": size}))
    faults = fault_run(args.fault_images)
    print(json.dumps({"faults": faults}))
    print(json.dumps({"size": size, "faults": faults}))


if __name__ == "__main__":
    main()
