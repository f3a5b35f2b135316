"""Unit tier: the backfill's pure parts (JSONL lines and split, record ids and index, output join,
error verdicts, request documents, cost estimate, limits parsing) and the batch hold of a claim."""

from __future__ import annotations

import base64
import json

import pytest

from lambdas.backfill import jsonl, output, records
from lambdas.backfill.estimate import estimate
from lambdas.backfill.output import JoinStats, Kind
from lambdas.backfill.records import IndexEntry
from lambdas.backfill.requests import BackfillRequest, InvalidRequest, Item, is_request_key
from lambdas.caption.claims import Claims
from lambdas.caption.model import RetryKind
from lambdas.shared import contract, keys
from lambdas.shared.config import ModelSpec
from lambdas.shared.errors import ErrorCode
from tests.fakes import MemoryStore

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 50)


# --------------------------------------------------------------------------- lines


def test_given_an_image_then_the_line_is_a_converse_body_with_the_base64_text_copied_verbatim():
    spec = ModelSpec(prompt='Say "hi"\nplease', max_tokens=123, top_k=7)
    line = jsonl.batch_line("R0000000001", spec, PNG_B64 + b"\n")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one record, one line, even with a newline in the prompt
    body = json.loads(line)
    assert body["recordId"] == "R0000000001"
    request = body["modelInput"]
    assert "modelId" not in request
    image, text = request["messages"][0]["content"]
    assert image == {"image": {"format": "png", "source": {"bytes": PNG_B64.decode()}}}
    assert text == {"text": 'Say "hi"\nplease'}
    assert request["inferenceConfig"]["maxTokens"] == 123
    assert request["additionalModelRequestFields"] == {"inferenceConfig": {"topK": 7}}


# --------------------------------------------------------------------------- split


def _limits(**kw: int) -> contract.BatchLimits:
    return contract.BatchLimits(**{"min_records": 1, **kw})


def test_given_lines_then_files_split_before_the_byte_limit():
    files, rest = jsonl.plan_files([40, 40, 40, 30, 100], _limits(max_file_bytes=100))
    assert files == [[0, 1], [2, 3], [4]]
    assert rest == []


def test_given_lines_then_files_split_at_the_record_limit():
    files, rest = jsonl.plan_files([1] * 7, _limits(max_records_per_file=3))
    assert files == [[0, 1, 2], [3, 4, 5], [6]]
    assert rest == []


def test_given_more_than_a_job_holds_then_the_rest_is_left_for_the_next_job():
    files, rest = jsonl.plan_files([1] * 5, _limits(max_records_per_job=3))
    assert sum(len(f) for f in files) == 3
    assert rest == [3, 4]
    files, rest = jsonl.plan_files([60, 60, 60], _limits(max_job_bytes=130, max_file_bytes=100))
    assert files == [[0], [1]]
    assert rest == [2]


def test_given_one_line_over_the_file_limit_then_it_is_refused():
    with pytest.raises(ValueError, match="exceeds the file limit"):
        jsonl.plan_files([101], _limits(max_file_bytes=100))


def test_given_any_split_then_no_file_breaks_a_limit_and_no_line_is_lost():
    sizes = [(i * 37) % 90 + 5 for i in range(500)]
    limits = _limits(max_file_bytes=400, max_records_per_file=9, max_records_per_job=10_000)
    files, rest = jsonl.plan_files(sizes, limits)
    assert rest == []
    assert [i for f in files for i in f] == list(range(500))
    for f in files:
        assert len(f) <= 9
        assert sum(sizes[i] for i in f) <= 400


# --------------------------------------------------------------------------- record ids and index


def test_given_record_numbers_then_ids_are_short_alphanumeric_and_unique():
    ids = [records.record_id(n) for n in (1, 2, 10**9)]
    assert ids == ["R0000000001", "R0000000002", "R1000000000"]
    assert all(i.isalnum() and records.is_record_id(i) for i in ids)
    with pytest.raises(ValueError, match="out of range"):
        records.record_id(10**10)


