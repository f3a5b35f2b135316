"""Unit tests of the pure image domain (package lambdas/resize/imaging): geometry, orientation,
modes, hardening against hostile headers. No sockets, no files: every input is built in memory."""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops, ImageFile, ImageOps, ImageStat, WebPImagePlugin

from lambdas.resize import imaging
from lambdas.resize.imaging import EncodedImage, plan, probe, resize_and_encode
from lambdas.shared.config import ImageSpec, ResizePolicy, pixel_limit_for_memory
from lambdas.shared.errors import ErrorCode, Rejection
from tests import corpus

pytestmark = pytest.mark.unit

SPEC = ImageSpec()  # 1280x720, pad
SMALL = ImageSpec(width=320, height=180)  # enough to see geometry, cheap to encode


def encode(im: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def decoded(result: EncodedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.png))
    im.load()
    return im


def rejection(data: bytes, spec: ImageSpec = SPEC) -> Rejection:
    with pytest.raises(Rejection) as info:
        resize_and_encode(data, spec)
    return info.value


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixel data fails the test: proves a check is header-only."""

    def forbidden(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{self.format} pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", forbidden)


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_given_the_no_decoding_guard_when_a_valid_image_is_encoded_then_it_trips(fmt: str) -> None:
    # The guard used by the header-only tests below must be able to fail.
    with pytest.raises(AssertionError, match="pixels were decoded"):
        resize_and_encode(encode(corpus._scene(32, 18).convert("P" if fmt == "GIF" else "RGB"), fmt), SPEC)


# ---------------------------------------------------------------------------------------------
# Output contract


def test_given_a_jpeg_when_encoded_then_png_and_base64_describe_the_same_exact_size_image() -> None:
    # Given a 4:3 JPEG
    data = encode(corpus._scene(400, 300), "JPEG")
    # When
    result = resize_and_encode(data, SPEC)
    # Then
    assert result.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert base64.b64decode(result.b64, validate=True) == result.png
    assert (result.width, result.height) == (1280, 720) == decoded(result).size
    assert (result.source_format, result.source_width, result.source_height) == ("JPEG", 400, 300)
    assert result.mode == decoded(result).mode == "RGB"


def test_given_another_target_size_when_encoded_then_that_size_is_produced() -> None:
    spec = ImageSpec(width=500, height=500, policy=ResizePolicy.CROP)
    assert decoded(resize_and_encode(encode(corpus._scene(90, 40)), spec)).size == (500, 500)


# ---------------------------------------------------------------------------------------------
# Geometry


def test_given_a_square_red_image_when_padded_then_it_is_centred_between_black_bars() -> None:
    # Given 400x400 red: fits as 720x720 at x = 280..999
    out = decoded(resize_and_encode(encode(Image.new("RGB", (400, 400), (255, 0, 0))), SPEC))
    # Then bars are black and the content is red
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((279, 360)) == (0, 0, 0)
    assert out.getpixel((280, 360)) == (255, 0, 0)
    assert out.getpixel((999, 0)) == (255, 0, 0)
    assert out.getpixel((1000, 719)) == (0, 0, 0)


def test_given_a_wide_gradient_when_cropped_then_the_centred_part_is_kept() -> None:
    # Given 3000x1000 whose red channel grows left to right (red = x * 255 / 2999)
    source = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").rotate(90).resize((3000, 1000)),
            Image.new("L", (3000, 1000), 0),
            Image.new("L", (3000, 1000), 0),
        ),
    )
    spec = ImageSpec(policy=ResizePolicy.CROP)
    # When
    out = decoded(resize_and_encode(encode(source), spec))
    # Then the visible band is x = 611..2389 of the source (16:9 of a 1000 px tall image)
    left, right = out.getpixel((0, 360)), out.getpixel((1279, 360))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert abs(left[0] - 611 * 255 / 2999) <= 3
    assert abs(right[0] - 2389 * 255 / 2999) <= 3


def test_given_a_tall_image_when_stretched_then_no_bars_remain() -> None:
    out = decoded(
        resize_and_encode(
            encode(Image.new("RGB", (100, 300), (0, 200, 0))), ImageSpec(policy=ResizePolicy.STRETCH)
        )
    )
    assert ImageStat.Stat(out).extrema == [(0, 0), (200, 200), (0, 0)]


@pytest.mark.parametrize(
    ("src", "policy", "expected"),
    [
        ((4000, 3000), ResizePolicy.PAD, imaging.Plan(4000, 3000, 960, 720, (160, 0))),
        ((1920, 1080), ResizePolicy.PAD, imaging.Plan(1920, 1080, 1280, 720, (0, 0))),
        ((4000, 3000), ResizePolicy.CROP, imaging.Plan(4000, 2250, 1280, 720, (0, 0))),
        ((1000, 4000), ResizePolicy.CROP, imaging.Plan(1000, 562.5, 1280, 720, (0, 0))),
        ((1, 5000), ResizePolicy.PAD, imaging.Plan(1, 5000, 1, 720, (639, 0))),
        ((123, 45), ResizePolicy.STRETCH, imaging.Plan(123, 45, 1280, 720, (0, 0))),
    ],
)
def test_given_source_sizes_when_planned_then_geometry_is_as_computed_by_hand(
    src: tuple[int, int], policy: ResizePolicy, expected: imaging.Plan
) -> None:
    assert plan(*src, 1280, 720, policy) == expected


# ---------------------------------------------------------------------------------------------
# EXIF orientation


def _reference(data: bytes, spec: ImageSpec) -> Image.Image:
    """Independent pipeline: Pillow's exif_transpose, then ImageOps.pad / ImageOps.fit."""
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert im is not None
    if spec.policy is ResizePolicy.PAD:
        return ImageOps.pad(im.convert("RGB"), (spec.width, spec.height), Image.Resampling.LANCZOS, color=0)
    return ImageOps.fit(im.convert("RGB"), (spec.width, spec.height), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("policy", [ResizePolicy.PAD, ResizePolicy.CROP])
def test_given_each_orientation_when_encoded_then_output_matches_exif_transpose_reference(
    orientation: int, policy: ResizePolicy
) -> None:
    # Given a lossless 120x60 image with a red top-left marker and an EXIF orientation
    data = encode(corpus._scene(120, 60), "PNG", exif=corpus._exif(orientation))
    spec = ImageSpec(width=320, height=180, policy=policy)
    # When
    result = resize_and_encode(data, spec)
    # Then the upright size is reported and the pixels match Pillow's own transpose + pad/fit
    upright = (60, 120) if orientation >= 5 else (120, 60)
    assert (result.source_width, result.source_height) == upright
    assert mean_abs_diff(decoded(result), _reference(data, spec)) < 4.0


@pytest.mark.parametrize("kind", sorted(corpus.EXIF_TRANSPOSE_RAISES))
def test_given_exif_that_breaks_exif_transpose_when_encoded_then_orientation_is_still_applied(
    kind: str,
) -> None:
    # Given EXIF with orientation 6 that ImageOps.exif_transpose cannot handle
    data = encode(corpus._scene(64, 40), "JPEG", exif=corpus.EXIF_TRANSPOSE_RAISES[kind])
    with pytest.raises(Exception):  # noqa: PT011 - what Pillow raises varies with the blob
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    # When / Then: we read the orientation without re-writing the block, and rotate
    result = resize_and_encode(data, SMALL)
    assert (result.source_width, result.source_height) == (40, 64)


@pytest.mark.parametrize(
    "exif",
    [
        corpus._exif(0),
        corpus._exif(9),
        corpus._exif(65535),
        b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03",  # cut inside the IFD
        b"Exif\x00\x00" + bytes(range(256)),  # garbage
    ],
    ids=["zero", "nine", "65535", "cut", "garbage"],
)
def test_given_absurd_or_unreadable_orientation_when_encoded_then_it_is_ignored(exif: bytes) -> None:
    data = encode(corpus._scene(64, 40), "JPEG", exif=exif)
    result = resize_and_encode(data, SMALL)
    assert (result.source_width, result.source_height) == (64, 40)
    assert probe(data, SMALL) == ("JPEG", 64, 40)


# ---------------------------------------------------------------------------------------------
# Modes and transparency


def test_given_transparent_rgba_when_padded_then_output_is_rgba_with_transparent_bars() -> None:
    data = encode(corpus._with_alpha(corpus._scene(400, 400), transparent=True))
    out = decoded(resize_and_encode(data, SPEC))
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0)) == (0, 0, 0, 0)  # the bars
    # the radial alpha survives: transparent centre, opaque corners of the content
    assert out.getchannel("A").crop((280, 0, 1000, 720)).getextrema() == (0, 255)


