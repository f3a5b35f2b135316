"""Issue 15: structured captions, prompts per folder, object-tag merge, tier prices, allowed models.

Pure functions first (schema validation, templating, merge, prices), then the caption use case on
the in-memory store: an answer that does not validate is retried like a model error and recorded
as ``model_output_invalid`` on the last allowed attempt; a folder's prompt is used for its images
only; the opt-in object tags are written after the caption.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from lambdas.caption import model, prompts, structured
from lambdas.caption.pacing import Pacer
from lambdas.caption.service import CaptionWorker, Delivery, Outcome
from lambdas.caption.structured import InvalidStructuredOutput
from lambdas.caption.tagging import merge_tags, tag_key_for
from lambdas.shared import contract, keys
from lambdas.shared.config import (
    ConfigError,
    FolderPrompt,
    ModelSpec,
    PacingSpec,
    folder_prompt_from,
    folder_prompts_from,
    model_spec_from,
)
from lambdas.shared.contract import CAPTION_TOOL_NAME, OBJECT_TAG_MARK
from lambdas.shared.records import ImageMessage
from lambdas.shared.settings import CaptionSettings, check_model_allowed, env_settings_from
from tests.fakes import MemoryQueue, MemoryStore

pytestmark = pytest.mark.unit

GOOD = {
    "description": "A sandy beach under a clear sky, with two people walking along the waterline.",
    "alt_text": "Two people walking along a sandy beach under a clear blue sky.",
    "tags": ["beach", "sea", "people", "summer"],
    "text_in_image": "",
}


# --------------------------------------------------------------------------- schema validation


def test_given_a_good_answer_then_it_validates_and_keeps_every_field():
    record = structured.check(GOOD)
    assert record.description == GOOD["description"]
    assert record.fields() == {
        "alt_text": GOOD["alt_text"],
        "tags": GOOD["tags"],
        "text_in_image": "",
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"alt_text": "x" * 126}, "at most 125 characters"),
        ({"alt_text": "Image of two people on a beach."}, "preamble"),
        ({"alt_text": "A picture of two people on a beach."}, "preamble"),
        ({"alt_text": "Two **people** on a beach."}, "markdown"),
        ({"alt_text": "[Beach](http://example.com) at noon."}, "markdown"),
        ({"alt_text": ""}, "at least 1 characters"),
        ({"tags": ["beach", "sea"]}, "at least 3 items"),
        ({"tags": [f"tag{i}" for i in range(11)]}, "at most 10 items"),
        ({"tags": ["beach", "sea", "x" * 41]}, "at most 40 characters"),
        ({"tags": "beach, sea, people"}, "must be an array"),
        ({"tags": ["beach", "sea", 3]}, "must be a string"),
        ({"description": None}, "must be a string"),
        ({"mood": "happy"}, "unexpected field(s): mood"),
    ],
)
def test_given_an_answer_that_breaks_one_rule_then_it_is_refused_naming_that_rule(change, problem):
    with pytest.raises(InvalidStructuredOutput) as raised:
        structured.check({**GOOD, **change})
    assert problem in str(raised.value)


def test_given_a_missing_field_then_it_is_named():
    answer = {k: v for k, v in GOOD.items() if k != "text_in_image"}
    with pytest.raises(InvalidStructuredOutput, match=r"\$\.text_in_image is required"):
        structured.check(answer)


def test_given_tags_in_capitals_or_repeated_then_they_are_tidied_not_refused():
    record = structured.check({**GOOD, "tags": [" Beach", "beach", "SEA", "People "]})
    assert record.tags == ("beach", "sea", "people")


def test_given_two_tags_after_tidying_duplicates_then_the_minimum_still_applies():
    with pytest.raises(InvalidStructuredOutput, match="at least 3 items"):
        structured.check({**GOOD, "tags": ["Beach", "beach", "sea"]})


def test_given_a_schema_keyword_the_validator_does_not_know_then_it_refuses_the_schema():
    with pytest.raises(ValueError, match="unsupported keyword"):
        structured.validate("x", {"type": "string", "format": "email"})


def test_the_contract_schema_uses_only_keywords_the_validator_checks():
    assert structured.validate(GOOD, contract.CAPTION_OUTPUT_SCHEMA) == []


# --------------------------------------------------------------------------- request and answer


def test_given_structured_format_then_the_request_forces_the_one_tool_with_the_contract_schema():
    request = model.converse_request(ModelSpec(caption_format="structured"), b"png")
    config = request["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": CAPTION_TOOL_NAME}}
    (tool,) = config["tools"]
    assert tool["toolSpec"]["name"] == CAPTION_TOOL_NAME
    assert tool["toolSpec"]["inputSchema"]["json"]["required"] == list(
        contract.CAPTION_OUTPUT_SCHEMA["required"]
    )


def test_given_text_format_and_the_default_tier_then_the_request_is_the_notebooks():
    request = model.converse_request(ModelSpec(), b"png")
    assert "toolConfig" not in request
    assert "serviceTier" not in request


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_given_a_service_tier_then_it_is_sent_as_converse_service_tier(tier):
    assert model.converse_request(ModelSpec(service_tier=tier), b"png")["serviceTier"] == {"type": tier}


def _tool_response(tool_input: Any, name: str = CAPTION_TOOL_NAME, tier: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "output": {
            "message": {"content": [{"toolUse": {"toolUseId": "t1", "name": name, "input": tool_input}}]}
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 1900, "outputTokens": 90, "totalTokens": 1990},
    }
    if tier:
        response["serviceTier"] = {"type": tier}
    return response


def test_given_a_tool_answer_then_the_record_keeps_caption_as_the_description_and_adds_the_fields():
    answer = model.parse_response(_tool_response(GOOD, tier="flex"), structured_output=True)
    spec = ModelSpec(caption_format="structured", service_tier="flex", prompt_source="prompts/trips")
    message = ImageMessage("b", "images/trips/a.jpg", "e1", "base64_images/trips/a.jpg.txt", 4, 3, "t")
    record = model.caption_record(message, spec, answer, latency_ms=1.0, receive_count=1, captioned_at="t")
    assert record["caption"] == GOOD["description"]
    assert (record["alt_text"], record["tags"], record["text_in_image"]) == (
        GOOD["alt_text"],
        GOOD["tags"],
        "",
    )
    assert (record["caption_format"], record["service_tier"], record["prompt_source"]) == (
        "structured",
        "flex",
        "prompts/trips",
    )


@pytest.mark.parametrize(
    "response",
    [
        {"output": {"message": {"content": [{"text": "A beach."}]}}, "stopReason": "end_turn"},
        _tool_response(GOOD, name="other_tool"),
        _tool_response("not an object"),
    ],
)
def test_given_no_usable_tool_answer_then_it_is_invalid_output(response):
    with pytest.raises(InvalidStructuredOutput):
        model.parse_response(response, structured_output=True)


# --------------------------------------------------------------------------- prompts per folder

RULES = folder_prompts_from(
    {
        "prompt": "ignored here",
        "prompts/products": "Describe the product in {filename}.",
        "prompts/products/shoes": (
            '{"prompt": "Shoe {filename} in {folder}; keep {braces}.", "format": "structured"}'
        ),
    }
)


def test_given_folder_rules_then_the_deepest_comes_first():
    assert [r.folder for r in RULES] == ["products/shoes", "products"]
    assert [r.caption_format for r in RULES] == ["structured", None]


@pytest.mark.parametrize(
    ("key", "source", "prompt", "fmt"),
    [
        ("images/products/mug.jpg", "prompts/products", "Describe the product in mug.jpg.", "text"),
        (
            "images/products/shoes/red 1.jpg",
            "prompts/products/shoes",
            "Shoe red 1.jpg in products/shoes; keep {braces}.",
            "structured",
        ),
        (
            "images/products/shoes/kids/k.png",
            "prompts/products/shoes",
            "Shoe k.png in products/shoes/kids; keep {braces}.",
            "structured",
        ),
        ("images/products-old/mug.jpg", "prompt", "Base for mug.jpg in products-old", "text"),
        ("images/mug.jpg", "prompt", "Base for mug.jpg in ", "text"),
    ],
)
def test_given_an_image_key_then_its_folders_prompt_is_templated_and_used_there_only(
    key, source, prompt, fmt
):
    base = ModelSpec(prompt="Base for {filename} in {folder}")
    spec = prompts.spec_for_image(base, RULES, key)
    assert (spec.prompt_source, spec.prompt, spec.caption_format) == (source, prompt, fmt)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("   ", "must not be empty"),
        ("{not json", "not a JSON object"),
        ('{"text": "x"}', '"prompt" string'),
        ('{"prompt": "x", "model": "y"}', "unknown field"),
        ('{"prompt": "x", "format": "poem"}', "must be one of text, structured"),
    ],
)
def test_given_a_bad_folder_prompt_then_the_error_names_the_parameter(raw, message):
    with pytest.raises(ConfigError, match="prompts/cats") as raised:
        folder_prompt_from("cats", raw)
    assert message in str(raised.value)


def test_given_ssm_values_then_format_and_tier_are_parsed_with_defaults():
    assert (model_spec_from({}).caption_format, model_spec_from({}).service_tier) == ("text", "default")
    spec = model_spec_from({"caption-format": "Structured", "service-tier": "flex"})
    assert (spec.caption_format, spec.service_tier) == ("structured", "flex")
    with pytest.raises(ConfigError, match="service-tier"):
        model_spec_from({"service-tier": "reserved"})


# --------------------------------------------------------------------------- object tags


def test_given_user_tags_then_they_are_kept_first_and_ours_fill_the_rest_up_to_ten():
    existing = [{"Key": f"user{i}", "Value": str(i)} for i in range(7)]
    merged = merge_tags(existing, ["beach", "sea", "people", "summer", "sand"])
    assert merged[:7] == existing
    assert merged[7:] == [{"Key": k, "Value": OBJECT_TAG_MARK} for k in ("beach", "sea", "people")]
    assert len(merged) == 10


def test_given_ten_user_tags_then_none_are_removed_and_none_added():
    existing = [{"Key": f"user{i}", "Value": "v"} for i in range(10)]
    assert merge_tags(existing, ["beach", "sea", "people"]) == existing


def test_given_our_tags_from_an_earlier_caption_then_they_are_replaced_not_accumulated():
    existing = [{"Key": "project", "Value": "x"}, {"Key": "old", "Value": OBJECT_TAG_MARK}]
    assert merge_tags(existing, ["new", "project", "other"]) == [
        {"Key": "project", "Value": "x"},  # the user's key and value win over our keyword
        {"Key": "new", "Value": OBJECT_TAG_MARK},
        {"Key": "other", "Value": OBJECT_TAG_MARK},
    ]


@pytest.mark.parametrize(
    ("keyword", "key"),
    [
        ("sky blue", "sky blue"),
        ("rock'n'roll!", "rock n roll"),
        ("aws:thing", None),
        ("***", None),
        ("é-té", "é-té"),
    ],
)
def test_given_a_keyword_then_the_tag_key_keeps_only_what_s3_allows(keyword, key):
    assert tag_key_for(keyword) == key
    assert len(tag_key_for("x" * 300) or "") == contract.S3_TAG_KEY_MAX


# --------------------------------------------------------------------------- prices


def test_given_each_model_then_its_price_row_gives_the_cost_at_each_tier_and_in_batch():
    tokens = (1_000_000, 1_000_000)
    assert contract.model_cost_usd("us.amazon.nova-pro-v1:0", *tokens) == pytest.approx(0.80 + 3.20)
    assert contract.model_cost_usd("amazon.nova-pro-v1:0", *tokens, service_tier="flex") == pytest.approx(2.0)
    assert contract.model_cost_usd(
        "eu.amazon.nova-pro-v1:0", *tokens, service_tier="priority"
    ) == pytest.approx(7.0)
    assert contract.model_cost_usd("us.amazon.nova-lite-v1:0", *tokens, batch=True) == pytest.approx(
        0.03 + 0.12
    )
    assert contract.model_cost_usd("global.amazon.nova-2-lite-v1:0", *tokens) == pytest.approx(0.30 + 2.50)
    assert contract.model_cost_usd("amazon.nova-premier-v1:0", *tokens) == pytest.approx(15.0)
    assert contract.model_cost_usd("anthropic.claude-x", *tokens) is None


def test_every_price_row_has_batch_at_half_on_demand_and_the_pro_constants_agree():
    for price in contract.MODEL_PRICES.values():
        assert price.batch_input_per_1m == pytest.approx(price.input_per_1m / 2)
        assert price.batch_output_per_1m == pytest.approx(price.output_per_1m / 2)
    pro = contract.MODEL_PRICES["amazon.nova-pro-v1:0"]
    assert pytest.approx(pro.input_per_1m / 1000) == contract.NOVA_PRO_INPUT_PRICE_PER_1K
    assert pytest.approx(pro.output_per_1m / 1000) == contract.NOVA_PRO_OUTPUT_PRICE_PER_1K


# --------------------------------------------------------------------------- allowed models


def test_given_a_profile_model_then_the_default_allowed_list_adds_nova_lite_and_nova_2_lite_on_its_family():
    assert contract.default_allowed_model_ids("us.amazon.nova-pro-v1:0") == (
        "us.amazon.nova-pro-v1:0",
        "us.amazon.nova-lite-v1:0",
        "us.amazon.nova-2-lite-v1:0",
    )
    assert contract.default_allowed_model_ids("amazon.nova-pro-v1:0") == (
        "amazon.nova-pro-v1:0",
        "amazon.nova-lite-v1:0",
    )


def test_given_a_model_id_outside_the_allowed_list_then_settings_refuse_it_naming_the_list():
    allowed = env_settings_from(
        {"BUCKET_NAME": "b", "SSM_PREFIX": "/S", "ALLOWED_MODEL_IDS": "a, b"}
    ).allowed_model_ids
    assert allowed == ("a", "b")
    check_model_allowed(ModelSpec(model_id="b"), allowed)
    with pytest.raises(ConfigError, match=r"'c'.*only a, b.*allowedModelIds"):
        check_model_allowed(ModelSpec(model_id="c"), allowed)
    check_model_allowed(ModelSpec(model_id="anything"), ())  # unset: not restricted


# --------------------------------------------------------------------------- the use case

KEY = "images/trips/beach day.jpg"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (20, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


class ToolModel:
    """Answers with ``answers`` in turn (the last one repeats); records every request."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return _tool_response(answer)


