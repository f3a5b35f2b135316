"""Pure image domain of the resize/encode stage: untrusted bytes in, an exact-size PNG out.

``resize_and_encode`` turns any upload we accept into a ``spec.width`` x ``spec.height`` PNG (and its
base64 text), or raises ``Rejection`` with a stable ``ErrorCode`` and a message a person can act on.
No I/O, no environment, no logging: the caller decides what to do with a rejection.

Hardening against hostile files (DESIGN.md "Bad input"):

- Only the decoders we mean to use are ever tried (``Image.open(..., formats=ACCEPTED_FORMATS)``):
  JPEG, PNG, WebP and GIF (what Nova accepts) plus TIFF and BMP, which we convert on purpose.
- Dimensions are checked from the header, before any pixel is decoded: zero sides, sides longer than
  ``MAX_SIDE`` and more than ``spec.max_pixels`` pixels (derived from the function's memory) are
  rejected. WebP is checked before Pillow even opens it, because libwebp allocates its canvas at open.
- ``DecompressionBombWarning`` is an error inside the call (a scoped ``warnings.catch_warnings``),
  with Pillow's own threshold aligned to ``spec.max_pixels``; ``LOAD_TRUNCATED_IMAGES`` stays off.
- EXIF orientation is read without re-writing the EXIF block (blocks that make
  ``ImageOps.exif_transpose`` raise still rotate correctly) and applied to the small image; an
  unreadable block or an absurd value (0, 9, 65535, a string) is ignored: the pixels are still a
  usable image, and rejecting a photo for a broken metadata block helps nobody.

Speed (issue 7): JPEGs are decoded with libjpeg's DCT scaling (``draft``) straight to the smallest
power-of-two reduction still at least as big as what the output needs; the remaining reduction uses
``reduce`` (``reducing_gap``) and a BICUBIC pass; orientation and mode conversion run on the small
image, never on the full-size one; the PNG is written with one fixed row filter and zlib's
run-length strategy (3x faster than Pillow's encoder at the same size for photos).
"""

from __future__ import annotations

