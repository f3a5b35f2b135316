"""Issue 6: the whole hostile-input corpus through the local runtime.

Every file ends as a caption or as an error record with the expected code, nothing is lost, no
file takes more than 5 s in the resize stage, and the resize worker process stays under a stated
memory bound (peak RSS measured with ``resource.getrusage`` inside the worker).

The 5 s are CPU seconds of the resize invocation (measured inside the worker): that is the work a
file costs, which a busy machine does not inflate. Wall-clock time on a shared 2-core machine is
not a measure of it (under two CPU hogs the slowest file took 4.5 s of wall clock); it only has to
show that no file hangs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus import CAPTION, CorpusCase, build_corpus
from tests.e2e.conftest import Run, run_pipeline

pytestmark = pytest.mark.e2e

MAX_SECONDS_PER_FILE = 5.0  # CPU time of one resize invocation
MAX_WALL_SECONDS_PER_FILE = 120.0  # no file hangs, however busy the machine
# Stated bounds for the worker processes' peak RSS (VmHWM): the resize function has 1,769 MB and the
# corpus's largest legitimate inputs are a 24 MP JPEG and a 64 MP greyscale PNG (measured peak about
# 160 MB); the caption function has 512 MB (measured about 90 MB). Both must stay well inside.
RESIZE_RSS_BOUND_MB = 400
CAPTION_RSS_BOUND_MB = 200


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[CorpusCase], Run]:
    images = tmp_path_factory.mktemp("corpus")
    cases = build_corpus(images)
    run = run_pipeline(images, tmp_path_factory.mktemp("out"), tuning_overrides={"resize_concurrency": 2})
    return cases, run


def _record(out: Path, prefix: str, name: str) -> Path:
    return out / prefix / f"{name}.json"


def test_every_file_ends_as_expected_and_nothing_is_lost(corpus_run: tuple[list[CorpusCase], Run]) -> None:
    cases, run = corpus_run

    wrong = []
    for case in cases:
        if case.expected == CAPTION:
            if not _record(run.out, "captions", case.name).exists():
                wrong.append((case.name, "no caption"))
        elif not _record(run.out, "errors", case.name).exists():
            wrong.append((case.name, f"no error record, expected {case.expected}"))
        else:
            code = run.error(case.name)["error_code"]
            if code != case.expected:
                wrong.append((case.name, f"{code} != {case.expected}"))

    assert wrong == []
    assert run.summary["lost"] == 0
    assert run.result.exit_code == 0
    assert run.summary["images"] == len(cases)
    assert run.summary["captioned"] == sum(c.expected == CAPTION for c in cases)
    assert run.summary["dead_lettered"] == 0
    assert run.summary["resize_failed"] == 0


def test_no_file_takes_more_than_five_seconds_to_resize(corpus_run: tuple[list[CorpusCase], Run]) -> None:
    cases, run = corpus_run
    logged = {
        line["source_key"]: line["duration_ms"]
        for line in run.log("resize-encode")
        if "source_key" in line and "duration_ms" in line
    }
    resize_invocations = [i for i in run.log("invocations") if i["function"].endswith("resize-encode")]
    resize_fn = run.summary["functions"]["resize-encode"]

    assert set(logged) == {f"images/{c.name}" for c in cases}
    assert all(i["ok"] for i in resize_invocations)
    # one invocation per file, and none used more than 5 s of CPU
    assert resize_fn["invocations"] == len(resize_invocations) >= len(cases)
    assert 0 < resize_fn["max_cpu_ms"] < MAX_SECONDS_PER_FILE * 1000
    # ... and none hung
    hung = {key: ms for key, ms in logged.items() if ms > MAX_WALL_SECONDS_PER_FILE * 1000}
    assert hung == {}
    assert all(i["duration_ms"] < MAX_WALL_SECONDS_PER_FILE * 1000 for i in resize_invocations)


def test_workers_stay_under_the_memory_bound(corpus_run: tuple[list[CorpusCase], Run]) -> None:
    _, run = corpus_run
    functions = run.summary["functions"]

    assert 0 < functions["resize-encode"]["peak_rss_mb"] < RESIZE_RSS_BOUND_MB
    assert 0 < functions["caption"]["peak_rss_mb"] < CAPTION_RSS_BOUND_MB
    assert functions["resize-encode"]["timeouts"] == 0
    assert functions["resize-encode"]["errors"] == 0
