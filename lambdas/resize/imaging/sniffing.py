"""Format sniffing and header readers over raw bytes: what a file is and what size its header
declares, without Pillow (for checks that must run before it opens the file, and for messages)."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def is_tiff(d: bytes) -> bool:
    return d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_bmp(d: bytes) -> bool:
    return (
        d[:2] == b"BM"
        and len(d) >= 18
        and int.from_bytes(d[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    )


def _is_riff(kind: bytes) -> Callable[[bytes], bool]:
    return lambda d: d[:4] == b"RIFF" and d[8:12] == kind


def _has_ftyp_brand(brands: tuple[bytes, ...]) -> Callable[[bytes], bool]:
    return lambda d: d[4:8] == b"ftyp" and d[8:12] in brands


# (test, name, is it a format we accept?)
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str, bool], ...] = (
    (lambda d: d[:3] == JPEG_MAGIC, "JPEG", True),
    (lambda d: d[:8] == PNG_MAGIC, "PNG", True),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF", True),
    (_is_riff(b"WEBP"), "WebP", True),
    (is_tiff, "TIFF", True),
    (is_bmp, "BMP", True),
    (lambda d: d[:5] == b"%PDF-", "a PDF document", False),
    (_has_ftyp_brand((b"avif", b"avis")), "an AVIF image", False),
    (
        _has_ftyp_brand((b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis")),
        "a HEIC/HEIF image",
        False,
    ),
    (_has_ftyp_brand((b"jp2 ", b"jpx ")), "a JPEG 2000 image", False),
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


def sniff(data: bytes) -> tuple[str | None, bool]:
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


def declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as written in a PNG, GIF, BMP, WebP or JPEG header (for messages only)."""
    if data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack_from(">II", data, 16)
        return w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack_from("<HH", data, 6)
        return w, h
    if is_bmp(data) and int.from_bytes(data[14:18], "little") >= 40 and len(data) >= 26:
        w, h = struct.unpack_from("<ii", data, 18)
        return w, abs(h)  # a negative height only means top-down rows
    if data[:3] == JPEG_MAGIC:
        return jpeg_frame_size(data)
    return webp_canvas_size(data)


_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first start-of-frame segment of a JPEG, or None if none is found."""
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


def webp_canvas_size(data: bytes) -> tuple[int, int] | None:
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
