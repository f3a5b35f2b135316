"""The Bedrock stand-in on a loopback port, driven by the real boto3 ``bedrock-runtime`` client.

Proves the wire format both ways (botocore builds the request the stand-in parses; botocore parses
the stand-in's answers and errors, 429 included), the quota, scripted and seeded faults, and the
measurements the offline caption is made of.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from PIL import Image, ImageDraw

from imgcap.local.faults import FaultKind, FaultPlan, FaultSpecError, parse_faults
from imgcap.local.latency import StandinLatency
from imgcap.local.standin import (
    STANDIN_MARK,
    BedrockStandin,
    SlidingWindowQuota,
    StandinConfig,
    analyse_image,
    describe,
    quota_limit,
)

pytestmark = pytest.mark.integration

MODEL_ID = "us.amazon.nova-pro-v1:0"
PROMPT = "Generate a detailed description of the image."


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _pillarboxed() -> bytes:
    """What the resize stage makes of a portrait photo with the pad policy: black bars left/right."""
    image = Image.new("RGB", (1280, 720), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((437, 0, 842, 719), fill=(125, 185, 235))
    return _png(image)


# The client's timeouts leave a busy 2-core machine plenty of room: a call the stand-in answers
# must never time out on the client. Only the timeout-fault test lowers the read timeout, and the
# stand-in then holds the request far longer than that (until teardown releases it).
CLIENT_TIMEOUT_S = 60
TIMEOUT_FAULT_READ_TIMEOUT_S = 2
TIMEOUT_FAULT_HOLD_S = 600.0


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a stand-in with a given config; every one started is stopped at teardown."""
    started: list[Any] = []

    def start(read_timeout: float = CLIENT_TIMEOUT_S, **config: Any) -> tuple[BedrockStandin, Any]:
        config.setdefault("latency", StandinLatency.uniform(0.0, 0.0))
        standin = BedrockStandin(StandinConfig(**config))
        context = standin.serve()
        context.__enter__()
        started.append(context)
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=standin.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=read_timeout,
                connect_timeout=CLIENT_TIMEOUT_S,
            ),
        )
        return standin, client

    yield start
    for context in started:
        context.__exit__(None, None, None)


def _converse(client: Any, image: bytes, max_tokens: int = 300) -> dict[str, Any]:
    return dict(
        client.converse(
            modelId=MODEL_ID,
            messages=[
                {
                    "role": "user",
                    "content": [{"image": {"format": "png", "source": {"bytes": image}}}, {"text": PROMPT}],
                }
            ],
            inferenceConfig={"maxTokens": max_tokens, "temperature": 0.3, "topP": 0.1},
            additionalModelRequestFields={"inferenceConfig": {"topK": 20}},
        )
    )


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# --- wire format --------------------------------------------------------------------------------


def test_given_an_image_when_boto3_calls_converse_then_the_answer_parses_with_usage(serve: Any) -> None:
    standin, client = serve(rpm=None)

    response = _converse(client, _pillarboxed())

    text = response["output"]["message"]["content"][0]["text"]
    assert text.startswith(STANDIN_MARK)
    assert "1280x720" in text
    assert "landscape" in text
    assert "sky blue" in text
    assert "black bars at the left and right" in text
    assert response["stopReason"] == "end_turn"
    usage = response["usage"]
    assert usage["inputTokens"] == 1229 + 10  # ceil(1280*720/750) + ceil(7 prompt words * 1.3)
    assert usage["outputTokens"] == len(text.split())
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert response["metrics"]["latencyMs"] >= 0
    stats = standin.stats()
    assert stats["outcomes"]["ok"] == 1
    assert stats["paid_calls"] == 1
    assert list(stats["paid_by_image"].values()) == [1]


def test_given_max_tokens_below_the_caption_when_called_then_stop_reason_is_max_tokens(serve: Any) -> None:
    _, client = serve(rpm=None)

    response = _converse(client, _pillarboxed(), max_tokens=5)

    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 5
    assert len(response["output"]["message"]["content"][0]["text"].split()) == 5


def test_given_a_quota_of_two_when_three_calls_arrive_then_the_third_is_a_parsed_throttling_exception(
    serve: Any,
) -> None:
    standin, client = serve(rpm=2)
    image = _pillarboxed()
    _converse(client, image)
    _converse(client, image)

    with pytest.raises(ClientError) as exc:
        _converse(client, image)

    assert _error(exc) == ("ThrottlingException", 429)
    assert exc.value.response["Error"]["Message"].startswith("Too many requests")
    stats = standin.stats()
    assert stats["outcomes"]["throttled_quota"] == 1
    assert stats["quota_peak"] == 2
    assert stats["paid_calls"] == 2


def test_given_scripted_faults_when_called_then_each_error_arrives_with_its_code_and_status(
    serve: Any,
) -> None:
    standin, client = serve(rpm=None, faults=parse_faults("throttle*1,server*2,model*1,validation*1"))
    image = _pillarboxed()
    seen = []
    for _ in range(5):
        with pytest.raises(ClientError) as exc:
            _converse(client, image)
        seen.append(_error(exc))

    response = _converse(client, image)  # the script is used up: the next call goes through

    assert seen == [
        ("ThrottlingException", 429),
        ("ServiceUnavailableException", 503),
        ("InternalServerException", 500),
        ("ModelErrorException", 424),
        ("ValidationException", 400),
    ]
    assert response["stopReason"] == "end_turn"
    outcomes = standin.stats()["outcomes"]
    assert outcomes["throttled_injected"] == 1
    assert outcomes["server_error"] == 2
    assert outcomes["model_error"] == 1
    assert outcomes["validation"] == 1
    assert outcomes["ok"] == 1


