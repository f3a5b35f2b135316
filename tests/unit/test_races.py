"""Races between uploads and deliveries, replayed deterministically on the in-memory store.

Each test makes "the other" upload or delivery happen at one exact moment (a store hook, or inside
the fake encoder / model call) and asserts who wins (README "Consistency rules"). Issue 11 items
1-3 and 6; each fails on the code before the fix.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from lambdas.caption.bedrock import MIN_READ_TIMEOUT_S, call_limits
from lambdas.caption.claims import Claims
from lambdas.caption.pacing import Pacer
from lambdas.caption.service import CaptionWorker, Delivery, Outcome
from lambdas.resize.events import ObjectRef
from lambdas.resize.service import Outcome as ResizeOutcome
from lambdas.resize.service import process_object
from lambdas.shared import aws, keys
from lambdas.shared.config import ImageSpec, ModelSpec, PacingSpec
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.records import ImageMessage
from lambdas.shared.settings import CaptionSettings
from lambdas.shared.versions import Published, Version, clear_stale, publish
from tests.fakes import MemoryQueue, MemoryStore

pytestmark = pytest.mark.unit

BUCKET = "memory-bucket"
KEY = "images/race/pic.jpg"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


@dataclass(frozen=True)
class FakeEncoded:
    b64: bytes
    source_format: str = "JPEG"
    source_width: int = 64
    source_height: int = 36
    width: int = 1280
    height: int = 720


def encoder(during=None):
    """An encoder that returns the upload's bytes as 'PNG' text, running ``during`` first."""

    def encode(data: bytes, spec: ImageSpec) -> FakeEncoded:
        if during is not None:
            during()
        if data.startswith(b"broken"):
            raise Rejection(ErrorCode.CORRUPT_IMAGE, "the file is broken", "BrokenFile")
        return FakeEncoded(b64=base64.b64encode(data))

    return encode


def resize(store: MemoryStore, etag: str, during=None, queue: MemoryQueue | None = None):
    ref = ObjectRef(BUCKET, KEY, etag, len(store.objects[KEY].body), "2026-12-01T07:00:00.000Z")
    return process_object(
        ref, store=store, queue=queue or MemoryQueue(), spec=ImageSpec(), encode=encoder(during)
    )


# --------------------------------------------------------------------------- item 1: resize


def test_given_v1_encoding_when_v2_is_uploaded_and_processed_then_v1_never_replaces_v2s_output():
    store = MemoryStore()
    v1 = store.upload(KEY, b"first picture")
    queue = MemoryQueue()
    results = {}

    def upload_and_process_v2() -> None:
        v2 = store.upload(KEY, b"second picture")
        results["v2"] = (v2, resize(store, v2, queue=queue))

    # When v1's encode runs while v2 is uploaded and fully processed
    v1_result = resize(store, v1, during=upload_and_process_v2, queue=queue)

    # Then the encoded object is v2's, v1 ends as superseded and sent nothing
    v2, v2_result = results["v2"]
    assert v2_result.outcome is ResizeOutcome.RESIZED
    assert v1_result.outcome is ResizeOutcome.SUPERSEDED
    encoded = store.objects[keys.encoded_key(KEY)]
    assert encoded.metadata["source-etag"] == v2
    assert base64.b64decode(encoded.body) == b"second picture"
    assert [ImageMessage.from_json(b).source_etag for b in queue.sent] == [v2]


def test_given_v1_encoding_when_v2_is_uploaded_and_rejected_then_v1_keeps_v2s_rejection():
    store = MemoryStore()
    v1 = store.upload(KEY, b"first picture")
    results = {}

    def upload_broken_v2() -> None:
        v2 = store.upload(KEY, b"broken second upload")
        results["v2"] = (v2, resize(store, v2))

    v1_result = resize(store, v1, during=upload_broken_v2)

    v2, v2_result = results["v2"]
    assert v2_result.outcome is ResizeOutcome.REJECTED
    assert v1_result.outcome is ResizeOutcome.SUPERSEDED
    # The current upload's rejection is still there, and no encoded object claims to be it
    record = store.json(keys.error_key(KEY))
    assert (record["error_code"], record["source"]["etag"]) == ("corrupt_image", v2)
    assert keys.encoded_key(KEY) not in store.objects


