"""Every file of the hostile/odd corpus (tests/corpus.py) through the pure domain function.

Each case must end exactly as the corpus says (a 1280x720 PNG, or a rejection with the stated
code), within 5 s of CPU time; a fresh process that encodes the whole corpus stays under MEMORY_BOUND_MB.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lambdas.resize.imaging import resize_and_encode
from lambdas.shared.config import ImageSpec, ResizePolicy, pixel_limit_for_memory
from lambdas.shared.errors import ErrorCode, Rejection
from tests.corpus import (
    CAPTION,
    DEFAULT_MAX_PIXELS,
    MAX_MAX_PIXELS,
    MIN_MAX_PIXELS,
    CorpusCase,
    build_corpus,
    corpus_cases,
)

pytestmark = pytest.mark.unit

SPEC = ImageSpec(max_pixels=DEFAULT_MAX_PIXELS)  # what a 1,769 MB function derives
PER_FILE_SECONDS = 5.0
# Peak RSS of a fresh interpreter that encodes every corpus file (measured ~95 MB; the 64 MP PNG
# dominates). A 1,769 MB function has more than ten times the bound.
MEMORY_BOUND_MB = 160
REPO = Path(__file__).resolve().parents[2]

CASES = corpus_cases()


def outcome(case: CorpusCase, spec: ImageSpec = SPEC) -> tuple[str, Image.Image | str]:
    """(outcome, the decoded output PNG or the rejection message)."""
    try:
        result = resize_and_encode(case.data, spec)
    except Rejection as rejection:
        return rejection.code.value, rejection.message
    out = Image.open(io.BytesIO(result.png))
    out.load()
    return CAPTION, out


def test_given_the_corpus_then_it_is_big_varied_and_small_on_disk(tmp_path: Path) -> None:
    # When it is written out
    written = build_corpus(tmp_path)
    # Then: at least 60 files, under 30 MB, every outcome represented, the odd names present
    assert len(written) >= 60
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 30_000_000
    assert {c.expected for c in written} == {
        CAPTION,
        ErrorCode.EMPTY_FILE.value,
        ErrorCode.UNSUPPORTED_FORMAT.value,
        ErrorCode.CORRUPT_IMAGE.value,
        ErrorCode.TOO_MANY_PIXELS.value,
        ErrorCode.INVALID_DIMENSIONS.value,
    }
    names = [c.name for c in written]
    for needle in (" ", "+", "%", "?", "#", "é", "日本", ".JPG"):
        assert any(needle in n for n in names), needle
    assert any("." not in n.rsplit("/", 1)[-1] for n in names), "a file without an extension"
    assert any(len(n) >= 190 for n in names), "a very long name"
    assert any(n.count("/") >= 5 for n in names), "nested folders"
    assert all((tmp_path / c.name).read_bytes() == c.data for c in written)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_given_a_corpus_file_when_encoded_then_outcome_is_the_expected_one(case: CorpusCase) -> None:
    # CPU time, not wall-clock: a busy machine stretches the latter, not the work a file costs
    started = time.process_time()
    got, out = outcome(case)
    elapsed = time.process_time() - started
    assert got == case.expected, case.about
    assert elapsed < PER_FILE_SECONDS
    if isinstance(out, str):
        assert len(out) > 20, "a rejection carries a message a person can act on"
    else:
        assert out.format == "PNG"
        assert out.size == (1280, 720)
        assert out.mode in ("RGB", "RGBA")


@pytest.mark.parametrize(
    ("policy", "memory_mb"),
    [(ResizePolicy.CROP, 1024), (ResizePolicy.STRETCH, 3008)],
    ids=["crop-1024", "stretch-3008"],
)
def test_given_other_policies_and_memory_sizes_when_encoded_then_outcomes_do_not_change(
    policy: ResizePolicy, memory_mb: int
) -> None:
    # The corpus promises its expectations for any memory whose pixel limit lies in this range
    max_pixels = pixel_limit_for_memory(memory_mb)
    assert MIN_MAX_PIXELS <= max_pixels <= MAX_MAX_PIXELS
    spec = ImageSpec(policy=policy, max_pixels=max_pixels)
    mismatches = [(c.name, got) for c in CASES if (got := outcome(c, spec)[0]) != c.expected]
    assert mismatches == []


_MEASURE = """
import json, sys, time
from pathlib import Path
from lambdas.resize.imaging import resize_and_encode
from lambdas.shared.config import ImageSpec
from lambdas.shared.errors import Rejection
root, max_pixels, names = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.stdin.read())
spec, slowest = ImageSpec(max_pixels=max_pixels), (0.0, "")
for name in names:
    data = (root / name).read_bytes()
    started = time.process_time()  # CPU seconds: what the file costs, whatever else runs
    try:
        resize_and_encode(data, spec)
    except Rejection:
        pass
    del data
    slowest = max(slowest, (time.process_time() - started, name))
# VmHWM, not ru_maxrss: after a vfork+exec Linux carries the parent's high-water mark into ru_maxrss.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024, "slowest": slowest}))
"""


def test_given_a_fresh_process_when_it_encodes_the_whole_corpus_then_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    # Given the corpus on disk (so the generator's own memory is not counted)
    cases = build_corpus(tmp_path)
    # When a fresh interpreter reads and encodes every file
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path), str(DEFAULT_MAX_PIXELS)],
        input=json.dumps([c.name for c in cases]),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,  # a hang guard only; the per-file bound is on CPU time
        check=True,
    )
    report = json.loads(done.stdout)
    # Then its peak RSS stays under the stated bound and no file took more than 5 s of CPU time
    print(f"corpus peak RSS {report['peak_mb']:.0f} MB, slowest {report['slowest']}")
    assert report["peak_mb"] < MEMORY_BOUND_MB, report
    assert report["slowest"][0] < PER_FILE_SECONDS, report