import base64
import io
import math
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import (
    BmpImagePlugin,  # noqa: F401  (registers the decoder; Image.open(formats=...) only tries registered ones)
    GifImagePlugin,  # noqa: F401
    Image,
    ImageChops,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

from lambdas.shared.config import ImageSpec, ResizePolicy, pixel_limit_for_memory
from lambdas.shared.errors import ErrorCode, Rejection

# Pillow format names we hand to Image.open. A JPEG with a multi-picture index (phones, 3-D cameras)
# opens through the JPEG decoder and is reported by Pillow as "MPO": it is a JPEG for our purposes.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
_OPENED_FORMATS = frozenset((*ACCEPTED_FORMATS, "MPO"))
_ACCEPTED_TEXT = "JPEG, PNG, WebP, GIF, TIFF and BMP"

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

# PNG encoding (measured by `make bench` on a 1280x720 photo): Pillow's encoder tries five row
# filters per row, which costs more than the compression (level 1: ~55 ms; even level 0: ~28 ms).
# One fixed "Sub" filter computed in C by ImageChops plus zlib's run-length strategy gives the same
# size as Pillow's level 1 for photos and letterboxed photos in ~20 ms; flat screenshots come out
# ~3x larger than Pillow's (still a few hundred KB).
PNG_ZLIB_LEVEL = 1
PNG_ZLIB_STRATEGY = zlib.Z_RLE
# DCT scaling is a coarse filter: keep at least this much more resolution than the output needs so
# the resampling filter does the last step (an exact 2:1 DCT reduction of a noisy photo scores
# ~33 dB PSNR against full decode + LANCZOS; with the margin every measured case is above 41 dB).
DRAFT_MARGIN = 1.125
# reduce() by integer factors (box filter, cheap) until the remaining resample shrinks by less than
# this, then BICUBIC. Measured against full decode + LANCZOS: >= 43 dB on 12-48 MP photos; 2.0
# instead of 3.0 saves ~20% on large PNGs for ~2 dB, BICUBIC instead of LANCZOS ~10 ms for < 1 dB.
REDUCING_GAP = 2.0
_RESAMPLE = Image.Resampling.BICUBIC

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that turns the stored pixels upright (as ImageOps.exif_transpose).
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset((5, 6, 7, 8))

# What Pillow may raise for malformed input while parsing or decoding. In ~1.2 million fuzzed inputs
# (bench/fuzz_decode.py) Pillow 13 raised only the first four; its plugins are Python code over
# untrusted bytes and older releases let the others escape, so a Pillow upgrade cannot turn a bad
# file into a crash.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
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


@dataclass(frozen=True, slots=True)
class EncodedImage:
    png: bytes  # the spec.width x spec.height PNG
    b64: bytes  # base64 of png (ASCII) -> stored as base64_images/<path>.txt
    source_format: str  # "JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO": detected, not by extension
    source_width: int  # after EXIF orientation
    source_height: int
    width: int  # == spec.width
    height: int  # == spec.height
    mode: str  # "RGB" or "RGBA"


@dataclass(frozen=True, slots=True)
class Plan:
    """Where the output's pixels come from, in the upright (oriented) source frame.

    The source region is a ``box_w`` x ``box_h`` rectangle centred in the source; it is scaled to
    ``content_w`` x ``content_h`` and pasted at ``offset`` on the output canvas.
    """

    box_w: float
    box_h: float
    content_w: int
    content_h: int
    offset: tuple[int, int]


def plan(src_w: int, src_h: int, out_w: int, out_h: int, policy: ResizePolicy) -> Plan:
    """Geometry of one resize. Pure arithmetic; ``src_*`` and ``out_*`` are positive.

    Which side limits is decided in integers (``out_w * src_h`` vs ``out_h * src_w``), so the
    limiting side is exact rather than a float that is almost the source size.
    """
    if policy == ResizePolicy.STRETCH:  # == (not is): a plain 'stretch' string works too
        return Plan(float(src_w), float(src_h), out_w, out_h, (0, 0))
    source_is_wider = src_w * out_h >= src_h * out_w
    if policy == ResizePolicy.CROP:
        # Cover: keep the whole of the shorter side, the centred part of the other that fits.
        if source_is_wider:
            return Plan(src_h * out_w / out_h, float(src_h), out_w, out_h, (0, 0))
        return Plan(float(src_w), src_w * out_h / out_w, out_w, out_h, (0, 0))
    # Pad: fit the whole source, centre it, letterbox the rest. A sliver stays >= 1 px.
    if source_is_wider:
        content_w, content_h = out_w, min(out_h, max(1, round(src_h * out_w / src_w)))
    else:
        content_w, content_h = min(out_w, max(1, round(src_w * out_h / src_h))), out_h
    offset = ((out_w - content_w) // 2, (out_h - content_h) // 2)
    return Plan(float(src_w), float(src_h), content_w, content_h, offset)


# --------------------------------------------------------------------------------------------
# Public API


def probe(data: bytes, spec: ImageSpec) -> tuple[str, int, int]:
    """Header-only check: (format, upright width, upright height). Decodes no pixel data.

    Enforces the accepted formats, the dimension rules and the pixel limit; raises ``Rejection``.
    """
    with _guarded(spec), _open(data, spec) as im:
        fmt = _format_of(im)
        # Pillow reads a PNG's EXIF that follows the pixel data by decoding them: skip it here.
        after_pixels = fmt == "PNG" and "exif" not in im.info
        orientation = 1 if after_pixels else _orientation(im)
        w, h = im.size
        return (fmt, h, w) if orientation in _SWAPS_AXES else (fmt, w, h)


def resize_and_encode(data: bytes, spec: ImageSpec) -> EncodedImage:
    """Decode ``data``, fit it to ``spec`` and return the PNG and its base64 text.

    Raises ``Rejection`` for any input it cannot use; no other exception for bad input
    (``MemoryError`` aside, which means the limits are wrong, not the file).
    """
    with _guarded(spec), _open(data, spec) as im:
        fmt = _format_of(im)
        is_jpeg = fmt in ("JPEG", "MPO")
        if is_jpeg:
            # EXIF of a JPEG sits in the header: read it first so draft() knows the upright geometry.
            orientation = _orientation(im)
        else:
            _load(im, fmt, len(data))  # decode first: PNG may keep its EXIF after the pixels
            orientation = _orientation(im)
        raw_w, raw_h = im.size
        swap = orientation in _SWAPS_AXES
        up_w, up_h = (raw_h, raw_w) if swap else (raw_w, raw_h)
        p = plan(up_w, up_h, spec.width, spec.height, spec.policy)
        # The same plan in the stored (not yet rotated) frame of the pixels.
        box_w, box_h = (p.box_h, p.box_w) if swap else (p.box_w, p.box_h)
        content_w, content_h = (p.content_h, p.content_w) if swap else (p.content_w, p.content_h)

        unit = 1.0  # stored-frame pixels per decoded pixel (JPEG DCT scaling makes it 2, 4 or 8)
        if is_jpeg:
            need = (
                max(1, math.ceil(raw_w * content_w / box_w * DRAFT_MARGIN)),
                max(1, math.ceil(raw_h * content_h / box_h * DRAFT_MARGIN)),
            )
            drafted = _draft(im, need)
            if drafted is not None:
                unit = raw_w / drafted
            _load(im, fmt, len(data))

        box = (
            (raw_w - box_w) / 2 / unit,
            (raw_h - box_h) / 2 / unit,
            (raw_w + box_w) / 2 / unit,
            (raw_h + box_h) / 2 / unit,
        )
        small = _resize(im, (content_w, content_h), box, fmt)
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    if (p.content_w, p.content_h) != (spec.width, spec.height):
        canvas = Image.new(small.mode, (spec.width, spec.height))  # black, or fully transparent
        canvas.paste(small, p.offset)
        small = canvas
    png = _encode_png(small)
    return EncodedImage(
        png=png,
        b64=base64.b64encode(png),
        source_format=fmt,
        source_width=up_w,
        source_height=up_h,
        width=small.width,
        height=small.height,
        mode=small.mode,
    )


# --------------------------------------------------------------------------------------------
# Opening and header checks


@contextmanager
def _guarded(spec: ImageSpec) -> Iterator[None]:
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


def _open(data: bytes, spec: ImageSpec) -> Image.Image:
    if not data:
        raise Rejection(ErrorCode.EMPTY_FILE, "the file is empty (0 bytes)", "EmptyFile")
    webp = _webp_canvas(data)
    if webp is not None:
        _check_dimensions("WebP", webp[0], webp[1], spec)
    _check_structure(data)  # before Image.open: Pillow parses every header segment in Python
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, data, spec) from None
    except Image.UnidentifiedImageError:
        raise _unidentified(data) from None
    except _DECODE_ERRORS as exc:
        name, _ = _sniff(data)
        raise _undecodable(name or "the file", exc, len(data), opening=True) from None
    try:
        _check_dimensions(_format_of(im), im.size[0], im.size[1], spec)
    except Rejection:
        im.close()
        raise
    return im


def _format_of(im: Image.Image) -> str:
    fmt = im.format or ""
    if fmt not in _OPENED_FORMATS:  # cannot happen with formats=...; never trust it blindly
        raise Rejection(ErrorCode.UNSUPPORTED_FORMAT, f"{fmt or 'this format'} is not accepted")
    return fmt


def _invalid_dimensions(fmt: str, w: int, h: int) -> Rejection:
    return Rejection(
        ErrorCode.INVALID_DIMENSIONS,
        f"the {fmt} header declares {w}x{h} pixels; width and height must be at least 1",
        "InvalidDimensions",
    )


def _check_dimensions(fmt: str, w: int, h: int, spec: ImageSpec) -> None:
    if w <= 0 or h <= 0:
        raise _invalid_dimensions(fmt, w, h)
    if max(w, h) > MAX_SIDE:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} header declares {w:,}x{h:,} pixels; the longest side we decode is {MAX_SIDE:,}",
            "PixelLimit",
        )
    if w * h > spec.max_pixels:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} header declares {w:,}x{h:,} = {w * h / 1e6:.1f} MP; {_limit_text(spec)}",
            "PixelLimit",
        )


