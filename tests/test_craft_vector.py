"""CraftVectorEnv plays exactly like N single CraftEnvs with the same seeds and actions."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from turngym.agents import make_agent
from turngym.envs.craft import CraftEnv, CraftVectorEnv, load_rules
from turngym.envs.craft.tasks import parse_task_id
from turngym.envs.craft.worldgen import generate

RULES = load_rules()
ACTION = {a: i for i, a in enumerate(RULES.actions)}


def lockstep(task: str, n: int, steps: int, choose, mode=AutoresetMode.NEXT_STEP, max_turns: int = 120,
             reward: str = "success", task_ids: list[str] | None = None, worldgen_workers: int = 0) -> int:
    """Step a vector env and n single envs together, comparing everything; returns episodes ended.
    `task_ids`: the first episode of each env (later ones are drawn from the reset seeds)."""
    venv = CraftVectorEnv(n, task=task, max_turns=max_turns, autoreset_mode=mode, reward=reward,
                          worldgen_workers=worldgen_workers)
    envs = [CraftEnv(task=task, image=False, max_turns=max_turns, symbolic=True, reward=reward) for _ in range(n)]
    venv.reset(seed=100, options=None if task_ids is None else {"task_ids": task_ids})
    infos = [env.reset(seed=100 + i, options=None if task_ids is None else {"task_id": task_ids[i]})[1]
             for i, env in enumerate(envs)]
    ended = 0
    for t in range(steps):
        actions = np.array([choose(t, i, envs[i], infos[i]) for i in range(n)])
        fresh = venv._needs_reset.copy()
        obs, reward, terminated, truncated, info = venv.step(actions)
        for i, env in enumerate(envs):
            if fresh[i]:  # next-step autoreset: this step only resets
                infos[i] = env.reset()[1]
                assert not terminated[i] and not truncated[i] and reward[i] == 0
                continue
            name = RULES.actions[actions[i]] if actions[i] < len(RULES.actions) else "x"
            single, r, te, tr, infos[i] = env.step(name)
            assert (r, te, tr, infos[i]["valid"]) == (reward[i], terminated[i], truncated[i], info["valid"][i])
            if not (te or tr) or mode == AutoresetMode.NEXT_STEP:  # CraftEnv(symbolic=True) sees the same
                for key in ("view", "inventory", "vitals", "facing"):
                    assert np.array_equal(single[key], obs[key][i]), (t, i, key)
            if te or tr:
                ended += 1
                assert info["_success"][i] and info["success"][i] == infos[i]["success"]
                assert info["progress"][i] == infos[i]["score_parts"]["progress"]
                if mode == AutoresetMode.SAME_STEP:
                    infos[i] = env.reset()[1]
        for i, env in enumerate(envs):
            assert venv.state_dict(i) == env.state_dict(), (t, i)
            listed = {ACTION[a] for a in infos[i]["actions"]}
            if listed:  # after an ended episode a single env lists nothing until reset
                assert set(np.flatnonzero(info["action_mask"][i])) == listed
        assert venv.observation_space.contains(obs)
    venv.close()
    return ended


def random_choice(rng):
    def choose(t, i, env, info):
        if rng.random() < 0.15:
            return int(rng.integers(len(RULES.actions) + 3))  # sometimes invalid or out of range
        return ACTION[info["actions"][rng.integers(len(info["actions"]))]] if info["actions"] else 0
    return choose


@pytest.mark.parametrize("task", ["eat_cow", "find_tree", "collect_coal"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_random_play_matches_single_envs(task, mode):
    assert lockstep(task, 5, 260, random_choice(np.random.default_rng(1)), mode) >= 5


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_worlds_made_ahead_by_workers_play_as_single_envs(mode):
    assert lockstep("find_tree", 5, 200, random_choice(np.random.default_rng(3)), mode, max_turns=15,
                    worldgen_workers=1) >= 20


# Python 3.11's pool manager, breaking, sets an exception on futures already cancelled and raises
# InvalidStateError in its own thread; the env is unaffected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_world_workers_change_no_world_across_reseeds_task_ids_and_a_dead_pool():
    """Worlds made ahead are taken only for the seed drawn; a reseed, explicit task ids and workers
    that die fall back to making the world here, with a warning, never a different world."""
    def play(workers: int, kill: bool = False) -> list:
        env = CraftVectorEnv(8, task="collect_wood", max_turns=6, worldgen_workers=workers)
        rng, seen = np.random.default_rng(0), []
        obs, _ = env.reset(seed=5)
        for t in range(60):
            if t == 40 and kill:
                for process in list(env._pool._executor._processes.values()):
                    process.kill()
                    process.join()
            if t == 20:
                obs, _ = env.reset(seed=9)
            elif t == 30:
                obs, _ = env.reset(options={"task_ids": [f"collect_wood:{k}" for k in range(8)]})
            else:
                obs, *_ = env.step(rng.integers(0, env.single_action_space.n, 8))
            seen.append((obs["view"].copy(), list(env.task_ids)))
        env.close()
        return seen

    def same(a: list, b: list) -> bool:
        return all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))

    alone = play(0)
    assert len({task for _, ids in alone for task in ids}) > 30  # many resets, so many worlds made ahead
    assert same(play(1), alone)
    with pytest.warns(RuntimeWarning, match="makes its worlds itself"):
        assert same(play(1, kill=True), alone)
    with pytest.raises(ValueError, match="worldgen_workers"):
        CraftVectorEnv(2, worldgen_workers=-1)


def test_envs_that_draw_one_seed_share_one_world(monkeypatch):
    """A GRPO group's envs reset with one seed: its world is made once, and each env plays its own copy."""
    import turngym.envs.craft.vector as vector

    made = []
    monkeypatch.setattr(vector, "generate", lambda *args: made.append(args[-1]) or generate(*args))
    env = CraftVectorEnv(8, task="collect_wood", max_turns=5)
    obs, _ = env.reset(seed=[11] * 4 + [12] * 4)
    assert len(made) == 2 and len(set(env.task_ids[:4])) == 1 and env.task_ids[0] != env.task_ids[4]
    assert all(np.array_equal(obs["view"][0], obs["view"][k]) for k in range(4))
    rng = np.random.default_rng(0)
    for _ in range(12):  # play on (and through autoresets): the kept worlds stay as they were made
        env.step(rng.integers(0, len(RULES.actions), 8))
    task = RULES.tasks["collect_wood"]
    assert all(np.array_equal(layout.grid, generate(RULES, task, 64, seed).grid) for (_, seed), layout in
               env._worlds.items())
    for _ in range(2 * vector.RECENT_WORLDS // 8):  # new worlds push the oldest out
        env.reset(seed=int(np.random.default_rng(len(made)).integers(2**31)))
    assert len(env._worlds) == vector.RECENT_WORLDS


def test_oracle_play_up_the_whole_tech_tree_matches_single_envs():
    oracles = {}

    def choose(t, i, env, info):
        if i not in oracles or info["turn"] == 0:
            oracles[i] = make_agent("oracle", env)
            oracles[i].reset({}, info)
        return ACTION[oracles[i].act({}, info)]

    assert lockstep("collect_diamond", 3, 400, choose, max_turns=400) >= 3


def test_evolved_tasks_play_identically_in_both_engines():
    """Start items, stations, moved spawns and turn budgets are set up once for both engines."""
    rng, ids = np.random.default_rng(7), []
    for i in range(6):
        task_id = f"iron_pickaxe:{i}"
        for _ in range(1 + i):
            task_id = CraftEnv.evolve_task(task_id, rng)
        spec = parse_task_id(RULES, task_id)
        ids.append(replace(spec, turns=30 + 10 * i).task_id())  # short budgets, so autoresets follow
    ids[0] = "iron_pickaxe:3+start=collect_iron+spawn=far+turns=40"
    assert lockstep("iron_pickaxe", 6, 150, random_choice(np.random.default_rng(2)), max_turns=90,
                    reward="progress", task_ids=ids) >= 6


def test_progress_reward_matches_single_envs():
    """reward="progress" pays the fraction of the prerequisite chain at the end, in both engines."""
    rng = np.random.default_rng(3)
    assert lockstep("wood_pickaxe", 6, 130, random_choice(rng), max_turns=60, reward="progress") >= 6
    env = CraftEnv(task="stone_pickaxe", image=False, reward="progress", max_turns=40)
    env.reset(seed=5)
    oracle = make_agent("oracle", env)
    obs, info = env.reset(seed=5)
    oracle.reset(obs, info)
    done, reward = False, 0.0
    while not done:
        obs, reward, te, tr, info = env.step(oracle.act(obs, info))
        done = te or tr
    chain = RULES.prerequisites("make_stone_pickaxe")
    assert reward == sum(info["score_parts"][a] for a in chain) / len(chain) and 0 < reward < 1
    assert info["score"] == 0.0  # the score stays the success


def test_starvation_matches_single_envs():
    assert lockstep("collect_diamond", 2, 520, lambda t, i, env, info: ACTION["noop"], max_turns=600) == 2


def test_spaces_options_and_validation():
    venv = CraftVectorEnv(4, task="collect_wood")
    obs, info = venv.reset(seed=0, options={"split": "test", "index": 10})
    assert venv.task_ids == [f"collect_wood:{s}" for s in venv.splits["test"].numbers[10:14]]
    assert obs["view"].shape == (4, 9, 9) and obs["inventory"].shape == (4, len(RULES.items))
    assert info["action_mask"].shape == (4, len(RULES.actions))
    ids = [venv.splits["dev"][i] for i in range(4)]
    venv.reset(seed=0, options={"task_ids": ids})
    assert venv.task_ids == ids
    with pytest.raises(ValueError):
        CraftVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError):
        venv.reset(seed=[1, 2])


