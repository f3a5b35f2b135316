"""Mode normalisation around the resample: any decoded pixel mode in, 8-bit RGB or RGBA out."""

from __future__ import annotations

import math

from PIL import Image

from lambdas.shared.errors import ErrorCode, Rejection

from .guards import BOMB_ERRORS

# reduce() by integer factors (box filter, cheap) until the remaining resample shrinks by less than
# this, then BICUBIC. Measured against full decode + LANCZOS: >= 43 dB on 12-48 MP photos; 2.0
# instead of 3.0 saves ~20% on large PNGs for ~2 dB, BICUBIC instead of LANCZOS ~10 ms for < 1 dB.
REDUCING_GAP = 2.0
_RESAMPLE = Image.Resampling.BICUBIC

# Modes that resize() handles directly; everything else is converted first (on the decoded image).
_RESIZABLE = frozenset(
    ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
)


def resample(
    im: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float], fmt: str
) -> Image.Image:
    """The ``box`` region of the decoded ``im`` scaled to ``size``, as 8-bit RGB or RGBA."""
    try:
        src = _in_resizable_mode(im)
        # Samples without a standard white point are mapped with the source's range: after the
        # resize, resampling overshoot (ringing) would widen it.
        sample_range = _sample_range(src)
        small = src.resize(size, _RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
        if src is not im:
            src.close()
        return _to_output_mode(small, sample_range)
    except BOMB_ERRORS as exc:
        raise Rejection(
            ErrorCode.TOO_MANY_PIXELS, f"the {fmt} exceeds the pixel limit", type(exc).__name__
        ) from None
    except ValueError as exc:
        raise Rejection(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"this {fmt} has pixel mode {im.mode!r}, which we cannot convert: {exc}",
            type(exc).__name__,
        ) from None


def _in_resizable_mode(im: Image.Image) -> Image.Image:
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


def _to_output_mode(small: Image.Image, sample_range: tuple[float, float]) -> Image.Image:
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
