"""Issue 13: the concurrency formula and the shortfall detection give the documented numbers.

No sleeps: the worker's call time comes from a fake clock that each fake model call advances.
"""

from __future__ import annotations

import pytest

from lambdas.caption.capacity import BACKLOG_WAIT_S, assess, has_backlog, target_rpm
from lambdas.caption.pacing import CallTimeEstimate
from lambdas.shared.contract import (
    ContractError,
    auto_concurrency,
    expected_model_latency_s,
    oversized_fleet_note,
    parse_concurrency,
    reachable_rpm,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("rpm", "latency", "expected"),
    [
        (200, 4.3, 18),  # README example: 200 x 4.3 / 60 = 14.3 busy workers, x 1.25 headroom
        (200, 4.0, 17),
        (100, 4.0, 9),  # the stack's defaults
        (120, 3.8, 10),  # the local runtime's default quota at the stand-in's Nova Pro latency
        (1, 4.0, 2),  # never below the event source mapping's minimum
        (1_000_000, 4.0, 1000),  # never above its maximum
        (60, 1.0, 2),
    ],
)
def test_given_a_quota_and_a_latency_then_auto_concurrency_covers_it_with_headroom(rpm, latency, expected):
    assert auto_concurrency(rpm, latency) == expected


def test_given_auto_concurrency_then_its_workers_reach_the_quota_at_that_latency():
    for rpm in (30, 100, 200, 450, 2000):
        for latency in (0.5, 2.0, 4.0, 7.5):
            c = auto_concurrency(rpm, latency)
            assert reachable_rpm(c, latency) >= rpm or c == 1000


def test_given_model_ids_then_the_latency_table_matches_profiles_and_versions():
    assert expected_model_latency_s("us.amazon.nova-pro-v1:0") == 4.0
    assert expected_model_latency_s("amazon.nova-lite-v1:0") == 2.0
    assert expected_model_latency_s("global.amazon.nova-2-lite-v1:0") == 2.5  # not "nova-lite"
    assert expected_model_latency_s("eu.amazon.nova-premier-v1:0") == 6.0
    assert expected_model_latency_s("anthropic.some-model") == 4.0  # unknown: Nova Pro's figure


@pytest.mark.parametrize(("text", "value"), [("auto", None), ("AUTO", None), ("2", 2), ("1000", 1000)])
def test_given_concurrency_text_then_auto_or_a_bounded_number(text, value):
    assert parse_concurrency(text) == value


@pytest.mark.parametrize("text", ["1", "1001", "ten", "2.5", ""])
def test_given_bad_concurrency_text_then_the_error_names_it(text):
    with pytest.raises(ContractError, match="maxConcurrency"):
        parse_concurrency(text)


def test_given_ten_workers_at_4_3_s_and_200_rpm_then_the_sentence_has_the_fix():
    a = assess(
        requests_per_minute=200,
        tokens_per_minute=400_000,
        tokens_per_call=2_000,
        concurrency=10,
        call_s=4.3,
        backlog=True,
    )
    assert a.shortfall
    assert round(a.reachable_rpm) == 140
    assert a.suggested_concurrency == 18
    assert a.sentence() == (
        "at the observed 4.3 s per call, 10 workers can do ~140 of the 200 requests/minute configured: "
        "redeploy with `-c maxConcurrency=18`"
    )


def test_given_no_backlog_then_a_small_fleet_is_not_a_shortfall():
    a = assess(
        requests_per_minute=200,
        tokens_per_minute=400_000,
        tokens_per_call=2_000,
        concurrency=10,
        call_s=4.3,
        backlog=False,
    )
    assert not a.shortfall


def test_given_the_fleet_just_above_ninety_percent_then_no_shortfall():
    # 12 workers at 4.0 s = 180 rpm = exactly 0.9 x 200: not below the threshold.
    a = assess(
        requests_per_minute=200,
        tokens_per_minute=10**6,
        tokens_per_call=2_000,
        concurrency=12,
        call_s=4.0,
        backlog=True,
    )
    assert a.reachable_rpm == pytest.approx(180)
    assert not a.shortfall
    b = assess(
        requests_per_minute=200,
        tokens_per_minute=10**6,
        tokens_per_call=2_000,
        concurrency=12,
        call_s=4.1,
        backlog=True,
    )
    assert b.shortfall


def test_given_a_tokens_quota_that_binds_first_then_the_target_is_what_it_allows():
    # 200,000 TPM at 2,000 tokens a call allows 100 calls/min: 8 workers at 4 s (120/min) suffice.
    assert target_rpm(200, 200_000, 2_000) == 100
    a = assess(
        requests_per_minute=200,
        tokens_per_minute=200_000,
        tokens_per_call=2_000,
        concurrency=8,
        call_s=4.0,
        backlog=True,
    )
    assert not a.shortfall
    small = assess(
        requests_per_minute=200,
        tokens_per_minute=200_000,
        tokens_per_call=2_000,
        concurrency=5,
        call_s=4.0,
        backlog=True,
    )
    assert small.shortfall
    assert small.sentence() == (
        "at the observed 4.0 s per call, 5 workers can do ~75 of the 100 requests/minute the "
        "tokens-per-minute quota allows: redeploy with `-c maxConcurrency=9`"
    )


def test_given_batches_and_queue_waits_then_backlog_is_detected():
    assert has_backlog(2, None)
    assert has_backlog(1, BACKLOG_WAIT_S)
    assert not has_backlog(1, BACKLOG_WAIT_S - 0.1)
    assert not has_backlog(1, None)


