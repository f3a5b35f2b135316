"""Unit tests for the shared contracts: key layout, message schema, records, configuration."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.shared import keys
from lambdas.shared.config import (
    SSM_DEFAULTS,
    ConfigError,
    ResizePolicy,
    image_spec_from,
    model_spec_from,
    pacing_spec_from,
    pixel_limit_for_memory,
)
from lambdas.shared.records import ImageMessage, InvalidMessage, error_record
from lambdas.shared.settings import env_settings_from

pytestmark = pytest.mark.unit


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "encoded", "caption", "error"),
    [
        ("images/a.jpg", "base64_images/a.jpg.txt", "captions/a.jpg.json", "errors/a.jpg.json"),
        (
            "images/trips/a b.jpg",
            "base64_images/trips/a b.jpg.txt",
            "captions/trips/a b.jpg.json",
            "errors/trips/a b.jpg.json",
        ),
        ("images/x+y%z é", "base64_images/x+y%z é.txt", "captions/x+y%z é.json", "errors/x+y%z é.json"),
    ],
)
def test_given_source_key_when_deriving_then_prefix_path_suffix(source, encoded, caption, error):
    assert keys.encoded_key(source) == encoded
    assert keys.caption_key(source) == caption
    assert keys.error_key(source) == error


def test_given_same_name_in_two_folders_when_deriving_then_keys_do_not_collide():
    assert keys.caption_key("images/a/x.jpg") != keys.caption_key("images/b/x.jpg")
    # and "x.jpg" vs "x.png" stay distinct because the extension is kept
    assert keys.encoded_key("images/x.jpg") != keys.encoded_key("images/x.png")


def test_given_key_outside_images_when_deriving_then_rejected():
    with pytest.raises(keys.KeyError_):
        keys.caption_key("captions/a.jpg.json")
    with pytest.raises(keys.KeyError_):
        keys.relative_path("images/")


def test_given_very_long_key_when_deriving_then_fits_s3_limit_and_stays_unique():
    long_a = "images/" + "é" * 502 + "a.jpg"  # a 1,016-byte source key (S3 max 1024)
    long_b = "images/" + "é" * 502 + "b.jpg"
    for derive in (keys.encoded_key, keys.caption_key, keys.error_key):
        a, b = derive(long_a), derive(long_b)
        assert len(a.encode()) <= keys.MAX_KEY_BYTES
        assert a != b
        # hashed exactly when the plain derived key would exceed the limit
        rel = keys.relative_path(long_a)
        plain = {
            keys.encoded_key: "base64_images/" + rel + ".txt",
            keys.caption_key: "captions/" + rel + ".json",
        }
        plain[keys.error_key] = "errors/" + rel + ".json"
        assert ("~" in a) == (len(plain[derive].encode()) > keys.MAX_KEY_BYTES)
    assert "~" in keys.encoded_key(long_a)
    # short keys are never hashed
    assert "~" not in keys.caption_key("images/short.jpg")


def test_folder_markers_are_recognised():
    assert keys.is_folder_marker("images/trips/")
    assert not keys.is_folder_marker("images/trips/a.jpg")


def test_claim_key_depends_on_etag():
    assert keys.claim_key("images/a.jpg", "e1") != keys.claim_key("images/a.jpg", "e2")
    assert keys.claim_key("images/a.jpg", "e1").startswith(keys.CLAIMS_PREFIX)


# --- message schema ---------------------------------------------------------------------------


def _message() -> ImageMessage:
    return ImageMessage(
        bucket="b",
        source_key="images/a b+c.jpg",
        source_etag="abc",
        encoded_key="base64_images/a b+c.jpg.txt",
        width=4000,
        height=3000,
        uploaded_at="2026-11-24T07:00:00.000Z",
    )


def test_given_message_when_round_tripped_then_equal_and_small():
    msg = _message()
    raw = msg.to_json()
    assert ImageMessage.from_json(raw) == msg
    assert json.loads(raw)["v"] == 1
    assert len(raw) < 400  # keys and ETag only, never image bytes


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({"v": 2, "bucket": "b"}),
        json.dumps({"bucket": "b"}),
        json.dumps({**json.loads(_message().to_json()), "width": -1}),
        json.dumps({**json.loads(_message().to_json()), "source_key": ""}),
        json.dumps({k: v for k, v in json.loads(_message().to_json()).items() if k != "encoded_key"}),
    ],
)
def test_given_bad_body_when_parsing_then_invalid_message(raw):
    with pytest.raises(InvalidMessage):
        ImageMessage.from_json(raw)


def test_error_record_has_every_field():
    rec = error_record(
        stage="resize",
        error_code="corrupt_image",
        error_type="OSError",
        message="truncated",
        retryable=False,
        bucket="b",
        source_key="images/a.jpg",
        source_etag="e",
    )
    assert rec["stage"] == "resize"
    assert rec["error_code"] == "corrupt_image"
    assert rec["retryable"] is False
    assert rec["source"] == {"bucket": "b", "key": "images/a.jpg", "etag": "e"}
    assert rec["occurred_at"].endswith("Z")
    assert rec["schema_version"] == 1


# --- configuration ----------------------------------------------------------------------------


def test_defaults_are_the_notebooks_values():
    spec = model_spec_from(SSM_DEFAULTS)
    assert spec.model_id == "us.amazon.nova-pro-v1:0"
    assert spec.prompt == "Generate a detailed description of the image."
    assert (spec.max_tokens, spec.temperature, spec.top_p, spec.top_k) == (300, 0.3, 0.1, 20)
    image = image_spec_from(SSM_DEFAULTS, memory_mb=1769)
    assert (image.width, image.height, image.policy) == (1280, 720, ResizePolicy.PAD)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("max-tokens", "lots", "'max-tokens' must be a whole number"),
        ("temperature", "1.5", "'temperature' must be between"),
        ("top-k", "0", "'top-k' must be between"),
        ("target-size", "1280*720", "'target-size' must look like"),
        ("resize-policy", "zoom", "'resize-policy' must be one of"),
        ("requests-per-minute", "nan", "'requests-per-minute' must be between"),
    ],
)
def test_given_invalid_item_when_parsing_then_error_names_it(name, value, fragment):
    values = {**SSM_DEFAULTS, name: value}
    parsers = {
        "target-size": lambda v: image_spec_from(v, 1769),
        "resize-policy": lambda v: image_spec_from(v, 1769),
        "requests-per-minute": lambda v: pacing_spec_from(v, 2),
    }
    parse = parsers.get(name, model_spec_from)
    with pytest.raises(ConfigError, match=fragment):
        parse(values)


@pytest.mark.parametrize("size", ["10x10", "9999x9999", "8192x8192", "8001x16", "4096x2160"])
def test_given_a_target_size_synth_refuses_then_the_functions_refuse_it_with_the_same_words(size):
    from lambdas.shared.contract import ContractError, parse_target_size

    with pytest.raises(ContractError) as synth_side:
        parse_target_size(size, "configuration item 'target-size'")
    with pytest.raises(ConfigError) as runtime_side:
        image_spec_from({**SSM_DEFAULTS, "target-size": size}, 1769)
    assert str(runtime_side.value) == str(synth_side.value)


def test_pacing_share_is_quota_over_concurrency():
    pacing = pacing_spec_from({**SSM_DEFAULTS, "requests-per-minute": "120"}, max_concurrency=4)
    assert pacing.worker_rpm == 30
    with pytest.raises(ConfigError, match="MAX_CONCURRENCY"):
        pacing_spec_from(SSM_DEFAULTS, max_concurrency=0)


def test_pixel_limit_grows_with_memory():
    assert pixel_limit_for_memory(3008) > pixel_limit_for_memory(1769) > pixel_limit_for_memory(512)
    # a 24 MP upload fits comfortably in the default resize memory
    assert pixel_limit_for_memory(1769) > 100_000_000
    with pytest.raises(ConfigError):
        pixel_limit_for_memory(0)


def test_given_missing_env_when_parsing_then_error_names_variable():
    with pytest.raises(ConfigError, match="SSM_PREFIX"):
        env_settings_from({"BUCKET_NAME": "b"})
    with pytest.raises(ConfigError, match="BUCKET_NAME"):
        env_settings_from({"SSM_PREFIX": "/S"})
    with pytest.raises(ConfigError, match="must look like /stack-name"):
        env_settings_from({"SSM_PREFIX": "S/", "BUCKET_NAME": "b"})
    with pytest.raises(ConfigError, match="MAX_CONCURRENCY must be a number"):
        env_settings_from({"SSM_PREFIX": "/S", "BUCKET_NAME": "b", "MAX_CONCURRENCY": "two"})
    env = env_settings_from(
        {"SSM_PREFIX": "/S", "BUCKET_NAME": "b", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}
    )
    assert env.memory_mb == 2048
    assert env.bedrock_max_attempts == 2


# --- issue 11 item 7: no two source keys share a derived key -----------------------------------

_HEX = "0123456789abcdef"
_DERIVERS = (keys.encoded_key, keys.caption_key, keys.error_key)


def _hashed_form_of(source_key: str) -> str:
    """The relative path a crafted short key would need to imitate ``source_key``'s hashed key."""
    derived = keys.caption_key(source_key)
    return derived[len(keys.CAPTIONS_PREFIX) : -len(keys.CAPTION_SUFFIX)]


