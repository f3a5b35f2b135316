"""Guards against hostile files: pixel and side limits from the header, Pillow's decompression-bomb
check scoped to one call, and scan/segment/chunk floods rejected before any decoder runs."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from lambdas.shared.config import ImageSpec, pixel_limit_for_memory
from lambdas.shared.errors import ErrorCode, Rejection

from .sniffing import JPEG_MAGIC, PNG_MAGIC, declared_size, sniff, webp_canvas_size

# Longest side we decode. JPEG, GIF and WebP cannot exceed it anyway; for PNG/TIFF/BMP a taller
# image is a bomb in disguise: Pillow keeps one row pointer per line, so 1 x 100,000,000 costs
# 800 MB before a single pixel, while its pixel count looks harmless.
MAX_SIDE = 65_535

# Structure floods: every scan of a progressive JPEG is a full pass over all coefficients (1,000
# repeated scans in a 38 KB file cost 2.4 s at 4 MP), and Pillow parses every PNG chunk and JPEG
# segment in Python (a 12 MB file of empty chunks costs ~2 s). Real files stay far below these.
MAX_JPEG_SCANS = 64
MAX_JPEG_SEGMENTS = 4_096
MAX_PNG_CHUNKS = 100_000

# What Pillow's bomb errors/warnings are (raised by open, load and resize alike).
BOMB_ERRORS: tuple[type[BaseException], ...] = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@contextmanager
def guarded_decoding(spec: ImageSpec) -> Iterator[None]:
    """Scope of one call: bomb warnings are errors, other decoder chatter is not our output.

    Pillow's bomb threshold is a process-wide setting; it is aligned with ``spec.max_pixels`` (the
    same value for every call of one function) so its checks inside the decoders (GIF frames,
    TIFF tiles, WebP canvas) enforce our limit, not Pillow's default.
    """
    Image.MAX_IMAGE_PIXELS = spec.max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def check_before_open(data: bytes, spec: ImageSpec) -> None:
    """Everything that can be rejected from the raw bytes before Pillow parses them."""
    if not data:
        raise Rejection(ErrorCode.EMPTY_FILE, "the file is empty (0 bytes)", "EmptyFile")
    webp = webp_canvas_size(data)
    if webp is not None:  # libwebp allocates its canvas when Pillow opens the file
        check_dimensions("WebP", webp[0], webp[1], spec)
    _check_structure(data)  # Pillow parses every header segment in Python


def invalid_dimensions(fmt: str, w: int, h: int) -> Rejection:
    return Rejection(
        ErrorCode.INVALID_DIMENSIONS,
        f"the {fmt} header declares {w}x{h} pixels; width and height must be at least 1",
        "InvalidDimensions",
    )


def check_dimensions(fmt: str, w: int, h: int, spec: ImageSpec) -> None:
    """Reject zero sides, sides over ``MAX_SIDE`` and more than ``spec.max_pixels`` pixels."""
    if w <= 0 or h <= 0:
        raise invalid_dimensions(fmt, w, h)
    if max(w, h) > MAX_SIDE:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} header declares {w:,}x{h:,} pixels; the longest side we decode is {MAX_SIDE:,}",
            "PixelLimit",
        )
    if w * h > spec.max_pixels:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} header declares {w:,}x{h:,} = {w * h / 1e6:.1f} MP; {limit_text(spec)}",
            "PixelLimit",
        )


def _check_structure(data: bytes) -> None:
    """Reject files built to make the decoder loop (scan and chunk floods), before decoding."""
    if data[:3] == JPEG_MAGIC:
        scans, segments = count_jpeg_scans_and_segments(data)
        if scans > MAX_JPEG_SCANS:
            raise Rejection(
                ErrorCode.CORRUPT_IMAGE,
                f"the JPEG has more than {MAX_JPEG_SCANS} scans (real photos have a few dozen at most); "
                "decoding it would take minutes",
                "ScanFlood",
            )
        if segments > MAX_JPEG_SEGMENTS:
            raise Rejection(
                ErrorCode.CORRUPT_IMAGE,
                f"the JPEG has more than {MAX_JPEG_SEGMENTS:,} marker segments; real files have a few dozen",
                "SegmentFlood",
            )
    elif data[:8] == PNG_MAGIC and count_png_chunks(data) > MAX_PNG_CHUNKS:
        raise Rejection(
            ErrorCode.CORRUPT_IMAGE,
            f"the PNG has more than {MAX_PNG_CHUNKS:,} chunks; real files have a few thousand at most",
            "ChunkFlood",
        )


# A marker: 0xFF followed by anything but a stuffed zero, a restart marker or another fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def count_jpeg_scans_and_segments(data: bytes) -> tuple[int, int]:
    """(scans, marker segments), counting no further than one past the limits.

    Walks the marker segments and jumps over entropy-coded data with one regex search per scan,
    so a 10 MB photo costs a few milliseconds.
    """
    at, scans, segments, end = 2, 0, 0, len(data)
    while at + 4 <= end and scans <= MAX_JPEG_SCANS and segments <= MAX_JPEG_SEGMENTS:
        if data[at] != 0xFF:  # out of step (padding, an appended image): find the next marker
            found = _JPEG_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
            continue
        marker = data[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        if marker == 0xD9:
            break  # end of the first image: what follows (MPO frames, a motion-photo video) is not decoded
        segments += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, at + 2 + length)
            if found is None:
                break
            at = found.start()
            continue
        at += 2 + length
    return scans, segments


def count_png_chunks(data: bytes) -> int:
    """Chunks up to and including IEND, counting no further than one past ``MAX_PNG_CHUNKS``."""
    at, count, end = 8, 0, len(data)
    while at + 8 <= end and count <= MAX_PNG_CHUNKS:
        count += 1
        if data[at + 4 : at + 8] == b"IEND":
            break
        at += 12 + int.from_bytes(data[at : at + 4], "big")
    return count


def limit_text(spec: ImageSpec) -> str:
    """The pixel limit for a message, with the function memory it is derived from when it is."""
    text = f"the limit is {spec.max_pixels / 1e6:.1f} MP"
    memory_mb = round(spec.max_pixels * 8 / 0.6 / 1024 / 1024)
    if memory_mb > 0 and pixel_limit_for_memory(memory_mb) == spec.max_pixels:
        text += f" for {memory_mb:,} MB of function memory"
    return text


_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")


def bomb_rejection(exc: BaseException, data: bytes, spec: ImageSpec) -> Rejection:
    """Pillow's own bomb check fired while opening: say what the header declared."""
    name = sniff(data)[0] or "image"
    declared = declared_size(data)
    if declared is not None and min(declared) <= 0:
        return invalid_dimensions(name, *declared)  # read as unsigned, a negative side looks huge
    found = _PIXEL_COUNT.search(str(exc))
    if declared is not None:
        w, h = declared
        size = f"{w:,}x{h:,} = {w * h / 1e6:.1f} MP"
    elif found:
        size = f"{int(found.group(1)) / 1e6:.1f} MP"
    else:
        size = "more pixels than allowed"
    return Rejection(
        ErrorCode.TOO_MANY_PIXELS,
        f"the {name} header declares {size}; {limit_text(spec)}",
        type(exc).__name__,
    )
