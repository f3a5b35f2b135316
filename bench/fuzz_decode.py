"""`make fuzz`: bounded fuzzing of the decode path (``resize_and_encode``); not part of `make test`.

The property under test is the domain's contract: for ANY bytes, ``resize_and_encode`` returns an
exact-size PNG or raises ``Rejection``; nothing else (``MemoryError`` included, which would mean the
header checks let a bomb through), and no single input takes more than ``SLOW_SECONDS``.

Engines:
- atheris (coverage-guided libFuzzer, with Pillow's Python plugins instrumented) when it is
  installed (requirements-dev.txt pins it where a wheel exists). It runs in a child process for
  ``--seconds``; the child records every contract violation to ``findings.jsonl`` instead of
  crashing, so one run reports all of them; a libFuzzer timeout/OOM ends the child, is recorded, and
  the child is restarted for the time left.
- hypothesis over mutated bytes of valid images otherwise (``--engine hypothesis`` forces it).

Seeds are the small files of the hostile corpus (tests/corpus.py) plus one small image per accepted
format. Findings (inputs that broke the contract) are written to ``--out`` (default
``.bench/fuzz-decode``); the summary table and a final JSON line go to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SECONDS = 120
SLOW_SECONDS = 2.0  # per input, at the small fuzzing spec below
MAX_LEN = 64 * 1024
STATS_EVERY = 200  # executions between two writes of the outcome counts


def fuzz_spec() -> Any:
    """Small output and a 4 MP limit: mutated headers stay cheap, every code path stays reachable."""
    from lambdas.shared.config import ImageSpec

    return ImageSpec(width=128, height=72, max_pixels=4_000_000)


def seed_inputs() -> list[bytes]:
    import io

    from PIL import Image

    from tests.corpus import corpus_cases, small_cases

    seeds = [c.data for c in small_cases(corpus_cases(), max_bytes=MAX_LEN)]
    base = Image.effect_noise((24, 16), 40).convert("RGB")
    for fmt, mode, params in (
        ("JPEG", "RGB", {"progressive": True}),
        ("PNG", "RGBA", {}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("GIF", "P", {}),
        ("TIFF", "RGB", {"compression": "tiff_lzw"}),
        ("BMP", "RGB", {}),
    ):
        out = io.BytesIO()
        base.convert(mode).save(out, format=fmt, **params)
        seeds.append(out.getvalue())
    return seeds


class Recorder:
    """Runs one input through the contract check; keeps outcome counts and distinct findings."""

    def __init__(self, out: Path) -> None:
        from lambdas.resize.imaging import resize_and_encode
        from lambdas.shared.errors import Rejection

        self._encode = resize_and_encode
        self._rejection = Rejection
        self._spec = fuzz_spec()
        self.out = out
        self.outcomes: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.runs = 0
        out.mkdir(parents=True, exist_ok=True)
        self._findings = out / "findings.jsonl"
        self._stats = out / f"stats-{os.getpid()}.json"

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        started = time.perf_counter()
        try:
            result = self._encode(data, self._spec)
            if (result.width, result.height) != (self._spec.width, self._spec.height):
                raise AssertionError(f"output is {result.width}x{result.height}")
            self.outcomes["png"] += 1
        except self._rejection as rejection:
            self.outcomes[rejection.code.value] += 1
        except BaseException as exc:  # the contract says nothing else escapes: record, go on
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.outcomes["violation"] += 1
            self._record(data, type(exc).__name__, str(exc), _where(exc))
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_SECONDS:
            self._record(data, "Slow", f"{elapsed:.1f} s for one input", "")
        if self.runs % STATS_EVERY == 0:
            self.write_stats()

    def _record(self, data: bytes, kind: str, message: str, where: str) -> None:
        key = f"{kind}|{where}"
        if key in self.seen:
            return
        self.seen.add(key)
        digest = hashlib.sha256(data).hexdigest()[:16]
        sample = self.out / f"finding-{digest}.bin"
        sample.write_bytes(data)
        line = {
            "kind": kind,
            "message": message[:300],
            "where": where,
            "sample": str(sample),
            "bytes": len(data),
        }
        with self._findings.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def write_stats(self) -> None:
        self._stats.write_text(json.dumps({"runs": self.runs, "outcomes": dict(self.outcomes)}))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


# ---------------------------------------------------------------------------------------------
# atheris (child process)


def _atheris_child(seconds: int, out: Path, seeds_dir: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["PIL", "lambdas"]):
        from PIL import Image  # noqa: F401  (instrumented: coverage feedback from the plugins)

        recorder = Recorder(out)

    def test_one_input(data: bytes) -> None:
        recorder(data)

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={seconds}",
            f"-max_len={MAX_LEN}",
            "-timeout=20",
            "-rss_limit_mb=3072",
            "-print_final_stats=1",
            f"-artifact_prefix={out}/libfuzzer-",
            str(seeds_dir),
        ],
        test_one_input,
    )
    try:
        atheris.Fuzz()
    finally:  # pragma: no cover - libFuzzer usually exits the process itself
        recorder.write_stats()


def run_atheris(seconds: int, out: Path) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    executions = 0
    coverage = ""
    crashes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as tmp:
        seeds_dir = Path(tmp)
        for i, seed in enumerate(seed_inputs()):
            (seeds_dir / f"seed-{i:03d}").write_bytes(seed)
        restarts = 0
        while (left := int(deadline - time.monotonic())) >= 5 and restarts < 10:
            done = subprocess.run(
                [sys.executable, "-m", "bench.fuzz_decode", "--child", str(left), str(out), str(seeds_dir)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=left + 120,
                check=False,
            )
            executions += _stat(done.stderr, "stat::number_of_executed_units")
            coverage = _coverage(done.stderr) or coverage
            if "ERROR: libFuzzer" in done.stderr or "==ERROR" in done.stderr:
                reason = next(line for line in done.stderr.splitlines() if "ERROR" in line)
                crashes.append(reason.strip())
            elif done.returncode != 0:
                crashes.append(f"child exited with {done.returncode}: {done.stderr.strip()[-300:]}")
            restarts += 1
            if done.returncode == 0:
                break
    outcomes: Counter[str] = Counter()
    for stats in out.glob("stats-*.json"):
        outcomes.update(json.loads(stats.read_text())["outcomes"])
        stats.unlink()
    return {
        "engine": "atheris",
        "executions": executions,
        "coverage": coverage,
        "outcomes": dict(outcomes),
        "libfuzzer_crashes": crashes,
    }


def _coverage(stderr: str) -> str:
    """'cov: N ft: M corp: K/SIZE' from libFuzzer's last status line (edges and features reached)."""
    for line in reversed(stderr.splitlines()):
        if " cov: " in line:
            words = line.split()
            return " ".join(words[words.index("cov:") : words.index("corp:") + 2])
    return ""


