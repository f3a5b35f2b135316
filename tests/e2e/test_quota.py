"""A real requests-per-minute quota with more images in flight than it allows: throttled, retried, not lost.

The stand-in's quota is 3 calls per 8-second window (22.5 rpm); the workers are told they may make
6,000 calls a minute, so they burst into the quota and get HTTP 429 ThrottlingException. The
caption stage must turn those into backed-off redeliveries until every image is captioned, with
exactly one paid call per image, never more than the quota in any window, nothing in the DLQ.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Run, run_pipeline, write_images

pytestmark = pytest.mark.e2e

IMAGES = 5
QUOTA_PER_WINDOW = 3
# Five calls must come within one window for the quota to bite; images reach the caption stage one
# resize at a time, so the window is wide enough for a busy machine (at 4 s a slow machine could
# space the calls out under the quota), and narrow enough for the throttled to come back soon.
WINDOW_S = 8.0


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Run:
    images = tmp_path_factory.mktemp("images")
    write_images(images, IMAGES)
    return run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        rpm=QUOTA_PER_WINDOW * 60 / WINDOW_S,  # the stand-in's quota: 22.5 rpm, as 3 per 8 s
        quota_window_s=WINDOW_S,
        pacing_rpm=6000.0,  # what the workers believe: far more than the quota
        concurrency=3,
        batch_size=2,
    )


def test_throttles_happen_and_every_image_is_still_captioned_once(throttled: Run) -> None:
    summary = throttled.summary

    assert summary["throttled"] > 0
    assert summary["standin"]["outcomes"]["throttled_quota"] == summary["throttled"]
    assert summary["captioned"] == IMAGES
    assert summary["lost"] == 0
    assert summary["dead_lettered"] == 0
    assert summary["paid_calls"] == IMAGES
    assert summary["duplicate_paid_calls"] == 0
    assert summary["model_calls"] == IMAGES + summary["throttled"]


def test_the_quota_is_never_exceeded_in_any_window(throttled: Run) -> None:
    standin = throttled.summary["standin"]

    assert standin["quota_limit"] == QUOTA_PER_WINDOW
    assert standin["quota_peak"] == QUOTA_PER_WINDOW


def test_throttled_messages_came_back_through_the_queue(throttled: Run) -> None:
    receive_counts = [throttled.caption(f"img-{i:03d}.png")["receive_count"] for i in range(IMAGES)]
    totals = throttled.summary["metrics"]["totals"]

    assert max(receive_counts) > 1  # at least one image was redelivered after a backed-off visibility
    assert totals["MessagesDeferred"] >= 1
    assert totals["ModelThrottles"] >= 1
    assert totals["CaptionsWritten"] == IMAGES
