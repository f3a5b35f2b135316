"""`imgcap report` against the local moto server (issue 14): every entry, "N of M" when limited,
the model's PNG beside the upload, counts that agree, and one line for an output path it cannot use.

The stack, the seeded records and the CLI runner are those of test_ops_cli.py.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from lambdas.shared import keys
from tests.integration import test_ops_cli as ops
from tests.integration.test_ops_cli import Env, run, seed_pipeline_state

pytestmark = pytest.mark.integration
moto_url = ops.moto_url  # the same fixtures: a moto server for this module, a fresh stack per test
env = ops.env


def tile(page: str, name: str) -> int:
    found = re.search(rf'data-count="{re.escape(name)}"><b>([\d,]+)</b>', page)
    assert found, name
    return int(found.group(1).replace(",", ""))


def test_report_shows_every_upload_and_says_n_of_m_when_limited(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 14 uploads, 3 of them captioned (select() keeps every one of any number: a unit test)
    for i in range(14):
        env.put_image(f"images/many/{i:03d}.png")
    for i in range(3):
        env.put_json(keys.caption_key(f"images/many/{i:03d}.png"), {"caption": f"Caption {i}."})

    # When the report is written without a limit, then every upload is on the page
    code, out, err = run(capsys, "report", "--stack-name", env.name, "--out", str(tmp_path / "all.html"))
    assert code == 0, err
    assert "(14 entries: 3 captioned, 0 with errors, 11 without a result)" in out
    page = (tmp_path / "all.html").read_text(encoding="utf-8")
    assert page.count("<tr><td><code>") == 14  # one row each in the page's list
    assert tile(page, "entries") == 14
    assert tile(page, "no result") == 11
    assert " of 14" not in page.split("</header>")[0]

    # When a limit is asked for, then the CLI line and the page both say how many of how many
    code, out, err = run(
        capsys, "report", "--stack-name", env.name, "--out", str(tmp_path / "some.html"), "--limit", "5"
    )
    assert code == 0, err
    assert "(5 of 14 entries: 3 captioned, 0 with errors, 2 without a result)" in out
    page = (tmp_path / "some.html").read_text(encoding="utf-8")
    assert page.count("<tr><td><code>") == 5
    assert "5 of 14 entries shown; first 5 by key (--limit 5; drop it to see all)" in page


def test_report_puts_the_model_png_beside_the_upload_and_its_counts_agree(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the usual state, and the encoded 1280x720 PNG the resize stage stored for one upload
    seed_pipeline_state(env)
    buf = io.BytesIO()
    Image.new("RGB", (1280, 720), (10, 120, 200)).save(buf, "PNG")
    model_png = buf.getvalue()
    env.s3.put_object(
        Bucket=env.stack.bucket,
        Key=keys.encoded_key("images/trips/c.png"),
        Body=base64.b64encode(model_png),
    )

    # When the report is written into a directory
    code, out, err = run(capsys, "report", "--stack-name", env.name, "--out", str(tmp_path / "gallery"))

    # Then the model's PNG is a file of the report, byte for byte, and the header matches the sections
    assert code == 0, err
    assert "(4 entries: 2 captioned, 1 with errors, 1 without a result)" in out
    page = (tmp_path / "gallery" / "report.html").read_text(encoding="utf-8")
    [written] = (tmp_path / "gallery" / "report_files" / "model").iterdir()
    assert written.read_bytes() == model_png
    assert f'"m":"report_files/model/{written.name}"' in page
    assert len(list((tmp_path / "gallery" / "report_files" / "original").iterdir())) == 4
    assert tile(page, "captioned") == 2
    assert tile(page, "rejected or failed") == 1
    assert 'id="sec-failed"><h2>Rejected or failed (<span class="n">1</span>)' in page


@pytest.mark.parametrize("case", ["existing README.md", "under a file", "a directory named .html"])
def test_report_refuses_an_output_path_it_cannot_use_in_one_line_with_exit_2(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# keep me\n")
    (tmp_path / "dir.html").mkdir()
    out_arg = {
        "existing README.md": readme,
        "under a file": readme / "report.html",
        "a directory named .html": tmp_path / "dir.html",
    }[case]

    code, out, err = run(capsys, "report", "--stack-name", env.name, "--out", str(out_arg))

    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("imgcap: --out "), err
    assert "Traceback" not in err
    assert readme.read_text() == "# keep me\n"
