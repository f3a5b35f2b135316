"""How fast the HTML report opens in headless Chromium, for ~300 and 5,000 entries (issue 14).

    .venv/bin/python -m bench.bench_report [--sizes 300,5000] [--screenshot PATH] [--keep DIR]

Entries are built directly from records (captions with alt text and tags, error records, entries
without a result) over a small pool of generated images, each with the real 1280x720 encoded PNG the
resize stage would send the model; no pipeline runs. For each size it prints the time to write the
page and its files, the page's size, and the time Chromium takes to load it (navigation to the
``load`` event, and until the page's script has run). The browser is the system's Chromium
(Debian's ``chromium`` package, ``make browser``) driven by Playwright through its executable path.

The browser test (tests/e2e/test_report_browser.py) uses the same entries and browser finder.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgcap.report import ReportEntry, write_report

CHROMIUM_ENV = "IMGCAP_CHROMIUM"  # an explicit browser binary wins over the PATH
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FOLDERS = ("", "cats", "dogs", "street/night", "street/day")
ERROR_CODES = ("corrupt_image", "unsupported_format", "image_too_large", "dead_lettered", "resize_failed")
TAGS = ("animal", "outdoor", "night", "city", "portrait", "pattern", "red", "blue")
# (width, height, colour): landscape, portrait, square, panorama, so crop/stretch shows in the pair
_SHAPES = (
    (1600, 1200, (200, 40, 40)),
    (900, 1400, (40, 120, 200)),
    (1000, 1000, (60, 160, 80)),
    (2400, 800, (220, 160, 30)),
    (640, 480, (120, 60, 160)),
    (1280, 720, (30, 30, 30)),
)


def find_chromium() -> str | None:
    """The system Chromium's executable, or None."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def shape(i: int, scale: float = 1.0) -> tuple[int, int]:
    """The upload size of entry ``i``."""
    w, h, _ = _SHAPES[i % len(_SHAPES)]
    return max(8, round(w * scale)), max(8, round(h * scale))


