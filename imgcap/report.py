"""An HTML gallery of a run: every image beside its caption, every failure with its reason.

Used by ``imgcap local`` (OUT/report.html) and by the operator CLI's ``imgcap report``. The page
shows every entry it is given; when the caller chose a subset it says "N of M" in the header.
Counts in the header are computed from the entries, the same way the sections are, so they agree.

The page scales to thousands of entries: images are small separate files in ``<name>_files/``
beside the page (never inlined), and the entries are one JSON block from which the page's script
builds cards a batch at a time, as a section's end scrolls into view; search and filters run over
that data. Opening 5,000 entries costs about what opening a few hundred does
(``make bench-report`` measures it in headless Chromium). The files:

- ``thumbs/<id>.jpg``: a preview of at most 360 px, lazy-loaded in the grid;
- ``original/<id>.<ext>``: the upload itself when a browser can show it (else a scaled JPEG);
- ``model/<id>.png``: the exact PNG the model was sent (1280x720 by default, from
  ``base64_images/``), so a ``crop`` or ``stretch`` policy can be checked against the original.

The page works offline (inline styles and plain JavaScript, nothing fetched from elsewhere; without
JavaScript a plain table lists every entry). Every text from a file name, caption or record is
escaped: HTML-escaped in markup, and the script sets it with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imgcap.report_files import (
    THUMB_MAX_SOURCE_BYTES,
    Previews,
    ReportAssets,
    encoded_png,
    thumbnail_jpeg,
)
from imgcap.report_static import CSS, SCRIPT

__all__ = [
    "Previews",
    "ReportAssets",
    "ReportEntry",
    "ReportPathError",
    "encoded_png",
    "render_report",
    "report_path",
    "thumbnail_jpeg",
    "write_report",
]


class ReportPathError(ValueError):
    """``--out`` cannot hold the report; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class ReportEntry:
    source_key: str
    image_bytes: bytes | None  # the upload (or None); read once to make the preview files
    caption: dict[str, Any] | None  # the caption record (captions/<path>.json)
    error: dict[str, Any] | None  # the error record (errors/<path>.json) or a runtime-made reason
    image_path: Path | None = None  # alternatively the upload on disk, read only while writing
    model_png: bytes | None = None  # the encoded image the model saw, when known
    previews: Previews | None = None  # files already written (see ReportAssets)

    @property
    def status(self) -> str:
        if self.caption is not None:
            return "captioned"
        return "failed" if self.error is not None else "pending"

    @property
    def truncated(self) -> bool:
        return self.caption is not None and self.caption.get("truncated") is True


# -- paths -------------------------------------------------------------------------------------------
def report_path(out: Path) -> Path:
    """The .html file for ``out`` (a .html path, or a directory that gets report.html), checked.

    Raises ReportPathError when the page could not be written there: an existing file that is not
    HTML (``--out README.md``), a directory in place of the file, a parent that is a file or is
    not writable.
    """
    is_html = out.suffix.lower() in (".html", ".htm")
    if is_html and out.is_dir():
        raise ReportPathError(f"{out} is a directory; pass a file name ending in .html")
    if not is_html and out.exists() and not out.is_dir():
        raise ReportPathError(
            f"{out} is an existing file that is not .html; pass a path ending in .html or a directory"
        )
    path = out if is_html else out / "report.html"
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReportPathError(f"cannot create {parent}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportPathError(f"cannot write under {existing}: permission denied")
    if path.exists() and not os.access(path, os.W_OK):
        raise ReportPathError(f"cannot overwrite {path}: permission denied")
    return path


def build_previews(
    entries: Sequence[ReportEntry],
    assets: ReportAssets,
    *,
    model_png_for: Callable[[str], bytes | None] | None = None,
    workers: int = 4,
) -> list[ReportEntry]:
    """Entries with their image files written and their bytes dropped (a few threads at a time)."""

    def one(entry: ReportEntry) -> ReportEntry:
        if entry.previews is not None:
            return entry
        data = entry.image_bytes
        if data is None and entry.image_path is not None:
            try:
                if entry.image_path.stat().st_size <= THUMB_MAX_SOURCE_BYTES:
                    data = entry.image_path.read_bytes()
            except OSError:
                data = None
        model = entry.model_png
        if model is None and model_png_for is not None:
            model = model_png_for(entry.source_key)
        previews = assets.write(entry.source_key, data, model)
        return replace(entry, image_bytes=None, model_png=None, previews=previews)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, entries))


