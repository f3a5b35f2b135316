"""imgcap export's rows: every field kept (or --fields chooses), and CSV cells a spreadsheet would run
as formulas written as text."""

from __future__ import annotations

import csv
import io
import json

import pytest

from imgcap.ops.aws import OpsError
from imgcap.ops.export import (
    CAPTION_COLUMNS,
    build_rows,
    choose,
    columns,
    csv_cell,
    flatten,
    parse_fields,
    write_rows,
)

pytestmark = pytest.mark.unit

RECORD = {
    "schema_version": 1,
    "caption": '=HYPERLINK("http://x.invalid","click")',
    "model_id": "us.amazon.nova-pro-v1:0",
    "usage": {"input_tokens": 1600, "output_tokens": 40, "total_tokens": 1640},
    "stop_reason": "end_turn",
    "latency_ms": 812.5,
    "source": {"bucket": "b", "key": "images/a.png", "etag": "e1", "width": 64, "height": 36},
    "encoded_key": "base64_images/a.png.txt",
    "resize": {"policy": "crop", "width": 1280, "height": 720},
    "captioned_at": "2026-12-01T09:00:00.000Z",
    "tags": ["cat", "+sofa"],
}
ERROR = {
    "schema_version": 1,
    "stage": "resize",
    "error_code": "corrupt_image",
    "error_type": "UnidentifiedImageError",
    "message": "-cannot identify image file",
    "retryable": False,
    "source": {"bucket": "b", "key": "images/bad.png", "etag": None},
    "details": {},
    "occurred_at": "2026-12-01T09:00:01.000Z",
}


@pytest.mark.parametrize("text", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\0x"])
def test_text_a_spreadsheet_would_evaluate_gets_a_leading_apostrophe(text: str) -> None:
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["A cat.", "a=b", "", 5, 0.25, True])
def test_other_cells_are_written_as_they_are(value: object) -> None:
    assert csv_cell(value) == value


def test_none_is_an_empty_cell_tags_one_joined_cell_and_other_lists_a_json_array() -> None:
    assert csv_cell(None) == ""
    assert csv_cell(["cat", "sofa"]) == "cat;sofa"  # tags (issue 15): one cell, ";"-joined
    assert csv_cell(["=cmd", "sofa"]) == "'=cmd;sofa"  # and still escaped when it starts a formula
    assert csv_cell([1, 2]) == "[1, 2]"


def test_flatten_joins_nested_names_and_keeps_usage_names() -> None:
    flat = flatten(RECORD)
    assert (flat["input_tokens"], flat["total_tokens"]) == (1600, 1640)
    assert (flat["resize_policy"], flat["resize_width"], flat["resize_height"]) == ("crop", 1280, 720)
    assert (flat["source_etag"], flat["source_width"]) == ("e1", 64)
    assert flat["tags"] == ["cat", "+sofa"]
    assert not any(isinstance(v, dict) for v in flat.values())


def test_every_field_is_a_column_by_default_familiar_ones_first() -> None:
    # Given one caption and one error record
    rows = build_rows({"captions/a.png.json": RECORD}, {"errors/bad.png.json": ERROR}, include_errors=True)

    # When the columns are chosen without --fields
    cols = columns(rows, include_errors=True)

    # Then the familiar columns lead, and every leaf of both records is a column
    assert cols[: len(CAPTION_COLUMNS)] == CAPTION_COLUMNS
    for name in (
        "latency_ms",
        "resize_policy",
        "tags",
        "schema_version",
        "error_type",
        "retryable",
        "occurred_at",
    ):
        assert name in cols, name
    assert cols[len(CAPTION_COLUMNS) + 3 :] == tuple(sorted(cols[len(CAPTION_COLUMNS) + 3 :]))
    assert [(r["image_key"], r["status"]) for r in rows] == [
        ("images/a.png", "captioned"),
        ("images/bad.png", "error"),
    ]  # sorted by image key
    assert rows[1]["error_message"] == "-cannot identify image file"
    assert rows[1]["source_etag"] == ""


def test_csv_escapes_formulas_and_round_trips_everything_else() -> None:
    rows = build_rows({"captions/a.png.json": RECORD}, {"errors/bad.png.json": ERROR}, include_errors=True)
    cols = columns(rows, include_errors=True)
    fh = io.StringIO()

    assert write_rows(fh, rows, "csv", cols) == 2

    table = list(csv.DictReader(io.StringIO(fh.getvalue())))
    caption, error = table
    assert caption["caption"] == "'" + RECORD["caption"]
    assert error["error_message"] == "'-cannot identify image file"
    assert caption["tags"] == "cat;+sofa"  # starts with 'c': not a formula
    assert caption["input_tokens"] == "1600"
    assert caption["image_key"] == "images/a.png"
    assert error["caption"] == ""
    for row in table:
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r", "\0")), (name, cell)


def test_jsonl_keeps_values_unescaped_and_as_their_json_types() -> None:
    rows = build_rows({"captions/a.png.json": RECORD}, {}, include_errors=False)
    fh = io.StringIO()
    write_rows(fh, rows, "jsonl", columns(rows, include_errors=False))
    (line,) = [json.loads(t) for t in fh.getvalue().splitlines()]
    assert line["caption"] == RECORD["caption"]
    assert line["tags"] == ["cat", "+sofa"]
    assert line["latency_ms"] == 812.5
    assert "error_code" not in line  # error columns only with --include-errors


def test_fields_choose_the_columns_in_their_order() -> None:
    rows = build_rows({"captions/a.png.json": RECORD}, {}, include_errors=False)
    cols = choose(
        columns(rows, False), parse_fields("caption, image_key,caption,resize_policy"), any_rows=True
    )
    fh = io.StringIO()
    write_rows(fh, rows, "csv", cols)
    assert fh.getvalue().splitlines()[0] == "caption,image_key,resize_policy"


def test_an_unknown_field_is_one_clear_error_unless_there_are_no_rows() -> None:
    rows = build_rows({"captions/a.png.json": RECORD}, {}, include_errors=False)
    with pytest.raises(OpsError, match=r"unknown field.*captoin"):
        choose(columns(rows, False), ("captoin",), any_rows=True)
    assert choose(columns([], False), ("resize_policy",), any_rows=False) == ("resize_policy",)


def test_empty_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        parse_fields(" , ")
