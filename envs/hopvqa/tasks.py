"""HopVQA task ids and frozen splits.

Task `hop-<seed>` is the scene and query drawn from `seed` (envs/hopvqa/env.py, `make_task`); the
chain setting (variant "full", "half" or "single", or hops=1..5) decides the chain. Test and dev are
lists of seeds per setting, frozen in assets/hopvqa/splits.yaml, picked in order from seed 1 (test)
and 100,000 (dev) by rejection sampling that caps how often any answer value may occur, so no
constant guess does well in any setting; train is every seed from 1,000,000 up, unfiltered.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import yaml

from turngym.envs.base import TaskIds

TRAIN_SEEDS = range(1_000_000, 2**31)


@cache
def manifest() -> dict[str, Any]:
    """assets/hopvqa/splits.yaml: version, the test and dev seeds, the answer cap, fingerprints."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("hopvqa/splits.yaml").read_text())


def splits(chain: str = "full") -> dict[str, Sequence[str]]:
    """The splits of a chain setting: "full", "half", "single", or a hop count "1" to "5"."""
    frozen = manifest()
    return {"test": TaskIds("hop-", frozen["test"][chain]), "dev": TaskIds("hop-", frozen["dev"][chain]),
            "train": TaskIds("hop-", TRAIN_SEEDS)}


def parse_task_id(task_id: str) -> int:
    text = str(task_id).removeprefix("hop-")
    if not text.isdigit():
        raise ValueError(f"bad HopVQA task id {task_id!r}: expected hop-<seed>")
    return int(text)
