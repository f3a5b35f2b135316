"""A self-contained HTML gallery of a run: each image beside its caption, failures with reasons.

Used by ``imgcap local`` (OUT/report.html) and by the operator CLI's ``imgcap report``. The page
works offline: thumbnails are small JPEGs embedded as data URIs, styles are inline, there is no
script. Every text that came from a file name, a caption or an error is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

THUMB_MAX_SIDE = 360
THUMB_MAX_SOURCE_PIXELS = 60_000_000  # never decode more than this for a preview
THUMB_MAX_SOURCE_BYTES = 40 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReportEntry:
    source_key: str
    image_bytes: bytes | None
    caption: dict[str, Any] | None  # the caption record (captions/<path>.json)
    error: dict[str, Any] | None  # the error record (errors/<path>.json) or a runtime-made reason


def thumbnail_jpeg(data: bytes, max_side: int = THUMB_MAX_SIDE) -> bytes | None:
    """A small RGB JPEG preview, or None when the bytes are not a (safely) decodable image."""
    if not data or len(data) > THUMB_MAX_SOURCE_BYTES:
        return None
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd EXIF and friends: a preview does not care
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width < 1 or height < 1 or width * height > THUMB_MAX_SOURCE_PIXELS:
                    return None
                if img.format == "JPEG":
                    img.draft("RGB", (max_side * 2, max_side * 2))
                img.seek(0)
                try:
                    frame = ImageOps.exif_transpose(img)
                except Exception:  # malformed EXIF: show the image unrotated
                    frame = img.copy()
                if frame.mode in ("RGBA", "LA", "PA", "P"):
                    rgba = frame.convert("RGBA")
                    frame = Image.new("RGB", rgba.size, (255, 255, 255))
                    frame.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    frame = frame.convert("RGB")
                frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                frame.save(out, "JPEG", quality=80, optimize=True)
                return out.getvalue()
    except Exception:  # a preview is optional: unreadable, truncated or hostile input gets none
        return None


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _img_tag(entry: ReportEntry) -> str:
    thumb = thumbnail_jpeg(entry.image_bytes) if entry.image_bytes else None
    if thumb is None:
        return '<div class="noimg">no preview</div>'
    uri = "data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii")
    return f'<img src="{uri}" alt="{_e(entry.source_key)}" loading="lazy">'


def _caption_card(entry: ReportEntry) -> str:
    record = entry.caption or {}
    usage = record.get("usage") or {}
    source = record.get("source") or {}
    facts = [
        ("model", record.get("model_id")),
        ("source size", f"{source.get('width')}x{source.get('height')}" if source.get("width") else None),
        ("tokens in/out", f"{usage.get('input_tokens')}/{usage.get('output_tokens')}" if usage else None),
        ("latency", f"{record.get('latency_ms')} ms" if record.get("latency_ms") is not None else None),
        ("stop", record.get("stop_reason")),
        ("captioned", record.get("captioned_at")),
    ]
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, ""))
    truncated = record.get("truncated") is True
    badge = (
        '<p class="truncated">truncated: the model stopped at maxTokens (raise max-tokens in SSM)</p>'
        if truncated
        else ""
    )
    classes = "card truncated-card" if truncated else "card"
    return (
        f'<article class="{classes}" id="{_e(entry.source_key)}">'
        f'<div class="pic">{_img_tag(entry)}</div>'
        f'<div class="text"><h3>{_e(entry.source_key)}</h3>{badge}'
        f'<p class="caption">{_e(record.get("caption"))}</p><dl>{meta}</dl></div></article>'
    )


def _failure_row(entry: ReportEntry) -> str:
    error = entry.error or {}
    return (
        f'<tr id="{_e(entry.source_key)}"><td class="thumb">{_img_tag(entry)}</td>'
        f"<td><code>{_e(entry.source_key)}</code></td><td>{_e(error.get('stage'))}</td>"
        f"<td><code>{_e(error.get('error_code'))}</code></td><td>{_e(error.get('message'))}</td></tr>"
    )


_SUMMARY_TILES = (
    ("images", "images"),
    ("captioned", "captioned"),
    ("truncated", "truncated"),
    ("rejected", "rejected"),
    ("dead_lettered", "dead-lettered"),
    ("resize_failed", "resize failed"),
    ("not_final", "not final"),
    ("lost", "lost"),
    ("model_calls", "model calls"),
    ("throttled", "throttled"),
    ("duplicates_avoided", "duplicates avoided"),
    ("captions_per_minute_run", "captions / min (run)"),
    ("captions_per_minute_steady", "captions / min (steady)"),
    ("upload_to_caption_p50_s", "p50 upload→caption s"),
    ("upload_to_caption_p95_s", "p95 upload→caption s"),
    ("elapsed_s", "elapsed s"),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d232b}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#b9c6d3;font-size:13px}main{padding:20px 28px;max-width:1400px}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 22px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;min-width:110px;box-shadow:0 1px 2px #0002}
.tile b{display:block;font-size:20px}.tile span{font-size:12px;color:#5b6673}
h2{font-size:18px;margin:26px 0 12px}
.card{display:flex;gap:18px;background:#fff;border-radius:8px;padding:14px;margin:0 0 14px;
box-shadow:0 1px 2px #0002}.pic{flex:0 0 360px;display:flex;align-items:center;justify-content:center;
background:#eceff3;border-radius:6px;min-height:120px}.pic img{max-width:360px;max-height:360px;display:block}
.text{flex:1;min-width:0}.text h3{margin:0 0 8px;font-size:14px;font-family:ui-monospace,monospace;
word-break:break-all}.caption{font-size:15px;line-height:1.5;margin:0 0 10px}
.truncated{color:#8a4b00;background:#fff3e0;border-radius:4px;padding:2px 6px;font-size:13px;margin:0 0 6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:12px;color:#5b6673;margin:0}
dt{font-weight:600}dd{margin:0}table{border-collapse:collapse;width:100%;background:#fff;border-radius:8px}
td,th{padding:8px 10px;border-bottom:1px solid #e3e7ec;text-align:left;font-size:13px;vertical-align:top}
td.thumb img{max-width:120px;max-height:90px}.noimg{color:#8a94a0;font-size:12px;padding:8px}
pre{background:#fff;padding:12px;border-radius:8px;overflow:auto;font-size:12px}
@media (max-width:800px){.card{flex-direction:column}.pic{flex-basis:auto}}
"""


