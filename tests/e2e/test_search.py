"""End to end, issue 17: `imgcap local --keep-running` indexes as it goes, then `imgcap search` works.

The real user flow in one run: the CLI in a subprocess (moto, the Bedrock stand-in with its
stand-in embeddings, the S3 Vectors stand-in, worker processes for resize, caption and index),
its printed endpoint environment, then `imgcap status` / `imgcap search` in this process against
it, and a re-upload that replaces the image's vector. Stopped with SIGTERM, as Ctrl-C would.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import jsonschema
import pytest
from PIL import Image

from imgcap.cli import main as imgcap_main
from imgcap.ops.search import SEARCH_JSON_SCHEMA
from lambdas.shared import contract

pytestmark = pytest.mark.e2e

COMMAND = (sys.executable, "-m", "imgcap.cli", "local")
# structured captions (issue 15) carry the tags that --tag filters on
FAST = ("--keep-running", "--rpm", "6000", "--concurrency", "2", "--caption-format", "structured")
READY_TIMEOUT_S = 400.0  # a busy 2-core machine; the run itself takes well under a minute
REINDEX_TIMEOUT_S = 180.0

# 16:9 so the 1280x720 encoding has no bars; colours the stand-in names differently
IMAGES = {
    "trips/red.png": (220, 30, 30),
    "trips/sky.png": (120, 185, 235),
    "green.png": (40, 160, 60),
    "night.png": (15, 20, 60),
}


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 180), rgb).save(buf, "PNG")
    return buf.getvalue()


class LocalRuntime:
    def __init__(self, images: Path, out: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        self.proc = subprocess.Popen(
            [*COMMAND, "--images", str(images), "--out", str(out), *FAST],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "imgcap status --stack-name" in line:
                self.ready.set()
        self.ready.set()  # ended: the waiter looks at the exit code

    def environment(self) -> dict[str, str]:
        exports = [
            line.strip().removeprefix("export ") for line in self.lines if line.strip().startswith("export ")
        ]
        return dict(item.split("=", 1) for item in exports)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalRuntime, Path]]:
    images = tmp_path / "images"
    for rel, rgb in IMAGES.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(_png(rgb))
    out = tmp_path / "out"
    local = LocalRuntime(images, out)
    try:
        assert local.ready.wait(READY_TIMEOUT_S), "imgcap local did not get ready:\n" + "\n".join(
            local.lines[-30:]
        )
        assert local.proc.poll() is None, "imgcap local ended:\n" + "\n".join(local.lines[-30:])
        for name, value in local.environment().items():
            monkeypatch.setenv(name, value)
        yield local, out
    finally:
        local.stop()


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert imgcap_main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_given_local_search_then_one_vector_per_image_search_finds_it_first_and_a_reupload_replaces_it(
    runtime, capsys
):
    local, out = runtime
    # Every captioned image has exactly one vector (the run waits for the index queue too)
    status = _json(capsys, ["status", "--json", "--no-usage"])
    index = status["search_index"]
    assert index["captions"] == len(IMAGES)
    assert index["vectors"] == len(IMAGES)
    assert index["not_indexed"] == 0

    # A phrase taken from one image's stand-in caption finds that image first
    caption = json.loads((out / "captions" / "trips/red.png.json").read_text())["caption"]
    phrase = caption.split(":", 1)[1]  # the description, without the stand-in's "not a model" mark
    found = _json(capsys, ["search", phrase, "--json", "-k", "4"])
    jsonschema.validate(found, SEARCH_JSON_SCHEMA)
    assert found["hits"][0]["key"] == "images/trips/red.png"
    assert len(found["hits"]) == len(IMAGES)

    # --folder keeps trips/ only
    trips = _json(capsys, ["search", phrase, "--json", "--folder", "trips"])
    assert {h["key"] for h in trips["hits"]} == {"images/trips/red.png", "images/trips/sky.png"}

    # --tag keeps images whose structured caption has the tag (all hits have it; red.png is one)
    tag = json.loads((out / "captions" / "trips/red.png.json").read_text())["tags"][0]
    tagged = _json(capsys, ["search", phrase, "--json", "--tag", tag])
    assert tagged["hits"]
    assert all(tag.lower() in h["tags"] for h in tagged["hits"])
    assert "images/trips/red.png" in {h["key"] for h in tagged["hits"]}

    # A re-upload replaces the vector (same key, the new version's ETag), still one per image
    s3 = boto3.client("s3")
    vectors = boto3.client("s3vectors")
    bucket = f"{contract.DEFAULT_STACK_NAME.lower()}-images"
    new_etag = s3.put_object(Bucket=bucket, Key="images/trips/red.png", Body=_png((240, 220, 50)))[
        "ETag"
    ].strip('"')
    where = {
        "vectorBucketName": f"{contract.DEFAULT_STACK_NAME.lower()}-vectors",
        "indexName": contract.DEFAULT_INDEX_NAME,
    }
    deadline = time.monotonic() + REINDEX_TIMEOUT_S
    listed: list[dict] = []
    while time.monotonic() < deadline:
        listed = vectors.list_vectors(**where, returnMetadata=True)["vectors"]
        by_key = {v["key"]: v["metadata"] for v in listed}
        if by_key.get("trips/red.png", {}).get("source_etag") == new_etag:
            break
        time.sleep(1.0)
    by_key = {v["key"]: v["metadata"] for v in listed}
    assert by_key["trips/red.png"]["source_etag"] == new_etag, "\n".join(local.lines[-20:])
    assert len(listed) == len(IMAGES)
    assert "yellow" in by_key["trips/red.png"]["caption"]
