"""Final-state accounting: a message the queue dead-letters counts as final (not lost); an upload
that is still in flight when ``--timeout`` hits is named as not final (never as lost: its work is
still there) and fails the run."""

from __future__ import annotations

import pytest

from imgcap.local.faults import parse_faults
from imgcap.local.latency import StandinLatency
from tests.e2e.conftest import run_pipeline, write_images
from tests.schemas import assert_valid

pytestmark = pytest.mark.e2e


def test_a_message_throttled_past_max_receive_count_ends_in_the_dlq_and_is_accounted_for(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Given one image whose every model call is throttled, and a queue that allows 1 receive."""
    images = tmp_path_factory.mktemp("images")
    write_images(images, 1)

    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        faults=parse_faults("throttle*60"),
        tuning_overrides={"max_receive_count": 1},
    )
    summary = run.summary

    # Then the queue moved it to the DLQ; that is a final state, so nothing is lost
    assert summary["dead_lettered"] == 1
    assert summary["captioned"] == 0
    assert summary["lost"] == 0
    assert run.result.exit_code == 0
    letter = summary["dead_lettered_details"][0]
    assert letter["key"] == "images/img-000.png"
    assert letter["receive_count"] >= 1
    assert "img-000.png" in letter["last_problem"]  # the caption stage's last warning for this key
    assert summary["paid_calls"] == 0
    assert summary["throttled"] == summary["model_calls"] > 0
    assert "dead_lettered" in (run.out / "report.html").read_text(encoding="utf-8")


def test_uploads_not_final_at_the_timeout_are_named_and_fail_the_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Given a model that never answers in time and a run timeout of 20 s."""
    images = tmp_path_factory.mktemp("images")
    names = write_images(images, 2)

    # The run timeout counts from before the servers start: 20 s leaves a busy machine ample time
    # to start them and upload both files, so that both are named as uploads that are not final.
    # The stand-in holds every answer far longer than that (until the run stops it).
    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        standin_latency=StandinLatency.uniform(600.0, 600.0),
        timeout_s=20.0,
        tuning_overrides={"bedrock_read_timeout_s": 30.0},
    )
    summary = run.summary

    assert summary["timed_out"] is True
    assert summary["not_final"] == 2
    assert summary["not_final_keys"] == [f"images/{n}" for n in names]
    assert summary["lost"] == 0  # the calls are in flight: nothing vanished
    assert summary["lost_keys"] == []
    assert run.result.exit_code == 1
    assert_valid("summary", summary)
    assert "2 not final, 0 lost" in run.progress
    assert "TIMEOUT after 20 s: 2 upload(s) not final: images/img-000.png, images/img-001.png" in run.progress
