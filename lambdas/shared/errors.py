"""The few stable error codes an ``errors/`` record (and the rejection metrics) can carry.

Each code is documented in the README's "Error codes" table and is a metric dimension.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # resize/encode stage
    EMPTY_FILE = "empty_file"  # zero bytes
    FILE_TOO_LARGE = "file_too_large"  # more bytes than the function's memory can safely hold
    UNSUPPORTED_FORMAT = "unsupported_format"  # not an image, or a format we do not decode
    CORRUPT_IMAGE = "corrupt_image"  # truncated, bad CRC, broken chunks, undecodable
    TOO_MANY_PIXELS = "too_many_pixels"  # decompression bomb / over the memory-derived limit
    INVALID_DIMENSIONS = "invalid_dimensions"  # zero or negative width/height in the header
    SOURCE_MISSING = "source_missing"  # object deleted before it was processed
    # caption stage
    INVALID_MESSAGE = "invalid_message"  # SQS body not JSON / unknown version / missing field
    ENCODED_MISSING = "encoded_missing"  # base64 object gone
    ENCODED_INVALID = "encoded_invalid"  # base64 object empty or not base64
    MODEL_REJECTED = "model_rejected"  # a ValidationException about the image, content filtered
    MODEL_ERROR = "model_error"  # ModelErrorException after the allowed tries, or an empty answer
    # caption-format structured: the tool answer did not validate, on every allowed try
    MODEL_OUTPUT_INVALID = "model_output_invalid"


class Rejection(Exception):
    """A permanent, typed failure: becomes an ``errors/`` record, never a retry."""

    def __init__(self, code: ErrorCode, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_type = error_type or type(self).__name__

    def __repr__(self) -> str:
        return f"Rejection({self.code.value!r}, {self.message!r})"
