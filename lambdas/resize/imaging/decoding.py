"""Opening and decoding untrusted bytes with only the accepted Pillow decoders, every decoder
failure turned into a ``Rejection`` that says what the file is and what is wrong with it."""

from __future__ import annotations

import io
import struct

from PIL import (
    BmpImagePlugin,  # noqa: F401  (registers the decoder; Image.open(formats=...) only tries registered ones)
    GifImagePlugin,  # noqa: F401
    Image,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

from lambdas.shared.config import ImageSpec
from lambdas.shared.errors import ErrorCode, Rejection

from .guards import BOMB_ERRORS, bomb_rejection, check_before_open, check_dimensions, invalid_dimensions
from .sniffing import declared_size, sniff

# Pillow format names we hand to Image.open. A JPEG with a multi-picture index (phones, 3-D cameras)
# opens through the JPEG decoder and is reported by Pillow as "MPO": it is a JPEG for our purposes.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
_OPENED_FORMATS = frozenset((*ACCEPTED_FORMATS, "MPO"))
_ACCEPTED_TEXT = "JPEG, PNG, WebP, GIF, TIFF and BMP"

# What Pillow may raise for malformed input while parsing or decoding. In ~1.2 million fuzzed inputs
# (bench/fuzz_decode.py) Pillow 13 raised only the first four; its plugins are Python code over
# untrusted bytes and older releases let the others escape, so a Pillow upgrade cannot turn a bad
# file into a crash.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    AttributeError,
)


def open_image(data: bytes, spec: ImageSpec) -> Image.Image:
    """Open ``data`` with the accepted decoders after the byte-level guards; header checked, no pixels."""
    check_before_open(data, spec)
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except BOMB_ERRORS as exc:
        raise bomb_rejection(exc, data, spec) from None
    except Image.UnidentifiedImageError:
        raise unidentified_rejection(data) from None
    except DECODE_ERRORS as exc:
        name, _ = sniff(data)
        raise undecodable_rejection(name or "the file", exc, len(data), opening=True) from None
    try:
        check_dimensions(checked_format(im), im.size[0], im.size[1], spec)
    except Rejection:
        im.close()
        raise
    return im


def checked_format(im: Image.Image) -> str:
    """The Pillow format name of an opened image, which must be one we accept."""
    fmt = im.format or ""
    if fmt not in _OPENED_FORMATS:  # cannot happen with formats=...; never trust it blindly
        raise Rejection(ErrorCode.UNSUPPORTED_FORMAT, f"{fmt or 'this format'} is not accepted")
    return fmt


def draft_jpeg(im: Image.Image, need: tuple[int, int]) -> float | None:
    """Let libjpeg DCT-scale to the smallest 1/2, 1/4, 1/8 still >= ``need``; width in stored units."""
    try:
        result = im.draft(None, need)
    except DECODE_ERRORS:
        return None
    if result is None:
        return None
    _, box = result
    return float(box[2])


def decode_pixels(im: Image.Image, fmt: str, size: int) -> None:
    """``im.load()``, with bombs and decoder errors turned into rejections (``size``: file bytes)."""
    try:
        im.load()
    except BOMB_ERRORS as exc:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} holds a frame or tile larger than the pixel limit (a decompression bomb?)",
            type(exc).__name__,
        ) from None
    except DECODE_ERRORS as exc:
        raise undecodable_rejection(fmt, exc, size) from None


def unidentified_rejection(data: bytes) -> Rejection:
    """No accepted decoder recognised the bytes: name what they look like instead."""
    name, accepted = sniff(data)
    declared = declared_size(data) if accepted else None
    if declared is not None and min(declared) <= 0:
        return invalid_dimensions(name or "image", *declared)
    if accepted:
        return Rejection(
            ErrorCode.CORRUPT_IMAGE,
            f"the file starts like a {name} but its header is broken ({len(data):,} bytes)",
            "UnidentifiedImageError",
        )
    what = name or f"not an image we recognise (starts with {data[:8].hex(' ')})"
    return Rejection(
        ErrorCode.UNSUPPORTED_FORMAT,
        f"the file is {what}; accepted formats are {_ACCEPTED_TEXT}",
        "UnidentifiedImageError",
    )


def undecodable_rejection(fmt: str, exc: BaseException, size: int, *, opening: bool = False) -> Rejection:
    """A decoder error as an unsupported variant, a truncated file or corrupt data."""
    detail = str(exc).strip() or type(exc).__name__
    lowered = detail.lower()
    if (
        "not supported" in lowered
        or "unsupported" in lowered
        or ("decoder" in lowered and "not available" in lowered)
    ):
        return Rejection(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"this {fmt} uses a variant we cannot decode: {detail}",
            type(exc).__name__,
        )
    if isinstance(exc, EOFError) or "truncated" in lowered or "end of file" in lowered:
        message = f"{fmt} is truncated: the data ends after {size:,} bytes, before the image is complete"
    elif opening:
        message = f"{fmt} header is malformed: {detail}"
    else:
        message = f"{fmt} data is corrupt and cannot be decoded: {detail}"
    return Rejection(ErrorCode.CORRUPT_IMAGE, message, type(exc).__name__)