def test_given_a_timeout_fault_when_the_client_reads_then_botocore_times_out(serve: Any) -> None:
    standin, client = serve(
        read_timeout=TIMEOUT_FAULT_READ_TIMEOUT_S,
        rpm=None,
        faults=parse_faults("timeout*1"),
        timeout_hold_s=TIMEOUT_FAULT_HOLD_S,  # never answers: stopping the stand-in releases it
    )

    with pytest.raises(ReadTimeoutError):
        _converse(client, _pillarboxed())

    assert standin.stats()["outcomes"]["timeout"] == 1
    assert standin.stats()["paid_calls"] == 0


def test_given_bytes_that_are_not_an_image_when_called_then_validation_exception(serve: Any) -> None:
    standin, client = serve(rpm=None)

    with pytest.raises(ClientError) as exc:
        _converse(client, b"definitely not a png")

    assert _error(exc) == ("ValidationException", 400)
    assert standin.stats()["outcomes"]["invalid_request"] == 1


# --- quota and faults (pure parts) ------------------------------------------------------------


def test_given_a_sliding_window_when_time_passes_then_slots_come_back() -> None:
    now = [0.0]
    quota = SlidingWindowQuota(limit=2, window_s=10.0, clock=lambda: now[0])

    first, second, third = quota.try_acquire(), quota.try_acquire(), quota.try_acquire()
    now[0] = 9.9
    still_full = quota.try_acquire()
    now[0] = 10.0
    after_window = quota.try_acquire()

    assert first is not None
    assert second is not None
    assert third is None
    assert still_full is None
    assert after_window is not None
    quota.release(after_window)
    assert quota.try_acquire() is not None


def test_quota_limit_scales_rpm_to_the_window() -> None:
    assert quota_limit(120, 60) == 120
    assert quota_limit(36, 10) == 6
    assert quota_limit(1, 1) == 1  # never zero


def test_given_the_issue_spec_when_parsed_then_shares_and_description_round_trip() -> None:
    spec = parse_faults("throttle=0.2, server=0.05,timeout=0.02,validation=0.01,model=0.01")

    assert dict(spec.shares) == {
        FaultKind.THROTTLE: 0.2,
        FaultKind.SERVER: 0.05,
        FaultKind.TIMEOUT: 0.02,
        FaultKind.VALIDATION: 0.01,
        FaultKind.MODEL: 0.01,
    }
    assert spec.total_share == pytest.approx(0.29)
    assert parse_faults(spec.describe()) == spec


@pytest.mark.parametrize(
    "text",
    [
        "bogus=0.1",
        "throttle=2",
        "throttle=x",
        "throttle",
        "ok=0.5",
        "server*0",
        "seed=abc",
        "throttle=0.7,server=0.4",
    ],
)
def test_given_a_bad_fault_item_when_parsed_then_the_error_names_it(text: str) -> None:
    with pytest.raises(FaultSpecError) as exc:
        parse_faults(text)
    assert str(exc.value)


def test_given_a_script_then_shares_when_drawn_then_script_first_and_seeded_draws_repeat() -> None:
    spec = parse_faults("ok*1,timeout*2,throttle=0.5,seed=7")
    plan, again = FaultPlan(spec), FaultPlan(spec)

    drawn = [plan.next_fault() for _ in range(200)]

    assert drawn[:3] == [None, FaultKind.TIMEOUT, FaultKind.TIMEOUT]
    assert drawn == [again.next_fault() for _ in range(200)]
    throttles = drawn[3:].count(FaultKind.THROTTLE)
    assert 70 < throttles < 130  # about half of 197


# --- what the caption is made of --------------------------------------------------------------


def test_given_a_pillarboxed_frame_when_analysed_then_bars_and_the_portrait_content_are_measured() -> None:
    facts = analyse_image(_pillarboxed())

    assert (facts.width, facts.height, facts.orientation) == (1280, 720, "landscape")
    assert facts.bars == "pillarbox"
    assert facts.bar_colour == "black"
    assert facts.content_height == 720
    assert 380 <= facts.content_width <= 440
    assert facts.colours[0][0] == "sky blue"
    assert facts.colours[0][1] > 0.9


def test_given_a_dark_busy_square_when_described_then_the_caption_says_so() -> None:
    image = Image.new("RGB", (600, 600), (10, 12, 40))
    draw = ImageDraw.Draw(image)
    for x in range(0, 600, 6):
        draw.line((x, 0, x, 599), fill=(200, 200, 200) if (x // 6) % 2 else (10, 12, 40), width=1)
    facts = analyse_image(_png(image))

    text = describe(facts)

    assert facts.orientation == "square"
    assert facts.bars is None
    assert facts.detail == "busy"
    assert text.startswith(STANDIN_MARK)
    assert "square" in text
    assert "600x600" in text
    assert "fills the whole frame" in text


def test_given_a_flat_colour_when_analysed_then_no_bars_and_mostly_that_colour() -> None:
    facts = analyse_image(_png(Image.new("RGB", (320, 480), (200, 35, 35))))

    assert facts.bars is None
    assert facts.orientation == "portrait"
    assert facts.colours[0] == ("red", 1.0)
    assert facts.detail == "flat"
    assert "mostly red" in describe(facts)
    assert analyse_image(_png(Image.new("RGB", (64, 64), (250, 250, 250)))).brightness == "bright"
