"""``imgcap backfill`` against moto: selection, cost, the min-size fallback, the request, --status.

The request the command writes is then handed to the real submit handler (the S3 event the stack
would deliver), so the CLI and the cloud side are tested as one path.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imgcap.ops import backfill
from imgcap.ops.aws import AwsClients
from imgcap.ops.context import OpsContext
from imgcap.ops.stack import StackRef
from lambdas.shared import contract, keys
from tests.integration.test_backfill import BUCKET, World

pytestmark = pytest.mark.integration

STACK = "BackfillTest"


@pytest.fixture
def cli(aws_env: None) -> Iterator[tuple[World, OpsContext, io.StringIO]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="caption-queue")["QueueUrl"]
        limits = contract.BatchLimits(min_records=4)
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(
            Name=f"/{STACK}/{contract.SSM_BATCH_LIMITS_PARAM}",
            Value=contract.batch_limits_json(limits),
            Type="String",
        )
        ssm.put_parameter(Name=f"/{STACK}/max-tokens", Value="200", Type="String")
        world = World(s3, sqs, url, limits)
        out = io.StringIO()
        stack = StackRef(name=STACK, region="us-east-1", bucket=BUCKET, queue_url=url, dlq_url=None)
        yield world, OpsContext(clients=AwsClients(), stack=stack, out=out, err=io.StringIO()), out


def _seed_mixed(world: World) -> dict[str, Any]:
    fresh = [world.seed(f"n{i}.jpg") for i in range(5)]
    done = world.seed("done.jpg")
    world.store.put_json(keys.caption_key(done.key), {"caption": "x"}, metadata={"source-etag": done.etag})
    stale = world.seed("stale.jpg")  # captioned, but for an older upload: needs a caption again
    world.store.put_json(keys.caption_key(stale.key), {"caption": "old"}, metadata={"source-etag": "older"})
    failed = world.seed("failed.jpg")
    world.store.put_json(
        keys.error_key(failed.key),
        {"error": "final"},
        metadata={"source-etag": failed.etag, "stage": "caption"},
    )
    unencoded = world.seed("raw.jpg", encoded=False)
    elsewhere = world.s3.put_object(Bucket=BUCKET, Key="images/other/x.jpg", Body=b"x")
    return {
        "fresh": fresh,
        "stale": stale,
        "done": done,
        "failed": failed,
        "raw": unencoded,
        "other": elsewhere,
    }


def test_given_a_prefix_when_dry_run_then_it_counts_what_needs_a_caption_and_prices_it(cli):
    world, ctx, out = cli
    _seed_mixed(world)
    report = backfill.run(ctx, prefix="archive", dry_run=True)
    assert report["listed"] == 9  # images/other/ is not under the prefix
    assert report["selected"] == 6  # five fresh + the stale one
    assert report["skipped"] == {"captioned": 1, "final_error": 1, "not_encoded": 1}
    cost = report["estimate"]
    assert cost["output_tokens_max"] == 6 * 200  # the deployed max-tokens
    assert cost["batch_usd"] == pytest.approx(cost["on_demand_usd"] / 2)
    assert "at batch prices" in out.getvalue()
    assert "dry run: nothing started" in out.getvalue()
    assert world.keys("batch/") == []
    assert world.messages() == []


def test_given_max_images_then_the_selection_stops_there(cli):
    world, ctx, _ = cli
    _seed_mixed(world)
    report = backfill.run(ctx, prefix="archive", dry_run=True, max_images=2)
    assert report["selected"] == 2
    assert report["skipped"]["over_max_images"] == 4


def test_given_fewer_than_the_job_minimum_then_they_go_to_the_online_queue_and_it_says_so(cli):
    world, ctx, out = cli
    items = [world.seed(f"few{i}.jpg") for i in range(3)]
    report = backfill.run(ctx, prefix="archive", dry_run=False)
    assert report["mode"] == "online"
    assert "fewer than a batch job's minimum of 4" in out.getvalue()
    messages = world.messages()
    assert sorted(m["source_key"] for m in messages) == sorted(i.key for i in items)
    assert all(
        (m["width"], m["height"], m["target_width"], m["resize_policy"]) == (64, 36, 32, "pad")
        for m in messages
    )
    assert world.keys("batch/") == []


def test_given_enough_images_then_a_request_starts_a_job_and_status_shows_it(cli):
    world, ctx, _ = cli
    _seed_mixed(world)
    report = backfill.run(ctx, prefix="archive", dry_run=False)
    assert report["mode"] == "batch"
    request = json.loads(world.s3.get_object(Bucket=BUCKET, Key=report["request_key"])["Body"].read())
    assert len(request["items"]) == 6
    # the S3 event of that object starts the submit function in the stack
    result = world.submit(report["request_key"])["results"][0]
    assert result["outcome"] == "submitted"
    assert result["records"] == 6
    (job,) = backfill.status(ctx)
    assert job["state"] == "running"
    assert job["records"] == 6
    # `imgcap status` lists the running job with its records too
    from imgcap.ops import status as status_command

    found = status_command.collect(ctx)
    assert [(r["job_name"], r["state"], r["records"]) for r in found.backfill_jobs] == [
        (job["job_name"], "running", 6)
    ]
    assert f"{job['job_name']}  running" in status_command.as_text(found)
    assert "backfill jobs: 1 running" in status_command.as_text(found)


def test_given_arguments_then_an_empty_prefix_is_refused_and_status_prints_one_line_per_job(cli):
    import argparse

    from imgcap.ops.aws import OpsError

    world, ctx, out = cli
    args = argparse.Namespace(
        status=False, all_images=False, prefix="/", dry_run=True, max_images=None, json=False, concurrency=4
    )
    with pytest.raises(OpsError, match="--prefix is empty"):
        backfill.check_arguments(args)
    items = [world.seed(f"st{i}.jpg") for i in range(4)]
    world.submit(world.request(items))
    (job,) = world.bedrock.created
    world.bedrock.finish(world.s3, job["jobArn"])
    world.collect({"source": "aws.events"})
    out.truncate(0)
    out.seek(0)
    code, data = backfill.command(ctx, argparse.Namespace(**{**vars(args), "status": True}))
    assert code == 0
    assert data["jobs"][0]["counts"] == {"captioned": 4}
    text = out.getvalue()
    assert "1 backfill job(s), 0 not yet collected" in text
    assert job["jobName"] in text
    assert "captioned 4" in text
    assert "at batch prices" in text
