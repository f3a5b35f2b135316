"""Structured captions: the forced tool of the Converse request and the validation of its answer.

Pure. The schema is ``contract.CAPTION_OUTPUT_SCHEMA`` (the tool's input schema, sent to the model,
and the one the answer is checked against). The validator is written here, in the standard
library, on purpose: it must ship in the Lambda bundle, the layer carries only Pillow and
Powertools (``requirements-layer.txt``), and the schema uses a handful of keywords. It implements
exactly those: ``type`` (object, array, string), ``properties``, ``required``,
``additionalProperties: false``, ``minLength``/``maxLength``, ``minItems``/``maxItems``,
``uniqueItems``, ``items`` and ``pattern``; a schema with any other keyword is refused, so the
schema cannot grow a rule that is silently not checked. On top of the schema, alt text must not
open with an "image of"/"picture of" preamble and must not carry markdown: rules a JSON Schema
``pattern`` would state less readably.

Before validation the answer is tidied the way any reader would: strings stripped, tags lowercased
and de-duplicated (a model writing "Beach" is not worth a paid retry). Anything else that does not
validate raises ``InvalidStructuredOutput`` naming every problem, and the caller treats it like a
model error (retried, then an ``errors/`` record ``model_output_invalid``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lambdas.shared.contract import CAPTION_OUTPUT_SCHEMA, CAPTION_TOOL_NAME

TOOL_DESCRIPTION = (
    "Record what the image shows: a detailed description, a short alt text for screen readers, "
    "search keywords and any visible text."
)

_SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "items",
        "pattern",
        "description",
    }
)
_PREAMBLE = re.compile(
    r"^\s*(?:an?\s+|the\s+)?(?:image|picture|photo|photograph)\s+(?:of|showing|shows)\b", re.IGNORECASE
)
# Markdown that a screen reader would read out as symbols: emphasis, code, headings, list bullets,
# links and images.
_MARKDOWN = re.compile(
    r"\*\*|__|`|^\s*#{1,6}\s|^\s*[-*+]\s|!?\[[^\]]*\]\([^)]*\)|<[a-z/][^>]*>", re.IGNORECASE
)


class InvalidStructuredOutput(ValueError):
    """The model's tool answer is missing or does not validate; ``problems`` says why."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class StructuredCaption:
    description: str
    alt_text: str
    tags: tuple[str, ...]
    text_in_image: str

    def fields(self) -> dict[str, Any]:
        """What a caption record adds (JSON-ready: tags as a list)."""
        return {"alt_text": self.alt_text, "tags": list(self.tags), "text_in_image": self.text_in_image}


def tool_config() -> dict[str, Any]:
    """Converse ``toolConfig``: one tool whose input is the record, and the choice forced to it."""
    return {
        "tools": [
            {
                "toolSpec": {
                    "name": CAPTION_TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "inputSchema": {"json": _plain(CAPTION_OUTPUT_SCHEMA)},
                }
            }
        ],
        "toolChoice": {"tool": {"name": CAPTION_TOOL_NAME}},
    }


def _plain(value: Any) -> Any:
    """The schema as plain dicts and lists (the contract keeps it read-only)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- the validator


def validate(instance: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty list: valid), for the supported keywords."""
    unknown = set(schema) - _SUPPORTED_KEYWORDS
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keyword(s): {', '.join(sorted(unknown))}")
    kind = schema.get("type")
    if kind == "object":
        return _validate_object(instance, schema, path)
    if kind == "array":
        return _validate_array(instance, schema, path)
    if kind == "string":
        return _validate_string(instance, schema, path)
    if kind is not None:
        raise ValueError(f"schema at {path} uses unsupported type {kind!r}")
    return []


