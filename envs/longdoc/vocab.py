"""The generator's vocabulary, kept as data in assets/longdoc so wording can change without code."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def vocabulary() -> dict[str, Any]:
    """world.yaml, prose.yaml and questions.yaml of assets/longdoc, by name."""
    folder = resources.files("turngym.assets").joinpath("longdoc")
    names = ("world", "prose", "questions")
    return {name: yaml.safe_load(folder.joinpath(f"{name}.yaml").read_text()) for name in names}


DOC_TYPES: tuple[str, ...] = tuple(vocabulary()["world"]["doc_types"])
DOC_TYPE_NAMES: dict[str, str] = {k: spec["label"] for k, spec in vocabulary()["world"]["doc_types"].items()}
