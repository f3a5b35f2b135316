"""A small, varied sample set for ``make demo``, drawn with Pillow (no downloads, deterministic).

``python -m imgcap.samples --out DIR`` writes ten scenes in different sizes, orientations, modes
and formats (JPEG, PNG, WebP, GIF, RGBA, greyscale, palette, CMYK, EXIF-rotated), names with a
space and a '+', a sub-folder, plus one corrupt JPEG and one text file that is not an image: those
two must end as error records, not crash anything.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # relative path below the output folder
    about: str
    build: Callable[[], bytes]
    expect_caption: bool = True


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def _vertical_gradient(
    size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    w, h = size
    column = Image.new("RGB", (1, h))
    for y in range(h):
        t = y / max(1, h - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return column.resize((w, h))


def beach_day() -> bytes:
    """Landscape 1600x1000 JPEG: sky, sun, sea, sand."""
    w, h = 1600, 1000
    im = _vertical_gradient((w, h), (90, 160, 230), (190, 225, 250))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 560, w, 760), fill=(20, 110, 170))
    for i in range(12):
        y = 580 + i * 15
        d.line((0, y, w, y + 6), fill=(60, 150, 200), width=2)
    d.polygon([(0, 740), (w, 700), (w, h), (0, h)], fill=(225, 200, 150))
    d.ellipse((1220, 90, 1400, 270), fill=(255, 230, 90))
    d.rectangle((300, 780, 318, 930), fill=(120, 80, 40))
    d.pieslice((180, 700, 440, 880), 180, 360, fill=(220, 40, 50))
    return _save(im, "JPEG", quality=88)


def city_at_night() -> bytes:
    """Landscape 1280x960 PNG: dark sky, skyline with lit windows, a moon."""
    w, h = 1280, 960
    rnd = random.Random(7)  # noqa: S311 - drawing, not cryptography
    im = _vertical_gradient((w, h), (8, 10, 35), (25, 30, 70))
    d = ImageDraw.Draw(im)
    d.ellipse((1000, 80, 1110, 190), fill=(240, 240, 210))
    x = 0
    while x < w:
        bw, bh = rnd.randint(70, 160), rnd.randint(250, 700)
        d.rectangle((x, h - bh, x + bw, h), fill=(20, 20, 28))
        for wy in range(h - bh + 15, h - 10, 28):
            for wx in range(x + 10, x + bw - 12, 22):
                if rnd.random() < 0.45:
                    d.rectangle((wx, wy, wx + 10, wy + 14), fill=(250, 210, 110))
        x += bw + rnd.randint(4, 20)
    return _save(im, "PNG")


def lighthouse_portrait() -> bytes:
    """Portrait 720x1280 JPEG: a striped lighthouse on a rock under a pale sky."""
    w, h = 720, 1280
    im = _vertical_gradient((w, h), (170, 205, 235), (235, 240, 245))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 1050, w, h), fill=(40, 90, 140))
    d.polygon([(120, 1100), (600, 1100), (520, 960), (200, 960)], fill=(90, 85, 80))
    for i, y in enumerate(range(380, 960, 58)):
        colour = (210, 30, 40) if i % 2 == 0 else (245, 245, 245)
        inset = (y - 380) // 25
        d.rectangle((290 - inset, y, 430 + inset, y + 58), fill=colour)
    d.rectangle((280, 300, 440, 380), fill=(250, 220, 90))
    d.polygon([(270, 300), (450, 300), (360, 220)], fill=(60, 60, 60))
    return _save(im, "JPEG", quality=90)


def rotated_by_exif() -> bytes:
    """A 1200x800 JPEG stored sideways with EXIF Orientation=6: it displays as 800x1200 portrait."""
    im = Image.new("RGB", (800, 1200), (235, 235, 225))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 800, 300), fill=(30, 120, 60))
    d.ellipse((250, 500, 550, 800), fill=(240, 150, 30))
    d.rectangle((380, 800, 420, 1100), fill=(90, 60, 30))
    stored = im.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, "JPEG", quality=88, exif=exif.tobytes())


def forest_and_lake() -> bytes:
    """Square 1024x1024 WebP: mountains, pine trees, a lake."""
    w = h = 1024
    rnd = random.Random(11)  # noqa: S311 - drawing, not cryptography
    im = _vertical_gradient((w, h), (150, 200, 235), (220, 235, 240))
    d = ImageDraw.Draw(im)
    d.polygon(
        [(0, 520), (260, 240), (520, 500), (760, 200), (w, 480), (w, 620), (0, 620)], fill=(110, 120, 140)
    )
    d.rectangle((0, 720, w, h), fill=(50, 110, 150))
    d.rectangle((0, 600, w, 720), fill=(60, 120, 50))
    for _ in range(40):
        x, y = rnd.randint(0, w), rnd.randint(560, 700)
        s = rnd.randint(25, 60)
        d.polygon([(x, y - 2 * s), (x - s // 2, y), (x + s // 2, y)], fill=(20, 70 + rnd.randint(0, 30), 35))
    return _save(im, "WEBP", quality=85)


def transparent_logo() -> bytes:
    """RGBA 800x600 PNG: a badge on a fully transparent background."""
    im = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse((200, 100, 600, 500), fill=(120, 50, 160, 255))
    d.ellipse((260, 160, 540, 440), fill=(245, 245, 245, 255))
    d.polygon([(400, 190), (470, 400), (330, 400)], fill=(240, 140, 30, 255))
    return _save(im, "PNG")


def sunset_animation() -> bytes:
    """Palette GIF 640x360, three frames (only the first is captioned)."""
    frames = []
    for i in range(3):
        im = _vertical_gradient((640, 360), (250, 120 - 20 * i, 40), (120, 30, 80))
        d = ImageDraw.Draw(im)
        d.ellipse((260, 140 + 30 * i, 380, 260 + 30 * i), fill=(255, 215, 80))
        d.rectangle((0, 280, 640, 360), fill=(30, 20, 40))
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return out.getvalue()


def greyscale_stairs() -> bytes:
    """Greyscale (mode L) 900x1200 JPEG: a spiral staircase drawn in grey tones."""
    im = Image.new("L", (900, 1200), 200)
    d = ImageDraw.Draw(im)
    cx, cy = 450, 600
    for i in range(60):
        a = i * 0.35
        r = 40 + i * 6
        x, y = cx + r * math.cos(a), cy + r * math.sin(a)
        d.ellipse((x - 18, y - 18, x + 18, y + 18), fill=max(10, 230 - i * 3))
    return _save(im, "JPEG", quality=85)


def tiny_icon() -> bytes:
    """A 48x48 palette PNG icon: upscaled a lot."""
    im = Image.new("P", (48, 48), 0)
    im.putpalette([255, 255, 255, 30, 140, 60, 250, 210, 40] + [0] * (256 * 3 - 9))
    d = ImageDraw.Draw(im)
    d.ellipse((6, 6, 42, 42), fill=1)
    d.rectangle((20, 14, 28, 34), fill=2)
    return _save(im, "PNG")


def cmyk_poster() -> bytes:
    """CMYK 1000x1400 JPEG: a bold two-tone poster (print colour space)."""
    im = Image.new("RGB", (1000, 1400), (245, 235, 210))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 1000, 500), fill=(20, 40, 110))
    d.ellipse((300, 600, 700, 1000), fill=(220, 40, 40))
    d.rectangle((100, 1150, 900, 1250), fill=(20, 40, 110))
    return _save(im.convert("CMYK"), "JPEG", quality=88)


def corrupt_jpeg() -> bytes:
    """Starts like a JPEG, then garbage: must become a corrupt_image error record."""
    good = _save(Image.new("RGB", (640, 480), (120, 60, 30)), "JPEG")
    rnd = random.Random(3)  # noqa: S311 - drawing, not cryptography
    return good[:200] + bytes(rnd.randrange(256) for _ in range(600))


def not_an_image() -> bytes:
    return b"Shopping list:\n- film\n- batteries\nThis is a text file, not an image.\n"


SAMPLES: tuple[Sample, ...] = (
    Sample("trips/beach day.jpg", "landscape JPEG in a sub-folder, name with a space", beach_day),
    Sample("city at night.png", "dark landscape PNG", city_at_night),
    Sample("lighthouse-portrait.jpg", "portrait JPEG", lighthouse_portrait),
    Sample("rotated by exif.jpg", "EXIF orientation 6 (displays as portrait)", rotated_by_exif),
    Sample("forest+lake.webp", "square WebP, name with a '+'", forest_and_lake),
    Sample("logo transparent.png", "RGBA PNG with a transparent background", transparent_logo),
    Sample("sunset.gif", "animated palette GIF", sunset_animation),
    Sample("grey stairs.jpg", "greyscale (L) JPEG", greyscale_stairs),
    Sample("tiny icon.png", "48x48 palette PNG", tiny_icon),
    Sample("cmyk poster.jpg", "CMYK JPEG", cmyk_poster),
    Sample("broken.jpg", "corrupt JPEG: must be rejected", corrupt_jpeg, expect_caption=False),
    Sample("notes.txt", "a text file: must be rejected", not_an_image, expect_caption=False),
)


def write_samples(out: Path, samples: Sequence[Sample] = SAMPLES) -> list[Path]:
    """Write the samples below ``out``; returns the paths written."""
    written = []
    for sample in samples:
        path = out / sample.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sample.build())
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgcap.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the sample images to")
    args = parser.parse_args(argv)
    paths = write_samples(args.out)
    for sample, path in zip(SAMPLES, paths, strict=True):
        print(f"{path}  ({sample.about})")
    print(f"{len(paths)} sample files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
