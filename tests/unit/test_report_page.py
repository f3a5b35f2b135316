"""imgcap.report without a browser: what the page says, which files it writes, where it refuses to write.

The rendered page in Chromium (search, filters, counts) is tests/e2e/test_report_browser.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from imgcap.report import (
    ReportEntry,
    ReportPathError,
    count_entries,
    encoded_png,
    folder_of,
    render_report,
    report_path,
    write_report,
)

pytestmark = pytest.mark.unit


def jpeg(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (0, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def captioned(key: str, **fields: object) -> ReportEntry:
    return ReportEntry(key, None, {"caption": f"About {key}.", **fields}, None)


def failed(key: str, code: str) -> ReportEntry:
    return ReportEntry(key, None, None, {"stage": "resize", "error_code": code, "message": f"{code}!"})


def pending(key: str) -> ReportEntry:
    return ReportEntry(key, None, None, None)


def tile(page: str, name: str) -> int:
    found = re.search(rf'data-count="{re.escape(name)}"><b>([\d,]+)</b>', page)
    assert found, name
    return int(found.group(1).replace(",", ""))


def page_data(page: str) -> list[dict[str, object]]:
    """The entries the page's script renders (embedded JSON)."""
    found = re.search(r'<script type="application/json" id="entries">(.*?)</script>', page, re.S)
    assert found
    rows = json.loads(found.group(1))
    assert isinstance(rows, list)
    return rows


def section_count(page: str, name: str) -> tuple[int, int]:
    """(the number in the section's title, the entries the script puts in that section)."""
    body = page.split(f'<section data-section="{name}"', 1)[1].split("</section>", 1)[0]
    title = re.search(r'<span class="n">(\d+)</span>', body)
    assert title
    return int(title.group(1)), sum(1 for row in page_data(page) if row["s"] == name)


def test_header_counts_come_from_the_entries_and_agree_with_the_sections() -> None:
    # Given entries of every kind, and a summary whose own figures disagree with them (a bucket-wide
    # "rejected" of 7, say): the header counts what the page shows
    entries = [
        captioned("images/a.jpg"),
        captioned("images/b.jpg", truncated=True),
        failed("images/c.jpg", "corrupt_image"),
        failed("images/d.jpg", "dead_lettered"),
        pending("images/e.jpg"),
    ]
    page = render_report(entries, title="t", summary={"captioned": 99, "rejected": 7, "model_calls": 3})

    assert tile(page, "entries") == 5
    assert (
        tile(page, "captioned")
        == 2
        == section_count(page, "captioned")[0]
        == section_count(page, "captioned")[1]
    )
    assert tile(page, "truncated") == 1
    assert (
        tile(page, "rejected or failed")
        == 2
        == section_count(page, "failed")[0]
        == section_count(page, "failed")[1]
    )
    assert (
        tile(page, "no result") == 1 == section_count(page, "pending")[0] == section_count(page, "pending")[1]
    )
    # The run's own figures are labelled as such, and the overlapping ones are not shown as tiles
    assert "run figures (summary.json)" in page
    assert "<b>3</b><span>model calls</span>" in page
    assert "<b>99</b>" not in page
    assert "<b>7</b>" not in page
    assert "&quot;rejected&quot;: 7" in page  # still readable in the summary.json block


def test_a_limited_page_says_n_of_m_and_an_unlimited_one_says_how_many() -> None:
    entries = [captioned(f"images/{i}.jpg") for i in range(3)]
    limited = render_report(entries, title="t", total=10, limit_hint="first 3 by key (--limit 3)")
    assert "3 of 10 entries shown; first 3 by key (--limit 3)" in limited
    assert 'data-shown="3" data-total="10"' in limited
    whole = render_report(entries, title="t")
    assert "3 entries" in whole
    assert " of " not in whole.split("<main>")[0].split("<header")[1]


