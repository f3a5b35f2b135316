"""Property-based tests of the image domain (hypothesis).

- Any size, mode, format, orientation and policy in -> exactly 1280x720 RGB(A) PNG out.
- Resize geometry stays inside the canvas and the source, centred, aspect kept where promised.
- Mutated bytes of valid images -> a valid PNG or a typed ``Rejection``, never another exception.
"""

from __future__ import annotations

import base64
import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lambdas.resize.imaging import encode_png, plan, resize_and_encode
from lambdas.shared.config import ImageSpec, ResizePolicy
from lambdas.shared.errors import Rejection
from tests.corpus import _exif

pytestmark = pytest.mark.unit

# Which pixel modes each accepted format can carry (as Pillow writes them).
MODES_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
    "GIF": ("P", "L"),
    "TIFF": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"),
    "BMP": ("1", "L", "P", "RGB"),
}
WITH_EXIF = ("JPEG", "PNG", "WEBP")
HAS_ALPHA = ("LA", "PA", "RGBA")
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def uploads(draw: st.DrawFn) -> tuple[bytes, str, int, int, int | None, bool]:
    """(file bytes, format, width, height, EXIF orientation written, may carry transparency)."""
    fmt = draw(st.sampled_from(sorted(MODES_BY_FORMAT)))
    mode = draw(st.sampled_from(MODES_BY_FORMAT[fmt]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    grey = Image.effect_noise((w, h), 10 + seed % 80).point(lambda v: (v + seed) % 256)
    rgb = Image.merge("RGB", (grey, grey.rotate(90, expand=False), Image.new("L", (w, h), seed % 256)))
    transparent = False
    if mode in HAS_ALPHA:
        opaque = draw(st.booleans())
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.new("L", (w, h), 255) if opaque else grey)
        im = rgba.convert(mode)
        transparent = not opaque
    elif mode == "I;16":
        im = grey.convert("I").point(lambda v: v * 257).convert("I;16")
    elif mode in ("I", "F"):
        im = grey.convert(mode)
    else:
        im = rgb.convert(mode)
    params: dict[str, object] = {}
    if fmt in ("PNG", "GIF") and mode == "P" and draw(st.booleans()):
        params["transparency"] = 0
        transparent = True
    orientation = draw(st.one_of(st.none(), st.integers(0, 10), st.just(65535))) if fmt in WITH_EXIF else None
    if orientation is not None:
        params["exif"] = _exif(orientation)
    if fmt == "WEBP":
        params["lossless"] = draw(st.booleans())
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue(), fmt, w, h, orientation, transparent


@SETTINGS
@given(upload=uploads(), policy=st.sampled_from(list(ResizePolicy)))
def test_given_any_valid_upload_when_encoded_then_exactly_1280x720_rgb_or_rgba_png(
    upload: tuple[bytes, str, int, int, int | None, bool], policy: ResizePolicy
) -> None:
    data, fmt, w, h, orientation, transparent = upload
    # When
    result = resize_and_encode(data, ImageSpec(policy=policy))
    # Then
    out = Image.open(io.BytesIO(result.png))
    out.load()
    assert out.format == "PNG"
    assert out.size == (result.width, result.height) == (1280, 720)
    assert out.mode == result.mode
    assert result.mode in (("RGB", "RGBA") if transparent else ("RGB",))
    assert base64.b64decode(result.b64) == result.png
    assert result.source_format in (fmt, "MPO")
    upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    assert (result.source_width, result.source_height) == upright


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 70), st.integers(1, 40)),
    mode=st.sampled_from(["RGB", "RGBA"]),
    data=st.data(),
)
def test_given_any_rgb_or_rgba_image_when_png_encoded_then_it_decodes_to_the_same_pixels(
    size: tuple[int, int], mode: str, data: st.DataObject
) -> None:
    # Given arbitrary pixels (the Sub filter must wrap around modulo 256 and keep column 0)
    raw = data.draw(st.binary(min_size=size[0] * size[1] * len(mode), max_size=size[0] * size[1] * len(mode)))
    im = Image.frombytes(mode, size, raw)
    # When
    png = encode_png(im)
    # Then
    back = Image.open(io.BytesIO(png))
    assert (back.format, back.mode, back.size) == ("PNG", mode, size)
    assert back.tobytes() == raw


@SETTINGS
@given(
    src=st.tuples(st.integers(1, 100_000), st.integers(1, 100_000)),
    out=st.tuples(st.integers(16, 8192), st.integers(16, 8192)),
    policy=st.sampled_from(list(ResizePolicy)),
)
def test_given_any_geometry_when_planned_then_content_fits_centred_and_keeps_its_promise(
    src: tuple[int, int], out: tuple[int, int], policy: ResizePolicy
) -> None:
    (sw, sh), (ow, oh) = src, out
    p = plan(sw, sh, ow, oh, policy)
    # The content lies on the canvas, centred to the pixel
    assert 1 <= p.content_w <= ow
    assert 1 <= p.content_h <= oh
    left, top = p.offset
    assert left >= 0
    assert top >= 0
    assert abs(left - (ow - p.content_w - left)) <= 1
    assert abs(top - (oh - p.content_h - top)) <= 1
    # The source region lies inside the source
    assert 0 < p.box_w <= sw
    assert 0 < p.box_h <= sh
    if policy is not ResizePolicy.PAD:
        assert (p.content_w, p.content_h) == (ow, oh)
    if policy is ResizePolicy.CROP:
        # cover: one side of the source is used whole, and the region has the output's aspect
        assert p.box_w == sw or p.box_h == sh
        assert math.isclose(p.box_w / p.box_h, ow / oh, rel_tol=1e-9)
    if policy is ResizePolicy.PAD:
        # contain: the whole source, touching two opposite edges, aspect kept to the rounding
        assert (p.box_w, p.box_h) == (sw, sh)
        assert p.content_w == ow or p.content_h == oh
        if min(p.content_w, p.content_h) > 1:
            assert (
                abs(p.content_w / p.content_h - sw / sh)
                <= (sw / sh) * (1 / p.content_w + 1 / p.content_h) * 1.01
            )


def _seeds() -> list[bytes]:
    base = Image.effect_noise((24, 16), 40).convert("RGB")
    out = []
    for fmt, params in (
        ("JPEG", {"exif": _exif(6)}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("WEBP", {}),
        ("GIF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("BMP", {}),
    ):
        buf = io.BytesIO()
        (base.convert("P") if fmt == "GIF" else base).save(buf, format=fmt, **params)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()
SMALL_LIMIT = ImageSpec(width=64, height=36, max_pixels=4_000_000)  # mutated headers stay cheap


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=4)), max_size=6
    ),
    cut=st.one_of(st.none(), st.floats(0.05, 1.0)),
)
def test_given_mutated_bytes_of_valid_images_then_a_png_or_a_typed_rejection(
    seed: int, edits: list[tuple[float, bytes]], cut: float | None
) -> None:
    data = bytearray(SEEDS[seed])
    for where, new in edits:
        at = int(where * len(data))
        data[at : at + len(new)] = new
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    assert outcome(bytes(data)) in ("rejected", (64, 36))


def outcome(data: bytes) -> str | tuple[int, int]:
    try:
        result = resize_and_encode(data, SMALL_LIMIT)
    except Rejection as rejection:
        return "rejected" if rejection.message and rejection.code else "rejection without a message"
    return Image.open(io.BytesIO(result.png)).size