def _validate_object(instance: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(instance, Mapping):
        return [f"{path} must be an object, got {type(instance).__name__}"]
    problems: list[str] = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in instance:
            problems.append(f"{path}.{name} is required")
    if schema.get("additionalProperties") is False:
        extra = sorted(str(k) for k in instance if k not in properties)
        if extra:
            problems.append(f"{path} has unexpected field(s): {', '.join(extra)}")
    for name, sub in properties.items():
        if name in instance:
            problems.extend(validate(instance[name], sub, f"{path}.{name}"))
    return problems


def _validate_array(instance: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(instance, list | tuple):
        return [f"{path} must be an array, got {type(instance).__name__}"]
    problems: list[str] = []
    if "minItems" in schema and len(instance) < schema["minItems"]:
        problems.append(f"{path} must have at least {schema['minItems']} items, got {len(instance)}")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        problems.append(f"{path} must have at most {schema['maxItems']} items, got {len(instance)}")
    if schema.get("uniqueItems"):
        seen = [repr(item) for item in instance]
        if len(set(seen)) != len(seen):
            problems.append(f"{path} must not repeat items")
    if "items" in schema:
        for i, item in enumerate(instance):
            problems.extend(validate(item, schema["items"], f"{path}[{i}]"))
    return problems


def _validate_string(instance: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(instance, str):
        return [f"{path} must be a string, got {type(instance).__name__}"]
    problems: list[str] = []
    if "minLength" in schema and len(instance) < schema["minLength"]:
        problems.append(f"{path} must have at least {schema['minLength']} characters")
    if "maxLength" in schema and len(instance) > schema["maxLength"]:
        problems.append(f"{path} must have at most {schema['maxLength']} characters, got {len(instance)}")
    if "pattern" in schema and not re.search(schema["pattern"], instance):
        problems.append(f"{path} does not match {schema['pattern']}")
    return problems


# --------------------------------------------------------------------------- the answer


def tidy(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Strip strings, lowercase and de-duplicate tags; anything else is left for the validator."""
    out: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, str):
            out[key] = value.strip()
        elif key == "tags" and isinstance(value, list | tuple):
            tags = [t.strip().lower() if isinstance(t, str) else t for t in value]
            out[key] = list(dict.fromkeys(t for t in tags if t != ""))
        else:
            out[key] = value
    return out


def alt_text_problems(alt_text: str) -> list[str]:
    problems = []
    if _PREAMBLE.search(alt_text):
        problems.append("$.alt_text must not start with an 'image of'/'picture of' preamble")
    if _MARKDOWN.search(alt_text):
        problems.append("$.alt_text must not contain markdown")
    if "\n" in alt_text:
        problems.append("$.alt_text must be one line")
    return problems


def check(answer: Any) -> StructuredCaption:
    """The validated structured caption, or ``InvalidStructuredOutput`` naming every problem."""
    if not isinstance(answer, Mapping):
        raise InvalidStructuredOutput([f"the tool input must be an object, got {type(answer).__name__}"])
    tidied = tidy(answer)
    problems = validate(tidied, CAPTION_OUTPUT_SCHEMA)
    if isinstance(tidied.get("alt_text"), str):
        problems.extend(alt_text_problems(tidied["alt_text"]))
    if problems:
        raise InvalidStructuredOutput(problems)
    return StructuredCaption(
        description=tidied["description"],
        alt_text=tidied["alt_text"],
        tags=tuple(tidied["tags"]),
        text_in_image=tidied["text_in_image"],
    )


def tool_input_of(message_content: Sequence[Any]) -> Any:
    """The ``input`` of the caption tool's ``toolUse`` block, or ``InvalidStructuredOutput``."""
    names = []
    for block in message_content:
        use = block.get("toolUse") if isinstance(block, Mapping) else None
        if isinstance(use, Mapping):
            names.append(str(use.get("name")))
            if use.get("name") == CAPTION_TOOL_NAME:
                return use.get("input")
    if names:
        raise InvalidStructuredOutput([f"the model called {', '.join(names)}, not {CAPTION_TOOL_NAME}"])
    raise InvalidStructuredOutput([f"the answer has no {CAPTION_TOOL_NAME} tool use"])
