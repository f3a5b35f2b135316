"""``imgcap upload --exclude/--include``: aws s3 sync's filter rules, as a pure function.

The AWS CLI reference ("Use of Exclude and Include Filters"): all files are included by default,
filters apply in the order given, a later filter that matches overrides an earlier one, and each
pattern is evaluated against the path relative to the source directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcap.ops.upload import EXCLUDE, INCLUDE, is_included, plan

FILES = ["a.jpg", "b.png", "notes.txt", ".DS_Store", "trips/c.jpg", "trips/day 1/d.JPG", "trips/.hidden"]


def kept(filters: list[tuple[str, str]]) -> list[str]:
    return [f for f in FILES if is_included(f, filters)]


def test_without_filters_every_file_is_included() -> None:
    assert kept([]) == FILES


def test_exclude_everything_then_include_jpegs_keeps_only_jpegs_in_every_folder() -> None:
    # '*' matches across '/', as in aws s3 sync; the match is case-sensitive
    assert kept([(EXCLUDE, "*"), (INCLUDE, "*.jpg")]) == ["a.jpg", "trips/c.jpg"]


def test_the_order_matters_the_last_matching_filter_wins() -> None:
    # include first, exclude everything after it: nothing survives
    assert kept([(INCLUDE, "*.jpg"), (EXCLUDE, "*")]) == []


def test_patterns_are_relative_to_the_source_folder() -> None:
    # ".*" anchored at the root matches the top-level dot file (and everything in dot folders
    # at the root), not a dot file inside a subfolder; "*/.*" reaches those
    assert not is_included(".DS_Store", [(EXCLUDE, ".*")])
    assert is_included("trips/.hidden", [(EXCLUDE, ".*")])
    assert not is_included("trips/.hidden", [(EXCLUDE, "*/.*")])
    assert kept([(EXCLUDE, "trips/*")]) == ["a.jpg", "b.png", "notes.txt", ".DS_Store"]


def test_include_alone_changes_nothing_because_everything_is_included_already() -> None:
    assert kept([(INCLUDE, "*.png")]) == FILES


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (
            [(EXCLUDE, "*.txt"), (EXCLUDE, "trips/*"), (INCLUDE, "trips/c.jpg")],
            ["a.jpg", "b.png", ".DS_Store", "trips/c.jpg"],
        ),
        ([(EXCLUDE, "?.*")], ["notes.txt", ".DS_Store", "trips/c.jpg", "trips/day 1/d.JPG", "trips/.hidden"]),
        ([(EXCLUDE, "*.[jJ][pP]*")], ["b.png", "notes.txt", ".DS_Store", "trips/.hidden"]),
        ([(EXCLUDE, "trips/day 1/*")], [f for f in FILES if not f.startswith("trips/day 1/")]),
    ],
)
def test_glob_symbols(filters: list[tuple[str, str]], expected: list[str]) -> None:
    assert kept(filters) == expected


def test_plan_applies_the_filters_to_a_real_folder(tmp_path: Path) -> None:
    # Given a folder with the files above
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    # When planned with "only JPEGs under trips/", then exactly those are sent, with their keys
    files = plan(tmp_path, "batch", [(EXCLUDE, "*"), (INCLUDE, "trips/*.jpg"), (INCLUDE, "trips/*.JPG")])
    assert [(f.relative, f.key) for f in files] == [
        ("trips/c.jpg", "images/batch/trips/c.jpg"),
        ("trips/day 1/d.JPG", "images/batch/trips/day 1/d.JPG"),
    ]
