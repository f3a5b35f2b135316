"""Which prompt an image gets: the folder rule that matches its key, templated with its name. Pure.

Matching (README "Prompts per folder"): an image ``images/<dir>/<name>`` matches the parameter
``/<stack>/prompts/<folder>`` when ``<folder>`` is ``<dir>`` or a leading run of its whole path
segments (``prompts/products`` matches ``images/products/a.jpg`` and ``images/products/shoes/b.jpg``,
never ``images/products-old/c.jpg``). Deeper folders may have their own parameter; the longest
matching folder wins. An image directly under ``images/`` matches no folder rule. Without a match
the stack's ``prompt`` and ``caption-format`` apply (``prompt_source`` ``prompt``).

Templates may use ``{filename}`` (the file name, ``a b.jpg``) and ``{folder}`` (the image's folder
path below ``images/``, ``products/shoes``; empty at the top). Only these two placeholders are
replaced, by plain substitution: any other brace (a JSON example in a prompt) is left as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lambdas.shared.config import FolderPrompt, ModelSpec
from lambdas.shared.contract import IMAGES_PREFIX


def split_source_key(source_key: str) -> tuple[str, str]:
    """``images/products/shoes/a b.jpg`` -> ("products/shoes", "a b.jpg"); top level -> ("", name)."""
    path = source_key[len(IMAGES_PREFIX) :] if source_key.startswith(IMAGES_PREFIX) else source_key
    folder, _, filename = path.rpartition("/")
    return folder, filename


def matching_rule(rules: Sequence[FolderPrompt], source_key: str) -> FolderPrompt | None:
    """The rule of the longest folder that is the image's folder or a whole-segment prefix of it."""
    folder, _ = split_source_key(source_key)
    if not folder:
        return None
    best: FolderPrompt | None = None
    for rule in rules:
        if (folder == rule.folder or folder.startswith(rule.folder + "/")) and (
            best is None or len(rule.folder) > len(best.folder)
        ):
            best = rule
    return best


def render(template: str, *, filename: str, folder: str) -> str:
    return template.replace("{filename}", filename).replace("{folder}", folder)


def spec_for_image(spec: ModelSpec, rules: Sequence[FolderPrompt], source_key: str) -> ModelSpec:
    """The model spec for this image: its folder's prompt and format (if any), templated."""
    folder, filename = split_source_key(source_key)
    rule = matching_rule(rules, source_key)
    if rule is None:
        return replace(spec, prompt=render(spec.prompt, filename=filename, folder=folder))
    return replace(
        spec,
        prompt=render(rule.prompt, filename=filename, folder=folder),
        caption_format=rule.caption_format or spec.caption_format,
        prompt_source=rule.source,
    )
