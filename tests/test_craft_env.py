"""Craft mechanics on hand-drawn maps, the skills, the observations and the oracle."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import craft_layout

from turngym.agents import make_agent
from turngym.envs.craft import CraftEnv, load_rules
from turngym.envs.craft.world import World
from turngym.rollout import rollout

RULES = load_rules()
A = {a: i for i, a in enumerate(RULES.actions)}
INV = {item: i for i, item in enumerate(RULES.items)}

OPEN = """
.......
.......
...@...
.......
.......
"""


def world(art: str = OPEN, task: str = "collect_diamond", key: int = 1, **inventory: int) -> World:
    w = World(RULES, RULES.tasks[task], craft_layout(art), key, pad=5)
    for item, n in inventory.items():
        w.inventory[INV[item]] = n
    return w


def face(w: World, direction: str) -> None:
    """Turn towards a blocked tile (a move into it only turns)."""
    assert w.step(A[f"move {direction}"]) is None


def test_collecting_wood_leaves_the_tree():
    w = world("""
    ...T...
    ...@...
    """)
    face(w, "north")
    assert w.step(A["do"]) is None
    assert w.inventory[INV["wood"]] == 1 and w.map[w.target] == RULES.mat("tree")
    assert "collect_wood" in w.state()["achievements"]


def test_mining_needs_the_right_pickaxe_and_leaves_a_path():
    w = world("""
    .#i....
    .@.....
    """)
    face(w, "north")
    assert "wood_pickaxe" in w.why_not(A["do"])
    w.inventory[INV["wood_pickaxe"]] = 1
    assert w.step(A["do"]) is None
    assert w.inventory[INV["stone"]] == 1 and w.map[w.target] == RULES.mat("path")
    w.step(A["move north"])
    face(w, "east")
    assert "stone_pickaxe" in w.why_not(A["do"])


def test_stations_and_recipes():
    w = world(wood=4)
    before = w.state()
    assert "3 wood" in w.why_not(A["place furnace"]) or "stone" in w.why_not(A["place furnace"])
    assert "nearby table" in w.why_not(A["make wood_pickaxe"])
    assert w.state() == before  # checks never change anything
    assert w.step(A["place table"]) is None  # facing south, onto grass
    assert w.map[w.target] == RULES.mat("table") and w.inventory[INV["wood"]] == 1
    assert w.step(A["make wood_pickaxe"]) is None and w.inventory[INV["wood_pickaxe"]] == 1
    w.inventory[INV["stone"]] = 2
    assert "cannot place furnace there" in w.why_not(A["place furnace"])  # facing the table
    w.step(A["move north"])
    assert w.step(A["place furnace"]) is None  # the table is 2 tiles away: still nearby
    w.inventory[INV["wood"]], w.inventory[INV["coal"]], w.inventory[INV["iron"]] = 1, 1, 1
    assert w.step(A["make iron_pickaxe"]) is None
    w.inventory[INV["wood"]], w.inventory[INV["coal"]], w.inventory[INV["iron"]] = 1, 1, 1
    for _ in range(3):
        w.step(A["move east"])
    assert "nearby table and a nearby furnace" in w.why_not(A["make iron_sword"])


def test_inventory_is_capped():
    w = world("""
    ...T...
    ...@...
    """)
    face(w, "north")
    for _ in range(12):
        w.step(A["do"])
    assert w.inventory[INV["wood"]] == RULES.raw["world"]["inventory_max"]


def test_walking_into_lava_kills():
    env = CraftEnv(task="wood_pickaxe")
    env.reset(seed=0)
    env.world = World(RULES, env.task, craft_layout(".L.\n.@.\n..."), 1, pad=env.view // 2 + 1)
    _, reward, terminated, truncated, info = env.step("move north")
    assert terminated and not truncated and reward == 0.0
    assert info["success"] is False and info["score"] == 0.0 and info["score_parts"]["died"] == 1.0
    assert info["score_parts"]["died_lava"] == 1.0  # the cause, for the lava ablation of code rewards
    assert info["score_parts"]["died_thirst"] == info["score_parts"]["died_hunger"] == 0.0


def test_a_death_of_thirst_is_told_from_lava_and_hunger():
    env = CraftEnv(task="wood_pickaxe", max_turns=10_000)
    env.reset(seed=0)
    env.world = World(RULES, env.task, craft_layout("...\n.@.\n..."), 1, pad=env.view // 2 + 1)
    env.world.food = RULES.raw["vitals"]["max"] * 10  # (food outlasts drink here, so only thirst kills)
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step("noop")
    parts = info["score_parts"]
    assert (parts["died"], parts["died_thirst"], parts["died_hunger"], parts["died_lava"]) == (1.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(("sword", "hits"), [(None, 3), ("wood_sword", 2), ("stone_sword", 1)])
def test_cows_take_hits_then_are_eaten(sword, hits):
    art = """
    #######
    #.....#
    #..@..#
    ###C###
    #######
    """
    w = world(art, **({sword: 1} if sword else {}))
    w.food = 2
    face(w, "south")
    for _ in range(hits - 1):
        w.step(A["do"])
        assert w.map[w.target] == RULES.mat("cow")
    w.step(A["do"])
    assert w.map[w.target] == RULES.mat("grass") and w.food == 8
    assert "eat_cow" in w.state()["achievements"] and w.state()["cows"] == []


def test_cows_wander_on_grass_and_never_overlap():
    w = world("\n".join(["C.C.C.C.C.C"] * 2 + ["....@......"] + ["C.C.C.C.C.C"] * 2), key=3)
    start = sorted(tuple(c["pos"]) for c in w.state()["cows"])
    for _ in range(200):
        w.step(A["noop"])
        cows = [tuple(c["pos"]) for c in w.state()["cows"]]
        assert len(set(cows)) == len(cows) == (w.grid == RULES.mat("cow")).sum()
        assert all(w.grid[y + w.pad, x + w.pad] == RULES.mat("cow") for y, x in cows)
        assert w.yx(w.pos) not in cows
    assert sorted(cows) != start


def test_thirst_and_hunger_kill_and_drinking_helps():
    v = RULES.raw["vitals"]
    w = world()
    ticks = 0
    while not w.dead:
        w.step(A["noop"])
        ticks += 1
    assert w.drink == 0 and ticks > v["drink_decay_every"] * v["max"]
    w = world("""
    ...~...
    ...@...
    """)
    face(w, "north")
    for _ in range(v["drink_decay_every"] * 2):
        w.step(A["noop"])
    thirsty = w.drink
    w.step(A["do"])
    assert w.drink == thirsty + 1 and "collect_drink" in w.state()["achievements"]


def test_saplings_come_from_grass_about_one_time_in_ten():
    found = 0
    for key in range(400):
        w = world(key=key)
        w.step(A["do"])  # facing grass
        found += w.inventory[INV["sapling"]]
    assert 20 <= found <= 65
    w.inventory[INV["sapling"]] = 1
    assert w.step(A["place sapling"]) is None and w.map[w.target] == RULES.mat("sapling")


def skills_env(art: str, task: str = "collect_diamond", **inventory: int) -> CraftEnv:
    env = CraftEnv(task=task, action_mode="skills")
    env.reset(seed=0)
    env.world = World(RULES, env.task, craft_layout(art), 1, pad=env.view // 2 + 1)
    for item, n in inventory.items():
        env.world.inventory[INV[item]] = n
    env.admissible = env._actions()
    return env


def test_goto_walks_next_to_the_nearest_visible_target_and_faces_it():
    env = skills_env("""
    .........
    ........T
    .........
    ....@....
    .........
    """)
    assert "goto tree" in env.admissible and "goto stone" not in env.admissible
    _, _, _, _, info = env.step("goto tree")
    w = env.world
    assert info["valid"] and info["turn"] == 1 and w.tick > 3
    assert w.map[w.target] == RULES.mat("tree")
    _, _, _, _, info = env.step("goto diamond")
    assert not info["valid"] and "no diamond in view" in info["error"]


def test_goto_never_crosses_lava_and_mines_through_rock():
    lava_wall = """
    .........
    LLLLLLLL.
    ....T....
    LLLLLLLL.
    ....@....
    """
    env = skills_env(lava_wall)
    env.step("goto tree")
    assert not env.world.dead and env.world.map[env.world.target] == RULES.mat("tree")
    sealed = skills_env(lava_wall.replace("LLLLLLLL.", "LLLLLLLLL"))
    _, _, _, _, info = sealed.step("goto tree")
    assert not info["valid"] and "no safe path" in info["error"]
    rock = skills_env("""
    #########
    ####i####
    #########
    ....@....
    """, wood_pickaxe=1, stone_pickaxe=1)
    rock.step("goto iron")
    assert rock.world.map[rock.world.target] == RULES.mat("iron") and rock.world.inventory[INV["stone"]] >= 1


def test_a_goto_stops_at_the_step_that_kills_the_player():
    # goto mines through rock with three world steps (turn, do, move): dying of hunger on any of
    # them must end the walk there, not mine and move a dead player
    art = """
    #########
    ####i####
    #########
    ....@....
    """
    deaths = set()
    for tick in range(40):
        env = skills_env(art, wood_pickaxe=1, stone_pickaxe=1)
        w = env.world
        w.health, w.food, w.tick = 1, 0, tick
        before, pos = np.array(w.map), w.pos
        env.step("goto iron")
        if w.dead:
            steps = w.tick - tick  # the world steps played: turn to the rock above, mine it, step in
            deaths.add(steps)
            assert int((np.array(w.map) != before).sum()) == (steps >= 2)  # mined only if alive to mine
            assert (w.pos != pos) == (steps >= 3)  # moved only if alive to move
    assert {1, 2} <= deaths  # it died on the turn and on the mining step in some of these


def test_explore_moves_that_way_up_to_a_view():
    env = skills_env("\n".join(["." * 21] * 10 + ["." * 10 + "@" + "." * 10] + ["." * 21] * 10))
    y0, x0 = env.world.yx(env.world.pos)
    _, _, _, _, info = env.step("explore north")
    y1, x1 = env.world.yx(env.world.pos)
    assert info["valid"] and y1 == y0 - env.view and x1 == x0
    _, _, _, _, info = env.step("explore up")
    assert not info["valid"] and "direction" in info["error"]


def test_text_observation_is_self_contained():
    env = CraftEnv(task="wood_pickaxe")
    env.reset(seed=0)
    env.world = World(RULES, env.task, craft_layout("""
    .........
    ..T......
    .........
    ....@....
    ....~....
    """), 1, pad=env.view // 2 + 1)
    env.admissible = env._actions()
    text = env._text()
    assert "Task: Make a wood pickaxe." in text
    assert ". . T . . . . . ." in text and ". . . . @ . . . ." in text
    assert "tree: 2 north, 2 west" in text and "water: 1 south" in text
    assert "Legend: @ you, . grass, T tree, X edge, ~ water" in text
    assert "place table: 3 wood" in text and "Possible now: move north" in text
    assert set(text) <= set(env.observation_space["text"].character_set)


def test_image_shows_the_view_and_changes_when_the_player_moves():
    env = gym.make("turngym/Craft-v0", task="collect_stone")
    obs, _ = env.reset(seed=4)
    image = obs["image"]
    assert image.shape == (144, 144, 3) and image.dtype == np.uint8 and image.std() > 10
    moved = next(obs for a in ("move north", "move south", "move east", "move west")
                 if env.step(a)[0]["image"].tobytes() != image.tobytes())
    assert moved["image"].shape == image.shape
    small = gym.make("turngym/Craft-v0", view=7, image_size=70).reset(seed=0)[0]
    assert small["image"].shape == (70, 70, 3)
    with pytest.raises(ValueError, match="multiple of view"):
        gym.make("turngym/Craft-v0", image_size=100)


def test_valid_exactly_when_listed_as_possible():
    """`info["valid"]` holds exactly for the actions the previous turn listed (primitive mode)."""
    env = gym.make("turngym/Craft-v0", task="iron_pickaxe", image=False)
    rng = np.random.default_rng(0)
    oracle = make_agent("oracle", env)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        oracle.reset(obs, info)
        for t in range(150):
            action = oracle.act(obs, info) if t % 2 else RULES.actions[rng.integers(len(RULES.actions))]
            listed = action in info["actions"]
            obs, _, terminated, truncated, info = env.step(action.upper() if t % 5 == 0 else action)
            assert info["valid"] == listed, (action, info["error"])
            if terminated or truncated:
                break


def test_state_dict_is_json_and_complete():
    env = gym.make("turngym/Craft-v0")
    env.reset(seed=0)
    state = json.loads(json.dumps(env.unwrapped.state_dict()))
    assert {"task_id", "turn", "task", "goal", "map", "player", "inventory", "vitals", "cows", "achievements",
            "tick", "dead"} <= state.keys()
    assert len(state["map"]) == 64 and all(len(row) == 64 for row in state["map"])
    y, x = state["player"]["pos"]
    assert state["map"][y][x] == "."


@pytest.mark.parametrize("task", list(RULES.tasks))
def test_oracle_solves_test_tasks(task):
    env = gym.make("turngym/Craft-v0", task=task, image=False)
    oracle = make_agent("oracle", env)
    wins = [rollout(env, oracle, seed=i, options={"split": "test", "index": i}, record_images=False).success
            for i in range(8)]
    assert sum(wins) >= 7


@pytest.mark.parametrize("task", ["iron_pickaxe", "collect_diamond"])
def test_random_agent_gets_nowhere_up_the_tech_tree(task):
    env = gym.make("turngym/Craft-v0", task=task, image=False)
    agent = make_agent("random", env)
    wins = [rollout(env, agent, seed=i, options={"split": "test", "index": i}, record_images=False).success
            for i in range(6)]
    assert sum(wins) == 0


def test_oracle_in_skills_mode_and_progress_parts():
    env = gym.make("turngym/Craft-v0", task="stone_pickaxe", action_mode="skills", image=False)
    traj = rollout(env, make_agent("oracle", env), seed=0, options={"split": "dev", "index": 0})
    assert traj.success and traj.score_parts["progress"] == 1.0 and traj.score_parts["make_stone_pickaxe"] == 1.0
    lazy = rollout(gym.make("turngym/Craft-v0", task="stone_pickaxe", max_turns=5), make_agent("random", env), seed=0)
    assert lazy.truncated and 0.0 <= lazy.score_parts["progress"] < 1.0


def test_a_task_id_of_another_task_leaves_the_default_task_alone():
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe")
    assert env.reset(seed=0, options={"task_id": "eat_cow:5"})[1]["task_id"] == "eat_cow:5"
    assert env.unwrapped.max_turns == RULES.tasks["eat_cow"].max_turns["primitive"]
    assert env.reset(seed=0)[1]["task_id"].startswith("wood_pickaxe:")
    assert env.reset(seed=0, options={"task_id": "find_tree"})[1]["task_id"].startswith("find_tree:")


def test_oracle_drinks_and_eats_when_low():
    env = gym.make("turngym/Craft-v0", task="collect_diamond", image=False)
    obs, info = env.reset(seed=1, options={"split": "test", "index": 1})
    oracle = make_agent("oracle", env)
    oracle.reset(obs, info)
    world = env.unwrapped.world
    world.drink, world.food = 1, 1
    for _ in range(150):
        obs, _, terminated, _, info = env.step(oracle.act(obs, info))
        if world.drink == RULES.raw["vitals"]["max"] and "eat_cow" in world.state()["achievements"]:
            break
    assert not terminated and world.drink == RULES.raw["vitals"]["max"] and world.food > 3


def test_text_map_false_leaves_out_only_the_map_and_its_legend():
    full = CraftEnv(action_mode="skills", image=False)
    short = CraftEnv(action_mode="skills", image=False, text_map=False)
    texts = [env.reset(seed=4)[0]["text"].splitlines() for env in (full, short)]
    for action in ("goto tree", "do", "do"):
        texts = [t + env.step(action)[0]["text"].splitlines() for t, env in zip(texts, (full, short), strict=True)]
    kept = [line for line in texts[0] if not line.startswith(("Map (", "Legend: ")) and not set(line) <= set(
        "".join(full.rules.chars) + "@ ")]
    assert texts[1] == kept and len(texts[1]) < len(texts[0])