def _check_structure(data: bytes) -> None:
    """Reject files built to make the decoder loop (scan and chunk floods), before decoding."""
    if data[:3] == b"\xff\xd8\xff":
        scans, segments = _jpeg_structure(data)
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
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and _png_chunk_count(data) > MAX_PNG_CHUNKS:
        raise Rejection(
            ErrorCode.CORRUPT_IMAGE,
            f"the PNG has more than {MAX_PNG_CHUNKS:,} chunks; real files have a few thousand at most",
            "ChunkFlood",
        )


# A marker: 0xFF followed by anything but a stuffed zero, a restart marker or another fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_structure(data: bytes) -> tuple[int, int]:
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
        if (
            marker == 0xD9
        ):  # end of the first image: what follows (MPO frames, a motion-photo video) is not decoded
            break
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


def _png_chunk_count(data: bytes) -> int:
    at, count, end = 8, 0, len(data)
    while at + 8 <= end and count <= MAX_PNG_CHUNKS:
        count += 1
        if data[at + 4 : at + 8] == b"IEND":
            break
        at += 12 + int.from_bytes(data[at : at + 4], "big")
    return count


def _limit_text(spec: ImageSpec) -> str:
    text = f"the limit is {spec.max_pixels / 1e6:.1f} MP"
    memory_mb = round(spec.max_pixels * 8 / 0.6 / 1024 / 1024)
    if memory_mb > 0 and pixel_limit_for_memory(memory_mb) == spec.max_pixels:
        text += f" for {memory_mb:,} MB of function memory"
    return text


