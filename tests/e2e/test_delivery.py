"""Issue 5, delivery faults: a Lambda timeout in the middle of a batch, and duplicate deliveries.

Neither may lose an image or pay for a second model call of the same upload.
"""

from __future__ import annotations

import pytest

from imgcap.local.faults import parse_faults
from tests.e2e.conftest import run_pipeline, write_images

pytestmark = pytest.mark.e2e


# The shipped caption handler, except that the call meeting the stand-in's timeout fault hangs until
# the function is killed (the handler itself bounds every call by the time left, see the module).
HUNG_CALL_HANDLER = "tests.e2e.hung_model_call.lambda_handler"


def test_lambda_timeout_mid_batch_redelivers_the_batch_without_paying_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Given one worker, batches of 4, and the second model call hanging past the function timeout."""
    images = tmp_path_factory.mktemp("images")
    names = write_images(images, 4)

    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        concurrency=1,
        batch_size=4,
        batching_window_s=15.0,  # the poller waits until all four messages are in one batch
        faults=parse_faults("ok*1,timeout*1"),
        caption_handler=HUNG_CALL_HANDLER,
        tuning_overrides={
            # room for the handler's 10 s first-call estimate + 5 s margin even on a busy machine
            "caption_timeout_s": 30.0,
            "bedrock_max_attempts": 1,  # the held call is not retried inside the SDK: it hangs
            "bedrock_read_timeout_s": 30.0,
            "visibility_timeout_s": 31,
        },
    )
    summary = run.summary
    standin = summary["standin"]
    caption_invocations = [i for i in run.log("invocations") if i["function"].endswith("-caption")]
    killed = [i for i in caption_invocations if i["timed_out"]]
    killed_ids = {i["request_id"] for i in killed}

    # Then the one hung call got its worker killed and replaced, and that batch failed as a whole.
    # (How many receives each message needed depends on scheduling: on a busy machine the handler
    # may hand a batch back for want of time before it calls the model. These invariants do not.)
    caption_fn = summary["functions"]["caption"]
    assert standin["outcomes"]["timeout"] == 1
    assert caption_fn["timeouts"] == len(killed) == 1
    assert caption_fn["environments_replaced"] >= 1
    assert summary["event_source"]["whole_batch_failures"] >= 1
    # ... every image is captioned exactly once and nothing is paid twice: one paid call per image,
    # and the only other model call is the one that hung
    assert summary["captioned"] == 4
    assert summary["lost"] == 0
    assert summary["dead_lettered"] == 0
    assert standin["outcomes"]["ok"] == 4 == standin["paid_calls"] == summary["paid_calls"]
    assert standin["requests"] == 4 + 1
    assert summary["duplicate_paid_calls"] == 0
    assert all(run.caption(name)["source"]["key"] == f"images/{name}" for name in names)
    # ... the killed batch came back: none of its messages was deleted, each was received again
    assert summary["event_source"]["records"] >= len(names) + killed[0]["records"]
    assert max(run.caption(name)["receive_count"] for name in names) >= 2  # the hung call's image
    # ... and what the killed invocation had captioned before the hang was not paid for again
    captioned_before_kill = {
        line["correlation_id"]
        for line in run.log("caption")
        if line.get("outcome") == "captioned" and line.get("function_request_id") in killed_ids
    }
    assert summary["duplicates_avoided"] >= len(captioned_before_kill)


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
