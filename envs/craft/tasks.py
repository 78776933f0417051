"""Craft task ids, frozen splits, and the start of an episode.

A task id is `<task>:<world seed>` (e.g. `wood_pickaxe:2921440061`); a bare `<task>` means "that
task on a world drawn from the reset seed". Test and dev seeds are frozen in
assets/craft/splits.yaml; training uses every seed below 2**31 (test and dev seeds lie above, so
the splits never overlap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import yaml

from turngym.envs.base import TaskIds
from turngym.envs.craft.rules import Rules, Task
from turngym.envs.craft.worldgen import Layout, generate

TRAIN_SEEDS = range(2**31)


@cache
def frozen() -> dict:
    """assets/craft/splits.yaml: version, test and dev seeds, test-world fingerprints."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("craft/splits.yaml").read_text())


def splits_for(task: str) -> dict[str, Sequence[str]]:
    manifest = frozen()
    return {"train": TaskIds(f"{task}:", TRAIN_SEEDS), "dev": TaskIds(f"{task}:", manifest["dev"]),
            "test": TaskIds(f"{task}:", manifest["test"])}


def parse_task_id(rules: Rules, task_id: str) -> tuple[Task, int | None]:
    """Split `<task>[:<seed>]` into the task and its world seed (None when not given)."""
    name, sep, seed = str(task_id).partition(":")
    if name not in rules.tasks:
        raise ValueError(f"unknown Craft task {name!r} in task id {task_id!r}: "
                         f"use one of {', '.join(rules.tasks)}")
    if not sep:
        return rules.tasks[name], None
    if not seed.isdigit() or int(seed) >= 2**32:
        raise ValueError(f"bad world seed in task id {task_id!r}: expected <task>:<integer below 2**32>")
    return rules.tasks[name], int(seed)


@dataclass(frozen=True)
class Episode:
    task: Task
    task_id: str
    layout: Layout
    key: int  # seeds the world's dynamics (cow moves, sapling chance)


def new_episode(rules: Rules, task_id: str | None, default: Task, rng: np.random.Generator,
                size: int) -> Episode:
    """The task, world and dynamics key of a new episode; draws only from `rng`, in fixed order."""
    task, seed = (default, None) if task_id is None else parse_task_id(rules, task_id)
    if seed is None:
        seed = int(rng.integers(len(TRAIN_SEEDS)))
    key = int(rng.integers(2**63))
    return Episode(task, f"{task.name}:{seed}", generate(rules, task, size, seed), key)