def test_every_entry_is_rendered_however_many_there_are() -> None:
    entries = [captioned(f"images/x/{i:05d}.jpg") for i in range(1200)] + [
        failed("images/z.png", "too_large")
    ]
    page = render_report(entries, title="t")
    assert [row["k"] for row in page_data(page)] == sorted(e.source_key for e in entries)
    assert tile(page, "entries") == 1201
    assert page.count("<tr><td><code>") == 1201  # the list for a browser without JavaScript


def test_alt_text_and_tags_are_shown_when_present_and_the_tag_filter_only_then() -> None:
    with_tags = captioned("images/t.jpg", alt_text="A red square", tags=["red", "square", "red", " "])
    page = render_report([with_tags, captioned("images/plain.jpg")], title="t")
    rows = {row["k"]: row for row in page_data(page)}
    assert rows["images/t.jpg"]["alt"] == "A red square"
    assert rows["images/t.jpg"]["g"] == ["red", "square"]  # deduplicated, blanks dropped
    assert "alt" not in rows["images/plain.jpg"]
    assert "g" not in rows["images/plain.jpg"]
    assert 'id="f-tag"' in page
    assert '<option value="red">red (1)</option>' in page
    # Without any tags there is no tag filter, and a record without alt text shows none
    plain = render_report([captioned("images/plain.jpg")], title="t")
    assert 'id="f-tag"' not in plain


def test_filters_list_every_error_code_and_folder_with_counts() -> None:
    entries = [
        failed("images/a/1.png", "corrupt_image"),
        failed("images/a/b/2.png", "corrupt_image"),
        failed("images/3.png", "unsupported_format"),
        captioned("images/a/b/4.jpg"),
    ]
    page = render_report(entries, title="t")
    assert '<option value="corrupt_image">corrupt_image (2)</option>' in page
    assert '<option value="unsupported_format">unsupported_format (1)</option>' in page
    assert '<option value="a">a (3)</option>' in page  # a folder counts what is below it
    assert '<option value="a/b">a/b (2)</option>' in page
    counts = count_entries(entries)
    assert counts.folders[""] == 4
    assert folder_of("images/a/b/4.jpg") == "a/b"
    assert folder_of("images/top.jpg") == ""


def test_text_from_keys_captions_and_records_is_escaped_and_the_page_needs_no_network() -> None:
    evil = '<script>alert("x")</script>'
    entries = [
        ReportEntry(f"images/{evil}.jpg", None, {"caption": evil, "alt_text": evil, "tags": [evil]}, None),
        ReportEntry("images/e.png", None, None, {"error_code": evil, "message": evil, "stage": evil}),
    ]
    page = render_report(entries, title=evil, summary={"note": evil})
    assert page.count("<script") == 2  # the page's data and its own script, nothing else
    assert page.count("</script>") == 2
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # title, noscript list
    assert [row["cap"] for row in page_data(page) if row["s"] == "captioned"] == [evil]  # data intact
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere


def test_written_report_has_thumbnails_originals_and_the_model_png_as_separate_files(tmp_path: Path) -> None:
    upload = jpeg((900, 1400))
    model = png((1280, 720))
    entries = [
        ReportEntry(
            "images/p.jpg",
            upload,
            {"caption": "Tall.", "resize": {"policy": "pad", "width": 1280, "height": 720}},
            None,
            model_png=model,
        ),
        ReportEntry("images/broken.jpg", b"not an image", None, {"error_code": "corrupt_image"}),
        ReportEntry("images/big.tif", None, None, None, model_png=model),  # not downloaded, encoded
    ]
    path = write_report(tmp_path / "r.html", entries, title="t")
    page = path.read_text(encoding="utf-8")
    files = tmp_path / "r_files"

    # One small thumbnail per readable image, the upload itself, the model's PNG byte for byte
    thumbs = sorted((files / "thumbs").iterdir())
    assert len(thumbs) == 2
    with Image.open(thumbs[0]) as a, Image.open(thumbs[1]) as b:
        assert max(a.size) <= 360
        assert max(b.size) <= 360
    [original] = (files / "original").iterdir()
    assert original.read_bytes() == upload
    assert original.suffix == ".jpg"
    models = list((files / "model").iterdir())
    assert len(models) == 2
    assert all(m.read_bytes() == model for m in models)
    # The page refers to them by relative URL, never inline, and says what each one is
    assert "data:image" not in page
    for f in [*thumbs, original, *models]:
        assert f'"r_files/{f.parent.name}/{f.name}"' in page
    rows = {row["k"]: row for row in page_data(page)}
    assert rows["images/p.jpg"]["ol"] == "original 900x1400"
    assert str(rows["images/p.jpg"]["m"]).startswith("r_files/model/")
    assert rows["images/p.jpg"]["ml"] == "sent to the model: pad to 1280x720 (PNG as encoded)"
    assert "resize pad 1280x720" in list(rows["images/p.jpg"]["facts"])  # type: ignore[arg-type]
    assert "th" not in rows["images/broken.jpg"]  # no preview for the broken upload
    assert str(rows["images/big.tif"]["th"]).startswith("r_files/thumbs/")  # made from the model input
    assert "o" not in rows["images/big.tif"]
    assert "<b>3</b><span>entries</span>" in page