def test_given_calls_timed_on_a_fake_clock_then_the_observed_time_feeds_the_assessment():
    now = [0.0]
    estimate = CallTimeEstimate()
    for seconds in (4.0, 4.6, 4.3, 4.3, 4.3):
        started = now[0]
        now[0] += seconds  # the fake model call
        estimate.observe(now[0] - started)
    a = assess(
        requests_per_minute=200,
        tokens_per_minute=10**6,
        tokens_per_call=2_000,
        concurrency=10,
        call_s=estimate.average_s,
        backlog=True,
    )
    assert 4.2 < a.call_s < 4.45
    assert a.shortfall
    assert a.suggested_concurrency == 18


# --------------------------------------------------------------------------- the worker, end to end


def _slow_fleet_batch(backlog: bool, call_s: float = 4.3):
    """A worker of a 10-worker fleet at 200 rpm whose calls take ``call_s`` on the fake clock."""
    import base64

    from lambdas.caption.service import Delivery, Outcome
    from lambdas.shared import keys
    from lambdas.shared.config import PacingSpec
    from lambdas.shared.records import ImageMessage
    from tests.fakes import MemoryQueue, MemoryStore
    from tests.unit.test_races import BUCKET, PNG, Clock, FakeModel, caption_settings, worker

    store, clock = MemoryStore(), Clock()

    class SlowModel(FakeModel):
        def __call__(self, request, budget_s):
            clock.now += call_s  # the call takes call_s on the worker's clock
            return super().__call__(request, budget_s)

    w = worker(store, SlowModel(), clock)
    settings = caption_settings(
        pacing=PacingSpec(requests_per_minute=200, tokens_per_minute=10**7, max_concurrency=10)
    )
    batch = w.begin(settings, lambda: 600_000, backlog=backlog)
    for i in range(4):
        key = f"images/fleet/pic-{i}.jpg"
        etag = store.upload(key, f"v{i}".encode())
        encoded = keys.encoded_key(key)
        store.put_bytes(encoded, base64.b64encode(PNG), "text/plain", metadata={"source-etag": etag})
        body = ImageMessage(BUCKET, key, etag, encoded, 64, 36, "2026-12-01T07:00:00.000Z").to_json()
        result = batch.process(Delivery(f"m-{i}", f"rh-{i}", body, 1, MemoryQueue()))
        assert result.outcome is Outcome.CAPTIONED
    return w, batch, store, settings


def test_given_a_backlog_and_slow_calls_when_a_batch_ends_then_the_shortfall_is_noted_once():
    from lambdas.shared import keys

    w, batch, store, settings = _slow_fleet_batch(backlog=True)
    assessment = batch.capacity()
    assert assessment is not None
    assert assessment.shortfall
    assert assessment.call_s == pytest.approx(4.3)
    w.note_capacity(assessment, settings.model.model_id)
    document = store.json(keys.CAPACITY_HEALTH_KEY)
    assert document["kind"] == "capacity_shortfall"
    assert document["suggested_max_concurrency"] == 18
    assert document["message"].startswith("at the observed 4.3 s per call, 10 workers can do ~140")
    # Rate-limited: a second note within the interval writes nothing new.
    store.delete(keys.CAPACITY_HEALTH_KEY)
    w.note_capacity(assessment, settings.model.model_id)
    assert keys.CAPACITY_HEALTH_KEY not in store.objects


def test_given_no_backlog_or_fast_calls_then_no_shortfall():
    _, idle, _, _ = _slow_fleet_batch(backlog=False)
    assert idle.capacity() is not None
    assert not idle.capacity().shortfall
    _, fast, _, _ = _slow_fleet_batch(backlog=True, call_s=2.0)  # 10 x 60 / 2 = 300 >= 200
    assert fast.capacity() is not None
    assert not fast.capacity().shortfall


# --------------------------------------------------------------------------- a fleet too large


@pytest.mark.parametrize(("rpm", "concurrency"), [(200, 16), (100, 9), (10, 10), (5, 2)])
def test_given_workers_that_may_call_at_least_once_a_minute_then_no_oversized_fleet_note(rpm, concurrency):
    assert oversized_fleet_note(rpm, concurrency) is None


def test_given_more_workers_than_requests_per_minute_then_the_note_names_the_interval_and_the_fix():
    # Given 10 workers sharing 5 requests a minute (the measured case: about half the quota)
    note = oversized_fleet_note(5, 10)
    assert note is not None
    assert "maxConcurrency 10 is more than requests-per-minute 5" in note
    assert "once every 120 s" in note
    assert "at most 5" in note
    # A quota below the mapping's two workers cannot be fixed with concurrency: the note says so
    low = oversized_fleet_note(1, 2)
    assert low is not None
    assert "at most" not in low
    assert "at least 2 workers" in low


def test_given_a_local_run_with_more_workers_than_its_quota_then_it_warns_at_the_start(tmp_path):
    from types import SimpleNamespace

    from imgcap.local.options import LocalOptions
    from imgcap.local.runtime import _say_start

    lines: list[str] = []
    for concurrency in (10, 2):
        options = LocalOptions(images=tmp_path, out=tmp_path / "out", rpm=5, concurrency=concurrency)
        _say_start(SimpleNamespace(options=options, say=lines.append), files=40, batch=False)  # type: ignore[arg-type]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1  # only the 10-worker run
    assert "--concurrency 10 is more than requests-per-minute 5" in warnings[0]
    assert "use --concurrency auto or at most 5" in warnings[0]