def test_given_a_long_unicode_key_then_the_index_maps_the_id_back_to_key_and_etag():
    key = "images/" + "ä/" * 400 + "photo 1.jpg"  # ~1,200 bytes: longer than any record id could be
    entry = IndexEntry("R0000000007", key, "etag-1", "claim-etag", 1280, 720, "2026-12-01T00:00:00Z")
    index = records.read_index([entry.to_line(), b"\n"])
    assert index == {"R0000000007": entry}


def test_given_an_index_line_outside_images_then_it_is_refused():
    bad = IndexEntry("R0000000001", "captions/x.json", "e", "c").to_line()
    with pytest.raises(keys.KeyError_, match="not below"):
        records.read_index([bad])


def test_given_stack_and_backfill_then_the_job_name_fits_bedrocks_pattern():
    name = records.job_name("Image_Captioning!" * 10, "20261201abc", 3)
    assert len(name) <= records.JOB_NAME_MAX
    assert name.endswith("-20261201abc-003")
    assert all(c.isalnum() or c == "-" for c in name)


# --------------------------------------------------------------------------- output join


def _entries(n: int) -> dict[str, IndexEntry]:
    return {
        records.record_id(i): IndexEntry(records.record_id(i), f"images/{i}.jpg", f"etag{i}", "c")
        for i in range(1, n + 1)
    }


def test_given_output_lines_out_of_order_with_errors_then_each_joins_on_its_record_id():
    index = _entries(4)
    lines = [
        json.dumps({"recordId": "R0000000003", "modelInput": {}, "modelOutput": {"stopReason": "end_turn"}}),
        "not json at all",
        json.dumps({"recordId": "R0000000001", "error": {"errorCode": 400, "errorMessage": "bad image"}}),
        json.dumps({"recordId": "R9999999999", "modelOutput": {}}),  # not ours
        json.dumps({"recordId": "R0000000003", "modelOutput": {}}),  # repeated
        "",
    ]
    stats = JoinStats()
    joined = list(output.join(index, [line.encode() for line in lines], stats))
    assert [(e.source_key, r.kind) for e, r in joined] == [
        ("images/3.jpg", Kind.OUTPUT),
        ("images/1.jpg", Kind.ERROR),
    ]
    assert joined[1][1].error_code == "400"
    assert (stats.lines, stats.unreadable, stats.unknown, stats.repeated) == (5, 1, 1, 1)
    left = list(output.missing(index, stats))
    assert [(e.source_key, r.kind) for e, r in left] == [
        ("images/2.jpg", Kind.MISSING),
        ("images/4.jpg", Kind.MISSING),
    ]


@pytest.mark.parametrize(
    ("code", "message", "final", "retry"),
    [
        ("400", "Unable to process the provided image", ErrorCode.MODEL_REJECTED, None),
        ("400", "The provided model identifier is invalid", None, RetryKind.CONFIGURATION),
        ("429", "Too many requests", None, RetryKind.THROTTLED),
        ("500", "Internal error", None, RetryKind.TRANSIENT),
        ("", "something odd", None, RetryKind.TRANSIENT),
    ],
)
def test_given_a_failed_record_then_the_online_classification_decides(code, message, final, retry):
    verdict = output.verdict(output.RecordResult(Kind.ERROR, error_code=code, error_message=message))
    assert verdict.code == final
    assert verdict.retry == retry


def test_given_a_manifest_then_its_counts_are_read():
    raw = b'{"totalRecordCount": 5, "processedRecordCount": 4, "errorRecordCount": 1, "x": "y"}'
    assert output.parse_manifest(raw) == {
        "totalRecordCount": 5,
        "processedRecordCount": 4,
        "errorRecordCount": 1,
    }
    assert output.parse_manifest(b"garbage") == {}


# --------------------------------------------------------------------------- requests