def test_given_rgba_that_is_fully_opaque_when_encoded_then_output_is_rgb_with_black_bars() -> None:
    data = encode(corpus._with_alpha(corpus._scene(400, 400), transparent=False))
    out = decoded(resize_and_encode(data, SPEC))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("make", "fmt", "mode"),
    [
        (lambda: corpus._scene(40, 30).convert("P"), "PNG", "RGB"),
        (lambda: corpus._scene(40, 30).convert("1"), "PNG", "RGB"),
        (lambda: corpus._scene(40, 30).convert("L"), "PNG", "RGB"),
        (lambda: corpus._with_alpha(corpus._scene(40, 30), transparent=True).convert("LA"), "PNG", "RGBA"),
        (lambda: corpus._with_alpha(corpus._scene(40, 30), transparent=True).convert("PA"), "TIFF", "RGBA"),
        (lambda: corpus._scene(40, 30).convert("CMYK"), "JPEG", "RGB"),
        (lambda: corpus._scene(40, 30).convert("YCbCr"), "TIFF", "RGB"),
    ],
    ids=["P", "1", "L", "LA", "PA", "CMYK", "YCbCr"],
)
def test_given_each_mode_when_encoded_then_output_is_rgb_or_rgba(
    make: Callable[[], Image.Image], fmt: str, mode: str
) -> None:
    assert resize_and_encode(encode(make(), fmt), SMALL).mode == mode


