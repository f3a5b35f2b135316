"""The one pass from bytes to output: open and check, decode (DCT-scaled for JPEG), resample, orient,
letterbox and encode; plus ``probe``, the same checks without decoding a pixel."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

from PIL import Image

from lambdas.shared.config import ImageSpec

from .decoding import checked_format, decode_pixels, draft_jpeg, open_image
from .geometry import SWAPS_AXES, TRANSPOSE, exif_orientation, plan
from .guards import guarded_decoding
from .modes import resample
from .png import encode_png

# DCT scaling is a coarse filter: keep at least this much more resolution than the output needs so
# the resampling filter does the last step (an exact 2:1 DCT reduction of a noisy photo scores
# ~33 dB PSNR against full decode + LANCZOS; with the margin every measured case is above 41 dB).
DRAFT_MARGIN = 1.125


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


def probe(data: bytes, spec: ImageSpec) -> tuple[str, int, int]:
    """Header-only check: (format, upright width, upright height). Decodes no pixel data.

    Enforces the accepted formats, the dimension rules and the pixel limit; raises ``Rejection``.
    """
    with guarded_decoding(spec), open_image(data, spec) as im:
        fmt = checked_format(im)
        # Pillow reads a PNG's EXIF that follows the pixel data by decoding them: skip it here.
        after_pixels = fmt == "PNG" and "exif" not in im.info
        orientation = 1 if after_pixels else exif_orientation(im)
        w, h = im.size
        return (fmt, h, w) if orientation in SWAPS_AXES else (fmt, w, h)


def resize_and_encode(data: bytes, spec: ImageSpec) -> EncodedImage:
    """Decode ``data``, fit it to ``spec`` and return the PNG and its base64 text.

    Raises ``Rejection`` for any input it cannot use; no other exception for bad input
    (``MemoryError`` aside, which means the limits are wrong, not the file).
    """
    with guarded_decoding(spec), open_image(data, spec) as im:
        fmt = checked_format(im)
        is_jpeg = fmt in ("JPEG", "MPO")
        if is_jpeg:
            # EXIF of a JPEG sits in the header: read it first so draft() knows the upright geometry.
            orientation = exif_orientation(im)
        else:
            decode_pixels(im, fmt, len(data))  # decode first: PNG may keep its EXIF after the pixels
            orientation = exif_orientation(im)
        raw_w, raw_h = im.size
        swap = orientation in SWAPS_AXES
        up_w, up_h = (raw_h, raw_w) if swap else (raw_w, raw_h)
        p = plan(up_w, up_h, spec.width, spec.height, spec.policy)
        # The same plan in the stored (not yet rotated) frame of the pixels.
        box_w, box_h = (p.box_h, p.box_w) if swap else (p.box_w, p.box_h)
        content_w, content_h = (p.content_h, p.content_w) if swap else (p.content_w, p.content_h)

        stored_per_decoded = 1.0  # stored-frame pixels per decoded pixel (DCT scaling: 2, 4 or 8)
        if is_jpeg:
            need = (
                max(1, math.ceil(raw_w * content_w / box_w * DRAFT_MARGIN)),
                max(1, math.ceil(raw_h * content_h / box_h * DRAFT_MARGIN)),
            )
            drafted_w = draft_jpeg(im, need)
            if drafted_w is not None:
                stored_per_decoded = raw_w / drafted_w
            decode_pixels(im, fmt, len(data))

        box = (
            (raw_w - box_w) / 2 / stored_per_decoded,
            (raw_h - box_h) / 2 / stored_per_decoded,
            (raw_w + box_w) / 2 / stored_per_decoded,
            (raw_h + box_h) / 2 / stored_per_decoded,
        )
        small = resample(im, (content_w, content_h), box, fmt)
    if orientation in TRANSPOSE:
        small = small.transpose(TRANSPOSE[orientation])
    if (p.content_w, p.content_h) != (spec.width, spec.height):
        canvas = Image.new(small.mode, (spec.width, spec.height))  # black, or fully transparent
        canvas.paste(small, p.offset)
        small = canvas
    png = encode_png(small)
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
