"""A corpus of hostile and odd uploads (issue 6), built on the fly; importable by any test tier.

``build_corpus(dest)`` writes every file below ``dest`` and returns the cases. Each case carries the
outcome ``lambdas.resize.imaging.resize_and_encode`` must produce for it: ``"caption"`` (a correct
1280x720 PNG, so the pipeline goes on to caption it) or an ``ErrorCode`` value.

The expectations hold for any ``ImageSpec`` whose ``max_pixels`` is between ``MIN_MAX_PIXELS`` and
``MAX_MAX_PIXELS`` (function memory from ~820 MB to ~3,400 MB, the local runtime's default of 1,769 MB
included): the largest legitimate file is 64 MP, the smallest bomb declares 268 MP.

Pixels are cheap on purpose (gradients, flat colour, small noise), bombs are crafted headers rather
than real pixels: the whole corpus builds in a couple of seconds and takes a few MB on disk.
Names include what S3 keys can hold and events URL-encode: spaces, ``+``, ``%``, ``?``, ``#``,
unicode, no extension, upper-case extensions, ~200 characters and nested folders. Folder markers
(keys ending in ``/``) are not files and are the resize service's concern, so they are not here.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

from lambdas.shared.config import pixel_limit_for_memory
from lambdas.shared.errors import ErrorCode

CAPTION = "caption"
MIN_MAX_PIXELS = 64_000_000  # the 64 MP PNG must pass ...
MAX_MAX_PIXELS = 268_000_000  # ... and the 16383x16383 WebP (268.4 MP) must not
DEFAULT_MEMORY_MB = 1769
DEFAULT_MAX_PIXELS = pixel_limit_for_memory(DEFAULT_MEMORY_MB)

# EXIF blocks (found by mutating a valid one) that carry orientation 6 and make Pillow 13's
# ImageOps.exif_transpose raise while it re-serialises the block; reading them works.
EXIF_TRANSPOSE_RAISES: dict[str, bytes] = {
    "struct-error": bytes.fromhex(
        "4578696600004d4d002a000000080004010f00020000000463616d00011200030000000100060000011a000500"
        "0000010000003e010900020000000373770000000000000000004800000001"
    ),
    "type-error": bytes.fromhex(
        "4578696600004d4d002a000000080004010f00020000000463616d00011200030000000100060000011a000500"
        "0000010000003e011b00020000000373770000000000000000004800000001"
    ),
    "attribute-error": bytes.fromhex(
        "4578696600004d4d002a000000080004010f004c0000000463616d00011200030000000100060000014d000500"
        "0000010000003e013100020000000373770000000068000000474800000001"
    ),
}


@dataclass(frozen=True, slots=True)
class CorpusCase:
    name: str  # path relative to the corpus root (and below images/ once uploaded)
    data: bytes
    expected: str  # "caption" or an ErrorCode value
    about: str = ""  # what the file is, for test ids and failure messages

    @property
    def expected_code(self) -> ErrorCode | None:
        return None if self.expected == CAPTION else ErrorCode(self.expected)


# --------------------------------------------------------------------------------------------
# Small builders


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def _scene(w: int, h: int, mode: str = "RGB", seed: int = 1) -> Image.Image:
    """Something with structure (gradient, shapes) so orientation and crops are visible."""
    r = Image.linear_gradient("L").resize((w, h))
    g = Image.linear_gradient("L").rotate(90).resize((w, h))
    b = Image.radial_gradient("L").resize((w, h))
    im = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(im)
    rnd = random.Random(seed)
    for _ in range(6):
        x, y = rnd.randrange(w), rnd.randrange(h)
        s = max(1, min(w, h) // 5)
        draw.ellipse((x, y, x + s, y + s), fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    draw.rectangle((0, 0, max(0, w // 8), max(0, h // 8)), fill=(255, 0, 0))  # marks the top-left
    return im if mode == "RGB" else im.convert(mode)


def _with_alpha(im: Image.Image, *, transparent: bool) -> Image.Image:
    rgba = im.convert("RGBA")
    alpha = Image.radial_gradient("L").resize(im.size) if transparent else Image.new("L", im.size, 255)
    rgba.putalpha(alpha)
    return rgba


def _exif(orientation: int | None = None, *, raw: bytes | None = None) -> bytes:
    if raw is not None:
        return raw
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010F] = "corpus camera"
    return exif.tobytes()


def _png_chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    value = zlib.crc32(body, zlib.crc32(kind)) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", value)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_raw(
    w: int, h: int, *, depth: int = 8, color: int = 0, idat: bytes | None = None, extra: bytes = b""
) -> bytes:
    """A hand-made PNG: header as declared, pixels as given (or one short, valid zlib stream)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64) if idat is None else idat
    return _PNG_SIG + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _png_16bit(w: int, h: int, channels: int) -> bytes:
    """RGB 48-bit (colour type 2) or RGBA 64-bit (type 6), which Pillow cannot write itself."""
    rows = []
    for y in range(h):
        row = bytearray(b"\x00")
        for x in range(w):
            r, g, b = (x * 65535) // max(1, w - 1), (y * 65535) // max(1, h - 1), 40000
            px = [r, g, b] + ([(x + y) * 65535 // max(1, w + h - 2)] if channels == 4 else [])
            row += struct.pack(f">{channels}H", *px)
        rows.append(bytes(row))
    return _png_raw(w, h, depth=16, color=2 if channels == 3 else 6, idat=zlib.compress(b"".join(rows)))


def _jpeg_sof_bomb(w: int, h: int) -> bytes:
    """A real JPEG whose SOF0 is rewritten to declare ``w`` x ``h`` (entropy data left as is)."""
    data = bytearray(_save(_scene(16, 16), "JPEG"))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, h, w)
    return bytes(data)


def _gif_header_bomb(w: int, h: int) -> bytes:
    data = bytearray(_save(Image.new("P", (8, 8)), "GIF"))
    struct.pack_into("<HH", data, 6, w, h)  # logical screen
    at = data.index(b"\x2c")  # image descriptor: left, top, width, height
    struct.pack_into("<HH", data, at + 5, w, h)
    return bytes(data)


def _bmp_header_bomb(w: int, h: int) -> bytes:
    data = bytearray(_save(Image.new("RGB", (4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, w, h)
    return bytes(data)


def _tiff_header_bomb(w: int, h: int) -> bytes:
    data = bytearray(_save(Image.new("L", (4, 4)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = w if tag == 256 else h
            if kind == 3:  # SHORT: widen to LONG in place
                struct.pack_into("<HHII", data, entry, tag, 4, 1, value)
            else:
                struct.pack_into("<I", data, entry + 8, value)
    return bytes(data)


def _webp_vp8x_bomb(w: int, h: int) -> bytes:
    """VP8X header declaring a ``w`` x ``h`` canvas followed by a tiny real frame."""
    frame = _save(Image.new("RGB", (4, 4)), "WEBP", lossless=True)[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _flip(data: bytes, start_frac: float, count: int, seed: int) -> bytes:
    """Overwrite ``count`` bytes with random ones from ``start_frac`` of the file on."""
    rnd = random.Random(seed)
    out = bytearray(data)
    start = int(len(out) * start_frac)
    for i in range(start, min(len(out), start + count)):
        out[i] = rnd.randrange(256)
    return bytes(out)


def _truncated(data: bytes, frac: float) -> bytes:
    return data[: int(len(data) * frac)]


def _animated(fmt: str) -> bytes:
    frames = [_scene(48, 32, seed=i) for i in range(3)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _mpo() -> bytes:
    left, right = _scene(64, 48, seed=1), _scene(64, 48, seed=2)
    return _save(left, "MPO", save_all=True, append_images=[right])


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("photo.jpg", _save(_scene(16, 16), "JPEG"))
    return out.getvalue()


def _ztxt_bomb() -> bytes:
    """A small PNG whose zTXt chunk inflates to 64 MB (Pillow caps text chunks)."""
    payload = b"k\x00\x00" + zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    png = _save(_scene(16, 16), "PNG")
    at = png.index(b"IDAT") - 4
    return png[:at] + _png_chunk(b"zTXt", payload) + png[at:]


def _scan_flood(repeats: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: each copy is a full pass for libjpeg."""
    data = _save(Image.new("RGB", (512, 512), (120, 130, 140)), "JPEG", progressive=True, quality=50)
    sos = data.rindex(b"\xff\xda")
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[sos:eoi] * repeats + data[eoi:]


def _segment_flood(repeats: int) -> bytes:
    data = _save(_scene(16, 16), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * repeats + data[2:]


def _chunk_flood(repeats: int) -> bytes:
    png = _save(_scene(16, 16), "PNG")
    at = png.index(b"IDAT") - 4
    return png[:at] + _png_chunk(b"zzZz", b"") * repeats + png[at:]


def _bad_crc(png: bytes, kind: bytes) -> bytes:
    at = png.index(kind) - 4
    (length,) = struct.unpack_from(">I", png, at)
    crc_at = at + 8 + length
    return png[:crc_at] + b"\xde\xad\xbe\xef" + png[crc_at + 4 :]


def _large_jpeg() -> bytes:
    """24 MP (6000x4000) with simple content: compresses to about a megabyte."""
    w, h = 6000, 4000
    im = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((w, h)),
            Image.linear_gradient("L").rotate(90).resize((w, h)),
            Image.new("L", (w, h), 90),
        ),
    )
    draw = ImageDraw.Draw(im)
    draw.ellipse((2000, 1000, 4000, 3000), fill=(240, 200, 40))
    draw.rectangle((0, 0, 600, 400), fill=(255, 0, 0))
    return _save(im, "JPEG", quality=80)


def _large_png() -> bytes:
    """64 MP grey PNG (8000x8000), mostly flat: a deflate stream of ~100 KB that is still a real image."""
    im = Image.new("L", (8000, 8000), 30)
    draw = ImageDraw.Draw(im)
    draw.ellipse((1000, 1000, 7000, 7000), fill=200)
    draw.rectangle((0, 0, 800, 800), fill=255)
    return _save(im, "PNG", compress_level=1)


# --------------------------------------------------------------------------------------------
# The cases


def _cases() -> Iterator[CorpusCase]:
    cap = CAPTION
    unsupported = ErrorCode.UNSUPPORTED_FORMAT.value
    corrupt = ErrorCode.CORRUPT_IMAGE.value
    bomb = ErrorCode.TOO_MANY_PIXELS.value
    invalid = ErrorCode.INVALID_DIMENSIONS.value
    scene = _scene(64, 40)
    jpeg = _save(scene, "JPEG", quality=90)
    png = _save(scene, "PNG")

    def case(name: str, data: bytes, expected: str, about: str) -> CorpusCase:
        return CorpusCase(name, data, expected, about)

    # Not an image at all, or a format we do not decode.
    yield case("not-images/empty.jpg", b"", ErrorCode.EMPTY_FILE.value, "zero bytes")
    yield case("not-images/notes.txt.jpg", b"shopping list:\n- milk\n- eggs\n" * 20, unsupported, "text")
    yield case(
        "not-images/index.html.jpg",
        b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><img src=a.jpg></body></html>\n",
        unsupported,
        "HTML renamed .jpg",
    )
    yield case("not-images/invoice.pdf.jpg", _save(scene, "PDF"), unsupported, "PDF renamed .jpg")
    yield case(
        "not-images/drawing.svg.png",
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n',
        unsupported,
        "SVG renamed .png",
    )
    yield case("not-images/archive.zip.png", _zip_bytes(), unsupported, "ZIP holding a JPEG")
    yield case(
        "not-images/random.jpg",
        b"\x00\x13" + random.Random(6).randbytes(4094),
        unsupported,
        "4 KB of random bytes",
    )
    yield case("not-images/one-byte.png", b"\x89", unsupported, "1 byte")
    yield case("not-images/script.sh.gif", b"#!/bin/sh\nrm -rf /tmp/x\n", unsupported, "shell script")
    yield case("unsupported/photo.avif", _save(scene, "AVIF", quality=50), unsupported, "AVIF")
    yield case("unsupported/photo.jp2", _save(scene, "JPEG2000"), unsupported, "JPEG 2000")
    yield case("unsupported/icon.ico", _save(scene, "ICO"), unsupported, "ICO")
    yield case("unsupported/image.ppm", _save(scene, "PPM"), unsupported, "PPM")
    yield case("unsupported/image.tga", _save(scene, "TGA"), unsupported, "TGA (no magic number)")
    yield case("unsupported/image.qoi", _save(scene, "QOI"), unsupported, "QOI")
    yield case("unsupported/image.pcx", _save(scene, "PCX"), unsupported, "PCX")
    yield case("unsupported/image.dds", _save(scene, "DDS"), unsupported, "DDS")
    yield case("unsupported/image.eps", _save(scene, "EPS"), unsupported, "EPS")
    yield case(
        "unsupported/photo.heic",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        unsupported,
        "HEIC container header",
    )

    # Broken files of the formats we accept.
    big_jpeg = _save(_scene(800, 600), "JPEG", quality=90)
    big_png = _save(_scene(300, 200), "PNG")
    yield case("broken/truncated-half.jpg", _truncated(big_jpeg, 0.5), corrupt, "JPEG cut in half")
    yield case("broken/truncated-header.jpg", jpeg[:200], corrupt, "JPEG cut inside its headers")
    yield case(
        "broken/soi-then-garbage.jpg", b"\xff\xd8\xff" + b"\x00garbage" * 40, corrupt, "JPEG magic, then junk"
    )
    yield case("broken/truncated-half.png", _truncated(big_png, 0.5), corrupt, "PNG cut in half")
    yield case("broken/ihdr-only.png", big_png[:33], corrupt, "PNG with no IDAT")
    yield case("broken/signature-only.png", _PNG_SIG, corrupt, "PNG signature only")
    yield case("broken/bad-ihdr-crc.png", _bad_crc(big_png, b"IHDR"), corrupt, "PNG IHDR with a bad CRC")
    yield case(
        "broken/bad-idat-crc.png",
        _bad_crc(big_png, b"IDAT"),
        cap,
        "PNG IDAT with a bad chunk CRC: Pillow skips IDAT CRCs, zlib's Adler-32 still guards the pixels",
    )
    yield case(
        "broken/corrupt-zlib.png",
        _png_raw(64, 64, idat=b"\x78\x9c" + b"\xff\x00" * 50),
        corrupt,
        "PNG with an invalid deflate stream",
    )
    yield case(
        "broken/truncated.gif",
        _truncated(_save(_scene(200, 100).convert("P"), "GIF"), 0.5),
        corrupt,
        "GIF cut in half",
    )
    yield case(
        "broken/animated-cut-after-frame-1.gif",
        _truncated(_animated("GIF"), 0.4),
        cap,
        "animated GIF cut inside frame 2: frame 1 is complete and is all we use",
    )
    yield case(
        "broken/truncated.webp", _truncated(_save(_scene(200, 100), "WEBP"), 0.5), corrupt, "WebP cut in half"
    )
    yield case(
        "broken/truncated.tiff",
        _truncated(_save(_scene(100, 80), "TIFF"), 0.5),
        corrupt,
        "TIFF cut in half",
    )
    yield case(
        "broken/truncated.bmp", _truncated(_save(_scene(100, 80), "BMP"), 0.5), corrupt, "BMP cut in half"
    )
    bad_bmp = bytearray(_save(_scene(8, 8), "BMP"))
    struct.pack_into("<H", bad_bmp, 28, 7)  # 7 bits per pixel
    yield case(
        "broken/bmp-7-bits-per-pixel.bmp", bytes(bad_bmp), unsupported, "BMP with a bit depth Pillow rejects"
    )
    yield case(
        "broken/jpeg-scrambled-entropy.jpg",
        _flip(big_jpeg, 0.6, 64, seed=3),
        cap,
        "JPEG with scrambled scan data: libjpeg conceals it, the image is still usable",
    )

    # EXIF: every orientation, absurd values, malformed blocks.
    for orientation in range(1, 9):
        yield case(
            f"exif/orientation-{orientation}.jpg",
            _save(scene, "JPEG", exif=_exif(orientation)),
            cap,
            f"EXIF orientation {orientation}",
        )
    yield case("exif/orientation-6.png", _save(scene, "PNG", exif=_exif(6)), cap, "PNG eXIf orientation 6")
    yield case("exif/orientation-6.webp", _save(scene, "WEBP", exif=_exif(6)), cap, "WebP EXIF orientation 6")
    for absurd in (0, 9, 65535):
        yield case(
            f"exif/orientation-{absurd}.jpg",
            _save(scene, "JPEG", exif=_exif(absurd)),
            cap,
            f"absurd EXIF orientation {absurd} (ignored)",
        )
    for kind, blob in EXIF_TRANSPOSE_RAISES.items():
        yield case(
            f"exif/transpose-raises-{kind}.jpg",
            _save(scene, "JPEG", exif=blob),
            cap,
            f"orientation 6 next to a tag ImageOps.exif_transpose cannot re-write ({kind}); we rotate anyway",
        )
    yield case(
        "exif/cut-exif.jpg",
        _save(scene, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"),
        cap,
        "EXIF block cut inside its first IFD (orientation unreadable, ignored)",
    )
    yield case(
        "exif/garbage-exif.jpg",
        _save(scene, "JPEG", exif=b"Exif\x00\x00" + random.Random(9).randbytes(300)),
        cap,
        "EXIF block of random bytes (ignored)",
    )

    # Decompression bombs and impossible dimensions, all from crafted headers.
    yield case("bombs/20000x20000.png", _png_raw(20000, 20000), bomb, "PNG header 20000x20000 (400 MP)")
    yield case("bombs/1x100000000.png", _png_raw(1, 100_000_000), bomb, "PNG header 1x100,000,000")
    yield case("bombs/100000000x1.png", _png_raw(100_000_000, 1), bomb, "PNG header 100,000,000x1")
    yield case("bombs/zero-width.png", _png_raw(0, 100), invalid, "PNG header with width 0")
    yield case("bombs/zero-height.png", _png_raw(100, 0), invalid, "PNG header with height 0")
    yield case("bombs/zero-width.gif", _gif_header_bomb(0, 50), invalid, "GIF screen and frame 0 wide")
    yield case("bombs/zero-height.bmp", _bmp_header_bomb(50, 0), invalid, "BMP header 0 tall")
    yield case("bombs/negative-width.bmp", _bmp_header_bomb(-50, 50), invalid, "BMP header -50 wide")
    yield case("bombs/65500x65500.jpg", _jpeg_sof_bomb(65500, 65500), bomb, "JPEG SOF 65500x65500")
    yield case("bombs/65535x65535.gif", _gif_header_bomb(65535, 65535), bomb, "GIF screen 65535x65535")
    yield case("bombs/50000x50000.bmp", _bmp_header_bomb(50000, 50000), bomb, "BMP header 50000x50000")
    yield case(
        "bombs/100000x100000.tiff", _tiff_header_bomb(100_000, 100_000), bomb, "TIFF IFD 100000x100000"
    )
    yield case("bombs/16383x16383.webp", _webp_vp8x_bomb(16383, 16383), bomb, "WebP VP8X canvas 16383x16383")
    yield case("bombs/ztxt-64mb.png", _ztxt_bomb(), corrupt, "PNG zTXt chunk inflating to 64 MB")
    yield case("bombs/jpeg-1000-scans.jpg", _scan_flood(1000), corrupt, "progressive JPEG with 1,000 scans")
    yield case("bombs/jpeg-comment-flood.jpg", _segment_flood(5000), corrupt, "JPEG with 5,000 COM segments")
    yield case("bombs/png-chunk-flood.png", _chunk_flood(100_001), corrupt, "PNG with 100,001 empty chunks")

    # Every pixel mode, with and without transparency.
    yield case("modes/1.png", _save(scene.convert("1"), "PNG"), cap, "1-bit PNG")
    yield case("modes/L.png", _save(scene.convert("L"), "PNG"), cap, "grey PNG")
    yield case(
        "modes/LA.png", _save(_with_alpha(scene, transparent=True).convert("LA"), "PNG"), cap, "grey+alpha"
    )
    yield case("modes/P.png", _save(scene.convert("P"), "PNG"), cap, "palette PNG")
    p_trns = scene.convert("P")
    yield case("modes/P-transparent.png", _save(p_trns, "PNG", transparency=0), cap, "palette PNG with tRNS")
    yield case(
        "modes/PA.tiff",
        _save(_with_alpha(scene, transparent=True).convert("PA"), "TIFF"),
        cap,
        "palette+alpha",
    )
    yield case("modes/RGB.png", png, cap, "RGB PNG")
    yield case(
        "modes/RGBA-opaque.png",
        _save(_with_alpha(scene, transparent=False), "PNG"),
        cap,
        "RGBA, alpha all 255",
    )
    yield case(
        "modes/RGBA-transparent.png",
        _save(_with_alpha(scene, transparent=True), "PNG"),
        cap,
        "RGBA with alpha",
    )
    yield case(
        "modes/L-trns.png", _save(scene.convert("L"), "PNG", transparency=0), cap, "grey PNG with tRNS"
    )
    yield case(
        "modes/RGB-trns.png", _save(scene, "PNG", transparency=(255, 0, 0)), cap, "RGB PNG with a colour key"
    )
    yield case("modes/CMYK.jpg", _save(scene.convert("CMYK"), "JPEG"), cap, "CMYK JPEG")
    yield case("modes/CMYK.tiff", _save(scene.convert("CMYK"), "TIFF"), cap, "CMYK TIFF")
    yield case("modes/YCbCr.tiff", _save(scene.convert("YCbCr"), "TIFF"), cap, "YCbCr TIFF")
    gray16 = Image.linear_gradient("L").resize((64, 40)).convert("I").point(lambda v: v * 257).convert("I;16")
    yield case("modes/I16.png", _save(gray16, "PNG"), cap, "16-bit grey PNG")
    yield case("modes/I16.tiff", _save(gray16, "TIFF"), cap, "16-bit grey TIFF")
    yield case(
        "modes/I32.tiff",
        _save(scene.convert("L").convert("I").point(lambda v: v * 1000), "TIFF"),
        cap,
        "32-bit int",
    )
    yield case(
        "modes/F32.tiff",
        _save(scene.convert("L").convert("F").point(lambda v: v / 255.0), "TIFF"),
        cap,
        "float",
    )
    yield case("modes/RGB48.png", _png_16bit(40, 30, 3), cap, "16-bit-per-channel RGB PNG")
    yield case("modes/RGBA64.png", _png_16bit(40, 30, 4), cap, "16-bit-per-channel RGBA PNG")

    # Variants of the accepted formats.
    yield case("variants/gray.jpg", _save(scene.convert("L"), "JPEG"), cap, "greyscale JPEG")
    yield case("variants/progressive.jpg", _save(scene, "JPEG", progressive=True), cap, "progressive JPEG")
    yield case(
        "variants/icc.jpg", _save(scene, "JPEG", icc_profile=b"\x00" * 128), cap, "JPEG with an ICC blob"
    )
    yield case("variants/interlaced.png", _png_interlaced(), cap, "Adam7-interlaced PNG")
    yield case("variants/animated.gif", _animated("GIF"), cap, "animated GIF (first frame)")
    yield case("variants/animated.webp", _animated("WEBP"), cap, "animated WebP (first frame)")
    yield case("variants/animated.png", _animated("PNG"), cap, "APNG (first frame)")
    yield case(
        "variants/transparent.gif", _save(scene.convert("P"), "GIF", transparency=0), cap, "GIF with a key"
    )
    yield case(
        "variants/lossless-alpha.webp",
        _save(_with_alpha(scene, transparent=True), "WEBP", lossless=True),
        cap,
        "lossless WebP with alpha",
    )
    yield case("variants/lossy.webp", _save(scene, "WEBP", quality=70), cap, "lossy WebP")
    yield case("variants/1bit.bmp", _save(scene.convert("1"), "BMP"), cap, "1-bit BMP")
    yield case("variants/palette.bmp", _save(scene.convert("P"), "BMP"), cap, "8-bit palette BMP")
    yield case("variants/rgb.bmp", _save(scene, "BMP"), cap, "24-bit BMP")
    yield case("variants/lzw.tiff", _save(scene, "TIFF", compression="tiff_lzw"), cap, "LZW TIFF")
    yield case("variants/jpeg-in.tiff", _save(scene, "TIFF", compression="jpeg"), cap, "JPEG-compressed TIFF")
    yield case(
        "variants/multipage.tiff",
        _save(scene, "TIFF", save_all=True, append_images=[_scene(30, 30, seed=5)]),
        cap,
        "two-page TIFF (first page)",
    )
    yield case("variants/stereo.mpo", _mpo(), cap, "MPO (multi-picture JPEG)")
    yield case("variants/1x1.png", _save(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), cap, "one pixel")
    yield case("variants/1x3000.png", _save(_scene(1, 3000), "PNG"), cap, "1 px wide sliver")
    yield case("variants/3000x1.gif", _save(_scene(3000, 1).convert("P"), "GIF"), cap, "1 px tall sliver")

    # Names S3 keys allow (the bytes are fine; the lead's end-to-end test checks the keys).
    yield case("names/with space/photo 1.jpg", jpeg, cap, "spaces")
    yield case("names/a+b=c.png", png, cap, "plus sign")
    yield case("names/100% real.jpg", jpeg, cap, "percent sign")
    yield case("names/question?mark#hash.png", png, cap, "? and #")
    yield case("names/unicode/café ñandú 日本 🙂.png", png, cap, "unicode")
    yield case("names/NOEXTENSION", jpeg, cap, "no extension")
    yield case("names/UPPER.JPG", jpeg, cap, "upper-case extension")
    yield case("names/" + "long-name-" * 19 + "end.jpg", jpeg, cap, "~200-character name")
    yield case("names/jpeg-named.png", jpeg, cap, "JPEG content with a .png name")
    yield case("names/deeply/nested/folders/a/b/c/photo.webp", _save(scene, "WEBP"), cap, "nested folders")

    # Large, legitimate images.
    yield case("large/photo-24mp.jpg", _large_jpeg(), cap, "24 MP JPEG")
    yield case("large/flat-64mp.png", _large_png(), cap, "64 MP grey PNG")


def _png_interlaced() -> bytes:
    """Adam7 PNG by hand (Pillow does not write interlaced PNGs): 8x8 grey, every pass explicit."""
    w = h = 8
    passes = (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    )
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        for y in range(y0, h, dy):
            raw += b"\x00" + bytes((x * 30 + y * 2) % 256 for x in range(x0, w, dx))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return (
        _PNG_SIG
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _png_chunk(b"IEND", b"")
    )


@lru_cache(maxsize=1)
def corpus_cases() -> tuple[CorpusCase, ...]:
    """Every case, in memory (built once per process), in a stable order."""
    cases = tuple(_cases())
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise AssertionError("corpus names must be unique")
    return cases


def build_corpus(dest: Path) -> list[CorpusCase]:
    """Write every case below ``dest`` (folders created) and return them in a stable order."""
    cases = list(corpus_cases())
    for c in cases:
        path = dest / c.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(c.data)
    return cases


def small_cases(cases: Iterable[CorpusCase], max_bytes: int = 200_000) -> list[CorpusCase]:
    """The cases cheap enough to mutate (fuzzing seeds, property tests)."""
    return [c for c in cases if 0 < len(c.data) <= max_bytes]