# -- the page ----------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def folder_of(source_key: str) -> str:
    """The folder below ``images/`` ("" for the top level)."""
    rel = source_key.split("/", 1)[1] if source_key.startswith("images/") else source_key
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def tags_of(entry: ReportEntry) -> list[str]:
    raw = (entry.caption or {}).get("tags")
    if not isinstance(raw, list):
        return []
    seen: dict[str, None] = {}
    for tag in raw:
        if isinstance(tag, str | int | float) and str(tag).strip():
            seen.setdefault(" ".join(str(tag).split()), None)
    return list(seen)


def _facts(record: Mapping[str, Any]) -> list[str]:
    usage = record.get("usage") or {}
    source = record.get("source") or {}
    resize = record.get("resize") if isinstance(record.get("resize"), dict) else None
    facts = [
        record.get("model_id"),
        f"source {source.get('width')}x{source.get('height')}" if source.get("width") else None,
        f"resize {resize.get('policy')} {resize.get('width')}x{resize.get('height')}" if resize else None,
        f"{usage.get('input_tokens')} in / {usage.get('output_tokens')} out tokens" if usage else None,
        f"{record.get('latency_ms')} ms" if record.get("latency_ms") is not None else None,
        f"stop {record.get('stop_reason')}" if record.get("stop_reason") else None,
        record.get("captioned_at"),
    ]
    return [str(f) for f in facts if f not in (None, "")]


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _preview_data(entry: ReportEntry) -> dict[str, Any]:
    """Where an entry's image files are, and what each one is."""
    row: dict[str, Any] = {}
    p = entry.previews
    if p is None:
        return row
    if p.thumb is not None:
        row["th"] = p.thumb
        if p.thumb_size:
            row["tw"], row["thh"] = p.thumb_size
    if p.original is not None:
        size = f" {p.source_size[0]}x{p.source_size[1]}" if p.source_size else ""
        row["o"] = p.original
        row["ol"] = ("original" if p.original_is_exact else "original (scaled copy)") + size
    if p.model is not None:
        row["m"] = p.model
        resize = (entry.caption or {}).get("resize")
        if isinstance(resize, dict) and resize.get("policy"):
            row["ml"] = (
                f"sent to the model: {resize.get('policy')} to "
                f"{resize.get('width')}x{resize.get('height')} (PNG as encoded)"
            )
    return row


def entry_data(entry: ReportEntry) -> dict[str, Any]:
    """One entry as the page's script reads it (short names: 5,000 of these are embedded)."""
    row: dict[str, Any] = {"k": entry.source_key, "s": entry.status, "f": folder_of(entry.source_key)}
    if entry.caption is not None:
        record = entry.caption
        row["cap"] = _text(record.get("caption")) or ""
        alt = record.get("alt_text")
        if isinstance(alt, str) and alt.strip():
            row["alt"] = alt
        tags = tags_of(entry)
        if tags:
            row["g"] = tags
        if entry.truncated:
            row["t"] = 1
        facts = _facts(record)
        if facts:
            row["facts"] = facts
    elif entry.error is not None:
        error = entry.error
        row["c"] = _text(error.get("error_code")) or ""
        stage = _text(error.get("stage"))
        if stage and stage != "-":
            row["stage"] = stage
        row["msg"] = _text(error.get("message")) or ""
    row.update(_preview_data(entry))
    return row