def _stat(stderr: str, name: str) -> int:
    for line in stderr.splitlines():
        if line.startswith(name):
            return int(line.split(":")[-1].strip())
    return 0


# ---------------------------------------------------------------------------------------------
# hypothesis (in process)


def run_hypothesis(seconds: int, out: Path) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    recorder = Recorder(out)
    seeds = seed_inputs()
    mutation = st.tuples(
        st.sampled_from(["overwrite", "insert", "delete", "truncate", "splice"]),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=8),
    )

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        seed=st.sampled_from(range(len(seeds))),
        other=st.sampled_from(range(len(seeds))),
        ops=st.lists(mutation, max_size=8),
    )
    def one(seed: int, other: int, ops: list[tuple[str, float, bytes]]) -> None:
        data = bytearray(seeds[seed])
        for op, where, blob in ops:
            at = int(where * len(data)) if data else 0
            if op == "overwrite":
                data[at : at + len(blob)] = blob
            elif op == "insert":
                data[at:at] = blob
            elif op == "delete":
                del data[at : at + len(blob)]
            elif op == "truncate":
                del data[at:]
            else:  # splice: the head of this seed, the tail of another
                donor = seeds[other]
                data = data[:at] + donor[int(where * len(donor)) :]
        recorder(bytes(data[:MAX_LEN]))

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        one()
    recorder.write_stats()
    for stats in out.glob("stats-*.json"):
        stats.unlink()
    return {"engine": "hypothesis", "executions": recorder.runs, "outcomes": dict(recorder.outcomes)}


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", DEFAULT_SECONDS)))
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "fuzz-decode")
    parser.add_argument("--child", nargs=3, metavar=("SECONDS", "OUT", "SEEDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _atheris_child(int(args.child[0]), Path(args.child[1]), Path(args.child[2]))
        return 0

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "hypothesis"
        else:
            engine = "atheris"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    findings_file = out / "findings.jsonl"
    findings_file.unlink(missing_ok=True)
    print(f"fuzzing resize_and_encode with {engine} for {args.seconds} s; findings -> {out}", flush=True)
    started = time.monotonic()
    summary = run_atheris(args.seconds, out) if engine == "atheris" else run_hypothesis(args.seconds, out)
    summary["seconds"] = round(time.monotonic() - started, 1)
    findings = (
        [json.loads(line) for line in findings_file.read_text().splitlines()]
        if findings_file.exists()
        else []
    )
    summary["findings"] = findings

    print(f"\nexecutions: {summary['executions']:,} in {summary['seconds']} s ({engine})")
    if summary.get("coverage"):
        print(f"libFuzzer coverage at the end: {summary['coverage']}")
    for outcome, count in sorted(summary["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<22} {count:>8,}")
    for crash in summary.get("libfuzzer_crashes", []):
        print(f"libFuzzer stopped a child: {crash}")
    print(f"contract violations (distinct): {len(findings)}")
    for f in findings:
        print(f"  {f['kind']}: {f['message']} at {f['where']} (sample {f['sample']}, {f['bytes']} bytes)")
    print(json.dumps(summary))
    return 1 if findings or summary.get("libfuzzer_crashes") else 0


if __name__ == "__main__":
    raise SystemExit(main())
