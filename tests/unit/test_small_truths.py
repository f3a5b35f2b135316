"""Small truths the docs tell: every make target is listed by `make help`, the README names every
saved Logs Insights query, docs/deploy.md is not a draft, the README's exit codes are the CLI's."""

from __future__ import annotations

import re
from pathlib import Path

from imgcap.exits import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]


def test_every_make_target_has_a_help_description_without_internal_notes() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-z0-9][a-z0-9-]*):(.*)$", makefile, flags=re.MULTILINE)
    phony = set(
        re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, flags=re.MULTILINE | re.DOTALL)[1]
        .replace("\\", " ")
        .split()
    )
    assert {name for name, _ in targets} == phony  # every target is phony, and each is defined
    help_pattern = re.compile(r"^[a-z0-9-]+:.*## ")  # what `make help` greps for
    for name, rest in targets:
        line = f"{name}:{rest}"
        assert help_pattern.match(line), f"`make help` does not list {name}"
        description = rest.split("## ", 1)[1]
        assert not re.search(r"\bissue\b|#\d", description, flags=re.IGNORECASE), description
    assert "smoke:" in makefile
    assert "imgcap smoke --stack-name $(STACK)" in makefile


def test_the_readme_names_every_saved_logs_insights_query() -> None:
    monitoring = (ROOT / "infra" / "constructs" / "monitoring.py").read_text(encoding="utf-8")
    names = re.findall(r'name=f"\{folder\}/([a-z-]+)"', monitoring)
    assert len(names) == 3
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in readme, name


def test_deploy_guide_is_not_a_draft() -> None:
    assert "draft" not in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8").lower()


def test_the_readme_exit_codes_are_the_clis() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d) \| (.+) \|$", readme, flags=re.MULTILINE))
    assert sorted(int(code) for code in rows) == sorted(EXIT_CODES)
