"""Kernel pieces: trajectories and their JSONL round trip, rollouts, the agent registry."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import turngym
from turngym import Trajectory, Turn, read_jsonl, rollout, write_jsonl
from turngym.agents import Agent, RandomAgent, available_agents, make_agent, register_agent
from turngym.trajectory import images_dir, iter_jsonl, jsonable


def test_jsonl_round_trip_keeps_everything_including_images(tmp_path):
    env = gym.make("turngym/Craft-v0", task="collect_stone", max_turns=12)
    trajs = [rollout(env, make_agent("random", env), seed=s) for s in range(2)]
    trajs[0].turns[0].logprobs = [-0.5, -1.25]
    trajs[0].turns[0].prompt_ids, trajs[0].turns[0].completion_ids = [1, 2, 3], [4, 5]
    trajs[0].turns[1].extras = {"advantage": 0.25, "value": np.float32(0.5)}
    trajs[1].meta = {"agent": "random", "note": "ünïcödé"}
    path = write_jsonl(tmp_path / "runs.jsonl", trajs)
    back = read_jsonl(path)
    assert len(back) == 2 and all(len(a) == len(b) for a, b in zip(trajs, back, strict=True))
    for a, b in zip(trajs, back, strict=True):
        assert (a.env_id, a.task_id, a.seed, a.success, a.score, a.truncated, a.final_text) == \
               (b.env_id, b.task_id, b.seed, b.success, b.score, b.truncated, b.final_text)
        for ta, tb in zip(a.turns, b.turns, strict=True):
            assert (ta.text, ta.action, ta.reward, jsonable(ta.info)) == (tb.text, tb.action, tb.reward, tb.info)
            assert tb.image.dtype == np.uint8 and np.array_equal(ta.image, tb.image)
    assert back[0].turns[0].logprobs == [-0.5, -1.25] and back[0].turns[1].extras["value"] == 0.5
    assert back[1].meta["note"] == "ünïcödé"
    pngs = list(images_dir(path).glob("*.png"))
    assert 0 < len(pngs) <= sum(len(t) for t in trajs)  # identical frames are stored once
    assert not list(tmp_path.glob(".*.tmp"))
    light = next(iter_jsonl(path, load_images=False))
    assert light.turns[0].image is None
    assert json.loads(path.read_text().splitlines()[0])["turns"][0]["image"].startswith("runs_images/")


def test_the_final_observation_image_is_kept_and_round_trips(tmp_path):
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", render_mode="rgb_array")
    traj = rollout(env, make_agent("oracle", env), seed=3, options={"split": "test", "index": 3})
    # the frame after the last action, which no turn holds (a turn holds the frame it acted on)
    assert traj.final_image is not None and np.array_equal(traj.final_image, env.render())
    assert rollout(env, make_agent("oracle", env), seed=3, record_images=False).final_image is None

    path = write_jsonl(tmp_path / "runs.jsonl", [traj])
    record = json.loads(path.read_text())
    assert record["final_image"].startswith("runs_images/") and (tmp_path / record["final_image"]).is_file()
    back = read_jsonl(path)[0]
    assert back.final_image.dtype == np.uint8 and np.array_equal(back.final_image, traj.final_image)
    assert next(iter_jsonl(path, load_images=False)).final_image is None

    del record["final_image"]  # a file written before the field existed still loads
    (tmp_path / "old.jsonl").write_text(json.dumps(record) + "\n")
    old = read_jsonl(tmp_path / "old.jsonl")[0]
    assert old.final_image is None and len(old) == len(traj)


def test_rollout_records_what_the_agent_saw():
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe")
    traj = rollout(env, make_agent("oracle", env), seed=3, options={"split": "test", "index": 3})
    assert traj.success and traj.score == 1.0 and traj.terminated and traj.total_reward == 1.0
    assert traj.turns[0].text.startswith("Task: Make a wood pickaxe.") and traj.turns[0].image.shape == (144, 144, 3)
    assert traj.turns[-1].reward == 1.0 and all(t.reward == 0.0 for t in traj.turns[:-1])
    assert traj.task_id == env.unwrapped.splits["test"][3] and traj.seed == 3
    assert isinstance(traj, Trajectory) and isinstance(traj.turns[0], Turn)


def test_agent_registry():
    craft = gym.make("turngym/Craft-v0")
    guess = gym.make("guessing/GuessNumber-v0")
    assert {"random", "oracle"} <= set(available_agents(craft))
    assert "heuristic" in available_agents(guess) and "always-noop" not in available_agents(craft)
    with pytest.raises(ValueError, match="no agent 'always-noop' for turngym/Craft-v0"):
        make_agent("always-noop", craft)

    @register_agent("always-noop", type(craft.unwrapped))
    class Noop(Agent):
        def __init__(self, env, argument=""):
            self.argument = argument

        def act(self, obs, info):
            return "noop"

    agent = make_agent("always-noop:xyz", craft)
    assert isinstance(agent, Noop) and agent.argument == "xyz"


def test_random_agent_is_seeded_and_fills_templates():
    env = gym.make("guessing/GuessNumber-v0")
    obs, info = env.reset(seed=0)
    a, b = RandomAgent(), RandomAgent()
    a.reset(obs, info, seed=5)
    b.reset(obs, info, seed=5)
    picks = [a.act(obs, info) for _ in range(20)]
    assert picks == [b.act(obs, info) for _ in range(20)]
    assert all(p.startswith("guess ") and "<" not in p for p in picks)
    assert RandomAgent().act(obs, {"actions": []}) == ""


def test_registering_twice_is_harmless():
    turngym.register("turngym/Craft-v0", "turngym.envs.craft:CraftEnv", turngym.describe("turngym/Craft-v0"))
    assert turngym.list_envs().count("turngym/Craft-v0") == 1
    with pytest.raises(KeyError, match="turngym list"):
        turngym.describe("nope/Nothing-v0")


def test_rollout_accepts_agents_with_the_plain_design_signature():
    class Plain(Agent):
        def reset(self, obs, info):
            self.started = True

        def act(self, obs, info):
            return "noop"

    agent = Plain()
    traj = rollout(gym.make("turngym/Craft-v0", max_turns=3), agent, seed=0)
    assert agent.started and [t.action for t in traj.turns] == ["noop"] * 3

