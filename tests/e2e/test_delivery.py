"""Issue 5, delivery faults: a Lambda timeout in the middle of a batch, and duplicate deliveries.

Neither may lose an image or pay for a second model call of the same upload.
"""

from __future__ import annotations

import pytest

from imgcap.local.faults import parse_faults
from tests.e2e.conftest import run_pipeline, write_images

pytestmark = pytest.mark.e2e


def test_lambda_timeout_mid_batch_redelivers_the_batch_without_paying_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Given one worker, batches of 4, and the second model call hanging past the function timeout."""
    images = tmp_path_factory.mktemp("images")
    names = write_images(images, 4)

    # The caption handler keeps 10 s (first-call estimate) + 5 s (margin) in hand before a call, so
    # the shortest function timeout that lets a fresh environment call the model at all is ~16 s.
    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        concurrency=1,
        batch_size=4,
        batching_window_s=15.0,  # the poller waits until all four messages are in one batch
        faults=parse_faults("ok*1,timeout*1"),
        tuning_overrides={
            "caption_timeout_s": 16.0,
            "bedrock_read_timeout_s": 30.0,  # the hung call outlives the function
            "visibility_timeout_s": 17,
        },
    )
    summary = run.summary

    # Then the worker was killed and replaced, and the whole batch came back
    caption_fn = summary["functions"]["caption"]
    assert caption_fn["timeouts"] == 1
    assert caption_fn["environments_replaced"] == 1
    assert summary["event_source"]["whole_batch_failures"] == 1
    # ... every image is captioned exactly once, the one captioned before the kill is not paid again
    assert summary["captioned"] == 4
    assert summary["lost"] == 0
    assert summary["standin"]["outcomes"]["ok"] == 4
    assert summary["standin"]["outcomes"]["timeout"] == 1
    assert summary["duplicate_paid_calls"] == 0
    assert summary["duplicates_avoided"] == 1
    # ... the first image was captioned before the kill; the other three on the redelivery
    assert sorted(run.caption(name)["receive_count"] for name in names) == [1, 2, 2, 2]


def test_duplicate_s3_events_and_sqs_messages_never_cost_a_second_model_call(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Given every S3 event delivered twice and every distinct caption message delivered twice more."""
    images = tmp_path_factory.mktemp("images")
    names = write_images(images, 4)

    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        replay_s3_events=1,
        duplicate_caption_messages=True,
    )
    summary = run.summary
    totals = summary["metrics"]["totals"]

    # Then the resize stage saw each event twice and re-sent (not re-encoded) on the second
    assert totals["ImagesReceived"] == 8
    assert totals["ImagesResized"] + totals.get("ResizeDuplicatesSkipped", 0) == 8
    assert totals["ImagesResized"] >= 4
    # ... the caption queue got 4 originals + 4 re-sent + the duplicated deliveries
    delivered = summary["event_source"]["records"]
    assert delivered >= 8 + summary["event_source"]["duplicates_sent"]
    # ... and exactly one paid model call per image; every other delivery was a duplicate avoided
    assert summary["captioned"] == 4
    assert summary["lost"] == 0
    assert summary["paid_calls"] == 4 == summary["model_calls"]
    assert summary["duplicate_paid_calls"] == 0
    assert summary["duplicates_avoided"] == 8 - 4 + summary["event_source"]["duplicates_sent"]
    assert all(run.caption(n)["source"]["key"] == f"images/{n}" for n in names)