def encoded_afresh(venv: CraftVectorEnv, i: int) -> dict:
    """World i's state encoded from scratch: a shallow copy of the env without its cache of map rows."""
    clone = copy.copy(venv)
    vars(clone).pop("_map_text", None)
    return clone.state_dict(i)


def test_state_dicts_keep_encoded_rows_that_match_a_fresh_encoding():
    # short episodes: resets, mining, placing and cows moving all change the cached rows
    venv = CraftVectorEnv(6, task="collect_coal", max_turns=25)
    _, info = venv.reset(seed=3)
    rng = np.random.default_rng(3)
    for t in range(120):
        masks = info["action_mask"]
        _, _, _, _, info = venv.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
        states = venv.state_dicts() if t % 3 else venv.state_dicts([4, 1])  # every world, or some
        worlds = range(6) if t % 3 else (4, 1)
        assert len(states) == len(worlds)
        for j, i in enumerate(worlds):
            assert states[j] == encoded_afresh(venv, i) == venv.state_dict(i), (t, i)
    first, again = venv.state_dicts()[2], venv.state_dicts()[2]
    assert first == again and first is not again
    first["map"][0] = "?"  # each read is new, down to the lists and dicts inside
    first["cows"][0]["pos"][0] = -1
    first["legend"].clear()
    assert venv.state_dicts()[2] == again and venv.state_dicts()[-1] == venv.state_dict(5)
    with pytest.raises(IndexError):
        venv.state_dicts()[6]