def _tiles(summary: Mapping[str, Any]) -> str:
    tiles = []
    for key, label in _SUMMARY_TILES:
        if key in summary and summary[key] is not None:
            value = summary[key]
            shown = (
                f"{value:,.1f}"
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else value
            )
            tiles.append(f'<div class="tile"><b>{_e(shown)}</b><span>{_e(label)}</span></div>')
    return f'<div class="tiles">{"".join(tiles)}</div>' if tiles else ""


def render_report(
    entries: Sequence[ReportEntry], *, title: str, summary: Mapping[str, Any] | None = None
) -> str:
    """The page as a string (entries sorted by key; captions first, then failures, then the rest)."""
    ordered = sorted(entries, key=lambda e: e.source_key)
    captioned = [e for e in ordered if e.caption is not None]
    failed = [e for e in ordered if e.caption is None and e.error is not None]
    missing = [e for e in ordered if e.caption is None and e.error is None]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>{len(ordered)} file(s) · generated {_e(generated)}</p></header>",
        "<main>",
        _tiles(summary or {}),
        f'<h2 id="captions">Captions ({len(captioned)})</h2>',
        *(_caption_card(e) for e in captioned),
    ]
    if not captioned:
        parts.append("<p>No captions.</p>")
    parts.append(f'<h2 id="failures">Rejected or failed ({len(failed)})</h2>')
    if failed:
        parts.append(
            "<table><thead><tr><th>preview</th><th>file</th><th>stage</th><th>code</th><th>reason</th>"
            "</tr></thead><tbody>"
        )
        parts.extend(_failure_row(e) for e in failed)
        parts.append("</tbody></table>")
    else:
        parts.append("<p>None.</p>")
    if missing:
        parts.append(f'<h2 id="missing">No result ({len(missing)})</h2><ul>')
        parts.extend(f"<li><code>{_e(e.source_key)}</code></li>" for e in missing)
        parts.append("</ul>")
    if summary:
        text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
        parts.append(
            f"<h2>Summary</h2><details><summary>summary.json</summary><pre>{_e(text)}</pre></details>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(
    out: Path,
    entries: Sequence[ReportEntry],
    *,
    title: str,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write the report; ``out`` is the .html file, or a directory that gets ``report.html``."""
    path = out if out.suffix.lower() in (".html", ".htm") else out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(entries, title=title, summary=summary), encoding="utf-8")
    return path
