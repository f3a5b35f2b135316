"""Helpers for the end-to-end tier: run the local runtime fast, make small distinct images.

Every run here is the real thing: moto server, the Bedrock stand-in, worker processes running the
shipped handlers. Only the local knobs are turned down (latency, backoff, worker counts) so each
run takes seconds; tests that are about a quota or a timeout set those knobs themselves.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from imgcap.local.latency import StandinLatency
from imgcap.local.runtime import LocalOptions, LocalResult, LocalTuning, run_local

# Fast local settings: no pacing to speak of, short backoffs, one resize worker. The Bedrock read
# timeout is generous: the stand-in answers in tens of milliseconds, but on a busy 2-core machine a
# call can take seconds, and a call timed out after the stand-in answered it is retried by the SDK:
# a second paid call, which breaks every exact count of calls (at 1 s and at 2 s it did). The caption
# handler cuts it further to the time its invocation has left (30 s, minus its margin).
FAST_TUNING = LocalTuning(
    resize_concurrency=1,
    caption_timeout_s=30.0,
    bedrock_read_timeout_s=10.0,
    throttle_backoff_base_s=1.0,
    throttle_backoff_max_s=2.0,
    async_retry_delays_s=(0.2, 0.4),
)


@dataclass(frozen=True)
class Run:
    result: LocalResult
    progress: str  # what the runtime printed (a non-TTY stream: plain lines)

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary

    @property
    def out(self) -> Path:
        return self.result.out

    def caption(self, rel: str) -> dict[str, Any]:
        return json.loads((self.out / "captions" / f"{rel}.json").read_text(encoding="utf-8"))

    def error(self, rel: str) -> dict[str, Any]:
        return json.loads((self.out / "errors" / f"{rel}.json").read_text(encoding="utf-8"))

    def log(self, name: str) -> list[dict[str, Any]]:
        path = self.out / "logs" / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_pipeline(images: Path, out: Path, **overrides: Any) -> Run:
    """Run ``imgcap local`` in-process on ``images`` with fast defaults (overridable)."""
    tuning = overrides.pop("tuning", FAST_TUNING)
    tuning_overrides = overrides.pop("tuning_overrides", {})
    options = LocalOptions(
        images=images,
        out=out,
        **{
            "rpm": 6000.0,
            "concurrency": 2,
            "batch_size": 4,
            "standin_latency": StandinLatency.uniform(0.02, 0.06),
            # Both only bound a run that goes wrong: a run ends as soon as every upload is final and
            # the queues are quiet, so generous bounds cost nothing on a busy machine.
            "timeout_s": 300.0,
            "settle_s": 60.0,
            "tuning": replace(tuning, **tuning_overrides),
            **overrides,
        },
    )
    stream = io.StringIO()
    result = run_local(options, stream=stream)
    return Run(result=result, progress=stream.getvalue())


def write_images(
    dest: Path, count: int, size: tuple[int, int] = (320, 180), prefix: str = "img"
) -> list[str]:
    """``count`` small, distinct PNGs (different colours and a drawn index); returns relative names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        hue = (i * 47) % 256
        image = Image.new("RGB", size, (hue, 255 - hue, (hue * 3) % 256))
        draw = ImageDraw.Draw(image)
        draw.rectangle((10 + i % 50, 10, 60 + i % 50, 60), fill=(255, 255, 255))
        draw.text((80, 20), f"#{i}", fill=(0, 0, 0))
        buf = io.BytesIO()
        image.save(buf, "PNG")
        name = f"{prefix}-{i:03d}.png"
        (dest / name).write_bytes(buf.getvalue())
        names.append(name)
    return names


@pytest.fixture
def pipeline() -> Callable[..., Run]:
    return run_pipeline
