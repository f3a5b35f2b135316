"""Batch input lines and how they are split into files and jobs. Pure.

One line per image: ``{"recordId": ..., "modelInput": <Converse request body>}`` (Bedrock batch
input format with ``modelInvocationType="Converse"``). The body is the online path's own request
(``caption.model.converse_request``) without ``modelId`` (the job names the model) and with the PNG
as the base64 text that JSON carries bytes in; the ``base64_images/`` object already is that text,
so it is copied, never decoded and re-encoded.

``Splitter`` decides the boundaries while the lines stream past: a new file before a line that
would take the file over its byte or record limit, and the end of the job before a line that would
take the job over its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lambdas.caption.model import converse_request
from lambdas.shared.config import ModelSpec
from lambdas.shared.contract import BatchLimits

_IMAGE_PLACEHOLDER = "\x00image\x00"


def model_input(spec: ModelSpec, png_base64: str) -> dict[str, Any]:
    """The Converse request body of one image, as JSON values."""
    request = converse_request(spec, b"")
    request.pop("modelId")
    request.pop("serviceTier", None)  # a batch job is its own price tier
    request["messages"][0]["content"][0]["image"]["source"]["bytes"] = png_base64
    return request


def batch_line(record_id: str, spec: ModelSpec, png_base64: bytes) -> bytes:
    """One JSONL line (with its newline). The base64 text is spliced in, not re-serialised."""
    body = model_input(spec, _IMAGE_PLACEHOLDER)
    text = json.dumps({"recordId": record_id, "modelInput": body}, ensure_ascii=False, separators=(",", ":"))
    head, tail = text.encode("utf-8").split(json.dumps(_IMAGE_PLACEHOLDER).encode(), 1)
    return head + b'"' + png_base64.strip() + b'"' + tail + b"\n"


class Decision:
    SAME_FILE = "same_file"
    NEW_FILE = "new_file"
    JOB_FULL = "job_full"


@dataclass(slots=True)
class Splitter:
    """Tracks the current file and the job; ``place`` says where the next line of ``size`` goes."""

    limits: BatchLimits
    files: list[tuple[int, int]] = field(default_factory=list)  # (records, bytes) per file
    job_records: int = 0
    job_bytes: int = 0

    def place(self, size: int) -> str:
        if size > self.limits.max_file_bytes:
            raise ValueError(f"one record of {size:,} bytes exceeds the file limit")
        if (
            self.job_records + 1 > self.limits.max_records_per_job
            or self.job_bytes + size > self.limits.max_job_bytes
        ):
            return Decision.JOB_FULL
        decision = Decision.SAME_FILE
        if not self.files:
            decision = Decision.NEW_FILE
        else:
            records, size_so_far = self.files[-1]
            if (
                records + 1 > self.limits.max_records_per_file
                or size_so_far + size > self.limits.max_file_bytes
            ):
                decision = Decision.NEW_FILE
        if decision == Decision.NEW_FILE:
            self.files.append((0, 0))
        records, size_so_far = self.files[-1]
        self.files[-1] = (records + 1, size_so_far + size)
        self.job_records += 1
        self.job_bytes += size
        return decision


def plan_files(sizes: list[int], limits: BatchLimits) -> tuple[list[list[int]], list[int]]:
    """Split line sizes into files (lists of line indexes) and the lines left for the next job."""
    splitter = Splitter(limits)
    files: list[list[int]] = []
    for i, size in enumerate(sizes):
        decision = splitter.place(size)
        if decision == Decision.JOB_FULL:
            return files, list(range(i, len(sizes)))
        if decision == Decision.NEW_FILE:
            files.append([])
        files[-1].append(i)
    return files, []