def _image_pool(scale: float) -> list[tuple[bytes, bytes]]:
    """A few distinct (upload JPEG, encoded model PNG) pairs, made with the real resize code."""
    from PIL import Image, ImageDraw

    from lambdas.resize.imaging.pipeline import resize_and_encode
    from lambdas.shared.config import ImageSpec

    pool = []
    for i, (_, _, colour) in enumerate(_SHAPES):
        w, h = shape(i, scale)
        img = Image.new("RGB", (w, h), colour)
        draw = ImageDraw.Draw(img)
        for k in range(6):  # bands and a circle: enough structure to see a crop or a stretch
            draw.rectangle([k * w // 6, 0, k * w // 6 + w // 24, h], fill=(255, 255, 255))
        ring = max(2, h // 100)
        draw.ellipse([w // 2 - h // 4, h // 4, w // 2 + h // 4, 3 * h // 4], outline=(0, 0, 0), width=ring)
        draw.text((20, 20), f"sample {i}", fill=(0, 0, 0))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        pool.append((data, resize_and_encode(data, ImageSpec()).png))
    return pool


def synthetic_entries(n: int, *, scale: float = 1.0) -> list[ReportEntry]:
    """``n`` entries: 80% captioned (some truncated), 12% failed, 8% no result.

    ``scale`` shrinks the uploads (a test wants them cheap); the model images stay 1280x720.
    """
    pool = _image_pool(scale)
    entries = []
    for i in range(n):
        folder = FOLDERS[i % len(FOLDERS)]
        key = f"images/{folder + '/' if folder else ''}photo-{i:05d}.jpg"
        upload, model_png = pool[i % len(pool)]
        kind = i % 25
        if kind < 20:
            tags = [TAGS[i % len(TAGS)], TAGS[(i // 3) % len(TAGS)]]
            record: dict[str, Any] = {
                "caption": f"A test picture number {i} of a {tags[0]} scene with bands and a circle.",
                "alt_text": f"{tags[0]} scene {i}",
                "tags": tags,
                "model_id": "amazon.nova-pro-v1:0",
                "source": dict(zip(("width", "height"), shape(i, scale), strict=True)),
                "usage": {"input_tokens": 1300 + i % 50, "output_tokens": 40 + i % 30},
                "latency_ms": 800 + i % 400,
                "stop_reason": "max_tokens" if kind % 9 == 4 else "end_turn",
                "truncated": kind % 9 == 4,
                "captioned_at": "2026-12-01T09:00:00Z",
            }
            entries.append(ReportEntry(key, upload, record, None, model_png=model_png))
        elif kind < 23:
            code = ERROR_CODES[i % len(ERROR_CODES)]
            error = {
                "stage": "resize",
                "error_code": code,
                "message": f"{code.replace('_', ' ')} (entry {i})",
            }
            data = b"not an image" if code == "corrupt_image" else upload
            entries.append(ReportEntry(key, data, None, error))
        else:
            entries.append(ReportEntry(key, upload, None, None))
    return entries


@contextmanager
def chromium_browser(executable: str) -> Iterator[Any]:
    """The system Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(executable: str, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A fresh headless page of the system Chromium."""
    with chromium_browser(executable) as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        yield page


def measured_load(browser: Any, path: Path) -> tuple[dict[str, float], Any]:
    """Load ``path`` in a new tab of a warm browser (no earlier page being torn down meanwhile)."""
    warm = browser.new_page()
    load_page(warm, path)  # the file cache and the browser's own start-up are not the page's cost
    warm.close()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto("about:blank")
    time.sleep(0.5)  # let the closed tab's teardown finish before counting CPU
    return load_page(page, path), page


def _descendants_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process's descendants that still run.

    On a busy machine the wall-clock of a page load mostly measures the wait for a core; the
    browser's own CPU time is what the page costs, whatever else runs.
    """
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid, used in cpu.items():
        seen, up = 0, parents.get(pid)
        while up and seen < 64:
            if up == me:
                total += used
                break
            up, seen = parents.get(up), seen + 1
    return total


def load_page(page: Any, path: Path, timeout_s: float = 120.0) -> dict[str, float]:
    """Open the page and wait until its script has run; navigation timings in milliseconds."""
    cpu_before = _descendants_cpu_s()
    started = time.perf_counter()
    page.goto(path.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=timeout_s * 1000)
    wall_ms = (time.perf_counter() - started) * 1000
    nav = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"
    )
    cpu_ms = (_descendants_cpu_s() - cpu_before) * 1000
    return {
        "dom_content_loaded_ms": nav["dcl"],
        "load_ms": nav["load"],
        "ready_wall_ms": wall_ms,
        "browser_cpu_ms": cpu_ms,
    }


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="300,5000", help="entry counts, comma-separated (300,5000)")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the first size's page here")
    parser.add_argument("--keep", type=Path, help="write the reports under this folder and keep them")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the generated uploads (1.0)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(f"no Chromium found: `make browser` installs it (or set {CHROMIUM_ENV})", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    print(f"browser: {chromium}")
    try:
        for index, n in enumerate(sizes):
            entries = synthetic_entries(n, scale=args.scale)
            started = time.perf_counter()
            page_path = write_report(root / f"report-{n}.html", entries, title=f"bench: {n} entries")
            write_s = time.perf_counter() - started
            html_mb = page_path.stat().st_size / 1e6
            files_mb = _size_mb(root / f"report-{n}_files")
            with chromium_browser(chromium) as browser:
                timings, page = measured_load(browser, page_path)
                if index == 0 and args.screenshot:
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.wait_for_timeout(500)  # let the first lazy thumbnails decode
                    page.screenshot(path=str(args.screenshot), full_page=False)
            print(
                f"{n:>6} entries: written in {write_s:5.1f} s "
                f"(html {html_mb:.1f} MB, files {files_mb:.0f} MB); "
                f"Chromium DOMContentLoaded {timings['dom_content_loaded_ms']:.0f} ms, "
                f"load {timings['load_ms']:.0f} ms, ready (script done) {timings['ready_wall_ms']:.0f} ms; "
                f"browser CPU {timings['browser_cpu_ms']:.0f} ms; load average {os.getloadavg()[0]:.1f}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
