"""Issue 5: model faults injected by the stand-in, one of each kind, in one deterministic run.

The script ``throttle*3,server*2,validation*1,model*1,timeout*1`` fails exactly the first eight
model calls that pass the quota, in that order (SDK retries included), then lets every call through.
Which image meets which fault depends on scheduling; the totals do not: every image except the one
that met the ValidationException gets exactly one paid call and a caption; that one gets an error
record at once and no retry; every other fault costs exactly one extra call.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from imgcap.local.faults import parse_faults
from tests.e2e.conftest import Run, run_pipeline, write_images

pytestmark = pytest.mark.e2e

IMAGES = 6
SCRIPT = "throttle*3,server*2,validation*1,model*1,timeout*1"
SCRIPTED_FAULTS = 8


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Run]:
    images = tmp_path_factory.mktemp("images")
    names = write_images(images, IMAGES)
    run = run_pipeline(images, tmp_path_factory.mktemp("out"), faults=parse_faults(SCRIPT))
    return names, run


def _states(names: list[str], out: Path) -> Counter[str]:
    states: Counter[str] = Counter()
    for name in names:
        captioned = (out / "captions" / f"{name}.json").exists()
        errored = (out / "errors" / f"{name}.json").exists()
        states["captioned" if captioned else "error" if errored else "none"] += 1
    return states


def test_all_faults_resolve_to_final_states_with_nothing_lost(faulty: tuple[list[str], Run]) -> None:
    names, run = faulty

    assert run.result.exit_code == 0
    assert run.summary["lost"] == 0
    assert run.summary["dead_lettered"] == 0
    assert _states(names, run.out) == Counter({"captioned": IMAGES - 1, "error": 1})
    assert run.summary["standin"]["fault_script_remaining"] == 0


def test_model_call_counts_add_up(faulty: tuple[list[str], Run]) -> None:
    _, run = faulty
    standin = run.summary["standin"]

    assert standin["requests"] == (IMAGES - 1) + SCRIPTED_FAULTS
    assert standin["paid_calls"] == IMAGES - 1 == run.summary["captioned"]
    assert run.summary["duplicate_paid_calls"] == 0


def test_throttle_burst_is_retried_not_lost(faulty: tuple[list[str], Run]) -> None:
    _, run = faulty

    assert run.summary["standin"]["outcomes"]["throttled_injected"] == 3
    assert run.summary["throttled"] == 3
    # each throttled call was made again (by the SDK's own retry or a redelivery) and succeeded
    assert run.summary["captioned"] == IMAGES - 1


def test_server_errors_503_and_500_are_retried(faulty: tuple[list[str], Run]) -> None:
    _, run = faulty

    assert run.summary["standin"]["outcomes"]["server_error"] == 2


def test_model_error_is_retried_once_then_captioned(faulty: tuple[list[str], Run]) -> None:
    _, run = faulty

    assert run.summary["standin"]["outcomes"]["model_error"] == 1
    assert "model_error" not in run.summary["rejected_by_code"]


def test_read_timeout_is_retried(faulty: tuple[list[str], Run]) -> None:
    _, run = faulty

    assert run.summary["standin"]["outcomes"]["timeout"] == 1


def test_validation_error_is_permanent_an_error_record_and_no_retry(faulty: tuple[list[str], Run]) -> None:
    names, run = faulty
    errors = [run.error(n) for n in names if (run.out / "errors" / f"{n}.json").exists()]

    assert run.summary["standin"]["outcomes"]["validation"] == 1
    assert len(errors) == 1
    assert (errors[0]["stage"], errors[0]["error_code"], errors[0]["error_type"]) == (
        "caption",
        "model_rejected",
        "ValidationException",
    )
    assert run.summary["rejected_by_code"] == {"model_rejected": 1}
    assert run.summary["metrics"]["rejections_by_code"] == {"model_rejected": 1}
