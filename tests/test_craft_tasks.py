"""Evolved Craft task ids: the +start=, +spawn= and +turns= modifiers and evolve_task."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from turngym.envs.base import TurnEnv
from turngym.envs.craft import CraftEnv, CraftVectorEnv, load_rules
from turngym.envs.craft.tasks import TRAIN_SEEDS, parse_task_id

RULES = load_rules()


def test_modifiers_parse_into_a_canonical_id():
    spec = parse_task_id(RULES, "stone_pickaxe:123+turns=300+spawn=near+start=wood_pickaxe")
    assert (spec.task.name, spec.seed, spec.start, spec.spawn, spec.turns) == (
        "stone_pickaxe", 123, "make_wood_pickaxe", "near", 300)
    assert spec.task_id() == "stone_pickaxe:123+start=make_wood_pickaxe+spawn=near+turns=300"
    assert parse_task_id(RULES, "stone_pickaxe:1+start=wood").start == "collect_wood"  # an item names its source
    assert parse_task_id(RULES, "wood_pickaxe+spawn=7").task_id(5) == "wood_pickaxe:5+spawn=7"
    assert parse_task_id(RULES, "wood_pickaxe:5").task_id() == "wood_pickaxe:5"  # plain ids stay plain


@pytest.mark.parametrize("bad, fix", [
    ("stone_pickaxe:1+start=make_stone_pickaxe", "use one of collect_wood, place_table"),  # the goal itself
    ("stone_pickaxe:1+start=iron", "use one of"),  # not on this path
    ("eat_cow:1+start=collect_wood", "no steps before its goal"),
    ("wood_pickaxe:1+spawn=close", "use +spawn=near, +spawn=far"),
    ("wood_pickaxe:1+turns=0", "use +turns=<n>"),
    ("wood_pickaxe:1+turns=many", "use +turns=<n>"),
    ("wood_pickaxe:1+color=red", "use +start=<step>"),
    ("wood_pickaxe:1+turns", "use +start=<step>"),
    ("wood_pickaxe:1+turns=5+turns=6", "give it once"),
])
def test_bad_modifiers_raise_a_sentence_naming_the_fix_and_leave_the_envs_usable(bad, fix):
    with pytest.raises(ValueError, match=re.escape(fix)):
        parse_task_id(RULES, bad)
    env = CraftEnv(image=False)
    with pytest.raises(ValueError, match=re.escape(fix)):
        env.reset(seed=0, options={"task_id": bad})
    assert env.reset(seed=0)[1]["task_id"].startswith("wood_pickaxe:")
    venv = CraftVectorEnv(2)
    venv.reset(seed=0)
    before = list(venv.task_ids)
    with pytest.raises(ValueError, match=re.escape(fix)):
        venv.reset(options={"task_ids": ["wood_pickaxe:9", bad]})
    assert venv.task_ids == before  # checked before any env was reset
    with pytest.raises(ValueError, match="make a CraftVectorEnv"):
        venv.reset(options={"task_ids": ["wood_pickaxe:9", "eat_cow:9"]})


def test_start_gives_the_tools_materials_stations_and_achievements_of_the_earlier_steps():
    env = CraftEnv(task="stone_pickaxe", image=False)
    _, info = env.reset(seed=0, options={"task_id": "stone_pickaxe:77+start=wood_pickaxe"})
    state = env.state_dict()
    assert info["task_id"] == "stone_pickaxe:77+start=make_wood_pickaxe"
    assert state["inventory"] == {"wood_pickaxe": 1, "wood": 1}  # stone_pickaxe still uses one wood
    assert state["achievements"] == ["collect_wood", "place_table", "make_wood_pickaxe"]
    y, x = state["player"]["pos"]
    assert state["map"][y + 1][x] == "t"  # the placed table stands south, where the player faces
    plain = CraftEnv(task="stone_pickaxe", image=False)
    plain.reset(seed=0, options={"task_id": "stone_pickaxe:77"})
    assert plain.state_dict()["inventory"] == {} and plain.state_dict()["map"] != state["map"]
    _, info = env.reset(seed=0, options={"task_id": "iron_pickaxe:3+start=collect_iron"})
    inventory = env.state_dict()["inventory"]
    # the furnace (2 stone) and the iron pickaxe (wood, coal, iron) are still to come
    assert inventory == {"wood": 1, "stone": 2, "coal": 1, "iron": 1, "wood_pickaxe": 1, "stone_pickaxe": 1}
    # the goal and score are the original task's: one turn of noop ends with 7 of 9 steps done
    env = CraftEnv(task="iron_pickaxe", image=False, max_turns=1)
    env.reset(seed=0, options={"task_id": "iron_pickaxe:3+start=collect_iron"})
    *_, truncated, info = env.step("noop")
    chain = RULES.prerequisites("make_iron_pickaxe")
    assert truncated and not info["success"] and info["score"] == 0.0
    assert info["score_parts"]["progress"] == pytest.approx((chain.index("collect_iron") + 1) / len(chain))


def distance_to_needed(state: dict, materials: str) -> int:
    grid = np.array([list(row) for row in state["map"]])
    wanted = np.isin(grid, list(materials))
    y, x = state["player"]["pos"]
    return int(ndimage.distance_transform_cdt(~wanted, metric="taxicab")[y, x])


@pytest.mark.parametrize("task, chars", [("wood_pickaxe", "T"), ("collect_stone", "T#"), ("eat_cow", "C")])
def test_spawn_near_is_nearer_than_far(task, chars):
    env = CraftEnv(task=task, image=False)
    near, far = [], []
    for seed in range(8):
        for spawn, out in (("near", near), ("far", far)):
            env.reset(seed=0, options={"task_id": f"{task}:{seed}+spawn={spawn}"})
            state = env.state_dict()
            assert state["map"][state["player"]["pos"][0]][state["player"]["pos"][1]] == "."
            out.append(distance_to_needed(state, chars))
    assert np.mean(near) <= 1.5 and np.mean(far) >= 10, (near, far)


def test_spawn_near_never_meets_an_adjacency_goal_before_the_first_turn():
    env = CraftEnv(task="find_tree", image=False)
    for spawn in ("near", "0", "1", "2"):
        for seed in range(6):
            env.reset(seed=0, options={"task_id": f"find_tree:{seed}+spawn={spawn}"})
            assert not env.world.goal_reached() and distance_to_needed(env.state_dict(), "T") == 2
            assert not env.step("noop")[2]  # the episode goes on


def test_turns_truncates_in_both_engines():
    env = CraftEnv(image=False, max_turns=100)
    env.reset(seed=0, options={"task_id": "wood_pickaxe:4+turns=3"})
    assert [env.step("noop")[3] for _ in range(3)] == [False, False, True]
    env.reset(seed=0, options={"task_id": "wood_pickaxe:4"})
    assert env.max_turns == 100  # a plain id keeps the constructor's budget
    venv = CraftVectorEnv(2, max_turns=100)
    venv.reset(seed=0, options={"task_ids": ["wood_pickaxe:4+turns=3", "wood_pickaxe:4"]})
    truncated = [venv.step(np.full(2, 5))[3] for _ in range(3)]
    assert [t.tolist() for t in truncated] == [[False, False], [False, False], [True, False]]


def test_evolve_task_gives_valid_deterministic_children_that_reset_in_both_engines():
    assert TurnEnv.evolve_task("anything", np.random.default_rng(0)) is None  # families opt in
    children = []
    for task in ("collect_wood", "stone_pickaxe", "collect_diamond", "find_tree", "eat_cow"):
        rng, task_id = np.random.default_rng(len(task)), f"{task}:1"
        for _ in range(12):
            child = CraftEnv.evolve_task(task_id, rng)
            spec = parse_task_id(RULES, child)
            assert CraftEnv.base_task(child) == task and spec.seed < len(TRAIN_SEEDS)
            assert child != task_id and spec.task_id() == child
            children.append(child)
            task_id = child
    again = []
    for task in ("collect_wood", "stone_pickaxe", "collect_diamond", "find_tree", "eat_cow"):
        rng, task_id = np.random.default_rng(len(task)), f"{task}:1"
        for _ in range(12):
            task_id = CraftEnv.evolve_task(task_id, rng)
            again.append(task_id)
    assert again == children
    assert {"start", "spawn", "turns"} <= {m.split("=")[0] for c in children for m in c.split("+")[1:]}
    for child in children[::3]:
        task = CraftEnv.base_task(child)
        env = CraftEnv(task=task, image=False)
        _, info = env.reset(seed=0, options={"task_id": child})
        venv = CraftVectorEnv(1, task=task)
        venv.reset(seed=0, options={"task_ids": [child]})
        assert info["task_id"] == venv.task_ids[0] == child
        assert venv.state_dict(0) == env.state_dict()
