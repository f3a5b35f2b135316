"""The HTML report in a real browser (issue 14): headless Chromium from Debian, driven by Playwright.

A report of 300 entries is written straight from records (bench.bench_report.synthetic_entries: no
pipeline runs) and opened from disk, as an operator would. The assertions are about the rendered
page: every entry is there, the header's counts agree with the sections, search and each filter
narrow to exactly the entries they should, and an entry shows the original beside the exact
1280x720 image the model was sent. Under CI=true a missing browser fails the test, never skips it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.bench_report import (
    CHROMIUM_ENV,
    chromium_browser,
    find_chromium,
    load_page,
    shape,
    synthetic_entries,
)
from imgcap.report import ReportEntry, folder_of, tags_of, write_report

pytestmark = pytest.mark.e2e

N_ENTRIES = 300
SCALE = 0.25  # small uploads keep writing the report quick; the model images stay 1280x720


def _missing(why: str) -> None:
    message = f"{why}: `make browser` installs Debian's chromium (or set {CHROMIUM_ENV})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (requirements-dev.txt)")
    found = find_chromium()
    if found is None:
        _missing("no Chromium executable found")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def entries() -> list[ReportEntry]:
    return synthetic_entries(N_ENTRIES, scale=SCALE)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, entries: list[ReportEntry]) -> Path:
    return write_report(tmp_path_factory.mktemp("report") / "report.html", entries, title="browser test")


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    with chromium_browser(chromium) as running:
        yield running


@pytest.fixture(scope="module")
def browser_page(browser: Any) -> Any:
    return browser.new_page(viewport={"width": 1400, "height": 1000})


@pytest.fixture
def page(browser_page: Any, report: Path) -> Any:
    load_page(browser_page, report)  # a fresh navigation per test: no filter state carries over
    return browser_page


def visible_ids(page: Any) -> list[str]:
    """The cards of every matching entry (asking each section for the rest of its batches first)."""
    for button in page.locator("section .more:not([hidden]) .more-all").all():
        button.click()
    return list(page.eval_on_selector_all("article.card", "els => els.map(e => e.id)"))


def search(page: Any, text: str) -> None:
    """Type into the search box and wait until the page has applied exactly this text."""
    page.fill("#q", text)
    page.wait_for_function(
        "t => document.getElementById('shown').getAttribute('data-query') === t", arg=text, timeout=30_000
    )


def settle_search(page: Any, expected: int) -> None:
    page.wait_for_function(
        "n => document.getElementById('shown').getAttribute('data-visible') === String(n)",
        arg=expected,
        timeout=30_000,
    )


def text_of(entry: ReportEntry) -> str:
    """What a search term may match in an entry (its boilerplate labels are not used as terms)."""
    caption = entry.caption or {}
    error = entry.error or {}
    parts = [entry.source_key, caption.get("caption"), caption.get("alt_text"), *tags_of(entry)]
    parts += [error.get("error_code"), error.get("message")]
    return " ".join(str(p) for p in parts if p).lower()


def test_every_entry_is_on_the_page_and_the_header_counts_agree_with_the_sections(
    page: Any, entries: list[ReportEntry]
) -> None:
    # The page opens with a first batch of each section and says how many are still to come
    captions = page.locator("section[data-section=captioned]")
    first = int(captions.get_attribute("data-rendered") or 0)
    assert 0 < first < sum(1 for e in entries if e.caption is not None)
    assert "not yet on the page" in page.inner_text("section[data-section=captioned] .more-batch")
    # Scrolling to a section's end brings the next batch, without a click
    captions.locator(".more").scroll_into_view_if_needed()
    page.wait_for_function(
        "n => Number(document.getElementById('sec-captioned').dataset.rendered) > n",
        arg=first,
        timeout=30_000,
    )

    # Every entry has its card, each exactly once
    ids = visible_ids(page)
    assert sorted(ids) == sorted(e.source_key for e in entries)
    assert len(set(ids)) == N_ENTRIES
    assert page.inner_text("#shown") == f"all {N_ENTRIES} entries"
    assert page.get_attribute("#scope", "data-total") == str(N_ENTRIES)

    # The header tiles, the section titles and the cards in each section tell the same numbers
    tiles = dict(
        page.eval_on_selector_all(
            ".tiles.counts .tile",
            "els => els.map(e => [e.dataset.count,"
            " Number(e.querySelector('b').textContent.replace(/,/g, ''))])",
        )
    )
    sections = {
        name: (
            int(page.inner_text(f"section[data-section={name}] h2 .n")),
            page.locator(f"section[data-section={name}] article.card").count(),
        )
        for name in ("captioned", "failed", "pending")
    }
    for name, tile in (
        ("captioned", "captioned"),
        ("failed", "rejected or failed"),
        ("pending", "no result"),
    ):
        title_count, cards = sections[name]
        assert tiles[tile] == title_count == cards, (name, tiles, sections)
    assert tiles["entries"] == sum(cards for _, cards in sections.values()) == N_ENTRIES
    assert tiles["truncated"] == page.locator("article.card[data-truncated='1']").count() > 0
    assert page.locator("article.card[data-truncated='1'] .truncated").count() == tiles["truncated"]
    # ...and they are the entries' own figures
    assert tiles["captioned"] == sum(1 for e in entries if e.caption is not None)
    assert tiles["truncated"] == sum(1 for e in entries if e.truncated)


def test_search_narrows_to_the_matching_entries(page: Any, entries: list[ReportEntry]) -> None:
    # A unique file name finds exactly that entry
    key = entries[42].source_key
    search(page, Path(key).stem)
    settle_search(page, 1)
    assert visible_ids(page) == [key]

    # Two words narrow to the entries that contain both (caption, alt text, tags, key or error)
    wanted = sorted(e.source_key for e in entries if "cats" in text_of(e) and "night" in text_of(e))
    assert 0 < len(wanted) < N_ENTRIES
    search(page, "Cats  NIGHT")
    settle_search(page, len(wanted))
    assert sorted(visible_ids(page)) == wanted
    assert page.inner_text("#shown") == f"{len(wanted)} of {N_ENTRIES} match"

    # An error message is searchable too; nothing matches nonsense; clearing shows everything
    wanted = sorted(e.source_key for e in entries if "unsupported format" in text_of(e))
    assert 0 < len(wanted) < N_ENTRIES
    search(page, "unsupported format")
    settle_search(page, len(wanted))
    assert sorted(visible_ids(page)) == wanted
    search(page, "no-such-thing-anywhere")
    settle_search(page, 0)
    assert page.locator("section[data-section=captioned] .none-match").is_visible()
    search(page, "")
    settle_search(page, N_ENTRIES)


def test_filters_narrow_by_status_code_folder_and_tag(page: Any, entries: list[ReportEntry]) -> None:
    def expect(predicate: Any) -> list[str]:
        keys = sorted(e.source_key for e in entries if predicate(e))
        assert 0 < len(keys) < N_ENTRIES
        settle_search(page, len(keys))
        assert sorted(visible_ids(page)) == keys
        return keys

    page.select_option("#f-status", "failed")
    failed = expect(lambda e: e.caption is None and e.error is not None)
    assert page.inner_text("section[data-section=failed] h2 .of") == ""  # the whole section is shown
    assert page.inner_text("section[data-section=captioned] h2 .of") == " — 0 match"

    page.select_option("#f-code", "corrupt_image")
    corrupt = expect(lambda e: e.caption is None and (e.error or {}).get("error_code") == "corrupt_image")
    assert len(corrupt) < len(failed)

    page.select_option("#f-status", "truncated")
    page.select_option("#f-code", "")
    expect(lambda e: e.truncated)

    page.select_option("#f-status", "pending")
    expect(lambda e: e.caption is None and e.error is None)

    # A folder holds its subfolders: "street" is street/day and street/night
    page.select_option("#f-status", "")
    page.select_option("#f-folder", "street")
    street = expect(lambda e: folder_of(e.source_key).startswith("street"))
    assert {folder_of(k) for k in street} == {"street/day", "street/night"}

    page.select_option("#f-folder", "")
    page.select_option("#f-tag", "night")
    expect(lambda e: "night" in tags_of(e))

    # Filters combine with search; reset shows every entry again
    page.select_option("#f-folder", "cats")
    search(page, "scene")
    expect(lambda e: "night" in tags_of(e) and folder_of(e.source_key) == "cats")
    page.click("#f-reset")
    settle_search(page, N_ENTRIES)


def test_an_entry_shows_the_original_beside_the_exact_image_the_model_saw(page: Any) -> None:
    card = page.locator("section[data-section=captioned] article.card").first
    card.locator("details.views summary").click()
    images = card.locator("details.views img")
    images.nth(1).scroll_into_view_if_needed()
    page.wait_for_function(
        "id => [...document.getElementById(id).querySelectorAll('details.views img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        arg=card.get_attribute("id"),
        timeout=30_000,
    )
    sizes = images.evaluate_all("els => els.map(i => [i.naturalWidth, i.naturalHeight])")
    original, model = sizes
    assert model == [1280, 720]
    index = int(Path(card.get_attribute("id") or "").stem.rsplit("-", 1)[1])
    assert original == list(shape(index, SCALE))  # the upload itself, at its own size and shape
    assert original[0] < original[1]  # (the first captioned entry is a portrait upload)
    # The grid thumbnails are small separate files, not the originals
    thumb = card.locator(".pic img")
    assert "_files/thumbs/" in (thumb.get_attribute("src") or "")


def test_without_javascript_every_entry_is_still_listed(
    browser: Any, report: Path, entries: list[ReportEntry]
) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(report.resolve().as_uri(), wait_until="load")
        keys = page.eval_on_selector_all(
            "noscript table tbody tr td:first-child", "els => els.map(e => e.innerText)"
        )
    finally:
        context.close()
    assert sorted(keys) == sorted(e.source_key for e in entries)