class FakeTagger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def tag(self, key: str, keywords: Any) -> list[dict[str, str]]:
        self.calls.append((key, tuple(keywords)))
        return []


def _setup(model_fn: ToolModel, tagger: FakeTagger | None = None) -> tuple[MemoryStore, CaptionWorker, str]:
    store = MemoryStore()
    etag = store.upload(KEY, b"jpeg")
    store.put_bytes(
        keys.encoded_key(KEY), base64.b64encode(_png()), "text/plain", metadata={"source-etag": etag}
    )
    body = ImageMessage(
        "bucket", KEY, etag, keys.encoded_key(KEY), 8, 6, "2026-12-01T07:00:00.000Z"
    ).to_json()
    worker = CaptionWorker(
        store=store,
        call_model=model_fn,
        pacer=Pacer(600, 10_000_000, clock=lambda: 0.0),
        clock=lambda: 0.0,
        sleep=lambda s: None,
        wall=lambda: 1_796_000_000.0,
        rand=lambda: 0.5,
        object_tags=tagger,
    )
    return store, worker, body


def _settings(**overrides: Any) -> CaptionSettings:
    values: dict[str, Any] = {
        "bucket": "bucket",
        "model": ModelSpec(caption_format="structured"),
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


def _deliver(worker: CaptionWorker, body: str, receive_count: int, **settings: Any):
    batch = worker.begin(_settings(**settings), lambda: 120_000)
    return batch.process(Delivery(f"m-{receive_count}", "rh", body, receive_count, MemoryQueue()))


def test_given_invalid_answers_then_they_are_retried_and_the_last_allowed_try_records_model_output_invalid():
    bad = {**GOOD, "alt_text": "Image of " + "a beach " * 20}
    store, worker, body = _setup(ToolModel(bad))
    first, second = _deliver(worker, body, 1), _deliver(worker, body, 2)
    assert [r.outcome for r in (first, second)] == [Outcome.DEFERRED, Outcome.DEFERRED]
    assert (first.output_invalid, first.model_called) == (True, True)
    assert first.visibility_s is not None
    assert first.visibility_s > 0  # backed off like a model error
    assert store.keys(contract.ERRORS_PREFIX) == []
    assert store.keys(contract.CLAIMS_PREFIX) == []  # released: the retry may call again
    third = _deliver(worker, body, 3)
    assert (third.outcome, third.error_code) == (Outcome.REJECTED, "model_output_invalid")
    record = store.json(keys.error_key(KEY))
    assert record["error_code"] == "model_output_invalid"
    assert "preamble" in record["message"]
    assert "3 of 3 allowed attempts" in record["message"]
    assert not store.keys(contract.CAPTIONS_PREFIX)


def test_given_an_invalid_answer_then_a_valid_one_then_the_caption_has_the_structured_fields():
    store, worker, body = _setup(ToolModel({"description": "x"}, GOOD))
    assert _deliver(worker, body, 1).outcome is Outcome.DEFERRED
    assert _deliver(worker, body, 2).outcome is Outcome.CAPTIONED
    record = store.json(keys.caption_key(KEY))
    assert (record["caption"], record["tags"]) == (GOOD["description"], GOOD["tags"])


def test_given_a_folder_prompt_then_its_images_are_sent_it_and_the_record_says_so():
    model_fn = ToolModel(GOOD)
    store, worker, body = _setup(model_fn)
    # the folder's rule also switches the stack's text format to structured for these images
    rules = (FolderPrompt("trips", "Holiday photo {filename} ({folder})", "structured"),)
    assert _deliver(worker, body, 1, prompts=rules, model=ModelSpec()).outcome is Outcome.CAPTIONED
    (request,) = model_fn.requests
    assert request["messages"][0]["content"][1] == {"text": "Holiday photo beach day.jpg (trips)"}
    record = store.json(keys.caption_key(KEY))
    assert record["prompt_source"] == "prompts/trips"


def test_given_object_tags_enabled_then_the_keywords_go_to_the_source_after_the_caption():
    tagger = FakeTagger()
    store, worker, body = _setup(ToolModel(GOOD), tagger)
    result = _deliver(worker, body, 1, write_object_tags=True)
    assert (result.outcome, result.object_tags) == (Outcome.CAPTIONED, True)
    assert tagger.calls == [(KEY, tuple(GOOD["tags"]))]
    assert store.keys(contract.CAPTIONS_PREFIX)


def test_given_object_tags_not_enabled_then_nothing_is_tagged():
    tagger = FakeTagger()
    _, worker, body = _setup(ToolModel(GOOD), tagger)
    assert _deliver(worker, body, 1).object_tags is None
    assert tagger.calls == []


def test_given_captions_of_two_models_and_tiers_then_status_prices_each_at_its_own_row():
    from imgcap.ops.status import summarise_usage

    million = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    captions = {
        "captions/a.json": {"model_id": "us.amazon.nova-pro-v1:0", "service_tier": "flex", "usage": million},
        "captions/b.json": {"model_id": "us.amazon.nova-lite-v1:0", "usage": million},  # before issue 15
        "captions/c.json": {"model_id": "some.other-model", "usage": million},  # priced as Nova Pro
    }
    usage = summarise_usage(captions, 0)
    assert usage.estimated_cost_usd == pytest.approx(2.0 + 0.30 + 4.0)
    flat = summarise_usage(captions, 0, input_price=0.001, output_price=0.001)
    assert flat.estimated_cost_usd == pytest.approx(3 * 2.0)
