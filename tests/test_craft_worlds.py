"""Craft rules and world generation: the recipe tree, solvable worlds, frozen test worlds."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from turngym.envs.craft import load_rules
from turngym.envs.craft.paths import search, step_costs
from turngym.envs.craft.tasks import frozen, parse_task_id, splits_for
from turngym.envs.craft.world import World
from turngym.envs.craft.worldgen import generate

RULES = load_rules()
TASKS = list(RULES.tasks)


def test_rules_cover_the_issue_tasks_and_tech_tree():
    assert set(TASKS) == {"collect_wood", "place_table", "wood_pickaxe", "collect_stone", "stone_pickaxe",
                          "collect_coal", "collect_iron", "iron_pickaxe", "collect_diamond", "find_tree", "eat_cow"}
    chain = RULES.prerequisites("collect_diamond")
    for earlier, later in [("collect_wood", "place_table"), ("place_table", "make_wood_pickaxe"),
                           ("make_wood_pickaxe", "collect_stone"), ("collect_stone", "make_stone_pickaxe"),
                           ("make_stone_pickaxe", "collect_iron"), ("place_furnace", "make_iron_pickaxe"),
                           ("collect_coal", "make_iron_pickaxe"), ("make_iron_pickaxe", "collect_diamond")]:
        assert chain.index(earlier) < chain.index(later)
    assert chain[-1] == "collect_diamond" and "eat_cow" not in chain
    assert RULES.materials_needed(RULES.tasks["collect_diamond"]) == ["tree", "stone", "coal", "iron", "diamond"]
    assert "make wood_pickaxe: 1 wood; near a table" in RULES.recipe_lines(RULES.tasks["wood_pickaxe"])


def test_task_ids_parse_and_splits_are_disjoint_and_frozen():
    assert parse_task_id(RULES, "wood_pickaxe:12").seed == 12
    assert parse_task_id(RULES, "eat_cow").seed is None
    for bad in ("chop_tree:1", "wood_pickaxe:abc", "wood_pickaxe:-1", f"wood_pickaxe:{2**32}"):
        with pytest.raises(ValueError):
            parse_task_id(RULES, bad)
    splits = splits_for("iron_pickaxe")
    test, dev = set(splits["test"]), set(splits["dev"])
    assert len(test) == len(dev) == 100 and not test & dev
    seeds = {int(t.split(":")[1]) for t in test | dev}
    assert min(seeds) >= len(splits["train"])  # train seeds lie below every frozen seed
    assert splits["train"][5] == "iron_pickaxe:5"


def test_generation_is_deterministic_and_seed_dependent():
    task = RULES.tasks["collect_diamond"]
    a, b, c = (generate(RULES, task, 64, s) for s in (5, 5, 6))
    assert np.array_equal(a.grid, b.grid) and a.cows == b.cows
    assert not np.array_equal(a.grid, c.grid)


def reachable(layout, material: str, dig: bool) -> bool:
    """Whether the player could stand next to `material`, walking (and mining with every tool)."""
    world = World(RULES, RULES.tasks["collect_diamond"], layout, key=0, pad=2)
    tools = [1] * len(RULES.items)
    target = RULES.mat(material)
    offsets = (-world.width, world.width, 1, -1)
    found, _, _ = search(world.map, world.width, world.pos, step_costs(RULES, tools, dig),
                         goal=lambda t: any(world.map[t + o] == target for o in offsets))
    return found is not None


@pytest.mark.parametrize("task", TASKS)
def test_every_needed_resource_exists_and_is_reachable(task):
    spec = RULES.tasks[task]
    for seed in range(12):
        layout = generate(RULES, spec, 64, seed)
        grid = layout.grid
        assert grid[layout.spawn] == RULES.mat("grass")
        assert len(layout.cows) >= RULES.raw["worldgen"]["min_cows"]
        assert all(grid[c] == RULES.mat("cow") for c in layout.cows)
        for material in ("tree", "stone", "water"):
            assert reachable(layout, material, dig=False), (task, seed, material)
        for material in ("coal", "iron", "diamond") if task == "collect_diamond" else ():
            assert reachable(layout, material, dig=True), (task, seed, material)
        if task == "collect_diamond":
            for y, x in zip(*np.nonzero(grid == RULES.mat("diamond")), strict=True):
                around = grid[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
                assert (around == RULES.mat("lava")).any()  # diamonds lie near lava


def test_find_tree_starts_with_no_tree_in_view():
    spec = RULES.tasks["find_tree"]
    for task_id in splits_for("find_tree")["test"][:20]:
        layout = generate(RULES, spec, 64, int(task_id.split(":")[1]))
        y, x = layout.spawn
        assert not (layout.grid[y - 6:y + 7, x - 6:x + 7] == RULES.mat("tree")).any()


def fingerprint(task: str) -> str:
    digest = hashlib.sha256()
    for seed in frozen()["test"]:
        layout = generate(RULES, RULES.tasks[task], 64, seed)
        digest.update(layout.grid.tobytes())
        digest.update(repr((layout.spawn, layout.cows)).encode())
    return digest.hexdigest()[:16]


def test_generation_is_byte_identical_to_the_reference_generator():
    """308 worlds (every task, sizes 64 and 32, which needs retried attempts) hash as the generator
    of Craft-v0's first release made them: speedups of worldgen.py must not change any world,
    training worlds included (the fingerprints below cover only the test seeds at size 64)."""
    digest = hashlib.sha256()
    for size in (64, 32):
        for task in TASKS:
            for k in range(14):
                layout = generate(RULES, RULES.tasks[task], size, (k * 2654435761 + size) % 2**31)
                digest.update(layout.grid.tobytes())
                digest.update(repr((layout.spawn, layout.cows)).encode())
    assert digest.hexdigest()[:16] == "7204d97b2c0bc2a5"


def test_frozen_test_worlds_have_not_changed():
    """Test worlds are part of the benchmark: any generator change that alters them is Craft-v1."""
    stored = frozen()["fingerprints"]
    now = {task: fingerprint(task) for task in TASKS}
    assert now == stored, "the frozen test worlds changed; new fingerprints:\n" + yaml.safe_dump(now)
