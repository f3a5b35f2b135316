"""Issue 11 item 5: a quota share slower than an invocation can wait never dead-letters unattempted work.

Four images, 6 requests/minute shared by 2 workers: each worker may call once every 20 s, while an
invocation (18 s timeout, 5 s margin) can wait at most ~13 s. Before the fix, every batch that
could not wait put its messages back for 2-4 s, and each of those receives counted towards
``maxReceiveCount``: the last images reached the DLQ without a model call. Now a message
the pacer has no slot for is hidden until its slot (the k-th one handed back k intervals later),
so receives track calls, not polls.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Run, run_pipeline, write_images

pytestmark = pytest.mark.e2e

IMAGES = 4


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Run:
    images = tmp_path_factory.mktemp("images")
    write_images(images, IMAGES)
    return run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        rpm=6.0,
        concurrency=2,
        batch_size=4,
        timeout_s=240.0,
        tuning_overrides={"caption_timeout_s": 18.0, "claim_lease_s": 80.0, "max_receive_count": 8},
    )


def test_every_image_is_captioned_and_none_is_dead_lettered(slow: Run) -> None:
    summary = slow.summary
    assert summary["captioned"] == IMAGES
    assert summary["dead_lettered"] == 0
    assert summary["lost"] == 0
    assert summary["paid_calls"] == IMAGES
    assert summary["duplicate_paid_calls"] == 0


def test_messages_the_pacer_had_no_slot_for_waited_for_it(slow: Run) -> None:
    # Some deliveries had to be handed back (the quota is slower than the fleet) ...
    assert slow.summary["metrics"]["totals"]["MessagesDeferred"] >= 1
    # ... and every image still got its caption within the receives the queue allows (the exact
    # count depends on scheduling; the deterministic check of the hiding is in the integration tier)
    receive_counts = [slow.caption(f"img-{i:03d}.png")["receive_count"] for i in range(IMAGES)]
    assert max(receive_counts) < 8
