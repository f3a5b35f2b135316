"""docs/schemas/: valid JSON Schemas that agree with the code's own names; the message carries the
resize policy and target size to the caption record, and a message from an older resize stage still reads.

Real outputs are validated in tests/integration/test_schemas.py (the handlers on moto, and export)
and tests/e2e/test_local_pipeline.py (summary.json and the records of a local run)."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from imgcap.local.summary import METRIC_UNITS
from lambdas.caption import model
from lambdas.shared.config import ModelSpec, ResizePolicy
from lambdas.shared.errors import ErrorCode
from lambdas.shared.records import ImageMessage
from tests.schemas import NAMES, assert_valid, problems, schema

pytestmark = pytest.mark.unit

OLD_MESSAGE = {  # what a resize stage before the resize fields sent
    "v": 1,
    "bucket": "b",
    "source_key": "images/a.png",
    "source_etag": "e1",
    "encoded_key": "base64_images/a.png.txt",
    "width": 640,
    "height": 480,
    "uploaded_at": "2026-11-24T07:00:00.000Z",
}


@pytest.mark.parametrize("name", NAMES)
def test_each_schema_is_a_valid_2020_12_schema(name: str) -> None:
    Draft202012Validator.check_schema(schema(name))


def test_error_codes_and_resize_policies_in_the_schemas_are_the_codes_own() -> None:
    assert set(schema("error-record")["properties"]["error_code"]["enum"]) == {c.value for c in ErrorCode}
    policies = set(schema("caption-record")["properties"]["resize"]["properties"]["policy"]["enum"])
    assert policies == {p.value for p in ResizePolicy} | {None}
    forbidden = schema("summary")["$defs"]["metricSums"]["propertyNames"]["not"]["enum"]
    assert set(forbidden) == set(METRIC_UNITS)  # a sum without its unit breaks the schema


def test_an_old_message_reads_and_its_caption_record_says_the_resize_is_unknown() -> None:
    message = ImageMessage.from_json(json.dumps(OLD_MESSAGE))
    assert (message.resize_policy, message.target_width, message.target_height) == (None, None, None)
    assert json.loads(message.to_json()) == OLD_MESSAGE  # and is sent in the shape old readers know

    record = model.caption_record(
        message,
        ModelSpec(),
        model.parse_response(_answer()),
        latency_ms=900.0,
        receive_count=1,
        captioned_at="2026-11-24T07:00:09.000Z",
    )
    assert record["resize"] == {"policy": None, "width": None, "height": None}
    assert_valid("caption-record", record)


def test_a_new_message_carries_the_resize_to_the_caption_record() -> None:
    body = {**OLD_MESSAGE, "resize_policy": "crop", "target_width": 1280, "target_height": 720}
    message = ImageMessage.from_json(json.dumps(body))
    assert ImageMessage.from_json(message.to_json()) == message

    record = model.caption_record(
        message,
        ModelSpec(),
        model.parse_response(_answer()),
        latency_ms=900.0,
        receive_count=1,
        captioned_at="2026-11-24T07:00:09.000Z",
    )
    assert record["resize"] == {"policy": "crop", "width": 1280, "height": 720}
    assert_valid("caption-record", record)


@pytest.mark.parametrize(
    "change",
    [{"target_width": -1}, {"target_height": "720"}, {"resize_policy": ""}],
)
def test_a_message_with_a_bad_resize_field_is_refused(change: dict[str, object]) -> None:
    from lambdas.shared.records import InvalidMessage

    with pytest.raises(InvalidMessage):
        ImageMessage.from_json(json.dumps({**OLD_MESSAGE, **change}))


def test_the_schemas_catch_what_they_promise() -> None:
    """A check that cannot fail is no check: each broken record is caught."""
    record = model.caption_record(
        ImageMessage.from_json(json.dumps(OLD_MESSAGE)),
        ModelSpec(),
        model.parse_response(_answer()),
        latency_ms=900.0,
        receive_count=1,
        captioned_at="2026-11-24T07:00:09.000Z",
    )
    assert problems("caption-record", {**record, "captioned_at": "1733000000.5"})
    assert problems("caption-record", {k: v for k, v in record.items() if k != "resize"})
    assert problems("caption-record", {**record, "alt_text": "A kite."}) == []  # more fields are fine
    assert problems("summary", {"schema_version": 1})  # every required key is missing


def _answer() -> dict[str, object]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "A kite."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1600, "outputTokens": 4, "totalTokens": 1604},
        "metrics": {"latencyMs": 800},
    }


def test_the_resize_stage_sends_the_policy_and_size_it_made_even_when_it_only_resends() -> None:
    """Given an image encoded with ``crop``, when the same version comes again after the SSM policy
    changed to ``pad``, then the re-sent message still says ``crop``: what the encoded image is."""
    import base64

    from lambdas.resize.events import ObjectRef
    from lambdas.resize.service import process_object
    from lambdas.shared.config import ImageSpec
    from tests.fakes import MemoryQueue, MemoryStore

    class Encoded:
        b64, source_format, source_width, source_height, width, height = (
            base64.b64encode(b"png"),
            "JPEG",
            64,
            36,
            640,
            360,
        )

    store, queue = MemoryStore(), MemoryQueue()
    key = "images/a.jpg"
    etag = store.upload(key, b"a picture")
    ref = ObjectRef("memory-bucket", key, etag, 9, "2026-12-01T07:00:00.000Z")
    for policy in (ResizePolicy.CROP, ResizePolicy.PAD):
        spec = ImageSpec(width=640, height=360, policy=policy)
        process_object(ref, store=store, queue=queue, spec=spec, encode=lambda _d, _s: Encoded())

    sent = [ImageMessage.from_json(body) for body in queue.sent]
    assert [(m.resize_policy, m.target_width, m.target_height) for m in sent] == [("crop", 640, 360)] * 2