_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")


def _bomb(exc: BaseException, data: bytes, spec: ImageSpec) -> Rejection:
    """Pillow's own bomb check fired while opening: say what the header declared."""
    name = _sniff(data)[0] or "image"
    declared = _declared_size(data)
    if declared is not None and min(declared) <= 0:
        return _invalid_dimensions(name, *declared)  # read as unsigned, a negative side looks huge
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
        f"the {name} header declares {size}; {_limit_text(spec)}",
        type(exc).__name__,
    )


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as written in a PNG, GIF, BMP, WebP or JPEG header (for messages only)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack_from(">II", data, 16)
        return w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack_from("<HH", data, 6)
        return w, h
    if _is_bmp(data) and int.from_bytes(data[14:18], "little") >= 40 and len(data) >= 26:
        w, h = struct.unpack_from("<ii", data, 18)
        return w, abs(h)  # a negative height only means top-down rows
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_frame_size(data)
    return _webp_canvas(data)


_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in _SOF_MARKERS:
            h, w = struct.unpack_from(">HH", data, at + 5)
            return w, h
        if marker == 0xFF:  # fill byte
            at += 1
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP header (RIFF VP8 / VP8L / VP8X), or None if not a WebP."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    return None


# --------------------------------------------------------------------------------------------
# Recognising what a file is when Pillow cannot open it (for the message and the error code)