def test_given_a_short_key_crafted_like_a_hashed_one_then_it_does_not_collide():
    # Given a long key that is hashed, and a short key whose path is exactly that hashed form
    long_key = "images/" + "x" * 1010 + ".jpg"
    crafted = "images/" + _hashed_form_of(long_key)
    assert len(crafted.encode()) < 1024
    assert crafted != long_key
    # Then no derived key is shared
    for derive in _DERIVERS:
        assert derive(crafted) != derive(long_key)
    assert keys.claim_key(crafted, "e" * 32) != keys.claim_key(long_key, "e" * 32)


@st.composite
def _crafted_keys(draw: st.DrawFn) -> str:
    """Keys near the length limit and keys that end like a hashed form (~ + 16 hex digits)."""
    kind = draw(st.sampled_from(["plain", "long", "hashed-looking", "imitation"]))
    stem = draw(st.text(alphabet="ab~/é.-", min_size=1, max_size=12))
    if kind == "plain":
        return "images/" + stem
    if kind == "long":
        filler = draw(st.integers(min_value=960, max_value=1016 - len(stem.encode())))
        return "images/" + "y" * filler + stem
    digest = draw(st.text(alphabet=_HEX, min_size=16, max_size=16))
    if kind == "hashed-looking":
        return "images/" + stem + "~" + digest
    filler = draw(st.integers(min_value=960, max_value=1000))
    return "images/" + _hashed_form_of("images/" + "y" * filler + stem)


@given(st.lists(_crafted_keys(), min_size=2, max_size=8, unique=True))
@settings(max_examples=300, deadline=None)
def test_given_any_distinct_source_keys_then_every_derived_key_is_distinct(source_keys):
    # Beside each drawn key, a crafted one whose path is exactly that key's derived path (for a
    # hashed key, its ``<head>~<digest>`` form): the pairs a hostile uploader would try.
    source_keys = sorted({*source_keys, *("images/" + _hashed_form_of(k) for k in source_keys)})
    for derive in _DERIVERS:
        derived = [derive(k) for k in source_keys]
        assert len(set(derived)) == len(derived)
        assert all(len(d.encode()) <= keys.MAX_KEY_BYTES for d in derived)
    claims = [keys.claim_key(k, "0123456789abcdef0123456789abcdef") for k in source_keys]
    assert len(set(claims)) == len(claims)