def _script_json(value: Any) -> str:
    """JSON that is safe inside <script type="application/json"> (no "</script>", no HTML)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _plain_list(entries: Sequence[ReportEntry]) -> str:
    """Every entry as one table row, for a browser without JavaScript (inert text otherwise)."""
    rows = []
    for entry in entries:
        what: Any
        text: Any
        if entry.caption is not None:
            what, text = "captioned", entry.caption.get("caption")
        elif entry.error is not None:
            what, text = entry.error.get("error_code"), entry.error.get("message")
        else:
            what, text = "no result", ""
        link = entry.previews.original if entry.previews and entry.previews.original else None
        key = f'<a href="{_e(link)}">{_e(entry.source_key)}</a>' if link else _e(entry.source_key)
        rows.append(f"<tr><td><code>{key}</code></td><td>{_e(what)}</td><td>{_e(text)}</td></tr>")
    return (
        "<noscript><p>Search, filters and thumbnails need JavaScript; every entry is listed here."
        "</p><table><thead><tr><th>file</th><th>result</th><th>caption or reason</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></noscript>"
    )


@dataclass(frozen=True, slots=True)
class Counts:
    entries: int
    captioned: int
    truncated: int
    failed: int
    pending: int
    codes: Counter[str]
    folders: Counter[str]
    tags: Counter[str]


def count_entries(entries: Iterable[ReportEntry]) -> Counts:
    """The figures of the header, from the same entries (and rules) as the sections."""
    status: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    folders: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    truncated = 0
    for entry in entries:
        status[entry.status] += 1
        truncated += entry.truncated
        if entry.status == "failed":
            codes[str((entry.error or {}).get("error_code") or "")] += 1
        folder = folder_of(entry.source_key)
        while True:  # a folder counts everything below it, as its filter does
            folders[folder] += 1
            if not folder:
                break
            folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
        tags.update(tags_of(entry))
    return Counts(
        entries=sum(status.values()),
        captioned=status["captioned"],
        truncated=truncated,
        failed=status["failed"],
        pending=status["pending"],
        codes=codes,
        folders=folders,
        tags=tags,
    )


# Run figures from summary.json shown as tiles; the entry counts come from the entries themselves.
_RUN_TILES = (
    ("model_calls", "model calls"),
    ("throttled", "throttled"),
    ("duplicates_avoided", "duplicates avoided"),
    ("captions_per_minute_run", "captions / min (run)"),
    ("captions_per_minute_steady", "captions / min (steady)"),
    ("upload_to_caption_p50_s", "p50 upload→caption s"),
    ("upload_to_caption_p95_s", "p95 upload→caption s"),
    ("elapsed_s", "elapsed s"),
)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _count_tiles(counts: Counts) -> str:
    tiles = [  # (label, value, status filter, section it links to)
        ("entries", counts.entries, "", "top"),
        ("captioned", counts.captioned, "captioned", "sec-captioned"),
        ("truncated", counts.truncated, "truncated", "sec-captioned"),
        ("rejected or failed", counts.failed, "failed", "sec-failed"),
        ("no result", counts.pending, "pending", "sec-pending"),
    ]
    links = "".join(
        f'<a class="tile" href="#{anchor}" data-status-link="{status}" data-count="{name}">'
        f"<b>{value:,}</b><span>{_e(name)}</span></a>"
        for name, value, status, anchor in tiles
    )
    return f'<div class="tiles counts">{links}</div>'


def _run_tiles(summary: Mapping[str, Any]) -> str:
    tiles = [
        f'<div class="tile"><b>{_e(_shown(summary[key]))}</b><span>{_e(label)}</span></div>'
        for key, label in _RUN_TILES
        if summary.get(key) is not None and not isinstance(summary.get(key), dict | list)
    ]
    if not tiles:
        return ""
    return (
        '<p class="tiles-label">run figures (summary.json)</p><div class="tiles run">'
        + "".join(tiles)
        + "</div>"
    )


def _select(ident: str, label: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(text)}</option>' for v, text in options)
    return f'<select id="{ident}" aria-label="{_e(label)}" title="{_e(label)}">{opts}</select>'


def _controls(counts: Counts) -> str:
    status = [
        ("", f"every status ({counts.entries})"),
        ("captioned", f"captioned ({counts.captioned})"),
        ("truncated", f"truncated ({counts.truncated})"),
        ("failed", f"rejected or failed ({counts.failed})"),
        ("pending", f"no result ({counts.pending})"),
    ]
    codes = [("", "every error code")] + [
        (c, f"{c or '(none)'} ({n})") for c, n in sorted(counts.codes.items())
    ]
    folders = [("", "every folder")] + [
        (f, f"{f or '(top level)'} ({n})") for f, n in sorted(counts.folders.items()) if f
    ]
    parts = [
        '<div class="controls" role="search">',
        '<input type="search" id="q" placeholder="search file names, captions, tags, errors" '
        'aria-label="search" autocomplete="off">',
        _select("f-status", "status", status),
        _select("f-code", "error code", codes),
        _select("f-folder", "folder", folders),
    ]
    if counts.tags:
        tags = [("", "every tag")] + [(t, f"{t} ({n})") for t, n in sorted(counts.tags.items())]
        parts.append(_select("f-tag", "tag", tags))
    parts.append('<button type="button" id="f-reset">reset</button>')
    parts.append(
        f'<span class="shown" id="shown" data-visible="{counts.entries}">all {counts.entries} entries</span>'
    )
    parts.append("</div>")
    return "".join(parts)


def _section(ident: str, title: str, count: int, empty: str) -> str:
    """A section's title and count; the script fills its grid in batches as it scrolls into view."""
    return (
        f'<section data-section="{ident}" id="sec-{ident}">'
        f'<h2>{_e(title)} (<span class="n">{count}</span>)<span class="of"></span></h2>'
        f'<p class="empty none-match" hidden>No entry here matches the filters.</p>'
        + (f'<p class="empty">{_e(empty)}</p>' if count == 0 else "")
        + '<div class="grid"></div><p class="more" hidden><button type="button" class="more-batch"></button> '
        '<button type="button" class="more-all"></button></p></section>'
    )