def test_given_a_palette_with_a_transparent_index_when_encoded_then_it_becomes_alpha() -> None:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (10, 0, 20, 20))  # right half: index 1 (blue)
    spec = ImageSpec(width=40, height=20, policy=ResizePolicy.STRETCH)
    out = decoded(resize_and_encode(encode(im, "PNG", transparency=0), spec))
    assert out.mode == "RGBA"
    assert out.getpixel((2, 10)) == (0, 0, 0, 0)
    assert out.getpixel((37, 10)) == (0, 0, 255, 255)


def test_given_cmyk_cyan_when_encoded_then_it_is_rgb_cyan() -> None:
    out = decoded(resize_and_encode(encode(Image.new("CMYK", (32, 18), (255, 0, 0, 0)), "TIFF"), SMALL))
    assert out.getpixel((160, 90)) == (0, 255, 255)


def test_given_16bit_grey_when_encoded_then_it_is_scaled_not_clipped() -> None:
    # Given 16-bit grey: 0 at the left, 65535 at the right, 32768 in the middle
    im = Image.new("I;16", (30, 10), 32768)
    im.paste(0, (0, 0, 10, 10))
    im.paste(65535, (20, 0, 30, 10))
    out = decoded(
        resize_and_encode(encode(im, "PNG"), ImageSpec(width=300, height=100, policy=ResizePolicy.STRETCH))
    )
    assert out.getpixel((20, 50)) == (0, 0, 0)
    assert out.getpixel((150, 50)) in ((127, 127, 127), (128, 128, 128))
    assert out.getpixel((280, 50)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.0, 0.5, 1.0), (0, 128, 255)),  # float in 0..1: times 255
        ((-10.0, 0.0, 10.0), (0, 128, 255)),  # float outside 0..255: stretched min..max
    ],
)
def test_given_float_samples_when_encoded_then_they_are_mapped_to_8_bit(
    values: tuple[float, float, float], expected: tuple[int, int, int]
) -> None:
    im = Image.new("F", (30, 10))
    for i, v in enumerate(values):
        im.paste(v, (10 * i, 0, 10 * i + 10, 10))
    spec = ImageSpec(width=300, height=100, policy=ResizePolicy.STRETCH)
    out = decoded(resize_and_encode(encode(im, "TIFF"), spec))
    got = [out.getpixel((x, 50)) for x in (20, 150, 280)]
    assert all(
        isinstance(px, tuple) and abs(px[0] - want) <= 1 for px, want in zip(got, expected, strict=True)
    )


