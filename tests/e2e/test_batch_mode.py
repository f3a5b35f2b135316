"""``imgcap local --mode batch`` end to end: the backfill stage's handlers over the batch stand-in.

One run with every batch fault at once (the 300-image figures are printed by
``python -m bench.batch_local``): 30 images, jobs of 10 records, so the request is handed on twice
and three jobs run. Job 1 ends PartiallyCompleted and its completion event is dropped (only the
scheduled poll can find it), job 2 ends Failed, job 3 completes; in every job a share of records
gets an error line (429: back online; 400 about the image: an error record). The counts are exact:
the faults are placed by position, nothing here depends on timing.
"""

from __future__ import annotations

import json
from pathlib import Path

from imgcap.local.batch_standin import BatchFaults
from lambdas.shared import contract
from tests.e2e.conftest import write_images
from tests.schemas import assert_valid

IMAGES = 30
JOB_RECORDS = 10


def test_given_batch_faults_then_every_image_ends_once_and_batch_captions_cost_half(pipeline, tmp_path: Path):
    names = write_images(tmp_path / "in", IMAGES)
    run = pipeline(
        tmp_path / "in",
        tmp_path / "out",
        mode="batch",
        batch_limits=contract.BatchLimits(min_records=JOB_RECORDS, max_records_per_job=JOB_RECORDS),
        batch_faults=BatchFaults(failed_records=0.2, partial_jobs=1, failed_jobs=1, drop_events=1),
        search=False,
    )
    summary = run.summary
    assert_valid("summary", summary, "summary.json of a batch run")
    # Every upload ended once: a caption or an error record; nothing lost, in the DLQ or paid twice
    assert (summary["lost"], summary["not_final"], summary["dead_lettered"]) == (0, 0, 0)
    assert (summary["captioned"], summary["rejected"]) == (IMAGES - 1, 1)
    assert summary["duplicate_paid_calls"] == 0
    assert summary["mode"] == "batch"

    batch = summary["batch"]
    assert batch["backfill"]["selected"] == IMAGES
    assert batch["backfill"]["mode"] == "batch"
    jobs = batch["jobs"]
    assert [j["status"] for j in jobs] == ["PartiallyCompleted", "Failed", "Completed"]
    assert all(j["state"] == "collected" for j in jobs)
    assert all(sum(j["counts"].values()) == j["records"] == JOB_RECORDS for j in jobs)
    # job 1: 6 of 10 answered, one of those a 429; job 2: none; job 3: a 429 and a bad image
    assert [j["counts"] for j in jobs] == [
        {"captioned": 5, "requeued": 5},
        {"requeued": 10},
        {"captioned": 8, "requeued": 1, "error_record": 1},
    ]
    # The dropped completion event was made up for by the poll
    assert batch["control_plane"]["events_dropped"] == 1
    assert batch["polls"] >= 1
    # Every requeued record was captioned online, once; the batch ones say so and cost half
    assert batch["captions_by_mode"] == {"batch": 13, "online": 16}
    assert batch["price_ratio"] == 0.5
    assert summary["paid_calls"] == IMAGES - 1

    by_mode: dict[str, int] = {}
    job_names = {j["job_name"] for j in jobs}
    for name in names:
        path = run.out / "captions" / f"{name}.json"
        if not path.exists():
            error = run.error(name)
            assert (error["stage"], error["error_code"], error["retryable"]) == (
                "caption",
                "model_rejected",
                False,
            )
            assert error["details"]["mode"] == "batch"
            assert error["details"]["batch_job"] in job_names
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        mode = record.get("mode", "online")
        by_mode[mode] = by_mode.get(mode, 0) + 1
        if mode == "batch":
            assert record["batch_job"] in job_names
            assert contract.record_cost_usd(record) == contract.model_cost_usd(
                record["model_id"],
                record["usage"]["input_tokens"],
                record["usage"]["output_tokens"],
                batch=True,
            )
    assert by_mode == batch["captions_by_mode"]
