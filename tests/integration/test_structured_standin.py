"""Issue 15 over real wire formats: the caption stage's structured request through boto3 to the
stand-in (a forced tool answered with a toolUse block that validates, or, with the invalid_tool
fault, one that does not), and the object-tag merge through boto3 against moto's S3.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from PIL import Image, ImageDraw

from imgcap.local.faults import FaultKind, parse_faults
from imgcap.local.latency import StandinLatency
from imgcap.local.standin import BedrockStandin, StandinConfig
from lambdas.caption import model
from lambdas.caption.structured import InvalidStructuredOutput
from lambdas.caption.tagging import S3ObjectTags
from lambdas.shared.config import ModelSpec
from lambdas.shared.contract import ALT_TEXT_MAX_CHARS, OBJECT_TAG_MARK, TAGS_MAX, TAGS_MIN

pytestmark = pytest.mark.integration


def _png() -> bytes:
    image = Image.new("RGB", (1280, 720), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((437, 0, 842, 719), fill=(125, 185, 235))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def standin_client(request: pytest.FixtureRequest) -> Iterator[tuple[BedrockStandin, Any]]:
    faults = parse_faults(getattr(request, "param", ""))
    standin = BedrockStandin(StandinConfig(rpm=None, latency=StandinLatency.uniform(0.0, 0.0), faults=faults))
    with standin.serve():
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=standin.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=60),
        )
        yield standin, client


def _call(client: Any, spec: ModelSpec) -> dict[str, Any]:
    return dict(client.converse(**model.converse_request(spec, _png())))


def test_given_the_structured_request_when_boto3_sends_it_then_the_tool_answer_validates(standin_client):
    _, client = standin_client
    response = _call(client, ModelSpec(caption_format="structured", service_tier="flex"))
    assert response["stopReason"] == "tool_use"
    answer = model.parse_response(response, structured_output=True)
    assert answer.structured is not None
    assert answer.text == answer.structured.description
    assert len(answer.structured.alt_text) <= ALT_TEXT_MAX_CHARS
    assert TAGS_MIN <= len(answer.structured.tags) <= TAGS_MAX
    assert "portrait" in answer.structured.tags  # the picture inside the bars, not the frame
    assert answer.service_tier == "flex"  # echoed like Bedrock's serviceTier


def test_given_a_text_request_then_the_answer_is_still_one_paragraph(standin_client):
    _, client = standin_client
    response = _call(client, ModelSpec())
    assert "text" in response["output"]["message"]["content"][0]
    assert model.parse_response(response).structured is None


@pytest.mark.parametrize("standin_client", ["invalid_tool*1"], indirect=True)
def test_given_the_invalid_tool_fault_then_the_answer_is_refused_and_the_next_one_validates(standin_client):
    standin, client = standin_client
    with pytest.raises(InvalidStructuredOutput) as raised:
        model.parse_response(_call(client, ModelSpec(caption_format="structured")), structured_output=True)
    problems = str(raised.value)
    for expected in ("text_in_image is required", "at most 125", "at least 3 items", "preamble"):
        assert expected in problems
    assert model.parse_response(_call(client, ModelSpec(caption_format="structured")), structured_output=True)
    assert standin.stats()["paid_calls"] == 2  # an invalid answer is a paid call
    assert parse_faults("invalid_tool=0.5").shares == {FaultKind.INVALID_TOOL: 0.5}


def _tags(s3: Any) -> dict[str, str]:
    tag_set = s3.get_object_tagging(Bucket="tags-bucket", Key="images/a.jpg")["TagSet"]
    return {t["Key"]: t["Value"] for t in tag_set}


@mock_aws
def test_given_user_tags_on_an_upload_when_tagged_twice_then_user_tags_stay_and_ours_are_replaced():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="tags-bucket")
    s3.put_object(Bucket="tags-bucket", Key="images/a.jpg", Body=b"x", Tagging="owner=alice&project=p1")
    tagger = S3ObjectTags(s3, "tags-bucket")

    tagger.tag("images/a.jpg", ["beach", "owner", "sea"] + [f"k{i}" for i in range(10)])
    first = _tags(s3)
    assert first["owner"] == "alice"
    assert first["project"] == "p1"
    assert len(first) == 10
    assert [k for k, v in first.items() if v == OBJECT_TAG_MARK][:2] == ["beach", "sea"]

    tagger.tag("images/a.jpg", ["dog", "park", "grass"])
    second = _tags(s3)
    assert second == {
        "owner": "alice",
        "project": "p1",
        "dog": OBJECT_TAG_MARK,
        "park": OBJECT_TAG_MARK,
        "grass": OBJECT_TAG_MARK,
    }