def test_given_an_animated_gif_when_encoded_then_the_first_frame_is_used() -> None:
    frames = [Image.new("RGB", (32, 18), colour).convert("P") for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decoded(resize_and_encode(data, SMALL))
    assert out.getpixel((160, 90)) == (255, 0, 0)


# ---------------------------------------------------------------------------------------------
# Speed path keeps the quality


@pytest.mark.parametrize(
    ("size", "policy"),
    [((2560, 1440), ResizePolicy.STRETCH), ((4000, 3000), ResizePolicy.PAD)],
    ids=["exact-2x-stretch", "12mp-pad"],
)
def test_given_a_noisy_jpeg_when_encoded_with_dct_scaling_then_quality_matches_a_full_decode(
    size: tuple[int, int], policy: ResizePolicy
) -> None:
    # Given a textured JPEG with strong pixel-level noise (the hardest case for DCT scaling)
    noise = Image.effect_noise(size, 20).convert("RGB")
    data = encode(ImageChops.add(corpus._scene(*size), noise, scale=1.0, offset=-128), "JPEG", quality=90)
    spec = ImageSpec(policy=policy)
    # When
    fast = decoded(resize_and_encode(data, spec))
    # Then it is within 35 dB PSNR of full decode + LANCZOS of the same geometry
    full = Image.open(io.BytesIO(data))
    if policy is ResizePolicy.STRETCH:
        reference = full.resize((1280, 720), Image.Resampling.LANCZOS)
    else:
        reference = ImageOps.pad(full, (1280, 720), Image.Resampling.LANCZOS, color=0)
    assert psnr(fast, reference) >= 35.0


# ---------------------------------------------------------------------------------------------
# Hostile input: the right code, from the header, without decoding


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (corpus._png_raw(20000, 20000), ErrorCode.TOO_MANY_PIXELS),
        (corpus._png_raw(1, 100_000_000), ErrorCode.TOO_MANY_PIXELS),
        (corpus._jpeg_sof_bomb(65500, 65500), ErrorCode.TOO_MANY_PIXELS),
        (corpus._gif_header_bomb(65535, 65535), ErrorCode.TOO_MANY_PIXELS),
        (corpus._bmp_header_bomb(50000, 50000), ErrorCode.TOO_MANY_PIXELS),
        (corpus._tiff_header_bomb(100_000, 100_000), ErrorCode.TOO_MANY_PIXELS),
        (corpus._webp_vp8x_bomb(16383, 16383), ErrorCode.TOO_MANY_PIXELS),
        (corpus._png_raw(0, 100), ErrorCode.INVALID_DIMENSIONS),
        (corpus._scan_flood(100), ErrorCode.CORRUPT_IMAGE),
        (corpus._segment_flood(5000), ErrorCode.CORRUPT_IMAGE),
        (corpus._chunk_flood(100_001), ErrorCode.CORRUPT_IMAGE),
    ],
    ids=[
        "png-400MP",
        "png-1x1e8",
        "jpeg-65500",
        "gif-65535",
        "bmp-50000",
        "tiff-1e5",
        "webp-16383",
        "zero",
        "scans",
        "segments",
        "chunks",
    ],
)
def test_given_a_bomb_header_when_encoded_then_rejected_before_any_decoding(
    data: bytes, code: ErrorCode
) -> None:
    assert rejection(data, ImageSpec(max_pixels=corpus.DEFAULT_MAX_PIXELS)).code is code


def test_given_a_bomb_when_rejected_then_the_message_names_the_size_and_the_limit() -> None:
    spec = ImageSpec(max_pixels=pixel_limit_for_memory(1769))
    message = rejection(corpus._png_raw(20000, 20000), spec).message
    assert "20,000x20,000 = 400.0 MP" in message
    assert "139.1 MP for 1,769 MB" in message


def test_given_pixels_between_the_limit_and_twice_it_then_pillow_bomb_warning_is_an_error() -> None:
    # Given a limit of 1,000 pixels and a 40x30 (1,200 px) image: Pillow only *warns* here
    data = encode(Image.new("RGB", (40, 30)))
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        found = rejection(data, ImageSpec(max_pixels=1000))
    # Then the warning became a typed rejection, nothing leaked, the global filters are untouched
    assert found.code is ErrorCode.TOO_MANY_PIXELS
    assert found.error_type == "DecompressionBombWarning"
    assert seen == []
    assert warnings.filters == before


def test_given_the_module_when_imported_then_truncated_images_are_never_tolerated() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    found = rejection(encode(corpus._scene(300, 200), "JPEG")[:3000])
    assert found.code is ErrorCode.CORRUPT_IMAGE
    assert "truncated" in found.message


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", ErrorCode.EMPTY_FILE, "empty"),
        (b"%PDF-1.7\n...", ErrorCode.UNSUPPORTED_FORMAT, "PDF"),
        (b"<html><body>hi</body></html>", ErrorCode.UNSUPPORTED_FORMAT, "HTML"),
        (encode(corpus._scene(16, 16), "JPEG2000"), ErrorCode.UNSUPPORTED_FORMAT, "JPEG 2000"),
        (encode(corpus._scene(16, 16), "AVIF"), ErrorCode.UNSUPPORTED_FORMAT, "AVIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ErrorCode.CORRUPT_IMAGE, "PNG"),
    ],
    ids=["empty", "pdf", "html", "jp2", "avif", "png-junk"],
)
def test_given_non_images_when_encoded_then_the_message_says_what_the_file_is(
    data: bytes, code: ErrorCode, words: str
) -> None:
    found = rejection(data)
    assert found.code is code
    assert words in found.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_given_each_accepted_format_when_probed_then_format_and_size_come_from_the_header(fmt: str) -> None:
    data = encode(corpus._scene(48, 20).convert("P" if fmt == "GIF" else "RGB"), fmt)
    assert probe(data, SPEC) == (fmt, 48, 20)


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_given_a_rotated_image_when_probed_then_upright_size_is_returned_without_decoding(fmt: str) -> None:
    assert probe(encode(corpus._scene(64, 40), fmt, exif=corpus._exif(6)), SPEC) == (fmt, 40, 64)


@pytest.mark.usefixtures("no_decoding")
def test_given_a_bomb_when_probed_then_it_is_rejected() -> None:
    with pytest.raises(Rejection) as info:
        probe(corpus._png_raw(20000, 20000), SPEC)
    assert info.value.code is ErrorCode.TOO_MANY_PIXELS
