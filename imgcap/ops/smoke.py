"""``imgcap smoke``: does a deployed stack caption what it should and reject what it should?

Three generated files go to ``images/smoke/<UTC time>-<random>/`` (a unique prefix, so runs never
meet each other or real uploads): two small PNGs that must be captioned, and a JPEG that is broken
after its header (``imgcap.samples.corrupt_jpeg``), which the resize stage must record as
``corrupt_image``. It waits until each is final (``imgcap.ops.wait``), checks each outcome against
the version it uploaded, prints a verdict, and deletes everything it wrote under that prefix in
every pipeline prefix (images, encoded copies, captions, error records, claims). Messages for its
images that ended in the DLQ are not deleted (that would consume them): ``imgcap dlq`` shows them.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageDraw

from imgcap.ops.bucket import list_objects
from imgcap.ops.context import OpsContext
from imgcap.ops.wait import CAPTIONED, REJECTED, Sent, wait_until_final
from imgcap.samples import corrupt_jpeg
from lambdas.shared import keys

SMOKE_FOLDER = "smoke"
EXPECTED_REJECTION = ("resize", "corrupt_image")  # (stage, error code) of the broken file
_CLEANUP_PREFIXES = (
    keys.IMAGES_PREFIX,
    keys.ENCODED_PREFIX,
    keys.CAPTIONS_PREFIX,
    keys.ERRORS_PREFIX,
    keys.CLAIMS_PREFIX,
)


def _png(color: tuple[int, int, int], accent: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (320, 240), color)
    draw = ImageDraw.Draw(image)
    draw.ellipse((80, 40, 240, 200), fill=accent)
    draw.rectangle((20, 180, 300, 220), outline=(255, 255, 255), width=4)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class SmokeFile:
    name: str
    body: bytes
    content_type: str
    expect: str  # CAPTIONED or REJECTED


def smoke_files() -> list[SmokeFile]:
    return [
        SmokeFile("sunset.png", _png((240, 140, 40), (250, 220, 80)), "image/png", CAPTIONED),
        SmokeFile("sea.png", _png((20, 60, 160), (230, 230, 240)), "image/png", CAPTIONED),
        SmokeFile("broken.jpg", corrupt_jpeg(), "image/jpeg", REJECTED),
    ]


def unique_folder() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{SMOKE_FOLDER}/{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class SmokeResult:
    folder: str
    checks: list[dict[str, Any]] = field(default_factory=list)  # one per file: key, expected, got, ok, why
    elapsed_s: float = 0.0
    cleaned_up: int = 0
    kept: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "folder": self.folder,
            "checks": self.checks,
            "elapsed_s": round(self.elapsed_s, 1),
            "cleaned_up_objects": self.cleaned_up,
            "kept": self.kept,
        }


def check_one(file: SmokeFile, sent: Sent, state: str, record: dict[str, Any] | None) -> dict[str, Any]:
    """Did this file end as it should? (a caption with text, or the expected resize rejection)."""
    row: dict[str, Any] = {"key": sent.key, "expected": file.expect, "got": state, "ok": False, "why": ""}
    record = record or {}
    if state != file.expect:
        row["why"] = f"expected {file.expect}, got {state}"
    elif state == CAPTIONED:
        text = record.get("caption")
        if isinstance(text, str) and text.strip():
            row["ok"], row["why"] = True, f"caption: {' '.join(text.split())[:80]}"
        else:
            row["why"] = "the caption record has no caption text"
    else:
        got = (record.get("stage"), record.get("error_code"))
        row["ok"] = got == EXPECTED_REJECTION and record.get("retryable") is False
        row["why"] = (
            f"{got[0]}/{got[1]}: {record.get('message')}"
            if row["ok"]
            else (f"expected {'/'.join(EXPECTED_REJECTION)} (not retryable), got {got[0]}/{got[1]}")
        )
    return row


def cleanup(ctx: OpsContext, folder: str) -> int:
    """Delete every object under ``<prefix><folder>/`` in each pipeline prefix; how many."""
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    doomed = [o.key for prefix in _CLEANUP_PREFIXES for o in list_objects(s3, bucket, f"{prefix}{folder}/")]
    for start in range(0, len(doomed), 1000):
        s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in doomed[start : start + 1000]], "Quiet": True},
        )
    return len(doomed)


def run(
    ctx: OpsContext,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 5.0,
    keep: bool = False,
    folder: str | None = None,
) -> SmokeResult:
    folder = folder or unique_folder()
    result = SmokeResult(folder=folder, kept=keep)
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    started = time.monotonic()
    files = smoke_files()
    ctx.err.write(
        f"imgcap smoke: uploading {len(files)} file(s) to s3://{bucket}/{keys.IMAGES_PREFIX}{folder}/\n"
    )
    sent: list[tuple[SmokeFile, Sent]] = []
    try:
        for f in files:
            key = f"{keys.IMAGES_PREFIX}{folder}/{f.name}"
            response = s3.put_object(Bucket=bucket, Key=key, Body=f.body, ContentType=f.content_type)
            sent.append((f, Sent(key, str(response["ETag"]).strip('"'))))
        verdicts = wait_until_final(ctx, [s for _, s in sent], timeout_s=timeout_s, poll_s=poll_s)
        for f, s in sent:
            state = verdicts.states.get(s.key, "not_final")
            result.checks.append(check_one(f, s, state, verdicts.records.get(s.key)))
    finally:
        result.elapsed_s = time.monotonic() - started
        if not keep:
            result.cleaned_up = cleanup(ctx, folder)
    for c in result.checks:
        ctx.err.write(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['key']}: {c['why']}\n")
    tail = "kept its objects" if keep else f"deleted {result.cleaned_up} object(s) it wrote"
    passed = sum(1 for c in result.checks if c["ok"])
    ctx.say(
        f"smoke: {'PASS' if result.passed else 'FAIL'} on stack {ctx.stack.name}: "
        f"{passed}/{len(result.checks)} checks in {result.elapsed_s:.0f} s; {tail}"
    )
    return result