def test_given_a_request_then_it_round_trips_and_continues_with_the_next_part():
    request = BackfillRequest("bf1", 0, (Item("images/a b.jpg", "e1"),), "2026-12-01T00:00:00Z", "trips")
    again = BackfillRequest.from_json(request.to_json())
    assert again == request
    assert is_request_key(request.key)
    following = request.continued([Item("images/c.jpg", "e2")])
    assert following.key == "batch/requests/bf1-001.json"
    assert following.items == (Item("images/c.jpg", "e2"),)


def test_given_a_broken_request_then_it_is_refused():
    with pytest.raises(InvalidRequest):
        BackfillRequest.from_json(b'{"v": 1, "backfill_id": "../x", "part": 0, "items": []}')
    with pytest.raises(InvalidRequest):
        BackfillRequest.from_json(b"[]")


# --------------------------------------------------------------------------- cost and limits


def test_given_images_then_the_batch_estimate_is_half_the_on_demand_one():
    cost = estimate(1000, "Describe.", max_tokens=300)
    per_image_in = contract.estimate_input_tokens("Describe.")
    assert cost.input_tokens == 1000 * per_image_in
    assert cost.output_tokens == 300_000
    on_demand = cost.input_tokens / 1000 * 0.0008 + cost.output_tokens / 1000 * 0.0032
    assert cost.on_demand_usd == pytest.approx(on_demand)
    assert cost.batch_usd == pytest.approx(on_demand / 2)
    assert cost.saving_usd == pytest.approx(on_demand / 2)


def test_given_limits_in_context_then_they_are_parsed_and_checked():
    limits = contract.parse_batch_limits({"backfillMinRecords": "50", "max_file_bytes": 2_000_000})
    assert limits.min_records == 50
    assert limits.max_file_bytes == 2_000_000
    assert limits.max_records_per_job == contract.BatchLimits().max_records_per_job
    with pytest.raises(contract.ContractError, match="backfillTimeoutHours"):
        contract.parse_batch_limits({"backfillTimeoutHours": "12"})  # Bedrock allows 24-168
    with pytest.raises(contract.ContractError, match="whole number"):
        contract.parse_batch_limits({"backfillMinRecords": "many"})
    with pytest.raises(contract.ContractError, match="must not exceed"):
        contract.parse_batch_limits({"backfillMinRecords": "10", "backfillMaxRecordsPerJob": "5"})


# --------------------------------------------------------------------------- the batch hold of a claim


def test_given_a_claim_held_by_a_batch_job_then_an_online_taker_waits_until_the_hold_ends():
    store = MemoryStore()
    now = [1_000_000.0]
    batch = Claims(store, lease_s=900, wall=lambda: now[0])
    assert batch.take("images/a.jpg", "e1", "batch:job", hold_s=25 * 3600) is not None
    online = Claims(store, lease_s=900, wall=lambda: now[0])
    now[0] += 3600  # past the online lease, inside the job's hold
    assert online.take("images/a.jpg", "e1", "msg-1") is None
    now[0] += 25 * 3600  # the job (and its margin) is long over: an online delivery may take over
    assert online.take("images/a.jpg", "e1", "msg-1") is not None


def test_given_an_ordinary_claim_then_the_lease_rule_is_unchanged():
    store = MemoryStore()
    now = [0.0]
    first = Claims(store, lease_s=900, wall=lambda: now[0])
    assert first.take("images/a.jpg", "e1", "m1") is not None
    now[0] += 901
    assert Claims(store, lease_s=900, wall=lambda: now[0]).take("images/a.jpg", "e1", "m2") is not None


def test_given_a_batch_caption_record_then_its_cost_is_at_the_batch_price():
    record = {"model_id": "us.amazon.nova-pro-v1:0", "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}
    online = contract.record_cost_usd(record)
    batch = contract.record_cost_usd({**record, "mode": "batch"})
    assert online == pytest.approx(0.80)
    assert batch == pytest.approx(0.40)


def test_given_a_service_tier_then_the_batch_body_has_none():
    body = jsonl.model_input(ModelSpec(service_tier="flex"), "AAAA")
    assert "serviceTier" not in body