def test_given_an_old_rejection_when_a_fixed_reupload_succeeds_then_the_rejection_is_cleared():
    store = MemoryStore()
    v1 = store.upload(KEY, b"broken first upload")
    assert resize(store, v1).outcome is ResizeOutcome.REJECTED
    v2 = store.upload(KEY, b"a good picture")
    assert resize(store, v2).outcome is ResizeOutcome.RESIZED
    assert keys.error_key(KEY) not in store.objects


def test_given_v1_rejected_late_when_v2_already_succeeded_then_no_error_record_is_written():
    store = MemoryStore()
    v1 = store.upload(KEY, b"broken first upload")
    results = {}

    def v2_succeeds_first() -> None:
        v2 = store.upload(KEY, b"a good picture")
        results["v2"] = resize(store, v2)

    v1_result = resize(store, v1, during=v2_succeeds_first)
    assert results["v2"].outcome is ResizeOutcome.RESIZED
    assert v1_result.outcome is ResizeOutcome.SUPERSEDED
    assert keys.error_key(KEY) not in store.objects


def test_given_a_newer_rejection_written_after_the_snapshot_then_clear_stale_leaves_it():
    store = MemoryStore()
    v1 = store.upload(KEY, b"v1")
    error_key = keys.error_key(KEY)
    store.put_json(error_key, {"old": True}, metadata={"source-etag": "0ld"})

    # Right after clear_stale reads the error record, v2 arrives and is rejected
    def v2_rejected() -> None:
        v2 = store.upload(KEY, b"v2")
        store.put_json(error_key, {"new": True}, metadata={"source-etag": v2})

    store.on("head", KEY, v2_rejected)  # between the snapshot and the currency check
    assert clear_stale(store, error_key, Version(KEY, v1)) is False
    assert store.json(error_key) == {"new": True}


@pytest.mark.parametrize("older_record", [False, True], ids=["no record yet", "an older version's record"])
def test_given_a_write_between_snapshot_and_put_then_publish_retries_and_sees_it_superseded(older_record):
    # Given v1 current, and either no record yet or one of an older version (v0): the snapshot that
    # v1's put is conditional on (IfNoneMatch="*" or IfMatch on the v0 record's ETag)
    store = MemoryStore()
    out = "captions/race/pic.jpg.json"
    if older_record:
        store.put_json(out, {"v": 0}, metadata={"source-etag": "0ld"})
    v1 = store.upload(KEY, b"v1")

    # When, after v1's currency check and right before its put, v2 is uploaded and writes its record
    def newer_upload_writes_its_record() -> None:
        v2 = store.upload(KEY, b"v2")
        store.put_json(out, {"v": 2}, metadata={"source-etag": v2})

    store.on("put", out, newer_upload_writes_its_record)

    def write(if_none_match: bool, if_match: str | None) -> str:
        return store.put_json(
            out, {"v": 1}, metadata={"source-etag": v1}, if_none_match=if_none_match, if_match=if_match
        )

    # Then v1's conditional put fails, the retry finds v1 superseded, and v2's record stays
    assert publish(store, out, Version(KEY, v1), write, replace_same_version=False) is Published.SUPERSEDED
    assert store.json(out) == {"v": 2}


def test_given_a_newer_rejection_written_right_before_the_delete_then_clear_stale_leaves_it():
    # Given an old rejection (v0) and v1, current, that succeeded
    store = MemoryStore()
    error_key = keys.error_key(KEY)
    store.put_json(error_key, {"old": True}, metadata={"source-etag": "0ld"})
    v1 = store.upload(KEY, b"v1")

    # When v2's rejection replaces the old one after v1's currency check, right before its delete
    store.on(
        "delete", error_key, lambda: store.put_json(error_key, {"new": True}, metadata={"source-etag": "v2"})
    )

    # Then the delete, conditional on the old record's ETag, removes nothing
    assert clear_stale(store, error_key, Version(KEY, v1)) is False
    assert store.json(error_key) == {"new": True}


# --------------------------------------------------------------------------- items 2, 3, 6: caption