def test_a_rewritten_report_drops_the_files_of_the_last_one(tmp_path: Path) -> None:
    first = [ReportEntry(f"images/{i}.jpg", jpeg((40, 30)), {"caption": "x"}, None) for i in range(3)]
    write_report(tmp_path, first, title="t")
    write_report(tmp_path, first[:1], title="t")
    assert len(list((tmp_path / "report_files" / "thumbs").iterdir())) == 1
    assert (tmp_path / "report.html").is_file()


def test_encoded_png_accepts_only_base64_of_a_png() -> None:
    import base64

    data = png((4, 4))
    assert encoded_png(base64.b64encode(data)) == data
    assert encoded_png(base64.b64encode(b"GIF89a....")) is None
    assert encoded_png(b"***not base64***") is None
    assert encoded_png(None) is None


@pytest.mark.parametrize(
    ("make", "out", "why"),
    [
        (
            lambda d: (d / "README.md").write_text("# readme"),
            "README.md",
            "is an existing file that is not .html",
        ),
        (lambda d: (d / "r.html").mkdir(), "r.html", "is a directory"),
        (lambda d: (d / "afile").write_text("x"), "afile/sub/r.html", "is not a directory"),
    ],
)
def test_an_output_path_that_cannot_hold_the_report_is_refused_in_one_line(
    tmp_path: Path, make: object, out: str, why: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ReportPathError) as info:
        report_path(tmp_path / out)
    assert why in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ReportPathError):
        write_report(tmp_path / out, [pending("images/a.png")], title="t")
    assert (tmp_path / "README.md").read_text() == "# readme" if out == "README.md" else True


def test_good_output_paths_are_the_file_or_report_html_in_a_directory(tmp_path: Path) -> None:
    assert report_path(tmp_path / "x.HTML") == tmp_path / "x.HTML"
    assert report_path(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper" / "report.html"
    assert report_path(tmp_path) == tmp_path / "report.html"


def test_the_bucket_report_selects_every_upload_unless_a_limit_is_asked_for() -> None:
    from imgcap.ops.bucket import ObjectSummary
    from imgcap.ops.report import DEFAULT_LIMIT, select
    from lambdas.shared import keys

    # Given 230 uploads (the old default silently stopped at 200) and an error record without upload
    images = [ObjectSummary(f"images/{i:03d}.png", 10, "e", None) for i in range(230)]
    captions = {keys.caption_key("images/000.png")}
    errors = {keys.error_key("images/gone.png"): "images/gone.png"}

    chosen, total = select(images, captions, errors, DEFAULT_LIMIT)
    assert DEFAULT_LIMIT is None
    assert total == 231
    assert len(chosen) == 231
    assert chosen[0].caption_key == keys.caption_key("images/000.png")
    assert chosen[-1].source_key == "images/gone.png"
    assert chosen[-1].image is None

    limited, total = select(images, captions, errors, 5)
    assert [c.source_key for c in limited] == [f"images/{i:03d}.png" for i in range(5)]
    assert total == 231
