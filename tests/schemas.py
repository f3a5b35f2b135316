"""Validate documents against the JSON Schemas in docs/schemas/ (the README's records section)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
NAMES = ("summary", "caption-record", "error-record", "export-row")


@cache
def schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return document


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks schema ``name`` (empty when it conforms), with JSON paths."""
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


def assert_valid(name: str, document: Any, what: str = "") -> None:
    found = problems(name, document)
    assert not found, f"{what or name} breaks docs/schemas/{name}.schema.json:\n" + "\n".join(found)
