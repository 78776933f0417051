"""HopVQA task ids and frozen splits (assets/hopvqa/splits.yaml for HopVQA-v0, splits-v1.yaml for v1).

Task `hop-<seed>` is the scene and query drawn from `seed` (envs/hopvqa/env.py, `make_task`); the
chain setting (variant "full", "half" or "single", or hops=1..5) decides the chain. Test and dev are
lists of seeds per setting, frozen in assets/hopvqa/splits.yaml. Which seeds: picked in order from
seed 1 (test) and 100,000 (dev) by rejection sampling that caps how often any answer value may
occur, so no constant guess does well in any setting. In what order: `balanced_order` of them
(since splits version 2), which interleaves the answer values so that a prefix, what
`turngym run -n N` and the suites play, is about as balanced as the whole split: in every prefix
of 50 tasks or more no answer exceeds 15%. Train is every seed from 1,000,000 up, unfiltered.

`turngym hopvqa splits --version V` draws a version's splits the documented way (`draw_split`) and
prints them as YAML: how splits-v1.yaml was made (v0's file also pins core-v0's positions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any

import yaml

from turngym.envs.base import TaskIds

TRAIN_SEEDS = range(1_000_000, 2**31)
FIRST_SEED = {"test": 1, "dev": 100_000}
SPLIT_SIZE = 500
CHAINS = ("full", "half", "single", "1", "2", "3", "4", "5")


@cache
def manifest(version: int = 0) -> dict[str, Any]:
    """The frozen splits of HopVQA-v<version>: the splits file's version, the test and dev seeds, the
    answer cap, pinned positions, fingerprints."""
    name = "splits.yaml" if version == 0 else f"splits-v{version}.yaml"
    return yaml.safe_load(resources.files("turngym.assets").joinpath(f"hopvqa/{name}").read_text())


def splits(chain: str = "full", version: int = 0) -> dict[str, Sequence[str]]:
    """The splits of a chain setting: "full", "half", "single", or a hop count "1" to "5"."""
    frozen = manifest(version)
    return {"test": TaskIds("hop-", frozen["test"][chain]), "dev": TaskIds("hop-", frozen["dev"][chain]),
            "train": TaskIds("hop-", TRAIN_SEEDS)}


def balanced_order(answers: Sequence[int], pinned: Collection[int] = ()) -> list[int]:
    """A permutation of range(len(answers)) that spreads each answer value evenly over the list, so a
    prefix holds each value at about its share of the whole (a Webster-style interleave).

    The j-th of the c free items with one value (counted in list order) is due at (j + 1/2) / c of
    the way; items fill the free positions by due fraction, ties by value, then list order. The
    positions in `pinned` keep their own item, so an index a suite pins still plays the same task.
    """
    keep = set(pinned)
    if not keep <= set(range(len(answers))):
        raise ValueError(f"pinned positions {sorted(keep - set(range(len(answers))))} are outside the "
                         f"{len(answers)} tasks: pin positions 0 to {len(answers) - 1}")
    groups: dict[int, list[int]] = {}
    for i, value in enumerate(answers):
        if i not in keep:
            groups.setdefault(value, []).append(i)
    due = sorted((Fraction(2 * j + 1, 2 * len(items)), value, i) for value, items in groups.items()
                 for j, i in enumerate(items))
    free = iter(i for *_, i in due)
    return [i if i in keep else next(free) for i in range(len(answers))]


def draw_split(answer: Callable[[int], int], split: str, cap: float, pinned: Collection[int] = ()) -> list[int]:
    """A split's seeds, the documented way: seeds in order from the split's first, each skipped while
    its answer already fills `cap` of the split, then put in `balanced_order`."""
    seed, drawn, counts = FIRST_SEED[split], [], Counter()
    while len(drawn) < SPLIT_SIZE:
        value = answer(seed)
        if counts[value] < cap * SPLIT_SIZE:
            counts[value] += 1
            drawn.append(seed)
        seed += 1
    return [drawn[i] for i in balanced_order([answer(s) for s in drawn], pinned)]


def parse_task_id(task_id: str) -> int:
    text = str(task_id).removeprefix("hop-")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"bad HopVQA task id {task_id!r}: expected hop-<seed>")
    return int(text)

