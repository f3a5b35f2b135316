"""The report's image files: a small preview, the original, and the exact PNG the model was sent.

Written under ``<page>_files/`` beside the page (see ``imgcap.report``), one name per entry derived
from its key, so the page refers to them by relative URL and never inlines image data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

THUMB_MAX_SIDE = 360
THUMB_MAX_SOURCE_PIXELS = 60_000_000  # never decode more than this for a preview
THUMB_MAX_SOURCE_BYTES = 40 * 1024 * 1024
ORIGINAL_COPY_MAX_BYTES = 15 * 1024 * 1024  # larger (or browser-unfriendly) uploads get a scaled copy
ORIGINAL_PREVIEW_MAX_SIDE = 1600
_BROWSER_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ASSET_DIRS = ("thumbs", "original", "model")


@dataclass(frozen=True, slots=True)
class Previews:
    """Where one entry's image files are, relative to the page (None: there is none)."""

    thumb: str | None = None
    thumb_size: tuple[int, int] | None = None
    original: str | None = None
    original_is_exact: bool = False
    source_size: tuple[int, int] | None = None
    model: str | None = None


def asset_dir_name(page: Path) -> str:
    return f"{page.stem}_files"


def encoded_png(text: bytes | str | None) -> bytes | None:
    """The PNG inside a ``base64_images/<path>.txt`` object, or None when it is not one."""
    if not text:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_PNG_MAGIC) else None


def _open_checked(data: bytes) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if width < 1 or height < 1 or width * height > THUMB_MAX_SOURCE_PIXELS:
        img.close()
        raise ValueError("not a safe size for a preview")
    return img


def _orientation(img: Any) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF: treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def _flat_rgb(img: Any, orientation: int) -> Any:
    from PIL import Image, ImageOps

    img.seek(0)
    frame = img
    if orientation != 1:
        try:
            frame = ImageOps.exif_transpose(img)
        except Exception:  # malformed EXIF: show the image unrotated
            frame = img
    if frame.mode in ("RGBA", "LA", "PA", "P"):
        rgba = frame.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return frame.convert("RGB") if frame.mode != "RGB" else frame


def _jpeg(frame: Any, max_side: int) -> tuple[bytes, tuple[int, int]]:
    from PIL import Image

    if max(frame.size) > max_side:
        width, height = frame.size
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=80)
    return out.getvalue(), frame.size


def thumbnail_jpeg(data: bytes, max_side: int = THUMB_MAX_SIDE) -> bytes | None:
    """A small RGB JPEG preview, or None when the bytes are not a (safely) decodable image."""
    made = _previews_of(data, max_side=max_side, want_original=False)
    return made[0] if made else None


def _previews_of(
    data: bytes, *, max_side: int = THUMB_MAX_SIDE, want_original: bool = True
) -> tuple[bytes, tuple[int, int], tuple[int, int], str | None, bytes | None] | None:
    """(thumb, thumb size, source size, browser extension or None, scaled original or None)."""
    if not data or len(data) > THUMB_MAX_SOURCE_BYTES:
        return None
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd EXIF and friends: a preview does not care
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_checked(data) as img:
                orientation = _orientation(img)
                width, height = img.size
                size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
                fmt = img.format or ""
                ext = _BROWSER_FORMATS.get(fmt) if len(data) <= ORIGINAL_COPY_MAX_BYTES else None
                needs_scaled = want_original and ext is None
                if fmt == "JPEG" and not needs_scaled:  # DCT scaling: decode no more than needed
                    img.draft("RGB", (max_side, max_side))
                frame = _flat_rgb(img, orientation)
                thumb, thumb_size = _jpeg(frame, max_side)
                scaled = _jpeg(frame, ORIGINAL_PREVIEW_MAX_SIDE)[0] if needs_scaled else None
                return thumb, thumb_size, size, ext, scaled
    except Exception:  # a preview is optional: unreadable, truncated or hostile input gets none
        return None


def _asset_id(source_key: str) -> str:
    return hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class ReportAssets:
    """Writes each entry's image files under ``<page>_files/``.

    Call ``prepare`` once, then ``write`` from any number of threads (each entry has its own names).
    """

    def __init__(self, page: Path) -> None:
        self.page = page
        self.name = asset_dir_name(page)
        self.root = page.parent / self.name

    def prepare(self) -> None:
        """Create the folders, dropping the files an earlier report of the same name left there."""
        for sub in ASSET_DIRS:
            shutil.rmtree(self.root / sub, ignore_errors=True)
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _put(self, sub: str, name: str, data: bytes) -> str:
        (self.root / sub / name).write_bytes(data)
        return f"{self.name}/{sub}/{name}"

    def write(self, source_key: str, image: bytes | None, model_png: bytes | None) -> Previews:
        ident = _asset_id(source_key)
        previews = Previews()
        made = _previews_of(image) if image else None
        if made is not None:
            thumb, thumb_size, source_size, ext, scaled = made
            original: str | None
            if ext is not None and image is not None:
                original, exact = self._put("original", f"{ident}.{ext}", image), True
            else:
                original = self._put("original", f"{ident}.jpg", scaled) if scaled else None
                exact = False
            previews = Previews(
                thumb=self._put("thumbs", f"{ident}.jpg", thumb),
                thumb_size=thumb_size,
                original=original,
                original_is_exact=exact,
                source_size=source_size,
            )
        if model_png is not None and model_png.startswith(_PNG_MAGIC):
            model = self._put("model", f"{ident}.png", model_png)
            if previews.thumb is None:  # no readable upload: preview what the model saw
                small = _previews_of(model_png, want_original=False)
                if small is not None:
                    previews = replace(
                        previews, thumb=self._put("thumbs", f"{ident}.jpg", small[0]), thumb_size=small[1]
                    )
            previews = replace(previews, model=model)
        return previews