class FakeModel:
    """Answers every call; ``during`` runs inside the first call (the other delivery, the upload)."""

    def __init__(self, text: str = "A red rectangle.", stop_reason: str = "end_turn") -> None:
        self.calls: list[float] = []  # the time budget each call was given
        self.during: list[Any] = []
        self.text, self.stop_reason = text, stop_reason

    def __call__(self, request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        self.calls.append(budget_s)
        if self.during:
            self.during.pop(0)()
        return {
            "output": {"message": {"content": [{"text": self.text}]}},
            "stopReason": self.stop_reason,
            "usage": {"inputTokens": 1600, "outputTokens": 120, "totalTokens": 1720},
        }


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def caption_settings(**overrides: Any) -> CaptionSettings:
    values: dict[str, Any] = {
        "bucket": BUCKET,
        "model": ModelSpec(),
        "pacing": PacingSpec(requests_per_minute=600, tokens_per_minute=10_000_000, max_concurrency=1),
        "backoff_base_s": 10,
        "backoff_max_s": 300,
        "model_error_max_attempts": 3,
        "bedrock_read_timeout_s": 50,
        "bedrock_max_attempts": 2,
        "claim_lease_s": 900,
    }
    values.update(overrides)
    return CaptionSettings(**values)


def seed_version(store: MemoryStore, body: bytes) -> tuple[str, str]:
    """Upload a version and its encoded object (as resize would); return (ETag, message body)."""
    etag = store.upload(KEY, body)
    store.put_bytes(
        keys.encoded_key(KEY), base64.b64encode(PNG), "text/plain", metadata={"source-etag": etag}
    )
    message = ImageMessage(BUCKET, KEY, etag, keys.encoded_key(KEY), 64, 36, "2026-12-01T07:00:00.000Z")
    return etag, message.to_json()


def worker(store: MemoryStore, model: FakeModel, clock: Clock) -> CaptionWorker:
    return CaptionWorker(
        store=store,
        call_model=model,
        pacer=Pacer(600, 10_000_000, clock=clock),
        clock=clock,
        sleep=clock.sleep,
        wall=clock,
        rand=lambda: 0.5,
    )


def deliver(w: CaptionWorker, body: str, message_id: str = "m-1", remaining_s: float = 120.0):
    batch = w.begin(caption_settings(), lambda: int(remaining_s * 1000))
    return batch.process(Delivery(message_id, f"rh-{message_id}", body, 1, MemoryQueue()))


def test_given_v1_in_its_model_call_when_v2_is_captioned_first_then_v1_is_superseded_not_written():
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    _, v1_body = seed_version(store, b"v1")
    outcomes = {}

    def v2_uploaded_and_captioned() -> None:
        v2, v2_body = seed_version(store, b"v2")
        outcomes["v2"] = (v2, deliver(w, v2_body, "m-2"))

    model.during.append(v2_uploaded_and_captioned)
    v1_result = deliver(w, v1_body)

    v2, v2_result = outcomes["v2"]
    assert v2_result.outcome is Outcome.CAPTIONED
    assert v1_result.outcome is Outcome.SUPERSEDED
    assert not v1_result.failed  # finished: a stale version is never retried, never an error
    assert store.json(keys.caption_key(KEY))["source"]["etag"] == v2
    assert store.keys("errors/") == []
    assert store.keys("claims/") == []


def test_given_a_second_copy_of_the_message_during_the_call_then_it_waits_and_nothing_is_paid_twice():
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    _, body = seed_version(store, b"v1")
    second = {}
    # Standard SQS hands a second copy of the same message (same MessageId) to another worker
    model.during.append(lambda: second.setdefault("result", deliver(w, body, "m-1")))

    first = deliver(w, body, "m-1")

    assert first.outcome is Outcome.CAPTIONED
    assert second["result"].outcome is Outcome.BUSY
    assert second["result"].failed
    assert len(model.calls) == 1
    # ... and when the copy comes back later, it finds the caption: still one paid call
    assert deliver(w, body, "m-1").outcome is Outcome.DUPLICATE
    assert len(model.calls) == 1


def test_given_an_expired_claim_then_anyone_takes_it_over_and_a_release_never_removes_anothers_claim():
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    etag, body = seed_version(store, b"v1")
    claim_key = keys.claim_key(KEY, etag)
    store.put_json(claim_key, {"message_id": "dead", "claimed_at": clock.now - 901})

    # While our call runs, someone else replaces the claim (as a takeover would)
    model.during.append(lambda: store.put_json(claim_key, {"message_id": "other", "claimed_at": clock.now}))
    assert deliver(w, body).outcome is Outcome.CAPTIONED

    # Our release was conditional on our own put: the other holder's claim is still there
    assert store.json(claim_key)["message_id"] == "other"


def test_given_two_late_comers_for_an_expired_claim_then_only_one_takes_it_over():
    store, clock = MemoryStore(), Clock()
    claims = Claims(store, lease_s=900, wall=clock)
    etag = store.upload(KEY, b"v1")
    claim_key = keys.claim_key(KEY, etag)
    store.put_json(claim_key, {"message_id": "dead", "claimed_at": clock.now - 901})
    taken = {}

    # B takes the expired claim over after A has read it and right before A's own takeover put
    def b_takes_over_before_a_puts() -> None:
        taken["b"] = claims.take(KEY, etag, "m-b")

    store.on("get", claim_key, lambda: store.on("put", claim_key, b_takes_over_before_a_puts))
    taken["a"] = claims.take(KEY, etag, "m-a")

    # A's put was conditional on the expired claim it read: B's takeover stands, A has none
    assert taken["b"] is not None
    assert taken["a"] is None
    assert store.json(claim_key)["message_id"] == "m-b"


def test_given_little_time_left_then_the_call_budget_never_outlives_the_invocation():
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    _, body = seed_version(store, b"v1")
    assert deliver(w, body, remaining_s=40.0).outcome is Outcome.CAPTIONED
    assert model.calls == [pytest.approx(40.0 - w.safety_margin_s)]


@pytest.mark.parametrize("budget_s", [10.0, 20.0, 35.0, 64.0, 115.0, 300.0])
@pytest.mark.parametrize("configured_read_s", [2.0, 10.0, 50.0, 60.0, 600.0])
@pytest.mark.parametrize("configured_attempts", [1, 2, 3])
def test_given_any_budget_then_attempts_times_connect_plus_read_fits_it(
    budget_s, configured_read_s, configured_attempts
):
    limits = call_limits(budget_s, configured_read_s, configured_attempts)
    assert limits is not None
    attempts, read = limits
    assert 1 <= attempts <= configured_attempts
    assert min(MIN_READ_TIMEOUT_S, configured_read_s) <= read <= configured_read_s
    assert attempts * (aws.CONNECT_TIMEOUT_S + read) <= budget_s


def test_given_a_budget_too_small_for_one_bounded_call_then_none_and_nothing_is_sent():
    assert call_limits(MIN_READ_TIMEOUT_S + aws.CONNECT_TIMEOUT_S - 0.1, 50, 2) is None
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)

    def too_small(request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        from lambdas.caption.bedrock import BedrockConverse

        return BedrockConverse(50, 2)(request, 1.0)  # raises before any client is built

    w.call_model = too_small
    _, body = seed_version(store, b"v1")
    result = deliver(w, body)
    assert result.outcome is Outcome.STOPPED
    assert result.failed
    assert store.keys("captions/") == []
    assert store.keys("claims/") == []


@pytest.mark.parametrize(
    ("budget_s", "configured_read_s", "configured_attempts"), [(40.0, 60.0, 2), (20.0, 50.0, 3)]
)
def test_given_a_budget_then_the_sdk_client_is_built_with_the_limits_that_fit_it(
    monkeypatch, budget_s, configured_read_s, configured_attempts
):
    from lambdas.caption import bedrock

    built: list[tuple[int, float]] = []

    class Client:
        def converse(self, **request: Any) -> dict[str, Any]:
            return {"output": {"message": {"content": [{"text": "ok"}]}}}

    def fake_client(max_attempts: int, read_timeout_s: float) -> Client:
        built.append((max_attempts, read_timeout_s))
        return Client()

    monkeypatch.setattr(bedrock, "bedrock_client", fake_client)
    bedrock.BedrockConverse(configured_read_s, configured_attempts)({"modelId": "m"}, budget_s)

    # The client the call ran on has the bounded limits, not the configured ones
    assert built == [call_limits(budget_s, configured_read_s, configured_attempts)]
    [(attempts, read)] = built
    assert attempts * (aws.CONNECT_TIMEOUT_S + read) <= budget_s


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        ("AccessDeniedException", 403, "You don't have access to the model with the specified model ID."),
        ("ResourceNotFoundException", 404, "Model not found."),
        ("ValidationException", 400, "The provided model identifier is invalid."),
    ],
)
def test_given_a_configuration_fault_then_the_delivery_is_retried_as_one_and_nothing_is_written_off(
    code, status, text
):
    from lambdas.caption.model import ModelCallError, RetryKind

    store, clock = MemoryStore(), Clock()

    def denied(request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        raise ModelCallError(code, text, status)

    w = worker(store, FakeModel(), clock)
    w.call_model = denied
    _, body = seed_version(store, b"v1")
    result = deliver(w, body)

    # Item 4: retried (backed off), marked as configuration (its own metric), no error record
    assert result.outcome is Outcome.DEFERRED
    assert result.failed
    assert result.retry is RetryKind.CONFIGURATION
    assert store.keys("errors/") == []
    assert store.json(keys.CAPTION_HEALTH_KEY)["error_type"] == code  # what `imgcap status` says


# --------------------------------------------------------------------------- item 9: truncated


def test_given_an_answer_cut_at_max_tokens_then_the_record_says_truncated():
    store, clock = MemoryStore(), Clock()
    model = FakeModel(text="A red rectangle on a", stop_reason="max_tokens")
    w = worker(store, model, clock)
    _, body = seed_version(store, b"v1")
    result = deliver(w, body)
    assert result.outcome is Outcome.CAPTIONED
    assert result.truncated
    record = store.json(keys.caption_key(KEY))
    assert record["truncated"] is True
    assert record["stop_reason"] == "max_tokens"


def test_given_a_complete_answer_then_the_record_says_not_truncated():
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    _, body = seed_version(store, b"v1")
    assert not deliver(w, body).truncated
    assert store.json(keys.caption_key(KEY))["truncated"] is False


# --------------------------------------------------------------------------- requests per image


def test_a_first_delivery_reads_its_caption_key_once_and_writes_conditionally_on_that_read():
    # Issue 13: the caption key is read once, under the claim; publish writes conditionally on
    # that read instead of reading it again (the race tests above show it still never moves back)
    store, model, clock = MemoryStore(), FakeModel(), Clock()
    w = worker(store, model, clock)
    etag, body = seed_version(store, b"v1")
    store.calls.clear()

    assert deliver(w, body).outcome is Outcome.CAPTIONED

    claim = keys.claim_key(KEY, etag)
    assert store.calls == [
        ("put", claim),  # the claim, create-only
        ("head", keys.caption_key(KEY)),  # the one duplicate check, and publish's snapshot
        ("head", keys.error_key(KEY)),  # a final caption-stage error for this ETag?
        ("get", keys.encoded_key(KEY)),
        ("head", KEY),  # still the current version, after the call
        ("put", keys.caption_key(KEY)),  # If-None-Match on the snapshot
        ("delete", claim),  # If-Match on our own claim
    ]
    assert len(model.calls) == 1


def test_a_first_upload_reads_its_encoded_key_once_and_writes_conditionally_on_that_read():
    store = MemoryStore()
    v1 = store.upload(KEY, b"first picture")
    store.calls.clear()

    assert resize(store, v1).outcome is ResizeOutcome.RESIZED

    assert store.calls == [
        ("head", keys.encoded_key(KEY)),  # already encoded for this ETag? and publish's snapshot
        ("get", KEY),  # If-Match on the event's ETag
        ("head", KEY),  # still the current version, after the encode
        ("put", keys.encoded_key(KEY)),  # If-None-Match on the snapshot
        ("head", keys.error_key(KEY)),  # an older rejection to clear?
    ]
