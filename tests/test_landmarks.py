"""The symbolic agent's landmark memory (agents/landmarks.py): dead reckoning from its own actions and
views is exact, remembered stations are where the true map has them, and the policy that reads the
memory plays the same in training (vector env) and evaluation (single env)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import turngym  # noqa: F401
from turngym.agents.landmarks import SCALE, Remember
from turngym.agents.symbolic import SymbolicAgent, SymbolicConfig, new_symbolic_policy
from turngym.envs.craft import CraftVectorEnv

MATERIALS = ("table", "furnace", "water")


def _play(n: int, steps: int, task_ids: list[str]) -> None:
    env = Remember(CraftVectorEnv(n, task="iron_pickaxe"), MATERIALS)
    obs, info = env.reset(seed=7, options={"task_ids": task_ids})
    memory, rng = env.memory, np.random.default_rng(0)
    start = np.array([s["player"]["pos"] for s in env.state_dicts()])
    checked = moved = 0
    for _ in range(steps):
        mask = info["action_mask"]
        # mostly moves, with every other action mixed in (placing tables, running into trees and water)
        actions = np.array([rng.choice(np.flatnonzero(m)) if rng.random() < 0.3 else rng.integers(4) for m in mask])
        obs, _, terminated, truncated, info = env.step(actions)
        states = env.state_dicts()
        for i, state in enumerate(states):
            if (terminated | truncated)[i]:
                continue  # (the next step resets it; the final state is still this episode's)
            pos = np.array(state["player"]["pos"])
            assert (memory.pos[i] == pos - start[i]).all(), "dead reckoning drifted"
            moved += int((pos != start[i]).any())
            rows = state["map"]
            for k, name in enumerate(MATERIALS[:2]):  # stations never move or vanish
                if memory.seen[i, k]:
                    y, x = memory.at[i, k] + start[i]
                    assert state["legend"][rows[y][x]] == name
                    checked += 1
            features = obs["landmarks"][i].reshape(3, 3)
            assert features[:, 0].tolist() == memory.seen[i].tolist()
            offset = np.clip((memory.at[i] - memory.pos[i]) / SCALE, -1, 1)
            assert np.allclose(features[:, 1:], np.where(memory.seen[i][:, None], offset, 0))
        ended = terminated | truncated
        if ended.any():  # the next step starts these envs afresh: its state is the new start
            obs, _, _, _, info = env.step(np.zeros(n, np.int64))
            states = env.state_dicts()
            for i in np.flatnonzero(ended):
                start[i] = states[i]["player"]["pos"]
                assert (memory.pos[i] == 0).all()
    assert moved > n and checked > n  # the check saw players walk and stations remembered


def test_dead_reckoning_is_exact_and_remembered_stations_are_real():
    # evolved starts put a table and a furnace next to the player; plain tasks add walking from scratch
    ids = [f"iron_pickaxe:{s}+start=place_furnace" for s in range(6)] + [f"iron_pickaxe:{s}" for s in range(2)]
    _play(8, 250, ids)


def test_turn_budget_resets_clear_the_memory():
    _play(4, 130, [f"iron_pickaxe:{s}+start=place_furnace+turns=40" for s in range(4)])


def test_the_vector_env_and_the_single_env_agent_compute_the_same_memory_and_actions():
    torch.manual_seed(0)
    policy = new_symbolic_policy(SymbolicConfig.for_craft(landmarks="table,furnace,water"), seed=3)
    task = "iron_pickaxe:5+start=place_furnace"
    single = gym.make("turngym/Craft-v0", task="iron_pickaxe", symbolic=True)
    agent = SymbolicAgent(policy, single.unwrapped, sample=False)
    obs, info = single.reset(seed=0, options={"task_id": task})
    agent.reset(obs, info, seed=0)
    vector = Remember(CraftVectorEnv(1, task="iron_pickaxe"), MATERIALS)
    vobs, vinfo = vector.reset(seed=0, options={"task_ids": [task]})
    for _ in range(60):
        action = agent.act(obs, info)
        assert np.allclose(agent.memory.features(np.zeros(1, np.int64)), vobs["landmarks"])
        with torch.no_grad():
            logits, _ = policy({k: torch.as_tensor(np.asarray(v)) for k, v in vobs.items()},
                               torch.from_numpy(vinfo["action_mask"]))
        assert agent.actions[int(logits.argmax())] == action
        obs, _, terminated, truncated, info = single.step(action)
        vobs, _, _, _, vinfo = vector.step(np.array([agent.index[action]]))
        if terminated or truncated:
            break


def test_a_landmark_policy_needs_the_memory_and_names_the_fix():
    policy = new_symbolic_policy(SymbolicConfig.for_craft(landmarks="table"))
    env = CraftVectorEnv(2)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="Remember"):
        policy({k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()})
    with pytest.raises(ValueError, match="unknown landmark material"):
        SymbolicConfig.for_craft(landmarks="table,tabel")


def test_net_options_size_a_fresh_symbolic_policy_and_are_checked():
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import build

    config = NeuralTrainConfig(env_id="turngym/Craft-v0", task="wood_pickaxe", groups=1, group_size=2,
                               net={"hidden": 32, "landmarks": "table,water"})
    config.check()
    policy, actor, backend = build(config)
    assert backend == "symbolic" and policy.config.hidden == 32 and policy.config.landmarks == ("table", "water")
    obs, _ = actor.reset([0, 0])
    assert obs["landmarks"].shape == (2, 6)
    actor.close()
    with pytest.raises(ValueError, match=r"unknown net option.*symbolic"):
        NeuralTrainConfig(env_id="turngym/Craft-v0", task="wood_pickaxe", net={"dim": 8}).check()
    with pytest.raises(ValueError, match="unknown landmark material"):
        NeuralTrainConfig(env_id="turngym/Craft-v0", task="wood_pickaxe", net={"landmarks": "tabel"}).check()