def _is_tiff(d: bytes) -> bool:
    return d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_bmp(d: bytes) -> bool:
    return (
        d[:2] == b"BM"
        and len(d) >= 18
        and int.from_bytes(d[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    )


def _is_riff(kind: bytes) -> Callable[[bytes], bool]:
    return lambda d: d[:4] == b"RIFF" and d[8:12] == kind


def _ftyp(brands: tuple[bytes, ...]) -> Callable[[bytes], bool]:
    return lambda d: d[4:8] == b"ftyp" and d[8:12] in brands


# (test, name, is it a format we accept?)
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str, bool], ...] = (
    (lambda d: d[:3] == b"\xff\xd8\xff", "JPEG", True),
    (lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", "PNG", True),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF", True),
    (_is_riff(b"WEBP"), "WebP", True),
    (_is_tiff, "TIFF", True),
    (_is_bmp, "BMP", True),
    (lambda d: d[:5] == b"%PDF-", "a PDF document", False),
    (_ftyp((b"avif", b"avis")), "an AVIF image", False),
    (
        _ftyp((b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis")),
        "a HEIC/HEIF image",
        False,
    ),
    (_ftyp((b"jp2 ", b"jpx ")), "a JPEG 2000 image", False),
    (lambda d: d[4:8] == b"ftyp", "an MP4/QuickTime video", False),
    (lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image", False),
    (lambda d: d[:4] == b"\xff\x4f\xff\x51", "a JPEG 2000 codestream", False),
    (lambda d: d[:2] == b"\xff\x0a" or d[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image", False),
    (lambda d: d[:4] == b"8BPS", "a Photoshop document", False),
    (
        lambda d: d[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and d[4:6] != b"\x00\x00",
        "an icon (ICO/CUR)",
        False,
    ),
    (lambda d: d[:4] == b"%!PS" or d[:4] == b"\xc5\xd0\xd3\xc6", "a PostScript/EPS document", False),
    (lambda d: d[:4] == b"qoif", "a QOI image", False),
    (lambda d: d[:4] == b"DDS ", "a DirectDraw surface", False),
    (lambda d: d[:4] == b"icns", "an Apple icon", False),
    (lambda d: d[:4] == b"v/1\x01", "an OpenEXR image", False),
    (lambda d: d[:4] == b"PK\x03\x04", "a ZIP archive (or an Office document)", False),
    (lambda d: d[:2] == b"\x1f\x8b", "gzip-compressed data", False),
    (lambda d: d[:4] == b"\x7fELF", "an executable", False),
    (_is_riff(b"WAVE"), "a WAV audio file", False),
    (_is_riff(b"AVI "), "an AVI video", False),
    (
        lambda d: d[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7") and d[2:3].isspace(),
        "a PNM image",
        False,
    ),
)
_MARKUP = re.compile(rb"^\s*<(\?xml|svg|!doctype html|html|head|body|!--)", re.IGNORECASE)


def _sniff(data: bytes) -> tuple[str | None, bool]:
    """(what the bytes look like, whether that is a format we accept)."""
    head = data[:64]
    for test, name, accepted in _SIGNATURES:
        if test(head):
            return name, accepted
    head = data[:512].removeprefix(b"\xef\xbb\xbf")
    markup = _MARKUP.match(head)
    if markup:
        tag = markup.group(1).lower()
        return ("an SVG/XML document" if tag in (b"?xml", b"svg") else "an HTML page"), False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None, False
    if text and sum(ch.isprintable() or ch.isspace() for ch in text) >= 0.95 * len(text):
        return "plain text", False
    return None, False


def _unidentified(data: bytes) -> Rejection:
    name, accepted = _sniff(data)
    declared = _declared_size(data) if accepted else None
    if declared is not None and min(declared) <= 0:
        return _invalid_dimensions(name or "image", *declared)
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


def _undecodable(fmt: str, exc: BaseException, size: int, *, opening: bool = False) -> Rejection:
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


# --------------------------------------------------------------------------------------------
# Decoding


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8, or 1 when absent, absurd or unreadable (the pixels stay usable)."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: any parser error means "no usable orientation"
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _draft(im: Image.Image, need: tuple[int, int]) -> float | None:
    """Let libjpeg DCT-scale to the smallest 1/2, 1/4, 1/8 still >= ``need``; width in stored units."""
    try:
        result = im.draft(None, need)
    except _DECODE_ERRORS:
        return None
    if result is None:
        return None
    _, box = result
    return float(box[2])


def _load(im: Image.Image, fmt: str, size: int) -> None:
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS,
            f"the {fmt} holds a frame or tile larger than the pixel limit (a decompression bomb?)",
            type(exc).__name__,
        ) from None
    except _DECODE_ERRORS as exc:
        raise _undecodable(fmt, exc, size) from None


# Modes that resize() handles directly; everything else is converted first (on the decoded image).
_RESIZABLE = frozenset(
    ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
)


def _resize(
    im: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float], fmt: str
) -> Image.Image:
    try:
        src = _resizable(im)
        # Samples without a standard white point are mapped with the source's range: after the
        # resize, resampling overshoot (ringing) would widen it.
        sample_range = _sample_range(src)
        small = src.resize(size, _RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
        if src is not im:
            src.close()
        return _output_mode(small, sample_range)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS, f"the {fmt} exceeds the pixel limit", type(exc).__name__
        ) from None
    except ValueError as exc:
        raise Rejection(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"this {fmt} has pixel mode {im.mode!r}, which we cannot convert: {exc}",
            type(exc).__name__,
        ) from None


def _resizable(im: Image.Image) -> Image.Image:
    """The decoded image in a mode resize() treats correctly (alpha premultiplied by Pillow)."""
    mode = im.mode
    if "transparency" in im.info and mode in ("1", "L", "RGB", "P"):
        return im.convert("LA" if mode in ("1", "L") else "RGBA")  # colour key -> real alpha
    if mode == "P":
        return im.convert("RGB")
    if mode == "PA":
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode in _RESIZABLE:
        return im
    return im.convert("RGB")


def _sample_range(im: Image.Image) -> tuple[float, float]:
    if im.mode.startswith("I;16"):
        return 0.0, 65_535.0
    if im.mode in ("I", "F"):
        lo, hi = im.getextrema()
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return float(lo), float(hi)
    return 0.0, 255.0


def _output_mode(small: Image.Image, sample_range: tuple[float, float]) -> Image.Image:
    """RGB, or RGBA when transparency survives the resize."""
    mode = small.mode
    if mode in ("LA", "RGBA"):
        lowest, _ = small.getchannel("A").getextrema()
        if isinstance(lowest, (int, float)) and lowest < 255:
            return small if mode == "RGBA" else small.convert("RGBA")
        small = small.convert("L" if mode == "LA" else "RGB")
        mode = small.mode
    if mode.startswith("I;16"):
        return _scaled_to_8bit(small.convert("I"), *sample_range)
    if mode in ("I", "F"):
        return _scaled_to_8bit(small, *sample_range)
    return small if mode == "RGB" else small.convert("RGB")


def _scaled_to_8bit(small: Image.Image, lo: float, hi: float) -> Image.Image:
    """32-bit integer / float samples -> 8-bit grey, given the source's sample range.

    16-bit data keeps its white point (65535 -> 255). Other integer or float images have no
    standard white point: values already within 0..255 (or 0..1 for float) are kept as they are,
    anything else is stretched from its minimum to its maximum.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 255.0
    scale, offset = 1.0, 0.0  # already 8-bit range, or a constant image: clamp as it is
    if small.mode == "F" and lo >= 0 and hi <= 1.0:
        scale = 255.0
    elif (lo < 0 or hi > 255) and hi > lo:
        scale = 255.0 / (hi - lo)
        offset = -lo * scale
    if (scale, offset) != (1.0, 0.0):
        small = small.point(lambda v: v * scale + offset + 0.5)
    return small.convert("L").convert("RGB")


def _encode_png(im: Image.Image) -> bytes:
    """8-bit RGB/RGBA -> PNG with every row "Sub"-filtered (each byte minus the one a pixel left)."""
    w, h = im.size
    color_type = {"RGB": 2, "RGBA": 6}[im.mode]
    filtered = ImageChops.subtract_modulo(im, ImageChops.offset(im, 1, 0))  # offset wraps column 0 ...
    filtered.paste(im.crop((0, 0, 1, h)), (0, 0))  # ... so the first pixel of each row stays as is
    raw = filtered.tobytes()
    del filtered
    stride = len(raw) // h
    rows = b"\x01" + b"\x01".join([raw[at : at + stride] for at in range(0, len(raw), stride)])
    del raw
    packer = zlib.compressobj(PNG_ZLIB_LEVEL, zlib.DEFLATED, 15, 9, PNG_ZLIB_STRATEGY)
    idat = packer.compress(rows) + packer.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b"")))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
