"""Issue 15 end to end: structured captions, a prompt for one folder, invalid tool answers.

Run A: five images, three under ``products/``, ``caption-format structured`` and a folder prompt
for ``products``; the script ``invalid_tool*2`` makes the first two tool answers invalid. Which
images meet them depends on scheduling; the totals do not: each costs one retry, every image ends
with a valid structured caption, and only the ``products/`` ones were sent the folder's prompt.

Run B: one image, every tool answer invalid: the allowed three tries, then the documented
``model_output_invalid`` error record; nothing lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcap.local.faults import parse_faults
from imgcap.local.functions import ssm_tunables
from imgcap.local.options import LocalOptions
from lambdas.shared.contract import ALT_TEXT_MAX_CHARS, TAGS_MAX, TAGS_MIN
from tests.e2e.conftest import Run, run_pipeline, write_images

pytestmark = pytest.mark.e2e

FOLDER_PROMPT = 'Describe the product "{filename}" in {folder} for a shop listing.'


@pytest.fixture(scope="module")
def structured_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Run]:
    images = tmp_path_factory.mktemp("images")
    names = [f"products/{n}" for n in write_images(images / "products", 3, prefix="item")]
    names += write_images(images, 2, prefix="scene")
    run = run_pipeline(
        images,
        tmp_path_factory.mktemp("out"),
        caption_format="structured",
        folder_prompts=(("products", FOLDER_PROMPT),),
        faults=parse_faults("invalid_tool*2"),
    )
    return names, run


def test_every_image_gets_a_valid_structured_caption_after_the_retries(structured_run):
    names, run = structured_run
    assert run.summary["lost"] == 0
    assert run.summary["captioned"] == len(names)
    for name in names:
        record = run.caption(name)
        assert record["caption_format"] == "structured"
        assert record["caption"]
        assert 0 < len(record["alt_text"]) <= ALT_TEXT_MAX_CHARS
        assert TAGS_MIN <= len(record["tags"]) <= TAGS_MAX
        assert record["text_in_image"] == ""
    totals = run.summary["metrics"]["totals"]
    assert totals["ModelOutputInvalid"] == 2
    assert totals["ModelCalls"] == len(names) + 2  # each invalid answer cost exactly one retry


def test_the_folder_prompt_is_used_there_and_only_there(structured_run):
    names, run = structured_run
    for name in names:
        record = run.caption(name)
        if name.startswith("products/"):
            filename = name.rsplit("/", 1)[1]
            assert record["prompt_source"] == "prompts/products"
            assert record["prompt"] == f'Describe the product "{filename}" in products for a shop listing.'
        else:
            assert record["prompt_source"] == "prompt"
            assert record["prompt"] == "Generate a detailed description of the image."


def test_every_invalid_answer_ends_in_the_model_output_invalid_record_after_the_allowed_tries(tmp_path: Path):
    images = tmp_path / "images"
    (name,) = write_images(images, 1)
    run = run_pipeline(
        images, tmp_path / "out", caption_format="structured", faults=parse_faults("invalid_tool=1")
    )
    assert run.summary["lost"] == 0
    assert run.summary["rejected_by_code"] == {"model_output_invalid": 1}
    record = run.error(name)
    assert record["error_code"] == "model_output_invalid"
    assert "3 of 3 allowed attempts" in record["message"]
    assert run.summary["metrics"]["totals"]["ModelOutputInvalid"] == 3


def test_the_local_options_become_ssm_parameters(tmp_path: Path):
    options = LocalOptions(
        images=tmp_path,
        out=tmp_path,
        caption_format="structured",
        service_tier="flex",
        folder_prompts=(("products/shoes/", "Shoes: {filename}"),),
    )
    values = ssm_tunables(options)
    assert values["caption-format"] == "structured"
    assert values["service-tier"] == "flex"
    assert values["prompts/products/shoes"] == "Shoes: {filename}"
