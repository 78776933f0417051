"""Craft's rule agent (`heuristic`): it plays from the observation alone and still climbs the tech tree;
and cloning it into the symbolic policy (`turngym bc ... -k symbolic=true`)."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch
from typer.testing import CliRunner

from turngym.agents import make_agent
from turngym.agents.symbolic import SymbolicConfig, new_symbolic_policy
from turngym.apps.cli import app
from turngym.rollout import rollout
from turngym.trainers.bc import _Noisy, clone_symbolic, collect_symbolic

CRAFT = "turngym/Craft-v0"


def blind(env: gym.Env) -> None:
    """Make every read of the true state fail: the rule agent must not need it."""
    def refuse(*_, **__):
        raise AssertionError("the heuristic read the true state")
    env.unwrapped.state_dict = refuse


@pytest.mark.parametrize(("task", "episodes", "wins"), [("stone_pickaxe", 6, 5), ("iron_pickaxe", 4, 3)])
def test_it_climbs_the_tech_tree_without_the_map(task, episodes, wins):
    env = gym.make("turngym/Craft-v0", task=task, image=False)
    blind(env)
    agent = make_agent("heuristic", env)
    won = [rollout(env, agent, seed=i, options={"split": "test", "index": i}, record_images=False).success
           for i in range(episodes)]
    assert sum(won) >= wins  # random play makes neither pickaxe (test_craft_env)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_its_map_stays_aligned_with_the_world(noise):
    """Dead reckoning: the agent's position on its own map moves exactly as the player does, also when
    DART's noise (trainers/bc.py) plays other actions than the agent's."""
    env = gym.make("turngym/Craft-v0", task="collect_coal", image=False)
    agent = make_agent("heuristic", env)
    player = _Noisy(agent, noise, lambda obs, info: list(info["actions"])) if noise else agent
    for episode in range(2):
        obs, info = env.reset(seed=episode, options={"split": "dev", "index": episode})
        player.reset(obs, info, seed=episode)
        world = env.unwrapped.world
        start = world.yx(world.pos)
        for _ in range(120):
            action = player.act(obs, info)
            (y, x), (ay, ax), (sy, sx) = world.yx(world.pos), divmod(agent.pos, agent.width), divmod(agent.start,
                                                                                                     agent.width)
            assert (y - start[0], x - start[1]) == (ay - sy, ax - sx)
            # every tile in view is drawn where the world has it (the player's own tile aside)
            view = world.view(env.unwrapped.view)
            r = env.unwrapped.view // 2
            drawn = [[agent.cells[agent.pos + dy * agent.width + dx] for dx in range(-r, r + 1)]
                     for dy in range(-r, r + 1)]
            view[r][r] = drawn[r][r]
            assert drawn == view.tolist()
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break


def test_text_and_symbolic_observations_give_the_same_play():
    trajectories = []
    for symbolic in (False, True):
        env = gym.make("turngym/Craft-v0", task="stone_pickaxe", image=False, symbolic=symbolic)
        trajectories.append(rollout(env, make_agent("heuristic", env), seed=3, options={"split": "test", "index": 3},
                                    record_images=False))
    text, arrays = ([t.action for t in traj.turns] for traj in trajectories)
    assert text == arrays and trajectories[0].success


def test_it_needs_a_map_in_the_observation():
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", image=False, text_map=False)
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match="text_map"):
        make_agent("heuristic", env).reset(obs, info)


def test_it_tops_up_drink_when_water_is_near():
    env = gym.make("turngym/Craft-v0", task="collect_diamond", image=False)
    obs, info = env.reset(seed=1, options={"split": "test", "index": 1})
    agent = make_agent("heuristic", env)
    agent.reset(obs, info)
    world = env.unwrapped.world
    world.drink = 2
    for _ in range(300):
        obs, _, terminated, _, info = env.step(agent.act(obs, info))
        if world.drink == 9 or terminated:
            break
    assert not terminated and world.drink == 9


def test_a_symbolic_clone_of_the_rule_agent_mines_stone(tmp_path):
    kwargs = {"task": "stone_pickaxe", "symbolic": True, "image": False}
    data = collect_symbolic(CRAFT, 50, env_kwargs=kwargs, expert="heuristic", seed=10_000)
    assert len(data["label"]) > 2000 and data["mask"][range(len(data["label"])), data["label"]].all()
    policy = new_symbolic_policy(SymbolicConfig.for_craft(), seed=0)
    untrained = new_symbolic_policy(SymbolicConfig.for_craft(), seed=0)
    history = clone_symbolic(policy, data, epochs=5)
    assert history[-1]["loss"] < history[0]["loss"] * 0.8 and history[-1]["accuracy"] > 0.5
    env = gym.make(CRAFT, **kwargs)
    wins = {}
    for name, net in (("clone", policy), ("untrained", untrained)):
        path = net.save(tmp_path / f"{name}.pt")
        agent = make_agent(f"neural:{path}", env)
        wins[name] = sum(rollout(env, agent, seed=i, options={"split": "test", "index": i}, record_images=False).success
                         for i in range(10))
    assert wins["clone"] >= 2 and wins["untrained"] == 0, wins  # random play makes no stone pickaxe


def test_cli_bc_clones_the_symbolic_policy_with_its_memory(tmp_path):
    args = ["bc", CRAFT, "-k", "task=wood_pickaxe", "-k", "symbolic=true", "-k", "image=false", "--expert",
            "heuristic", "--episodes", "3", "--epochs", "1", "--eval", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--net", "landmarks=table,water", "--net", "hidden=32"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bc.json").read_text())
    assert record["demonstrations"] == record["expert_turns"] > 0 and record["test"]["episodes"] == 2
    saved = torch.load(tmp_path / "policy.pt", weights_only=False)
    assert saved["kind"] == "craft-symbolic" and tuple(saved["config"]["landmarks"]) == ("table", "water")
    assert saved["config"]["hidden"] == 32
    bad = CliRunner().invoke(app, [*args, "--net", "image=true"])
    assert bad.exit_code != 0 and "--net fields are embed" in bad.output
    with pytest.raises(ValueError, match="primitive actions"):
        collect_symbolic(CRAFT, 1, env_kwargs={"symbolic": True, "action_mode": "skills"}, expert="heuristic")
