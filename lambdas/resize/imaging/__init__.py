"""Pure image domain of the resize/encode stage: untrusted bytes in, an exact-size PNG out.

``resize_and_encode`` turns any upload we accept into a ``spec.width`` x ``spec.height`` PNG (and its
base64 text), or raises ``Rejection`` with a stable ``ErrorCode`` and a message a person can act on.
No I/O, no environment, no logging: the caller decides what to do with a rejection.

Modules: ``pipeline`` (the one pass, ``resize_and_encode`` and ``probe``), ``geometry`` (pad / crop /
stretch plans, EXIF orientation), ``sniffing`` (what bytes are, header sizes), ``guards`` (limits,
bomb and flood checks), ``decoding`` (opening with the accepted decoders, error mapping), ``modes``
(pixel-mode normalisation and the resample), ``png`` (the PNG writer).

Hardening against hostile files (README "Limits" and "Error codes"):

- Only the decoders we mean to use are ever tried (``Image.open(..., formats=ACCEPTED_FORMATS)``):
  JPEG, PNG, WebP and GIF (what Nova accepts) plus TIFF and BMP, which we convert on purpose.
- Dimensions are checked from the header, before any pixel is decoded: zero sides, sides longer than
  ``MAX_SIDE`` and more than ``spec.max_pixels`` pixels (derived from the function's memory) are
  rejected. WebP is checked before Pillow even opens it, because libwebp allocates its canvas at open.
- Scan, segment and chunk floods (``MAX_JPEG_SCANS``, ``MAX_JPEG_SEGMENTS``, ``MAX_PNG_CHUNKS``) are
  counted on the raw bytes before Pillow parses them.
- ``DecompressionBombWarning`` is an error inside the call (a scoped ``warnings.catch_warnings``),
  with Pillow's own threshold aligned to ``spec.max_pixels``; ``LOAD_TRUNCATED_IMAGES`` stays off.
- EXIF orientation is read without re-writing the EXIF block (blocks that make
  ``ImageOps.exif_transpose`` raise still rotate correctly) and applied to the small image; an
  unreadable block or an absurd value (0, 9, 65535, a string) is ignored: the pixels are still a
  usable image, and rejecting a photo for a broken metadata block helps nobody.

Speed (issue 7; README "Performance (measured)"): JPEGs are decoded with libjpeg's DCT scaling
(``draft``) straight to the smallest power-of-two reduction still at least as big as what the output
needs; the remaining reduction uses ``reduce`` (``reducing_gap``) and a BICUBIC pass; orientation and
mode conversion run on the small image, never on the full-size one; the PNG is written with one fixed
row filter and zlib's run-length strategy (~20 ms instead of ~55 ms for Pillow's encoder at level 1,
at the same size for photos). The measured reasons sit next to each constant.
"""

from __future__ import annotations

from .decoding import ACCEPTED_FORMATS
from .geometry import Plan, plan
from .guards import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS, MAX_PNG_CHUNKS, MAX_SIDE
from .modes import REDUCING_GAP
from .pipeline import DRAFT_MARGIN, EncodedImage, probe, resize_and_encode
from .png import PNG_ZLIB_LEVEL, PNG_ZLIB_STRATEGY, encode_png

__all__ = [
    "ACCEPTED_FORMATS",
    "DRAFT_MARGIN",
    "MAX_JPEG_SCANS",
    "MAX_JPEG_SEGMENTS",
    "MAX_PNG_CHUNKS",
    "MAX_SIDE",
    "PNG_ZLIB_LEVEL",
    "PNG_ZLIB_STRATEGY",
    "REDUCING_GAP",
    "EncodedImage",
    "Plan",
    "encode_png",
    "plan",
    "probe",
    "resize_and_encode",
]
