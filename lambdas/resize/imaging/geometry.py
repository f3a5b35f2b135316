"""Target geometry: which centred source box fills which part of the output canvas (pad, crop or
stretch), and which transpose turns EXIF-oriented pixels upright."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from lambdas.shared.config import ResizePolicy

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that turns the stored pixels upright (as ImageOps.exif_transpose).
TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset((5, 6, 7, 8))


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


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8, or 1 when absent, absurd or unreadable (the pixels stay usable).

    Read with ``getexif`` rather than ``ImageOps.exif_transpose``, which re-writes the EXIF block and
    raises on blocks that still hold a perfectly usable orientation.
    """
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: any parser error means "no usable orientation"
        return 1
    return value if isinstance(value, int) and value in TRANSPOSE else 1