def render_report(
    entries: Sequence[ReportEntry],
    *,
    title: str,
    summary: Mapping[str, Any] | None = None,
    total: int | None = None,
    limit_hint: str | None = None,
) -> str:
    """The page as a string: captions, then rejected or failed, then entries without a result.

    ``total`` is how many entries there were before the caller chose these (None: these are all);
    the header then says "N of M" and ``limit_hint`` how to see the rest.
    """
    ordered = sorted(entries, key=lambda e: e.source_key)
    counts = count_entries(ordered)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    shown = counts.entries
    limited = total is not None and total > shown
    scope_text = f"{shown:,} of {total:,} entries shown" if limited else f"{shown:,} entries"
    if limited and limit_hint:
        scope_text += f"; {limit_hint}"
    css = ' class="limit"' if limited else ""
    scope = (
        f'<span id="scope"{css} data-shown="{shown}" '
        f'data-total="{total if limited else shown}">{_e(scope_text)}</span>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f'<header id="top"><h1>{_e(title)}</h1><p>{scope} · generated {_e(generated)}</p></header>',
        "<main>",
        _count_tiles(counts),
        _run_tiles(summary or {}),
        _controls(counts),
        _section("captioned", "Captions", counts.captioned, "No captions."),
        _section("failed", "Rejected or failed", counts.failed, "None."),
        _section("pending", "No result", counts.pending, "None: every entry is final."),
        _plain_list(ordered),
    ]
    if summary:  # beside the tiles: below the sections it would be out of reach as they grow
        text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
        block = f'<details class="summary"><summary>summary.json</summary><pre>{_e(text)}</pre></details>'
        parts.insert(parts.index(_controls(counts)), block)
    data = _script_json([entry_data(e) for e in ordered])
    parts.append(f'</main><script type="application/json" id="entries">{data}</script>')
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(
    out: Path,
    entries: Sequence[ReportEntry],
    *,
    title: str,
    summary: Mapping[str, Any] | None = None,
    total: int | None = None,
    limit_hint: str | None = None,
    assets: ReportAssets | None = None,
    model_png_for: Callable[[str], bytes | None] | None = None,
) -> Path:
    """Write the page and its image files; ``out`` is the .html file or a directory for report.html.

    Raises ReportPathError (one line) when ``out`` cannot hold it.
    """
    path = report_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if any(e.previews is None for e in entries):
        if assets is None:
            assets = ReportAssets(path)
            assets.prepare()
        entries = build_previews(entries, assets, model_png_for=model_png_for)
    page = render_report(entries, title=title, summary=summary, total=total, limit_hint=limit_hint)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
